"""The rate-limit budget every worker spends from: the ledger in the store, under one lock (a thin shell).

Theory of operation
-------------------
:mod:`snakeway.acme.budget` decides (purely) whether an order fits the CA's limits; :class:`SharedBudget`
gives that decision one ledger per CA account, read and written under the budget lock, in this process
(a :class:`trio.Lock`) and across workers (the coordinator's lock, polled), so that two workers can
never both spend the last order of a bucket. Three events are written: a new order (before it is
made), a failed validation of each name, and a certificate issued.

Orders this worker is running count as issued while they run (see :meth:`SharedBudget.spend_order`); another
worker's show up once recorded. A ledger that cannot be written refuses the order (and says so): a budget that
cannot be kept cannot be promised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta

import trio

from snakeway.acme import budget
from snakeway.acme.coordination import Coordinator
from snakeway.acme.store import CertStore, StoreError
from snakeway.clock import WallClock
from snakeway.config.model import AcmeSettings

logger = logging.getLogger("snakeway.acme.manager")

# The lock under which the ledger is read and written (not a valid host name).
BUDGET_LOCK = "acme-budget.lock"
# How often a worker looks again for the budget lock another worker holds.
LOCK_POLL_SECONDS = 0.05
# When the ledger cannot be written, an order waits this long before asking again.
UNWRITABLE_RETRY = timedelta(minutes=1)
# When only this worker's orders in flight fill a bucket, an order waits this long before asking again.
IN_FLIGHT_RETRY = timedelta(minutes=1)


class SharedBudget:
    """Spends from, and records in, the ledger of one CA account.

    Args:
      acme: ``tls_automation.acme`` (its ``directory_url`` names the ledger, its ``rate_limits`` size it).
      store: where the ledger is kept.
      coordinator: the lock shared with the other workers.
      clock: wall time.
    """

    def __init__(self, *, acme: AcmeSettings, store: CertStore, coordinator: Coordinator, clock: WallClock) -> None:
        self.limits = budget.RateLimits(**dataclasses.asdict(acme.rate_limits))
        self.directory_url = acme.directory_url
        self.store = store
        self.coordinator = coordinator
        self.clock = clock
        self._lock = trio.Lock()
        self._in_flight: list[tuple[tuple[str, ...], bool]] = []  # (names, renewal) of orders running here

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[budget.Ledger]:
        """Hold the budget lock (in this process and across workers) and yield the ledger."""
        async with self._lock:
            while True:
                async with self.coordinator.lock(BUDGET_LOCK) as mine:
                    if mine:
                        ledger = await self.store.load_ledger(self.directory_url)
                        yield ledger or budget.Ledger()
                        return
                await trio.sleep(LOCK_POLL_SECONDS)

    async def spend_order(self, names: Iterable[str], *, renewal: bool) -> datetime | None:
        """Spend one new order for ``names``: None if spent, else when the budget will allow it.

        A spent order is *in flight* until :meth:`landed`: its certificate counts as issued already, so
        that several orders running at once cannot together pass a per-certificate bucket (50 new
        certificates of one registered domain a week) that each alone would fit.
        """
        names = tuple(names)
        try:
            async with self._held() as ledger:
                now = self.clock.now()
                when = budget.when_allowed(ledger, self.limits, names, now, renewal=renewal)
                if when is None and self._in_flight:
                    with_flights = ledger
                    for flight, flight_renewal in self._in_flight:
                        with_flights = budget.record_issued(with_flights, flight, now, renewal=flight_renewal)
                    if budget.when_allowed(with_flights, self.limits, names, now, renewal=renewal) is not None:
                        when = now + IN_FLIGHT_RETRY  # one of those orders may yet fail and leave room
                if when is None:
                    await self.store.save_ledger(self.directory_url, budget.spend_order(ledger, now))
                    self._in_flight.append((names, renewal))
                return when
        except StoreError as exc:
            logger.error("the rate-limit budget cannot be written (%s); not ordering for %s", exc, names[0])
            return self.clock.now() + UNWRITABLE_RETRY

    def landed(self, names: Iterable[str]) -> None:
        """The order for ``names`` spent with :meth:`spend_order` has ended (issued and recorded, or failed)."""
        names = tuple(names)
        for index, (flight, _) in enumerate(self._in_flight):
            if flight == names:
                del self._in_flight[index]
                return

    async def failed_validation(self, names: Iterable[str]) -> None:
        """Record that the CA could not validate ``names``."""
        names = tuple(names)
        await self._record(lambda ledger: budget.record_failed_validation(ledger, names, self.clock.now()))

    async def issued(self, names: Iterable[str], *, renewal: bool) -> None:
        """Record a certificate issued for ``names``."""
        names = tuple(names)
        await self._record(lambda ledger: budget.record_issued(ledger, names, self.clock.now(), renewal=renewal))

    async def _record(self, change: Callable[[budget.Ledger], budget.Ledger]) -> None:
        try:
            async with self._held() as ledger:
                await self.store.save_ledger(self.directory_url, change(ledger))
        except StoreError as exc:
            logger.error("could not record in the rate-limit budget: %s", exc)
