"""The one-walk header summaries give exactly the answers of the general functions they replace."""

from __future__ import annotations

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from snakeway.proxy.headers import (
    HOP_BY_HOP,
    RequestHeaders,
    downstream_response_headers,
    get_header,
    has_token,
    relayed_response_headers,
    upstream_request_headers,
)

SPECIAL = sorted(
    HOP_BY_HOP
    | {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"user-agent",
       b"expect", b"proxy-authorization", b"proxy-x", b"strict-transport-security", b"p", b"x-a", b"accept"}
)
# Mostly the names the walks treat apart, so that they meet each other (a Connection naming a field present).
name = st.one_of(st.sampled_from(SPECIAL), st.text(alphabet="abpxy-", min_size=1, max_size=8).map(str.encode))
token = st.one_of(st.sampled_from([b"keep-alive", b"close", b"Upgrade", b"upgrade", b"websocket", b"WebSocket"]), name)
value = st.one_of(st.lists(token, max_size=3).map(lambda ts: b" , ".join(ts)), st.binary(max_size=6))
field_lists = st.lists(st.tuples(name, value), max_size=12)
STS = (b"strict-transport-security", b"max-age=1")
CL0 = (b"content-length", b"0")


@example(headers=[(b"x-forwarded-for", b"1.2.3.4"), (b"connection", b"X-Forwarded-For")], drop=frozenset(), via=True)
@example(headers=[(b"expect", b"100-continue"), (b"x-a", b"1")], drop=frozenset({b"expect"}), via=False)
@settings(max_examples=400)
@given(
    headers=field_lists,
    drop=st.sampled_from([frozenset(), frozenset({b"expect"}), frozenset({b"x-a", b"content-length"})]),
    via=st.booleans(),
)
def test_request_summary_forwards_what_the_general_walk_forwards(
    headers: list[tuple[bytes, bytes]], drop: frozenset[bytes], via: bool
) -> None:
    def upstream(h: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return upstream_request_headers(h, client_ip="10.0.0.9", scheme="https", host=b"a.test", drop=drop, via=via)

    summary = RequestHeaders.of(headers)
    assert summary == headers
    assert upstream(summary) == upstream(list(headers))
    assert upstream(summary) == upstream(list(headers))  # the summary is not consumed by a use


@given(headers=field_lists)
def test_request_summary_reads_what_a_search_reads(headers: list[tuple[bytes, bytes]]) -> None:
    summary = RequestHeaders.of(headers)
    assert summary.content_length == get_header(headers, b"content-length")
    assert summary.chunked == (get_header(headers, b"transfer-encoding") is not None)
    assert summary.host == next((v for n, v in reversed(headers) if n == b"host"), None)
    assert summary.agent == next((v for n, v in reversed(headers) if n == b"user-agent"), None)
    assert summary.wants_websocket() == (
        has_token(headers, b"upgrade", b"websocket") and has_token(headers, b"connection", b"upgrade")
    )


@example(headers=[(b"content-length", b"1"), (b"connection", b"content-length, x-a")], via=True, own=(STS, CL0))
@settings(max_examples=400)
@given(headers=field_lists, via=st.booleans(), own=st.sampled_from([(), (STS,), (STS, CL0)]))
def test_response_walk_relays_what_the_general_walk_relays(
    headers: list[tuple[bytes, bytes]], via: bool, own: tuple[tuple[bytes, bytes], ...]
) -> None:
    names = {n for n, _ in headers}
    ambiguous = b"content-length" in names and b"transfer-encoding" in names
    relayed = relayed_response_headers(headers, via=via, own=own)
    if ambiguous:
        assert relayed is None
    else:
        assert relayed == downstream_response_headers(headers, via=via, own=own)


def test_summary_of_h11_headers_keeps_their_order_and_values() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: s\r\nUser-Agent: ua\r\nContent-Length: 3\r\nProxy-Authorization: p\r\nAccept: */*\r\n\r\nabc"
    )
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    summary = RequestHeaders.of(request.headers)
    assert summary == list(request.headers)
    assert (summary.host, summary.agent, summary.content_length, summary.chunked) == (b"a.test", b"ua", b"3", False)
    out = upstream_request_headers(summary, client_ip="10.0.0.9", scheme="http", host=b"a.test")
    assert out == [
        (b"host", b"a.test"),
        (b"user-agent", b"ua"),
        (b"content-length", b"3"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"1.2.3.4, 10.0.0.9"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"a.test"),
        (b"via", b"1.1 snakeway"),
    ]
