"""Instructions and native CPU time per small proxied request, by kind of request.

``python -m benchmarks.request_cost [--kind KIND]`` runs ``snakeway serve``
(one worker, so one process; access log off) and sends it requests for a
route proxied to an upstream in this process. Kinds:

- ``plain`` (the default): small requests one after the other on one
  kept-alive HTTP connection;
- ``https``: the same over one kept-alive TLS connection;
- ``tls-new``: a new TLS connection per request (``Connection: close``),
  each offering the session of the one before, as wrk does; the output
  says how many sessions were resumed;
- ``big``: responses of ``--bytes`` bytes of body (1 MiB by default) on one
  kept-alive HTTP connection, relayed in several reads;
- ``ws``: small WebSocket messages (64 bytes, as the benchmark's WebSocket
  row) sent one after the other through one tunnel to an echo upstream,
  each echoed back before the next; the figures are per echoed message
  (one chunk relayed each way).

Two figures per kind:

- instructions: snakeway runs under ``valgrind --tool=cachegrind`` twice,
  for N and for 3N requests; the difference over 2N is the cost of one
  request, start-up and shutdown cancelled out (the figures
  docs/benchmarks.md quotes);
- native CPU: snakeway runs without valgrind; after N requests of warm-up,
  its CPU time (user + system, from ``/proc``) is sampled around 5N more.
  Microseconds depend on the machine and on what else runs on it;
  instructions do not, so they are what to compare across changes.

Before either, one unmeasured start-up imports (and byte-compiles, in a
fresh virtualenv) every module the kind needs.

The client runs in a thread of this process (blocking sockets, the
standard library's ``ssl``), the upstream in its trio loop (trio-websocket
for ``ws``); neither is counted. ``--count N`` sets N (1,000 requests or
messages; 100 for ``big``), ``--only
instructions`` or ``--only native`` skips the other figure.
``python -m benchmarks.request_cost BYTES N`` is ``--kind big --bytes BYTES
--count N``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from benchmarks import cpu
from benchmarks.certs import CA

KINDS = ("plain", "https", "tls-new", "big", "ws")
LOOPBACK = "127.0.0.1"
BODY = b"hello world\n"
WS_PAYLOAD = b"x" * 64  # the size benchmarks/clients.py's ws_echo sends
WS_MASK = b"\x1f\x2e\x3d\x4c"
NATIVE_FACTOR = 5
T = TypeVar("T")


def ws_frame(payload: bytes, mask: bytes | None) -> bytes:
    """A final text frame of ``payload`` (under 126 bytes), masked with ``mask`` as a client's must be."""
    if mask is None:
        return bytes((0x81, len(payload))) + payload
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


