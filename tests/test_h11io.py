"""H11Stream: timed writes to a peer that stops reading (MockClock over lockstep streams)."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from snakeway.proxy.h11io import H11Stream, SendTimeout


def server_after_request(stream: trio.abc.Stream, send_timeout: float) -> H11Stream:
    """A server-side H11Stream whose peer has sent a GET (lockstep: a write waits for a read)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert type(conn.next_event()) is h11.Request
    assert type(conn.next_event()) is h11.EndOfMessage
    return H11Stream(stream, conn, send_timeout=send_timeout)


async def test_a_reply_to_a_peer_that_reads_nothing_fails_after_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.lockstep_stream_pair()
    h = server_after_request(server, send_timeout=7)
    started = trio.current_time()
    with pytest.raises(SendTimeout):
        await h.send_response(404, [(b"content-type", b"text/plain")], b"not here\n")
    assert trio.current_time() - started == pytest.approx(7)
    assert h.conn.our_state is h11.ERROR  # the connection is not reused


async def test_a_reply_to_a_peer_that_reads_is_sent_whole(autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.lockstep_stream_pair()
    h = server_after_request(server, send_timeout=7)
    received = bytearray()

    async def read_slowly() -> None:
        await trio.sleep(6)  # within the send timeout
        while not received.endswith(b"\r\n\r\nnot here\n"):
            received.extend(await client.receive_some(4))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        await h.send_response(404, [(b"content-length", b"9")], b"not here\n")
    assert received.startswith(b"HTTP/1.1 404 Not Found\r\n") and received.endswith(b"not here\n")
    assert h.conn.our_state is h11.DONE
