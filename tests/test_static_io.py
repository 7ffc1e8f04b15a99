"""serve_static over memory streams, read back by an h11 client."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest
import trio
import trio.testing

from snakeway.config.model import Route, StaticSite
from snakeway.proxy import static_io
from snakeway.proxy.h11io import H11Stream
from snakeway.proxy.static import SendFile
from snakeway.proxy.static_io import CHUNK_SIZE, serve_static
from snakeway.proxy.strict import Target, request_target

BIG = os.urandom(CHUNK_SIZE) * 20 + b"tail"  # 1.25 MiB and a bit, not a multiple of the chunk size


@dataclass
class Exchange:
    response: h11.Response
    body: bytes
    status_returned: int
    writes: int
    server_state: object


@pytest.fixture
def site(tmp_path: Path) -> StaticSite:
    (tmp_path / "big.bin").write_bytes(BIG)
    (tmp_path / "small.txt").write_bytes(b"hello, world\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f.txt").write_bytes(b"f")
    return StaticSite(route=Route(hosts=("*",), path="/s"), file_dir=tmp_path, index=None, directory_listing=True)


async def exchange(site: StaticSite, target: str, *headers: tuple[str, str], method: str = "GET") -> Exchange:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    writes = 0
    pump = server_stream.send_stream.send_all_hook

    async def count_writes() -> None:
        nonlocal writes
        writes += 1
        assert pump is not None
        await pump()

    server_stream.send_stream.send_all_hook = count_writes
    h11s = H11Stream(server_stream, h11.Connection(h11.SERVER))
    returned: list[int] = []

    async def server() -> None:
        request = await h11s.next_event()
        assert isinstance(request, h11.Request)
        routed = request_target(request, list(request.headers))
        assert isinstance(routed, Target)
        returned.append(await serve_static(h11s, site, request, routed.target))

    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method=method, target=target, headers=[("Host", "a.test"), *headers])
    response: h11.Response | None = None
    body = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            await client_stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await client_stream.receive_some(CHUNK_SIZE))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
    assert response is not None
    return Exchange(response, bytes(body), returned[0], writes, h11s.conn.our_state)


def header(response: h11.Response, name: bytes) -> bytes | None:
    return dict(response.headers).get(name)


async def test_get_large_file(site: StaticSite) -> None:
    ex = await exchange(site, "/s/big.bin")
    assert ex.response.status_code == ex.status_returned == 200
    assert header(ex.response, b"content-length") == b"%d" % len(BIG)
    assert header(ex.response, b"content-type") == b"application/octet-stream"
    assert ex.body == BIG
    assert ex.writes == 21  # head rides with the first of 21 chunks
    assert ex.server_state is h11.DONE


async def test_small_file_is_one_write(site: StaticSite) -> None:
    ex = await exchange(site, "/s/small.txt")
    assert ex.body == b"hello, world\n"
    assert header(ex.response, b"content-type") == b"text/plain; charset=utf-8"
    assert ex.writes == 1
    assert ex.server_state is h11.DONE


async def test_empty_file(site: StaticSite) -> None:
    ex = await exchange(site, "/s/empty.txt")
    assert (ex.response.status_code, ex.body, ex.writes) == (200, b"", 1)


async def test_head_has_no_body(site: StaticSite) -> None:
    ex = await exchange(site, "/s/big.bin", method="HEAD")
    assert ex.response.status_code == ex.status_returned == 200
    assert header(ex.response, b"content-length") == b"%d" % len(BIG)
    assert ex.body == b""
    assert ex.writes == 1
    assert ex.server_state is h11.DONE


async def test_head_listing_and_error_have_no_body(site: StaticSite) -> None:
    listing = await exchange(site, "/s/dir/", method="HEAD")
    assert listing.response.status_code == 200 and listing.body == b""
    assert int(header(listing.response, b"content-length") or 0) > 0
    missing = await exchange(site, "/s/nope", method="HEAD")
    assert (missing.response.status_code, missing.body) == (404, b"")


async def test_range(site: StaticSite) -> None:
    start, end = CHUNK_SIZE - 10, 3 * CHUNK_SIZE + 5
    ex = await exchange(site, "/s/big.bin", ("Range", f"bytes={start}-{end}"))
    assert ex.response.status_code == ex.status_returned == 206
    assert header(ex.response, b"content-range") == b"bytes %d-%d/%d" % (start, end, len(BIG))
    assert ex.body == BIG[start : end + 1]


async def test_suffix_range(site: StaticSite) -> None:
    ex = await exchange(site, "/s/big.bin", ("Range", "bytes=-4"))
    assert (ex.response.status_code, ex.body) == (206, b"tail")


async def test_unsatisfiable_range(site: StaticSite) -> None:
    ex = await exchange(site, "/s/small.txt", ("Range", "bytes=100-"))
    assert ex.response.status_code == ex.status_returned == 416
    assert header(ex.response, b"content-range") == b"bytes */13"


async def test_not_modified_has_no_body(site: StaticSite) -> None:
    first = await exchange(site, "/s/small.txt")
    etag = header(first.response, b"etag")
    assert etag is not None
    ex = await exchange(site, "/s/small.txt", ("If-None-Match", etag.decode()))
    assert ex.response.status_code == ex.status_returned == 304
    assert ex.body == b""
    assert header(ex.response, b"etag") == etag
    assert ex.server_state is h11.DONE


async def test_listing(site: StaticSite) -> None:
    ex = await exchange(site, "/s/dir/")
    assert ex.response.status_code == 200
    assert b'<a href="f.txt">f.txt</a>' in ex.body


async def test_redirect(site: StaticSite) -> None:
    ex = await exchange(site, "/s/dir?x=1")
    assert ex.response.status_code == ex.status_returned == 301
    assert header(ex.response, b"location") == b"/s/dir/?x=1"


async def test_method_not_allowed(site: StaticSite) -> None:
    ex = await exchange(site, "/s/small.txt", method="DELETE")
    assert ex.response.status_code == ex.status_returned == 405
    assert header(ex.response, b"allow") == b"GET, HEAD"


async def test_absolute_form_target_is_served_as_routed(site: StaticSite) -> None:
    ex = await exchange(site, "http://a.test/s/x/../small.txt")
    assert ex.body == b"hello, world\n"


async def test_file_gone_after_planning_is_404(site: StaticSite, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = SendFile(str(site.file_dir / "gone.txt"), 200, ((b"content-length", b"3"),), 0, 3)
    monkeypatch.setattr(static_io, "plan_static", lambda *args, **kwargs: gone)
    ex = await exchange(site, "/s/gone.txt")
    assert ex.response.status_code == ex.status_returned == 404


async def test_file_shrunk_after_planning_is_500(site: StaticSite, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = SendFile(str(site.file_dir / "small.txt"), 200, ((b"content-length", b"999"),), 0, 999)
    monkeypatch.setattr(static_io, "plan_static", lambda *args, **kwargs: stale)
    ex = await exchange(site, "/s/small.txt")
    assert ex.response.status_code == ex.status_returned == 500
    assert ex.server_state is h11.DONE


async def test_file_shrinking_mid_body_breaks_the_connection(site: StaticSite, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pread = os.pread
    calls = 0

    def pread_then_eof(fd: int, n: int, offset: int) -> bytes:
        nonlocal calls
        calls += 1
        return real_pread(fd, n, offset) if calls == 1 else b""

    monkeypatch.setattr(os, "pread", pread_then_eof)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    h11s = H11Stream(server_stream, h11.Connection(h11.SERVER))
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/s/big.bin", headers=[("Host", "a.test")])
    await client_stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
    event = await h11s.next_event()
    assert isinstance(event, h11.Request)
    with pytest.raises(trio.BrokenResourceError):
        await serve_static(h11s, site, event, event.target)
    assert h11s.conn.our_state is h11.ERROR
    client.receive_data(await client_stream.receive_some(2 * CHUNK_SIZE))
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 200