WS_UPGRADE = (b"GET /bench HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
WS_SENT = ws_frame(WS_PAYLOAD, WS_MASK)
WS_ECHOED = ws_frame(WS_PAYLOAD, None)


def request(close: bool = False) -> bytes:
    return (b"GET /bench HTTP/1.1\r\nHost: localhost\r\nUser-Agent: request_cost\r\nAccept: */*\r\n"
            + (b"Connection: close\r\n" if close else b"") + b"\r\n")


@dataclass
class Plan:
    """What one measurement sends: the kind, the response body, and where TLS material lives."""

    kind: str
    body: bytes
    tmp: Path
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    offered: int = 0  # tls-new: sessions offered, and resumed by snakeway
    resumed: int = 0

    @property
    def tls(self) -> bool:
        return self.kind in ("https", "tls-new")


def config(plan: Plan, port: int, upstream: int) -> str:
    tls = ""
    route = ', enable_websocket = true' if plan.kind == "ws" else ""
    if plan.tls:
        tls = f', tls = {{ mode = "manual", cert = "{plan.cert}", key = "{plan.key}", default = "localhost" }}'
    return f"""
server {{
  version    = 1
  workers    = 1
  access_log = "off"
  state_dir  = "{plan.tmp}/state"
}}
ingress "bench" {{
  bind = {{ interface = "{LOOPBACK}", port = {port}{tls} }}
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "/"{route} }}],
                upstreams = [{{ endpoint = {{ host = "{LOOPBACK}", port = {upstream} }} }}] }}]
}}
"""


async def _upstream(stream: trio.SocketStream, response: bytes) -> None:
    buffer = b""
    try:
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                await stream.send_all(response)
    except trio.BrokenResourceError:
        pass


def with_upstream(plan: Plan, fn: Callable[[int], T]) -> T:
    """``fn(port)`` in a thread while an upstream listens on ``port``: one answering every request
    with ``plan.body``, or for ``ws`` a WebSocket echo server."""
    body = plan.body
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (len(body), body)

    async def main() -> T:
        async with trio.open_nursery() as nursery:
            if plan.kind == "ws":
                from trio_websocket import serve_websocket

                from benchmarks.ws_echo import echo

                server = await nursery.start(partial(serve_websocket, echo, LOOPBACK, 0, ssl_context=None))
                port = server.port
            else:
                listeners = await nursery.start(partial(trio.serve_tcp, partial(_upstream, response=response), 0,
                                                        host=LOOPBACK))
                port = listeners[0].socket.getsockname()[1]
            result = await trio.to_thread.run_sync(fn, port)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@contextmanager
def snakeway(plan: Plan, upstream_port: int, wrapper: list[str]) -> Iterator[tuple[int, int]]:
    """``snakeway serve`` (under ``wrapper``, e.g. valgrind), listening: yields (pid, port); SIGTERM at the end."""
    port = _free_port()
    path = plan.tmp / "snakeway.hcl"
    path.write_text(config(plan, port, upstream_port))
    process = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "snakeway", "serve", "--config", str(path)],
        cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ, PYTHONHASHSEED="0"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"snakeway exited with status {process.returncode}")
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("snakeway did not listen within 120 s") from None
                time.sleep(0.2)
        yield process.pid, port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait()


def _read_answer(sock: socket.socket, body: bytes) -> None:
    answer = bytearray()
    while not answer.endswith(body):
        chunk = sock.recv(1 << 20)
        assert chunk, "snakeway closed the connection"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), bytes(answer[:100])


def _no_delay(sock: socket.socket) -> socket.socket:
    """No Nagle: the request must not wait for the ACK of the handshake's last flight (as wrk's sockets)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "snakeway closed the connection"
        data += chunk
    return bytes(data)


def ws_client(port: int, count: int) -> None:
    """Open a WebSocket through snakeway, then send ``count`` messages, each echoed before the next."""
    with socket.create_connection((LOOPBACK, port)) as sock:
        _no_delay(sock).sendall(WS_UPGRADE)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "snakeway closed the connection during the upgrade"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head[:100]
        assert head.endswith(b"\r\n\r\n"), "the echo server spoke first"
        for _ in range(count):
            sock.sendall(WS_SENT)
            assert _read_exactly(sock, len(WS_ECHOED)) == WS_ECHOED
        sock.sendall(b"\x88\x80" + WS_MASK)  # a close frame, answered by the echo server's
        _read_exactly(sock, 2)


def client(plan: Plan, port: int, count: int) -> None:
    """Send ``count`` requests (messages, for ``ws``) of ``plan.kind``, each answered in full before the next."""
    if plan.kind == "ws":
        ws_client(port, count)
        return
    context = None
    if plan.tls:
        context = ssl.create_default_context(cafile=str(plan.ca))
    if plan.kind == "tls-new":
        session = None
        for _ in range(count):
            with socket.create_connection((LOOPBACK, port)) as raw, \
                    context.wrap_socket(_no_delay(raw), server_hostname="localhost", session=session) as sock:  # type: ignore[union-attr]
                sock.sendall(request(close=True))
                _read_answer(sock, plan.body)
                while sock.recv(65536):  # to the close; TLS 1.3 tickets come after the handshake
                    pass
                plan.offered += session is not None
                plan.resumed += sock.session_reused
                session = sock.session
        return
    with socket.create_connection((LOOPBACK, port)) as raw:
        sock = context.wrap_socket(_no_delay(raw), server_hostname="localhost") if context else raw
        for _ in range(count):
            sock.sendall(request())
            _read_answer(sock, plan.body)
        sock.close()


def instructions(plan: Plan, count: int) -> int:
    """Instructions snakeway executes for ``count`` requests, start-up and shutdown included."""
    out = plan.tmp / f"cachegrind.{count}.out"
    valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]

    def run(upstream_port: int) -> None:
        with snakeway(plan, upstream_port, valgrind) as (_, port):
            client(plan, port, count)

    with_upstream(plan, run)
    summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
    assert summary, "no summary in cachegrind's output"
    return int(summary.group(1))


def native_us(plan: Plan, count: int) -> float:
    """Microseconds of snakeway's CPU time per request, over ``NATIVE_FACTOR * count`` after ``count`` of warm-up."""

    def run(upstream_port: int) -> float:
        with snakeway(plan, upstream_port, []) as (pid, port):
            client(plan, port, count)
            before = cpu.session_cpu_seconds(pid)
            client(plan, port, NATIVE_FACTOR * count)
            after = cpu.session_cpu_seconds(pid)
        return cpu.per_unit_us(before, after, NATIVE_FACTOR * count) or 0.0

    return with_upstream(plan, run)


