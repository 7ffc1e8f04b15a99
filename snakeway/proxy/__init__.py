"""The HTTP/1.1 proxy: a client connection's requests routed, forwarded or answered.

Modules, from the bottom up:

* :mod:`~snakeway.proxy.errors`: ``RequestFailed`` (an error response) and ``ClientGone`` (close, no reply).
* :mod:`~snakeway.proxy.headers` (pure): header rewriting between the two hops.
* :mod:`~snakeway.proxy.strict` (pure): what a request must be for upstreams to read it as we do; ``Target``.
* :mod:`~snakeway.proxy.routing` (pure): which route a request belongs to.
* :mod:`~snakeway.proxy.balance` (pure): which upstream a request tries first; passive ``Health``.
* :mod:`~snakeway.proxy.validators` (pure): conditional requests and byte ranges.
* :mod:`~snakeway.proxy.static` (pure) and :mod:`~snakeway.proxy.static_io`: static files.
* :mod:`~snakeway.proxy.upstream_wire` (pure): the upstream hop's HTTP/1.1 client: requests as bytes,
  responses parsed by llhttp (``UpstreamWire``).
* :mod:`~snakeway.proxy.h11io`: the client hop: an h11 connection glued to a trio stream (``H11Stream``).
* :mod:`~snakeway.proxy.pool`: keep-alive connections to upstreams (``UpstreamPool``).
* :mod:`~snakeway.proxy.request_body`: small request bodies read whole before connecting.
* :mod:`~snakeway.proxy.exchange`: one attempt's bytes between a client and an upstream connection, each wait timed.
* :mod:`~snakeway.proxy.forward`: one request forwarded (upstream choice, retry) and its response relayed back.
* :mod:`~snakeway.proxy.websocket` and :mod:`~snakeway.proxy.wscount`: WebSocket tunnels and their limits.
* :mod:`~snakeway.proxy.accesslog`: one line per request.
* :mod:`~snakeway.proxy.runtime`: the configuration compiled into what the request path reads.
* :mod:`~snakeway.proxy.listener`: what every connection on one listener shares.
* :mod:`~snakeway.proxy.http1`: a client connection, one request cycle after another.

docs/internals-proxy.md follows a request through them.
"""
