"""Accepting a TLS connection: sniff, handshake under a deadline, and remember what was negotiated.

Theory of operation
-------------------
:func:`accept_tls` runs in the connection's own task, before any HTTP is read. Under one deadline (the
listener's handshake timeout) it

1. looks at the first bytes and classifies them (:mod:`snakeway.tls.sniff`): a plain HTTP request line gets
   a clear-text ``400`` ("this port speaks HTTPS") and the connection is closed; a client that sends nothing is
   dropped when the deadline passes. On a :class:`~snakeway.tcp.TcpStream` (every accepted connection) the
   first byte is peeked at in the kernel's buffer: when it starts a TLS record, the handshake reads the socket
   itself, with no stream in between for the rest of the connection. Otherwise (and while a TLS-ALPN-01
   challenge wants the whole ClientHello) the first bytes are read, and replayed to the handshake through a
   :class:`~snakeway.tls.prefixed.PrefixedStream`;
2. runs the handshake in a ``trio.SSLStream``, during which the SNI callback (:mod:`snakeway.tls.sni`) picks
   the certificate and records its choice in the task's context;
3. sets :data:`HANDSHAKE` to a :class:`HandshakeInfo` in the current task's context, where the HTTP layer (in
   the same task, or tasks it starts later, which inherit a copy) reads it: for logs, ``X-Forwarded-Proto``,
   and the ``421 Misdirected Request`` check with :func:`covers`.

Every failure (timeout, TLS error, peer gone) closes the connection quietly and returns ``None``: a failed
handshake is the client's problem, logged at debug level only.
"""

from __future__ import annotations

import contextvars
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final

import trio

from snakeway import hostnames
from snakeway.tcp import TcpStream
from snakeway.tls import sni, sniff
from snakeway.tls.clienthello import ClientHello, ClientHelloParser, NeedMore
from snakeway.tls.leanssl import forget_handshake, quicken
from snakeway.tls.prefixed import PrefixedStream

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

# Enough for any ClientHello in one read; PrefixedStream replays it whatever its size.
FIRST_READ_BYTES = 16384
# After the clear-text 400: how much of the request to read and discard, so that closing does not reset the
# connection (and destroy the response) while the client's request is still unread.
DRAIN_BYTES = 65536
DRAIN_SECONDS = 2.0
ALERT_RECORD = 21  # TLS record content type "alert"
FATAL = 2  # alert level


@final
@dataclass(frozen=True)
class HandshakeInfo:
    """What was negotiated on a TLS connection.

    Attributes:
        client: Who connected (e.g. ``"203.0.113.9:51234"``), as the caller described it.
        tls_version: ``"TLSv1.3"`` or ``"TLSv1.2"``.
        cipher: The OpenSSL cipher suite name.
        sni: The server name the client sent (canonical when it normalises), ``None`` without SNI.
        alpn: The protocol chosen by ALPN, ``None`` if the client offered none.
        cert_names: The names of the certificate served (canonical; wildcards as ``*.parent``), ``None`` if
            unknown (the handshake did not go through snakeway's SNI callback, or the default was a bare context).
    """

    client: str
    tls_version: str
    cipher: str
    sni: str | None = None
    alpn: str | None = None
    cert_names: tuple[str, ...] | None = None


HANDSHAKE: contextvars.ContextVar[HandshakeInfo | None] = contextvars.ContextVar("snakeway_tls_handshake", default=None)


def covers(served: HandshakeInfo | Iterable[str], host: object) -> bool:
    """Whether the certificate served on this connection covers ``host`` (a ``Host`` value without port).

    ``False`` means the request is misdirected (answer ``421``): the client reused a connection, or sent an SNI,
    for another name than the one it now asks for. Pure and total in ``host``.

    Args:
        served: The connection's :class:`HandshakeInfo`, or a certificate's names. A ``HandshakeInfo`` whose
            ``cert_names`` is unknown covers every host: without knowing the certificate, refusing would be a guess.
        host: The requested host name or IP address (IPv6 in brackets or not); untrusted.
    """
    if isinstance(served, HandshakeInfo):
        if served.cert_names is None:
            return True
        return hostnames.covers(served.cert_names, host)
    return hostnames.covers(served, host)


