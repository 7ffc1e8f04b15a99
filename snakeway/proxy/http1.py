"""The client side of a connection: one HTTP/1.1 request cycle after another.

Theory of operation
-------------------
A connection task runs in one cancel scope for its whole life, whose
deadline each wait re-arms (:class:`~snakeway.proxy.deadlines.Deadlines`,
shared with the forwarder through ``H11Stream.deadlines``). A request head
is read under two clocks: while nothing of the next request has arrived,
the keep-alive idle timeout (expiry closes the connection silently; so does
shutdown); once its first byte is in, the header timeout (expiry answers 408
and closes). When a deadline passes, the scope is cancelled wherever the
connection was, and outside it the connection answers for the wait that was
armed (:meth:`Http1Connection._expired`: 408, 504, or nothing once a
response began), logs the request, and closes. What is not a timed wait
(static files, snakeway's own replies, a WebSocket tunnel) lifts the
deadline first. Empty lines before a request line are skipped
(RFC 9112 section 2.2), which h11 alone would refuse: they are kept from h11
(:meth:`Http1Connection._skip_empty_lines`). The raw head bytes also pass a
:class:`~snakeway.proxy.strict.HeadScanner`, and the parsed request the
checks of :mod:`snakeway.proxy.strict`, before anything is routed.

A request is then routed on this listener's router (read once per request,
so a reload applies to the next request) and handed to static files, the
forwarder or the WebSocket splice. Errors become short plain-text responses
and one log line with the reason. After a response the connection is kept
only when the request was read to its end and h11 agrees it can be reused;
an HTTP/1.0 request is kept alive when it asks with ``Connection:
keep-alive`` and its response has a known length (see
:func:`~snakeway.proxy.h11io.keep_http10_alive`).
"""

from __future__ import annotations

import logging
from bisect import bisect_left

import h11
import trio

from snakeway import hostnames
from snakeway.admin.figures import DURATION_BUCKETS, Counters, ServiceCounts
from snakeway.config.model import Route, StaticSite
from snakeway.listeners import ListenerSpec, Role
from snakeway.proxy import headers as hdr
from snakeway.proxy import strict
from snakeway.proxy.accesslog import NOBODY, STATIC
from snakeway.proxy.deadlines import Deadlines, Wait
from snakeway.proxy.forward import ClientGone, ForwardContext, RequestFailed, forward, stripped
from snakeway.proxy.h11io import READ_SIZE, H11Stream, keep_http10_alive
from snakeway.proxy.listener import ListenerContext
from snakeway.proxy.replies import REQUEST_READ, Replies
from snakeway.proxy.runtime import Runtime, ServiceTarget
from snakeway.proxy.static_io import serve_static
from snakeway.proxy.websocket import proxy_websocket
from snakeway.tcp import TcpStream
from snakeway.tls.handshake import HANDSHAKE, HandshakeInfo, covers

ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"

logger = logging.getLogger(__name__)

LINGER_SECONDS = 1.0

