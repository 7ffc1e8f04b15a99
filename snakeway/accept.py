"""Accepting connections: a batch per wake-up, and a quiet pause when descriptors run out.

Theory of operation
-------------------
trio runs its tasks in batches: every task that is ready runs one step, then
the I/O manager is polled once, then the next batch starts. A loop that
accepts one connection per step (``trio.serve_listeners`` does: each
``accept()`` is a schedule point) therefore takes one connection per batch.
Under thousands of busy keep-alive connections a batch takes a long time,
so new connections queue in the kernel while each batch admits one of them,
and a new client can wait seconds before its first byte.

:func:`serve_sockets` waits until a listening socket is readable (one
schedule point), then calls ``accept()`` without waiting again until the
kernel says there is nothing more, or :data:`ACCEPT_BATCH` connections have
been taken; each gets a handler task, and the loop waits again. That is
nginx's ``multi_accept``, bounded: a burst is admitted in one step, and the
bound keeps that step short, so the connections the worker already serves
are not held up behind a long queue. A new handler starts in the next batch,
like every other task, so a new connection waits about as long as a request
on a connection that is already open: two batches more, not one batch per
connection queued ahead of it. (With ``SO_REUSEPORT`` every worker has a
queue of its own in the kernel.)

When ``accept()`` fails because the process or the system is out of
descriptors or memory (``EMFILE``, ``ENFILE``, ``ENOMEM``, ``ENOBUFS``) the
connection stays queued in the kernel: the loop pauses
:data:`PAUSE_SECONDS` and tries again, so it resumes as soon as handlers
close their sockets. :class:`CapacityLog` decides what to say about it: one
line, no traceback, at most once per :data:`LOG_INTERVAL_SECONDS`, each line
counting the failures since the one before, and one line when accepting
works again. It is pure (it is given the time), so it is tested without
trio.

Errors that concern only the connection being accepted (it was reset while
queued, a firewall refused it) are skipped, as ``trio.SocketListener``
does; any other error ends the loop, and the listening sockets are closed
whenever the loop ends, cancellation included.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Protocol

import trio

logger = logging.getLogger("snakeway.accept")

# accept() calls per wake-up, at most; the rest of the queue waits one batch.
ACCEPT_BATCH = 64
# How long accepting pauses after the process or the system ran out of descriptors or memory.
PAUSE_SECONDS = 0.1
# At most one line about running out per this many seconds.
LOG_INTERVAL_SECONDS = 10.0

CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# The connection went away or was refused while it was queued: nothing is wrong with the listener.
SKIPPED_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
        "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT", "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    )
    if hasattr(errno, name)
)

Accepted = tuple[socket.socket, Any]


class CapacityLog:
    """What to log about ``accept()`` running out of resources: one line per interval at most.

    Args:
      interval: seconds between two lines, at least.
      pause: the pause between attempts, named in the first line.
    """

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS, pause: float = PAUSE_SECONDS) -> None:
        self.interval = interval
        self.pause = pause
        self.failing = False
        self._quiet_until = float("-inf")
        self._unreported = 0
        self._told = False  # a line about failing was logged, and none about recovering since

    def failed(self, now: float, code: int) -> str | None:
        """``accept()`` failed with ``code`` at ``now``: the line to log, or None to stay quiet."""
        self.failing = True
        self._unreported += 1
        if now < self._quiet_until:
            return None
        count, self._unreported = self._unreported, 0
        self._quiet_until = now + self.interval
        self._told = True
        name = errno.errorcode.get(code, str(code))
        since = f"; {count} failed attempts since the last message" if count > 1 else ""
        return (
            f"cannot accept new connections: {name} ({os.strerror(code)}); they wait in the kernel's "
            f"queue, retrying every {self.pause:g} s{since}"
        )

    def recovered(self) -> str | None:
        """``accept()`` worked again, after failing: the line to log, or None.

        There is one such line after each line about failing, so the last word in the log is
        right; when accepting flaps, the failures in between go into the next line instead.
        """
        self.failing = False
        if not self._told:
            return None
        self._told = False
        count, self._unreported = self._unreported, 0
        since = f" after {count} more failed attempts" if count else ""
        return f"accepting new connections again{since}"


class Acceptor(Protocol):
    """A listening socket as the loop sees it (a fake in tests)."""

    async def wait(self) -> None:
        """Until a connection may be queued; a checkpoint."""

    def accept(self) -> Accepted | None:
        """A queued connection and its address, or None when none is; raises OSError."""

    def close(self) -> None:
        """Stop listening."""


class SocketAcceptor:
    """:class:`Acceptor` over a listening standard socket, which it owns from now on."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def wait(self) -> None:
        await trio.lowlevel.wait_readable(self.sock)

    def accept(self) -> Accepted | None:
        while True:
            try:
                return self.sock.accept()
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno not in SKIPPED_ERRNOS:
                    raise

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


Handler = Callable[[socket.socket, Any], Awaitable[object]]


async def serve_acceptor(
    acceptor: Acceptor,
    handler: Handler,
    handler_nursery: trio.Nursery,
    *,
    batch: int = ACCEPT_BATCH,
    pause: float = PAUSE_SECONDS,
    capacity: CapacityLog | None = None,
) -> NoReturn:
    """Start ``handler(sock, address)`` in ``handler_nursery`` for each connection, forever.

    The handler owns the socket: it must close it, whatever happens.
    """
    capacity = capacity or CapacityLog(pause=pause)
    start = handler_nursery.start_soon
    accept = acceptor.accept
    while True:
        await acceptor.wait()
        for _ in range(batch):
            try:
                accepted = accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                line = capacity.failed(trio.current_time(), exc.errno)
                if line is not None:
                    logger.error(line)
                await trio.sleep(pause)
                break
            if accepted is None:
                break
            if capacity.failing:
                line = capacity.recovered()
                if line is not None:
                    logger.warning(line)
            start(handler, *accepted)


async def serve_sockets(sockets: list[socket.socket], handler: Handler, handler_nursery: trio.Nursery) -> NoReturn:
    """Serve every listening socket in ``sockets`` (see :func:`serve_acceptor`); closes them when it ends."""
    acceptors = [SocketAcceptor(sock) for sock in sockets]
    try:
        async with trio.open_nursery() as nursery:
            for acceptor in acceptors:
                nursery.start_soon(serve_acceptor, acceptor, handler, handler_nursery)
    finally:
        for acceptor in acceptors:
            acceptor.close()
    raise AssertionError("serve_acceptor returned")  # pragma: no cover
