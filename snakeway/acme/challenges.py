"""HTTP-01 tokens of orders in flight, answered by plain-HTTP listeners.

The CertManager adds a token before it tells the CA the challenge is ready
and removes it when the authorization is settled; a listener asks for the
key authorization of ``/.well-known/acme-challenge/<token>`` (RFC 8555
section 8.3). TLS-ALPN-01's counterpart is
:class:`snakeway.acme.tlsalpn.TlsAlpnChallenges`.
"""

from __future__ import annotations


class Http01Tokens:
    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

    def add(self, token: str, key_authorization: str) -> None:
        self._tokens[token] = key_authorization

    def remove(self, token: str) -> None:
        self._tokens.pop(token, None)

    def key_authorization(self, token: str) -> str | None:
        return self._tokens.get(token)

    def __len__(self) -> int:
        return len(self._tokens)
