"""The admin listener's connections: HTTP/1.1 (h11), optionally under TLS, one JSON answer per request.

A thin shell: :func:`snakeway.admin.routes.decide` says what a request asks for (or why it is refused) from
its head, before its body is read; the handlers of :class:`snakeway.admin.api.AdminApi` do it. Every answer,
an error included, is a JSON object with ``Content-Type: application/json`` (but for ``GET /metrics``'s
Prometheus text); an unexpected error in a
handler is logged with its traceback and answered ``500`` with a one-line message, never the traceback.
Connections are kept alive between requests; a request whose body was not read (refused before it) closes
the connection after its answer. The status page (``GET /``), its login form and ``POST /login`` are the
exceptions: HTML (:mod:`snakeway.admin.page`), and a session cookie (:mod:`snakeway.admin.session`).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import h11
import trio

from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.admin import auth, page, routes, session
from snakeway.admin.api import AdminApi, Text
from snakeway.listeners import ListenerSpec
from snakeway.proxy.validators import http_date
from snakeway.tcp import TcpStream
from snakeway.tls.handshake import accept_tls

logger = logging.getLogger(__name__)

READ_SIZE = 16384
MAX_HEAD_BYTES = 16384
HEAD_TIMEOUT = 15.0  # from a request's first byte (or the connection's start) to its whole head
IDLE_TIMEOUT = 60.0  # a kept-alive connection waiting for its next request
BODY_TIMEOUT = 15.0


async def handle(
    api: AdminApi, spec: ListenerSpec, tls_context: ssl.SSLContext | None, challenges: TlsAlpnChallenges,
    sock: socket.socket, peer: Any,
) -> None:
    """Serve one admin connection (the accept loop's handler for the admin listener)."""
    stream = TcpStream.accepted(sock, send_timeout=HEAD_TIMEOUT)
    try:
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport: trio.abc.Stream = stream
        if tls_context is not None:
            tls_stream = await accept_tls(
                stream, tls_context, timeout=spec.handshake_timeout, client=client, challenges=challenges
            )
            if tls_stream is None:
                return
            transport = tls_stream
        await _Connection(transport, api, client).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.debug("admin client %s gone: %s", peer, exc)
    except Exception:  # the per-connection error boundary; Cancelled passes
        logger.exception("admin connection handler crashed")
    finally:
        stream.socket.close()


class _Connection:
    def __init__(self, stream: trio.abc.Stream, api: AdminApi, client: str) -> None:
        self.stream = stream
        self.api = api
        self.client = client
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def run(self) -> None:
        wait = HEAD_TIMEOUT
        while True:
            try:
                request = await self._next_request(wait)
            except h11.RemoteProtocolError as exc:
                await self._send(exc.error_status_hint, {"error": f"bad request: {exc}"}, close=True)
                return
            if request is None:
                return
            keep = await self._answer(request)
            if not keep or self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()
            wait = IDLE_TIMEOUT

    async def _receive_event(self) -> object:
        """The next h11 event (reading as needed); PAUSED once a request is read to its end."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(READ_SIZE)
            self.conn.receive_data(bytes(data))

    async def _next_request(self, wait: float) -> h11.Request | None:
        with trio.move_on_after(wait):
            event = await self._receive_event()
            return event if isinstance(event, h11.Request) else None
        return None

    async def _read_body(self) -> bytes | None:
        """The request body, at most MAX_BODY_BYTES; None if it is longer or does not arrive in time."""
        body = bytearray()
        if self.conn.their_state is h11.DONE:  # no body: read to its end already
            return b""
        with trio.move_on_after(BODY_TIMEOUT):
            while True:
                event = await self._receive_event()
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > routes.MAX_BODY_BYTES:
                        return None
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                else:
                    return None
        return None

    async def _answer(self, request: h11.Request) -> bool:
        """Answer one request; whether the connection may carry another."""
        authorization = next((v for k, v in request.headers if k == b"authorization"), None)
        if all(k != b"transfer-encoding" and (k != b"content-length" or v == b"0") for k, v in request.headers):
            await self._receive_event()  # the EndOfMessage of a request without a body: it is read to its end
        tokens = self.api.tokens()
        cookie = session.from_cookie_header([v for k, v in request.headers if k == b"cookie"])
        signed_in = cookie is not None and session.valid(cookie, tokens, time.time())
        decision = routes.decide(request.method, request.target, authorization, tokens, session=signed_in)
        if isinstance(decision, routes.Call) and request.method == b"POST":
            body = await self._read_body()
            if body is None:
                await self._send(413, {"error": f"the body must be at most {routes.MAX_BODY_BYTES} bytes and "
                                                f"arrive within {BODY_TIMEOUT:g} s"}, close=True)
                return False
            if decision.handler == "login":
                return await self._login(body, tokens)
            decision = routes.with_body(decision, body)
        if isinstance(decision, routes.Error):
            if decision.status == 401:
                # A browser opening the status page without credentials is shown the login form: not a warning.
                visit = decision.login_form and authorization is None and cookie is None
                logger.log(logging.INFO if visit else logging.WARNING,
                           "admin: %s %s from %s refused: no valid bearer token", request.method.decode(
                               "ascii", "replace"), request.target.decode("ascii", "replace")[:200], self.client)
            close = self.conn.their_state is not h11.DONE  # a body not read: no next request can follow
            if decision.login_form:
                await self._send_html(decision.status, page.login_form(), decision.headers, close=close)
            else:
                await self._send(decision.status, {"error": decision.message}, decision.headers, close=close)
            return not close
        try:
            status, payload = await self.api.call(decision)
        except Exception as exc:
            logger.exception("admin: %s failed", decision.handler)
            status, payload = 500, {"error": f"internal error in {decision.handler}: {type(exc).__name__}"}
        close = self.conn.their_state is not h11.DONE
        if decision.handler == "status" and status == 200 and not isinstance(payload, Text):
            html = page.render(payload["certificates"], payload["services"], workers=payload["workers"],
                               now=datetime.now(UTC), log=payload["log"])
            await self._send_html(200, html, close=close)
        else:
            await self._send(status, payload, close=close)
        return not close

    async def _login(self, body: bytes, tokens: tuple[bytes, ...]) -> bool:
        """``POST /login``: a valid token in the form gets a session cookie and a redirect to the status page."""
        if not auth.authorized(b"Bearer " + session.form_token(body), tokens):
            logger.warning("admin: status page login from %s refused: not a valid token", self.client)
            await self._send_html(401, page.login_form("That is not a valid token."))
            return True
        cookie = session.new_session(tokens, time.time())
        headers = ((b"location", b"/"), (b"set-cookie", session.set_cookie(cookie)))
        await self._send_html(303, page.redirect_to_status(), headers)
        return True

    async def _send(
        self, status: int, payload: dict[str, Any] | Text, headers: tuple[tuple[bytes, bytes], ...] = (), *,
        close: bool = False,
    ) -> None:
        if isinstance(payload, Text):
            await self._send_body(status, payload.body, payload.content_type, headers, close=close)
            return
        await self._send_body(status, json.dumps(payload, indent=2).encode() + b"\n", b"application/json",
                              headers, close=close)

    async def _send_html(
        self, status: int, html: str, headers: tuple[tuple[bytes, bytes], ...] = (), *, close: bool = False,
    ) -> None:
        # No script, style only inline, no frame around it: a page nothing can be injected into or framed.
        policy = (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; "
                  b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        await self._send_body(status, html.encode(), b"text/html; charset=utf-8", (policy, *headers), close=close)

    async def _send_body(
        self, status: int, body: bytes, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...], *,
        close: bool,
    ) -> None:
        if self.conn.our_state is not h11.SEND_RESPONSE:
            return
        head = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"date", http_date(time.time())),
            *headers,
        ]
        if close:
            head.append((b"connection", b"close"))
        reason = HTTPStatus(status).phrase.encode() if status in HTTPStatus._value2member_map_ else b""
        data = self.conn.send(h11.Response(status_code=status, headers=head, reason=reason))
        data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        with trio.move_on_after(HEAD_TIMEOUT):
            await self.stream.send_all(data)
