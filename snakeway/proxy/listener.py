"""What every connection on one listener shares: the configuration to read, the shutdown signal, challenges.

A :class:`ListenerContext` is made once per listener by the server and handed
to each of its connections; :class:`Drain` is the server's, shared by all
listeners, and tells connections that shutdown has begun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from snakeway.listeners import ListenerKey, ListenerSpec
from snakeway.proxy.runtime import Runtime, Shared


class Drain:
    """Tells connections that the server is shutting down.

    Connections waiting idle between requests are woken and close at once;
    those in a request finish it and then close.
    """

    def __init__(self) -> None:
        self.closing = False
        self._idle: set[trio.CancelScope] = set()

    def add_idle(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` on shutdown (at once if it has begun) until :meth:`remove_idle`.

        A pair of calls rather than a context manager: a connection waits
        idle once per request, and a generator-based context manager would
        cost more than the bookkeeping it wraps.
        """
        if self.closing:
            scope.cancel()
        self._idle.add(scope)

    def remove_idle(self, scope: trio.CancelScope) -> None:
        self._idle.discard(scope)

    def close(self) -> None:
        self.closing = True
        for scope in self._idle:
            scope.cancel()


class ChallengeAnswers(Protocol):
    """ACME HTTP-01: the key authorization for a token of an order in flight."""

    async def key_authorization(self, token: str) -> str | None: ...


class NoChallenges:
    async def key_authorization(self, token: str) -> str | None:
        return None


@dataclass(frozen=True)
class ListenerContext:
    """What every connection on one listener shares."""

    key: ListenerKey
    runtime: Callable[[], Runtime]
    shared: Shared
    drain: Drain
    challenges: ChallengeAnswers = field(default_factory=NoChallenges)

    @property
    def spec(self) -> ListenerSpec:
        return self.runtime().listeners[self.key]
