"""The rate-limit budget every worker spends from: the ledger in the store, under one lock (a thin shell).

Theory of operation
-------------------
:mod:`snakeway.acme.budget` decides (purely) whether an order fits the CA's limits; :class:`SharedBudget`
gives that decision one ledger per CA account, read and written under the budget lock, in this process
(a :class:`trio.Lock`) and across workers (the coordinator's lock, polled), so that two workers can
never both spend the last order of a bucket. Four events are written: a new order with its certificate
reserved (before the order is made), a failed validation of each name, the certificate issued (settling
the reservation), and an order that ended without one (releasing it).

Orders in flight are in the ledger itself, as pending certificates (see :mod:`snakeway.acme.reservation`),
so every process and every node sharing the store counts every order running anywhere. This process
keeps only the handle of each reservation it made, to settle or release it. A release that cannot be
written (the store away, the lock out of reach for :data:`LAND_TIMEOUT`) is logged and leaves the pending
entry: it counts as a certificate issued once stale, which is stricter, never looser, than the CA.

A ledger that cannot be written refuses the order (and says so): a budget that cannot be kept cannot be
promised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta

import trio

from snakeway.acme import budget, reservation
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
# When orders in flight (of any process) fill a bucket, an order waits this long before asking again.
IN_FLIGHT_RETRY = timedelta(minutes=1)
# How long an order that ended tries to release its reservation (the order's own task is ending, maybe
# cancelled: this is shielded, so it is kept short).
LAND_TIMEOUT = 10.0


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
        # The reservation of each order this process is running, by its names (see _reservation).
        self._reserved: dict[tuple[str, ...], list[budget.Issued]] = {}

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

        A spent order is *in flight* until :meth:`issued` or :meth:`landed`: its certificate is reserved in
        the ledger, in the same write as the order, and counts as issued for every process, so that orders
        running at once on several nodes cannot together pass a per-certificate bucket (50 new certificates
        of one registered domain a week) that each alone would fit. When orders in flight fill a bucket,
        the answer is :data:`IN_FLIGHT_RETRY` away (one of them may fail), not the end of the window.
        """
        names = tuple(names)
        try:
            async with self._held() as ledger:
                now = self.clock.now()
                when = reservation.when_reservable(
                    ledger, self.limits, names, now, renewal=renewal, retry=IN_FLIGHT_RETRY
                )
                if when is None:
                    entry = reservation.reservation(names, now, renewal=renewal)
                    await self.store.save_ledger(self.directory_url, reservation.reserve(ledger, entry, now))
                    self._reserved.setdefault(entry.names, []).append(entry)
                return when
        except StoreError as exc:
            logger.error("the rate-limit budget cannot be written (%s); not ordering for %s", exc, names[0])
            return self.clock.now() + UNWRITABLE_RETRY

    def _reservation(self, names: Iterable[str]) -> budget.Issued | None:
        """Take the handle of this process's oldest reservation for ``names`` (None: it has none)."""
        key = budget.names_key(names)
        entries = self._reserved.get(key)
        if not entries:
            return None
        entry = entries.pop(0)
        if not entries:
            del self._reserved[key]
        return entry

    async def landed(self, names: Iterable[str]) -> None:
        """The order for ``names`` spent with :meth:`spend_order` has ended; release it if it was not issued.

        Meant for a ``finally``: shielded from cancellation for at most :data:`LAND_TIMEOUT`; a release
        that cannot be written is logged, never raised (the pending entry stays, counted: stricter).
        """
        entry = self._reservation(names)
        if entry is None:  # issued (settled), or never reserved
            return
        what = f"release the rate-limit reservation for {entry.names[0]}"
        with trio.CancelScope(shield=True), trio.move_on_after(LAND_TIMEOUT) as scope:
            await self._record(lambda ledger: reservation.release(ledger, entry, self.clock.now()), what)
        if scope.cancelled_caught:
            logger.error("could not release the rate-limit reservation for %s in %.0fs; it counts as issued",
                         entry.names[0], LAND_TIMEOUT)

    async def failed_validation(self, names: Iterable[str]) -> None:
        """Record that the CA could not validate ``names``."""
        names = tuple(names)
        await self._record(lambda ledger: budget.record_failed_validation(ledger, names, self.clock.now()))

    async def issued(self, names: Iterable[str], *, renewal: bool) -> None:
        """Record a certificate issued for ``names``, settling the order's reservation."""
        names = tuple(names)
        entry = self._reservation(names)
        if entry is None:  # not reserved by this process: recorded as issued all the same
            await self._record(lambda ledger: budget.record_issued(ledger, names, self.clock.now(), renewal=renewal))
            return
        await self._record(lambda ledger: reservation.settle(ledger, entry, self.clock.now()))

    async def _record(
        self, change: Callable[[budget.Ledger], budget.Ledger], what: str = "record in the rate-limit budget"
    ) -> None:
        try:
            async with self._held() as ledger:
                await self.store.save_ledger(self.directory_url, change(ledger))
        except StoreError as exc:
            logger.error("could not %s: %s", what, exc)
