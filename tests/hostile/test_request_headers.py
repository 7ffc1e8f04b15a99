"""Request heads that a proxy must refuse, or read as RFC 9112 says, through a real snakeway."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.hostile.harness import exchange, proxy_to, running, start_logging_upstream, statuses, write_config


async def test_an_invalid_host_is_400(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream))
    heads = [
        b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil@x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x.test/admin\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x.test:80:80\r\n\r\n",
        b"GET http://evil@x.test/ HTTP/1.1\r\nHost: x.test\r\n\r\n",
        b"GET http://x.test:8o/ HTTP/1.1\r\nHost: x.test\r\n\r\n",
    ]
    async with running(config):
        answers = [await exchange(port, head) for head in heads]
        fine = await exchange(port, b"GET http://[::1]:81/a HTTP/1.1\r\nHost: x.test:8080\r\n\r\n")
    for head, answer in zip(heads, answers, strict=True):
        assert statuses(answer) == [400], (head, answer)
    assert statuses(fine) == [200], fine
    assert [r.header(b"host") for r in log.requests] == [b"[::1]:81"]


async def test_empty_lines_before_a_request_are_skipped(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream))
    async with running(config):
        first = await exchange(port, b"\r\nGET /first HTTP/1.1\r\nHost: x.test\r\n\r\n")
        # Some clients end a body with a CRLF it does not count; the next request follows it.
        kept = await exchange(
            port,
            b"POST /body HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\n\r\nabc\r\n"
            b"GET /after HTTP/1.1\r\nHost: x.test\r\n\r\n",
        )
        # The empty line may come on its own, before the next request.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /one HTTP/1.1\r\nHost: x.test\r\n\r\n")
            await trio.sleep(0.2)
            await stream.send_all(b"\r\n")
            await trio.sleep(0.2)
            await stream.send_all(b"GET /two HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n")
            split = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    split += chunk
    assert statuses(first) == [200], first
    assert statuses(kept) == [200, 200], kept
    assert statuses(split) == [200, 200], split
    assert log.targets == [b"/first", b"/body", b"/after", b"/one", b"/two"]
    assert log.requests[1].body == b"abc"


def many_fields(count: int) -> bytes:
    """A request with ``count`` header fields, Host included."""
    return b"GET / HTTP/1.1\r\nHost: x.test\r\n" + b"a:\r\n" * (count - 1) + b"\r\n"


async def test_header_fields_are_counted(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream))
    async with running(config):
        flood = await exchange(port, many_fields(13_000))  # 52 KB: under max_header_bytes
        over = await exchange(port, many_fields(101))
        at = await exchange(port, many_fields(100))
    assert statuses(flood) == [431], flood
    assert statuses(over) == [431], over
    assert statuses(at) == [200], at
    assert len(log.requests) == 1


async def test_the_field_limit_is_a_setting(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(
        tmp_path, proxy_to(upstream), server="client = { max_header_count = 5, underscores_in_headers = true }"
    )
    async with running(config):
        over = await exchange(port, many_fields(6))
        at = await exchange(
            port, b"GET / HTTP/1.1\r\nHost: x.test\r\nX_Forwarded_For: 6.6.6.6\r\nX_Custom: 1\r\na:\r\nb:\r\n\r\n"
        )
    assert statuses(over) == [431], over
    assert statuses(at) == [200], at
    (request,) = log.requests
    assert request.header(b"x_forwarded_for") == b"6.6.6.6"
    assert request.header(b"x_custom") == b"1"


async def test_header_names_with_underscores_are_not_forwarded(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream))
    async with running(config):
        answer = await exchange(
            port,
            b"POST / HTTP/1.1\r\nHost: x.test\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\n"
            b"X_Custom: 1\r\nX-Custom: 2\r\nContent-Length: 2\r\n\r\nhi",
        )
    assert statuses(answer) == [200], answer
    (request,) = log.requests
    assert not any(b"_" in name for name, _ in request.headers), request.head
    assert request.header(b"x-custom") == b"2"
    assert request.header(b"x-forwarded-for") == b"127.0.0.1"
    assert request.body == b"hi"
