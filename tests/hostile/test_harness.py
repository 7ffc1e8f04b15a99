"""The harness itself: what the byte-logging upstream records is what snakeway wrote."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.hostile.harness import exchange, proxy_to, running, start_logging_upstream, statuses, write_config


async def test_the_upstream_sees_the_bytes_snakeway_wrote(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream))
    async with running(config):
        answer = await exchange(port, b"GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\n\r\nGET /c HTTP/1.1\r\nHost: x.test\r\n\r\n")
    assert statuses(answer) == [200, 200], answer
    assert b"upstream saw /a?b=1" in answer and answer.endswith(b"upstream saw /c")
    assert log.targets == [b"/a?b=1", b"/c"]
    first = log.requests[0]
    assert first.head.startswith(b"GET /a?b=1 HTTP/1.1\r\nhost: x.test\r\n")
    assert first.header(b"x-forwarded-for") == b"127.0.0.1"
