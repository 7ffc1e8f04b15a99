"""Spliced response bodies: when (splice_count), the kernel move on real 127.0.0.1 sockets
(TcpStream.send_spliced, real time), and how the wire and h11 account for bytes they never saw."""

from __future__ import annotations

import os
import socket

import h11
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from snakeway.pipe import Pipe
from snakeway.proxy.h11io import H11Stream
from snakeway.proxy.splice import SPLICE_MIN_BYTES, splice_count
from snakeway.proxy.upstream_wire import BadResponse, UpstreamRequest, UpstreamWire
from snakeway.tcp import SendTimeout, SpliceSourceError, TcpStream, open_tcp_stream

GET = UpstreamRequest(b"GET", b"/big", [(b"host", b"up.test")])
SEND_TIMEOUT = 1.0


# --- when -------------------------------------------------------------------------------------


@given(
    body_left=st.integers(-1, 4 * SPLICE_MIN_BYTES),
    client_left=st.none() | st.integers(0, 4 * SPLICE_MIN_BYTES),
    plain_client=st.booleans(),
    tcp_upstream=st.booleans(),
)
def test_only_a_long_enough_sized_body_between_two_plain_tcp_hops_is_spliced(
    body_left: int, client_left: int | None, plain_client: bool, tcp_upstream: bool
) -> None:
    count = splice_count(body_left, client_left, plain_client=plain_client, tcp_upstream=tcp_upstream)
    wanted = plain_client and tcp_upstream and client_left == body_left and body_left >= SPLICE_MIN_BYTES
    assert count == (body_left if wanted else 0)


def test_the_threshold_and_the_framings_at_its_edges() -> None:
    both = {"plain_client": True, "tcp_upstream": True}
    assert splice_count(SPLICE_MIN_BYTES, SPLICE_MIN_BYTES, **both) == SPLICE_MIN_BYTES
    assert splice_count(SPLICE_MIN_BYTES - 1, SPLICE_MIN_BYTES - 1, **both) == 0
    assert splice_count(10 * SPLICE_MIN_BYTES, None, **both) == 0  # chunked or close-delimited toward the client
    assert splice_count(-5, None, **both) == 0  # a chunked upstream body
    assert splice_count(10 * SPLICE_MIN_BYTES, 10 * SPLICE_MIN_BYTES, plain_client=False, tcp_upstream=True) == 0


# --- the wire, told of bytes that went past it --------------------------------------------------


