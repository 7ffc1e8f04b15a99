"""contrib/compile_h11.py: which h11 snakeway runs on, and that it still does what snakeway needs of it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import h11

SCRIPT = Path(__file__).resolve().parent.parent / "contrib" / "compile_h11.py"


def test_check_tells_compiled_from_plain_h11_and_runs_what_snakeway_relies_on() -> None:
    # `make install` compiles h11 in place where it can; either way the check must agree with what is
    # imported, and a compiled h11 passes it only if events built with _parsed=True and the state
    # machine's _cstate.keep_alive still work (the script's exchange uses both).
    compiled = h11._connection.__file__.endswith(str(sysconfig.get_config_var("EXT_SUFFIX")))
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith(f"h11 {h11.__version__}: " + ("compiled" if compiled else "plain (")), result
    assert result.returncode == (0 if compiled else 1), result


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compile_h11", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_up_unwraps_casts_and_keeps_every_line_where_it_was() -> None:
    # A traceback from compiled h11 points at h11's source on disk: the lines must not move.
    source = (
        "from typing import Union, cast\n"
        "x = cast(Union[int, str],\n"
        "         y)\n"
        "z = cast(int, cast(str, w)).real\n"
        "after = 1\n"
    )
    out = _script().speed_up("_connection.py", source)
    assert "cast(" not in out.removeprefix("from typing import Union, cast\n")
    assert out.splitlines()[4] == "after = 1"
    namespace: dict[str, object] = {"y": 3, "w": 4}
    exec(compile(out, "speed_up", "exec"), namespace)
    assert (namespace["x"], namespace["z"]) == (3, 4)


def test_speed_up_gives_headers_an_iterator_after_the_last_line() -> None:
    source = (Path(h11._headers.__file__).parent / "_headers.py").read_text()
    out = _script().speed_up("_headers.py", source)
    assert out.startswith(source) and "Headers.__iter__ = _headers_iter" in out
    # Iterating gives what indexing gives, as Sequence's own __iter__ did.
    headers = h11.Request(method="GET", target="/", headers=[("Host", "a"), ("X-A", "1")]).headers
    assert list(headers) == [headers[0], headers[1]] == [(b"host", b"a"), (b"x-a", b"1")]


def test_speed_up_tests_events_against_the_sentinels_by_identity_on_the_same_line() -> None:
    source = (Path(h11._connection.__file__).parent / "_connection.py").read_text()
    out = _script().speed_up("_connection.py", source)
    before, after = source.splitlines(), out.splitlines()
    assert len(before) == len(after)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert any("not in [NEED_DATA, PAUSED]" in old and "is not NEED_DATA and event is not PAUSED" in new
               for old, new in changed), changed
    # An event is never equal to a sentinel, which is what makes the two tests agree.
    assert h11.EndOfMessage() != h11.NEED_DATA and h11.EndOfMessage() != h11.PAUSED


def test_speed_up_tells_a_list_of_headers_by_its_type_first_on_the_same_lines() -> None:
    source = (Path(h11._events.__file__).parent / "_events.py").read_text()
    out = _script().speed_up("_events.py", source)
    assert len(source.splitlines()) == len(out.splitlines())
    assert source.count("isinstance(headers, Headers)") == out.count("type(headers) is Headers or") >= 2
    # Whatever the headers come as, the event holds the same ones (raw casing kept).
    for given in ([(b"Host", b"a")], h11.Request(method="GET", target="/", headers=[(b"Host", b"a")]).headers):
        request = h11.Request(method="GET", target="/", headers=given)
        assert request.headers.raw_items() == [(b"Host", b"a")] and list(request.headers) == [(b"host", b"a")]
