"""The order lane: at most N orders at a CA at once, the most urgent first.

Theory of operation
-------------------
Each certificate's task asks for a *turn* before it opens an order, giving its urgency (a sort key from
:func:`snakeway.acme.timing.urgency`: missing or expired certificates first, then the nearest renewal
moment). While fewer than ``capacity`` turns are taken, a turn is granted at once. Otherwise the task
waits in a heap ordered by (urgency, arrival), and each turn given back goes to the head of the heap. So
40 new names at start-up make 4 orders at a time, in the order of need, and a name added later is ordered
as soon as one of them finishes, instead of behind every request of every other certificate.

ARI polls do not take turns: they go through their own :class:`trio.CapacityLimiter` in the manager, so a
CA answering slowly to thousands of ARI polls never delays an issuance.

A waiter cancelled while queued leaves the heap; a waiter cancelled after its turn was handed to it gives
the turn on, so no turn is ever lost.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from typing import Any, final

import trio


@final
class OrderLane:
    """A fair, urgency-ordered semaphore for orders at one CA.

    Args:
        capacity: Orders that may run at once (``acme.max_concurrent_orders``).

    Raises:
        ValueError: ``capacity`` < 1.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self.capacity = capacity
        self.running = 0
        self._waiting: list[tuple[Any, int, trio.Event]] = []
        self._arrivals = itertools.count()

    @property
    def queued(self) -> int:
        """Tasks waiting for a turn."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self, urgency: Any) -> AsyncIterator[None]:
        """Wait for a turn (lower ``urgency`` first, then first come), hold it for the block."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.running < self.capacity and not self._waiting:
            self.running += 1
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._wait(urgency)
        try:
            yield
        finally:
            self._hand_on()

    async def _wait(self, urgency: Any) -> None:
        granted = trio.Event()
        entry = (urgency, next(self._arrivals), granted)
        heapq.heappush(self._waiting, entry)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():  # the turn was ours already: pass it on
                self._hand_on()
            else:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def _hand_on(self) -> None:
        """Give a finished turn to the most urgent waiter, or free it."""
        if self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            granted.set()  # ``running`` stays: the turn changes hands
        else:
            self.running -= 1
