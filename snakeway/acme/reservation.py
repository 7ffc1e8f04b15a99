"""Orders in flight in the rate-limit ledger: reserve, settle, release (sans-IO).

Theory of operation
-------------------
A CA counts a certificate when it issues it, minutes after the order was created. Were the ledger told only
then, orders running at once in several processes could each see room for one more certificate and
together pass a bucket (50 new certificates of one registered domain a week). So an order *reserves* its
certificate when it is created: :func:`reserve` records the new order and a pending :class:`~snakeway.acme.
budget.Issued` in one change of the ledger, and every process reading the ledger counts it like an issued
certificate, in every bucket one would count in.

* :func:`settle`, when the certificate is issued, replaces the pending entry with one at the moment of
  issuance (the CA's moment, which is later: the entry leaves its window later, never sooner).
* :func:`release`, when the order fails, drops the pending entry: its room is free at once.
* **Stale.** An order never runs for :data:`PENDING_BOUND` (1 hour; an issuance is given 5 minutes). A
  pending entry older than that belongs to a process that died, or lost the ledger, mid-order; it may
  have got its certificate, so it stays counted as issued until its 7 days have passed (stricter, never
  looser, than the CA).
* **Waiting on orders in flight.** When pending entries fill a bucket, one of them may yet fail and free
  room: :func:`when_reservable` then names a moment ``retry`` away rather than the end of the bucket's
  window. Stale entries are not in flight: a bucket they fill waits for its window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from snakeway.acme.budget import Issued, Ledger, RateLimits, names_key, spend_order, when_allowed

# How long a pending entry counts as an order in flight; after that, as a certificate issued.
PENDING_BOUND = timedelta(hours=1)


def reservation(names: Iterable[str], now: datetime, *, renewal: bool) -> Issued:
    """The pending entry of an order for ``names`` created at ``now``."""
    return Issued(now, names_key(names), renewal, pending=True)


def reserve(ledger: Ledger, entry: Issued, now: datetime) -> Ledger:
    """The ledger after an order was created at ``now``: the order spent and ``entry`` (pending) recorded.

    Raises:
        ValueError: ``entry`` is not pending, or a naive ``now``.
    """
    if not entry.pending:
        raise ValueError("a reservation must be a pending entry")
    ledger = spend_order(ledger, now)
    return replace(ledger, issued=(*ledger.issued, entry))


def _without(ledger: Ledger, entry: Issued) -> Ledger:
    """``ledger`` without one occurrence of ``entry`` (unchanged if it holds none)."""
    issued = list(ledger.issued)
    if entry in issued:
        issued.remove(entry)
    return replace(ledger, issued=tuple(issued))


def settle(ledger: Ledger, entry: Issued, now: datetime) -> Ledger:
    """The ledger after the order reserved as ``entry`` got its certificate at ``now``.

    The pending entry (if still there) gives way to an issued one at ``now``, pruned at ``now``.
    """
    issued = Issued(now, entry.names, entry.renewal)
    ledger = _without(ledger, entry).pruned(now)
    return replace(ledger, issued=(*ledger.issued, issued))


def release(ledger: Ledger, entry: Issued, now: datetime) -> Ledger:
    """The ledger after the order reserved as ``entry`` failed at ``now``: its pending entry dropped."""
    return _without(ledger, entry).pruned(now)


def in_flight(entry: Issued, now: datetime) -> bool:
    """Whether ``entry`` is an order still running at ``now`` (pending, and not stale)."""
    return entry.pending and entry.at > now - PENDING_BOUND


def when_reservable(
    ledger: Ledger, limits: RateLimits, names: Iterable[str], now: datetime, *, renewal: bool, retry: timedelta
) -> datetime | None:
    """When to reserve an order for ``names``: None at ``now``; else the moment to ask again.

    This is :func:`~snakeway.acme.budget.when_allowed`, except that a bucket that orders in flight help
    fill is asked again after ``retry`` (one of them may fail), or when the rest of the bucket leaves
    the window if that is later.
    """
    when = when_allowed(ledger, limits, names, now, renewal=renewal)
    if when is None:
        return None
    flights = [entry for entry in ledger.issued if in_flight(entry, now)]
    if not flights:
        return when
    settled = replace(ledger, issued=tuple(entry for entry in ledger.issued if not in_flight(entry, now)))
    without = when_allowed(settled, limits, names, now, renewal=renewal)
    return min(when, now + retry if without is None else max(without, now + retry))
