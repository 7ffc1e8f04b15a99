"""The upstream hop without I/O: requests as bytes, responses through llhttp (UpstreamWire), and response
bodies handed to the client's h11 connection as bytes (H11Stream.encode_body)."""

from __future__ import annotations

import gc
import weakref

import h11
import pytest
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from snakeway.proxy.h11io import H11Stream
from snakeway.proxy.upstream_wire import BadResponse, UpstreamRequest, UpstreamWire

GET = UpstreamRequest(b"GET", b"/a?b=c", [(b"host", b"up.test"), (b"x-forwarded-for", b"10.0.0.1")])
HEAD = GET._replace(method=b"HEAD")


def sent(wire: UpstreamWire, request: UpstreamRequest = GET, *, upgrade: bool = False) -> bytes:
    """The bytes of ``request`` (with no body), as written upstream."""
    return wire.start_request(request, upgrade=upgrade) + wire.end_request()


def answered(response: bytes, request: UpstreamRequest = GET, *, pieces: list[bytes] | None = None) -> UpstreamWire:
    """A wire that sent ``request`` and read ``response`` (in ``pieces`` when given)."""
    wire = UpstreamWire()
    sent(wire, request)
    for piece in pieces if pieces is not None else [response]:
        wire.feed(piece)
    return wire


def refused(response: bytes, request: UpstreamRequest = GET) -> str:
    with pytest.raises(BadResponse) as caught:
        answered(response, request)
    return str(caught.value)


# --- requests ----------------------------------------------------------------------------------


def test_a_request_head_is_written_as_given() -> None:
    assert sent(UpstreamWire()) == b"GET /a?b=c HTTP/1.1\r\nhost: up.test\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"


def test_a_chunked_body_is_written_as_chunks_and_a_sized_one_as_it_is() -> None:
    wire = UpstreamWire()
    chunked = UpstreamRequest(b"POST", b"/", [(b"host", b"h"), (b"transfer-encoding", b"chunked")], chunked=True)
    wire.start_request(chunked)
    assert wire.request_body(b"hello") + wire.request_body(b"") + wire.request_body(b"x" * 17) == (
        b"5\r\nhello\r\n" + b"11\r\n" + b"x" * 17 + b"\r\n"
    )
    assert wire.end_request() == b"0\r\n\r\n"
    sized = UpstreamWire()
    sized.start_request(UpstreamRequest(b"POST", b"/", [(b"host", b"h"), (b"content-length", b"5")]))
    assert sized.request_body(b"hello") == b"hello"
    assert sized.end_request() == b""


def test_a_chunked_request_written_upstream_reads_back_as_the_same_body() -> None:
    wire = UpstreamWire()
    request = UpstreamRequest(b"POST", b"/up", [(b"host", b"h"), (b"transfer-encoding", b"chunked")], chunked=True)
    data = wire.start_request(request) + wire.request_body(b"abc") + wire.request_body(b"defg") + wire.end_request()
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    events = []
    while type(event := server.next_event()) is not h11.EndOfMessage:
        events.append(event)
    assert b"".join(e.data for e in events if type(e) is h11.Data) == b"abcdefg"


def test_a_connection_whose_request_was_not_ended_is_not_reused() -> None:
    wire = UpstreamWire()
    wire.start_request(UpstreamRequest(b"POST", b"/", [(b"host", b"h"), (b"content-length", b"5")]))
    wire.feed(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")  # answered before the body was sent
    assert wire.complete and wire.status == 413
    assert not wire.reusable()


# --- responses ---------------------------------------------------------------------------------

SMALL = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Pad: a b  \r\n\r\nhello"


def test_a_response_gives_status_reason_lower_case_headers_and_body() -> None:
    wire = answered(SMALL)
    assert (wire.status, wire.reason) == (200, b"OK")
    assert wire.headers == [(b"content-type", b"text/plain"), (b"content-length", b"5"), (b"x-pad", b"a b")]
    assert wire.take_body() == [b"hello"]
    assert wire.take_body() == []
    assert wire.complete and wire.reusable()


def test_the_next_cycle_reads_the_next_response() -> None:
    wire = answered(SMALL)
    wire.next_cycle()
    assert not wire.complete and wire.status == 0
    sent(wire)
    wire.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
    assert (wire.status, b"".join(wire.take_body()), wire.reusable()) == (404, b"no", True)


CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: \"x\"\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer-Field: t\r\n\r\n"
)


