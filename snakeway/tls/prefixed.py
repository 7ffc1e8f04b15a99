"""PrefixedStream: a stream that first replays bytes already read from it.

To decide what to do with a connection before the TLS handshake (is this plain HTTP? later: which ALPN does the
ClientHello ask for?), snakeway reads its first bytes itself. Wrapping the stream in a :class:`PrefixedStream`
hands those bytes back to the next reader (``trio.SSLStream``), as if they had never been read.
"""

from __future__ import annotations

import operator
from typing import final

import trio


@final
class PrefixedStream(trio.abc.Stream):
    """A :class:`trio.abc.Stream` whose ``receive_some`` returns ``prefix`` first, then delegates.

    Sending, ``wait_send_all_might_not_block`` and closing go straight to ``transport_stream``. Closing this
    stream closes the transport and drops whatever is left of the prefix.

    Args:
        transport_stream: The stream the prefix was read from.
        prefix: The bytes to replay (may be empty).
    """

    def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes | bytearray | memoryview = b"") -> None:
        self.transport_stream = transport_stream
        self._prefix = bytes(prefix)
        self._closed = False
        self._receiving = False

    @property
    def prefix_pending(self) -> int:
        """How many replayed bytes have not been received yet."""
        return len(self._prefix)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            if not self._prefix:
                return await self.transport_stream.receive_some(max_bytes)
            await trio.lowlevel.checkpoint()
            if self._closed:  # closed by another task during the checkpoint
                raise trio.ClosedResourceError("this stream was closed")
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._closed = True
        self._prefix = b""
        await self.transport_stream.aclose()
