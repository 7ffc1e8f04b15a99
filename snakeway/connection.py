"""One accepted connection, from its socket to the end of its last request.

The accept loop (:mod:`snakeway.accept`) calls :func:`handle` in a task of its own for every connection, bound
to the listener's pieces with a positional :func:`functools.partial` made once per listener: no allocation per
connection beyond the connection's own objects. This is the per-connection error boundary: a bug in one
connection is logged and ends that connection only.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import trio

from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.proxy.http1 import Http1Connection
from snakeway.proxy.listener import ListenerContext
from snakeway.tcp import TcpStream
from snakeway.tls.handshake import accept_tls

logger = logging.getLogger("snakeway")


async def handle(
    ctx: ListenerContext,
    tls_context: ssl.SSLContext | None,
    challenges: TlsAlpnChallenges,
    sock: socket.socket,
    peer: Any,
) -> None:
    """Serve the connection ``sock`` accepted from ``peer`` on the listener ``ctx`` (TLS if ``tls_context``)."""
    # The send timeout is the configuration's when the connection is accepted, for its whole
    # life, as are the connection's other client settings (Http1Connection).
    stream = TcpStream.accepted(sock, send_timeout=ctx.runtime().config.server.client.send_timeout_seconds)
    try:
        await _serve(stream, peer, ctx, tls_context, challenges)
    finally:
        stream.socket.close()  # usually closed already; never waits, whatever state we are in


async def _serve(
    stream: TcpStream, peer: Any, ctx: ListenerContext, tls_context: ssl.SSLContext | None,
    challenges: TlsAlpnChallenges,
) -> None:
    try:
        # accept()'s address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
        client_ip, client_port = (peer[0], peer[1]) if isinstance(peer, tuple) else (str(peer), 0)
        transport: trio.abc.Stream = stream
        if tls_context is not None:
            tls_stream = await accept_tls(
                stream,
                tls_context,
                timeout=ctx.spec.handshake_timeout,
                client=f"{client_ip}:{client_port}",
                challenges=challenges,
                counts=ctx.shared.counters.handshakes,
            )
            if tls_stream is None:
                return
            transport = tls_stream
        await Http1Connection(transport, ctx, client_ip).run()
    except Exception:  # the per-connection error boundary; Cancelled passes
        logger.exception("connection handler crashed")