def outcome(wire: UpstreamWire) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool, bool]:
    return wire.status, wire.reason, wire.headers, b"".join(wire.take_body()), wire.complete, wire.reusable()


@given(st.sampled_from([SMALL, CHUNKED]), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_any_split_of_a_response_gives_the_same_outcome(response: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(response), *(c % (len(response) + 1) for c in cuts)})
    pieces = [response[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert outcome(answered(response, pieces=pieces)) == outcome(answered(response))


def test_1xx_responses_are_skipped_and_trailers_are_not_headers() -> None:
    wire = answered(CHUNKED)
    assert wire.status == 200
    assert wire.headers == [(b"transfer-encoding", b"chunked"), (b"etag", b'"x"')]
    assert b"".join(wire.take_body()) == b"hello world"
    assert wire.reusable()


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_whatever_they_say(status: int) -> None:
    wire = answered(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status)
    assert wire.complete and wire.take_body() == [] and wire.reusable()


def test_a_response_without_length_is_read_to_the_close_and_not_reused() -> None:
    wire = answered(b"HTTP/1.1 200 OK\r\n\r\nsome")
    wire.feed(b" more")
    assert not wire.complete
    wire.feed_eof()
    assert wire.complete and b"".join(wire.take_body()) == b"some more"
    assert not wire.reusable()


def test_a_close_before_the_end_is_an_invalid_response() -> None:
    wire = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    with pytest.raises(BadResponse):
        wire.feed_eof()


def test_a_close_after_the_end_leaves_it_complete_but_not_reusable() -> None:
    wire = answered(SMALL)
    wire.feed_eof()
    assert wire.complete and not wire.reusable()


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\na",  # as h11: 1.0 is never reused
    ],
)
def test_responses_that_end_the_connection_are_not_reused(response: bytes) -> None:
    wire = answered(response)
    assert wire.complete and b"".join(wire.take_body()) == b"a"
    assert not wire.reusable()


@pytest.mark.parametrize("after", [b"HTTP/1.1 200 OK\r\n", b"garbage", b"x"])
def test_bytes_after_the_response_make_it_unreusable_without_an_error(after: bytes) -> None:
    wire = answered(SMALL + after)
    assert wire.complete and wire.take_body() == [b"hello"]
    assert not wire.reusable()
    late = answered(SMALL)
    late.feed(after)
    assert not late.reusable()


# --- HEAD --------------------------------------------------------------------------------------


def test_a_response_to_head_has_no_body_and_the_next_response_parses() -> None:
    wire = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HEAD)
    assert wire.complete and wire.status == 200 and wire.take_body() == []
    assert wire.headers == [(b"content-length", b"5")]
    assert wire.reusable()
    wire.next_cycle()
    sent(wire)
    wire.feed(SMALL)
    assert (wire.status, wire.take_body(), wire.reusable()) == (200, [b"hello"], True)


@given(st.lists(st.integers(min_value=0, max_value=120), max_size=6))
def test_any_split_of_a_response_to_head_gives_the_same_outcome(cuts: list[int]) -> None:
    response = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    points = sorted({0, len(response), *(c % (len(response) + 1) for c in cuts)})
    pieces = [response[a:b] for a, b in zip(points, points[1:], strict=False)]
    wire = answered(response, HEAD, pieces=pieces)
    assert outcome(wire) == (200, b"OK", [(b"transfer-encoding", b"chunked")], b"", True, True)


