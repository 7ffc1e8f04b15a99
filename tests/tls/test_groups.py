"""Key-exchange groups: snakeway's server contexts accept X25519 and P-256 (and X25519MLKEM768 where OpenSSL
has it), and refuse clients that offer only other groups."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator

import pytest
import trustme

from snakeway.tls import groups
from snakeway.tls.certmap import CertMap, CertMapHolder
from snakeway.tls.contexts import context_from_pem
from snakeway.tls.groups import GROUP_LISTS, restrict_groups
from snakeway.tls.sni import listener_context
from tests.tls.helpers import Site, client_context, handshake


def base_for(site: Site) -> ssl.SSLContext:
    """A listener's base context serving ``site`` (both made by snakeway's one context factory)."""
    return listener_context(CertMapHolder(CertMap.build([(site.names, site.context)])))


def client_offering(ca: trustme.CA, curve: str | None) -> ssl.SSLContext:
    """A client that offers only ``curve`` (OpenSSL's name), or its defaults (X25519 first) for None."""
    context = client_context(ca)
    if curve is not None:
        context.set_ecdh_curve(curve)
    return context


@pytest.fixture
def fresh_setter() -> Iterator[None]:
    """Forget how this process sets groups, before and after the test."""
    groups._setter.cache_clear()
    yield
    groups._setter.cache_clear()


def test_the_first_list_this_openssl_takes_is_applied() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    applied = restrict_groups(context)
    expected = GROUP_LISTS[0] if ssl.OPENSSL_VERSION_INFO >= (3, 5) else GROUP_LISTS[1]
    assert applied == expected


def rsa_site(ca: trustme.CA, name: str) -> Site:
    """An RSA certificate: in TLS 1.2 an ECDSA P-256 one needs P-256 among the client's groups anyway."""
    leaf = ca.issue_cert(name, key_type=trustme.KeyType.RSA)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    key = leaf.private_key_pem.bytes()
    return Site((name,), chain, key, context_from_pem(chain, key), 0)


@pytest.mark.parametrize(("curve", "accepted"), [(None, True), ("prime256v1", True), ("secp384r1", False),
                                                 ("secp521r1", False)])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_only_x25519_and_p256_are_accepted(
    ca: trustme.CA, curve: str | None, accepted: bool, version: ssl.TLSVersion
) -> None:
    site = rsa_site(ca, "g.test")
    client = client_offering(ca, curve)
    client.minimum_version = client.maximum_version = version
    outcome = await handshake(base_for(site), client, "g.test")
    assert outcome.ok is accepted, outcome.client_error
    if not accepted:
        assert outcome.client_ssl_error is not None


async def test_without_a_way_to_set_groups_the_defaults_stay_and_it_is_logged(
    ca: trustme.CA, fresh_setter: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(groups, "_load_libssl", lambda: (None, "the _ssl module is built into the interpreter"))
    monkeypatch.delattr(ssl.SSLContext, "set_groups", raising=False)
    with caplog.at_level(logging.WARNING, logger="snakeway.tls.groups"):
        site = rsa_site(ca, "g.test")
        rsa_site(ca, "h.test")
    warnings = [r.getMessage() for r in caplog.records if r.name == "snakeway.tls.groups"]
    assert warnings == [
        "key-exchange groups cannot be limited (the _ssl module is built into the interpreter); OpenSSL's "
        "defaults stay, which add P-384, P-521, X448 and finite-field groups"
    ]
    outcome = await handshake(base_for(site), client_offering(ca, "secp384r1"), "g.test")
    assert outcome.ok, outcome.client_error


def never_loaded() -> tuple[None, str]:
    raise AssertionError("OpenSSL was called through ctypes on an unknown ssl context layout")


@pytest.mark.parametrize(("implementation", "version"), [("CPython", (3, 15)), ("CPython", (3, 10)),
                                                         ("PyPy", (3, 11)), ("GraalVM", (3, 12))])
async def test_off_the_known_cpython_versions_no_pointer_is_read_and_the_defaults_stay(
    ca: trustme.CA, fresh_setter: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    implementation: str, version: tuple[int, int],
) -> None:
    monkeypatch.setattr(groups, "_interpreter", lambda: (implementation, version))
    monkeypatch.setattr(groups, "_load_libssl", never_loaded)
    monkeypatch.delattr(ssl.SSLContext, "set_groups", raising=False)  # as a build without it
    with caplog.at_level(logging.WARNING, logger="snakeway.tls.groups"):
        site = rsa_site(ca, "g.test")
        rsa_site(ca, "h.test")
    warnings = [r.getMessage() for r in caplog.records if r.name == "snakeway.tls.groups"]
    assert warnings == [
        f"key-exchange groups cannot be limited (the ssl context layout of {implementation} "
        f"{version[0]}.{version[1]} is unknown); OpenSSL's defaults stay, which add P-384, P-521, X448 and "
        "finite-field groups"
    ]
    outcome = await handshake(base_for(site), client_offering(ca, "secp384r1"), "g.test")
    assert outcome.ok, outcome.client_error


@pytest.mark.skipif(hasattr(ssl.SSLContext, "set_groups"), reason="this Python sets groups through its ssl module")
@pytest.mark.parametrize("version", [(3, 11), (3, 14)])
def test_the_known_cpython_versions_set_groups_through_openssl(
    fresh_setter: None, monkeypatch: pytest.MonkeyPatch, version: tuple[int, int]
) -> None:
    monkeypatch.setattr(groups, "_interpreter", lambda: ("CPython", version))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    expected = GROUP_LISTS[0] if ssl.OPENSSL_VERSION_INFO >= (3, 5) else GROUP_LISTS[1]
    assert restrict_groups(context) == expected
    assert isinstance(groups._setter(), groups._LibSsl)
