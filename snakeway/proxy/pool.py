"""Keep-alive connections to upstream endpoints, after httpcore's pool.

Theory of operation
-------------------
A request borrows a connection with :meth:`UpstreamPool.acquire`, does one
exchange on ``conn.wire`` (an :class:`~snakeway.proxy.upstream_wire.UpstreamWire`)
and hands it back with :meth:`UpstreamPool.release` (or
:meth:`UpstreamPool.discard` after an error). The pool, not the caller,
decides whether the connection lives on: only when the wire says the request
and the response are both complete, and the connection may carry another
(:meth:`UpstreamConnection.reusable`), does it call ``next_cycle()`` and keep
it idle. A response with ``Connection: close``, an HTTP/1.0 peer, a half-read
body, bytes after the response or a cancelled exchange leave it unreusable,
and the connection is closed.

Idle connections are kept per endpoint in a list ordered by ``idle_since``
(oldest first). ``acquire`` takes the most recently idled one (LIFO: the
warmest socket, and the least likely to have hit the peer's keep-alive
timeout), so the expired ones always form a prefix of the list. Expiry uses
trio time only (``MockClock`` drives it in tests): a connection idle for
``pool_idle_seconds`` or more is never reused. Expired connections are closed
lazily by ``acquire`` and eagerly by the :meth:`UpstreamPool.run` sweeper.

Every state change is synchronous and happens between checkpoints, so no lock
is needed; the decisions (``_take_idle``, ``_put_back``, ``take_expired``)
*return* the connections to close and the I/O comes after, as in httpcore.
Closing is ``trio.aclose_forcefully`` inside a shielded ``move_on_after``: it
never blocks, and a cancelled caller still releases its sockets.

Stale keep-alive connections: an upstream may close an idle connection at any
moment (its keep-alive timeout). For TCP sockets ``acquire`` checks, without
blocking, whether the socket is readable (EOF or unsolicited bytes) and drops
it if so, as httpcore does. That narrows the race but cannot close it: the
FIN may be in flight. So a connection carries ``reused``; when a request on a
reused connection fails before any response byte arrived, the caller retries
once on a fresh connection (only the caller knows whether that is safe).

The pool caps *idle* connections per endpoint (``connection_pool_size``); it
does not cap connections in use, which is bounded by downstream concurrency.
"""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, NoReturn, final

import trio

from snakeway.errors import SnakewayError
from snakeway.pipe import Pipe
from snakeway.proxy.upstream_wire import MAX_RESPONSE_HEAD, UpstreamWire
from snakeway.tcp import TcpStream, open_tcp_stream

if TYPE_CHECKING:
    from snakeway.config.model import Endpoint, UpstreamSettings

logger = logging.getLogger(__name__)

# Budget for closing sockets under a shield; forceful closes take no time.
CLOSE_TIMEOUT = 5.0

Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]