def test_a_body_sent_after_a_head_response_is_not_relayed_and_the_connection_not_reused() -> None:
    wire = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", HEAD)
    assert wire.complete and wire.take_body() == []
    assert not wire.reusable()


def test_a_head_response_without_length_is_complete_at_its_head() -> None:
    wire = answered(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", HEAD)
    assert wire.complete and wire.reusable()


# --- upgrades ----------------------------------------------------------------------------------

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_a_101_to_an_upgrade_leaves_the_bytes_after_its_head() -> None:
    wire = UpstreamWire()
    sent(wire, upgrade=True)
    wire.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCH + b"\x81\x02hi")
    assert (wire.status, wire.reason, wire.trailing) == (101, b"Switching Protocols", b"\x81\x02hi")
    assert not wire.reusable()


def test_a_101_is_refused_unless_an_upgrade_was_asked_for_and_named() -> None:
    assert "no upgrade" in refused(SWITCH)
    wire = UpstreamWire()
    sent(wire, upgrade=True)
    with pytest.raises(BadResponse, match="Upgrade"):
        wire.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", id="cl+te"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", id="te+cl"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", id="duplicate-cl"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", id="differing-cl"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", id="cl-list"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", id="cl-sign"),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", id="bare-lf"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", id="bare-cr"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", id="obs-fold"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX y: a\r\nContent-Length: 0\r\n\r\n", id="space-in-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n", id="space-before-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n", id="ctl-in-value"),
        pytest.param(b"HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 0\r\n\r\n", id="empty-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", id="te-gzip"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", id="te-list"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="te-twice"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", id="chunk-bare-lf"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", id="chunk-size"),
        pytest.param(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", id="http2"),
        pytest.param(b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n", id="http1.2"),
        pytest.param(b"HTTP/1.1 099 Low\r\n\r\n", id="status-099"),
        pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="status-2000"),
        pytest.param(b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", id="ctl-in-reason"),
        pytest.param(b"HTTP/1.1 199 Odd\r\nContent-Length: 2\r\n\r\nab", id="1xx-with-body"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="not-http"),
        pytest.param(b"RTSP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="rtsp"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nICE/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", id="ice-after-1xx"),
    ],
)
def test_invalid_responses_are_refused(response: bytes) -> None:
    refused(response)


def test_a_head_over_the_limit_is_refused_in_one_piece_or_many() -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(700)) + b"\r\n"
    assert len(big) > 64 * 1024
    assert "over 65536 bytes" in refused(big + b"and a body")
    wire = UpstreamWire()
    sent(wire)
    with pytest.raises(BadResponse, match="over 65536 bytes"):
        for start in range(0, len(big), 1000):
            wire.feed(big[start : start + 1000])
    with pytest.raises(BadResponse, match="over 65536 bytes"):
        answered(b"HTTP/1.1 200 OK\r\nX: " + b" " * 70_000, HEAD)  # whitespace, which llhttp drops, counts too


def test_a_status_line_is_checked_however_it_is_split() -> None:
    for response in (b"RTSP/1.0 200 OK\r\n\r\n", b"\r\nHTTP/1.1 100 Continue\r\n\r\n\r\nRTSP/1.0 200 OK\r\n\r\n"):
        wire = UpstreamWire()
        sent(wire)
        with pytest.raises(BadResponse, match="not an HTTP"):
            for byte in range(len(response)):
                wire.feed(response[byte : byte + 1])


