"""Certificates made on the spot with ``cryptography``: a local CA, leaves, and a filled certificate store."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEM = serialization.Encoding.PEM


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class CA:
    """A local certificate authority (ECDSA P-256), valid from an hour ago for ten years."""

    def __init__(self, name: str = "snakeway bench CA") -> None:
        self.key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(hours=1))
            .not_valid_after(_now() + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(PEM)
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())

    def issue(self, names: list[str], key: ec.EllipticCurvePrivateKey | None = None, days: int = 365) -> tuple[bytes, bytes]:
        """(leaf PEM, key PEM) for ``names`` (DNS names or IP addresses); a new key unless one is given."""
        key = key or new_key()
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(hours=1))
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(self._aki, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(PEM), key_pem(key)

    def write_leaf(self, folder: Path, stem: str, names: list[str]) -> tuple[Path, Path, Path]:
        """Write ``stem.pem`` (leaf + CA), ``stem.key`` and ``ca.pem`` into ``folder``."""
        cert_pem, leaf_key = self.issue(names)
        cert_path, key_path, ca_path = folder / f"{stem}.pem", folder / f"{stem}.key", folder / "ca.pem"
        cert_path.write_bytes(cert_pem + self.cert_pem)
        key_path.write_bytes(leaf_key)
        key_path.chmod(0o600)
        ca_path.write_bytes(self.cert_pem)
        return cert_path, key_path, ca_path


def fill_store(cert_dir: Path, names: list[str], ca: CA) -> None:
    """Write one valid certificate per name in snakeway's filesystem store layout.

    ``cert_dir/<name>/{cert.pem,key.pem,meta.json}`` as plain directories (the
    store accepts them and would move them aside only when it saves a new
    version). meta.json is the record the stores write (``snakeway.acme.entries.bundle_meta``), so the
    store's load-time checks pass. One leaf key is shared by all certificates:
    this is a benchmark of loading, not of key generation.
    """
    from snakeway.acme.entries import bundle_meta, dump_json
    from snakeway.acme.store import CertBundle, name_to_path_part

    cert_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    shared = new_key()
    shared_pem = key_pem(shared)
    saved_at = _now()
    for name in names:
        cert_pem, _ = ca.issue([name], key=shared, days=365)
        chain = cert_pem + ca.cert_pem
        bundle = CertBundle.from_pem(name, (name,), chain, shared_pem)
        folder = cert_dir / name_to_path_part(name)
        folder.mkdir(mode=0o700)
        (folder / "cert.pem").write_bytes(chain)
        fd = os.open(folder / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(shared_pem)
        (folder / "meta.json").write_bytes(dump_json(bundle_meta(bundle, saved_at)))
