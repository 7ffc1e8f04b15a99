"""Host names (snakeway.hostnames, pure): normalisation, wildcards, Host values, route patterns, certificate names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway import hostnames
from snakeway.acme.store import check_name, name_to_path_part, path_part_to_name
from snakeway.hostnames import (
    IPAddressName,
    certificate_name,
    covers,
    host_part,
    matches,
    normalize_host,
    normalize_pattern,
    route_host,
    route_pattern,
    wildcard_for,
)


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


# Names built from the pieces that matter: case, non-ASCII, "_", "-", digits, empty labels, a trailing dot,
# a wildcard, a port, brackets.
_LABELS = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
    st.sampled_from(["bücher", "MÜNCHEN", "xn--bcher-kva", "", "-a", "a-", "_acme", "my_host", "1", "255"]),
)
_NAMES = st.builds(
    lambda wildcard, labels, dot, port: ("*." if wildcard else "") + ".".join(labels) + dot + port,
    st.booleans(), st.lists(_LABELS, min_size=1, max_size=5), st.sampled_from(["", "."]),
    st.sampled_from(["", "", ":8080"]),
)
_ANY_NAME = st.one_of(_NAMES, st.text(max_size=40), st.sampled_from(["[::1]", "::1", "10.0.0.1", "[10.0.0.1]", "*"]))


@given(_ANY_NAME)
def test_a_certificate_name_is_kept_by_the_store_as_it_is(raw: str) -> None:
    try:
        name = certificate_name(raw, ip=False)
    except ValueError:
        return
    assert check_name(name) == name
    assert path_part_to_name(name_to_path_part(name)) == name
    assert certificate_name(name, ip=False) == name  # idempotent
    assert normalize_pattern(name) == name  # and a pattern that certificates are matched by


@given(_ANY_NAME)
def test_what_the_store_keeps_is_a_certificate_name(raw: str) -> None:
    try:
        stored = check_name(raw)
    except ValueError:
        return
    assert certificate_name(stored, ip=False) == stored


@given(_ANY_NAME)
def test_normalised_forms_are_fixed_points(raw: str) -> None:
    key = route_host(raw)
    if key is not None:
        assert route_host(key) == key
        assert route_pattern(key) == key  # a Host that routes can be written as a route's pattern
    try:
        pattern = route_pattern(raw)
    except ValueError:
        pass
    else:
        assert route_pattern(pattern) == pattern
        assert pattern == "*" or pattern.startswith("*.") or route_host(pattern) == pattern
    try:
        name = normalize_pattern(raw)
    except ValueError:
        pass
    else:
        assert normalize_pattern(name) == name


@given(_ANY_NAME)
def test_the_fast_canonical_checks_agree_with_normalising(raw: str) -> None:
    if len(raw) <= hostnames.MAX_NAME_CHARS and hostnames.CANONICAL_HOST.fullmatch(raw):
        assert normalize_host(raw) == raw
        assert not hostnames.is_ip(raw)
    if len(raw) <= hostnames.MAX_NAME_CHARS and hostnames.CANONICAL_PATTERN.fullmatch(raw):
        assert normalize_pattern(raw) == raw


def test_an_underscore_routes_but_is_no_certificate_name() -> None:
    assert normalize_host("My_Host.Example.com.") == "my_host.example.com"
    assert route_host("My_Host.Example.com:8080") == "my_host.example.com"
    assert route_pattern("my_host.example.com") == "my_host.example.com"
    with pytest.raises(ValueError, match="a CA refuses '_'"):
        certificate_name("my_host.example.com")
    with pytest.raises(ValueError, match="invalid certificate name 'my_host.example.com'"):
        check_name("my_host.example.com")


@pytest.mark.parametrize(
    ("raw", "ip", "expected"),
    [
        ("Bücher.Test.", False, "xn--bcher-kva.test"),
        ("*.A.test", False, "*.a.test"),
        ("10.0.0.1", True, "10.0.0.1"),
        ("[2001:DB8::1]", True, "2001:db8::1"),
        ("2001:db8::1", True, "2001:db8::1"),
    ],
)
def test_certificate_names(raw: str, ip: bool, expected: str) -> None:
    assert certificate_name(raw, ip=ip) == expected


@pytest.mark.parametrize(
    ("raw", "ip", "message"),
    [
        ("10.0.0.1", False, "not an IP address"),
        ("*", True, "expected a host name"),
        ("a.test:443", False, "expected a host name"),
        ("*.10.0.0.1", True, "expected a host name"),
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, False, "at most 253"),  # 253 with "*."
    ],
)
def test_not_certificate_names(raw: str, ip: bool, message: str) -> None:
    wildcard = raw.startswith("a" * 63)
    with pytest.raises(ValueError, match=message) as info:
        certificate_name("*." + raw if wildcard else raw, ip=ip)
    assert isinstance(info.value, IPAddressName) is (message == "not an IP address")


@pytest.mark.parametrize(
    ("value", "part", "key"),
    [
        ("A.Test:8080", "A.Test", "a.test"),
        ("a.test.", "a.test.", "a.test"),
        ("a.test:", "a.test", "a.test"),
        ("[::1]:80", "[::1]", "[::1]"),
        ("[0:0::1]", "[0:0::1]", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1", "127.0.0.1"),
        ("a!b.test", "a!b.test", None),
        ("a%41.test", "a%41.test", None),
        ("", "", None),
    ],
)
def test_host_values(value: str, part: str, key: str | None) -> None:
    assert host_part(value) == part
    assert route_host(value) == key


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("*", "*"), ("*.A.test", "*.a.test"), ("[::1]", "[::1]"), ("10.0.0.1", "10.0.0.1"), ("a.test.", "a.test")],
)
def test_route_patterns(raw: str, expected: str) -> None:
    assert route_pattern(raw) == expected


@pytest.mark.parametrize("raw", ["::1", "a.test:80", "a.*.test", "*a.test", "*.[::1]", "*.10.0.0.1", ""])
def test_not_route_patterns(raw: str) -> None:
    with pytest.raises(ValueError, match="expected a host name"):
        route_pattern(raw)
