"""The request-target normaliser: what is routed is what is forwarded."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.config.model import UpstreamSettings
from snakeway.hostnames import valid_authority
from snakeway.proxy.balance import Health
from snakeway.proxy.forward import ForwardContext, upstream_request
from snakeway.proxy.strict import Rejection, Target, request_target
from snakeway.uri import TargetError, normalize_path
from tests.test_strict import parsed


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        (b"/public/%2e%2e/admin", b"/admin"),
        (b"/.%2e/admin", b"/admin"),
        (b"/public/..%2fadmin", b"/admin"),
        (b"/public/%2e%2e%2fadmin", b"/admin"),
        (b"/public/%2E%2E%2Fadmin", b"/admin"),
        (b"/public/../admin", b"/admin"),
        (b"/a/./b/../c", b"/a/c"),
        (b"/../../x", b"/x"),
        (b"/a/..", b"/"),
        (b"/a/b/.", b"/a/b/"),
        (b"/a/%2e", b"/a/"),
        (b"/a%2F./b", b"/a/b"),  # an encoded slash around "." is decoded with it
        (b"/a/b%2fc/./d", b"/a/b%2Fc/d"),  # and kept, upper-cased, in a plain segment
        (b"/%7euser/%41%5a%2d%5f%2E", b"/~user/AZ-_."),  # unreserved characters decoded
        (b"/caf%c3%a9/%25/%3f%23", b"/caf%C3%A9/%25/%3F%23"),  # others kept, hex upper-cased
        (b"/.well-known/acme-challenge/t", b"/.well-known/acme-challenge/t"),
        (b"/a//b", b"/a//b"),  # empty segments are kept
        (b"/a/..b;/.c;x/;./c", b"/a/..b;/.c;x/;./c"),  # segments that only look like dot-segments
        (b"/a\\b/c\\", b"/a\\b/c\\"),  # a backslash away from dot-segments is an ordinary character
        (b"/a%5cb/..x\\.y", b"/a%5Cb/..x\\.y"),
        (b"/a\\b/../c", b"/c"),  # "a\\b" is one segment for "/" readers and the result has no "\\"
    ],
)
def test_normalised_paths(path: bytes, normal: bytes) -> None:
    assert normalize_path(path) == normal


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (b"/a%2Fb/../c", "encoded slash"),
        (b"/public%2F..%2Fadmin", "encoded slash"),
        (b"/a%2F..", "encoded slash"),
        (b"/%2F../x", "encoded slash"),
        (b"/x/..%2F..%2Fb", "encoded slash"),
        (b"/a%2fb/c/%2e%2e", "encoded slash"),
        (b"/%C0%AE%C0%AE/admin", "overlong"),
        (b"/%c0%ae", "overlong"),
        (b"/%E0%80%AE", "overlong"),
        (b"/a%C0%AFb", "overlong"),
        (b"/%F0%80%80%AE", "overlong"),
        (b"/%C1%81", "overlong"),
        (b"/a%00b", "NUL"),
        (b"/a%", "malformed"),
        (b"/a%2", "malformed"),
        (b"/a%zz", "malformed"),
        (b"/a% 20", "malformed"),
        (b"/a%+1", "malformed"),
        (b"/public/..;/admin", "parameters"),
        (b"/public/%2e%2e;x=1/admin", "parameters"),
        (b"/a/.;/b", "parameters"),
        (b"/x%2F..;/admin", "parameters"),
        (b"a/b", "start with /"),
        (b"/public/..\\admin", "backslash"),  # Windows servers read /public/../admin
        (b"/public\\..\\admin", "backslash"),
        (b"/public/x\\..", "backslash"),
        (b"/public/.\\admin", "backslash"),
        (b"/public/..%5Cadmin", "backslash"),
        (b"/public/..%5cadmin", "backslash"),
        (b"/public/%2e%2e%5cadmin", "backslash"),
        (b"/public%5C..%5Cadmin", "backslash"),
        (b"/public/x\\..;/admin", "backslash"),
    ],
)
def test_ambiguous_or_malformed_paths_are_refused(path: bytes, reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        normalize_path(path)


def test_shortest_utf8_forms_pass() -> None:
    assert normalize_path(b"/%C3%A9%E0%A0%80%F0%90%80%80%C2%80") == b"/%C3%A9%E0%A0%80%F0%90%80%80%C2%80"


@pytest.mark.parametrize(
    "value",
    [b"a.test", b"A.Test:8080", b"127.0.0.1:80", b"[::1]", b"[::1]:443", b"[v1.x]", b"a:", b"", b"xn--d1a.test",
     b"a%2Db", b"a:65535", b"a:0", b"a:00080", b"a%2Db:65535", b"[::1]:65535", b"[::1]:"],
)
def test_valid_authorities(value: bytes) -> None:
    assert valid_authority(value)


@pytest.mark.parametrize(
    "value",
    [b"x y", b"evil@x", b"u:p@x", b"a/b", b"a\\b", b"a:b:c", b"a:8o", b"[::1", b"::1", b"a\tb", b"\"a\"", b"a?b", b"a#b",
     b"a%", b"a%zz", b"a%2", b"a:65536", b"a:99999", b"a:99999999999", b"a:000080", b"a%2Db:65536", b"[::1]:65536",
     b"[::1]:123456"],
)
def test_invalid_authorities(value: bytes) -> None:
    assert not valid_authority(value)


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil@x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n",
        b"GET http://evil@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test:x/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http:/// HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test/%2e%2e%2F%zz HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /a%2Fb/../c HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:99999999999\r\n\r\n",
        b"GET http://a.test:65536/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /public/..# HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /admin# HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /a?b#c HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test/a#/../b HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test/a?q#f HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /public/..\\admin HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /public\\..\\admin HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /public/..%5Cadmin HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test/public/..\\admin HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ],
)
def test_bad_hosts_and_targets_are_400(head: bytes) -> None:
    result = request_target(*parsed(head))
    assert isinstance(result, Rejection) and result.status == 400


def test_target_carries_normalised_path_and_untouched_query() -> None:
    result = request_target(*parsed(b"GET /p/%2e%2e/q/%7e?a=%2e%2e/../&b HTTP/1.1\r\nHost: a.test\r\n\r\n"))
    assert result == Target(host=b"a.test", path="/q/~", target=b"/q/~?a=%2e%2e/../&b")
    result = request_target(*parsed(b"GET http://b.test/x/../y?%zz HTTP/1.1\r\nHost: a.test\r\n\r\n"))
    assert result == Target(host=b"b.test", path="/y", target=b"/y?%zz")


def test_a_host_found_valid_on_the_connection_is_not_checked_again() -> None:
    request, headers = parsed(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    routed = request_target(request, headers)
    assert isinstance(routed, Target)
    # The Host value the connection found valid is trusted as such...
    assert request_target(request, [(b"host", b"x y")], valid_host=b"x y") == Target(b"x y", "/", b"/")
    # ...and any other is checked.
    rejected = request_target(request, [(b"host", b"x y")], valid_host=routed.host)
    assert isinstance(rejected, Rejection) and rejected.status == 400


def test_a_backslash_away_from_dot_segments_is_forwarded_as_sent() -> None:
    result = request_target(*parsed(b"GET /a\\b/c.txt?x=\\..\\ HTTP/1.1\r\nHost: a.test\r\n\r\n"))
    assert result == Target(host=b"a.test", path="/a\\b/c.txt", target=b"/a\\b/c.txt?x=\\..\\")


def test_a_target_with_nothing_to_normalise_is_the_same_object() -> None:
    request, headers = parsed(b"GET /a/b.css?x=/./ HTTP/1.1\r\nHost: a.test\r\n\r\n")
    result = request_target(request, headers)
    assert isinstance(result, Target) and result.target is request.target


# -- properties ----------------------------------------------------------------------------

PIECES = [
    "a", "b", "public", "admin", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "/", "//",
    "%41", "%7e", "%25", "%25%32%65", "%c3%a9", "%C0%AE", "%00", "%", "%2", "%zz", "~", "-", ";", "#", "\\",
    "%5c", "%5C", "%23",
]
targets = st.builds(
    lambda pieces, query: ("/" + "".join(pieces) + query).encode(),
    st.lists(st.sampled_from(PIECES), max_size=12),
    st.sampled_from(["", "?", "?q=%2e%2e/../x", "?%zz&/./", "?a#/../b", "?\\..\\"]),
)
FORWARD = ForwardContext(
    pool=None,  # type: ignore[arg-type]  # upstream_request only builds the request
    health=Health(10.0),
    settings=UpstreamSettings(),
    client_ip="127.0.0.1",
    scheme="http",
    body_timeout=1.0,
    buffer_body=0,
)


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4, written out as the RFC has it (independently of snakeway's)."""
    out: list[bytes] = []
    while path:
        if path.startswith((b"../", b"./")):
            path = path[path.index(b"/") + 1 :]
        elif path.startswith(b"/./") or path == b"/.":
            path = b"/" + path[3:]
        elif path.startswith(b"/../") or path == b"/..":
            path = b"/" + path[4:]
            if out:
                out.pop()
        elif path in (b".", b".."):
            path = b""
        else:
            end = path.find(b"/", 1)
            end = len(path) if end < 0 else end
            out.append(path[:end])
            path = path[end:]
    return b"".join(out)


