"""Responses and the access log as a client and an operator see them: ``server.via``, log escaping and
``If-Modified-Since`` dates in the future, against a real snakeway process."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.hostile.harness import exchange, proxy_to, running, start_logging_upstream, statuses, write_config

REQUEST = b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n"


def head_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[0].lower()


async def test_via_is_sent_both_ways_by_default(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream))
    async with running(config):
        answer = await exchange(port, REQUEST)
    assert statuses(answer) == [200]
    assert b"\r\nvia: 1.1 snakeway" in head_of(answer)
    assert log.requests[0].header(b"via") == b"1.1 snakeway"


async def test_via_false_leaves_it_out_both_ways(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream), server="via = false")
    async with running(config):
        answer = await exchange(port, REQUEST)
    assert statuses(answer) == [200]
    assert b"via:" not in head_of(answer)
    assert log.requests[0].header(b"via") is None
    assert b"\r\nvia:" not in log.requests[0].head.lower()


async def test_a_quote_in_the_target_cannot_forge_access_log_fields(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    access = tmp_path / "access.log"
    config, port = write_config(tmp_path, proxy_to(upstream), server=f'access_log = "{access}"')
    forged = b'/x"-"GET/\\'  # unescaped, the quote would end the field early
    async with running(config):
        answer = await exchange(port, b"GET " + forged + b" HTTP/1.1\r\nHost: x.test\r\nUser-Agent: a\" \"b\r\n\r\n")
        assert statuses(answer) == [200]
        with trio.fail_after(5):
            while not access.exists() or not access.read_bytes().endswith(b"\n"):
                await trio.sleep(0.02)
    (line,) = access.read_text().splitlines()
    assert line.count('"') == 4, line  # the request line's and the User-Agent's, nothing more
    assert r'"GET /x\x22-\x22GET/\x5C HTTP/1.1" 200 ' in line
    assert line.endswith(r' "a\x22 \x22b"'), line


async def test_if_modified_since_in_year_9999_gets_the_file(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "page.txt").write_bytes(b"fresh")
    os.utime(www / "page.txt", (1_700_000_000, 1_700_000_000))
    config, port = write_config(tmp_path, f'static_files = [{{ routes = [{{ hosts = ["*"], file_dir = "{www}" }}] }}]')
    async with running(config):
        future = await exchange(
            port, b"GET /page.txt HTTP/1.1\r\nHost: x.test\r\nIf-Modified-Since: Fri, 31 Dec 9999 23:59:59 GMT\r\n\r\n"
        )
        past = await exchange(
            port, b"GET /page.txt HTTP/1.1\r\nHost: x.test\r\nIf-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT\r\n\r\n"
        )
    assert statuses(future) == [200] and future.endswith(b"\r\n\r\nfresh")
    assert statuses(past) == [304]
