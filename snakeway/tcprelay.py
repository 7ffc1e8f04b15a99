"""One direction of a tunnel between two TcpStreams, at one trip through trio's scheduler per chunk.

:func:`relay` copies one direction of a tunnel between two streams (a
WebSocket's, plain TCP on both sides) at one trip through trio's scheduler
per chunk, where ``receive_some`` then ``send_all`` would cost two. A round
waits for the source to be readable, reads, and writes what it read; a
write the kernel takes at once (nearly all of them) needs no schedule point
of its own, the next round's wait being one. A read that filled the buffer
says more bytes may be waiting: the next round reads without waiting, and
such a round that did not wait at all ends with a checkpoint, so a
direction that is always ready still lets every other task run. A write
the kernel does not take whole finishes as :meth:`TcpStream.send_all`,
under the destination's send timeout. The read buffer is one per thread,
shared by every relay: nothing is allocated per chunk, and a tunnel holds
no buffer of its own while it waits; only the rest of a write that blocks
is copied out of it, before the wait.
"""

from __future__ import annotations

import threading

import trio

from snakeway.tcp import TcpStream


class Traffic:
    """When bytes last moved through a tunnel (trio's clock), noted by :func:`relay` once per chunk.

    Attributes:
      moved: the time of the last chunk read from one side or written to the other.
    """

    __slots__ = ("moved",)

    def __init__(self, moved: float) -> None:
        self.moved = moved


RELAY_BUFFER_SIZE = 128 * 1024
_relay_buffers = threading.local()


def _relay_buffer() -> bytearray:
    """This thread's read buffer for :func:`relay` (trio runs a loop in one thread)."""
    buffer: bytearray | None = getattr(_relay_buffers, "buffer", None)
    if buffer is None:
        buffer = _relay_buffers.buffer = bytearray(RELAY_BUFFER_SIZE)
    return buffer


async def relay(src: TcpStream, dst: TcpStream, traffic: Traffic) -> None:
    """Copy bytes from ``src`` to ``dst`` until ``src`` ends; notes each chunk in ``traffic``.

    Returns at ``src``'s end of stream, having sent ``dst`` everything before it
    (and no EOF: what to do next is the caller's choice). The streams stay open.

    Raises:
      SendTimeout: ``dst`` took no byte for its send timeout.
      trio.BrokenResourceError: either connection failed.
      trio.ClosedResourceError: either stream was closed, or ``dst`` had sent EOF.
    """
    if dst._eof_sent:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    sock_in, sock_out = src._sock, dst._sock
    fd_in = sock_in.fileno()  # what trio's wait takes first: an int is not asked for its fileno()
    buffer = _relay_buffer()
    view = memoryview(buffer)
    size = len(buffer)
    clock = trio.lowlevel.current_clock()
    wait_readable = trio.lowlevel.wait_readable
    ready = True  # bytes may be waiting: read before waiting
    while True:
        waited = not ready
        if waited:
            await wait_readable(fd_in)  # the round's schedule point, and a cancel point
        try:
            n = sock_in.recv_into(buffer)
        except BlockingIOError:
            ready = False
            continue
        except OSError as exc:
            raise src._translate(exc) from exc
        if not n:
            return
        try:
            sent = sock_out.send(view[:n] if n < size else view)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise dst._translate(exc) from exc
        if sent < n:
            traffic.moved = clock.current_time()
            await dst.send_all(view[sent:n].tobytes())  # copied first: other relays share the buffer
            waited = True
        traffic.moved = clock.current_time()
        ready = n == size
        if not waited:
            await trio.lowlevel.checkpoint()
