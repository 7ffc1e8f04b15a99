"""Listening sockets for the listeners of a configuration.

A listener's sockets are bound when a configuration is prepared (at start-up, or by a reload that adds the
listener) and handed as plain sockets to the accept loop (:mod:`snakeway.accept`), which owns them from then
on. With several workers (see :mod:`snakeway.supervisor`) every worker binds the same port with
``SO_REUSEPORT`` and the kernel spreads new connections across them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import trio

from snakeway.errors import SnakewayError
from snakeway.listeners import ListenerSpec


class ListenError(SnakewayError, OSError):
    """A listener's port cannot be bound: ``key`` and ``url`` say which listener, ``reason`` why."""

    def __init__(self, errno: int | None, spec: ListenerSpec, reason: str) -> None:
        super().__init__(errno, f"cannot listen on {spec.url()}: {reason}")
        self.key = spec.key
        self.url = spec.url()
        self.reason = reason


async def bind(spec: ListenerSpec, *, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets for ``spec``: one per address of its interface, or one shared port (``reuse_port``).

    Raises:
      ListenError: the port cannot be bound; the message names the listener.
    """
    try:
        if reuse_port:
            return [await _reuse_port_listener(spec.interface, spec.port)]
        listeners = await trio.open_tcp_listeners(spec.port, host=spec.interface)
        return [socket.socket(fileno=listener.socket.detach()) for listener in listeners]
    except OSError as exc:
        raise ListenError(exc.errno, spec, exc.strerror or str(exc)) from exc


def close_all(bound: Iterable[list[socket.socket]]) -> None:
    """Close sockets no accept loop took over (a reload that failed)."""
    for sockets in bound:
        for sock in sockets:
            sock.close()


async def _reuse_port_listener(interface: str, port: int) -> socket.socket:
    """A listening socket that other worker processes bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind((interface, port))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return socket.socket(fileno=sock.detach())
