"""HeadScanner's path for a head that arrives whole in one read answers as its general path does."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from snakeway.proxy.strict import HeadScanner

# Heads made of the bytes that matter to the scanner: line ends of both kinds, folds, field text.
pieces = st.sampled_from([b"\r\n", b"\n", b"\r", b" ", b"\t", b"a", b"X-A: 1", b"Host: h", b"_", b"GET / HTTP/1.1"])
heads = st.lists(pieces, max_size=30).map(b"".join)


def outcome(scanner: HeadScanner, data: bytes | bytearray) -> tuple[object, ...]:
    assert scanner.feed(b"") is None  # as a connection feeds what a previous request left: often nothing
    rejection = scanner.feed(data)
    # Where the head ends shows in what it contains: an underscore, or line ends only its last line has.
    return rejection, scanner.complete, scanner.started, *map(scanner.head_contains, (b"_", b"\r\n\r\n", b"\n\r\n"))


@example(head=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", max_bytes=1024, max_fields=100)
@example(head=b"GET / HTTP/1.1\r\nHost: h\n\r\n\r\n", max_bytes=1024, max_fields=100)  # a bare LF ends it sooner
@example(head=b"GET / HTTP/1.1\r\nHost: h\r\n X\r\n\r\n", max_bytes=1024, max_fields=100)  # obs-fold
@example(head=b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n_", max_bytes=1024, max_fields=1)  # fields; "_" after it
@example(head=b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", max_bytes=20, max_fields=100)  # too large
@settings(max_examples=500)
@given(head=heads, max_bytes=st.sampled_from([16, 40, 1024]), max_fields=st.sampled_from([1, 2, 100]))
def test_a_whole_head_in_one_read_gets_the_general_answer(head: bytes, max_bytes: int, max_fields: int) -> None:
    whole = outcome(HeadScanner(max_bytes, max_fields), head)  # bytes: the one-read path when it applies
    general = outcome(HeadScanner(max_bytes, max_fields), bytearray(head))  # a bytearray takes the general path
    assert whole == general


def test_a_scanner_reused_after_a_whole_head_starts_afresh() -> None:
    scanner = HeadScanner(1024, 100)
    assert scanner.feed(b"GET / HTTP/1.1\r\nX_A: 1\r\n\r\n") is None
    assert scanner.complete and scanner.head_contains(b"X_A")
    scanner.reset()
    assert not scanner.started and not scanner.head_contains(b"X_A")
    assert scanner.feed(b"GET / HTTP/1.1\r\nX-A: 1\r\n") is None
    assert scanner.started and not scanner.complete and not scanner.head_contains(b"_")
