"""Two tune-ups of ``trio.SSLStream`` for connections served by one task: cheaper locks, no reference cycle.

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

Both touch private attributes of ``trio.SSLStream``: a stream whose
attributes are not what is expected is left as it is, so a trio that
changes them is slower, never wrong.
"""

from __future__ import annotations

from types import TracebackType

import trio


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
