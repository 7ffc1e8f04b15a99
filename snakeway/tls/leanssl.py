"""Tune-ups of ``trio.SSLStream`` for connections served by one task: cheaper locks, no reference cycle,
and reads and writes in fewer steps.

Locks
-----
``trio.SSLStream`` takes one of two inner locks around every call it makes
to its transport (one for sends, one for receives), so that a read that
has to write (a TLS alert, a key update) and a write from another task do
not interleave records. trio's locks are checkpoints even when nobody else
holds them: each acquire ends with a schedule point. On a connection that
one task serves, as snakeway's HTTP/1.1 connections are, nobody else ever
holds them, and the transport call made under the lock is a checkpoint of
its own (:class:`snakeway.tcp.TcpStream`'s calls all are). So every
encrypted read and write paid for one trip through trio's scheduler it did
not need: two of a small HTTPS request's six. :func:`quicken` gives a
stream locks that take the free lock at once and wait, as trio's do, only
when another task holds it, in the order they came.

The reference cycle
-------------------
A stream keeps its handshake as a bound method of itself (for the one time
it runs), which makes every TLS connection's objects (the stream, its
``SSLObject``, buffers, locks, the socket) a reference cycle that only the
cyclic garbage collector frees. Under a stream of new connections that
garbage fills the young generations and is promoted, and every so often a
full collection walks the whole heap: a pause of tens of milliseconds in
which no connection of the worker moves, which is where the slowest of
new connections' requests came from. :func:`forget_handshake` drops that
method once the handshake is over (it never runs again), so a connection's
objects are freed the moment it closes.

Reads and writes
----------------
``trio.SSLStream`` runs every read and write through one general loop
(``_retry``) that serves the handshake, renegotiation and tasks racing for
the transport alike. For a read that loop first asks OpenSSL for data it
cannot have yet, which raises ``SSLWantReadError``, and only then reads the
socket; a write goes through the handshake's guard and the loop's own
checkpoint logic. :func:`receive` and :func:`send_all` do what the loop
would do in the common case of a quickened stream after its handshake,
with nothing buffered and nobody else on the stream: a read reads the
socket, hands the bytes to OpenSSL and takes what it decrypts; a write
encrypts and sends (after the session tickets trio held back from the
handshake, as trio would). Any other case (a record cut across reads,
bytes already buffered, an error state, a second task) goes to trio's own
method, so the two paths never both own a step. Errors are what trio
gives: a TLS error breaks the stream (``trio.BrokenResourceError``), and an
EOF without ``close_notify`` is an end of stream, as with
``https_compatible=True``.

All of this touches private attributes of ``trio.SSLStream``: a stream
whose attributes are not what is expected is left as it is (and read and
written by trio's methods), so a trio that changes them is slower, never
wrong.
"""

from __future__ import annotations

import ssl
from types import TracebackType

import trio

try:  # trio's stream states, for the fast paths below (see "Reads and writes")
    from trio._ssl import _State

    _OK: object = _State.OK
    _BROKEN: object = _State.BROKEN
except (ImportError, AttributeError):  # pragma: no cover - another trio: its own methods serve
    _OK = _BROKEN = None


class QuickLock:
    """An ``async with`` lock whose free acquire makes no schedule point; a held one is waited for in turn.

    A release with tasks waiting hands the lock to the first of them (it
    stays held), as trio's own locks do, so that nobody can take it in
    between. Not reentrant, and it does not check who releases it: the
    stream that holds it is its only user.
    """

    __slots__ = ("_held", "_waiting")

    def __init__(self) -> None:
        self._held = False
        self._waiting = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        if self._held or self._waiting:  # behind whoever waits already
            await self._waiting.park()  # returns holding it (see __aexit__)
        else:
            self._held = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def take(self) -> bool:
        """Take the lock if it is free and nobody waits for it; whether it was taken."""
        if self._held or self._waiting:
            return False
        self._held = True
        return True

    def release(self) -> None:
        if self._waiting:
            self._waiting.unpark()  # handed over: still held
        else:
            self._held = False


