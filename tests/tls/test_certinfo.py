"""validate_pair: what a certificate holds, and clear errors for pairs that cannot be served."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization

from snakeway.errors import SnakewayError
from snakeway.tls.certinfo import CertificateError, leaf_info, parse_pair, validate_pair
from tests.tls.helpers import make_site, self_signed

if TYPE_CHECKING:
    import trustme

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_valid_pair(ca: trustme.CA) -> None:
    site = make_site(ca, "A.test", "*.b.test", "bücher.test", "127.0.0.1", "::1")
    info = validate_pair(site.chain_pem, site.key_pem, now=datetime.now(UTC))
    assert info.names == ("a.test", "*.b.test", "xn--bcher-kva.test", "127.0.0.1", "::1")
    assert info.serial == site.serial
    assert "trustme" in info.issuer
    assert len(info.fingerprint) == 64
    assert info.not_before < info.not_after
    assert info.not_after.tzinfo is not None


def test_mismatched_key(ca: trustme.CA) -> None:
    one, other = make_site(ca, "a.test"), make_site(ca, "a.test")
    with pytest.raises(CertificateError, match=r"^cert\.pem: the private key does not match the certificate$"):
        validate_pair(one.chain_pem, other.key_pem, now=datetime.now(UTC), source="cert.pem")


def test_chain_in_the_wrong_order_gets_a_hint() -> None:
    leaf_pem, _ = self_signed("a.test", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1))
    other_pem, other_key = self_signed("b.test", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1))
    with pytest.raises(CertificateError, match="put the leaf certificate first"):
        validate_pair(leaf_pem + other_pem, other_key, now=NOW)


def test_expired() -> None:
    cert, key = self_signed("a.test", not_before=datetime(2025, 1, 1, tzinfo=UTC),
                            not_after=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(CertificateError, match=r"^cert\.pem: the certificate expired on 2026-01-01 00:00:00 UTC$"):
        validate_pair(cert, key, now=NOW, source="cert.pem")
    # the same pair was fine before
    assert validate_pair(cert, key, now=datetime(2025, 6, 1, tzinfo=UTC)).names == ("a.test",)


def test_no_subject_alt_name() -> None:
    cert, key = self_signed("a.test", not_before=NOW, not_after=NOW + timedelta(days=1), san=False)
    with pytest.raises(CertificateError, match="names no host"):
        validate_pair(cert, key, now=NOW)


def test_the_common_name_is_never_a_name() -> None:
    """subjectAltName only: a common name is ignored, with or without a subjectAltName extension."""
    cert, key = self_signed("a.test", not_before=NOW, not_after=NOW + timedelta(days=1), san=False)
    assert leaf_info(cert).names == ()
    assert parse_pair(cert, key).names == ()
    both, _ = self_signed("cn.test", "san.test", not_before=NOW, not_after=NOW + timedelta(days=1), san_from=1)
    assert leaf_info(both).names == ("san.test",)


def test_parse_pair_does_not_judge_dates_or_names() -> None:
    cert, key = self_signed("A.Test", not_before=datetime(2025, 1, 1, tzinfo=UTC),
                            not_after=datetime(2026, 1, 1, tzinfo=UTC))
    info = parse_pair(cert, key, source="stored")
    assert info.names == ("a.test",)
    assert info.not_after == datetime(2026, 1, 1, tzinfo=UTC) < NOW
    other_cert, _ = self_signed("b.test", not_before=NOW, not_after=NOW + timedelta(days=1))
    with pytest.raises(CertificateError, match=r"^stored: the private key does not match the certificate$"):
        parse_pair(other_cert, key, source="stored")


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        (b"", None, "no PEM certificate|cannot read the certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", None, "cannot read the certificate"),
        (None, b"not a key", "cannot read the private key"),
    ],
)
def test_unreadable(ca: trustme.CA, cert: bytes | None, key: bytes | None, message: str) -> None:
    site = make_site(ca, "a.test")
    with pytest.raises(CertificateError, match=message) as info:
        validate_pair(cert if cert is not None else site.chain_pem, key if key is not None else site.key_pem, now=NOW)
    assert isinstance(info.value, SnakewayError)


def test_encrypted_key(ca: trustme.CA) -> None:
    site = make_site(ca, "a.test")
    key = serialization.load_pem_private_key(site.key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(CertificateError, match="encrypted"):
        validate_pair(site.chain_pem, encrypted, now=datetime.now(UTC))


def test_naive_now_is_refused(ca: trustme.CA) -> None:
    site = make_site(ca, "a.test")
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_pair(site.chain_pem, site.key_pem, now=datetime(2026, 1, 1))
