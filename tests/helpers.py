"""Test helpers: a real upstream on 127.0.0.1, snakeway in-process, raw clients."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import h11
import trio

from snakeway.config.model import (
    Bind,
    Config,
    Endpoint,
    Ingress,
    Route,
    ServerSettings,
    Service,
    StaticSite,
    Strategy,
    Upstream,
)
from snakeway.proxy.headers import get_header
from snakeway.server import Server

LOOPBACK = "127.0.0.1"


@dataclass
class Seen:
    """What an upstream received."""

    requests: list[h11.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0


Handler = Callable[[h11.Request, bytes], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]]


async def echo(request: h11.Request, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    text = f"{request.method.decode()} {request.target.decode()} {len(body)}".encode()
    return 200, [(b"content-type", b"text/plain")], text


async def start_upstream(
    nursery: trio.Nursery, handler: Handler = echo, seen: Seen | None = None, *, port: int = 0
) -> tuple[int, Seen]:
    """An h11 keep-alive HTTP server on 127.0.0.1; returns (port, what it saw)."""
    seen = seen if seen is not None else Seen()

    async def serve(stream: trio.SocketStream) -> None:
        seen.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                seen.requests.append(request)
                seen.bodies.append(bytes(body))
                status, headers, payload = await handler(request, bytes(body))
                if not any(n.lower() == b"content-length" for n, _ in headers):
                    headers = [*headers, (b"content-length", str(len(payload)).encode())]
                out = conn.send(h11.Response(status_code=status, headers=headers))
                if payload and request.method != b"HEAD":
                    out += conn.send(h11.Data(data=payload))
                out += conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, serve, port, host=LOOPBACK))
    return listeners[0].socket.getsockname()[1], seen


def service_config(
    upstream_ports: list[int],
    *,
    routes: tuple[Route, ...] = (Route(hosts=("*",), path="/"),),
    strategy: Strategy = Strategy.FAILOVER,
    static: tuple[StaticSite, ...] = (),
    server: ServerSettings | None = None,
) -> Config:
    service = Service(
        name="app",
        routes=routes,
        upstreams=tuple(Upstream(Endpoint(LOOPBACK, p)) for p in upstream_ports),
        strategy=strategy,
    )
    ingress = Ingress(
        name="test", bind=Bind(LOOPBACK, 0), services=(service,) if upstream_ports else (), static_files=static
    )
    return Config(server=server or ServerSettings(), ingresses=(ingress,))


async def start_snakeway(
    nursery: trio.Nursery, config: Config, loader: Callable[[], Config] | None = None
) -> tuple[Server, int]:
    server = Server(config, loader)
    await nursery.start(server.serve)
    (address, *_) = server.addresses.values()
    return server, address[1]


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return get_header(self.headers, name)


class Client:
    """One keep-alive client connection speaking h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream(LOOPBACK, port))

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        hdrs = headers if headers is not None else [("host", "a.test")]
        if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hdrs):
            hdrs = [*hdrs, ("content-length", str(len(body)))]
        out = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            out += self.conn.send(h11.Data(data=body))
        out += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(out)
        return await self.read_response()

    async def read_response(self) -> Response:
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert response is not None
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return Response(response.status_code, list(response.headers), bytes(body))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def get(port: int, target: str = "/", **kwargs: object) -> Response:
    client = await Client.connect(port)
    try:
        return await client.request(target=target, **kwargs)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def raw(port: int, data: bytes, *, timeout: float = 5) -> bytes:
    """Send bytes, then read everything until the server closes."""
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    out = bytearray()
    with trio.fail_after(timeout):
        await stream.send_all(data)
        try:
            while chunk := await stream.receive_some(65536):
                out += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return bytes(out)


async def refuses(port: int) -> bool:
    """Whether nothing accepts a connection on ``port`` of 127.0.0.1 now."""
    try:
        stream = await trio.open_tcp_stream(LOOPBACK, port)
    except OSError:
        return True
    await stream.aclose()
    return False


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def closed_ports(count: int) -> list[int]:
    """``count`` different ports on 127.0.0.1 where nothing listens (one by one, two could be the same)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))  # all bound at once: the kernel gives each its own port
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
