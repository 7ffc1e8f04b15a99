"""Bearer tokens of the admin listener: reading the token file, and the decision on each request. Pure.

The token file holds one token per line (blank lines are ignored, as is white space around a token). A token
is at least :data:`MIN_TOKEN_BYTES` bytes of the characters RFC 6750 section 2.1 allows in a bearer token, so
that it can travel in an ``Authorization`` header as written. A request is authorized when its
``Authorization: Bearer <token>`` matches one of them; every token is compared, each in constant time
(:func:`hmac.compare_digest`), so the time taken does not tell how much of a guess was right nor which token
it came close to.
"""

from __future__ import annotations

import hmac
import re

MIN_TOKEN_BYTES = 32
REALM = b'Bearer realm="snakeway-admin"'
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*\Z")
_BEARER = re.compile(rb"bearer +", re.IGNORECASE)


def parse_tokens(data: bytes) -> tuple[bytes, ...]:
    """The tokens of a token file's contents.

    Raises:
      ValueError: a line is not a token, or a token is too short (the message names the line, never the
        token); or the file holds no token.
    """
    tokens: list[bytes] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        line = raw.strip(b" \t\r\n")
        if not line:
            continue
        if not _B64TOKEN.match(line):
            raise ValueError(f"line {number}: a token may only hold letters, digits and - . _ ~ + / (then =)")
        if len(line) < MIN_TOKEN_BYTES:
            raise ValueError(f"line {number}: a token must be at least {MIN_TOKEN_BYTES} bytes, this one has "
                             f"{len(line)}")
        tokens.append(line)
    if not tokens:
        raise ValueError(f"no token in the file (one per line, each at least {MIN_TOKEN_BYTES} bytes)")
    return tuple(tokens)


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None if it is not one."""
    if authorization is None:
        return None
    scheme = _BEARER.match(authorization)
    if scheme is None:
        return None
    token = authorization[scheme.end():].rstrip(b" \t")
    return token if _B64TOKEN.match(token) else None


def authorized(authorization: bytes | None, tokens: tuple[bytes, ...]) -> bool:
    """Whether the ``Authorization`` header value carries one of ``tokens`` (all compared, in constant time)."""
    offered = bearer_token(authorization)
    if offered is None:
        return False
    found = False
    for token in tokens:
        found |= hmac.compare_digest(offered, token)
    return found