def big_head(length: int, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


def test_the_wire_counts_what_is_left_of_a_sized_body_and_nothing_for_other_framings() -> None:
    wire = UpstreamWire()
    wire.start_request(GET)
    wire.end_request()
    wire.feed(big_head(1000) + b"x" * 300)
    assert wire.body_left == 700 and not wire.complete
    wire.feed(b"y" * 200)
    assert wire.body_left == 500
    chunked = UpstreamWire()
    chunked.start_request(GET)
    chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert chunked.body_left < 0
    head = UpstreamWire()
    head.start_request(GET._replace(method=b"HEAD"))
    head.feed(big_head(1000))
    assert head.complete and head.body_left < 0
    for status in (b"204 No Content", b"304 Not Modified"):
        none = UpstreamWire()
        none.start_request(GET)
        none.feed(b"HTTP/1.1 %s\r\nContent-Length: 1000\r\n\r\n" % status)
        assert none.body_left < 0


def test_a_body_moved_past_the_wire_completes_it_and_the_connection_carries_the_next_exchange() -> None:
    wire = UpstreamWire()
    wire.start_request(GET)
    wire.end_request()
    wire.feed(big_head(1000) + b"x" * 100)
    wire.take_body()
    wire.body_moved(900, followed=False)
    assert wire.complete and wire.body_left == 0 and wire.reusable()
    wire.next_cycle()
    # llhttp never saw the 900 bytes: a parser still expecting them would take this head for body.
    wire.start_request(GET)
    wire.end_request()
    wire.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert wire.status == 201 and wire.complete and wire.take_body() == [b"ok"] and wire.reusable()


def test_bytes_or_a_close_after_a_moved_body_keep_the_connection_from_reuse() -> None:
    wire = UpstreamWire()
    wire.start_request(GET)
    wire.end_request()
    wire.feed(big_head(1000))
    wire.body_moved(1000, followed=True)
    assert wire.complete and not wire.reusable()
    # What the wire is fed after the moved body counts as bytes after the response, as for a read body.
    fed = UpstreamWire()
    fed.start_request(GET)
    fed.end_request()
    fed.feed(big_head(1000))
    fed.body_moved(1000, followed=False)
    fed.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
    assert not fed.reusable()


def test_a_body_cut_short_past_the_wire_is_an_invalid_response_at_the_close() -> None:
    wire = UpstreamWire()
    wire.start_request(GET)
    wire.end_request()
    wire.feed(big_head(1000))
    wire.body_moved(400, followed=False)
    assert not wire.complete and wire.body_left == 600
    with pytest.raises(BadResponse):
        wire.feed_eof()
    assert not wire.reusable()
    with pytest.raises(ValueError):
        wire.body_moved(601, followed=False)


# --- the kernel move, on real sockets --------------------------------------------------------


async def _pair() -> tuple[TcpStream, TcpStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        client = await open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        accepted = await listener.accept()
    return client, TcpStream(accepted)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def pipes_open() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return count


async def read_all(stream: TcpStream, into: bytearray, size: int) -> None:
    while len(into) < size:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        into += chunk


async def test_a_splice_moves_every_byte_and_leaves_the_extra_ones_in_the_source() -> None:
    # upstream -> (src) proxy (dst) -> client
    upstream, src = await _pair()
    dst, client = await _pair()
    payload = os.urandom(5 * 1024 * 1024 + 17)
    waits = []
    pipe = Pipe()
    got = bytearray()
    async with upstream, src, dst, client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upstream.send_all, payload + b"next")
            nursery.start_soon(read_all, client, got, len(payload))
            sent = await dst.send_spliced(src, pipe, len(payload), lambda: waits.append(1))
        assert sent == len(payload) and bytes(got) == payload
        assert waits  # 5 MiB from another task: the move waited for the source at least once
        assert await src.receive_some(100) == b"next"  # nothing past the count was taken
        assert pipe.read_fd >= 0  # kept for the next move
    pipe.close()


async def test_a_source_that_ends_early_gives_what_it_had_and_says_how_much() -> None:
    upstream, src = await _pair()
    dst, client = await _pair()
    payload = os.urandom(300_000)
    pipe = Pipe()
    got = bytearray()
    async def send_and_close() -> None:
        async with upstream:
            await upstream.send_all(payload)

    async with src, dst, client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_and_close)
            nursery.start_soon(read_all, client, got, len(payload))
            sent = await dst.send_spliced(src, pipe, 1_000_000, lambda: None)
        assert sent == len(payload) and bytes(got) == payload
    pipe.close()


async def test_a_reader_that_stops_is_cut_off_by_the_send_timeout_and_the_pipe_is_closed() -> None:
    fds = open_fds()
    upstream, src = await _pair()
    dst, client = await _pair()
    dst.send_timeout = SEND_TIMEOUT
    blocked = []
    dst.on_send_blocked = lambda: blocked.append(trio.current_time())
    pipe = Pipe()
    async with upstream, src, dst, client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upstream.send_all, b"x" * (16 * 1024 * 1024))
            started = trio.current_time()
            with pytest.raises(SendTimeout):
                await dst.send_spliced(src, pipe, 16 * 1024 * 1024, lambda: None)
            assert trio.current_time() - started >= SEND_TIMEOUT
            assert blocked  # the owner heard that the move waited for the peer
            assert pipe.read_fd == -1  # it held bytes of the move: closed, not reused
            nursery.cancel_scope.cancel()
    assert open_fds() == fds


