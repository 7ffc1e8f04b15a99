from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.proxy.strict import HeadScanner, Rejection, Target, check_request, request_target


def parse(raw: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def parsed(raw: bytes) -> tuple[h11.Request, list[tuple[bytes, bytes]]]:
    """A request and its headers as a list, as the connection hands them to the checks."""
    request = parse(raw)
    return request, list(request.headers)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ],
)
def test_requests_h11_accepts_but_a_proxy_must_refuse(raw: bytes, status: int) -> None:
    rejection = check_request(*parsed(raw))
    assert rejection is not None and rejection.status == status


def test_plain_request_passes() -> None:
    assert check_request(*parsed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) is None


def test_obs_fold_is_rejected() -> None:
    scanner = HeadScanner(1024, 100)
    assert scanner.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n") is None
    assert scanner.feed(b" b\r\n\r\n") == Rejection(400, "obsolete line folding in header")


def test_oversized_head_in_one_piece_is_431() -> None:
    scanner = HeadScanner(100, 100)
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 200 + b"\r\n\r\n"
    rejection = scanner.feed(head)
    assert rejection is not None and rejection.status == 431


def test_oversized_head_arriving_slowly_is_431() -> None:
    scanner = HeadScanner(100, 100)
    assert scanner.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 50) is None
    rejection = scanner.feed(b"a" * 60)
    assert rejection is not None and rejection.status == 431


def test_more_header_fields_than_allowed_is_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"
    assert HeadScanner(1024, 3).feed(head) is None
    assert HeadScanner(1024, 2).feed(head) == Rejection(431, "more than 2 header fields")
    assert HeadScanner(1024, 2).feed(head.replace(b"\r\n", b"\n")) == Rejection(431, "more than 2 header fields")


def test_empty_lines_before_the_request_line_are_dropped() -> None:
    scanner = HeadScanner(40, 100)
    for _ in range(100):  # however many: they neither start the head nor count towards its size
        assert scanner.feed(b"\r\n") is None
    assert not scanner.started
    assert scanner.feed(b"\nGET / HTTP/1.1\r\nHost: a\r\n") is None
    assert scanner.started and not scanner.complete
    assert scanner.feed(b"\r\n") is None
    assert scanner.complete


def test_head_contains_looks_at_the_head_only() -> None:
    scanner = HeadScanner(1024, 100)
    scanner.feed(b"\r\nPOST / HTTP/1.1\r\nHost: a\r\nX-A: 1")
    assert scanner.head_contains(b"X-A") and not scanner.head_contains(b"_")
    scanner.feed(b"\r\nContent-Length: 3\r\n\r\na_b")
    assert scanner.complete and not scanner.head_contains(b"_")
    scanner.reset()
    scanner.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX_A: 1\r\n\r\n")
    assert scanner.head_contains(b"_")


def test_body_after_head_does_not_count() -> None:
    scanner = HeadScanner(100, 100)
    assert scanner.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n" + b"x" * 500) is None
    assert scanner.complete


def test_absolute_form_is_routed_by_its_own_authority() -> None:
    target = request_target(*parsed(b"GET http://b.test:81/x?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n"))
    assert target == Target(host=b"b.test:81", path="/x", target=b"/x?q=1")


def test_origin_form_uses_host() -> None:
    target = request_target(*parsed(b"GET /p?q HTTP/1.1\r\nHost: a.test\r\n\r\n"))
    assert target == Target(host=b"a.test", path="/p", target=b"/p?q")


@given(st.binary(max_size=300))
def test_scanner_is_total(data: bytes) -> None:
    scanner = HeadScanner(128, 100)
    for i in range(0, len(data), 7):
        result = scanner.feed(data[i : i + 7])
        assert result is None or isinstance(result, Rejection)
