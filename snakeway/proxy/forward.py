"""One request forwarded to an upstream and its response relayed back.

Theory of operation
-------------------
The client's hop is an h11 connection (SERVER role, ``down``): h11 is the
only parser of what clients send. The upstream's hop is a pooled connection
whose :class:`~snakeway.proxy.upstream_wire.UpstreamWire` writes the request
as bytes and parses the response with llhttp. Bodies are relayed one read of
at most ``READ_SIZE`` bytes at a time, so memory stays bounded whatever the
body size; response bodies go to the client as bytes that h11 accounts for
(``H11Stream.encode_body``), not as an event per read, or, when both hops are
plain TCP and enough of a Content-Length body is left, straight from socket to
socket (:mod:`snakeway.proxy.splice`). What can be written
without more I/O is batched into one write (head plus a small body leave in a
single segment).
A request body known to be small is read whole before an upstream is
connected (:mod:`snakeway.proxy.request_body`), so that no upstream
connection waits on a client that sends it slowly.

Failures map to the status a client expects: no upstream accepts a
connection -> 502, or 504 when the last one tried let
``connection_timeout_seconds`` pass; the upstream is silent past
``read_timeout_seconds`` -> 504; it sends something that is not HTTP -> 502. Once the response head has
been relayed a failure can only be signalled by closing the connection.

An upstream is tried in the balancer's order while nothing of the request
has been sent; a refused connect marks it down for a cool-down (passive
health). A reused keep-alive connection that the upstream closed while it
sat idle is retried once on a new connection, when the request was read to
its end before connecting (it had no body, or a small one read first).
"""

from __future__ import annotations

import logging

import h11
import trio

from snakeway.config.model import Route, UpstreamSettings
from snakeway.proxy import headers as hdr
from snakeway.proxy.balance import Balancer
from snakeway.proxy.deadlines import LAZY_DEADLINE_SECONDS, Wait
from snakeway.proxy.errors import ClientGone as ClientGone  # re-exported: the errors of forwarding
from snakeway.proxy.errors import RequestFailed as RequestFailed
from snakeway.proxy.exchange import Exchange as Exchange  # re-exported: what forward() runs
from snakeway.proxy.exchange import ForwardContext as ForwardContext
from snakeway.proxy.exchange import StaleConnection
from snakeway.proxy.h11io import H11Stream, relayed_request
from snakeway.proxy.pool import UpstreamConnectError, UpstreamConnection
from snakeway.proxy.request_body import NO_BODY, ReadBody, read_body, read_first
from snakeway.proxy.routing import strip_prefix
from snakeway.proxy.strict import Target
from snakeway.proxy.upstream_wire import UpstreamRequest

logger = logging.getLogger(__name__)

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})


# Not forwarded: snakeway answers ``Expect: 100-continue`` itself.
DROPPED_REQUEST_HEADERS = frozenset({b"expect"})


def content_length(headers: hdr.Headers) -> int | None:
    value = hdr.request_headers(headers).content_length
    return int(value) if value is not None else None


def stripped(target: Target, prefix: str) -> Target:
    """``target`` as a route with ``strip_prefix`` forwards it: without the route's path ``prefix``.

    ``/api/users?id=1`` on ``/api`` goes up as ``/users?id=1``, ``/api`` as ``/``; the query is kept as sent.
    ``OPTIONS *`` has no path to strip.
    """
    rest = strip_prefix(prefix, target.path)
    if rest is None or target.path == "*":
        return target
    path = "/" + rest
    # The target is the (normalised) path then the query: the path's characters are its bytes (Latin-1).
    return Target(host=target.host, path=path, target=path.encode("latin-1") + target.target[len(target.path) :])


def upstream_request(
    request: h11.Request, headers: hdr.Headers, target: Target, ctx: ForwardContext
) -> UpstreamRequest:
    """The request for the upstream; ``headers`` are ``request.headers`` as a list."""
    out = hdr.upstream_request_headers(
        headers,
        client_ip=ctx.client_ip,
        scheme=ctx.scheme,
        host=target.host,
        drop=DROPPED_REQUEST_HEADERS,
        via=ctx.via,
    )
    chunked = hdr.request_headers(headers).chunked
    if chunked:
        out.append((b"transfer-encoding", b"chunked"))  # the wire re-frames the body
    return relayed_request(request.method, target.target, out, chunked=chunked)


