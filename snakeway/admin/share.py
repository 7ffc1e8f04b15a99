"""Each worker's figures in a file, so that the worker answering an admin request can answer for all of them.

Theory of operation
-------------------
With ``server.workers`` above 1 the kernel hands an admin connection to any one worker, which knows only its
own counters. So every worker writes its :func:`~snakeway.admin.figures.snapshot` every
:data:`INTERVAL` seconds to ``figures/<worker number>.json`` in the supervisor's private directory
(:mod:`snakeway.rundir`: mode 0700, removed when the supervisor exits), by writing a temporary file and
renaming it over the old one, so a reader never sees half a file. The answering worker takes its own
snapshot at that moment and reads its siblings' files: their figures are at most :data:`INTERVAL` seconds
old (plus the time a busy worker takes to get to its next write).

The file is named by the worker's slot, not its pid: a worker started in place of one that died begins its
counters from its predecessor's last snapshot, so the server's totals do not drop (the requests of the last
fraction of a second before a crash may be missing). A snapshot whose process is gone keeps its counters in
the totals, but not its gauges (connections in flight, upstreams cooling down, open WebSockets).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import trio

from snakeway.admin.figures import Snapshot

logger = logging.getLogger(__name__)

DIRECTORY = "figures"
INTERVAL = 0.5


class SharedFigures:
    """The figures files of one supervisor's workers; this worker's is ``<number>.json``.

    Args:
      run_dir: the supervisor's private directory.
      number: this worker's slot.
    """

    def __init__(self, run_dir: Path, number: int) -> None:
        self.directory = run_dir / DIRECTORY
        self.number = number
        self.path = self.directory / f"{number}.json"

    def predecessor(self) -> Snapshot | None:
        """The last snapshot of the worker this one replaces, if there was one (blocking; call before serving)."""
        return _read(self.path)

    def write(self, snap: Snapshot) -> None:
        """Replace this worker's file with ``snap`` (blocking; no fsync: the figures die with the supervisor)."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        tmp = self.directory / f".{self.number}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(json.dumps(snap, separators=(",", ":")).encode())
        os.replace(tmp, self.path)

    def others(self) -> list[Snapshot]:
        """Every other worker's last snapshot (blocking); gauges zeroed for a process that is gone."""
        found: list[Snapshot] = []
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except FileNotFoundError:
            return found
        for entry in entries:
            if entry.name == self.path.name or not entry.name.endswith(".json"):
                continue
            snap = _read(Path(entry.path))
            if snap is None:
                continue
            if not _alive(snap.get("pid")):
                snap["alive"] = False
                snap["upstreams"] = {}
                for service in snap.get("services", {}).values():
                    service["websockets_open"] = 0
            found.append(snap)
        return found

    async def run(self, take: Callable[[], Snapshot | None]) -> None:
        """Write ``take()`` every :data:`INTERVAL` seconds (None: nothing to write now). Runs until cancelled."""
        while True:
            try:
                if (snap := take()) is not None:
                    await trio.to_thread.run_sync(self.write, snap)
            except OSError as exc:
                logger.warning("cannot write this worker's figures for the admin API: %s", exc)
            await trio.sleep(INTERVAL)


def _read(path: Path) -> Snapshot | None:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("cannot read the figures in %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
