"""A connected pair of TCP sockets on 127.0.0.1: a trio client, and the accepted end as snakeway wraps it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from snakeway.tcp import TcpStream


@asynccontextmanager
async def accepted_pair() -> AsyncIterator[tuple[trio.SocketStream, TcpStream]]:
    """(client, server): the server end is a :class:`TcpStream` made as the accept loop makes it; both closed after."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    server = TcpStream.accepted(accepted)
    client_stream = trio.SocketStream(client)
    try:
        yield client_stream, server
    finally:
        await client_stream.aclose()
        await server.aclose()
