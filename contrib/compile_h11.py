"""Compile the installed h11 with Cython, in place; or give plain h11 back.

``python contrib/compile_h11.py`` (``make install`` runs it once the
virtualenv holds snakeway) compiles each module of the h11 that this
interpreter imports with Cython in pure-Python mode, and puts the extension
modules beside the sources: Python's import system prefers
``_connection.cpython-311-x86_64-linux-gnu.so`` to ``_connection.py``. The
code is h11's own, so its behaviour is too; what changes is the interpreter
overhead of running it (h11's server side of a small exchange costs about a
quarter less CPU). docs/benchmarks.md has the measurements.

Theory of operation:

- The sources are compiled with four changes that leave every result as
  it was (:func:`speed_up`): a ``typing.cast(T, x)`` call becomes ``(x)``
  (``cast`` returns ``x``, but building ``T`` costs a ``typing`` cache
  look-up per call: a ``Union`` built on every event); ``Headers`` gets an
  ``__iter__`` that walks its list, where the one inherited from
  ``Sequence`` calls ``__getitem__`` until an ``IndexError``; and
  ``next_event`` tells an event from its two sentinels by identity rather
  than with ``not in`` a list, which calls the event's ``__eq__`` twice;
  an event's constructor tells a list of headers from a ``Headers`` by
  type before it asks ``isinstance`` (``Headers`` is an abstract base
  class, so ``isinstance`` of a list is a call into ``abc``). Line numbers
  are kept, so a traceback points at h11's own source.
- Type annotations are not used for C typing (``annotation_typing=False``):
  h11 annotates ``bytes`` where it passes ``bytearray``, and compiled code
  would enforce the annotation.
- The extension modules are added to h11's ``RECORD``, so that ``pip``
  removes them when it upgrades or uninstalls h11; a compiled module must
  never shadow the source of another h11 version.
- Before it is kept, the compiled h11 runs, in a fresh interpreter, an
  exchange that uses what snakeway relies on beyond h11's public API
  (events built with ``_parsed=True``, the state machine's
  ``_cstate.keep_alive``). If that fails, or anything else does (no
  compiler, no Cython, no Python headers), the extension modules are
  removed again, one line says so, and the exit status is still 0: plain
  h11 is a slower snakeway, not a broken one.

``python contrib/compile_h11.py --remove`` removes the extension modules
(plain h11 again); ``--check`` says which h11 is imported, and exits 1 when
it is plain.
"""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))
CYTHON_OPTIONS = ["-3", "-i", "-j2", "-X", "annotation_typing=False"]

# Run in a fresh interpreter: every h11 module must be compiled, and what snakeway uses must work.
SMOKE = r"""
import sys, h11
modules = [m for name, m in sys.modules.items() if name == "h11" or name.startswith("h11.")]
plain = [m.__name__ for m in modules if not m.__file__.endswith(sys.argv[1])]
assert not plain, f"not compiled: {plain}"
marked = getattr(sys.modules["h11._headers"], "SNAKEWAY_SPEED_UP", None)
assert marked == int(sys.argv[2]), f"compiled with speed-ups {marked}, not {sys.argv[2]} (another compile_h11.py)"
conn = h11.Connection(h11.SERVER)
conn.receive_data(b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
request = conn.next_event()
assert type(request) is h11.Request and request.http_version == b"1.0", request
assert list(request.headers) == [(b"host", b"x"), (b"connection", b"keep-alive")], request.headers
assert request.headers == [(b"host", b"x"), (b"connection", b"keep-alive")]
conn._cstate.keep_alive = True
assert type(conn.next_event()) is h11.EndOfMessage
head = conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"2")], reason=b"OK", _parsed=True))
assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", head
conn.send(h11.Data(data=b"hi"))
conn.send(h11.EndOfMessage())
conn.start_next_cycle()
conn.receive_data(bytearray(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"))
events = [conn.next_event() for _ in range(3)]
assert [type(e) for e in events] == [h11.Request, h11.Data, h11.EndOfMessage], events
try:
    h11.Request(method="GET", target="/", headers=[])
except h11.LocalProtocolError:
    pass
else:
    raise AssertionError("an HTTP/1.1 request without Host was accepted")
"""


# Which changes speed_up() makes: the check (SMOKE) recompiles an h11 compiled with others.
SPEED_UP_VERSION = 3

# Appended to h11/_headers.py: after the last line, so no line moves.
HEADERS_ITER = f"""

SNAKEWAY_SPEED_UP = {SPEED_UP_VERSION}  # added by snakeway's contrib/compile_h11.py


def _headers_iter(self):  # added by snakeway's contrib/compile_h11.py: Sequence's __iter__ without the IndexError
    for _, name, value in self._full_items:
        yield (name, value)


Headers.__iter__ = _headers_iter
"""


# Line for line: an event tested against the two sentinels by identity, where ``not in`` a list calls each
# event's dataclass ``__eq__`` twice (it can only say "not equal": events are never sentinels).
SENTINEL_TEST = ("if event not in [NEED_DATA, PAUSED]:", "if event is not NEED_DATA and event is not PAUSED:")

