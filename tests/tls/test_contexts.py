"""The SSLContext factory: policy, ALPN, loading from files and from memory."""

from __future__ import annotations

import os
import ssl
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from snakeway.tls.certmap import CertMap, CertMapHolder
from snakeway.tls.contexts import CertificateError, context_from_pem, server_context
from snakeway.tls.sni import listener_context
from tests.tls.helpers import client_context, handshake, make_site

if TYPE_CHECKING:
    import trustme


def test_policy() -> None:
    context = server_context()
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode is ssl.CERT_NONE
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(c["kea"] == "kx-ecdhe" and c["aead"] for c in tls12)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_alpn_and_old_clients(ca: trustme.CA) -> None:
    site = make_site(ca, "a.test")
    base = listener_context(CertMapHolder(CertMap.build([(site.names, site.context)])))
    assert (await handshake(base, client_context(ca), "a.test")).info.alpn == "http/1.1"  # type: ignore[union-attr]
    assert base.minimum_version == ssl.TLSVersion.TLSv1_2
    old = client_context(ca)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        return  # this OpenSSL cannot build a TLS 1.1 client at all: the version check above stands
    outcome = await handshake(base, old, "a.test")
    assert outcome.server is None


async def test_custom_alpn(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("a.test")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    cert_ctx = context_from_pem(chain, leaf.private_key_pem.bytes(), alpn=("h2", "http/1.1"))
    base = listener_context(CertMapHolder(CertMap.build([(["a.test"], cert_ctx)])), alpn=("h2", "http/1.1"))
    outcome = await handshake(base, client_context(ca), "a.test")
    assert outcome.info is not None
    assert outcome.info.alpn == "h2"


def test_load_from_files(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("a.test")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server_context(tmp_path / "cert.pem", tmp_path / "key.pem")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    server_context(tmp_path / "both.pem")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"nope\.pem"):
        server_context(tmp_path / "nope.pem", tmp_path / "key.pem")


def test_missing_key_names_the_key(ca: trustme.CA, tmp_path: Path) -> None:
    ca.issue_cert("a.test").cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    with pytest.raises(CertificateError, match=r"key\.pem: No such file"):
        server_context(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_mismatched_pem_in_memory(ca: trustme.CA) -> None:
    one, other = ca.issue_cert("a.test"), ca.issue_cert("a.test")
    with pytest.raises(CertificateError, match="in-memory certificate") as info:
        context_from_pem(one.cert_chain_pems[0].bytes(), other.private_key_pem.bytes())
    assert "snakeway-pem-" not in str(info.value)


def test_pem_files_are_private_and_removed(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    modes: list[int] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
        modes.append(stat.S_IMODE(os.stat(Path(certfile).parent).st_mode))
        modes.append(stat.S_IMODE(os.stat(certfile).st_mode))
        modes.append(stat.S_IMODE(os.stat(keyfile).st_mode))
        original(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    site = make_site(ca, "a.test")
    assert modes == [0o700, 0o600, 0o600]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CertificateError):
        context_from_pem(site.chain_pem, b"garbage")
    assert list(tmp_path.iterdir()) == []
