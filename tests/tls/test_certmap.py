"""CertMap: building, lookup order, defaults, immutability, totality (pure; contexts are just identities)."""

from __future__ import annotations

import logging
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway import hostnames
from snakeway.tls.certinfo import CertificateError
from snakeway.tls.certmap import CertEntry, CertMap, CertMapHolder, LazyContext, canonical_entry
from snakeway.tls.contexts import server_context

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
        assert hostnames.covers(entry.names, name)


# --- lazy contexts ----------------------------------------------------------------------------------------------


class Builder:
    """A context builder that counts its calls, and fails if told to."""

    def __init__(self, context: ssl.SSLContext | None = None, *, error: Exception | None = None) -> None:
        self.context = context if context is not None else server_context()
        self.error = error
        self.calls = 0

    def __call__(self) -> ssl.SSLContext:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.context


def test_lazy_entry_is_built_on_first_lookup_and_cached() -> None:
    build = Builder()
    certs = sample().with_entries([(["lazy.test", "*.lazy.test"], LazyContext(build, source="lazy.test"))])
    entry = certs.lookup_entry("lazy.test")
    assert entry is not None
    assert entry.lazy is not None
    assert entry.built is None
    assert build.calls == 0  # building the map, looking the entry up: nothing built yet
    assert certs.lookup("lazy.test") is build.context
    assert certs.lookup("x.lazy.test") is build.context  # the same entry through its wildcard
    assert certs.choose("LAZY.test.") is entry
    assert entry.context is build.context
    assert entry.built is build.context
    assert build.calls == 1


def test_lazy_context_survives_map_rebuilds() -> None:
    build = Builder()
    lazy = CertMap.build([(["lazy.test"], LazyContext(build, source="lazy.test"))])
    entry = lazy.lookup_entry("lazy.test")
    assert entry is not None
    # What the registry does: hand the same entry objects to new maps, with other certificates changing.
    again = CertMap.build([entry, (["a.test"], A)]).with_entries([(["a.test"], B)])
    assert again.lookup_entry("lazy.test") is entry  # canonical already: reused as is
    assert again.lookup("lazy.test") is build.context
    assert lazy.lookup("lazy.test") is build.context
    assert build.calls == 1


def test_entries_with_raw_names_are_canonicalised_and_share_their_context() -> None:
    build = Builder()
    raw = CertEntry(("LAZY.test.",), LazyContext(build, source="lazy.test"))
    certs = CertMap.build([raw])
    entry = certs.lookup_entry("lazy.test")
    assert entry is not None
    assert entry.names == ("lazy.test",)
    assert entry.lazy is raw.lazy
    assert canonical_entry(entry) is entry
    assert raw.context is certs.lookup("lazy.test") is build.context
    assert build.calls == 1


def test_failed_build_is_refused_logged_once_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    build = Builder(error=CertificateError("key.pem: no such file"))
    certs = sample().with_entries([(["broken.test"], LazyContext(build, source="for broken.test"))]).with_default(
        "broken.test"
    )
    with caplog.at_level(logging.WARNING, logger="snakeway.tls.certmap"):
        for _ in range(3):
            assert certs.lookup("broken.test") is None
            entry = certs.choose("broken.test")
            assert entry is not None
            assert entry.context is None
            assert certs.default is None
    assert build.calls == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken.test" in warnings[0]
    assert "no such file" in warnings[0]
    entry = certs.lookup_entry("broken.test")
    assert entry is not None
    assert entry.lazy is not None
    assert entry.lazy.error == "key.pem: no such file"
    assert certs.lookup("a.test") is A  # the others are unaffected


def test_default_given_as_a_context_never_builds_lazy_entries() -> None:
    build = Builder()
    certs = CertMap.build([(["lazy.test"], LazyContext(build, source="lazy.test")), (["a.test"], A)], default=A)
    assert certs.default is A
    assert certs.choose("unknown.test") is certs.lookup_entry("a.test")
    assert build.calls == 0


def test_entries_are_immutable_values() -> None:
    lazy = LazyContext(Builder(), source="x")
    entry = CertEntry(("a.test",), lazy)
    assert entry == CertEntry(("a.test",), lazy)
    assert entry != CertEntry(("a.test",), LazyContext(Builder(), source="x"))
    assert entry != CertEntry(("a.test",), A)
    assert len({entry, CertEntry(("a.test",), lazy)}) == 1
    with pytest.raises(AttributeError):
        entry.names = ("b.test",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        CertEntry(("a.test",), object())  # type: ignore[arg-type]
    assert "pending" in repr(entry)


@pytest.mark.parametrize("name", ["*.w.test", "*.lazy.test", "*"])
def test_a_wildcard_sent_as_sni_matches_nothing(name: str) -> None:
    certs = sample().with_entries([(["*.lazy.test"], A)])
    assert certs.lookup(name) is None


PATTERNS = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"(\*\.)?[a-zA-Z0-9_\-ü]{0,6}(\.[a-z0-9_\-]{0,6}){0,4}\.?", fullmatch=True),
    st.from_regex(r"(\*\.)?[0-9]{1,3}(\.[0-9]{1,3}){0,4}", fullmatch=True),
    st.sampled_from(["a.test", "*.a.test", "1.2.3.4", "*.2.3.4", "01.2.3.4", "1-2.3.4", "_x.test", "-a.test", "a" * 64]),
)


@given(PATTERNS)
def test_fast_canonical_check_agrees_with_normalize_pattern(pattern: str) -> None:
    from snakeway.tls.certmap import _canonical_name

    try:
        expected = hostnames.normalize_pattern(pattern)
    except ValueError:
        with pytest.raises(ValueError):
            _canonical_name(pattern)
        return
    assert _canonical_name(pattern) == expected


def reference_lookup(certs: CertMap, name: object) -> CertEntry | None:
    """Lookup by the book: normalise, exact, then the one wildcard (what the fast paths must agree with)."""
    host = hostnames.normalize_host(name)
    if host is None:
        return None
    by_name = certs._by_name
    if host in by_name:
        return by_name[host]
    wildcard = hostnames.wildcard_for(host)
    return by_name.get(wildcard) if wildcard is not None else None


LOOKUP_MAP = sample().with_entries([(["*.1.2.3", "*.2.3.4", "localhost", "*.a.w.test"], DEFAULT)])


@given(st.one_of(NAMES, PATTERNS, st.sampled_from(["a.1.2.3", "1.2.3.4", "x.2.3.4", "localhost", "b.a.w.test"])))
def test_lookup_fast_paths_agree_with_the_reference(name: object) -> None:
    assert LOOKUP_MAP.lookup_entry(name) is reference_lookup(LOOKUP_MAP, name)
