"""Small request bodies read before connecting: the decision, and the reads (MockClock over memory streams)."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from snakeway.proxy.errors import ClientGone, RequestFailed
from snakeway.proxy.h11io import H11Stream
from snakeway.proxy.request_body import read_body, read_first


@given(st.one_of(st.none(), st.integers(0, 10**9)), st.integers(0, 10**6))
def test_a_sized_body_is_read_first_when_it_fits(declared: int | None, buffer_bytes: int) -> None:
    assert read_first(declared, False, buffer_bytes) == (declared is not None and 0 < declared <= buffer_bytes)


def test_a_chunked_body_is_read_first_unless_buffering_is_off() -> None:
    assert read_first(None, True, 1)
    assert not read_first(None, True, 0)


async def server_with_head(head: bytes) -> tuple[trio.testing.MemorySendStream, H11Stream]:
    """(what the client writes into, the server side) once ``head`` has been parsed."""
    client, server = trio.testing.memory_stream_pair()
    h = H11Stream(server, h11.Connection(h11.SERVER))
    await client.send_all(head)
    assert type(await h.next_event()) is h11.Request
    return client, h  # type: ignore[return-value]


SIZED = b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n"
CHUNKED = b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_a_sized_body_is_read_whole_across_slow_reads(autojump_clock: trio.testing.MockClock) -> None:
    client, h = await server_with_head(SIZED)

    async def trickle() -> None:
        for byte in b"0123456789":
            await trio.sleep(4)  # each within the timeout of 5
            await client.send_all(bytes([byte]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        body = await read_body(h, buffer_bytes=64, limit=None, timeout=5)
    assert body.complete and body.size == 10
    assert b"".join(e.data for e in body.events if type(e) is h11.Data) == b"0123456789"
    assert type(body.events[-1]) is h11.EndOfMessage


async def test_a_read_later_than_the_body_timeout_is_408(autojump_clock: trio.testing.MockClock) -> None:
    client, h = await server_with_head(SIZED)
    await client.send_all(b"0123")
    started = trio.current_time()
    with pytest.raises(RequestFailed) as info:
        await read_body(h, buffer_bytes=64, limit=None, timeout=5)
    assert info.value.status == 408
    assert trio.current_time() - started == pytest.approx(5)


async def test_a_chunked_body_stops_past_the_buffer(autojump_clock: trio.testing.MockClock) -> None:
    client, h = await server_with_head(CHUNKED)
    await client.send_all(b"8\r\nabcdefgh\r\n8\r\nijklmnop\r\n8\r\nqrstuvwx\r\n")
    body = await read_body(h, buffer_bytes=10, limit=None, timeout=5)
    assert not body.complete and body.size == 16  # the rest is left for the relay
    assert type(h.conn.next_event()) is h11.Data


async def test_a_chunked_body_over_the_limit_is_413(autojump_clock: trio.testing.MockClock) -> None:
    client, h = await server_with_head(CHUNKED)
    await client.send_all(b"8\r\nabcdefgh\r\n8\r\nijklmnop\r\n0\r\n\r\n")
    with pytest.raises(RequestFailed) as info:
        await read_body(h, buffer_bytes=64, limit=12, timeout=5)
    assert info.value.status == 413


async def test_100_continue_is_sent_before_the_body_is_read(autojump_clock: trio.testing.MockClock) -> None:
    client, h = await server_with_head(SIZED.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))

    async def answer_continue() -> None:
        assert (await client.receive_some()).startswith(b"HTTP/1.1 100 Continue\r\n")
        await client.send_all(b"0123456789")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_continue)
        body = await read_body(h, buffer_bytes=64, limit=None, timeout=5)
    assert body.complete and body.size == 10


async def test_a_client_closing_mid_body_is_gone(autojump_clock: trio.testing.MockClock) -> None:
    client, h = await server_with_head(SIZED)
    await client.send_all(b"0123")
    await client.aclose()
    with pytest.raises(ClientGone):
        await read_body(h, buffer_bytes=64, limit=None, timeout=5)
