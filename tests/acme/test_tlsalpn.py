from __future__ import annotations

import hashlib
import os
import ssl
import stat
import tempfile
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from snakeway.acme.tlsalpn import (
    ACME_IDENTIFIER_OID,
    ACME_TLS_ALPN,
    TlsAlpnChallenges,
    acme_identifier_value,
    challenge_certificate,
    challenge_context,
)
from snakeway.tls.clienthello import ClientHello, read_client_hello
from snakeway.tls.prefixed import PrefixedStream

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    TlsStream = trio.SSLStream[trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]]

KEY_AUTH = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def digest(key_authorization: str) -> bytes:
    return hashlib.sha256(key_authorization.encode("ascii")).digest()


def load(cert_pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_pem)


# --- The certificate ----------------------------------------------------------------------------------------------


def test_acme_identifier_is_critical_with_the_exact_digest() -> None:
    cert = load(challenge_certificate("a.test", KEY_AUTH)[0])
    extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert extension.value.value == b"\x04\x20" + digest(KEY_AUTH)
    assert ACME_IDENTIFIER_OID.dotted_string == "1.3.6.1.5.5.7.1.31"


def test_subject_alt_name_is_exactly_the_domain() -> None:
    cert = load(challenge_certificate("a.test", KEY_AUTH)[0])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName("a.test")]


@pytest.mark.parametrize(
    ("domain", "san"),
    [("A.Test", "a.test"), ("a.test.", "a.test"), ("bücher.test", "xn--bcher-kva.test")],
)
def test_domain_is_normalised(domain: str, san: str) -> None:
    cert = load(challenge_certificate(domain, KEY_AUTH)[0])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names) == [x509.DNSName(san)]


@pytest.mark.parametrize("domain", ["*.a.test", "127.0.0.1", "::1", "", "a b.test", "a..test"])
def test_only_dns_names_can_be_validated(domain: str) -> None:
    with pytest.raises(ValueError, match="DNS names only"):
        challenge_certificate(domain, KEY_AUTH)


def test_self_signed_p256_with_a_matching_key() -> None:
    cert_pem, key_pem = challenge_certificate("a.test", KEY_AUTH)
    cert = load(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == cert.public_key()
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)


def test_validity_is_short() -> None:
    now = datetime(2030, 6, 1, 12, tzinfo=UTC)
    cert = load(challenge_certificate("a.test", KEY_AUTH, now=now)[0])
    assert cert.not_valid_before_utc == now - timedelta(days=1)
    assert cert.not_valid_after_utc == now + timedelta(days=7)


def test_each_certificate_has_its_own_key_and_serial() -> None:
    first, second = (load(challenge_certificate("a.test", KEY_AUTH)[0]) for _ in range(2))
    assert first.serial_number != second.serial_number
    assert first.public_key() != second.public_key()


@given(st.text())
def test_identifier_value_is_a_der_octet_string_of_sha256(key_authorization: str) -> None:
    value = acme_identifier_value(key_authorization)
    assert value == b"\x04\x20" + hashlib.sha256(key_authorization.encode("utf-8")).digest()


# --- The context and the handshake --------------------------------------------------------------------------------