class Http1Connection:
    """Serves one client connection until it closes."""

    def __init__(self, stream: trio.abc.Stream, ctx: ListenerContext, client_ip: str) -> None:
        self.stream = stream
        self.ctx = ctx
        self.client_ip = client_ip
        runtime = ctx.runtime()
        self.client = runtime.config.server.client
        self.h = H11Stream(
            stream,
            h11.Connection(h11.SERVER, max_incomplete_event_size=self.client.max_header_bytes),
        )
        self.h.own_headers = runtime.listeners[ctx.key].response_headers
        tcp = getattr(stream, "transport_stream", stream)  # under TLS, trio.SSLStream's
        self.h.tcp = tcp if isinstance(tcp, TcpStream) else None
        # The connection's one cancel scope and the deadline its waits arm (see snakeway.proxy.deadlines).
        self.deadlines = self.h.deadlines = Deadlines(trio.CancelScope())
        # The request in flight (None between two) and when it was read: for its log line, should it be cut.
        self._request: h11.Request | None = None
        self._started = 0.0
        self.replies = Replies(self.h, self.deadlines, client_ip, self.client.header_timeout_seconds)
        self.scanner = strict.HeadScanner(self.client.max_header_bytes, self.client.max_header_count)
        self.requests = 0
        self._fctx: ForwardContext  # made on the first forward (_forward_context), and after a reload
        self._covered_host: str | None = None
        self._valid_host: bytes | None = None
        self._covered = False
        self._fctx_runtime: Runtime | None = None
        # The admin API's counters: the server's, and the service the request in progress went to.
        self._counters: Counters = ctx.shared.counters
        self._totals = ctx.shared.counters.totals
        self._durations = ctx.shared.counters.durations
        self._counts: ServiceCounts | None = None
        self._headers: list[hdr.Header] = []  # the request's in flight, as a list (for the access log)

    async def run(self) -> None:
        deadlines = self.deadlines
        drain = self.ctx.drain
        drain.add(deadlines)
        try:
            with deadlines.scope:
                while await self._one_cycle():
                    self.h.conn.start_next_cycle()
            if deadlines.scope.cancelled_caught:
                await self._expired()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # A reply of snakeway's own (redirect, ACME answer) that could not be sent.
            logger.debug("client %s gone: %s", self.client_ip, exc)
        finally:
            drain.remove(deadlines)
            await self._close()

    async def _one_cycle(self) -> bool:
        request = await self._read_request()
        if request is None:
            return False
        self.requests += 1
        self._started = self.deadlines.clock.current_time()
        self._request = request
        h = self.h
        h.sent = 0
        h.served_by = NOBODY
        status, keep = await self._respond(request)
        self._account(request, status)
        return (
            keep
            and not self.ctx.drain.closing
            and self.h.conn.our_state is h11.DONE
            and self.h.conn.their_state is h11.DONE
        )

    def _account(self, request: h11.Request, status: int) -> None:
        """Count the request in flight, answered with ``status``, and log it; no request is in flight after."""
        self._request = None
        h = self.h
        # Increments only: see snakeway/admin/figures.py. The duration costs a clock read and a bisection of
        # a 12-entry tuple (the access log below reuses the value).
        elapsed = self.deadlines.clock.current_time() - self._started
        self._totals[status // 100] += 1
        self._durations[bisect_left(DURATION_BUCKETS, elapsed)] += 1
        self._counters.duration_sum += elapsed
        counts = self._counts
        if counts is not None:
            counts.by_class[status // 100] += 1
            self._counts = None
        access = self.ctx.shared.access
        if access.enabled:
            access.request(self.client_ip, request.method, request.target, request.http_version, self._headers,
                           status, h.sent, elapsed, h.served_by, HANDSHAKE.get())

    async def _expired(self) -> None:
        """The connection's deadline passed, or shutdown closed it while idle: answer for the wait armed.

        Runs outside the connection's cancelled scope; the connection closes after. Nothing is
        owed for an idle wait, and nothing can be said once a response began (the log says 499).
        """
        wait = self.deadlines.waiting
        request = self._request
        if request is None:  # between two requests, or in a head
            if wait is Wait.HEAD:
                await self.replies.reject(strict.Rejection(wait.status, wait.reason))
            elif self.requests == 0 and not self.scanner.started:
                logger.debug("client %s sent nothing in time; closing", self.client_ip)
            return
        status = 499
        if wait.status and self.h.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = wait.status
            await self.replies.error(status, wait.reason, request, close=True)
        else:
            logger.debug("client %s: %s; closing", self.client_ip, wait.reason)
        self._account(request, status)

    # -- reading ---------------------------------------------------------

    async def _read_request(self) -> h11.Request | None:
        conn = self.h.conn
        self.scanner.reset()
        # Before its first byte a request is idle: a new connection gets the
        # header timeout, a kept-alive one the idle timeout, and shutdown
        # closes either at once. From the first byte on, the head must be
        # complete within the header timeout.
        self.deadlines.arm(
            Wait.IDLE,
            self.client.header_timeout_seconds if self.requests == 0 else self.client.idle_timeout_seconds,
        )
        head_deadline: float | None = None
        pending, closed = conn.trailing_data
        if pending and pending[:1] in strict.NEWLINES:
            conn = self._skip_empty_lines(pending, closed)
        rejection = self.scanner.feed(pending)
        # With nothing left over from the last request, h11 can only say NEED_DATA: read at once.
        ask = bool(pending) or closed
        event: h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]
        while rejection is None:
            if not ask:
                event = h11.NEED_DATA
                ask = True
            else:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    rejection = strict.Rejection(exc.error_status_hint, str(exc))
                    break
            if type(event) is h11.Request:
                self.h.request_method = event.method  # a HEAD gets no body, whoever answers
                self.h.http10_keep_alive = event.http_version == b"1.0" and keep_http10_alive(conn, event)
                return event
            if event is not h11.NEED_DATA:
                if self.requests == 0 and not self.scanner.started:  # a probe, a browser's spare connection
                    logger.debug("client %s closed before sending anything", self.client_ip)
                return None  # ConnectionClosed: the client is done
            if head_deadline is None and self.scanner.started:
                head_deadline = trio.current_time() + self.client.header_timeout_seconds
            if head_deadline is None:
                data = await self._receive_idle()
                if data is None:
                    return None  # shutdown
                rejection = self.scanner.feed(data)
                if data[:1] in strict.NEWLINES:
                    data = data.lstrip(b"\r\n")  # empty lines before the request line
                    if not data:
                        continue
            else:
                self.deadlines.arm_at(Wait.HEAD, head_deadline)
                data = await self._receive()
                rejection = self.scanner.feed(data)
            conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes a bytearray too
        await self.replies.reject(rejection)
        return None

    def _skip_empty_lines(self, pending: bytes, closed: bool) -> h11.Connection:
        """Replace the parser with one holding what the last request left unread, less its leading empty lines.

        h11 refuses an empty line where it expects a request line (some
        clients send a CRLF after a body), and its buffer cannot be edited.
        Between two requests a parser holds no state worth keeping. Rare:
        only when bytes after a request begin with an empty line.
        """
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.client.max_header_bytes)
        rest = pending.lstrip(b"\r\n")
        if rest:
            conn.receive_data(rest)
        if closed:
            conn.receive_data(b"")
        self.h.conn = conn
        return conn

    async def _receive_idle(self) -> bytes | bytearray | None:
        """A read while no byte of the next request is in: shutdown may close the connection (None once it began)."""
        if self.ctx.drain.closing:
            return None
        deadlines = self.deadlines
        deadlines.idle = True
        data = await self._receive()
        deadlines.idle = False
        return data

    async def _receive(self) -> bytes | bytearray:
        try:
            return await self.h.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    # -- responding ------------------------------------------------------

    async def _respond(self, request: h11.Request) -> tuple[int, bool]:
        """Dispatch one request; returns (status sent, keep the connection)."""
        # One walk gathers what the checks, the router, the forwarder and the log read of the headers.
        headers = self._headers = hdr.RequestHeaders.of(request.headers)
        if (
            not self.client.underscores_in_headers
            and self.scanner.head_contains(b"_")  # cheap, and false for many heads
            and hdr.has_underscored_name(headers)
        ):
            headers = hdr.RequestHeaders.of(hdr.without_underscored_names(headers))  # dropped silently, as nginx does
        rejection = strict.check_request(request, headers)
        target = strict.request_target(request, headers, self._valid_host)
        if rejection is None and isinstance(target, strict.Rejection):
            rejection = target
        if rejection is not None:
            await self.replies.reject(rejection)
            return rejection.status, False
        assert isinstance(target, strict.Target)
        self._valid_host = target.host  # found valid: the next request's Host is not checked again
        runtime = self.ctx.runtime()  # once: the whole request sees one configuration
        spec = runtime.listeners[self.ctx.key]
        self.h.own_headers = spec.response_headers  # a reload applies from this request on
        host = target.host.decode("latin-1")
        if target.path.startswith(ACME_CHALLENGE_PREFIX) and spec.role is not Role.HTTPS:
            self.deadlines.lift()
            answered = await self.replies.acme_challenge(self.ctx.challenges,
                target.path[len(ACME_CHALLENGE_PREFIX) :], known_only=spec.role is Role.HTTP
            )
            if answered is not None:
                return answered
        if spec.role is Role.REDIRECT:
            return await self.replies.redirect(spec, host, target)
        handshake = HANDSHAKE.get()
        if handshake is not None and host and not self._certificate_covers(handshake, host):
            await self.replies.error(421, f"this connection's certificate does not cover {host!r}", request)
            return 421, False
        match = runtime.router(self.ctx.key).match(host, target.path)
        try:
            if match is None:
                raise RequestFailed(404, "no route for this host and path")
            if isinstance(match.target, StaticSite):
                self.h.served_by = STATIC
                self.deadlines.lift()  # a file is sent at the pace the client reads it
                status = await serve_static(self.h, match.target, request, target.target)
            else:
                fctx = self._fctx if self._fctx_runtime is runtime else self._forward_context(runtime, spec)
                self._counts = match.target.counts
                status = await self._to_service(request, headers, target, match.route, match.target, fctx)
                if status == 101:
                    return status, False
        except RequestFailed as exc:
            return exc.status, await self.replies.error(exc.status, exc.reason, request, exc.headers)
        except h11.RemoteProtocolError as exc:
            return exc.error_status_hint, await self.replies.error(exc.error_status_hint, str(exc), request)
        except (ClientGone, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("client %s gone: %s", self.client_ip, exc)
            return 499, False
        if self.h.conn.their_state in REQUEST_READ:  # read to its end, as most are: no call to make
            return status, True
        return status, await self.replies.finish_request_body()

    def _certificate_covers(self, handshake: HandshakeInfo, host: str) -> bool:
        """Whether this connection's certificate covers ``host`` (else 421).

        Remembered for the last host asked: the certificate is the
        connection's, a client sends the same Host on all its requests, and
        matching it against the certificate's names is costly (they are
        normalised on every call): about 6 % of a small HTTPS request.
        """
        if host != self._covered_host:
            self._covered = covers(handshake, hostnames.host_part(host))
            self._covered_host = host
        return self._covered

    def _forward_context(self, runtime: Runtime, spec: ListenerSpec) -> ForwardContext:
        """The connection's ForwardContext, made again only after a reload (the caller reuses it while
        ``_fctx_runtime`` is ``runtime``)."""
        if self._fctx_runtime is not runtime:
            self._fctx_runtime = runtime
            self._fctx = ForwardContext(
                pool=self.ctx.shared.pool,
                health=self.ctx.shared.health,
                settings=runtime.config.server.upstream,
                client_ip=self.client_ip,
                scheme=spec.scheme,
                body_timeout=self.client.body_timeout_seconds,
                buffer_body=self.client.buffer_request_body_bytes,
                via=runtime.config.server.via,
                own_headers=spec.response_headers,
            )
        return self._fctx

    async def _to_service(
        self,
        request: h11.Request,
        headers: hdr.RequestHeaders,
        target: strict.Target,
        route: Route,
        svc: ServiceTarget,
        fctx: ForwardContext,
    ) -> int:
        if route.strip_prefix:
            target = stripped(target, route.path)
        if headers.upgrade is not None and headers.wants_websocket():
            if not route.enable_websocket:
                raise RequestFailed(
                    426, "WebSocket is not enabled on this route", headers=((b"upgrade", b"websocket"),)
                )
            svc.counts.websockets_open += 1
            self.deadlines.lift()  # the handshake and the tunnel time themselves
            try:
                return await proxy_websocket(
                    self.h, request, headers, target, route, svc.balancer, fctx,
                    self.ctx.shared.slots,
                )
            finally:
                svc.counts.websockets_open -= 1
        return await forward(self.h, request, headers, target, route, svc.balancer, fctx)

    async def _close(self) -> None:
        if self.replies.linger and isinstance(self.stream, trio.abc.HalfCloseableStream):
            # Let the client read our error before the kernel resets the
            # connection over bytes it sent that we will never read.
            with trio.move_on_after(LINGER_SECONDS):
                try:
                    await self.stream.send_eof()
                    while await self.stream.receive_some(READ_SIZE):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        # A plain aclose: none of the streams a connection is served on waits for the
        # peer when closing (TLS ones are https_compatible: no close_notify exchange), so
        # the cancel scope of trio.aclose_forcefully (some 4 % of a new TLS connection)
        # would buy nothing.
        await self.stream.aclose()
