"""CertMap: building, lookup order, defaults, immutability, totality (pure; contexts are just identities)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.tls import names as tls_names
from snakeway.tls.certmap import CertMap, CertMapHolder
from snakeway.tls.contexts import server_context

if TYPE_CHECKING:
    import ssl

A, B, WILD, DEFAULT, IP = (server_context() for _ in range(5))


def sample() -> CertMap:
    return CertMap.build(
        [
            (["a.test", "www.a.test"], A),
            (["B.test.", "bücher.test"], B),
            (["*.w.test"], WILD),
            (["127.0.0.1", "::1"], IP),
        ]
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.test", A),
        ("WWW.A.TEST.", A),
        ("b.test", B),
        ("xn--bcher-kva.test", B),
        ("bücher.test", B),
        ("x.w.test", WILD),
        ("w.test", None),
        ("y.x.w.test", None),
        ("127.0.0.1", IP),
        ("0:0::1", IP),
        ("other.test", None),
        (None, None),
        ("", None),
    ],
)
def test_lookup(name: str | None, expected: ssl.SSLContext | None) -> None:
    assert sample().lookup(name) is expected


def test_exact_name_beats_wildcard() -> None:
    certs = CertMap.build([(["*.w.test"], WILD), (["x.w.test"], A)])
    assert certs.lookup("x.w.test") is A
    assert certs.lookup("y.w.test") is WILD


def test_later_entries_win() -> None:
    certs = CertMap.build([(["a.test", "b.test"], A), (["b.test"], B)])
    assert certs.lookup("a.test") is A
    assert certs.lookup("b.test") is B


def test_entries_keep_their_names() -> None:
    entry = sample().lookup_entry("x.w.test")
    assert entry is not None
    assert entry.names == ("*.w.test",)
    entry = sample().lookup_entry("bücher.test")
    assert entry is not None
    assert entry.names == ("b.test", "xn--bcher-kva.test")


def test_default_by_name_follows_renewals() -> None:
    certs = sample().with_default("www.a.test")
    assert certs.default is A
    assert certs.choose(None) is certs.lookup_entry("a.test")
    assert certs.choose("unknown.test") is certs.lookup_entry("a.test")
    renewed = certs.with_entries([(["a.test", "www.a.test"], B)])
    assert renewed.default is B
    assert certs.default is A  # the old map is untouched


def test_default_by_wildcard_name() -> None:
    certs = sample().with_default("anything.w.test")
    assert certs.default is WILD


def test_default_given_as_an_entry_context_follows_renewals() -> None:
    certs = CertMap.build([(["a.test"], A)], default=A)
    assert certs.default is A
    assert certs.with_entries([(["a.test"], B)]).default is B


def test_default_given_as_a_foreign_context() -> None:
    certs = CertMap.build([(["a.test"], A)], default=DEFAULT)
    assert certs.default is DEFAULT
    assert certs.choose("nope.test") is not None
    entry = certs.choose("nope.test")
    assert entry is not None
    assert entry.names == ()
    assert certs.with_default(None).default is None


def test_no_default() -> None:
    certs = sample()
    assert certs.default is None
    assert certs.choose(None) is None
    assert certs.choose("unknown.test") is None


def test_default_name_must_be_covered() -> None:
    with pytest.raises(ValueError, match="not covered"):
        CertMap.build([(["a.test"], A)], default="b.test")


@pytest.mark.parametrize("bad", [[], ["a b"], ["*.*.test"], ["*"]])
def test_build_rejects_bad_entries(bad: list[str]) -> None:
    with pytest.raises(ValueError, match=r"invalid|at least one name"):
        CertMap.build([(bad, A)])


def test_build_rejects_a_bare_string_of_names() -> None:
    with pytest.raises(ValueError, match="iterable of names"):
        CertMap.build([("a.test", A)])


def test_without() -> None:
    certs = sample().with_default("a.test").without(["a.test", "*.W.test"])
    assert certs.lookup("a.test") is None
    assert certs.lookup("www.a.test") is A
    assert certs.lookup("x.w.test") is None
    assert certs.default is None  # its name is gone


def test_introspection() -> None:
    certs = sample()
    assert "*.w.test" in certs.names
    assert len(certs) == 7
    assert {id(entry.context) for entry in certs.entries} == {id(A), id(B), id(WILD), id(IP)}
    assert "a.test" in repr(certs)


def test_empty_and_holder() -> None:
    holder = CertMapHolder()
    assert len(holder.current) == 0
    new = sample()
    holder.publish(new)
    assert holder.current is new


NAMES = st.one_of(
    st.none(),
    st.text(),
    st.text(min_size=300, max_size=5000),
    st.binary(),
    st.integers(),
    st.from_regex(r"[a-zA-Zü]{1,8}(\.[a-z]{1,8}){0,3}\.?", fullmatch=True),
    st.sampled_from(["a.test", "x.w.test", "*.w.test", "\x00", "xn--zz", "xn--", "a" * 64, "127.0.0.1", "[::1]"]),
)


@given(NAMES)
def test_lookup_is_total(name: object) -> None:
    certs = sample().with_default("a.test")
    assert certs.lookup(name) in (None, A, B, WILD, IP)
    assert certs.choose(name) is not None


@given(NAMES)
def test_lookup_agrees_with_covers(name: object) -> None:
    entry = sample().lookup_entry(name)
    if entry is not None:
        assert tls_names.covers(entry.names, name)
