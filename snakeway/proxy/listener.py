"""What every connection on one listener shares: the configuration to read, the shutdown signal, challenges.

A :class:`ListenerContext` is made once per listener by the server and handed
to each of its connections; :class:`Drain` is the server's, shared by all
listeners, and tells connections that shutdown has begun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from snakeway.listeners import ListenerKey, ListenerSpec
from snakeway.proxy.deadlines import Deadlines
from snakeway.proxy.runtime import Runtime, Shared


class Drain:
    """Tells connections that the server is shutting down.

    Connections waiting idle between requests are closed at once; those in a
    request finish it and then close. A connection registers its
    :class:`~snakeway.proxy.deadlines.Deadlines` once, for its whole life, and
    says when it is idle with their ``idle`` flag: nothing is done per request.
    """

    def __init__(self) -> None:
        self.closing = False
        self._connections: set[Deadlines] = set()

    def add(self, deadlines: Deadlines) -> None:
        """Close the connection of ``deadlines`` on shutdown if it is idle then, until :meth:`remove`.

        A connection that becomes idle after shutdown began looks at :attr:`closing` first.
        """
        self._connections.add(deadlines)

    def remove(self, deadlines: Deadlines) -> None:
        self._connections.discard(deadlines)

    def close(self) -> None:
        self.closing = True
        for deadlines in self._connections:
            if deadlines.idle:
                deadlines.cancel()


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
