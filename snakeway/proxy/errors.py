"""How a request's handling fails: the exceptions the connection maps to a reply or a close."""

from __future__ import annotations


class ProxyError(Exception):
    """The exchange failed in a way the client should hear about as ``status``."""

    def __init__(self, status: int, reason: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class ClientGone(Exception):
    """The client hop failed; the connection is to be closed without a reply."""
