"""What snakeway answers itself on a client connection, and the end of a request body left unread.

Errors and rejections are short plain-text responses, with one log line
that gives the reason (for a 5xx the client is told only what
:data:`PUBLIC_REASONS` says; the details stay in the log). A rejected
request closes the connection after its answer, and the connection
lingers so that the client can read it (:attr:`Replies.linger`). Redirects
and ACME HTTP-01 answers are written here too. Any reply made before the
request body was read to its end drains at most :data:`DRAIN_LIMIT` bytes
of it, within the header timeout, so that the connection can be kept;
otherwise it closes.

None of these replies is timed by the connection's deadline: each lifts
it first (the drain has a time limit of its own).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import h11
import trio

from snakeway import hostnames
from snakeway.listeners import ListenerSpec, redirect_location
from snakeway.proxy import strict
from snakeway.proxy.accesslog import REDIRECT, escape
from snakeway.proxy.deadlines import Deadlines
from snakeway.proxy.h11io import H11Stream
from snakeway.proxy.listener import ChallengeAnswers

logger = logging.getLogger(__name__)

# A response sent before the request body was read drains at most this much.
DRAIN_LIMIT = 1024 * 1024
# Client states in which the request has been read to its end.
REQUEST_READ = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

# What a client is told for server-side failures; the details go to the log.
PUBLIC_REASONS = {
    502: "the upstream server could not be reached or sent an invalid response",
    504: "the upstream server did not answer in time",
    503: "the service is at its connection limit",
}


def error_body(status: int, reason: str) -> bytes:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = PUBLIC_REASONS.get(status, reason) if status >= 500 else reason
    return f"{status} {phrase}: {detail}\n".encode()


class Replies:
    """The replies of one client connection (``h``) that snakeway writes itself.

    Args:
      h: the connection's h11 stream.
      deadlines: the connection's deadline, lifted before each reply.
      client_ip: for the log lines.
      drain_seconds: how long draining an unread request body may take.

    Attributes:
      linger: a request was rejected: the connection, once closed, should
        let the client read the answer before the kernel resets it.
    """

    def __init__(self, h: H11Stream, deadlines: Deadlines, client_ip: str, drain_seconds: float) -> None:
        self.h = h
        self.deadlines = deadlines
        self.client_ip = client_ip
        self.drain_seconds = drain_seconds
        self.linger = False

    async def acme_challenge(
        self, challenges: ChallengeAnswers, token: str, *, known_only: bool
    ) -> tuple[int, bool] | None:
        """ACME HTTP-01 (RFC 8555 section 8.3): the key authorization for a pending token.

        On a listener with routes, an unknown token is left to the routes
        (None), so a site may serve its own ``/.well-known/acme-challenge/``.
        """
        answer = await challenges.key_authorization(token)
        if answer is None and known_only:
            return None
        if answer is None:
            await self.h.send_response(404, [(b"content-type", b"text/plain")], b"404 Not Found\n")
            return 404, await self.finish_request_body()
        logger.info("answered the ACME HTTP-01 challenge for token %s", token)
        await self.h.send_response(200, [(b"content-type", b"application/octet-stream")], answer.encode("ascii"))
        return 200, await self.finish_request_body()

    async def redirect(self, spec: ListenerSpec, host: str, target: strict.Target) -> tuple[int, bool]:
        assert spec.redirect_port is not None
        self.deadlines.lift()
        if hostnames.route_host(host) is None:  # a Location may repeat a host name or IP address only
            await self.error(400, "a redirect needs a valid Host header", None)
            return 400, False
        location = redirect_location(host, target.target.decode("latin-1"), spec.redirect_port)
        self.h.served_by = REDIRECT
        headers = [(b"location", location.encode("latin-1")), (b"content-type", b"text/plain")]
        await self.h.send_response(spec.redirect_status, headers, f"Redirecting to {location}\n".encode("latin-1"))
        return spec.redirect_status, await self.finish_request_body()

    async def error(
        self,
        status: int,
        reason: str,
        request: h11.Request | None,
        extra: tuple[tuple[bytes, bytes], ...] = (),
        *,
        close: bool = False,
    ) -> bool:
        """Send an error response (``Connection: close`` if ``close``); returns whether the connection may be kept."""
        what = f'"{escape(request.method)} {escape(request.target)}"' if request else "-"
        logger.warning("%s %s -> %d: %s", self.client_ip, what, status, reason)
        if self.h.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False  # the response had begun: closing is all that is left
        self.deadlines.lift()
        close = close or self.h.conn.their_state not in REQUEST_READ and (
            self.h.conn.they_are_waiting_for_100_continue or status in (408, 413)
        )
        headers = [(b"content-type", b"text/plain; charset=utf-8"), *extra]
        if close:
            headers.append((b"connection", b"close"))
        try:
            await self.h.send_response(status, headers, error_body(status, reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            return False
        return not close and await self.finish_request_body()

    async def reject(self, rejection: strict.Rejection) -> None:
        """Answer a request that is not to be served, then close."""
        self.linger = True
        logger.warning("%s rejected -> %d: %s", self.client_ip, rejection.status, rejection.reason)
        if self.h.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        self.deadlines.lift()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        try:
            await self.h.send_response(
                rejection.status, headers, error_body(rejection.status, rejection.reason)
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass

    async def finish_request_body(self) -> bool:
        """Read and drop what is left of the request body; False to close instead."""
        conn = self.h.conn
        if conn.their_state in REQUEST_READ:
            return True
        if conn.they_are_waiting_for_100_continue:
            return False
        self.deadlines.lift()  # the drain below has a time limit of its own
        dropped = 0
        with trio.move_on_after(self.drain_seconds):
            while dropped <= DRAIN_LIMIT:
                try:
                    event = await self.h.next_event()
                except (h11.RemoteProtocolError, trio.BrokenResourceError):
                    return False
                if type(event) is h11.Data:
                    dropped += len(event.data)
                elif type(event) is h11.EndOfMessage:
                    return True
                else:
                    return False
        return False