def quicken(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """Give ``stream`` inner locks whose free acquire is not a checkpoint (see "Locks" above)."""
    send_lock = getattr(stream, "_inner_send_lock", None)
    recv_lock = getattr(stream, "_inner_recv_lock", None)
    if type(send_lock) is trio.StrictFIFOLock and type(recv_lock) is trio.Lock:
        stream._inner_send_lock = QuickLock()  # type: ignore[assignment]
        stream._inner_recv_lock = QuickLock()  # type: ignore[assignment]


def forget_handshake(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """Drop ``stream``'s reference to its own handshake, once done (see "The reference cycle" above)."""
    once = getattr(stream, "_handshook", None)
    if once is not None and getattr(once, "done", False) and hasattr(once, "_afn"):
        once._afn = None


# What receive() and send_all() use of a trio.SSLStream besides its quickened locks.
_PRIVATE = (
    "_state", "_ssl_object", "_incoming", "_outgoing", "_delayed_outgoing", "_handshook",
    "_inner_recv_count", "_outer_recv_conflict_detector", "_outer_send_conflict_detector", "_https_compatible",
)


def is_lean(stream: object) -> bool:
    """Whether :func:`receive` and :func:`send_all` can take ``stream``'s common case themselves."""
    return (
        _OK is not None
        and type(stream) is trio.SSLStream
        and type(getattr(stream, "_inner_recv_lock", None)) is QuickLock
        and type(getattr(stream, "_inner_send_lock", None)) is QuickLock
        and all(hasattr(stream, name) for name in _PRIVATE)
    )


async def receive(stream: trio.SSLStream[trio.abc.Stream], max_bytes: int) -> bytes | bytearray:
    """``stream.receive_some(max_bytes)`` for a stream :func:`is_lean` says yes to (see "Reads and writes")."""
    ssl_object = stream._ssl_object
    incoming = stream._incoming
    lock: QuickLock = stream._inner_recv_lock  # type: ignore[assignment]
    if (
        stream._state is not _OK
        or incoming.pending
        or ssl_object.pending()
        or not stream._handshook.done
        or not lock.take()
    ):
        return await stream.receive_some(max_bytes)
    with stream._outer_recv_conflict_detector:
        try:
            data = await stream.transport_stream.receive_some()
        finally:
            lock.release()
        stream._inner_recv_count += 1
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        try:
            plain = ssl_object.read(max_bytes)
        except ssl.SSLWantReadError:
            plain = None  # a record cut across reads: trio's loop reads the rest
        except (ssl.SSLError, ssl.CertificateError) as exc:
            _break(stream)
            if stream._https_compatible and _is_eof(exc):
                return b""
            raise trio.BrokenResourceError from exc
        if plain is not None and not stream._outgoing.pending:
            return plain
    if plain is None:
        return await stream.receive_some(max_bytes)
    await _flush(stream)  # what OpenSSL queued in reply (a key update): sent before the data is handed on
    return plain


async def send_all(stream: trio.SSLStream[trio.abc.Stream], data: bytes) -> None:
    """``stream.send_all(data)`` for a stream :func:`is_lean` says yes to (see "Reads and writes")."""
    lock: QuickLock = stream._inner_send_lock  # type: ignore[assignment]
    if (
        not data
        or stream._state is not _OK
        or not stream._handshook.done
        or lock._held
        or lock._waiting
    ):
        await stream.send_all(data)
        return
    with stream._outer_send_conflict_detector:
        try:
            stream._ssl_object.write(data)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            _break(stream)
            raise trio.BrokenResourceError from exc
        await _flush(stream)


async def _flush(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """Send what OpenSSL has queued, in turn, as trio's loop does: a failed send breaks the stream.

    The session tickets trio held back from the handshake go first (see ``trio.SSLStream._retry``).
    """
    to_send = stream._outgoing.read()  # taken before the lock: the lock keeps the order of the takers
    async with stream._inner_send_lock:
        try:
            if stream._delayed_outgoing is not None:
                to_send = stream._delayed_outgoing + to_send
                stream._delayed_outgoing = None
            await stream.transport_stream.send_all(to_send)
        except BaseException:
            _break(stream)
            raise


def _break(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """Mark ``stream`` broken, as trio does after a TLS error or a failed send: it is only closed after."""
    stream._state = _BROKEN  # type: ignore[assignment]


def _is_eof(exc: BaseException) -> bool:
    """An EOF without ``close_notify``, as trio tells it (the error's text, for OpenSSL builds that say no more)."""
    reason = getattr(exc, "strerror", None)
    return isinstance(exc, ssl.SSLEOFError) or (isinstance(reason, str) and "UNEXPECTED_EOF_WHILE_READING" in reason)
