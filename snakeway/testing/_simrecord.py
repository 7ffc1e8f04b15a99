"""What the simulator watches: which certificate each worker serves, from when, and its dates.

Theory of operation: a certificate is served from the moment the manager hands
its entry to :meth:`CertRegistry.update` until the next update of the same id
(or the end of the run). :class:`WatchedRegistry` notes each update's moment
and the dates of the certificate it installs, which :class:`DatedStore` knows
because the manager saves a bundle to the store before it publishes it (and
loads published bundles from the store). From those intervals the figures are
exact, with no sampling:

* expired minutes: for the interval ``[t0, t1)`` of a certificate valid until
  ``not_after``, ``max(0, t1 - max(t0, not_after))``;
* worst remaining lifetime: a served certificate's remaining time is smallest
  at the end of its interval, ``not_after - t1`` (negative once expired), also
  as a fraction of that certificate's lifetime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from snakeway.acme.store import CertBundle, MemoryStore
from snakeway.tls.certmap import CertEntry
from snakeway.tls.registry import CertRegistry


class DatedStore:
    """A :class:`MemoryStore` (every method passed through) that also keeps the dates of each saved bundle.

    ``dates[name]`` is ``(not_before, not_after)`` of the bundle last saved under ``name``, readable
    without awaiting (the registry's ``update`` is synchronous).
    """

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.dates: dict[str, tuple[datetime, datetime]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save(self, bundle: CertBundle) -> None:
        await self.inner.save(bundle)
        self.dates[bundle.name] = (bundle.not_before, bundle.not_after)


@dataclass
class Served:
    """The certificates one worker served under one id: ``(since, not_before, not_after)``, in order."""

    spans: list[tuple[datetime, datetime, datetime]] = field(default_factory=list)


class WatchedRegistry(CertRegistry):
    """A :class:`CertRegistry` that records each update (see the module docstring).

    Args:
        store: Where the dates of a published certificate are read.
        names: Certificate id -> store name.
        now: The simulated wall clock.
    """

    def __init__(self, store: DatedStore, names: Mapping[str, str], now: Callable[[], datetime]) -> None:
        super().__init__()
        self._store = store
        self.names = dict(names)
        self._now = now
        self.served: dict[str, Served] = {}

    def update(self, entries: Mapping[str, CertEntry]) -> None:
        super().update(entries)
        now = self._now()
        for cert_id in entries:
            dates = self._store.dates.get(self.names.get(cert_id, ""))
            if dates is not None:
                self.served.setdefault(cert_id, Served()).spans.append((now, *dates))


@dataclass
class Exposure:
    """Expired minutes and the worst remaining lifetime over some served certificates."""

    expired_minutes: float = 0.0
    worst_fraction: float | None = None  # of the certificate's lifetime
    worst_hours: float | None = None

    def add(self, served: Served, end: datetime) -> None:
        spans = served.spans
        for (start, not_before, not_after), (stop, _, _) in zip(spans, [*spans[1:], (end, end, end)], strict=True):
            if stop <= start:
                continue
            expired = stop - max(start, not_after)
            if expired > timedelta(0):
                self.expired_minutes += expired.total_seconds() / 60
            remaining = not_after - stop
            fraction = remaining / (not_after - not_before)
            if self.worst_fraction is None or fraction < self.worst_fraction:
                self.worst_fraction = fraction
                self.worst_hours = remaining.total_seconds() / 3600


def exposure(registries: list[WatchedRegistry], end: datetime) -> Exposure:
    """Expired minutes summed over every worker and certificate; the worst remaining lifetime of any."""
    total = Exposure()
    for registry in registries:
        for served in registry.served.values():
            total.add(served, end)
    return total
