"""snakeway.tls.leanssl's reads and writes: trio.SSLStream's behaviour in fewer steps, trio's own where it differs.

The server side reads and writes through :func:`leanssl.receive` and
:func:`leanssl.send_all`, over real sockets; the client is a plain
``trio.SSLStream`` or, to cut records and send garbage, its raw socket.
"""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing

from snakeway.tcp import TcpStream
from snakeway.tls import leanssl
from tests.test_leanssl import _tls_pair
from tests.test_tcp import _Steps

READ = 65536


async def _lean_pair() -> tuple[trio.SSLStream[TcpStream], trio.SSLStream[TcpStream]]:
    client, server = await _tls_pair(quick=True)
    assert leanssl.is_lean(server)
    return client, server


async def _close(*streams: trio.abc.AsyncResource) -> None:
    for stream in streams:
        await trio.aclose_forcefully(stream)


async def test_kept_alive_exchanges_go_both_ways_from_the_first_write_on() -> None:
    # The first write also carries the session tickets trio held back during the handshake.
    client, server = await _lean_pair()
    for n in range(5):
        request = b"GET /%d HTTP/1.1\r\n\r\n" % n
        await client.send_all(request)
        assert await leanssl.receive(server, READ) == request
        await leanssl.send_all(server, b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n%d" % n)
        assert await client.receive_some() == b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n%d" % n
    assert client.session is not None and client.session.has_ticket  # the tickets did arrive
    await _close(client, server)


async def test_the_lean_paths_take_no_more_trips_through_the_scheduler_than_trios() -> None:
    async def steps(lean: bool) -> int:
        client, server = await _lean_pair()
        await client.send_all(b"warm-up")
        assert await server.receive_some() == b"warm-up"
        await server.send_all(b"tickets go out with this")
        assert await client.receive_some() == b"tickets go out with this"
        counter = _Steps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            await client.send_all(b"ping")
            counter.steps = 0
            got = await (leanssl.receive(server, READ) if lean else server.receive_some(READ))
            await (leanssl.send_all(server, b"pong") if lean else server.send_all(b"pong"))
            counted = counter.steps
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert got == b"ping" and await client.receive_some() == b"pong"
        await _close(client, server)
        return counted

    assert await steps(lean=True) <= await steps(lean=False)


class _Holding:
    """Stands in for the client's socket: keeps what its TLS layer sends, for the test to send as it likes."""

    def __init__(self) -> None:
        self.wire = bytearray()

    async def send_all(self, data: bytes) -> None:
        self.wire.extend(data)


async def _records(client: trio.SSLStream[TcpStream], *messages: bytes) -> bytes:
    """The TLS records ``client`` would send for ``messages``, held back from its socket."""
    raw = client.transport_stream
    holding = _Holding()
    client.transport_stream = holding  # type: ignore[assignment]
    try:
        for message in messages:
            await client.send_all(message)
    finally:
        client.transport_stream = raw
    return bytes(holding.wire)


async def _read_at_least(server: trio.SSLStream[TcpStream], size: int, got: bytearray) -> None:
    while len(got) < size:
        chunk = await leanssl.receive(server, READ)
        assert chunk, "an empty read says the stream ended"
        got.extend(chunk)


async def test_a_record_cut_across_reads_is_read_whole() -> None:
    client, server = await _lean_pair()
    message = b"x" * 3000
    wire = await _records(client, message)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_at_least, server, len(message), got)
        await client.transport_stream.send_all(wire[:100])  # the header and a little of the record
        await trio.testing.wait_all_tasks_blocked()
        assert not got  # nothing can be decrypted from part of a record
        await client.transport_stream.send_all(wire[100:])
    assert bytes(got) == message
    await _close(client, server)


async def test_two_records_in_one_read_come_out_in_order() -> None:
    client, server = await _lean_pair()
    await client.transport_stream.send_all(await _records(client, b"first request;", b"second request"))
    got = bytearray()  # both records arrived at once: the first read takes both
    await _read_at_least(server, len(b"first request;second request"), got)
    assert bytes(got) == b"first request;second request"
    await _close(client, server)


@pytest.mark.parametrize("close_notify", [True, False])
async def test_the_clients_end_reads_as_the_end_of_the_stream(close_notify: bool) -> None:
    client, server = await _lean_pair()
    await client.send_all(b"last words")
    assert await leanssl.receive(server, READ) == b"last words"
    if close_notify:
        await client.aclose()  # TLS's own goodbye first
    else:
        await client.transport_stream.aclose()  # the socket only: https_compatible takes it as the end
    assert await leanssl.receive(server, READ) == b""
    await _close(server)


async def test_garbage_breaks_the_stream_for_reads_and_writes() -> None:
    client, server = await _lean_pair()
    await client.transport_stream.send_all(b"\x17\x03\x03\x00\x10" + b"not a real record")
    with pytest.raises(trio.BrokenResourceError):
        await leanssl.receive(server, READ)
    with pytest.raises(trio.BrokenResourceError):
        await leanssl.send_all(server, b"too late")
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()  # trio's own methods agree
    await _close(client, server)


async def test_a_second_reader_is_refused_as_trio_refuses_it() -> None:
    client, server = await _lean_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leanssl.receive, server, READ)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await leanssl.receive(server, READ)
        await client.send_all(b"for the first reader")
    await _close(client, server)


async def test_a_cancelled_lean_read_loses_nothing() -> None:
    client, server = await _lean_pair()
    with trio.move_on_after(0.05):
        await leanssl.receive(server, READ)  # nothing comes
    await client.send_all(b"later")
    assert await leanssl.receive(server, READ) == b"later"
    await _close(client, server)


async def test_a_stream_trio_was_left_to_run_alone_is_not_lean() -> None:
    client, server = await _tls_pair(quick=False)
    assert not leanssl.is_lean(server)
    assert not leanssl.is_lean(client.transport_stream)
    await _close(client, server)


def test_only_an_eof_without_close_notify_counts_as_the_end() -> None:
    assert leanssl._is_eof(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert leanssl._is_eof(ssl.SSLError(1, "[SSL: UNEXPECTED_EOF_WHILE_READING] unexpected eof while reading"))
    assert not leanssl._is_eof(ssl.SSLError("no errno, no reason"))  # strerror is None: not an EOF, no TypeError
    assert not leanssl._is_eof(ssl.CertificateError("hostname mismatch"))
