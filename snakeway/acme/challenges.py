"""HTTP-01 tokens of orders in flight, answered by plain-HTTP listeners.

The CertManager adds a token before it tells the CA the challenge is ready
and removes it when the authorization is settled; a listener asks for the
key authorization of ``/.well-known/acme-challenge/<token>`` (RFC 8555
section 8.3). TLS-ALPN-01's counterpart is
:class:`snakeway.acme.tlsalpn.TlsAlpnChallenges`.
"""

from __future__ import annotations

from snakeway.acme.coordination import Coordinator


def http01_key(token: str) -> str:
    return f"http-01:{token}"


class Http01Tokens:
    """Tokens of this process's orders, and those of other processes sharing the store.

    Args:
      shared: where other processes (workers, other nodes) publish their
        tokens; None when this process is the only one.
    """

    def __init__(self, shared: Coordinator | None = None) -> None:
        self._tokens: dict[str, str] = {}
        self.shared = shared

    def add(self, token: str, key_authorization: str) -> None:
        self._tokens[token] = key_authorization

    def remove(self, token: str) -> None:
        self._tokens.pop(token, None)

    async def key_authorization(self, token: str) -> str | None:
        answer = self._tokens.get(token)
        if answer is None and self.shared is not None:
            answer = await self.shared.get_challenge(http01_key(token))
        return answer

    def __len__(self) -> int:
        return len(self._tokens)