# Line for line: an event's headers are a list (from h11's parser, or snakeway's) or a Headers nearly always;
# those two are told apart by their type, anything else as before (``Headers`` is an ABC: ``isinstance`` of
# a list goes through ``ABCMeta.__instancecheck__``).
HEADERS_TEST = (
    "isinstance(headers, Headers)",
    "(type(headers) is Headers or (type(headers) is not list and isinstance(headers, Headers)))",
)


def speed_up(name: str, source: str) -> str:
    """``source`` of h11's module ``name`` as compiled: casts unwrapped, ``Headers.__iter__`` added, the
    sentinel and the headers tests by identity first.

    Same lines: an unwrapped cast keeps its line breaks inside the parentheses.
    """
    while (call := _first_cast(source)) is not None:
        start, end, inner = call
        breaks = source.count("\n", start, end) - inner.count("\n")
        source = source[:start] + "(" + inner + "\n" * breaks + ")" + source[end:]
    if name == "_headers.py":
        source += HEADERS_ITER
    if name == "_connection.py":
        source = source.replace(*SENTINEL_TEST)
    if name == "_events.py":
        source = source.replace(*HEADERS_TEST)
    return source


def _first_cast(source: str) -> tuple[int, int, str] | None:
    """(start, end, source of x) of the first ``cast(T, x)`` call in ``source``, or None."""
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cast"
                and len(node.args) == 2 and not node.keywords and node.end_lineno is not None
                and node.end_col_offset is not None):
            inner = ast.get_source_segment(source, node.args[1])
            if inner is None:
                continue
            # h11's sources are ASCII: column offsets (UTF-8 bytes) are character offsets.
            start = starts[node.lineno - 1] + node.col_offset
            end = starts[node.end_lineno - 1] + node.end_col_offset
            return start, end, inner
    return None


def _package() -> tuple[importlib.metadata.Distribution, Path]:
    dist = importlib.metadata.distribution("h11")
    init = dist.locate_file("h11/__init__.py")
    return dist, Path(str(init)).parent


def _compiled(package: Path) -> list[Path]:
    return sorted(package.glob(f"*{SUFFIX}"))


def _smoke() -> str | None:
    """Why the imported h11 is not a working compiled h11, or None."""
    result = subprocess.run(
        [sys.executable, "-c", SMOKE, SUFFIX, str(SPEED_UP_VERSION)], capture_output=True, text=True, cwd="/"
    )
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["no output"])[-1]


def _record(dist: importlib.metadata.Distribution, files: list[Path]) -> None:
    """List ``files`` in h11's RECORD, so that pip uninstalls them with it."""
    record = Path(str(next(f for f in dist.files or () if f.name == "RECORD").locate()))
    lines = record.read_text().splitlines()
    for path in files:
        line = f"h11/{path.name},,"
        if line not in lines:
            lines.append(line)
    record.write_text("\n".join(lines) + "\n")


def remove(package: Path) -> int:
    for path in _compiled(package):
        path.unlink()
    return 0


def compile_h11(dist: importlib.metadata.Distribution, package: Path) -> int:
    sources = sorted(package.glob("*.py"))
    if _compiled(package) and _smoke() is None:
        print(f"h11 {dist.version}: already compiled")
        return 0
    remove(package)
    with tempfile.TemporaryDirectory(prefix="h11-cython-") as tmp:
        work = Path(tmp) / "h11"
        work.mkdir()
        for source in sources:
            (work / source.name).write_text(speed_up(source.name, source.read_text()))
        result = subprocess.run(
            [sys.executable, "-m", "Cython.Build.Cythonize", *CYTHON_OPTIONS, *(str(work / s.name) for s in sources)],
            capture_output=True, text=True, cwd=tmp,
        )
        built = sorted(work.glob(f"*{SUFFIX}"))
        if result.returncode != 0 or len(built) != len(sources):
            output = result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or ["no output"]
            last = output[-1].strip()
            print(f"h11 {dist.version}: not compiled ({last[:120]}); snakeway runs on plain h11")
            return 0
        for path in built:
            shutil.copy2(path, package / path.name)
    _record(dist, _compiled(package))
    why = _smoke()
    if why is not None:
        remove(package)
        print(f"h11 {dist.version}: compiled but failed its check ({why[:200]}); snakeway runs on plain h11")
        return 0
    print(f"h11 {dist.version}: compiled with Cython ({len(sources)} modules)")
    return 0


def main(argv: list[str]) -> int:
    try:
        dist, package = _package()
    except importlib.metadata.PackageNotFoundError:
        print("h11 is not installed")
        return 1
    if argv[1:] == ["--remove"]:
        return remove(package)
    if argv[1:] == ["--check"]:
        why = _smoke()
        print(f"h11 {dist.version}: " + ("compiled" if why is None else f"plain ({why})"))
        return 0 if why is None else 1
    try:
        return compile_h11(dist, package)
    except Exception as exc:  # noqa: BLE001 - plain h11 is always the fallback
        remove(package)
        print(f"h11 {dist.version}: not compiled ({type(exc).__name__}: {exc}); snakeway runs on plain h11")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