def lenient_reading(target: bytes) -> bytes:
    """The path a lenient server acts on: cut at ``#`` and ``?``, decoded, ``\\`` as ``/``, dot-segments resolved."""
    path = target.partition(b"#")[0].partition(b"?")[0]
    return remove_dot_segments(unquote_to_bytes(path).replace(b"\\", b"/"))


@given(targets)
def test_the_upstream_is_sent_the_path_that_was_routed(target: bytes) -> None:
    request, headers = parsed(b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    routed = request_target(request, headers)
    if isinstance(routed, Rejection):
        assert routed.status == 400
        return
    sent = upstream_request(request, headers, routed, FORWARD).target
    sent_path, _, sent_query = sent.partition(b"?")
    # However far the upstream decodes, and even if it cuts at "#" and takes
    # "\\" for "/", it acts on the path the router saw...
    decoded = unquote_to_bytes(routed.path).replace(b"\\", b"/")
    assert lenient_reading(sent) == decoded
    # ...which has no dot-segment left, even once decoded...
    assert not {b".", b".."} & set(decoded.split(b"/"))
    # ...and the query goes as it came.
    assert sent_query == target.partition(b"?")[2]


@pytest.mark.fuzz
@given(st.binary(max_size=200))
def test_normalising_any_bytes_gives_a_path_or_a_400(path: bytes) -> None:
    try:
        normal = normalize_path(path)
    except TargetError:
        return
    assert normal.startswith(b"/")
    assert normalize_path(normal) == normal  # a normalised path is a fixed point


@given(targets)
def test_the_quick_test_skips_only_paths_that_normalise_to_themselves(target: bytes) -> None:
    request, headers = parsed(b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    routed = request_target(request, headers)
    if b"#" in target:
        assert isinstance(routed, Rejection)
        return
    try:
        normal = normalize_path(target.partition(b"?")[0])
    except TargetError:
        assert isinstance(routed, Rejection)
    else:
        assert isinstance(routed, Target) and routed.path == normal.decode("latin-1")


@dataclass(frozen=True)
class RawRequest:
    """What request_target reads of an h11.Request, with a target h11 would refuse to build."""

    method: bytes
    target: bytes


@pytest.mark.fuzz
@given(
    target=st.one_of(st.binary(max_size=200), st.builds(bytes.__add__, st.sampled_from([b"http://", b"HTTPS://"]), st.binary())),
    method=st.sampled_from([b"GET", b"OPTIONS"]),
    host=st.binary(max_size=20),
)
def test_any_target_is_a_target_or_a_400(target: bytes, method: bytes, host: bytes) -> None:
    result = request_target(RawRequest(method, target), [(b"host", host)])  # type: ignore[arg-type]
    assert isinstance(result, Target) or result.status == 400