async def test_a_reset_source_is_a_source_error_and_a_cancelled_move_closes_its_pipe() -> None:
    fds = open_fds()
    upstream, src = await _pair()
    dst, client = await _pair()
    pipe = Pipe()
    async with src, dst, client:
        await upstream.send_all(b"x" * 1000)
        upstream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await upstream.aclose()
        await trio.sleep(0.05)
        with pytest.raises(SpliceSourceError):
            await dst.send_spliced(src, pipe, 10_000, lambda: None)
    assert pipe.read_fd == -1 and open_fds() == fds

    upstream, src = await _pair()
    dst, client = await _pair()
    async with upstream, src, dst, client:
        await upstream.send_all(b"y" * 1000)
        with trio.move_on_after(0.2) as waited:  # the source sends no more: the move waits, and is cancelled
            await dst.send_spliced(src, pipe, 10_000, lambda: None)
        assert waited.cancelled_caught
        assert pipe.read_fd == -1
        assert await client.receive_some(2000) == b"y" * 1000  # what was moved before the wait
    assert open_fds() == fds


async def test_many_moves_through_one_pipe_hold_two_descriptors_at_most() -> None:
    before = pipes_open()
    upstream, src = await _pair()
    dst, client = await _pair()
    pipe = Pipe()
    async with upstream, src, dst, client:
        for _ in range(20):
            got = bytearray()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(upstream.send_all, b"z" * 200_000)
                nursery.start_soon(read_all, client, got, 200_000)
                assert await dst.send_spliced(src, pipe, 200_000, lambda: None) == 200_000
            assert len(got) == 200_000
            assert pipes_open() == before + 2
    pipe.close()
    assert pipes_open() == before


async def test_a_move_that_never_waits_still_lets_other_tasks_run() -> None:
    upstream, src = await _pair()
    dst, client = await _pair()
    pipe = Pipe()
    async with upstream, src, dst, client:
        await upstream.send_all(b"w" * 100_000)
        await trio.sleep(0.05)  # all of it in src's buffer: no wait for the source
        with trio.testing.assert_checkpoints():
            assert await dst.send_spliced(src, pipe, 100_000, lambda: pytest.fail("waited")) == 100_000
        assert len(await client.receive_some(200_000)) > 0
    pipe.close()


# --- h11's count ------------------------------------------------------------------------------


async def test_h11_counts_a_spliced_body_against_the_content_length_and_ends_done() -> None:
    upstream, src = await _pair()
    dst, client = await _pair()
    pipe = Pipe()
    size = 400_000
    down = H11Stream(dst, h11.Connection(h11.SERVER))
    down.conn.receive_data(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    down.conn.next_event(), down.conn.next_event()  # the request and its end
    got = bytearray()
    async with upstream, src, dst, client:
        head = down.encode((h11.Response(status_code=200, headers=[(b"content-length", b"%d" % size)]),))
        await down.send_raw(head)
        out: list[bytes] = []
        down.encode_body([b"a" * 1000], out)
        await down.send_raw(b"".join(out))
        assert down.length_left() == size - 1000
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upstream.send_all, b"b" * (size - 1000))
            nursery.start_soon(read_all, client, got, len(head) + size)
            assert await down.send_spliced(src, pipe, size - 1000, lambda: None) == size - 1000
        assert down.length_left() == 0
        assert down.conn.send(h11.EndOfMessage()) == b""
        assert down.conn.our_state is h11.DONE
        assert down.sent == len(head) + size == len(got)

        # A source that ends early: counted as sent, h11 still owes the rest.
        down.conn.start_next_cycle()
        down.conn.receive_data(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        down.conn.next_event(), down.conn.next_event()
        down.sent = 0
        head = down.encode((h11.Response(status_code=200, headers=[(b"content-length", b"%d" % size)]),))
        got = bytearray()

        async def send_and_end() -> None:
            await upstream.send_all(b"c" * 100_000)
            await upstream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_and_end)
            nursery.start_soon(read_all, client, got, 100_000)
            assert await down.send_spliced(src, pipe, size, lambda: None) == 100_000
        assert down.length_left() == size - 100_000 and down.sent == 100_000
    pipe.close()
