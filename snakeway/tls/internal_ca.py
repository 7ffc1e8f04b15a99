"""The local CA behind ``tls { mode = "internal" }``: a root created once, short-lived leaves issued from it.

Like Caddy's internal issuer: snakeway keeps a private root in ``<state_dir>/pki`` (``root.pem``, and
``root.key`` mode 0600, directory 0700), issues each site a 7-day ECDSA P-256 certificate signed by it, and
renews it by snakeway's one lifetime rule (:func:`snakeway.renewal.lifetime_renewal_time`: with half of a
7-day leaf left). The chain served is the leaf alone: a client either trusts the root already (it is in its
trust store) or does not, and sending the root changes neither. Every worker serves the same leaf: see
:mod:`snakeway.tls.leaves`. Users who want browsers to trust these certificates add ``root.pem``
(:attr:`LocalCA.root_path`) to their trust store; that is why the root, once created, is reused and never
silently replaced.

Building certificates is pure (CPU only). :meth:`LocalCA.load_or_create` does blocking file I/O: from trio, run
it with ``trio.to_thread.run_sync``. Writes are atomic (temporary file, fsync, rename, fsync of the directory),
the key before the certificate, so a crash leaves either nothing usable (recreated on the next start) or a
complete pair.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from snakeway import hostnames
from snakeway.files import write_atomic
from snakeway.tls.certinfo import CertificateError, load_chain

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

ROOT_COMMON_NAME = "snakeway Local CA"
ROOT_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=7)
# Leaves start a little in the past, for clients whose clock is behind ours.
BACKDATE = timedelta(minutes=5)

PKI_DIR = "pki"
ROOT_CERT_FILE = "root.pem"
ROOT_KEY_FILE = "root.key"


# --- renewal schedule (pure) ---------------------------------------------------------------------------------


def canonical_names(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a leaf lists them: canonical (IDNA A-labels, lower case), in order, without duplicates.

    Raises:
        ValueError: An invalid name.
    """
    return tuple(dict.fromkeys(hostnames.normalize_pattern(name) for name in names))


# --- the CA ------------------------------------------------------------------------------------------------------


@final
class LocalCA:
    """A loaded local root: issues leaf certificates. Immutable; safe to share.

    Attributes:
        root_path: ``<state_dir>/pki/root.pem``, the certificate users may add to their trust store.
    """

    __slots__ = ("_cert", "_key", "root_path")

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, root_path: Path) -> None:
        """Internal: use :meth:`load_or_create`."""
        self._cert = cert
        self._key = key
        self.root_path = root_path

    @classmethod
    def load_or_create(cls, state_dir: Path, *, now: datetime | None = None) -> LocalCA:
        """Load the root from ``state_dir/pki``, creating it (and the directories, mode 0700) the first time.

        Blocking file I/O: from trio, call it via ``trio.to_thread.run_sync``.

        Args:
            state_dir: snakeway's state directory.
            now: Start of a newly created root's validity; defaults to the system clock.

        Raises:
            CertificateError: ``root.pem`` exists without its key, or the files do not form a CA pair.
            OSError: The directory or files cannot be created or read.
        """
        pki = state_dir / PKI_DIR
        _make_private_dir(state_dir, chmod_existing=False)
        _make_private_dir(pki, chmod_existing=True)
        cert_path, key_path = pki / ROOT_CERT_FILE, pki / ROOT_KEY_FILE
        if cert_path.exists():
            if not key_path.exists():
                raise CertificateError(
                    f"{cert_path}: the local CA's key {key_path.name} is missing; "
                    f"remove {cert_path.name} to create a new local CA (and trust the new root)"
                )
            cert, key = _parse_root(cert_path.read_bytes(), key_path.read_bytes(), str(cert_path))
            return cls(cert, key, cert_path)
        # No certificate: nothing was ever trusted. A key alone is a crash's leftover and is replaced.
        cert, key = create_root(now=now if now is not None else datetime.now(UTC))
        write_atomic(key_path, _key_pem(key), 0o600)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(cert, key, cert_path)

    @property
    def root_pem(self) -> bytes:
        """The root certificate, PEM."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def not_after(self) -> datetime:
        """The end of the root's validity; no leaf outlives it."""
        return self._cert.not_valid_after_utc

    def issue(
        self, names: Iterable[str], *, now: datetime, lifetime: timedelta = LEAF_LIFETIME
    ) -> tuple[bytes, bytes]:
        """Issue a leaf certificate for ``names``.

        Args:
            names: Host names (``*.parent`` allowed, IDNA U-labels encoded) and IP addresses; the first is
                also the subject's common name when it fits.
            now: Issuance time (aware); validity starts :data:`BACKDATE` earlier.
            lifetime: Validity from ``now``, cut at the root's own end of validity.

        Returns:
            ``(chain_pem, key_pem)``: the leaf alone (the root is not sent to clients), and its unencrypted
            PKCS#8 key.

        Raises:
            ValueError: No names, an invalid name, or a naive ``now``.
            CertificateError: The root has expired.
        """
        if now.tzinfo is None:
            raise ValueError("LocalCA.issue needs a timezone-aware 'now'")
        canonical = canonical_names(names)
        if not canonical:
            raise ValueError("a certificate needs at least one name")
        if now >= self.not_after:
            raise CertificateError(
                f"{self.root_path}: the local CA expired on {self.not_after:%Y-%m-%d}; "
                f"remove {PKI_DIR}/{ROOT_CERT_FILE} and {ROOT_KEY_FILE} to create a new one"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf_certificate(canonical, key, self._cert, self._key, now, min(now + lifetime, self.not_after))
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` was signed by this root (a leaf stored before the root was replaced was not)."""
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


# --- certificates (pure) ---------------------------------------------------------------------------------------


def create_root(*, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed root: ECDSA P-256, :data:`ROOT_COMMON_NAME`, valid :data:`ROOT_LIFETIME` from ``now``."""
    key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix keeps roots of different machines apart in a trust store (same name, different keys).
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "snakeway"),
            x509.NameAttribute(NameOID.COMMON_NAME, ROOT_COMMON_NAME),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf_certificate(
    names: tuple[str, ...],
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    not_after: datetime,
) -> x509.Certificate:
    san: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(name)) if hostnames.is_ip(name) else x509.DNSName(name) for name in names
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else [])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(san), critical=not subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _parse_root(cert_pem: bytes, key_pem: bytes, source: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = load_chain(cert_pem, source)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{source}: cannot read the local CA's key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{source}: the local CA's key is not an ECDSA key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise CertificateError(f"{source}: {ROOT_KEY_FILE} does not match the certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError(f"{source}: not a CA certificate")
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_private_dir(directory: Path, *, chmod_existing: bool) -> None:
    """Create ``directory`` (and missing parents) with mode 0700; optionally tighten an existing one."""
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    elif chmod_existing:
        directory.chmod(0o700)
