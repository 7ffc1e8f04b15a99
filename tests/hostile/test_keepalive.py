"""HTTP/1.0 keep-alive: kept as nginx keeps it, and closed wherever it must be."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.hostile.harness import LOOPBACK, running, start_logging_upstream, statuses, write_config


async def talk(port: int, data: bytes, answers: int) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection and read until ``answers`` status lines are in, then
    for a second more: (bytes read, whether the server closed the connection by then)."""
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    out = bytearray()
    try:
        with trio.fail_after(5):
            await stream.send_all(data)
            while len(statuses(bytes(out))) < answers:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return bytes(out), True
                out += chunk
        with trio.move_on_after(1):
            try:
                while chunk := await stream.receive_some(65536):
                    out += chunk
            except trio.BrokenResourceError:
                pass
            return bytes(out), True
        return bytes(out), False
    finally:
        await stream.aclose()


def heads(data: bytes) -> list[bytes]:
    """The head of each response in ``data``, lower-cased."""
    return [part.split(b"\r\n\r\n", 1)[0].lower() for part in data.split(b"HTTP/1.1 ")[1:]]


def request(target: bytes, *, version: bytes = b"1.0", extra: bytes = b"Connection: keep-alive\r\n") -> bytes:
    return b"GET " + target + b" HTTP/" + version + b"\r\nHost: x.test\r\n" + extra + b"\r\n"


async def start_chunked_upstream(nursery: trio.Nursery) -> int:
    """An upstream whose responses have no Content-Length (chunked), on 127.0.0.1."""

    async def serve(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return listeners[0].socket.getsockname()[1]


async def test_http10_keep_alive_is_kept_for_responses_of_known_length(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, log = await start_logging_upstream(nursery)
    chunked = await start_chunked_upstream(nursery)
    site = tmp_path / "site"
    site.mkdir()
    (site / "page.txt").write_bytes(b"static page\n")
    config, port = write_config(
        tmp_path,
        f"""
  services = [
    {{ name = "app", routes = [{{ hosts = ["*"], path = "/app" }}],
       upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}] }},
    {{ name = "chunked", routes = [{{ hosts = ["*"], path = "/chunked" }}],
       upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {chunked} }} }}] }},
  ]
"""
        + f'static_files = [{{ routes = [{{ hosts = ["*"], path = "/", file_dir = "{site}" }}] }}]',
    )
    async with running(config):
        # Proxied, static and snakeway's own answer (404), one after another on one connection.
        both = request(b"/app/one") + request(b"/page.txt") + request(b"/nothing-here") + request(b"/app/two")
        answer, closed = await talk(port, both, 4)
        assert statuses(answer) == [200, 200, 404, 200], answer
        assert not closed
        for head in heads(answer):
            assert b"\r\nconnection: keep-alive" in head and b"\r\ncontent-length: " in head, head
        assert log.targets == [b"/app/one", b"/app/two"]
        assert len(log.connections) == 1  # the client's keep-alive is its own: the upstream one is pooled

        # Without keep-alive an HTTP/1.0 request is the connection's last, as before.
        answer, closed = await talk(port, request(b"/app/three", extra=b"") + request(b"/app/four"), 1)
        assert statuses(answer) == [200] and closed, answer
        assert b"\r\nconnection: close" in heads(answer)[0]
        answer, closed = await talk(port, request(b"/app/five", extra=b"Connection: keep-alive, close\r\n"), 1)
        assert statuses(answer) == [200] and closed, answer

        # A response of unknown length can only end with the connection, keep-alive or not.
        answer, closed = await talk(port, request(b"/chunked/x") + request(b"/app/six"), 1)
        assert statuses(answer) == [200] and closed, answer
        assert b"\r\nconnection: close" in heads(answer)[0]
        assert answer.endswith(b"\r\n\r\nhello")
        assert log.targets == [b"/app/one", b"/app/two", b"/app/three", b"/app/five"]

        # HTTP/1.1 keep-alive is unchanged, and so is the refusal of Transfer-Encoding in HTTP/1.0.
        answer, closed = await talk(port, request(b"/app/seven", version=b"1.1", extra=b"") * 2, 2)
        assert statuses(answer) == [200, 200] and not closed, answer
        smuggled = request(
            b"/app/eight", extra=b"Connection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        )
        answer, closed = await talk(port, smuggled + b"0\r\n\r\n" + request(b"/app/nine"), 1)
        assert statuses(answer) == [400] and closed, answer
        assert log.targets[-2:] == [b"/app/seven", b"/app/seven"]
