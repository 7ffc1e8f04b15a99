"""TLS-ALPN-01 (RFC 8737): the challenge certificate, its TLS context, and the pending challenges.

To validate a name with TLS-ALPN-01 the CA connects to port 443 of that name, sends SNI for it and offers exactly
one ALPN protocol, ``acme-tls/1``. We must answer with a self-signed certificate that (RFC 8737 §3):

* has a subjectAltName with exactly one dNSName, the name being validated, and
* carries the critical ``acmeIdentifier`` extension (OID 1.3.6.1.5.5.7.1.31) whose value is the DER
  ``OCTET STRING`` of the SHA-256 digest of the challenge's key authorization (``04 20`` + 32 bytes),

and the handshake must negotiate ``acme-tls/1`` over TLS 1.2 or later. The ``acme`` package no longer builds
this certificate, so :func:`challenge_certificate` does, with :mod:`cryptography`.

The stdlib's SNI callback cannot see the ALPN offer, so the listener decides *before* the handshake, from the
ClientHello it peeked at (:mod:`snakeway.tls.clienthello`): :meth:`TlsAlpnChallenges.for_hello` gives the
challenge context only to a hello that offers ``acme-tls/1`` for a name with a pending challenge; any other
connection gets the ordinary certificate, whose contexts never offer ``acme-tls/1``. An ``acme-tls/1`` connection
carries no application data (RFC 8737 §4): the listener closes it once the handshake is done.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, final

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from snakeway import hostnames
from snakeway.acme.challenges import SharedAnswers
from snakeway.tls import contexts

if TYPE_CHECKING:
    import ssl

    from snakeway.acme.coordination import Coordinator
    from snakeway.tls.clienthello import ClientHello

__all__ = [
    "ACME_IDENTIFIER_OID",
    "ACME_TLS_ALPN",
    "TlsAlpnChallenges",
    "acme_identifier_value",
    "challenge_certificate",
    "challenge_context",
]

ACME_TLS_ALPN: Final = "acme-tls/1"
ACME_IDENTIFIER_OID: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")

# Long enough for any validation (and for clock skew at the CA), short enough to be worthless afterwards.
VALID_BEFORE: Final = timedelta(days=1)
VALID_AFTER: Final = timedelta(days=7)
_SUBJECT: Final = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "snakeway ACME TLS-ALPN-01 challenge")])


def acme_identifier_value(key_authorization: str) -> bytes:
    """The DER value of the ``acmeIdentifier`` extension: ``OCTET STRING`` of SHA-256(key authorization)."""
    digest = hashlib.sha256(key_authorization.encode("utf-8")).digest()
    return b"\x04" + len(digest).to_bytes(1, "big") + digest


def challenge_certificate(domain: str, key_authorization: str, *, now: datetime | None = None) -> tuple[bytes, bytes]:
    """Build the self-signed TLS-ALPN-01 certificate for ``domain``.

    Args:
        domain: The DNS name being validated. Normalised (lower case, IDNA A-label, no trailing dot), and that
            form is the certificate's only subjectAltName.
        key_authorization: The challenge's key authorization (``token.thumbprint``, RFC 8555 §8.1).
        now: The time the validity period is centred on; the wall clock if ``None``.

    Returns:
        ``(cert_pem, key_pem)``: the certificate, and its new ECDSA P-256 key as unencrypted PKCS#8 PEM.

    Raises:
        ValueError: ``domain`` is not a DNS name (an IP address, a wildcard, or not a host name at all). A
            wildcard cannot be validated this way: no client sends ``*.parent`` as SNI.
    """
    name = _dns_name(domain)
    if now is None:
        now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_SUBJECT)
        .issuer_name(_SUBJECT)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - VALID_BEFORE)
        .not_valid_after(now + VALID_AFTER)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, acme_identifier_value(key_authorization)),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def challenge_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context that answers only ``acme-tls/1``, holding the challenge certificate.

    It comes from snakeway's one context factory (:func:`snakeway.tls.contexts.context_from_pem`), so it has the
    common policy, TLS 1.2 minimum included, as RFC 8737 §4 requires.

    Resource handling:
        The PEM goes to a fresh private directory (0700, files 0600) that is removed before returning. That is a
        few milliseconds of blocking file I/O.

    Raises:
        snakeway.tls.certinfo.CertificateError: OpenSSL rejects the pair (not for what
            :func:`challenge_certificate` makes).
    """
    return contexts.context_from_pem(cert_pem, key_pem, alpn=(ACME_TLS_ALPN,))


