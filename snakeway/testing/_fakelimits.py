"""The fake CA's own rate limits, enforced the way Let's Encrypt enforces its limits (pure, no trio).

Theory of operation: :class:`CALimits` keeps, per bucket and key, the moments of
the events that bucket counts, and answers a new order with the first bucket it
would overflow. Four buckets, each a sliding window:

================================  ======================  =========  ======================================
bucket                            key                     window     counts
================================  ======================  =========  ======================================
``new_orders``                    account URI             3 hours    every order created
``failed_validations``            identifier (name)       1 hour     every authorization that failed
``duplicate_certificates``        exact set of names      7 days     every certificate issued
``certificates_per_domain``       registered domain       7 days     every certificate issued, once per
                                                                     registered domain among its names
================================  ======================  =========  ======================================

An order is refused (HTTP 429, ``rateLimited``) when one of its buckets already
holds its limit; ``Retry-After`` is the moment the oldest event of that bucket
leaves the window, when one more fits. A renewal (a set of names already issued)
is exempt from ``certificates_per_domain``, as at Let's Encrypt; an order
whose ``replaces`` the CA accepted (an ARI renewal) is exempt from every bucket
when ``ari_exempt`` is set. The "registered domain" is the last two labels of a
name (wildcard stripped): no public-suffix list.

This module is written independently of the client's budget (:mod:`snakeway.acme.budget`): it is
the oracle the client-side budget is tested against, so it must not share its code.

:attr:`CALimits.peak` keeps the most events any key of each bucket ever held at
once: with a client that respects the limits, never more than the limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, final

BUCKETS: Final = ("new_orders", "failed_validations", "duplicate_certificates", "certificates_per_domain")

WINDOWS: Final = {
    "new_orders": timedelta(hours=3),
    "failed_validations": timedelta(hours=1),
    "duplicate_certificates": timedelta(days=7),
    "certificates_per_domain": timedelta(days=7),
}


@final
@dataclass(frozen=True)
class CALimitSettings:
    """The CA's limits (Let's Encrypt's defaults); ``None`` turns a bucket off.

    Raises:
        ValueError: A limit below 1.
    """

    new_orders_per_3h: int | None = 300
    failed_validations_per_name_per_hour: int | None = 5
    duplicate_certificates_per_week: int | None = 5
    certificates_per_domain_per_week: int | None = 50
    ari_exempt: bool = True

    def __post_init__(self) -> None:
        for bucket in BUCKETS:
            value = self.limit(bucket)
            if value is not None and value < 1:
                raise ValueError(f"the {bucket} limit must be at least 1 or None, got {value}")

    def limit(self, bucket: str) -> int | None:
        return {
            "new_orders": self.new_orders_per_3h,
            "failed_validations": self.failed_validations_per_name_per_hour,
            "duplicate_certificates": self.duplicate_certificates_per_week,
            "certificates_per_domain": self.certificates_per_domain_per_week,
        }[bucket]


@final
@dataclass(frozen=True)
class Refusal:
    """Why an order is refused: the full bucket, its key and when one more fits."""

    bucket: str
    key: str
    retry_after: datetime

    def detail(self) -> str:
        return f"too many {self.bucket.replace('_', ' ')} for {self.key}; retry after {self.retry_after.isoformat()}"


def registered_domain(name: str) -> str:
    """The last two labels of ``name``, wildcard stripped (an approximation of the public-suffix rule)."""
    labels = name.removeprefix("*.").rstrip(".").lower().split(".")
    return ".".join(labels[-2:])


def name_set_key(names: Iterable[str]) -> str:
    """The duplicate-certificate key: the sorted, lower-cased set of names."""
    return ",".join(sorted({name.lower() for name in names}))


class CALimits:
    """Sliding-window event logs per bucket and key; see the module docstring."""

    def __init__(self, settings: CALimitSettings | None = None) -> None:
        self.settings = settings or CALimitSettings()
        self._events: dict[str, dict[str, deque[datetime]]] = {bucket: {} for bucket in BUCKETS}
        self.peak: dict[str, int] = dict.fromkeys(BUCKETS, 0)
        self._issued_sets: set[str] = set()  # every name set ever issued (renewals skip the domain bucket)

    def refusal(self, account: str, names: Iterable[str], now: datetime, *, ari_renewal: bool) -> Refusal | None:
        """The first bucket a new order for ``names`` by ``account`` would overflow at ``now``, or None."""
        if ari_renewal and self.settings.ari_exempt:
            return None
        names = tuple(names)
        checks = [("new_orders", account)]
        checks += [("failed_validations", name.lower()) for name in names]
        checks.append(("duplicate_certificates", name_set_key(names)))
        if name_set_key(names) not in self._issued_sets:
            checks += [("certificates_per_domain", domain) for domain in _domains(names)]
        for bucket, key in checks:
            limit = self.settings.limit(bucket)
            if limit is None:
                continue
            events = self._live(bucket, key, now)
            if len(events) >= limit:
                return Refusal(bucket, key, events[len(events) - limit] + WINDOWS[bucket])
        return None

    def used(self, bucket: str, key: str, now: datetime) -> int:
        """Events of ``bucket`` for ``key`` inside its window at ``now``."""
        return len(self._live(bucket, key, now))

    def order_created(self, account: str, now: datetime) -> None:
        self._add("new_orders", account, now)

    def validation_failed(self, name: str, now: datetime) -> None:
        self._add("failed_validations", name.lower(), now)

    def certificate_issued(self, names: Iterable[str], now: datetime) -> None:
        names = tuple(names)
        self._issued_sets.add(name_set_key(names))
        self._add("duplicate_certificates", name_set_key(names), now)
        for domain in _domains(names):
            self._add("certificates_per_domain", domain, now)

    # --- internals ---------------------------------------------------------------------------------

    def _live(self, bucket: str, key: str, now: datetime) -> deque[datetime]:
        events = self._events[bucket].get(key)
        if events is None:
            return deque()
        start = now - WINDOWS[bucket]
        while events and events[0] <= start:
            events.popleft()
        return events

    def _add(self, bucket: str, key: str, now: datetime) -> None:
        events = self._events[bucket].setdefault(key, deque())
        self._live(bucket, key, now)
        events.append(now)
        self.peak[bucket] = max(self.peak[bucket], len(events))


def _domains(names: Iterable[str]) -> list[str]:
    return sorted({registered_domain(name) for name in names})
