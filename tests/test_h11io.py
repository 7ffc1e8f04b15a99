"""H11Stream: a failed write ends the state machine, and HTTP/1.0 keep-alive on h11's state machine.
(A client's send timeout belongs to its transport: tests/test_tcp.py.)"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from snakeway.proxy.h11io import H11Stream, announce_keep_alive, keep_http10_alive


def server_after_request(stream: trio.abc.Stream) -> H11Stream:
    """A server-side H11Stream whose peer has sent a GET."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert type(conn.next_event()) is h11.Request
    assert type(conn.next_event()) is h11.EndOfMessage
    return H11Stream(stream, conn)


async def test_a_reply_that_cannot_be_written_leaves_the_connection_unusable() -> None:
    client, server = trio.testing.lockstep_stream_pair()
    h = server_after_request(server)
    await client.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await h.send_response(404, [(b"content-type", b"text/plain")], b"not here\n")
    assert h.conn.our_state is h11.ERROR  # the connection is not reused


async def test_a_reply_is_written_whole() -> None:
    client, server = trio.testing.memory_stream_pair()
    h = server_after_request(server)
    await h.send_response(404, [(b"content-length", b"9")], b"not here\n")
    received = await client.receive_some()
    assert received.startswith(b"HTTP/1.1 404 Not Found\r\n") and received.endswith(b"\r\n\r\nnot here\n")
    assert h.conn.our_state is h11.DONE


def answered(request: bytes, response_headers: list[tuple[bytes, bytes]]) -> tuple[h11.Connection, bytes, bool]:
    """A server connection that read ``request`` and sent a response of ``response_headers``:
    (the connection, the response head, whether keep_http10_alive kept it)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    event = conn.next_event()
    assert type(event) is h11.Request
    kept = keep_http10_alive(conn, event)
    assert type(conn.next_event()) is h11.EndOfMessage
    response = h11.Response(status_code=200, headers=response_headers)
    head = conn.send(announce_keep_alive(response) if kept else response)
    conn.send(h11.Data(data=b"hello"))
    conn.send(h11.EndOfMessage())
    return conn, head.lower(), kept


KEEP_ALIVE_10 = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"


def test_an_http10_keep_alive_exchange_of_known_length_is_reusable() -> None:
    conn, head, kept = answered(KEEP_ALIVE_10 + b"GET /next HTTP/1.0\r\n\r\n", [(b"content-length", b"5")])
    assert kept and b"\r\nconnection: keep-alive\r\n" in head
    assert (conn.our_state, conn.their_state) == (h11.DONE, h11.DONE)
    conn.start_next_cycle()
    following = conn.next_event()
    assert type(following) is h11.Request and following.target == b"/next"


def test_an_http10_response_of_unknown_length_still_closes() -> None:
    conn, head, kept = answered(KEEP_ALIVE_10, [])
    assert kept and b"\r\nconnection: close\r\n" in head and b"keep-alive" not in head
    assert conn.our_state is h11.MUST_CLOSE


@pytest.mark.parametrize(
    "request_head",
    [b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"],
)
def test_http10_without_keep_alive_closes(request_head: bytes) -> None:
    conn, head, kept = answered(request_head, [(b"content-length", b"5")])
    assert not kept and b"\r\nconnection: close\r\n" in head
    assert conn.our_state is h11.MUST_CLOSE


def test_a_response_that_says_close_keeps_its_own_connection_header() -> None:
    conn, head, kept = answered(KEEP_ALIVE_10, [(b"content-length", b"5"), (b"connection", b"close")])
    assert kept and head.count(b"connection") == 1 and b"keep-alive" not in head
    assert conn.our_state is h11.MUST_CLOSE
