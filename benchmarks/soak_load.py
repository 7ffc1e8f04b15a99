"""The soak's load generator and its HTTP upstream, each run as a process of its own by benchmarks/soak.py.

``python -m benchmarks.soak_load upstream PORT``: a keep-alive HTTP/1.1 upstream (the standard library's
threading server) answering every GET with ``200 hello``.

``python -m benchmarks.soak_load load SPEC.json RESULT.json``: mixed traffic on trio for ``seconds``, then the
counts are written to RESULT.json. Every client paces itself (a short sleep between requests) so that the
whole soak stays within two cores. Kinds of traffic, and what counts as a *failure* (one the server caused):

- ``keepalive``: GETs through the proxy on long-lived connections. Failure: an error, a status other than
  200, a wrong body, no response within 10 s, or the connection closed with a request outstanding.
- ``static``: a 64 KiB file on keep-alive connections, every other request a ``Range`` (206, exact bytes).
  Failures as above.
- ``tls``: a new TLS connection per request (the certificate must verify against the soak's CA, whichever
  certificate the swaps have put in place). Failures as above, plus handshake and verification errors.
- ``websocket``: a WebSocket through the proxy to an echo server, 20 messages then a clean close, again and
  again. Failure: a refused handshake, a wrong echo, or the connection closing early.
- ``slow_trickle``: a request head sent one byte every 15 ms (about 1 s, a third of the header timeout): it must be
  answered like any other request; otherwise a failure.
- ``slow_reader``: a 4 MiB static file read 16 KiB at a time, 20 ms apart: it must arrive complete.
- ``slow_stall``: half a request head, then nothing. The server closing the connection (with or without a
  408) after its header timeout is the expected, *client-caused* outcome, counted apart; the connection
  still open 5 s after that timeout is a failure.
"""

from __future__ import annotations

import json
import ssl
import sys
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trio

LOOPBACK = "127.0.0.1"
REQUEST_TIMEOUT = 10.0


# --- the upstream ------------------------------------------------------------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out in two writes: no 40 ms wait for a delayed ACK

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


def serve_upstream(port: int) -> None:
    server = ThreadingHTTPServer((LOOPBACK, port), _Hello)
    server.daemon_threads = True
    server.serve_forever()


# --- counting ----------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Requests by kind; failures (the server's fault) and client-caused closes by kind and reason."""

    requests: Counter[str] = field(default_factory=Counter)
    failures: dict[str, Counter[str]] = field(default_factory=dict)
    client_caused: dict[str, Counter[str]] = field(default_factory=dict)

    def ok(self, kind: str) -> None:
        self.requests[kind] += 1

    def fail(self, kind: str, reason: str) -> None:
        self.requests[kind] += 1
        self.failures.setdefault(kind, Counter())[reason[:120]] += 1

    def caused(self, kind: str, reason: str) -> None:
        self.requests[kind] += 1
        self.client_caused.setdefault(kind, Counter())[reason] += 1

    def as_json(self) -> dict[str, object]:
        return {"requests": dict(self.requests), "failures": {k: dict(v) for k, v in self.failures.items()},
                "client_caused": {k: dict(v) for k, v in self.client_caused.items()}}


class Failed(Exception):
    """A response that is not the one expected."""


# --- a minimal HTTP/1.1 client over a trio stream -----------------------------------------------------------------


