"""Session ticket keys shared by every context snakeway builds (and so by every worker: see test_workers)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme

from snakeway.tls.contexts import server_context
from tests.tlshelpers import client_context, write_leaf


@contextmanager
def tls_server(context: ssl.SSLContext) -> Iterator[int]:
    """A blocking TLS echo of one line per connection on a free port, in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(tls.recv(100))
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(5)
        assert not thread.is_alive()


def connect(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession, bool]:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname="a.test", session=session) as tls:
            tls.sendall(b"ping")
            assert tls.recv(100) == b"ping"  # TLS 1.3 tickets arrive after the handshake: read first
            assert tls.session is not None
            return tls.session, tls.session_reused


def test_a_session_from_one_context_resumes_on_another(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = write_leaf(ca, tmp_path, "a.test")
    client = client_context(ca.cert_pem.bytes())
    with tls_server(server_context(files.cert, files.key)) as one, tls_server(server_context(files.cert, files.key)) as two:
        session, reused = connect(one, client)
        assert not reused
        assert connect(two, client, session)[1]
        assert connect(one, client, session)[1]


def test_contexts_made_otherwise_do_not_resume_each_others_sessions(tmp_path: Path) -> None:
    """The control: what happens without shared keys (each context has OpenSSL's random ones)."""
    ca = trustme.CA()
    files = write_leaf(ca, tmp_path, "a.test")
    client = client_context(ca.cert_pem.bytes())

    def plain() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert, files.key)
        return context

    with tls_server(plain()) as one, tls_server(plain()) as two:
        session, _ = connect(one, client)
        assert not connect(two, client, session)[1]
