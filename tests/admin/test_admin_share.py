"""The figures files of a supervisor's workers: written whole, read by siblings, a dead worker's gauges dropped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from snakeway.admin.figures import Counters, EndpointState, snapshot
from snakeway.admin.share import SharedFigures


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def figures(pid: int) -> dict[str, object]:
    counters = Counters()
    counters.totals[2] += 5
    counters.service("app").by_class[2] += 5
    counters.service("app").websockets_open = 2
    return snapshot(counters, [EndpointState("app", "127.0.0.1:9000", 1, 3.0, 1, 4)], ["app"], pid=pid, at=0.0)


def test_siblings_are_read_and_a_dead_workers_gauges_dropped(tmp_path: Path) -> None:
    me, live, dead = (SharedFigures(tmp_path, n) for n in range(3))
    me.write(figures(os.getpid()))
    live.write(figures(os.getppid()))
    gone = dead_pid()
    dead.write(figures(gone))
    (tmp_path / "figures" / "3.json").write_text("{half a fi")  # never left by write(), but never fatal
    others = me.others()
    assert [o["pid"] for o in others] == [os.getppid(), gone]  # not this worker's own file
    assert others[0]["upstreams"] == figures(0)["upstreams"]
    assert others[0]["services"]["app"]["websockets_open"] == 2
    assert others[1]["upstreams"] == {}
    assert others[1]["services"]["app"] == {"responses": figures(0)["services"]["app"]["responses"],
                                            "websockets_open": 0}
    assert others[1]["requests"]["2xx"] == 5  # its counts stay in the totals


def test_a_replacement_finds_its_predecessors_file(tmp_path: Path) -> None:
    assert SharedFigures(tmp_path, 1).predecessor() is None
    SharedFigures(tmp_path, 1).write(figures(dead_pid()))
    assert SharedFigures(tmp_path, 1).predecessor()["requests"]["2xx"] == 5  # type: ignore[index]
    assert SharedFigures(tmp_path, 0).predecessor() is None
    assert oct((tmp_path / "figures").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "figures" / "1.json").stat().st_mode & 0o777) == "0o600"
