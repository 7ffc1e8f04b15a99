"""What a PEM certificate chain and key pair contain, and whether they are usable: pure, no I/O.

This is snakeway's one certificate parser: the TLS side (manual files, the local CA) and the ACME side (the
certificate store, ARI) read certificates through :func:`load_chain`, :func:`parse_pair` and :func:`leaf_info`.

:func:`validate_pair` is the one check every certificate goes through before it is served (manual files, the
local CA, ACME): the chain parses, the key belongs to the leaf, the leaf has not expired. What it returns,
:class:`CertInfo`, is what the rest of snakeway needs to know about a certificate (its names for the cert map
and the store, its validity for renewal, and its SHA-256 fingerprint).

A certificate's names are its subjectAltName DNS and IP entries, canonical (see :mod:`snakeway.hostnames`),
and nothing else: the subject common name is never read, not even when there is no subjectAltName extension,
because clients that matter ignore it (RFC 6125 §6.4.4 deprecates it; browsers refuse a certificate that
only has one). A certificate without subjectAltName therefore names no host and is refused for serving.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from snakeway import hostnames
from snakeway.errors import SnakewayError

if TYPE_CHECKING:
    from datetime import datetime

    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

logger = logging.getLogger(__name__)


@final
class CertificateError(SnakewayError):
    """A certificate or key cannot be served; the message names the source and says why.

    Not to be confused with :class:`ssl.CertificateError` (a verification failure on the client side).

    Attributes:
        source: The file (or other source) at fault, when the error was made by :meth:`about`; else None.
        reason: What is wrong with it (the whole message when ``source`` is None).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.source: str | None = None
        self.reason = message

    @classmethod
    def about(cls, source: str, reason: str) -> CertificateError:
        """``source: reason``, with both kept apart for a caller that places the source itself."""
        error = cls(f"{source}: {reason}")
        error.source, error.reason = source, reason
        return error


@final
@dataclass(frozen=True)
class CertInfo:
    """The facts about a leaf certificate that snakeway uses.

    Attributes:
        names: The subjectAltName entries, canonical (see :mod:`snakeway.hostnames`): DNS names and wildcards in
            lower-case ASCII, IP addresses as strings. In certificate order, without duplicates.
        not_before: Start of validity (aware, UTC).
        not_after: End of validity (aware, UTC).
        serial: The serial number.
        issuer: The issuer's distinguished name (RFC 4514).
        fingerprint: SHA-256 of the leaf's DER encoding, lower-case hex without separators.
    """

    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: int
    issuer: str
    fingerprint: str


def validate_pair(
    cert_pem: bytes, key_pem: bytes, *, now: datetime, source: str = "certificate", key_source: str | None = None
) -> CertInfo:
    """Check that a PEM chain (leaf first) and an unencrypted PEM private key can be served together.

    Args:
        cert_pem: The certificate chain, leaf first, then intermediates.
        key_pem: The leaf's private key.
        now: The current wall-clock time, timezone-aware.
        source: How to name the pair in error messages, e.g. the certificate's file name.
        key_source: How to name the key when it cannot be read (its file name); ``source`` if None.

    Returns:
        The leaf's :class:`CertInfo`.

    Raises:
        CertificateError: No certificate in ``cert_pem``; the key cannot be read or does not match the leaf; the
            leaf has expired; the leaf names no host.
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("validate_pair needs a timezone-aware 'now'")
    info = parse_pair(cert_pem, key_pem, source=source, key_source=key_source)
    if info.not_after <= now:
        raise CertificateError.about(source, f"the certificate expired on {info.not_after:%Y-%m-%d %H:%M:%S} UTC")
    if not info.names:
        raise CertificateError.about(
            source, "the certificate names no host (no subjectAltName DNS or IP entry); clients would reject it"
        )
    return info


def parse_pair(
    cert_pem: bytes, key_pem: bytes, *, source: str = "certificate", key_source: str | None = None
) -> CertInfo:
    """Parse a PEM chain (leaf first) and check that the unencrypted PEM private key belongs to the leaf.

    Unlike :func:`validate_pair` this does not look at the dates or the names: a stored certificate that has
    expired is still a certificate to renew.

    Args:
        cert_pem: The certificate chain, leaf first, then intermediates.
        key_pem: The leaf's private key.
        source: How to name the pair in error messages.
        key_source: How to name the key when it cannot be read; ``source`` if None.

    Returns:
        The leaf's :class:`CertInfo`.

    Raises:
        CertificateError: No certificate in ``cert_pem``; the key cannot be read or does not match the leaf.
    """
    chain = load_chain(cert_pem, source)
    leaf = chain[0]
    key_spki = _public_key_der(_load_key(key_pem, key_source or source))
    if _spki(leaf) != key_spki:
        hint = ""
        if any(_spki(other) == key_spki for other in chain[1:]):
            hint = " (the key matches a later certificate: put the leaf certificate first)"
        raise CertificateError.about(source, f"the private key does not match the certificate{hint}")
    return cert_info(leaf)


def leaf_info(cert_pem: bytes, source: str = "certificate") -> CertInfo:
    """The :class:`CertInfo` of the first certificate of a PEM chain, without any validity check.

    Raises:
        CertificateError: ``cert_pem`` holds no readable certificate.
    """
    return cert_info(load_chain(cert_pem, source)[0])


def cert_info(cert: x509.Certificate) -> CertInfo:
    """The :class:`CertInfo` of one parsed certificate, without any validity check."""
    return CertInfo(
        names=san_names(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        issuer=cert.issuer.rfc4514_string(),
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def san_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The canonical DNS and IP subjectAltName entries of ``cert``; names that do not normalise are skipped.

    The subject common name is never used (see the module docstring): without a subjectAltName extension a
    certificate has no names.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    raw = [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    found: dict[str, None] = {}
    for name in raw:
        try:
            found[hostnames.normalize_pattern(name)] = None
        except ValueError:
            logger.warning("ignoring the unusable subjectAltName %r of certificate %x", name, cert.serial_number)
    return tuple(found)


def load_chain(cert_pem: bytes, source: str = "certificate") -> list[x509.Certificate]:
    """Parse every certificate of a PEM chain (leaf first).

    Raises:
        CertificateError: ``cert_pem`` holds no readable certificate.
    """
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:  # also raised for "no PEM certificate found"
        raise CertificateError.about(source, f"cannot read the certificate chain ({_pem_reason(exc)})") from exc
    if not chain:
        raise CertificateError.about(source, "no PEM certificate found")
    return chain


def _load_key(key_pem: bytes, source: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # encrypted key, no password
        raise CertificateError.about(source, "the private key is encrypted; snakeway needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError.about(source, f"cannot read the private key ({_pem_reason(exc)})") from exc


def _pem_reason(exc: Exception) -> str:
    """Why cryptography could not read a PEM file, without the advice and link it adds to the message."""
    text = str(exc)
    if text.startswith("Unable to load PEM file"):
        return f"not PEM: {text.rsplit('. ', 1)[-1]}"
    return text


def _public_key_der(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
