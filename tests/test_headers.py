from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from snakeway.proxy.headers import (
    HOP_BY_HOP,
    downstream_response_headers,
    end_to_end,
    has_underscored_name,
    upstream_request_headers,
    without_underscored_names,
)

H = [(b"host", b"a.test"), (b"accept", b"*/*")]


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n for n, _ in headers]


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    headers = [
        *H,
        (b"connection", b"keep-alive, x-secret"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret", b"1"),
        (b"te", b"trailers"),
        (b"proxy-authorization", b"Basic x"),
        (b"upgrade", b"h2c"),
    ]
    assert names(end_to_end(headers)) == [b"host", b"accept"]


def test_forwarded_headers_set_and_appended() -> None:
    out = upstream_request_headers(
        [*H, (b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-proto", b"https")],
        client_ip="127.0.0.1",
        scheme="http",
        host=b"a.test",
    )
    d = dict(out)
    assert d[b"x-forwarded-for"] == b"10.0.0.1, 127.0.0.1"
    assert d[b"x-forwarded-proto"] == b"http"
    assert d[b"x-forwarded-host"] == b"a.test"
    assert d[b"via"] == b"1.1 snakeway"
    assert d[b"host"] == b"a.test"
    assert names(out).count(b"x-forwarded-proto") == 1


def test_underscored_names_are_dropped() -> None:
    headers = [*H, (b"x_forwarded_for", b"6.6.6.6"), (b"transfer_encoding", b"chunked"), (b"x-ok", b"a_b"), (b"_", b"")]
    assert without_underscored_names(headers) == [*H, (b"x-ok", b"a_b")]


def test_only_names_count_as_underscored() -> None:
    browser = [*H, (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"), (b"cookie", b"_ga=1; _gid=2; session_id=3")]
    assert not has_underscored_name(browser)
    for name in (b"x_a", b"_", b"x-a_"):
        assert has_underscored_name([*browser, (name, b"1")]), name
        assert has_underscored_name([(name, b"1"), *browser]), name


@given(st.lists(st.tuples(st.sampled_from([b"a", b"b-c", b"_", b"d_e", b"f\n"]), st.binary(max_size=4)), max_size=5))
def test_has_underscored_name_agrees_with_the_filter(headers: list[tuple[bytes, bytes]]) -> None:
    assert has_underscored_name(headers) == (without_underscored_names(headers) != headers)


def test_response_gets_via() -> None:
    out = downstream_response_headers([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")])
    assert out == [(b"content-length", b"3"), (b"via", b"1.1 snakeway")]


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)
hop = st.sampled_from(sorted(HOP_BY_HOP) + [b"proxy-authenticate", b"proxy-connection"])


@given(
    plain=st.lists(st.tuples(token, token), max_size=8),
    hops=st.lists(st.tuples(hop, token), max_size=5),
    named=st.lists(token, max_size=3),
)
def test_no_hop_by_hop_header_ever_passes(plain, hops, named) -> None:  # type: ignore[no-untyped-def]
    headers = [*plain, *hops]
    if named:
        headers.append((b"connection", b", ".join(named)))
    out = upstream_request_headers(headers, client_ip="1.2.3.4", scheme="http", host=b"h")
    for name, _ in out:
        assert name not in HOP_BY_HOP
        assert not name.startswith(b"proxy-")
        assert name not in named or name in (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via")


def test_via_can_be_left_out_both_ways() -> None:
    request = upstream_request_headers(H, client_ip="127.0.0.1", scheme="http", host=b"a.test", via=False)
    assert b"via" not in names(request)
    assert downstream_response_headers([(b"content-length", b"3")], via=False) == [(b"content-length", b"3")]


STS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def test_the_listeners_own_headers_replace_the_upstreams() -> None:
    upstream = [(b"content-length", b"3"), (b"strict-transport-security", b"max-age=0"), (b"x-a", b"1")]
    out = downstream_response_headers(upstream, own=(STS,))
    assert out == [(b"content-length", b"3"), (b"x-a", b"1"), STS, (b"via", b"1.1 snakeway")]


@given(upstream=st.lists(st.tuples(st.sampled_from([b"strict-transport-security", b"x-a", b"etag"]), token)))
def test_exactly_one_own_header_whatever_the_upstream_sent(upstream: list[tuple[bytes, bytes]]) -> None:
    out = downstream_response_headers(upstream, own=(STS,), via=False)
    assert [h for h in out if h[0] == STS[0]] == [STS]
    assert [h for h in out if h[0] != STS[0]] == [h for h in upstream if h[0] != STS[0]]
