"""The local CA: created once, private files, leaves that Python's ssl accepts, renewal schedule."""

from __future__ import annotations

import os
import ssl
import stat
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st

from snakeway.files import write_atomic
from snakeway.renewal import lifetime_renewal_time
from snakeway.tls.certinfo import CertificateError, validate_pair
from snakeway.tls.certmap import CertMap, CertMapHolder
from snakeway.tls.contexts import context_from_pem
from snakeway.tls.internal_ca import LEAF_LIFETIME, LocalCA
from snakeway.tls.sni import listener_context
from tests.tls.helpers import handshake

if TYPE_CHECKING:
    from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def local_ca(tmp_path: Path) -> LocalCA:
    return LocalCA.load_or_create(tmp_path / "state")


def test_created_once_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = LocalCA.load_or_create(state)
    key_before = (state / "pki" / "root.key").read_bytes()
    second = LocalCA.load_or_create(state)
    assert second.root_pem == first.root_pem
    assert (state / "pki" / "root.key").read_bytes() == key_before
    assert first.root_path == state / "pki" / "root.pem"
    root = x509.load_pem_x509_certificate(first.root_pem)
    assert root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "snakeway Local CA"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.not_valid_after_utc - root.not_valid_before_utc >= timedelta(days=3650)
    assert [p.name for p in (state / "pki").iterdir() if p.name.endswith(".tmp")] == []


def test_private_modes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    LocalCA.load_or_create(state)
    assert mode(state) == 0o700
    assert mode(state / "pki") == 0o700
    assert mode(state / "pki" / "root.key") == 0o600


def test_existing_pki_dir_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir(mode=0o755)
    os.chmod(tmp_path / "pki", 0o755)
    LocalCA.load_or_create(tmp_path)
    assert mode(tmp_path / "pki") == 0o700


def test_key_alone_is_a_crash_leftover_and_replaced(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "root.key").write_bytes(b"half-written")
    ca = LocalCA.load_or_create(tmp_path)
    assert ca.root_path.exists()
    assert b"half-written" not in (tmp_path / "pki" / "root.key").read_bytes()


def test_certificate_without_key_is_an_error(tmp_path: Path) -> None:
    LocalCA.load_or_create(tmp_path)
    (tmp_path / "pki" / "root.key").unlink()
    with pytest.raises(CertificateError, match=r"root\.key is missing"):
        LocalCA.load_or_create(tmp_path)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("root.pem", b"", r"root\.pem: (no PEM certificate found|cannot read the certificate chain)"),
        ("root.pem", b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", r"root\.pem: cannot read the"),
        ("root.key", b"not a key", r"root\.pem: cannot read the local CA's key"),
    ],
)
def test_unreadable_files_are_an_error(tmp_path: Path, file: str, content: bytes, message: str) -> None:
    LocalCA.load_or_create(tmp_path)
    (tmp_path / "pki" / file).write_bytes(content)
    with pytest.raises(CertificateError, match=message):
        LocalCA.load_or_create(tmp_path)


def test_mismatched_files_are_an_error(tmp_path: Path) -> None:
    LocalCA.load_or_create(tmp_path / "one")
    LocalCA.load_or_create(tmp_path / "two")
    os.replace(tmp_path / "two" / "pki" / "root.key", tmp_path / "one" / "pki" / "root.key")
    with pytest.raises(CertificateError, match="does not match"):
        LocalCA.load_or_create(tmp_path / "one")


