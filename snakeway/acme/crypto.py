"""Keys, CSRs and the ARI certificate id, with :mod:`cryptography` only.

Pure functions, no I/O and no trio. Certificates are read by the one certificate parser,
:mod:`snakeway.tls.certinfo` (its :func:`~snakeway.tls.certinfo.load_chain`, and its rule for what a
certificate's names are).

Key generation (RSA above all) is slow enough to block an event loop for tens
of milliseconds, so async callers run :func:`generate_key` through
``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from snakeway.config.model import KeyType
from snakeway.tls.certinfo import load_chain

RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537


def generate_key(key_type: KeyType) -> bytes:
    """Generate a private key.

    Args:
        key_type: ECDSA P-256 or RSA 2048.

    Returns:
        The key as unencrypted PKCS#8 PEM.
    """
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type is KeyType.ECDSA_P256:
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type is KeyType.RSA2048:
        key = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)
    else:  # pragma: no cover - KeyType is exhaustive
        raise ValueError(f"unsupported key type {key_type!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """Load an unencrypted PEM private key that snakeway can use (ECDSA or RSA).

    Raises:
        ValueError: The PEM is not a key, is encrypted, or is of another type.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # cryptography raises TypeError for encrypted keys
        raise ValueError(str(exc)) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def make_csr(key_pem: bytes, domains: Iterable[str]) -> bytes:
    """Build a certificate signing request for ``domains``.

    The subject is empty and every name goes into the subjectAltName
    extension, as ACME CAs expect (RFC 8555 §7.4).

    Args:
        key_pem: The certificate's private key (PEM).
        domains: DNS names, at least one; order is kept, duplicates dropped.

    Returns:
        The CSR as PEM, signed with SHA-256.

    Raises:
        ValueError: No domains, or an unusable key.
    """
    names = list(dict.fromkeys(domains))
    if not names:
        raise ValueError("a CSR needs at least one domain")
    key = load_private_key(key_pem)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)




def ari_cert_id(cert_pem: bytes) -> str:
    """The ARI CertID of the first certificate (RFC 9773 §4.1).

    ``base64url(authorityKeyIdentifier) "." base64url(DER serial INTEGER)``,
    both without padding; the serial keeps its sign byte.

    Raises:
        ValueError: The certificate has no authority key identifier.
        CertificateError: ``cert_pem`` holds no readable certificate.
    """
    cert = load_chain(cert_pem)[0]
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise ValueError("certificate has no authority key identifier") from exc
    if aki.key_identifier is None:
        raise ValueError("certificate's authority key identifier has no keyIdentifier")
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def csr_names(csr_pem: bytes) -> tuple[str, ...]:
    """The DNS names in a PEM CSR's subjectAltName extension (empty if it has none)."""
    csr = x509.load_pem_x509_csr(csr_pem)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))
