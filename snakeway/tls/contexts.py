"""The one factory for every server-side :class:`ssl.SSLContext` snakeway creates.

Every context, the listener's base context and one per certificate alike, comes from :func:`server_context`, so
they all share one protocol policy. That matters because the SNI callback switches a handshake from the base
context to a certificate's context: OpenSSL then takes the certificate, key and ALPN callback from the new
context, but keeps the protocol versions, ciphers and options the handshake started with (the base context's).

Policy: TLS 1.2 and 1.3 only; for TLS 1.2 only ECDHE key exchange with AEAD ciphers (Mozilla's "intermediate"
list without DHE); TLS 1.3 suites are OpenSSL's defaults (all AEAD; Python cannot configure them); key exchange
over X25519MLKEM768 (where OpenSSL has it), X25519 or P-256 only (:mod:`snakeway.tls.groups`); no
compression, no renegotiation; ALPN ``http/1.1`` unless the caller passes other protocols; session tickets
sealed with keys every worker shares (:mod:`snakeway.tls.tickets`).

:func:`context_from_pem` loads a certificate held in memory. ``SSLContext.load_cert_chain`` only reads files, so
the PEM goes to a fresh private directory (0700, files 0600) that is deleted before the function returns.
That is blocking file I/O: from trio, call it through ``trio.to_thread.run_sync``.

:func:`validate_pair`, :class:`CertInfo` and :class:`CertificateError` live in :mod:`snakeway.tls.certinfo` (pure,
no I/O) and are re-exported here: validate with them first, then build the context.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from snakeway.tls.certinfo import CertificateError as CertificateError
from snakeway.tls.certinfo import CertInfo as CertInfo
from snakeway.tls.certinfo import validate_pair as validate_pair
from snakeway.tls.groups import restrict_groups
from snakeway.tls.tickets import share_ticket_keys

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_ALPN: tuple[str, ...] = ("http/1.1",)

# TLS 1.2 only (TLS 1.3 suites are configured separately by OpenSSL): forward secrecy and AEAD, nothing else.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def server_context(
    cert_path: str | os.PathLike[str] | None = None,
    key_path: str | os.PathLike[str] | None = None,
    *,
    alpn: Sequence[str] = DEFAULT_ALPN,
) -> ssl.SSLContext:
    """A server-side context with snakeway's TLS policy, holding one certificate chain or none.

    The context is what ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` makes (``PROTOCOL_TLS_SERVER``,
    no client certificates requested) minus its ``load_default_certs()``: a server that does not verify client
    certificates has no use for the system trust store, and loading it into every per-certificate context would
    cost time and memory for nothing.

    Args:
        cert_path: PEM chain, leaf first. ``None`` makes a context without a certificate (a listener's base
            context, whose SNI callback always switches to a certificate's context or aborts).
        key_path: PEM private key; ``None`` if it is in ``cert_path``.
        alpn: ALPN protocols to offer, in order of preference.

    Returns:
        A new context; the caller may still add to it (an SNI callback) before using it.

    Raises:
        CertificateError: The files cannot be read, or the key does not match the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    restrict_groups(context)  # after the options and minimum version, by which it checks its SSL_CTX pointer
    if alpn:
        context.set_alpn_protocols(list(alpn))
    share_ticket_keys(context)
    if cert_path is not None:
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise CertificateError(f"{os.fspath(cert_path)}: cannot load the certificate and key ({exc})") from exc
        except OSError as exc:  # load_cert_chain does not say which file: name the one that is missing
            culprit = exc.filename or next(
                (p for p in (cert_path, key_path) if p is not None and not os.path.exists(p)), cert_path
            )
            raise CertificateError(f"{os.fspath(culprit)}: {exc.strerror or exc}") from exc
    return context


def context_from_pem(
    cert_chain_pem: bytes, key_pem: bytes, *, alpn: Sequence[str] = DEFAULT_ALPN
) -> ssl.SSLContext:
    """:func:`server_context` for a certificate chain and key held in memory.

    Resource handling:
        The PEM is written to a new private directory (mode 0700, files 0600) and deleted before returning,
        also on error. Blocking: from trio, run it in a thread.

    Raises:
        CertificateError: OpenSSL rejects the pair.
    """
    directory = Path(tempfile.mkdtemp(prefix="snakeway-pem-"))  # created 0700 by mkdtemp
    try:
        cert_path = directory / "chain.pem"
        key_path = directory / "key.pem"
        _write_private(cert_path, cert_chain_pem)
        _write_private(key_path, key_pem)
        try:
            return server_context(cert_path, key_path, alpn=alpn)
        except CertificateError as exc:
            raise CertificateError(str(exc).replace(str(cert_path), "in-memory certificate")) from exc.__cause__
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as file:
        file.write(data)
