"""The hostile-client harness: snakeway as a real process, a raw-socket client, a byte-logging upstream.

Each test in ``tests/hostile/`` plays a hostile or broken client (smuggling
attempts, path tricks, slow or flooding peers) against a running snakeway (by
default two workers, as operators run it) and asserts what a client sees and
what the upstream received, byte for byte. Nothing here knows the
proxy's internals: requests are bytes on a socket, and the upstream records the
bytes that reached it.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h11
import trio

from snakeway.proxy.headers import get_header
from tests.helpers import LOOPBACK, closed_port
from tests.proc import Running, snakeway


@dataclass
class Received:
    """One request as it reached the upstream: the raw head and the body."""

    head: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return get_header(self.headers, name)


@dataclass
class ByteLog:
    """What a :class:`LoggingUpstream` received: each request, and every connection's raw bytes."""

    requests: list[Received] = field(default_factory=list)
    connections: list[bytearray] = field(default_factory=list)
    open_connections: int = 0

    @property
    def targets(self) -> list[bytes]:
        return [r.target for r in self.requests]


async def start_logging_upstream(nursery: trio.Nursery, *, body: bytes | None = None) -> tuple[int, ByteLog]:
    """An HTTP/1.1 upstream on 127.0.0.1 that logs the bytes it is sent and answers 200.

    The answer's body is ``body`` or, by default, ``upstream saw <target>``. Returns (port, log).
    """
    log = ByteLog()

    async def serve(stream: trio.SocketStream) -> None:
        raw = bytearray()
        log.connections.append(raw)
        log.open_connections += 1
        conn = h11.Connection(h11.SERVER)
        head_start = 0
        try:
            while True:
                request: h11.Request | None = None
                payload = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        raw.extend(data)
                        conn.receive_data(data)
                        continue
                    if type(event) is h11.Request:
                        request = event
                    elif type(event) is h11.Data:
                        payload += event.data
                    elif type(event) is h11.EndOfMessage:
                        break
                    else:
                        return
                assert request is not None
                end = raw.find(b"\r\n\r\n", head_start)
                head = bytes(raw[head_start : end + 4])
                log.requests.append(Received(head, request.target, list(request.headers), bytes(payload)))
                answer = body if body is not None else b"upstream saw " + request.target
                out = conn.send(
                    h11.Response(status_code=200, headers=[(b"content-length", str(len(answer)).encode())])
                )
                out += conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
                head_start = len(raw) - len(conn.trailing_data[0])
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            log.open_connections -= 1
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return listeners[0].socket.getsockname()[1], log


def write_config(
    directory: Path, ingress_body: str, *, workers: int = 2, server: str = "", port: int | None = None,
    bind: str = "",
) -> tuple[Path, int]:
    """A configuration with one ingress on 127.0.0.1: (its path, the port it listens on).

    ``ingress_body`` is the ingress's ``services``/``static_files``; ``server`` adds lines to
    the ``server`` block (``client = { ... }`` and the like); ``bind`` adds keys to the ``bind``
    object (``tls = { ... }``, written with a leading comma).
    """
    listen = port or closed_port()
    path = directory / "snakeway.hcl"
    path.write_text(
        f"""
server {{
  version   = 1
  workers   = {workers}
  state_dir = "{directory / 'state'}"
  {server}
}}
ingress "hostile" {{
  bind = {{ interface = "127.0.0.1", port = {listen} {bind} }}
  {ingress_body}
}}
"""
    )
    return path, listen


def proxy_to(upstream: int, path: str = "/", extra: str = "") -> str:
    """``services`` for one route at ``path`` (any host) to the upstream on ``upstream``."""
    return f"""
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "{path}" {extra} }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}] }}]
"""


@asynccontextmanager
async def running(config: Path, *, workers: int = 2, nofile: int | None = None) -> AsyncIterator[Running]:
    """snakeway serving ``config`` until the block ends; entered once every worker listens.

    ``nofile`` limits the descriptors each process may hold (RLIMIT_NOFILE).
    """
    async with snakeway(config, ready=None, nofile=nofile) as proc:
        await until_logged(proc, b"listening on", workers)
        try:
            yield proc
        finally:
            if proc.process.returncode is None:
                proc.process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await proc.process.wait()


async def until_logged(proc: Running, text: bytes, count: int = 1, timeout: float = 15) -> None:
    """Until ``text`` has been logged ``count`` times."""
    with trio.fail_after(timeout):
        while proc.log.count(text) < count:
            await proc.read_more()


async def exchange(port: int, data: bytes, *, timeout: float = 5, linger: float = 0.3) -> bytes:
    """Send ``data`` on a new connection; everything read until the server closes it, or
    until ``linger`` seconds pass with nothing more to read (a kept-alive connection)."""
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    out = bytearray()
    try:
        with trio.fail_after(timeout):
            await stream.send_all(data)
            while True:
                with trio.move_on_after(linger) as quiet:
                    chunk = await stream.receive_some(65536)
                if quiet.cancelled_caught and out:
                    break
                if not quiet.cancelled_caught and not chunk:
                    break
                out += chunk if not quiet.cancelled_caught else b""
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()
    return bytes(out)


def statuses(data: bytes) -> list[int]:
    """The status codes of every response in ``data``, in order."""
    return [int(m.group(1)) for m in _STATUS_LINE.finditer(data)]


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
Behaviour = Callable[[trio.SocketStream], Awaitable[None]]


async def start_websocket_upstream(nursery: trio.Nursery, behaviour: Behaviour) -> tuple[int, list[float]]:
    """An upstream that answers any upgrade with 101, then runs ``behaviour`` on the connection.
    Returns (its port, when each connection's behaviour ended on a broken connection)."""
    broken: list[float] = []

    async def serve(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        try:
            await stream.send_all(SWITCH)
            await behaviour(stream)
        except trio.BrokenResourceError:
            broken.append(trio.current_time())
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return listeners[0].socket.getsockname()[1], broken


__all__ = [
    "LOOPBACK", "ByteLog", "Received", "exchange", "proxy_to", "running", "start_logging_upstream",
    "start_websocket_upstream", "statuses", "until_logged", "write_config",
]

