"""The key and certificate work of :class:`~snakeway.testing.FakeCA`, with :mod:`cryptography` only.

A self-signed ECDSA P-256 root (:func:`make_root`), the leaf certificates it
signs (:func:`sign_leaf`), and the RFC 7638 JWK thumbprint of an account key
(:func:`thumbprint`). Pure functions, no I/O, no trio and no ACME decisions:
which CSR is acceptable and when a leaf is dated is up to ``FakeCA``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The curves an EC account key may use, by cryptography's name, with their JWK "crv".
JWK_CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

_ROOT_NOT_BEFORE: Final = datetime(2000, 1, 1, tzinfo=UTC)
_ROOT_NOT_AFTER: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # RFC 5280 "no expiry"
_CN_MAX: Final = 64  # ub-common-name


def make_root(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A self-signed CA certificate for ``key``, valid from 2000 with no expiry, under a random name."""
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "snakeway FakeCA"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"snakeway FakeCA root {secrets.token_hex(4)}"),
    ])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_ROOT_NOT_BEFORE)
        .not_valid_after(_ROOT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True, digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def sign_leaf(
    root_key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    names: tuple[str, ...],
    *,
    not_before: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """A TLS server certificate for ``names`` and ``public``, signed by ``root``.

    The first name is the subject CN when it fits (64 characters); otherwise the
    subject is empty and the SAN extension is critical (RFC 5280 §4.2.1.6).
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= _CN_MAX else [])
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    is_rsa = isinstance(public, rsa.RSAPublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=not subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=is_rsa), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def thumbprint(public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the key authorization's suffix (RFC 8555 §8.1).

    An EC key must be on a curve of :data:`JWK_CURVES` (``KeyError`` otherwise).
    """
    jwk: dict[str, str]
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        numbers = public.public_numbers()
        x, y = _b64int(numbers.x, size), _b64int(numbers.y, size)
        jwk = {"crv": JWK_CURVES[public.curve.name], "kty": "EC", "x": x, "y": y}
    else:
        rsa_numbers = public.public_numbers()
        jwk = {"e": _b64int(rsa_numbers.e), "kty": "RSA", "n": _b64int(rsa_numbers.n)}
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).decode("ascii").rstrip("=")


def _key_usage(
    *, digital_signature: bool = False, key_encipherment: bool = False, key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


def _b64int(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).decode("ascii").rstrip("=")