def connect_budget(settings: UpstreamSettings, upstreams: int) -> float:
    """Seconds the connection's deadline allows :func:`connect` (armed as ``UPSTREAM_CONNECT``).

    The pool times each attempt (``connection_timeout_seconds``, then the
    next upstream is tried), so this only has to stay out of their way: time
    for every upstream to be tried, and twice the lazy slack a deadline may be
    kept early by (twice: so that floating-point rounding can never make the
    slack eat into the last attempt). It is the read timeout when that is
    longer, the timeout of the exchange's first wait: the deadline armed here
    then seldom has to move.
    """
    tries = upstreams * settings.connection_timeout_seconds
    return max(settings.read_timeout_seconds, tries + 2 * LAZY_DEADLINE_SECONDS)


async def connect(balancer: Balancer, ctx: ForwardContext) -> UpstreamConnection:
    """A connection to the first upstream, in the balancer's order, that accepts one.

    Raises:
      RequestFailed: none did: 504 if the last attempt timed out (as nginx answers), else 502.
    """
    reasons = []
    status = 502
    for upstream in balancer.order(trio.current_time()):
        try:
            conn = await ctx.pool.acquire(upstream.endpoint)
        except UpstreamConnectError as exc:
            ctx.health.mark_failed(upstream.endpoint, trio.current_time())
            logger.warning("upstream %s: %s", upstream.endpoint, exc.reason)
            reasons.append(f"{upstream.endpoint}: {exc.reason}")
            status = 504 if exc.timed_out else 502
            continue
        ctx.health.mark_ok(upstream.endpoint)
        return conn
    raise RequestFailed(status, "no upstream accepted the connection (" + "; ".join(reasons) + ")")


async def forward(
    down: H11Stream,
    request: h11.Request,
    headers: hdr.Headers,
    target: Target,
    route: Route,
    balancer: Balancer,
    ctx: ForwardContext,
) -> int:
    """Forward ``request`` and relay the response; returns the status sent.

    ``headers`` are the request's, as a :class:`~snakeway.proxy.headers.RequestHeaders` (or a list).

    Raises:
      RequestFailed: nothing was sent to the client yet; reply with its status.
      ClientGone: the client hop broke.
    """
    fields = headers = hdr.request_headers(headers)  # a RequestHeaders from the connection: no walk
    limit = route.max_body_bytes
    declared = None if fields.content_length is None else int(fields.content_length)
    if limit is not None and declared is not None and declared > limit:
        raise RequestFailed(413, f"request body of {declared} bytes is over the limit of {limit}")
    up_request = upstream_request(request, headers, target, ctx)
    chunked = fields.chunked
    with_body = chunked or (declared or 0) > 0
    body: ReadBody | None = None
    if with_body and read_first(declared, chunked, ctx.buffer_body):
        body = await read_body(down, buffer_bytes=ctx.buffer_body, limit=limit, timeout=ctx.body_timeout)
    retry_allowed = request.method in IDEMPOTENT and (not with_body or (body is not None and body.complete))
    retrying = False
    deadlines = down.deadlines
    while True:
        if deadlines is not None:
            deadlines.arm(Wait.UPSTREAM_CONNECT, connect_budget(ctx.settings, len(balancer.service.upstreams)))
        conn = await connect(balancer, ctx)
        down.served_by = conn.label
        exchange = Exchange(down, conn, ctx, limit)
        try:
            status = await exchange.run(up_request, body)
        except StaleConnection:
            await ctx.pool.discard(conn)
            if retry_allowed and not retrying:
                # Only a request read to its end is retried: resent from what was read.
                retrying = True
                body = body or NO_BODY
                continue
            raise RequestFailed(502, "upstream closed the connection") from None
        except BaseException:
            await ctx.pool.discard(conn)
            raise
        await ctx.pool.release(conn)
        return status
