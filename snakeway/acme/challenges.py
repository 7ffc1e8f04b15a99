"""HTTP-01 tokens of orders in flight, answered by plain-HTTP listeners.

The CertManager adds a token before it tells the CA the challenge is ready
and removes it when the authorization is settled; a listener asks for the
key authorization of ``/.well-known/acme-challenge/<token>`` (RFC 8555
section 8.3). TLS-ALPN-01's counterpart is
:class:`snakeway.acme.tlsalpn.TlsAlpnChallenges`.

A token this process does not hold may belong to another process sharing
the store (a worker, another node): it is looked up there through
:class:`SharedAnswers`. Anyone can send requests for made-up tokens, and each
lookup costs the shared store a read (a Redis round trip), so only what can
be a CA's token is looked up, and only a few lookups run at once: the rest
are answered "not found" at once rather than queued.
"""

from __future__ import annotations

import logging
import re

import trio

from snakeway.acme.coordination import Coordinator

logger = logging.getLogger(__name__)

# A token is base64url of at least 128 bits of entropy (RFC 8555 section 8.3): 22 characters or more. No CA
# sends more than a few dozen; anything else cannot be one of ours and is not looked up.
TOKEN = re.compile(r"[A-Za-z0-9_-]{22,128}")
# Shared lookups in flight at once, per process: a CA validates a few names at a time, a flood of made-up
# tokens gets no more than this many store reads going.
SHARED_LOOKUPS = 8


def http01_key(token: str) -> str:
    return f"http-01:{token}"


class SharedAnswers:
    """Challenge answers other processes shared through ``shared``, read at most ``limit`` at a time.

    A lookup beyond ``limit`` answers None at once (logged once per burst): the validation it would
    have answered, if any, is one the CA retries.
    """

    def __init__(self, shared: Coordinator, limit: int = SHARED_LOOKUPS) -> None:
        self.shared = shared
        self._limiter = trio.CapacityLimiter(limit)
        self._refusing = False

    async def get(self, key: str) -> str | None:
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            if not self._refusing:
                logger.warning("too many challenge lookups at once (%d): answering the rest 'not found'",
                               self._limiter.total_tokens)
                self._refusing = True
            return None
        try:
            return await self.shared.get_challenge(key)
        finally:
            self._limiter.release()
            if self._limiter.borrowed_tokens == 0:
                self._refusing = False


class Http01Tokens:
    """Tokens of this process's orders, and those of other processes sharing the store.

    Args:
      shared: where other processes (workers, other nodes) publish their
        tokens; None when this process is the only one.
    """

    def __init__(self, shared: Coordinator | None = None) -> None:
        self._tokens: dict[str, str] = {}
        self.shared = SharedAnswers(shared) if shared is not None else None

    def add(self, token: str, key_authorization: str) -> None:
        self._tokens[token] = key_authorization

    def remove(self, token: str) -> None:
        self._tokens.pop(token, None)

    async def key_authorization(self, token: str) -> str | None:
        answer = self._tokens.get(token)
        if answer is None and self.shared is not None and TOKEN.fullmatch(token):
            answer = await self.shared.get(http01_key(token))
        return answer

    def __len__(self) -> int:
        return len(self._tokens)
