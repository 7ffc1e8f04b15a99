"""When a response body is spliced: moved by the kernel from the upstream's socket to the client's.

Relayed byte by byte, each read of a body becomes a Python ``bytes`` that
llhttp parses, h11 counts and the client's socket copies back into the
kernel. A body that is long enough, of a length known from its head, may
instead go from socket to socket through a pipe (``splice``, see
:meth:`snakeway.tcp.TcpStream.send_spliced`): nothing reaches Python, and
what a round costs no longer depends on how many bytes it moves. The wire
(:meth:`~snakeway.proxy.upstream_wire.UpstreamWire.body_moved`) and h11
(:meth:`~snakeway.proxy.h11io.H11Stream.send_spliced`) are told how many
bytes went past them, so the connection's reuse and the response's end are
decided as for a relayed body.

Only when both hops are plain TCP: a TLS client's bytes must pass through
its ``ssl`` object. Only a body framed by a Content-Length, for the client
too: a chunked body's framing must be read, and one that ends at the close
cannot say how much to move. Only for enough bytes: a splice costs a pipe's
round trip and a readability check more than the byte path. Measured in
instructions (``benchmarks.request_cost --kind big --bytes N``), a 100,000
byte body cost about the same either way, a 200,000 byte one 16 % less
spliced, a 400,000 byte one 31 % less.
"""

from __future__ import annotations

from snakeway.tcp import HAVE_SPLICE

# The least a body's rest (past what came with its head) must hold to be spliced (see above).
SPLICE_MIN_BYTES = 64 * 1024


def splice_count(body_left: int, client_left: int | None, *, plain_client: bool, tcp_upstream: bool) -> int:
    """How many bytes of the response body to splice now: 0 to relay them as bytes.

    Args:
      body_left: bytes of the upstream's Content-Length body still to come
        past those read (negative: not such a body).
      client_left: bytes the client's Content-Length still expects (None:
        the client's body is framed otherwise).
      plain_client: the client's transport is TCP without TLS.
      tcp_upstream: the upstream connection's transport is TCP.
    """
    if (
        body_left < SPLICE_MIN_BYTES
        or client_left != body_left
        or not plain_client
        or not tcp_upstream
        or not HAVE_SPLICE
    ):
        return 0
    return body_left