def validator_context(alpn: Sequence[str] = (ACME_TLS_ALPN,)) -> ssl.SSLContext:
    """What a CA's validator does: no certificate verification, ALPN acme-tls/1 only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


async def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "a.test"
) -> tuple[TlsStream, TlsStream]:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_raw, server_ctx, server_side=True)
    client = trio.SSLStream(client_raw, client_ctx, server_hostname=server_hostname)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
    return server, client


def peer_acme_identifier(client: TlsStream) -> bytes:
    der = client.getpeercert(binary_form=True)
    assert der is not None
    extension = x509.load_der_x509_certificate(der).extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    return extension.value.value


@pytest.mark.parametrize("max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_handshake_negotiates_acme_tls_and_shows_the_certificate(max_version: ssl.TLSVersion) -> None:
    client_ctx = validator_context()
    client_ctx.maximum_version = max_version
    server, client = await handshake(challenge_context(*challenge_certificate("a.test", KEY_AUTH)), client_ctx)
    assert client.selected_alpn_protocol() == ACME_TLS_ALPN
    assert server.selected_alpn_protocol() == ACME_TLS_ALPN
    assert client.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[max_version]
    assert peer_acme_identifier(client) == b"\x04\x20" + digest(KEY_AUTH)


def test_context_requires_tls_1_2_and_offers_only_acme_tls() -> None:
    ctx = challenge_context(*challenge_certificate("a.test", KEY_AUTH))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_a_client_without_acme_tls_negotiates_no_protocol() -> None:
    """Why the listener must check the ALPN offer itself: OpenSSL would still hand out the certificate."""
    ctx = challenge_context(*challenge_certificate("a.test", KEY_AUTH))
    _server, client = await handshake(ctx, validator_context(["http/1.1"]))
    assert client.selected_alpn_protocol() is None


def test_pem_goes_through_a_private_directory_that_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[tuple[int, int, int]] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: str, keyfile: str | None = None, password: None = None) -> None:
        seen.append(
            (
                stat.S_IMODE(os.stat(os.path.dirname(certfile)).st_mode),
                stat.S_IMODE(os.stat(certfile).st_mode),
                stat.S_IMODE(os.stat(keyfile or certfile).st_mode),
            )
        )
        original(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    challenge_context(*challenge_certificate("a.test", KEY_AUTH))
    assert seen == [(0o700, 0o600, 0o600)]
    assert list(tmp_path.iterdir()) == []


# --- The registry -------------------------------------------------------------------------------------------------


def test_registry_add_lookup_remove() -> None:
    challenges = TlsAlpnChallenges()
    assert challenges.lookup("a.test") is None
    challenges.add("a.test", KEY_AUTH)
    ctx = challenges.lookup("a.test")
    assert isinstance(ctx, ssl.SSLContext)
    assert challenges.lookup("A.TEST") is ctx
    assert challenges.lookup("a.test.") is ctx
    assert challenges.lookup("b.test") is None
    assert "A.test" in challenges
    assert len(challenges) == 1
    challenges.remove("A.Test")
    assert challenges.lookup("a.test") is None
    assert len(challenges) == 0
    challenges.remove("a.test")  # absent: nothing happens
    challenges.remove("not a name")


def test_registry_add_replaces() -> None:
    challenges = TlsAlpnChallenges()
    challenges.add("a.test", "first")
    first = challenges.lookup("a.test")
    challenges.add("A.TEST", "second")
    assert challenges.lookup("a.test") is not first
    assert len(challenges) == 1


def test_registry_refuses_names_it_cannot_validate() -> None:
    challenges = TlsAlpnChallenges()
    with pytest.raises(ValueError, match="DNS names only"):
        challenges.add("*.a.test", KEY_AUTH)
    assert len(challenges) == 0


EMPTY_REGISTRY = TlsAlpnChallenges()


@given(st.none() | st.text() | st.binary() | st.integers())
def test_registry_lookup_is_total(domain: object) -> None:
    assert EMPTY_REGISTRY.lookup(domain) is None
    assert EMPTY_REGISTRY.for_hello(ClientHello(domain if isinstance(domain, str) else None, (ACME_TLS_ALPN,))) is None


def test_for_hello_requires_the_acme_tls_offer() -> None:
    challenges = TlsAlpnChallenges()
    challenges.add("a.test", KEY_AUTH)
    ctx = challenges.lookup("a.test")
    assert challenges.for_hello(ClientHello("A.test", (ACME_TLS_ALPN,))) is ctx
    assert challenges.for_hello(ClientHello("a.test", ("h2", ACME_TLS_ALPN))) is ctx
    assert challenges.for_hello(ClientHello("a.test", ("h2", "http/1.1"))) is None
    assert challenges.for_hello(ClientHello("a.test", ())) is None
    assert challenges.for_hello(ClientHello(None, (ACME_TLS_ALPN,))) is None
    assert challenges.for_hello(ClientHello("b.test", (ACME_TLS_ALPN,))) is None


# --- The listener's flow: peek at the ClientHello, pick the context, replay -----------------------------------------


async def test_peeked_hello_selects_the_challenge_and_the_replayed_handshake_succeeds() -> None:
    challenges = TlsAlpnChallenges()
    challenges.add("a.test", KEY_AUTH)
    client_raw, server_raw = trio.testing.memory_stream_pair()
    client = trio.SSLStream(client_raw, validator_context(), server_hostname="a.test")

    async def serve() -> None:
        received, hello = await read_client_hello(server_raw)
        assert isinstance(hello, ClientHello)
        ctx = challenges.for_hello(hello)
        assert ctx is not None
        server = trio.SSLStream(PrefixedStream(server_raw, received), ctx, server_side=True)
        await server.do_handshake()
        assert server.selected_alpn_protocol() == ACME_TLS_ALPN

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.do_handshake()
    assert client.selected_alpn_protocol() == ACME_TLS_ALPN
    assert peer_acme_identifier(client) == b"\x04\x20" + digest(KEY_AUTH)
