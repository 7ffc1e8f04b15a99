"""The load generators and probes: wrk, a WebSocket echo client, an HTTPS poller, idle connections."""

from __future__ import annotations

import math
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from benchmarks.deps import which
from benchmarks.procs import LOOPBACK

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass
class WrkResult:
    rps: float
    bytes_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx: int
    raw: str = field(repr=False, default="")


def _latency_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unexpected latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and transfer and p50 and p99 and total):
        raise ValueError(f"cannot parse wrk output: {out[-600:]!r}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors = sum(int(x) for x in sock.groups())
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(rps.group(1)),
        bytes_per_s=float(transfer.group(1)) * _SIZES[transfer.group(2)],
        p50_ms=_latency_ms(p50.group(1)),
        p99_ms=_latency_ms(p99.group(1)),
        requests=int(total.group(1)),
        errors=errors,
        non_2xx=int(non.group(1)) if non else 0,
        raw=out,
    )


def wrk(url: str, seconds: float, *, connections: int = 32, close: bool = False) -> WrkResult:
    binary = which("wrk")
    if binary is None:
        raise RuntimeError("wrk not installed")
    argv = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {(out.stderr or out.stdout)[-300:]}")
    result = parse_wrk(out.stdout)
    if result.requests == 0:
        raise RuntimeError(f"wrk got no responses: {out.stdout[-300:]}")
    return result


# --- a plain GET, for sanity checks and readiness probes ----------------------------------------


def get(port: int, path: str = "/", *, host: str = "localhost", tls: ssl.SSLContext | None = None,
        sni: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one ``GET`` over a fresh connection (HTTP/1.1, ``Connection: close``)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as raw:
        sock: socket.socket = tls.wrap_socket(raw, server_hostname=sni) if tls else raw
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
        if tls:
            sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def resumed_share(port: int, attempts: int = 10) -> float:
    """Share of new connections on which the server resumed the session offered, as wrk offers it.

    wrk keeps the session of a connection's previous TLS connection and offers it on the next one
    (TLS 1.3 tickets arrive after the handshake, so the response is read in full first). Several
    attempts, because with several worker processes a connection may land in one that cannot resume
    what another issued.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    session, resumed = None, 0
    for attempt in range(attempts + 1):
        with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while sock.recv(65536):
                    pass
                resumed += attempt > 0 and sock.session_reused
                session = sock.session
    return resumed / attempts


def client_context(ca_file: Path | None = None, *, cadata: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None, cadata=cadata)
    return context


def wait_https(port: int, names: list[str], context: ssl.SSLContext, deadline: float, *,
               interval: float = 0.02) -> dict[str, float]:
    """Poll until every name answers 200 over HTTPS with a certificate ``context`` trusts.

    Returns {name: monotonic time it first answered}; names still failing at
    ``deadline`` are absent.
    """
    pending, served = list(names), {}
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            try:
                status, _ = get(port, "/", host=name, tls=context, sni=name, timeout=2.0)
            except (OSError, ValueError, IndexError):
                continue
            if status == 200:
                served[name] = time.monotonic()
                pending.remove(name)
        if pending:
            time.sleep(interval)
    return served


def run_trio(fn, *args):  # noqa: ANN001, ANN201
    """``trio.run``, with a Ctrl-C that surfaced inside a nursery's exception group unwrapped."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        raise


# --- WebSocket echo -----------------------------------------------------------------------------


@dataclass
class EchoResult:
    """What the WebSocket echo client measured: echoed messages per second, and each echo's round trip."""

    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


def quantile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` quantile of ``values`` by nearest rank (0.99: the smallest value at or above 99 % of
    them); None without any."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


async def _ws_echo(url: str, seconds: float, connections: int, size: int) -> tuple[list[float], int]:
    from trio_websocket import open_websocket_url

    payload = "x" * size
    trips: list[float] = []  # every echo's round trip, send to answer, in seconds
    errors = [0]

    async def one(ready: trio.Event, go: trio.Event) -> None:
        try:
            async with open_websocket_url(url) as ws:
                ready.set()
                await go.wait()
                with trio.move_on_at(end[0]):
                    while True:
                        sent = trio.current_time()
                        await ws.send_message(payload)
                        if await ws.get_message() != payload:
                            errors[0] += 1
                            return
                        trips.append(trio.current_time() - sent)
        except Exception:  # noqa: BLE001 - counted, reported by the caller
            ready.set()
            errors[0] += 1

    end = [0.0]
    go = trio.Event()
    async with trio.open_nursery() as nursery:
        readies = []
        for _ in range(connections):
            ready = trio.Event()
            readies.append(ready)
            nursery.start_soon(one, ready, go)
        with trio.move_on_after(10):
            for ready in readies:
                await ready.wait()
        end[0] = trio.current_time() + seconds
        go.set()
    return trips, errors[0]


def ws_echo(url: str, seconds: float, *, connections: int = 8, size: int = 64) -> EchoResult:
    """``connections`` WebSockets sending ``size``-byte messages, each waiting for its echo, for ``seconds``."""
    trips, errors = run_trio(_ws_echo, url, seconds, connections, size)
    p50, p99 = (quantile(trips, q) for q in (0.5, 0.99))
    nan = float("nan")
    return EchoResult(len(trips) / seconds, nan if p50 is None else p50 * 1000, nan if p99 is None else p99 * 1000, errors)


# --- idle keep-alive connections ----------------------------------------------------------------


async def _hold_idle(port: int, count: int, measure, hold_timeout: float) -> tuple[int, object]:
    streams: list[trio.SocketStream] = []
    failures = [0]
    limiter = trio.CapacityLimiter(200)
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"

    async def open_one() -> None:
        async with limiter:
            try:
                stream = await trio.open_tcp_stream(LOOPBACK, port)
            except OSError:
                failures[0] += 1
                return
            try:
                await stream.send_all(request)
                data = b""
                while b"hello" not in data:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        raise OSError("closed")
                    data += chunk
            except (OSError, trio.BrokenResourceError):
                failures[0] += 1
                await stream.aclose()
                return
            streams.append(stream)

    try:
        with trio.move_on_after(hold_timeout):
            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(open_one)
        await trio.sleep(1.0)  # let the server settle
        alive = len(streams)
        return alive, measure()
    finally:
        for stream in streams:
            stream.socket.close()


def hold_idle(port: int, count: int, measure, timeout: float) -> tuple[int, object]:
    """Open ``count`` keep-alive connections (one request each), call ``measure()`` while all are held."""
    return run_trio(_hold_idle, port, count, measure, timeout)
