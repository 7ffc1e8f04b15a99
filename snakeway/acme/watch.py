"""Picking up certificates another process saved (workers, or several nodes, sharing one file store).

Theory of operation
-------------------
Only the process that holds a certificate's lock orders it; every other process must notice the new
certificate in the store and put it in its own cert map. :class:`StoreWatch` polls the coordinator's cheap
*generation* (one ``stat`` of a file store, one Redis read) every ``coordinator.poll_seconds``; when it
changes, and at least every ``interval`` seconds (the reconciliation that catches anything missed), it
compares each certificate's *stamp* with the last one seen and loads those that changed. A certificate this
process published itself, or is saving right now, is left alone.

Between two looks it waits in ``coordinator.wait_changed``. A coordinator that is told of saves (Redis
pub/sub) ends that wait as a save is announced, and the watch scans at once: that is what brings a new
certificate to every node within a second, while the generation is only polled every few seconds. The task
that keeps the coordinator told (its subscription) runs in the watch's own nursery, for as long as the watch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import trio

from snakeway.acme.coordination import GENERATION_POLL_SECONDS as GENERATION_POLL_SECONDS
from snakeway.acme.coordination import Coordinator
from snakeway.acme.managed import ManagedCert
from snakeway.acme.store import CertBundle, CertStore, StoreError
from snakeway.clock import WallClock

logger = logging.getLogger(__name__)

# How often to look whether the store changed (one stat; see coordination.py).


class StoreWatch:
    """Loads certificates other workers saved into this worker's cert map.

    Args:
      store, coordinator, clock: as the CertManager's.
      certs: the certificates managed now (read at every scan: reloads change it).
      ours: the serials this worker published or is saving, by cert id (read at every scan).
      publish: puts a bundle into the cert map.
    """

    def __init__(
        self,
        *,
        store: CertStore,
        coordinator: Coordinator,
        clock: WallClock,
        certs: Callable[[], Mapping[str, ManagedCert]],
        ours: Callable[[str], tuple[str | None, ...]],
        publish: Callable[[ManagedCert, CertBundle], Awaitable[None]],
    ) -> None:
        self.store = store
        self.coordinator = coordinator
        self.clock = clock
        self.certs = certs
        self.ours = ours
        self.publish = publish
        self._baseline: tuple[object, dict[str, str | None]] | None = None

    async def first_look(self) -> None:
        """Take the baseline (generation and stamps) now, before the stored certificates are loaded, so that one
        another process saves in between is a change to pick up rather than part of the baseline. A store that
        cannot be read leaves the first look to :meth:`run`."""
        try:
            self._baseline = (await self.coordinator.generation(),
                              await self.coordinator.stamps(c.name for c in self.certs().values()))
        except StoreError:
            pass

    async def run(self, interval: float) -> None:
        """Watch for ever; a full scan at least every ``interval`` seconds.

        A store that cannot be read (Redis away) is logged once, when it starts and when it ends, and
        watched again at the next poll: the certificates served meanwhile stay as they are.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.coordinator.follow_changes)
            await self._watch(interval)

    async def _watch(self, interval: float) -> None:
        generation, stamps = self._baseline or (None, None)
        scanned, changed, failing, told = trio.current_time(), False, False, False
        while True:
            try:
                if stamps is None:  # the first look: what is served now is the baseline
                    generation = await self.coordinator.generation()
                    stamps = await self.coordinator.stamps(c.name for c in self.certs().values())
                    scanned = trio.current_time()
                else:
                    seen = await self.coordinator.generation()
                    # Also scan on the poll after a change: one more change within the same clock tick leaves
                    # the generation as it was.
                    was_changed, changed = changed, seen != generation
                    if told or changed or was_changed or trio.current_time() - scanned >= interval:
                        stamps = await self._scan(stamps)
                        generation, scanned = seen, trio.current_time()
            except StoreError as exc:
                if stamps is None:
                    stamps = {}  # no baseline: the first scan that works compares every certificate
                if not failing:
                    logger.warning("cannot watch the certificate store for new certificates: %s", exc)
                failing = True
            else:
                if failing:
                    logger.info("watching the certificate store again")
                failing = False
            told = await self.coordinator.wait_changed(self.coordinator.poll_seconds)

    async def _scan(self, last: dict[str, str | None]) -> dict[str, str | None]:
        certs = list(self.certs().values())
        stamps = await self.coordinator.stamps(c.name for c in certs)
        for cert in certs:
            stamp = stamps.get(cert.name)
            if stamp is None or stamp == last.get(cert.name):
                continue
            bundle = await self.store.load(cert.name)
            if bundle is None or bundle.serial in self.ours(cert.cert_id):
                continue  # gone, or the one this worker saved itself
            if bundle.not_after > self.clock.now():
                await self.publish(cert, bundle)
                logger.info("certificate for %s picked up from the store", cert.name)
        return stamps
