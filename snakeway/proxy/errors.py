"""How a request's handling fails: the exceptions the connection maps to a reply or a close."""

from __future__ import annotations

from snakeway.errors import SnakewayError


class RequestFailed(SnakewayError):
    """The request failed in a way the client should hear about as ``status``.

    Attributes:
      status: the status of the error response (404, 408, 413, 502, 504, ...).
      reason: what failed, for the log and the response body.
      headers: extra response headers (``Upgrade`` on a 426).
    """

    def __init__(self, status: int, reason: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class ClientGone(SnakewayError):
    """The client hop failed; the connection is to be closed without a reply."""
