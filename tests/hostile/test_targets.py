"""Request targets that try to reach what no route names, through a real snakeway."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.hostile.harness import (
    exchange,
    proxy_to,
    running,
    start_logging_upstream,
    statuses,
    until_logged,
    write_config,
)

ESCAPES = [b"/public/%2e%2e/admin", b"/.%2e/admin", b"/public/..%2fadmin", b"/public/%2e%2e%2fadmin"]


def get(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x.test\r\n\r\n"


def routes_to(upstream: int, *routes: str) -> str:
    """``services``: one service on ``upstream``, with a route for any host per item of ``routes`` (its other keys)."""
    listed = ", ".join(f'{{ hosts = ["*"], {route} }}' for route in routes)
    return f"""
  services = [{{ name = "app", upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}],
                routes = [{listed}] }}]
"""


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
    config, port = write_config(tmp_path, routes_to(upstream, 'path = "/"', 'path = "/upload", max_body_bytes = 10'))

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


async def test_fragments_and_backslash_dot_segments_are_400(nursery: trio.Nursery, tmp_path: Path) -> None:
    # A server that cuts the path at "#" reads "/public/..#" as "/public/.." (that is "/") and
    # "/admin#" as "/admin" (routed to "/", dodging /admin's body limit); a Windows server reads
    # "\\" as "/" and "/public/..\\admin" as "/admin". None of them may be forwarded.
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, routes_to(
        upstream, 'path = "/"', 'path = "/public"', 'path = "/admin", max_body_bytes = 10'
    ))
    refused = [
        get(b"/public/..#"),
        get(b"/public/..#/x"),
        get(b"/admin#"),
        b"POST /admin# HTTP/1.1\r\nHost: x.test\r\nContent-Length: 100\r\n\r\n" + b"x" * 100,
        get(b"/a?q=1#/../admin"),
        get(b"http://x.test/a#/../admin"),
        get(b"/public/..\\admin"),
        get(b"/public\\..\\admin"),
        get(b"/public/..%5Cadmin"),
        get(b"/public/%2e%2e%5cadmin"),
        get(b"http://x.test/public/..\\admin"),
    ]
    async with running(config):
        answers = [await exchange(port, request) for request in refused]
        # A backslash away from dot-segments is an ordinary character, forwarded as sent.
        plain = await exchange(port, get(b"/public/a\\b.txt?x=\\..\\"))
    for request, answer in zip(refused, answers, strict=True):
        assert statuses(answer) == [400], (request, answer)
    assert statuses(plain) == [200], plain
    assert log.targets == [b"/public/a\\b.txt?x=\\..\\"]


async def test_static_routes_with_encoded_paths_serve_their_files(tmp_path: Path) -> None:
    for name in ("cafe", "user"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_bytes(f"file of {name}\n".encode())
    static = f"""
  static_files = [{{ routes = [{{ hosts = ["*"], path = "/café", file_dir = "{tmp_path / 'cafe'}" }},
                               {{ hosts = ["*"], path = "/%7euser", file_dir = "{tmp_path / 'user'}" }}] }}]
"""
    config, port = write_config(tmp_path, static)
    spellings = {
        b"/caf%C3%A9/f.txt": b"file of cafe\n",
        b"/caf%c3%a9/f.txt": b"file of cafe\n",
        b"/~user/f.txt": b"file of user\n",
        b"/%7Euser/f.txt": b"file of user\n",
        b"/%7euser/./f.txt": b"file of user\n",
    }
    async with running(config):
        answers = [await exchange(port, get(target)) for target in spellings]
    for (target, body), answer in zip(spellings.items(), answers, strict=True):
        assert statuses(answer) == [200], (target, answer)
        assert answer.endswith(b"\r\n\r\n" + body), (target, answer)


async def test_host_ports_beyond_65535_are_400(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream))

    def with_host(host: bytes) -> bytes:
        return b"GET /h HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"

    async with running(config):
        refused = [await exchange(port, with_host(host)) for host in (b"x.test:99999999999", b"x.test:65536")]
        absolute = await exchange(port, b"GET http://x.test:70000/h HTTP/1.1\r\nHost: x.test\r\n\r\n")
        # On one kept-alive connection: a valid Host twice, then an invalid one.
        kept = await exchange(port, with_host(b"x.test:65535") * 2 + with_host(b"x.test:123456"))
    assert [statuses(answer) for answer in refused] == [[400], [400]]
    assert statuses(absolute) == [400]
    assert statuses(kept) == [200, 200, 400]
    assert [r.header(b"host") for r in log.requests] == [b"x.test:65535"] * 2


async def test_a_quote_in_the_target_cannot_forge_log_fields(tmp_path: Path) -> None:
    config, port = write_config(tmp_path, "")
    async with running(config) as proc:
        answer = await exchange(port, get(b'/none"-x="forged'))
        await until_logged(proc, b"-> 404")
    assert statuses(answer) == [404]
    line = next(line for line in proc.log.splitlines() if b"-> 404" in line)
    assert b'"GET /none\\x22-x=\\x22forged" -> 404' in line, line
