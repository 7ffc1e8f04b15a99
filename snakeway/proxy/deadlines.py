"""The deadline of a client connection: one cancel scope, re-armed by each wait.

Theory of operation
-------------------
Every wait of a connection has a time limit of its own: the next request
(idle timeout), the rest of a request head (header timeout), each read of a
request body (body timeout), the upstream taking the request and answering
(read timeout). Each could run under a ``trio.fail_after`` of its own, but a
cancel scope entered and left costs about three times what moving the
deadline of a scope already entered does, and a small proxied request waits
three or four times. So a connection (:class:`~snakeway.proxy.http1.Http1Connection`)
runs in ONE scope for its whole life, and :class:`Deadlines` keeps it:

- Before a wait, :meth:`Deadlines.arm` gives the scope that wait's deadline
  and records the :class:`Wait`: what timed out, should the deadline pass.
  The deadline is kept as a float beside the scope, and the scope is only
  touched when the new deadline moves by more than a lazy slack (nginx's
  ``NGX_TIMER_LAZY_DELAY``, 300 ms, for the same reason; a tenth of a short
  timeout at most). Consecutive waits mostly have the same timeout, so most
  arms are a clock read and a comparison: with the default timeouts (60 s
  idle, 60 s upstream read) a kept-alive request moves no deadline at all.
- Expiry is exact: the deadline passing cancels the scope, wherever the
  connection is. The connection is then finished. Outside the cancelled
  scope it answers for the wait that was armed (:attr:`Wait.status`: a 408,
  a 504, nothing for an idle connection, nothing either once a response
  began) and closes. A wait whose deadline passed just as it ended keeps
  the error: a later :meth:`Deadlines.arm` changes nothing.
- Stretches that may wait but are not timed waits lift the deadline
  (:meth:`Deadlines.lift`): a write to the client that has to wait for it
  (the client's transport times writes by their progress, see
  :class:`snakeway.tcp.TcpStream`; the exchange lifts from its
  ``on_send_blocked``), static files, snakeway's own replies, a WebSocket
  tunnel (which times itself). Work that does not wait (parsing, routing, a
  write the kernel takes at once) runs under whatever deadline the last wait
  left: it cannot be cut by it, as it reaches no checkpoint that blocks.
- Shutdown closes idle connections at once and lets busy ones finish their
  request: a connection says when it is idle (:attr:`Deadlines.idle`, a
  flag set around its wait for the next request), and the server's
  :class:`~snakeway.proxy.listener.Drain` cancels only the idle ones
  (:meth:`Deadlines.cancel`), which then close silently.

The request path enters no cancel scope and no context manager of its own:
arming is attribute work, and a deadline moves only when a wait's timeout
differs from the last one's.
"""

from __future__ import annotations

import enum
import math
from typing import final

import trio

# A wait whose deadline is within this of the one already set keeps that one: moving a deadline
# is the costliest part of arming a wait. The kept deadline may be the earlier one, so short
# timeouts get a slack of a tenth of themselves at most.
LAZY_DEADLINE_SECONDS = 0.3
LAZY_DEADLINE_SHARE = 0.1


class Wait(enum.Enum):
    """What a connection waits for, and what the client hears if that takes too long.

    ``status`` is the response owed on expiry (0: close silently); once a
    response began, expiry only closes the connection.
    """

    IDLE = (0, "no request came in time")  # the next request: close silently
    HEAD = (408, "client too slow sending the request head")
    CLIENT_READ = (408, "client too slow sending the request body")
    UPSTREAM_CONNECT = (504, "no upstream accepted the connection in time")
    UPSTREAM_WRITE = (504, "upstream stopped reading the request")
    UPSTREAM_READ = (504, "upstream timed out")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


@final
class Deadlines:
    """The deadline of a connection's cancel scope, armed wait by wait.

    Args:
      scope: the connection's scope; the caller enters it, and the caller
        reads :attr:`waiting` once it was cancelled.

    Attributes:
      waiting: the wait last armed: what timed out when the scope is cancelled.
      idle: the connection waits for its next request (shutdown may close it).
      deadline: the scope's deadline, as last set here (``-inf`` once cancelled).
      clock: the run's clock, kept for cheap reads of the time (made in a trio run).
    """

    __slots__ = ("scope", "waiting", "idle", "deadline", "clock")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.waiting = Wait.IDLE
        self.idle = False
        self.deadline = math.inf
        # trio.current_time() is three calls deep; the clock's own method is one, and a request reads the
        # time several times.
        self.clock = trio.lowlevel.current_clock()

    def arm(self, wait: Wait, seconds: float) -> None:
        """Give the wait about to start ``seconds`` from now (give or take the lazy slack)."""
        now = self.clock.current_time()
        if now >= self.deadline:
            # The last wait's deadline passed just as it ended (or shutdown closed
            # the connection): its error stands, raised at the next checkpoint.
            return
        self.waiting = wait
        deadline = now + seconds
        if abs(deadline - self.deadline) >= min(LAZY_DEADLINE_SECONDS, seconds * LAZY_DEADLINE_SHARE):
            self.deadline = self.scope.deadline = deadline

    def arm_at(self, wait: Wait, deadline: float) -> None:
        """Give the wait about to start an absolute ``deadline`` (a whole head's, from its first byte)."""
        now = self.clock.current_time()
        if now >= self.deadline:
            return
        self.waiting = wait
        if abs(deadline - self.deadline) >= min(LAZY_DEADLINE_SECONDS, (deadline - now) * LAZY_DEADLINE_SHARE):
            self.deadline = self.scope.deadline = deadline

    def lift(self) -> None:
        """No deadline until the next wait arms one, unless the last one passed (its error stands)."""
        if self.deadline != math.inf and self.clock.current_time() < self.deadline:
            self.deadline = self.scope.deadline = math.inf

    def cancel(self) -> None:
        """End the connection now (shutdown, while it is idle); :attr:`waiting` says what it waited for."""
        self.deadline = -math.inf
        self.scope.cancel()