@final
class TlsAlpnChallenges:
    """The pending TLS-ALPN-01 challenges: DNS name -> challenge :class:`ssl.SSLContext`.

    The ACME side calls :meth:`add` before answering a challenge and :meth:`remove` once the authorization is
    settled; the listener calls :meth:`for_hello` (or :meth:`lookup`) for every connection. Names are compared
    in canonical form (:func:`snakeway.tls.hostnames.normalize_host`): case-insensitive, IDNA, trailing dot ignored.
    One challenge per name: adding again replaces it (a newer authorization).

    The methods are synchronous and share one dict, so the instance belongs to one trio run. :meth:`add` spends a
    few milliseconds on a key, a signature and a temporary file.
    """

    def __init__(self, shared: Coordinator | None = None) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.shared = SharedAnswers(shared) if shared is not None else None

    def add(self, domain: str, key_authorization: str) -> None:
        """Serve the challenge certificate for ``domain`` to ``acme-tls/1`` clients from now on.

        Raises:
            ValueError: ``domain`` is not a DNS name (see :func:`challenge_certificate`).
        """
        name = _dns_name(domain)
        self._contexts[name] = challenge_context(*challenge_certificate(name, key_authorization))

    def remove(self, domain: str) -> None:
        """Forget the challenge for ``domain``; nothing happens if there is none."""
        name = hostnames.normalize_host(domain)
        if name is not None:
            self._contexts.pop(name, None)

    def lookup(self, domain: object) -> ssl.SSLContext | None:
        """The challenge context for ``domain``, or ``None``. Total: any input (``None``, garbage) is fine."""
        name = hostnames.normalize_host(domain)
        return None if name is None else self._contexts.get(name)

    def for_hello(self, hello: ClientHello) -> ssl.SSLContext | None:
        """The context to handshake with, if this ClientHello is a TLS-ALPN-01 validation we expect.

        Only a hello that offers ``acme-tls/1`` *and* names a domain with a pending challenge gets one; for every
        other hello (the ``None`` result) the listener uses its ordinary context.
        """
        if ACME_TLS_ALPN not in hello.alpn:
            return None
        return self.lookup(hello.server_name)

    def wants_hello(self) -> bool:
        """Whether listeners must read ClientHellos now: a challenge is pending here, or may be in another worker."""
        return bool(self._contexts) or self.shared is not None

    async def context_for(self, hello: ClientHello) -> ssl.SSLContext | None:
        """:meth:`for_hello`, also for challenges of other worker processes."""
        context = self.for_hello(hello)
        if context is not None or self.shared is None or ACME_TLS_ALPN not in hello.alpn:
            return context
        name = hostnames.normalize_host(hello.server_name)
        if name is None:
            return None
        key_authorization = await self.shared.get(tls_alpn_key(name))
        if key_authorization is None:
            return None
        return await trio.to_thread.run_sync(
            lambda: challenge_context(*challenge_certificate(name, key_authorization))
        )

    def __len__(self) -> int:
        return len(self._contexts)

    def __contains__(self, domain: object) -> bool:
        return self.lookup(domain) is not None


def tls_alpn_key(domain: str) -> str:
    return f"tls-alpn-01:{hostnames.normalize_host(domain) or domain}"


def _dns_name(domain: str) -> str:
    name = hostnames.normalize_host(domain)
    if name is None or hostnames.is_ip(name):
        raise ValueError(f"TLS-ALPN-01 validates DNS names only, not {domain!r}")
    return name
