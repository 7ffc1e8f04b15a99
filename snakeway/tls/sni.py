"""The SNI callback: pick the certificate for a handshake from the current :class:`CertMap`.

Theory of operation
-------------------
OpenSSL calls the callback once per handshake, synchronously, from inside ``SSLObject.do_handshake()`` (so from
inside ``trio.SSLStream.do_handshake()``, in the task that drives the handshake), after it has read the
ClientHello and before it picks a certificate. It receives the :class:`ssl.SSLObject`, the server name the
client sent (an ASCII A-label, or ``None`` without SNI) and the context the handshake started with. It may
switch the handshake to another context by assigning ``ssl_obj.context``, and abort it by returning an alert
number. An exception escaping it also aborts the handshake (after Python prints it as "unraisable"), so the
callback catches everything and logs at debug level.

The callback never blocks on the network and does no I/O of its own: it reads ``holder.current`` once, asks the
map (:meth:`CertMap.choose`: exact name, wildcard, then the default) and switches contexts. Without an answer it
returns ``ALERT_DESCRIPTION_UNRECOGNIZED_NAME``, which ends the handshake with a fatal alert the client can report
(once sent: ``trio.SSLStream`` drops it, so :func:`~snakeway.tls.handshake.accept_tls` sends it itself).

The one exception is a *lazy* entry's first handshake (see :mod:`snakeway.tls.certmap`): reading its context
builds it, here, from the certificate store's files (``load_cert_chain``: two small local files, about a
millisecond), once per certificate. A build that fails is refused with ``ALERT_DESCRIPTION_INTERNAL_ERROR``, and
stays refused (without rebuilding) until a new certificate is published.

The server never learns the SNI otherwise (Python has no server-side getter), so the callback also records its
choice for whoever asked: :func:`recording_choice` (or :func:`start_recording`) puts a :class:`SniChoice` slot in
a context variable of the task about to run the handshake, and the callback, which runs in that same task, fills it in.
:func:`snakeway.tls.handshake.accept_tls` uses this to learn the SNI and the served certificate's names.

:func:`listener_context` builds the base context for a TLS listener: no certificate of its own (so a map swap
never leaves a stale default behind), and this callback installed.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final

from snakeway import hostnames
from snakeway.tls import contexts

if TYPE_CHECKING:
    from snakeway.tls.certmap import CertMap

logger = logging.getLogger(__name__)

SniCallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]


class CertSource(Protocol):
    """Where the callback finds the current map: a :class:`~snakeway.tls.certmap.CertMapHolder`."""

    @property
    def current(self) -> CertMap: ...


@final
@dataclass
class SniChoice:
    """What the callback decided for one handshake (filled in by the callback; see :func:`recording_choice`).

    Attributes:
        called: Whether the callback ran.
        sni: The server name the client sent, canonical when it normalises, else as sent; ``None`` without SNI.
        cert_names: The names of the certificate served; ``None`` if unknown (a default given as a bare context)
            or if the handshake was refused.
        alert: The alert the callback aborted the handshake with, if it did. ``trio.SSLStream`` drops the
            alert OpenSSL queued when a handshake fails, so the caller sends it itself (see
            :func:`snakeway.tls.handshake.accept_tls`).
    """

    called: bool = False
    sni: str | None = None
    cert_names: tuple[str, ...] | None = None
    alert: int | None = None


_CHOICE: contextvars.ContextVar[SniChoice | None] = contextvars.ContextVar("snakeway_sni_choice", default=None)


@contextlib.contextmanager
def recording_choice() -> Iterator[SniChoice]:
    """Record, in the returned slot, what the callback decides for handshakes driven by this task in the block."""
    slot, token = start_recording()
    try:
        yield slot
    finally:
        stop_recording(token)


def start_recording() -> tuple[SniChoice, contextvars.Token[SniChoice | None]]:
    """:func:`recording_choice` as two calls, for a caller that has a ``try`` of its own (one per TLS connection):
    the slot, and the token to hand :func:`stop_recording` when the handshake is over."""
    slot = SniChoice()
    return slot, _CHOICE.set(slot)


def stop_recording(token: contextvars.Token[SniChoice | None]) -> None:
    _CHOICE.reset(token)


def make_sni_callback(holder: CertSource) -> SniCallback:
    """The ``sni_callback`` for a listener serving the certificates of ``holder.current``.

    Args:
        holder: Read once per handshake; publish a new map there to change certificates.

    Returns:
        A callback for :attr:`ssl.SSLContext.sni_callback`. It never raises: an unknown name without a default
        gives ``ALERT_DESCRIPTION_UNRECOGNIZED_NAME``, an internal failure or a certificate whose lazy context
        could not be built ``ALERT_DESCRIPTION_INTERNAL_ERROR``.
    """

    def on_sni(ssl_obj: ssl.SSLObject, name: str | None, _base: ssl.SSLContext) -> int | None:
        slot = _CHOICE.get()
        try:
            if slot is not None:
                slot.called = True
                slot.sni = hostnames.normalize_host(name) or name
            entry = holder.current.choose(name)
            if entry is None:
                logger.debug("TLS: no certificate for server name %r; refusing the handshake", name)
                return _refuse(slot, ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME)
            context = entry.context  # a lazy entry is built here, on its first handshake (see certmap)
            if context is None:  # its build failed (logged once by the entry): refuse, as for a broken map
                logger.debug("TLS: the certificate for server name %r cannot be served; refusing the handshake", name)
                return _refuse(slot, ssl.ALERT_DESCRIPTION_INTERNAL_ERROR)
            if ssl_obj.context is not context:
                ssl_obj.context = context
            if slot is not None:
                slot.cert_names = entry.names or None
            return None
        except Exception:  # an exception would abort the handshake anyway, noisily: refuse it cleanly instead
            logger.debug("TLS: SNI callback failed for server name %r", name, exc_info=True)
            return _refuse(slot, ssl.ALERT_DESCRIPTION_INTERNAL_ERROR)

    return on_sni


def _refuse(slot: SniChoice | None, alert: int) -> int:
    if slot is not None:
        slot.alert = alert
        slot.cert_names = None
    return alert


def listener_context(holder: CertSource, *, alpn: Sequence[str] = contexts.DEFAULT_ALPN) -> ssl.SSLContext:
    """The base context for a TLS listener serving ``holder``'s certificates.

    It has no certificate of its own: the SNI callback switches every handshake to the chosen certificate's
    context (the map's default included) or refuses it. Pass it to ``trio.SSLStream`` (see
    :func:`snakeway.tls.handshake.accept_tls`) or ``trio.SSLListener``.

    Args:
        holder: The current map; publish there to change certificates without touching the listener.
        alpn: ALPN protocols; use the same for the certificates' contexts.
    """
    context = contexts.server_context(alpn=alpn)
    context.sni_callback = make_sni_callback(holder)
    return context
