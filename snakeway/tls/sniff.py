"""What the first bytes of a connection to a TLS port are: pure, no I/O.

A TLS connection starts with a handshake record (content type 22, byte ``0x16``). A plain HTTP client that was
given the wrong port starts with a request line: an upper-case method and a space. Like nginx, snakeway answers
the latter with a clear-text ``400`` saying that the port speaks HTTPS, instead of a TLS alert the user's
browser or curl would report as gibberish. Anything else goes to the TLS handshake, which fails and is dropped.
"""

from __future__ import annotations

import enum
import re

TLS_HANDSHAKE_RECORD = 0x16
# Longest method we wait for ("PROPPATCH", "MKCALENDAR", with room); after that, a space must have come.
MAX_METHOD_BYTES = 20

_METHOD = re.compile(rb"[A-Z]{1,%d}" % MAX_METHOD_BYTES)

_BODY = b"this port speaks HTTPS: use https:// in the URL\n"
HTTPS_REQUIRED_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + _BODY
)


class FirstBytes(enum.Enum):
    """The verdict on a connection's first bytes."""

    TLS = "tls"              # a TLS handshake record: go ahead with the handshake
    PLAIN_HTTP = "http"      # an HTTP request line: answer HTTPS_REQUIRED_RESPONSE and close
    OTHER = "other"          # neither: let the handshake fail
    NEED_MORE = "need_more"  # too few bytes to tell: read more


def classify(prefix: bytes) -> FirstBytes:
    """Classify the first bytes read from a connection.

    :attr:`FirstBytes.NEED_MORE` is only returned while ``prefix`` is empty or is a plausible method without
    its space yet (at most :data:`MAX_METHOD_BYTES` bytes), so a reader asking for more is bounded.
    """
    if not prefix:
        return FirstBytes.NEED_MORE
    if prefix[0] == TLS_HANDSHAKE_RECORD:
        return FirstBytes.TLS
    method = _METHOD.match(prefix)
    if method is None:
        return FirstBytes.OTHER
    end = method.end()
    if end == len(prefix):
        return FirstBytes.NEED_MORE if end < MAX_METHOD_BYTES else FirstBytes.OTHER
    return FirstBytes.PLAIN_HTTP if prefix[end : end + 1] == b" " and end >= 3 else FirstBytes.OTHER