class Conn:
    """One connection: send a request, read one Content-Length-framed response."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise Failed("connection closed before a complete response")
        self.buffer += chunk

    async def response(self, *, read_size: int = 0, read_pause: float = 0.0) -> tuple[int, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        status = int(head[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if read_size:
                chunk = await self.stream.receive_some(read_size)
                if not chunk:
                    raise Failed("connection closed in the body")
                self.buffer += chunk
                await trio.sleep(read_pause)
            else:
                await self._fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return status, body

    async def get(self, path: str, *extra: str, close: bool = False) -> tuple[int, bytes]:
        lines = [f"GET {path} HTTP/1.1", "Host: localhost", *extra] + (["Connection: close"] if close else [])
        await self.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await self.response()


def expect(condition: bool, reason: str) -> None:
    if not condition:
        raise Failed(reason)


async def _guarded(tally: Tally, kind: str, step, timeout: float = REQUEST_TIMEOUT) -> bool:  # noqa: ANN001
    """Run one request ``step``; count it; False if the connection must be replaced."""
    try:
        with trio.fail_after(timeout):
            await step()
    except trio.TooSlowError:
        tally.fail(kind, "no response in time")
    except Failed as exc:
        tally.fail(kind, str(exc))
    except (OSError, trio.BrokenResourceError, ssl.SSLError, ValueError, IndexError) as exc:
        tally.fail(kind, f"{type(exc).__name__}: {exc}")
    else:
        tally.ok(kind)
        return True
    return False


# --- the kinds of traffic ----------------------------------------------------------------------------------------


async def keepalive(spec: dict, tally: Tally, kind: str, path: str, body: bytes, pause: float) -> None:
    while True:
        try:
            conn = Conn(await trio.open_tcp_stream(LOOPBACK, spec["http_port"]))
        except OSError as exc:
            tally.fail(kind, f"connect: {exc}")
            await trio.sleep(0.5)
            continue
        async with conn.stream:
            index = 0
            while True:
                index += 1
                ranged = kind == "static" and index % 2 == 0

                async def step(ranged: bool = ranged, conn: Conn = conn) -> None:
                    if ranged:
                        status, got = await conn.get(path, "Range: bytes=100-1123")
                        expect(status == 206 and got == body[100:1124], f"range: status {status}, {len(got)} bytes")
                    else:
                        status, got = await conn.get(path)
                        expect(status == 200 and got == body, f"status {status}, {len(got)} bytes")

                if not await _guarded(tally, kind, step):
                    break
                await trio.sleep(pause)


async def new_tls(spec: dict, tally: Tally, pause: float) -> None:
    context = ssl.create_default_context(cafile=spec["ca_file"])

    async def step() -> None:
        raw = await trio.open_tcp_stream(LOOPBACK, spec["https_port"])
        stream = trio.SSLStream(raw, context, server_hostname="localhost", https_compatible=True)
        async with stream:
            status, got = await Conn(stream).get("/app/tls", close=True)
            expect(status == 200 and got == b"hello", f"status {status}, body {got[:20]!r}")

    while True:
        await _guarded(tally, "tls", step)
        await trio.sleep(pause)


async def websockets(spec: dict, tally: Tally, pause: float) -> None:
    from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

    url = f"ws://{LOOPBACK}:{spec['http_port']}/ws"
    while True:
        try:
            with trio.fail_after(REQUEST_TIMEOUT * 3):
                async with open_websocket_url(url) as ws:
                    for n in range(20):
                        await ws.send_message(f"message {n}")
                        expect(await ws.get_message() == f"message {n}", "wrong echo")
                        await trio.sleep(pause)
        except trio.TooSlowError:
            tally.fail("websocket", "no echo in time")
        except (Failed, ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError) as exc:
            tally.fail("websocket", f"{type(exc).__name__}: {exc}")
        else:
            tally.ok("websocket")


async def slow_trickle(spec: dict, tally: Tally) -> None:
    request = b"GET /app/trickle HTTP/1.1\r\nHost: localhost\r\nUser-Agent: soak-slow\r\n\r\n"

    async def step() -> None:
        async with await trio.open_tcp_stream(LOOPBACK, spec["http_port"]) as stream:
            for i in range(len(request)):
                await stream.send_all(request[i : i + 1])
                await trio.sleep(0.015)
            status, got = await Conn(stream).response()
            expect(status == 200 and got == b"hello", f"status {status}")

    while True:
        await _guarded(tally, "slow_trickle", step, timeout=REQUEST_TIMEOUT + len(request) * 0.05)


async def slow_reader(spec: dict, tally: Tally, size: int) -> None:
    async def step() -> None:
        async with await trio.open_tcp_stream(LOOPBACK, spec["http_port"]) as stream:
            await stream.send_all(b"GET /static/big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            status, got = await Conn(stream).response(read_size=16384, read_pause=0.02)
            expect(status == 200 and len(got) == size, f"status {status}, {len(got)} of {size} bytes")

    while True:
        await _guarded(tally, "slow_reader", step, timeout=120)


async def slow_stall(spec: dict, tally: Tally) -> None:
    limit = spec["header_timeout"] + 5
    while True:
        try:
            async with await trio.open_tcp_stream(LOOPBACK, spec["http_port"]) as stream:
                await stream.send_all(b"GET /app/stall HTTP/1.1\r\nHo")
                with trio.move_on_after(limit) as scope:
                    while await stream.receive_some(65536):
                        pass  # a 408 and then EOF, or EOF alone
                if scope.cancelled_caught:
                    tally.fail("slow_stall", f"still open {limit:.0f} s after the request head began")
                else:
                    tally.caused("slow_stall", "closed by the header timeout")
        except (OSError, trio.BrokenResourceError) as exc:  # a reset instead of a FIN is a close too
            tally.caused("slow_stall", f"closed by the header timeout ({type(exc).__name__})")


async def run_load(spec: dict) -> Tally:
    tally = Tally()
    www = Path(spec["www"])
    small, big_size = (www / "file.bin").read_bytes(), (www / "big.bin").stat().st_size
    with trio.move_on_after(spec["seconds"]):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(keepalive, spec, tally, "keepalive", "/app/ka", b"hello", 0.004)
            for _ in range(2):
                nursery.start_soon(keepalive, spec, tally, "static", "/static/file.bin", small, 0.01)
                nursery.start_soon(websockets, spec, tally, 0.01)
            nursery.start_soon(new_tls, spec, tally, 0.02)
            nursery.start_soon(slow_trickle, spec, tally)
            nursery.start_soon(slow_reader, spec, tally, big_size)
            nursery.start_soon(slow_stall, spec, tally)
    return tally


def main(argv: list[str]) -> None:
    if argv[:1] == ["upstream"]:
        serve_upstream(int(argv[1]))
        return
    if argv[:1] != ["load"] or len(argv) != 3:
        raise SystemExit("usage: python -m benchmarks.soak_load upstream PORT | load SPEC.json RESULT.json")
    spec = json.loads(Path(argv[1]).read_text())
    tally = trio.run(run_load, spec)
    Path(argv[2]).write_text(json.dumps(tally.as_json(), indent=2))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