def warm(plan: Plan) -> None:
    """One unmeasured start-up: imports (and byte-compiles, in a fresh virtualenv) what this kind needs."""

    def run(upstream_port: int) -> None:
        with snakeway(plan, upstream_port, []) as (_, port):
            client(plan, port, 2)

    with_upstream(plan, run)


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_cost", description=__doc__.split("\n")[0])
    parser.add_argument("legacy", nargs="*", type=int, metavar="BYTES N", help="the same as --kind big --bytes BYTES --count N")
    parser.add_argument("--kind", choices=KINDS, default="plain")
    parser.add_argument("--bytes", type=int, default=1 << 20, help="body size for --kind big (1 MiB)")
    parser.add_argument("--count", type=int, help="N: requests of the smaller run (1,000; 100 for big)")
    parser.add_argument("--only", choices=("instructions", "native"), help="measure only this figure")
    args = parser.parse_args(argv)
    if args.legacy:
        if len(args.legacy) != 2:
            parser.error("give both BYTES and N, or neither")
        args.kind, args.bytes, args.count = "big", args.legacy[0], args.legacy[1]
    if args.count is None:
        args.count = 100 if args.kind == "big" else 1000
    return args


def main(argv: list[str]) -> int:
    args = arguments(argv)
    body = b"x" * max(0, args.bytes - len(BODY)) + BODY if args.kind == "big" else BODY
    with tempfile.TemporaryDirectory(prefix="request-cost-") as tmp:
        plan = Plan(args.kind, body, Path(tmp))
        if plan.tls:
            plan.cert, plan.key, plan.ca = CA().write_leaf(plan.tmp, "site", ["localhost", "127.0.0.1"])
        warm(plan)
        what = f"{args.kind} request{'' if args.kind != 'big' else f' of {len(body):,} bytes of body'}"
        if args.kind == "ws":
            what = f"echoed WebSocket message of {len(WS_PAYLOAD)} bytes"
        if args.only != "native":
            low, high = instructions(plan, args.count), instructions(plan, 3 * args.count)
            print(f"{(high - low) / (2 * args.count):,.0f} instructions per {what} "
                  f"({low:,} for {args.count}, {high:,} for {3 * args.count})", flush=True)
        if args.only != "instructions":
            us = native_us(plan, args.count)
            units = "messages" if args.kind == "ws" else "requests"
            print(f"{us:,.1f} µs of snakeway's CPU per {what} (native, over {NATIVE_FACTOR * args.count:,} {units} "
                  f"after {args.count:,} of warm-up)", flush=True)
        if args.kind == "tls-new":
            print(f"sessions resumed: {plan.resumed:,} of {plan.offered:,} offered", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
