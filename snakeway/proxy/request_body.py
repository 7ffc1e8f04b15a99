"""Small request bodies, read whole before an upstream connection is taken.

Theory of operation
-------------------
A request body relayed as it arrives holds an upstream connection (and
whatever the upstream spends on it) for as long as the client takes to send
it: a client trickling a byte a second holds one for minutes, and a few
hundred such clients hold all of them. nginx holds none, since it reads
every body before it connects. snakeway does the same for bodies known to
be small: a ``Content-Length`` of at most ``buffer_request_body_bytes``, or a
chunked body that ends within that many bytes, is read in full first, each
read within the body timeout (408 when one is late), and the head and body
then leave for the upstream in one write. A larger body streams as before,
starting with what was read; what a slow client holds then is bounded by the
body timeout between two reads.

``Expect: 100-continue`` is answered when the body is about to be read, so a
client whose body is refused by its declared length (413) never sends it.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import trio

from snakeway.proxy.deadlines import Deadlines, Wait
from snakeway.proxy.errors import ClientGone, RequestFailed
from snakeway.proxy.h11io import H11Stream

CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")


@dataclass(frozen=True)
class ReadBody:
    """What was read of a request body before connecting.

    ``events`` are the body's ``h11.Data`` events, and an ``h11.EndOfMessage``
    last when ``complete``; ``size`` counts their bytes.
    """

    events: tuple[h11.Event, ...]
    size: int
    complete: bool


# A request without a body, read to its end: what a retried request resends after its head.
NO_BODY = ReadBody((h11.EndOfMessage(),), 0, True)


def read_first(declared: int | None, chunked: bool, buffer_bytes: int) -> bool:
    """Whether a body is read before connecting (the body's framing is from checked headers).

    Args:
      declared: the Content-Length, if any.
      chunked: the body is chunked (a Transfer-Encoding was sent).
      buffer_bytes: ``buffer_request_body_bytes``; 0 streams every body.
    """
    if chunked:
        return buffer_bytes > 0
    return declared is not None and 0 < declared <= buffer_bytes


# The timeout is per read (it restarts with each chunk), which a caller's cancel scope cannot express.
async def read_body(
    down: H11Stream, *, buffer_bytes: int, limit: int | None, timeout: float  # noqa: ASYNC109
) -> ReadBody:
    """Read the request body until it ends, or until more than ``buffer_bytes`` of it are in.

    Each read is armed on the connection's deadline (``down.deadlines``,
    :class:`~snakeway.proxy.deadlines.Deadlines`) as a ``CLIENT_READ`` wait:
    when one is late the connection's scope is cancelled and the connection
    answers 408. Outside a connection (``down.deadlines`` is None) the reads
    get a scope of their own and a late one raises the 408 here.

    Args:
      down: the client's connection; its request head has been read.
      buffer_bytes: read no further once more than this has arrived.
      limit: the route's ``max_body_bytes``.
      timeout: seconds allowed for each read (the client's body timeout).

    Raises:
      RequestFailed: 408 when a read ran out of time (outside a connection), 413 past ``limit``.
      ClientGone: the client closed the connection mid-body.
      h11.RemoteProtocolError: the body is malformed.
      trio.BrokenResourceError: the transport failed (also while sending 100 Continue).
    """
    deadlines = down.deadlines
    if deadlines is not None:
        return await _read(down, deadlines, buffer_bytes, limit, timeout)
    with trio.CancelScope() as scope:
        return await _read(down, Deadlines(scope), buffer_bytes, limit, timeout)
    raise RequestFailed(408, Wait.CLIENT_READ.reason)


async def _read(
    down: H11Stream, deadlines: Deadlines, buffer_bytes: int, limit: int | None, timeout: float  # noqa: ASYNC109
) -> ReadBody:
    conn = down.conn
    if conn.they_are_waiting_for_100_continue:
        # Armed first: a client that reads no 100 Continue sends no body either.
        deadlines.arm(Wait.CLIENT_READ, timeout)
        await down.send(CONTINUE)
    events: list[h11.Event] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            deadlines.arm(Wait.CLIENT_READ, timeout)
            data = await down.receive()
            if not data and conn.their_state is h11.SEND_BODY:
                raise ClientGone("client closed the connection mid-body")
            conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes a bytearray too
            continue
        if type(event) is h11.Data:
            size += len(event.data)
            if limit is not None and size > limit:
                raise RequestFailed(413, f"request body over the limit of {limit} bytes")
            events.append(event)
            if size > buffer_bytes:
                return ReadBody(tuple(events), size, complete=False)
        elif type(event) is h11.EndOfMessage:
            # Request trailers are dropped, as when a body streams.
            events.append(h11.EndOfMessage())
            return ReadBody(tuple(events), size, complete=True)
        else:
            raise ClientGone(f"unexpected event {event!r}")