def test_trailers_past_the_head_limit_are_refused() -> None:
    wire = answered(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: ")
    with pytest.raises(BadResponse, match="over 65536 bytes"):
        for _ in range(100):
            wire.feed(b"t" * 1000)


def test_a_head_just_under_the_limit_is_read() -> None:
    wire = UpstreamWire(max_head=1000)
    sent(wire)
    wire.feed(b"HTTP/1.1 200 OK\r\nX: " + b"v" * 900 + b"\r\nContent-Length: 0\r\n\r\n")
    assert wire.complete


# --- the client's side: body bytes h11 accounts for ----------------------------------------------


def client_hop(request: bytes, response: h11.Response) -> H11Stream:
    """A server-role h11 connection that read ``request`` and sent ``response``'s head."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    assert type(conn.next_event()) is h11.Request
    while type(conn.next_event()) is not h11.EndOfMessage:
        pass
    down = H11Stream(trio.testing.MemorySendStream(), conn)  # type: ignore[arg-type]  # never written to here
    conn.send(response)
    return down


GET_11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET_10 = b"GET / HTTP/1.0\r\n\r\n"
FRAMINGS = [
    pytest.param(GET_11, [(b"content-length", b"%d")], id="content-length"),
    pytest.param(GET_11, [], id="chunked"),
    pytest.param(GET_10, [], id="http/1.0"),
]


@pytest.mark.parametrize(("request_bytes", "headers"), FRAMINGS)
@given(chunks=st.lists(st.binary(max_size=40), max_size=6))
def test_body_bytes_are_framed_as_h11_data_events_would_be(
    request_bytes: bytes, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> None:
    size = sum(map(len, chunks))
    head = h11.Response(status_code=200, headers=[(n, v % size if b"%" in v else v) for n, v in headers])
    ours, theirs = client_hop(request_bytes, head), client_hop(request_bytes, head)
    out: list[bytes] = []
    ours.encode_body(chunks, out)
    expected = b"".join(theirs.conn.send(h11.Data(data=c)) or b"" for c in chunks)
    assert b"".join(out) == expected
    assert ours.conn.send(h11.EndOfMessage()) == theirs.conn.send(h11.EndOfMessage())
    assert ours.conn.our_state is theirs.conn.our_state is (h11.DONE if request_bytes == GET_11 else h11.MUST_CLOSE)


def test_a_body_short_of_its_length_cannot_end() -> None:
    down = client_hop(GET_11, h11.Response(status_code=200, headers=[(b"content-length", b"5")]))
    down.encode_body([b"hel"], [])
    with pytest.raises(h11.LocalProtocolError):  # 2 of 5 bytes missing
        down.conn.send(h11.EndOfMessage())


def test_a_body_counted_to_its_length_lets_the_client_connection_live_on() -> None:
    down = client_hop(GET_11, h11.Response(status_code=200, headers=[(b"content-length", b"5")]))
    out: list[bytes] = []
    down.encode_body([b"hel", b"lo"], out)
    assert out == [b"hel", b"lo"]
    down.conn.send(h11.EndOfMessage())
    assert down.conn.our_state is h11.DONE
    down.conn.start_next_cycle()
    assert down.conn.our_state is h11.IDLE  # type: ignore[comparison-overlap]  # changed by start_next_cycle


def test_more_body_than_the_length_is_refused_and_the_client_connection_fails() -> None:
    down = client_hop(GET_11, h11.Response(status_code=200, headers=[(b"content-length", b"4")]))
    with pytest.raises(h11.LocalProtocolError):
        down.encode_body([b"hel", b"lo"], [])
    assert down.conn.our_state is h11.ERROR


def test_body_bytes_when_no_body_is_being_sent_are_refused_by_h11() -> None:
    conn = h11.Connection(h11.SERVER)
    down = H11Stream(trio.testing.MemorySendStream(), conn)  # type: ignore[arg-type]
    with pytest.raises(h11.LocalProtocolError):
        down.encode_body([b"x"], [])


def test_a_closed_wire_is_freed_without_waiting_for_the_cycle_collector() -> None:
    wire = answered(SMALL)
    ref = weakref.ref(wire)
    gc.disable()
    try:
        wire.close()
        del wire
        assert ref() is None
    finally:
        gc.enable()
