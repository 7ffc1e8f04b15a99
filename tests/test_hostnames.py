"""Host name normalisation and wildcard matching (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.hostnames import covers, matches, normalize_host, normalize_pattern, wildcard_for


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A.Test", "a.test"),
        ("a.test.", "a.test"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("BÜCHER.test", "xn--bcher-kva.test"),
        ("XN--BCHER-KVA.TEST.", "xn--bcher-kva.test"),
        ("bücher。test", "xn--bcher-kva.test"),  # ideographic full stop
        ("localhost", "localhost"),
        ("_acme-challenge.a.test", "_acme-challenge.a.test"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("", None),
        (None, None),
        (".", None),
        ("a..test", None),
        ("a.test..", None),
        ("-a.test", None),
        ("a-.test", None),
        ("a test", None),
        ("a\x00.test", None),
        ("*.a.test", None),
        ("a" * 64 + ".test", None),
        (".".join(["a" * 60] * 5), None),  # over 253 characters
        ("[1.2.3.4]", None),
        ("\ud800.test", None),
        (b"a.test", None),
        (12, None),
    ],
)
def test_normalize_host(raw: object, expected: str | None) -> None:
    assert normalize_host(raw) == expected


@given(st.one_of(st.none(), st.text(), st.text(min_size=1000, max_size=5000), st.binary()))
def test_normalize_host_is_total_and_idempotent(raw: object) -> None:
    host = normalize_host(raw)
    if host is not None:
        assert host.isascii()
        assert host == host.lower()
        assert normalize_host(host) == host


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("*.A.test", "*.a.test"), ("*.bücher.test.", "*.xn--bcher-kva.test"), ("A.test", "a.test"), ("::1", "::1")],
)
def test_normalize_pattern(raw: str, expected: str) -> None:
    assert normalize_pattern(raw) == expected


@pytest.mark.parametrize("raw", ["", "*", "*.", "*.*.test", "a.*.test", "a*.test", "*.127.0.0.1", "a b"])
def test_normalize_pattern_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        normalize_pattern(raw)


def test_wildcards_cover_one_label() -> None:
    assert matches("*.b.test", "a.b.test")
    assert not matches("*.b.test", "b.test")
    assert not matches("*.b.test", "x.a.b.test")
    assert matches("a.test", "a.test")
    assert wildcard_for("localhost") is None
    assert wildcard_for("10.0.0.1") is None
    assert wildcard_for("::1") is None


@pytest.mark.parametrize(
    ("names", "host", "expected"),
    [
        (["a.test"], "A.TEST.", True),
        (["*.b.test"], "www.b.test", True),
        (["*.b.test"], "b.test", False),
        (["xn--bcher-kva.test"], "bücher.test", True),
        (["127.0.0.1"], "127.0.0.1", True),
        (["::1"], "[::1]", True),
        (["a.test"], "a.test:443", False),  # the caller strips the port
        (["a.test", "not a name"], "a.test", True),
        ([], "a.test", False),
        (["a.test"], None, False),
    ],
)
def test_covers(names: list[str], host: object, expected: bool) -> None:
    assert covers(names, host) is expected


def test_remembered_names_stay_bounded_and_answers_do_not_change() -> None:
    # A client may send a new name on every connection: what is remembered must not grow with them.
    from snakeway import hostnames as names

    for i in range(names.NORMALIZED_CACHE_SIZE + 500):
        assert normalize_host(f"Host-{i}.Test.") == f"host-{i}.test"
    assert names._normalize.cache_info().currsize <= names.NORMALIZED_CACHE_SIZE
    # Asked again, remembered or not, the answer is the same as the first time.
    assert normalize_host("Host-1.Test.") == "host-1.test"
    assert normalize_host("[::1]") == "::1"
    assert normalize_host("a..test") is None
    assert normalize_host("a..test") is None
