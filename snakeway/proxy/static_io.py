"""Static files over an :class:`~snakeway.proxy.h11io.H11Stream`: the I/O half.

:func:`snakeway.proxy.static.plan_static` decides; this module carries the plan
out. Filesystem calls (planning and ``open``, in one trip; ``pread``) run in worker
threads via ``trio.to_thread.run_sync`` so a slow disk never blocks the event loop. A file
body is streamed ``CHUNK_SIZE`` bytes at a time, so memory stays bounded
whatever the file size; the response head goes out in the same write as the
first chunk (and the end of the message too, when the file fits in it). A
client that stops reading is dropped, and its file closed, within the send
timeout, which the client's transport applies (:class:`snakeway.tcp.TcpStream`).

Over plain TCP the body is not read by snakeway at all: the kernel copies it
from the file to the socket (``sendfile``, :meth:`TcpStream.send_file`), the
head leaving in the same segment as its first bytes. h11 still accounts for
it: the body goes through h11's Content-Length writer as a placeholder of
its length (h11's ``send_with_data_passthrough``), so a body that does not
match the head's length is still refused. TLS connections read and write.
"""

from __future__ import annotations

import logging
import os
import stat
from functools import partial

import h11
import trio

from snakeway.config.model import StaticSite
from snakeway.proxy.h11io import H11Stream, current_date, reason_phrase
from snakeway.proxy.headers import pairs
from snakeway.proxy.static import Reply, SendFile, error_reply, plan_static, split_target
from snakeway.tcp import TcpStream

logger = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024

# O_NOFOLLOW: the plan's path is fully resolved, so a symlink there now is a swap
# made after planning. O_NONBLOCK: opening a FIFO swapped in must not hang a thread.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


async def serve_static(h11s: H11Stream, site: StaticSite, request: h11.Request, target: bytes) -> int:
    """Answer ``request`` from ``site`` and return the status code sent.

    The caller has read only the ``h11.Request`` event; draining any request
    body afterwards, and headers such as ``Server`` or ``Date``, are its job.

    Args:
      h11s: the downstream connection, server role, ready to send a response.
      site: the static site whose route matched ``request``.
      request: the request being answered.
      target: its origin-form target as routed (normalised, see
        :func:`snakeway.proxy.strict.request_target`).

    Returns:
      The status code of the response sent, for the access log.

    Raises:
      trio.BrokenResourceError: the transport failed, or the file shrank while
        its body was being sent, so the response is truncated. Either way the
        connection cannot be reused; h11's state is already ``ERROR``.

    Resource handling:
      The file is opened and closed here; the stream stays open.
    """
    path, query = split_target(target)
    plan, opened = await trio.to_thread.run_sync(
        partial(_plan_and_open, site, request.method, path, pairs(request.headers), query)
    )
    head_only = request.method == b"HEAD"
    if isinstance(plan, SendFile):
        assert opened is not None
        return await _send_file(h11s, plan, opened, head_only=head_only)
    return await _send_reply(h11s, plan, head_only=head_only)


def _plan_and_open(
    site: StaticSite, method: bytes, path: str, headers: list[tuple[bytes, bytes]], query: str
) -> tuple[Reply | SendFile, tuple[int, int] | OSError | None]:
    """The plan and, for a file, the file opened (``(fd, size)``, or why it could not be): one trip to a
    worker thread per request, which costs more than most small responses."""
    plan = plan_static(site, method, path, headers, query=query)
    if not isinstance(plan, SendFile):
        return plan, None
    try:
        return plan, _open_regular(plan.path)
    except OSError as exc:
        return plan, exc


async def _send_reply(h11s: H11Stream, reply: Reply, *, head_only: bool) -> int:
    # own: the listener's Strict-Transport-Security
    headers = [*reply.headers, (b"date", current_date()), *h11s.own_headers]
    events: list[h11.Event] = [
        h11.Response(status_code=reply.status, headers=headers, reason=reason_phrase(reply.status))
    ]
    if reply.body and not head_only:
        events.append(h11.Data(data=reply.body))
    events.append(h11.EndOfMessage())
    await h11s.send(*events)
    return reply.status


async def _send_file(h11s: H11Stream, plan: SendFile, opened: tuple[int, int] | OSError, *, head_only: bool) -> int:
    # The file may have changed since planning; nothing is sent until it is open.
    if isinstance(opened, PermissionError):
        return await _send_reply(h11s, error_reply(403), head_only=head_only)
    if isinstance(opened, OSError):
        logger.debug("static file %s vanished before it was sent: %s", plan.path, opened)
        return await _send_reply(h11s, error_reply(404), head_only=head_only)
    fd, size = opened
    try:
        if size < plan.start + plan.length:
            logger.warning("static file %s shrank between stat and open", plan.path)
            return await _send_reply(h11s, error_reply(500), head_only=head_only)
        headers = [*plan.headers, (b"date", current_date()), *h11s.own_headers]
        response = h11.Response(status_code=plan.status, headers=headers, reason=reason_phrase(plan.status))
        if head_only or plan.length == 0:
            await h11s.send(response, h11.EndOfMessage())
            return plan.status
        if type(h11s.stream) is TcpStream:  # plain TCP: the kernel copies the file
            return await _send_file_by_kernel(h11s, h11s.stream, plan, fd, response)
        pending: list[h11.Event] = [response]
        offset, remaining = plan.start, plan.length
        while remaining:
            chunk = await trio.to_thread.run_sync(os.pread, fd, min(CHUNK_SIZE, remaining), offset)
            if not chunk:
                return await _file_shrank(h11s, plan, head_sent=not pending)
            offset += len(chunk)
            remaining -= len(chunk)
            pending.append(h11.Data(data=chunk))
            if not remaining:
                pending.append(h11.EndOfMessage())
            await h11s.send(*pending)
            pending = []
        return plan.status
    finally:
        os.close(fd)


class _FileBody:
    """Stands for ``length`` bytes of a file in an ``h11.Data`` event: h11 counts them, never reads them."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


async def _send_file_by_kernel(
    h11s: H11Stream, tcp: TcpStream, plan: SendFile, fd: int, response: h11.Response
) -> int:
    """The response to ``plan``, its body copied from ``fd`` by the kernel."""
    head = h11s.encode([response])
    conn = h11s.conn
    # The whole message through h11 first, the body as its length: Content-Length is checked as for bytes.
    body = _FileBody(plan.length)
    framed: list[object] | None = conn.send_with_data_passthrough(h11.Data(data=body))  # type: ignore[arg-type,assignment]
    assert framed == [body], "a file's response is framed by its Content-Length: the body is written as it is"
    conn.send(h11.EndOfMessage())
    h11s.sent += len(head) + plan.length
    try:
        sent = await tcp.send_file(head, fd, plan.start, plan.length)
    except BaseException:
        conn.send_failed()
        raise
    if sent < plan.length:
        h11s.sent -= plan.length - sent
        return await _file_shrank(h11s, plan, head_sent=True)
    return plan.status


async def _file_shrank(h11s: H11Stream, plan: SendFile, *, head_sent: bool) -> int:
    logger.warning("static file %s shrank while being sent", plan.path)
    if not head_sent:
        return await _send_reply(h11s, error_reply(500), head_only=False)
    # Content-Length is promised and cannot be kept: the only honest move is to
    # break the connection, which the caller already does for a failed write.
    h11s.conn.send_failed()
    raise trio.BrokenResourceError(f"static file {plan.path} shrank mid-response")


def _open_regular(path: str) -> tuple[int, int]:
    """Open ``path`` read-only if it is still a regular file: (fd, size)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(path)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size