def test_issue(local_ca: LocalCA, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    chain, key = local_ca.issue(["svc.test", "*.svc.test", "bücher.test", "127.0.0.1"], now=now)
    info = validate_pair(chain, key, now=now)
    assert info.names == ("svc.test", "*.svc.test", "xn--bcher-kva.test", "127.0.0.1")
    assert info.not_after == now.replace(microsecond=0) + LEAF_LIFETIME
    certs = x509.load_pem_x509_certificates(chain)
    assert len(certs) == 1  # the leaf alone: the root is not sent
    root = x509.load_pem_x509_certificate(local_ca.root_pem)
    certs[0].verify_directly_issued_by(root)
    assert local_ca.issued(certs[0])
    assert not LocalCA.load_or_create(tmp_path / "other").issued(certs[0])
    eku = certs[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_issue_rejects_bad_input(local_ca: LocalCA) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="at least one name"):
        local_ca.issue([], now=now)
    with pytest.raises(ValueError, match="invalid"):
        local_ca.issue(["not a name"], now=now)
    with pytest.raises(ValueError, match="timezone-aware"):
        local_ca.issue(["a.test"], now=datetime(2026, 1, 1))
    with pytest.raises(CertificateError, match="local CA expired"):
        local_ca.issue(["a.test"], now=now + timedelta(days=3700))


def test_leaf_does_not_outlive_the_root(local_ca: LocalCA) -> None:
    now = local_ca.not_after - timedelta(days=1)
    chain, key = local_ca.issue(["a.test"], now=now)
    assert validate_pair(chain, key, now=now).not_after == local_ca.not_after


@pytest.mark.parametrize("server_hostname", ["svc.test", "127.0.0.1"])
async def test_issued_leaf_verifies_with_python_ssl(local_ca: LocalCA, server_hostname: str) -> None:
    chain, key = local_ca.issue(["svc.test", "127.0.0.1"], now=datetime.now(UTC))
    context = context_from_pem(chain, key)
    base = listener_context(CertMapHolder(CertMap.build([(["svc.test", "127.0.0.1"], context)], default=context)))
    client_ctx = ssl.create_default_context(cafile=str(local_ca.root_path))
    outcome = await handshake(base, client_ctx, server_hostname)
    assert outcome.ok, outcome.client_error
    assert outcome.peer_names == ("svc.test", "127.0.0.1")


async def test_other_root_is_not_trusted(local_ca: LocalCA, tmp_path: Path) -> None:
    other = LocalCA.load_or_create(tmp_path / "other")
    chain, key = local_ca.issue(["svc.test"], now=datetime.now(UTC))
    base = listener_context(CertMapHolder(CertMap.build([(["svc.test"], context_from_pem(chain, key))])))
    outcome = await handshake(base, ssl.create_default_context(cafile=str(other.root_path)), "svc.test")
    assert outcome.client_ssl_error is not None
    assert outcome.client_ssl_error.reason == "CERTIFICATE_VERIFY_FAILED"


def due(not_before: datetime, not_after: datetime, now: datetime) -> bool:
    """The local CA's renewal decision, as snakeway.tls.leaves takes it."""
    return now >= lifetime_renewal_time(not_before, not_after)


def test_due() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=9)
    assert lifetime_renewal_time(start, end) == start + timedelta(days=4, hours=12)
    assert not due(start, end, start)
    assert not due(start, end, start + timedelta(days=4, hours=11))
    assert due(start, end, start + timedelta(days=4, hours=12))
    assert due(start, end, end + timedelta(days=1))


def test_a_leaf_is_renewed_by_the_acme_lifetime_rule() -> None:
    """Half of a leaf shorter than 10 days is left when it is renewed, a third of a longer one."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    week = start + LEAF_LIFETIME
    assert lifetime_renewal_time(start, week) == start + LEAF_LIFETIME / 2
    assert not due(start, week, start + timedelta(days=3, hours=11))
    assert due(start, week, start + timedelta(days=3, hours=12))
    month = start + timedelta(days=30)
    assert lifetime_renewal_time(start, month) == start + timedelta(days=20)


@given(
    lifetime=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=400)),
    elapsed=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=500)),
)
def test_due_is_monotonic(lifetime: timedelta, elapsed: timedelta) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = start + elapsed
    if due(start, start + lifetime, now):
        assert due(start, start + lifetime, now + timedelta(seconds=1))
        assert start + lifetime - now <= lifetime / 2 + timedelta(microseconds=1)


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one", 0o600)
    write_atomic(target, b"two", 0o600)
    assert target.read_bytes() == b"two"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