class UpstreamConnectError(SnakewayError):
    """No connection could be opened to ``endpoint`` (refused, unreachable, DNS, timeout).

    The proxy marks the endpoint failed in its health table and tries the
    next; when none connects it answers 504 if the last attempt timed out
    (``timed_out``), else 502.
    """

    def __init__(self, endpoint: Endpoint, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(f"cannot connect to upstream {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason
        self.timed_out = timed_out


@final
class UpstreamConnection:
    """One HTTP/1.1 client connection to an upstream endpoint.

    Attributes:
      endpoint: where it goes.
      stream: the transport (owned by the pool: use ``release``/``discard``).
      wire: the HTTP/1.1 client state of the exchange (requests out, the response in).
      idle_since: trio time it was last returned to the pool (or opened).
      reused: True if it served an earlier exchange, so a failure before the
        first response byte may just be a stale keep-alive: retry once, fresh.
      pipe: what response bodies are spliced through to a plain-TCP client
        (:mod:`snakeway.proxy.splice`); closed with the connection.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        stream: trio.abc.Stream,
        *,
        now: float,
        max_head: int = MAX_RESPONSE_HEAD,
    ) -> None:
        self.endpoint = endpoint
        self.label = str(endpoint)  # as the access log names it: once per connection, not per request
        self.stream = stream
        self.wire = UpstreamWire(max_head)
        self.idle_since = now
        self.reused = False
        # The pool's count of open connections per endpoint, lowered once when this one closes.
        self.open_counts: dict[Endpoint, int] | None = None
        # Made once: acquire() asks it on every reuse (see _peer_gone).
        self.readable_poll = _readable_poll(stream)
        # What a response body is spliced through to a plain-TCP client: descriptors made at its first
        # splice, closed with the connection. Per upstream connection, not per client: they are far fewer.
        self.pipe = Pipe()

    def reusable(self) -> bool:
        """True when the exchange finished cleanly and the connection may carry another.

        The request written and the response read to their ends, a response
        that lets the connection live (HTTP/1.1, no ``Connection: close``, a
        known length), and nothing received beyond it: unsolicited bytes or
        an EOF would poison the next exchange.
        """
        return self.wire.reusable()

    def expires_at(self, idle_seconds: float) -> float:
        return self.idle_since + idle_seconds

    async def aclose(self) -> None:
        """Close at once, without a graceful shutdown; never blocks."""
        self.wire.close()
        self.pipe.close()
        counts, self.open_counts = self.open_counts, None
        if counts is not None:
            left = counts[self.endpoint] - 1
            if left:
                counts[self.endpoint] = left
            else:
                del counts[self.endpoint]
        await trio.aclose_forcefully(self.stream)

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.endpoint} reused={self.reused} idle_since={self.idle_since}>"


@final
class UpstreamPool:
    """Idle keep-alive connections per endpoint.

    Args:
      settings: timeouts and sizes (``connection_timeout_seconds``,
        ``connection_pool_size``, ``pool_idle_seconds``).
      connect: opens a transport to ``(host, port)``; inject a fake in tests.
      max_head: the largest response head accepted, in bytes.

    Resource handling:
      Start :meth:`run` in a nursery to close expired connections eagerly,
      and call :meth:`aclose` on shutdown. Every acquired connection must go
      back through :meth:`release` or :meth:`discard` (use ``try/finally``).
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        connect: Connect = open_tcp_stream,
        max_head: int = MAX_RESPONSE_HEAD,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self._max_head = max_head
        # endpoint -> idle connections, oldest first. No empty lists kept.
        self._idle: dict[Endpoint, list[UpstreamConnection]] = {}
        # endpoint -> connections open, idle or in use; changed only when one opens or closes (no zeros kept).
        self._open_counts: dict[Endpoint, int] = {}
        self._closed = False

    # --- I/O -------------------------------------------------------------------------------------

    async def acquire(self, endpoint: Endpoint) -> UpstreamConnection:
        """A connection to ``endpoint``: the most recently idled live one, else a new one.

        Raises:
          UpstreamConnectError: a new connection could not be opened within
            ``connection_timeout_seconds`` (``reason == "timed out"``).
          trio.ClosedResourceError: the pool was closed.
        """
        # A cancel point before any state change: a cancel here leaks nothing.
        # Not a full checkpoint (a trip through the scheduler costs about ten
        # times more): the caller's next step, a send on the connection, is one.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("upstream pool is closed")
            conn, stale = self._take_idle(endpoint, trio.current_time())
            gone = conn is not None and _peer_gone(conn)
            if conn is not None and gone:
                stale.append(conn)
                conn = None
            if stale:
                await _close_all(stale)  # shielded: cannot raise Cancelled, so conn cannot leak
            if conn is not None:
                conn.reused = True
                return conn
            if not gone:
                return await self._open(endpoint)
            # The newest idle one was dead; an older one may still be fine.

    async def release(self, conn: UpstreamConnection) -> None:
        """Hand a connection back after an exchange; kept for reuse if it can be, else closed."""
        to_close = self._put_back(conn, trio.current_time())
        if to_close is not None:
            await _close_all([to_close])

    async def discard(self, conn: UpstreamConnection) -> None:
        """Close a connection that must not be reused (an error mid-exchange)."""
        await _close_all([conn])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Close idle connections as they expire. Runs until cancelled."""
        task_status.started()
        idle_seconds = self.settings.pool_idle_seconds
        while True:
            now = trio.current_time()
            await _close_all(self.take_expired(now))
            # A connection released after `now` expires after `now + idle_seconds`:
            # waking then is never late. With idle_seconds <= 0 nothing is ever kept.
            soonest = self.next_expiry()
            wake = now + idle_seconds if idle_seconds > 0 else math.inf
            if soonest is not None:
                wake = min(wake, soonest)
            # sleep_until, not sleep(wake - now): wakes at current_time() >= wake, so
            # take_expired(now) sees exactly the connections that expired.
            await trio.sleep_until(wake)

    async def aclose(self) -> None:
        """Close every idle connection; later releases close, later acquires fail."""
        self._closed = True
        conns = [conn for idle in self._idle.values() for conn in idle]
        self._idle.clear()
        await _close_all(conns)

    async def _open(self, endpoint: Endpoint) -> UpstreamConnection:
        try:
            with trio.fail_after(self.settings.connection_timeout_seconds):
                stream = await self._connect(endpoint.host, endpoint.port)
        except trio.TooSlowError:
            raise UpstreamConnectError(endpoint, "timed out", timed_out=True) from None
        except OSError as exc:
            raise UpstreamConnectError(endpoint, _describe(exc)) from exc
        conn = UpstreamConnection(
            endpoint,
            stream,
            now=trio.current_time(),
            max_head=self._max_head,
        )
        conn.open_counts = self._open_counts
        self._open_counts[endpoint] = self._open_counts.get(endpoint, 0) + 1
        return conn

    # --- decisions (synchronous; return what to close) ------------------------------------------

    def _take_idle(self, endpoint: Endpoint, now: float) -> tuple[UpstreamConnection | None, list[UpstreamConnection]]:
        """The newest unexpired idle connection (removed from the pool), and the expired ones."""
        idle = self._idle.get(endpoint)
        if not idle:
            return None, []
        newest = idle.pop()
        conn: UpstreamConnection | None = newest
        stale: list[UpstreamConnection] = []
        if newest.expires_at(self.settings.pool_idle_seconds) <= now:
            # The newest has expired, so all older ones have too.
            stale = [*idle, newest]
            idle.clear()
            conn = None
        if not idle:
            del self._idle[endpoint]
        return conn, stale

    def _put_back(self, conn: UpstreamConnection, now: float) -> UpstreamConnection | None:
        """Keep ``conn`` idle if it is reusable; returns the connection to close, if any."""
        settings = self.settings
        if self._closed or not conn.reusable() or settings.pool_idle_seconds <= 0 or settings.connection_pool_size <= 0:
            return conn
        conn.wire.next_cycle()
        conn.idle_since = now
        idle = self._idle.setdefault(conn.endpoint, [])
        idle.append(conn)
        if len(idle) > settings.connection_pool_size:
            return idle.pop(0)  # over the cap: drop the oldest, the likeliest to be timed out by the peer
        return None

    def take_expired(self, now: float) -> list[UpstreamConnection]:
        """Remove and return every idle connection that has expired at ``now`` (grouped by endpoint)."""
        idle_seconds = self.settings.pool_idle_seconds
        expired: list[UpstreamConnection] = []
        for endpoint in list(self._idle):
            idle = self._idle[endpoint]
            keep = next((i for i, c in enumerate(idle) if c.expires_at(idle_seconds) > now), len(idle))
            expired.extend(idle[:keep])
            del idle[:keep]
            if not idle:
                del self._idle[endpoint]
        return expired

    def next_expiry(self) -> float | None:
        """When the next idle connection expires (trio time), or None if none is idle."""
        idle_seconds = self.settings.pool_idle_seconds
        return min((idle[0].expires_at(idle_seconds) for idle in self._idle.values()), default=None)

    def in_use(self, endpoint: Endpoint) -> int:
        """Connections to ``endpoint`` carrying an exchange now (open ones that are not idle).

        Counted from opens and closes only, so a request on a kept-alive connection costs nothing here.
        """
        return self._open_counts.get(endpoint, 0) - len(self._idle.get(endpoint, ()))

    def idle_count(self, endpoint: Endpoint | None = None) -> int:
        """Idle connections to ``endpoint``, or to all endpoints."""
        if endpoint is not None:
            return len(self._idle.get(endpoint, ()))
        return sum(len(idle) for idle in self._idle.values())


async def _close_all(conns: Iterable[UpstreamConnection]) -> None:
    # Shielded so a cancelled caller still closes every socket (paired with a
    # timeout, though forceful closes do not wait for the peer).
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
        for conn in conns:
            try:
                await conn.aclose()
            except (trio.BrokenResourceError, OSError):
                logger.debug("error closing upstream connection %r", conn, exc_info=True)


def _readable_poll(stream: trio.abc.Stream) -> Callable[[], bool] | None:
    """A zero-timeout readability check for a TCP stream; None for other streams (TLS, memory).

    The poll object is registered once per connection, so a check is one
    ``poll(0)`` system call. The connection owns the socket and is dropped
    once it is closed, so the registered descriptor cannot be reused under it.
    """
    if not isinstance(stream, TcpStream):
        return None
    fd = stream.socket.fileno()
    if not hasattr(select, "poll"):  # Windows
        return lambda: bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return lambda: bool(poller.poll(0))


def _peer_gone(conn: UpstreamConnection) -> bool:
    """True if an idle TCP connection is readable: the peer closed it or sent unsolicited bytes.

    Either way it cannot carry a new exchange. A zero-timeout poll never
    blocks. Other stream types (TLS, memory) are not checked.
    """
    if conn.readable_poll is None:
        return False
    try:
        return conn.readable_poll()
    except (OSError, ValueError):
        return True


def _describe(exc: OSError) -> str:
    """A short reason: trio.open_tcp_stream chains per-address errors in an ExceptionGroup."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = []
        for leaf in _leaves(cause):
            reason = leaf.strerror if isinstance(leaf, OSError) and leaf.strerror else str(leaf)
            if reason not in reasons:
                reasons.append(reason)
        if reasons:
            return "; ".join(reasons)
    return exc.strerror or str(exc)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