class AlpnChallenges(Protocol):
    """Pending TLS-ALPN-01 challenges (see :class:`snakeway.acme.tlsalpn.TlsAlpnChallenges`)."""

    def wants_hello(self) -> bool: ...
    async def context_for(self, hello: ClientHello) -> ssl.SSLContext | None: ...


async def accept_tls(
    stream: trio.abc.Stream,
    base_ctx: ssl.SSLContext,
    *,
    timeout: float,  # noqa: ASYNC109 - a timeout here ends in a quiet close that only we can do (see Args)
    client: str,
    challenges: AlpnChallenges | None = None,
    counts: dict[str, int] | None = None,
) -> trio.SSLStream[trio.abc.Stream] | None:
    """Run the server side of a TLS handshake on a fresh connection.

    Args:
        stream: The accepted connection (e.g. a ``trio.SocketStream``).
        base_ctx: The listener's context, from :func:`snakeway.tls.sni.listener_context`.
        timeout: Seconds (trio time) for everything up to the end of the handshake (``Tls.handshake_timeout_seconds``).
            A parameter rather than the caller's cancel scope because a timeout here is not an error to
            propagate: it ends in a quiet close, and only this function knows which stream to close.
        client: How to name the peer in :class:`HandshakeInfo` and logs.
        challenges: While any TLS-ALPN-01 challenge is pending, the ClientHello is parsed here (the SNI
            callback cannot see the ALPN offer); a validation connection (ALPN ``acme-tls/1`` for a pending
            name) is answered with the challenge certificate and closed, and ``None`` is returned.
        counts: Handshakes by outcome, incremented here: ``ok`` for a completed handshake, else the reason
            of the failure (``plain_http``, ``closed``, ``timeout``, ``refused``: no certificate for the name
            asked for, ``error``: any other TLS error or broken connection).

    Returns:
        The ready ``trio.SSLStream`` (``https_compatible``), with :data:`HANDSHAKE` set in the calling task's
        context; or ``None`` if the connection was not a usable TLS connection.

    Resource handling:
        On ``None``, ``stream`` has been closed. Otherwise the caller owns the returned stream (closing it
        closes ``stream``).

    Error handling:
        Timeouts, TLS errors and broken connections give ``None`` (logged at debug level). Cancellation
        propagates; ``stream`` may then be closed or not, and the caller closes it (closing twice is harmless).
    """
    transport: trio.abc.Stream = stream
    refused = False  # no certificate for the name the client asked for: a fatal alert was sent
    # A cancel scope and a context variable's token handled here, where a generator-based fail_after and
    # recording_choice() would cost more than the bookkeeping they wrap (once per TLS connection).
    scope = trio.CancelScope(deadline=trio.current_time() + timeout)
    choice, recording = sni.start_recording()
    try:
        with scope:
            if (
                type(stream) is TcpStream
                and (challenges is None or not challenges.wants_hello())
                and sniff.classify(await stream.receive_some(1, flags=socket.MSG_PEEK)) is sniff.FirstBytes.TLS
            ):
                # The first byte, looked at where it lies: trio.SSLStream reads the socket itself.
                hello_from: trio.abc.Stream = stream
            else:
                prefix = await _read_first_bytes(stream)
                verdict = sniff.classify(prefix)
                if verdict is sniff.FirstBytes.PLAIN_HTTP:
                    logger.debug("TLS: plain HTTP from %s on a TLS port; answering 400", client)
                    _count(counts, "plain_http")
                    await _refuse_plain_http(stream)
                    return None
                if not prefix:
                    logger.debug("TLS: %s closed before sending anything", client)
                    _count(counts, "closed")
                    await trio.aclose_forcefully(stream)
                    return None
                if challenges is not None and challenges.wants_hello():
                    prefix, challenge_ctx = await _alpn_challenge(stream, prefix, challenges)
                    if challenge_ctx is not None:
                        transport = trio.SSLStream(PrefixedStream(stream, prefix), challenge_ctx, server_side=True)
                        await transport.do_handshake()
                        logger.info("TLS: answered a TLS-ALPN-01 validation from %s", client)
                        await trio.aclose_forcefully(transport)
                        return None
                hello_from = PrefixedStream(stream, prefix)
            ssl_stream: trio.SSLStream[trio.abc.Stream] = trio.SSLStream(
                hello_from, base_ctx, server_side=True, https_compatible=True
            )
            quicken(ssl_stream)
            transport = ssl_stream
            try:
                await ssl_stream.do_handshake()
                forget_handshake(ssl_stream)
            except trio.BrokenResourceError:
                if choice.alert is not None:
                    # Nothing was sent yet (the callback runs before the ServerHello): a plaintext alert is
                    # what OpenSSL queued and trio.SSLStream dropped.
                    refused = True
                    await stream.send_all(fatal_alert_record(choice.alert))
                raise
    except trio.BrokenResourceError as exc:
        logger.debug("TLS: handshake with %s failed: %r", client, exc.__cause__ or exc)
        _count(counts, "refused" if refused else "error")
        await trio.aclose_forcefully(transport)
        return None
    finally:
        sni.stop_recording(recording)
    if scope.cancelled_caught:
        logger.debug("TLS: handshake with %s failed: %r", client, trio.TooSlowError())
        _count(counts, "timeout")
        await trio.aclose_forcefully(transport)
        return None
    cipher = ssl_stream.cipher()
    info = HandshakeInfo(
        client=client,
        tls_version=ssl_stream.version() or "",
        cipher=cipher[0] if cipher else "",
        sni=choice.sni,
        alpn=ssl_stream.selected_alpn_protocol(),
        cert_names=choice.cert_names,
    )
    HANDSHAKE.set(info)
    _count(counts, "ok")
    return ssl_stream


