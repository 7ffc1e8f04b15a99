"""Request targets that try to reach what no route names, through a real snakeway."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.hostile.harness import exchange, proxy_to, running, start_logging_upstream, statuses, write_config

ESCAPES = [b"/public/%2e%2e/admin", b"/.%2e/admin", b"/public/..%2fadmin", b"/public/%2e%2e%2fadmin"]


def get(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x.test\r\n\r\n"


async def test_encoded_dot_segments_do_not_leave_the_route(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream, "/public"))
    async with running(config):
        escapes = [await exchange(port, get(target)) for target in ESCAPES]
        # Inside the route the same spellings are resolved before forwarding.
        inside = await exchange(port, get(b"/public/x/%2E%2e/y/.%2e%2F%2e/z?q=/%2e%2e/"))
    for target, answer in zip(ESCAPES, escapes, strict=True):
        assert statuses(answer) == [404], (target, answer)
    assert statuses(inside) == [200], inside
    assert log.targets == [b"/public/z?q=/%2e%2e/"]
    assert not any(b"admin" in raw for raw in log.connections)


async def test_targets_without_one_reading_are_400(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream, "/public"))
    refused = [
        b"/public/a%2F..%2F..%2Fadmin",  # an encoded slash before ".."
        b"/public/a%2Fb/../../admin",
        b"/public/%00/x",  # an encoded NUL
        b"/public/%C0%AE%C0%AE/admin",  # overlong UTF-8 for "."
        b"/public/%E0%80%AE%E0%80%AE/admin",
        b"/public/..%C0%AFadmin",  # overlong UTF-8 for "/"
        b"/public/..;/admin",  # a servlet container reads "..;" as ".."
        b"/public/%zz",  # malformed escapes
        b"/public/%2",
    ]
    async with running(config):
        answers = [await exchange(port, get(target)) for target in refused]
    for target, answer in zip(refused, answers, strict=True):
        assert statuses(answer) == [400], (target, answer)
    assert log.requests == []


async def test_a_route_body_limit_cannot_be_dodged(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    endpoint = f'{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}'
    services = f"""
  services = [{{ name = "app", upstreams = [{endpoint}],
                routes = [{{ hosts = ["*"], path = "/" }},
                          {{ hosts = ["*"], path = "/upload", max_body_bytes = 10 }}] }}]
"""
    config, port = write_config(tmp_path, services)

    def post(body: bytes) -> bytes:
        length = str(len(body)).encode()
        return b"POST /files/%2e%2e/upload HTTP/1.1\r\nHost: x.test\r\nContent-Length: " + length + b"\r\n\r\n" + body

    async with running(config):
        dodged = await exchange(port, post(b"x" * 100))
        small = await exchange(port, post(b"xxxxx"))
    assert statuses(dodged) == [413], dodged
    assert statuses(small) == [200], small
    assert log.targets == [b"/upload"]
    assert log.requests[0].body == b"xxxxx"
