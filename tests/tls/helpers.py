"""TLS test helpers: trustme certificates as contexts, and in-memory handshakes through accept_tls."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from snakeway.tls.certinfo import cert_info
from snakeway.tls.contexts import context_from_pem
from snakeway.tls.handshake import HANDSHAKE, HandshakeInfo, accept_tls

if TYPE_CHECKING:
    from datetime import datetime

    import trustme


@dataclass(frozen=True)
class Site:
    """A trustme leaf and the server context that serves it."""

    names: tuple[str, ...]
    chain_pem: bytes
    key_pem: bytes
    context: ssl.SSLContext
    serial: int


def make_site(ca: trustme.CA, *names: str) -> Site:
    leaf = ca.issue_cert(*names)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    key = leaf.private_key_pem.bytes()
    serial = x509.load_pem_x509_certificate(chain).serial_number
    return Site(names, chain, key, context_from_pem(chain, key), serial)


def self_signed(
    *names: str, not_before: datetime, not_after: datetime, san: bool = True, san_from: int = 0
) -> tuple[bytes, bytes]:
    """A self-signed certificate built with cryptography: (cert_pem, key_pem).

    The subject common name is ``names[0]``; the subjectAltName extension (if ``san``) lists ``names[san_from:]``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(12345)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if san:
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in names[san_from:]])
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def client_context(
    ca: trustme.CA, *, check_hostname: bool = True, alpn: tuple[str, ...] = ("h2", "http/1.1")
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = check_hostname
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@dataclass
class Outcome:
    """Both ends of one in-memory handshake."""

    server: trio.SSLStream[trio.abc.Stream] | None = None
    info: HandshakeInfo | None = None
    client_error: BaseException | None = None
    peer_serial: int | None = None
    peer_names: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.server is not None and self.client_error is None

    @property
    def client_ssl_error(self) -> ssl.SSLError | None:
        cause = self.client_error.__cause__ if self.client_error is not None else None
        return cause if isinstance(cause, ssl.SSLError) else None


async def handshake(
    base_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None, *, handshake_timeout: float = 30
) -> Outcome:
    """A client handshake against :func:`accept_tls`, over ``memory_stream_pair``; both ends closed after."""
    client_raw, server_raw = trio.testing.memory_stream_pair()
    client = trio.SSLStream(client_raw, client_ctx, server_hostname=server_hostname)
    outcome = Outcome()

    async def serve() -> None:
        outcome.server = await accept_tls(server_raw, base_ctx, timeout=handshake_timeout, client="memory")
        outcome.info = HANDSHAKE.get()

    async def connect() -> None:
        try:
            await client.do_handshake()
        except trio.BrokenResourceError as exc:
            outcome.client_error = exc
            await trio.aclose_forcefully(client)
            return
        der = client.getpeercert(binary_form=True)
        assert der is not None
        info = cert_info(x509.load_der_x509_certificate(der))
        outcome.peer_serial, outcome.peer_names = info.serial, info.names

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(connect)
    await trio.aclose_forcefully(client)
    if outcome.server is not None:
        await trio.aclose_forcefully(outcome.server)
    return outcome