def _count(counts: dict[str, int] | None, outcome: str) -> None:
    if counts is not None:
        counts[outcome] = counts.get(outcome, 0) + 1


async def _alpn_challenge(
    stream: trio.abc.Stream, prefix: bytes, challenges: AlpnChallenges
) -> tuple[bytes, ssl.SSLContext | None]:
    """Read the whole ClientHello; the challenge context if it is a TLS-ALPN-01 validation."""
    parser = ClientHelloParser()
    verdict = parser.feed(prefix)
    while isinstance(verdict, NeedMore):
        data = await stream.receive_some(FIRST_READ_BYTES)
        if not data:
            break
        prefix += data
        verdict = parser.feed(data)
    if isinstance(verdict, ClientHello):
        return prefix, await challenges.context_for(verdict)
    return prefix, None


def fatal_alert_record(description: int) -> bytes:
    """A plaintext TLS record carrying a fatal alert (RFC 8446 §6), as OpenSSL sends before the ServerHello."""
    return bytes((ALERT_RECORD, 3, 3, 0, 2, FATAL, description))


async def _read_first_bytes(stream: trio.abc.Stream) -> bytes:
    """Read until :func:`sniff.classify` can tell (bounded by sniff's rules); ``b""`` on immediate EOF."""
    prefix = b""
    while sniff.classify(prefix) is sniff.FirstBytes.NEED_MORE:
        data = await stream.receive_some(FIRST_READ_BYTES)
        if not data:
            break
        prefix += data
    return prefix


async def _refuse_plain_http(stream: trio.abc.Stream) -> None:
    """Send the clear-text 400, then close without resetting the connection under the client's feet."""
    try:
        await stream.send_all(sniff.HTTPS_REQUIRED_RESPONSE)
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        drained = 0
        with trio.move_on_after(DRAIN_SECONDS):  # and by accept_tls's deadline
            while drained < DRAIN_BYTES:
                data = await stream.receive_some(FIRST_READ_BYTES)
                if not data:
                    break
                drained += len(data)
    finally:
        await trio.aclose_forcefully(stream)
