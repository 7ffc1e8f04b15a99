"""A local HTTPS front for Pebble that adds ACME Renewal Information (ARI, RFC 9773).

Pebble 2.4 has no ``renewalInfo``. :class:`AriProxy` listens on 127.0.0.1 and
forwards every request to Pebble unchanged (method, target, headers including
``Host``, body), so Pebble builds every URL it hands out (orders, authorizations,
certificates, nonces) on the proxy's address and checks the JWS ``url`` against
it: the ACME client talks to the proxy only. On top of that it:

* adds ``renewalInfo`` to the directory (unless ``ari=False``);
* answers ``GET /renewal-info/<certID>`` itself, from :meth:`AriProxy.set_window`
  or :meth:`AriProxy.set_answer` (404 when nothing is set); an answer set with
  ``next_certificate=True`` goes to the next certificate asked about, whatever its
  CertID, and stays with it;
* records the decoded JWS payload of every newOrder request the CA acted on
  (:attr:`AriProxy.new_order_payloads`), every ARI CertID asked for
  (:attr:`AriProxy.ari_requests`), every certificate chain downloaded
  (:attr:`AriProxy.certificates`) and every ``(method, path)``
  (:attr:`AriProxy.requests`);
* answers a newOrder whose ``replaces`` is in :meth:`AriProxy.mark_replaced`
  with ``409 alreadyReplaced``, can hold newOrder requests
  (:meth:`AriProxy.hold_new_orders`), and can report a valid order as
  ``processing`` a few times (:meth:`AriProxy.report_processing`).

It is a threaded server, so it works for trio tests and for tests that run
snakeway as a process alike::

    with AriProxy(pebble, tmp_path) as proxy:
        proxy.set_window(start, end, retry_after=3600)
        backend = ClientV2Backend(proxy.directory_url, ca_file=proxy.ca_file)

Leaving the block stops the server, closes every connection and joins every
thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import trustme

from tests.pebble import LOOPBACK, Pebble

RENEWAL_INFO_PATH = "/renewal-info"
ALREADY_REPLACED = "urn:ietf:params:acme:error:alreadyReplaced"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_IDLE_TIMEOUT = 30.0  # seconds a kept-alive client connection may sit idle
_UPSTREAM_TIMEOUT = 30.0


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with ``Z``, the way CAs write ARI windows."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Gate:
    """Where :meth:`AriProxy.hold_new_orders` holds newOrder requests.

    Attributes:
        arrived: Set once a newOrder request waits at the gate.
        released: Set by :meth:`release`; the held requests then go on to Pebble.
    """

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class AriProxy:
    """Pebble behind a front that offers ARI (see the module docstring).

    Args:
        pebble: The running Pebble to forward to.
        workdir: A directory for the proxy's trust bundle.
        ari: Offer ``renewalInfo`` in the directory (False: a pass-through that
            still records, to show what a client sends to a CA without ARI).

    Attributes:
        directory_url: The ACME directory to give the client.
        ca_file: PEM bundle trusting the proxy (and Pebble's API) for the client.
        renewal_info_url: The directory's ``renewalInfo`` URL.
        new_order_payloads: The JSON payload of each newOrder request the CA acted on, in order (a
            request Pebble refused with ``badNonce``, which the client sends again, is left out).
        ari_requests: The CertID of each ARI GET, in order.
        certificates: The PEM chain of each certificate download, in order.
        requests: ``(method, path)`` of every request, in order.
    """

    def __init__(self, pebble: Pebble, workdir: Path, *, ari: bool = True) -> None:
        self.pebble = pebble
        self.ari = ari
        ca = trustme.CA()
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(LOOPBACK, "localhost").configure_cert(self._server_context)
        self.ca_file = workdir / "ariproxy-ca.pem"
        self.ca_file.write_bytes(ca.cert_pem.bytes() + b"\n" + pebble.ca_file.read_bytes())
        self._upstream_context = ssl.create_default_context(cafile=str(pebble.ca_file))
        upstream = urlsplit(pebble.directory_url)
        self._upstream = (upstream.hostname or LOOPBACK, upstream.port or 443)
        self._directory_path = upstream.path
        self._lock = threading.Lock()
        self._answers: dict[str | None, tuple[int, bytes, dict[str, str]]] = {}
        self._next_answer: tuple[int, bytes, dict[str, str]] | None = None
        self._replaced: set[str] = set()
        self._gates: list[Gate] = []
        self._processing = 0
        self._connections: set[socket.socket] = set()
        self._new_order_path: str | None = None
        self._new_nonce_path: str | None = None
        self.new_order_payloads: list[dict[str, object]] = []
        self.ari_requests: list[str] = []
        self.certificates: list[bytes] = []
        self.requests: list[tuple[str, str]] = []
        self._server = _Server(self)
        port = self._server.server_address[1]
        self.origin = f"https://{LOOPBACK}:{port}"
        self.directory_url = self.origin + self._directory_path
        self.renewal_info_url = self.origin + RENEWAL_INFO_PATH
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="ariproxy", daemon=True)

    # --- the test's controls -------------------------------------------------------------------

    def set_window(
        self,
        start: datetime,
        end: datetime,
        *,
        retry_after: int | str | None = None,
        explanation_url: str | None = None,
        cert_id: str | None = None,
        next_certificate: bool = False,
    ) -> None:
        """Answer ARI GETs with this suggested window (see :meth:`set_answer` for ``cert_id`` and ``next_certificate``)."""
        body: dict[str, object] = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
        if explanation_url is not None:
            body["explanationURL"] = explanation_url
        self.set_answer(body, retry_after=retry_after, cert_id=cert_id, next_certificate=next_certificate)

    def set_answer(
        self,
        body: object,
        *,
        status: int = 200,
        retry_after: int | str | None = None,
        cert_id: str | None = None,
        next_certificate: bool = False,
    ) -> None:
        """Answer ARI GETs with ``body`` (bytes as they are, anything else as JSON) and ``status``.

        The answer is for ``cert_id`` only, or with ``next_certificate`` for the next certificate asked about
        that has no answer of its own (from then on, for that one only), or else for every certificate.
        """
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json" if status < 400 else "application/problem+json"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        with self._lock:
            if next_certificate:
                self._next_answer = (status, raw, headers)
            else:
                self._answers[cert_id] = (status, raw, headers)

    def mark_replaced(self, cert_id: str) -> None:
        """From now on, a newOrder with ``replaces: cert_id`` gets ``409 alreadyReplaced`` (not forwarded)."""
        with self._lock:
            self._replaced.add(cert_id)

    def hold_new_orders(self) -> Gate:
        """Hold every newOrder request (before Pebble sees it) until the gate is released (it is at stop)."""
        gate = Gate()
        with self._lock:
            self._gates.append(gate)
        return gate

    def report_processing(self, times: int) -> None:
        """Show the next ``times`` answers about a ``valid`` order as ``processing`` (no certificate yet)."""
        with self._lock:
            self._processing = times

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> AriProxy:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, close every connection and join every thread."""
        with self._lock:
            for gate in self._gates:
                gate.release()
            connections = list(self._connections)
        if self._thread.is_alive():
            self._server.shutdown()
        for conn in connections:  # wakes handler threads waiting on kept-alive connections
            with suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)  # the descriptor, not the TLS object
        self._server.server_close()  # joins the handler threads
        self._thread.join()

    # --- the handler's side (server threads) -----------------------------------------------------

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def _handle(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> _Reply:
        with self._lock:
            self.requests.append((method, path))
        if path.startswith(RENEWAL_INFO_PATH + "/") and self.ari:
            return self._renewal_info(method, path.removeprefix(RENEWAL_INFO_PATH + "/"))
        if method == "POST" and path == self._new_order_path:
            return self._new_order(path, headers, body)
        if path == self._directory_path:
            headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
            return self._directory(self._forward(method, path, headers, body))
        reply = self._forward(method, path, headers, body)
        if reply.status == 200 and any(
            k.lower() == "content-type" and v.startswith("application/pem-certificate-chain") for k, v in reply.headers
        ):
            with self._lock:
                self.certificates.append(reply.body)
        return self._maybe_processing(reply)

    def _renewal_info(self, method: str, cert_id: str) -> _Reply:
        if method != "GET":
            return _problem(405, "urn:ietf:params:acme:error:malformed", "renewalInfo is fetched with GET")
        with self._lock:
            self.ari_requests.append(cert_id)
            if cert_id not in self._answers and self._next_answer is not None:
                self._answers[cert_id], self._next_answer = self._next_answer, None
            answer = self._answers.get(cert_id) or self._answers.get(None)
        if answer is None:
            return _problem(404, "urn:ietf:params:acme:error:malformed", f"no renewal information for {cert_id}")
        status, raw, headers = answer
        return _Reply(status, list(headers.items()), raw)

    def _new_order(self, path: str, headers: list[tuple[str, str]], body: bytes) -> _Reply:
        payload = _jws_payload(body)
        with self._lock:
            refused = payload.get("replaces") in self._replaced
            gates = list(self._gates)
        if refused:
            reply = self._already_replaced(headers)
        else:
            for gate in gates:
                gate.arrived.set()
                gate.released.wait()
            reply = self._forward("POST", path, headers, body)
        if not (reply.status == 400 and b"badNonce" in reply.body):  # Pebble refuses some nonces; the client retries
            with self._lock:
                self.new_order_payloads.append(payload)
        return reply

    def _already_replaced(self, headers: list[tuple[str, str]]) -> _Reply:
        reply = _problem(409, ALREADY_REPLACED, "the certificate named in replaces has already been replaced")
        if self._new_nonce_path is not None:  # a fresh nonce, as a CA sends with every answer
            nonce = self._forward("HEAD", self._new_nonce_path, headers, b"")
            reply.headers += [(k, v) for k, v in nonce.headers if k.lower() == "replay-nonce"]
        return reply

    def _directory(self, reply: _Reply) -> _Reply:
        directory = json.loads(reply.body)
        self._new_order_path = urlsplit(directory["newOrder"]).path
        self._new_nonce_path = urlsplit(directory["newNonce"]).path
        if self.ari:
            directory["renewalInfo"] = self.renewal_info_url
        return _Reply(reply.status, reply.headers, json.dumps(directory).encode())

    def _maybe_processing(self, reply: _Reply) -> _Reply:
        if reply.status != 200 or b'"certificate"' not in reply.body:
            return reply
        order = json.loads(reply.body)
        with self._lock:
            if order.get("status") != "valid" or self._processing <= 0:
                return reply
            self._processing -= 1
        order["status"] = "processing"
        order.pop("certificate")
        return _Reply(reply.status, reply.headers, json.dumps(order).encode())

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> _Reply:
        host, port = self._upstream
        conn = http.client.HTTPSConnection(host, port, context=self._upstream_context, timeout=_UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or method in ("POST", "PUT"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            return _Reply(response.status, response.getheaders(), data)
        except OSError as exc:
            return _problem(502, "urn:ietf:params:acme:error:serverInternal", f"Pebble unreachable: {exc}")
        finally:
            conn.close()


class _Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"]
        self.body = body


def _problem(status: int, problem_type: str, detail: str) -> _Reply:
    body = json.dumps({"type": problem_type, "detail": detail, "status": status}).encode()
    return _Reply(status, [("Content-Type", "application/problem+json")], body)


def _jws_payload(body: bytes) -> dict[str, object]:
    """The JSON payload of a flattened JWS (``{}`` for POST-as-GET or anything unreadable)."""
    try:
        encoded = json.loads(body)["payload"]
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        payload = json.loads(decoded) if decoded else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return payload if isinstance(payload, dict) else {}


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins them
    block_on_close = True

    def __init__(self, proxy: AriProxy) -> None:
        self.proxy = proxy
        super().__init__((LOOPBACK, 0), _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        conn, address = super().get_request()
        # The handshake happens in the handler's thread: a stalled client never blocks accept().
        tls = self.proxy._server_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        self.proxy._track(tls, True)
        return tls, address

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        self.proxy._track(request, False)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    server: _Server

    def handle(self) -> None:
        with suppress(OSError):  # a failed handshake, a client gone, or the proxy stopping
            self.connection.do_handshake()  # type: ignore[attr-defined]
            super().handle()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.proxy._handle(self.command, self.path, list(self.headers.items()), body)
        self.send_response_only(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)
        self.wfile.flush()

    do_GET = do_POST = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass
