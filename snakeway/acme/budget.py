"""A client-side mirror of an ACME CA's rate limits, so that snakeway never exceeds them (sans-IO).

Theory of operation
-------------------
Everything here is pure: no trio, no I/O, no clock. The caller passes ``now``
(aware; naive datetimes raise ``ValueError``) and gets new frozen values back.

* **What is counted.** A :class:`Ledger` holds the events a CA's limits count,
  each with its moment: new orders (one ledger per ACME account, so these are
  per account), failed validations (per name), and certificates issued (per
  exact set of names, and per registered domain). The caller records each
  event when it happens: :func:`spend_order` when an order is created,
  :func:`record_failed_validation` for the names whose challenge failed,
  :func:`record_issued` when a certificate is downloaded.
* **Buckets and windows.** :class:`RateLimits` gives each kind of bucket its
  size; the windows are the CA's and fixed: 3 hours for new orders, 1 hour for
  failed validations, 7 days for certificates. Windows slide, exactly: an
  event at ``t`` counts at every moment ``m`` with ``t > m - window`` (and so
  also while ``t`` is still ahead of ``m``, should a clock have stepped back).
  A bucket at its limit admits the next event when its oldest counted event
  leaves the window; as counts only fall while no event is added, the moment
  an order may start is the latest of those moments over its buckets.
* **What an order could spend.** :func:`when_allowed` checks every bucket an
  order for ``names`` could spend: one new order; one failed validation for
  each name (a name that failed 5 times in the last hour waits); one duplicate
  certificate for this exact set of names (order-insensitive, case-normalised);
  one certificate for each registered domain among the names. A renewal (the
  same set of names issued before) is exempt from the per-domain bucket, as at
  Let's Encrypt; it still counts toward it when :func:`record_issued` is told
  nothing else, which can only make the budget stricter.
* **Registered domain.** The last two labels of a name, ``*.`` removed
  (:func:`registered_domain`). Without the public-suffix list this is an
  approximation: under ``co.uk`` every customer's names share one bucket,
  which again only makes the budget stricter.
* **Compact.** Events older than their window are pruned whenever one is
  recorded (and by :meth:`Ledger.pruned`), so the ledger holds at most what its
  buckets allow plus what a clock step adds. On disk, moments are integers
  (microseconds since the epoch): a few thousand events parse in milliseconds.
* **Conservative.** A ledger that cannot be read must not reset the budget
  (that would let every worker order at once). :meth:`Ledger.conservative`
  stands in for it: it admits nothing for :data:`CONSERVATIVE_HOLD` (1 hour),
  by then the CA's own windows for orders and failed validations have mostly
  moved on, and a ``rateLimited`` answer with its ``Retry-After`` remains the
  backstop for the rest.

* **Orders in flight.** A certificate being ordered is an :class:`Issued`
  marked ``pending``: it counts in every bucket a certificate counts in, so
  orders running at once (in any process sharing the ledger) cannot together
  pass a certificate bucket. :mod:`snakeway.acme.reservation` reserves,
  settles and releases these entries.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TypeVar, final

from snakeway.renewal import require_aware

NEW_ORDER_WINDOW = timedelta(hours=3)
FAILED_VALIDATION_WINDOW = timedelta(hours=1)
CERTIFICATE_WINDOW = timedelta(days=7)
LONGEST_WINDOW = max(NEW_ORDER_WINDOW, FAILED_VALIDATION_WINDOW, CERTIFICATE_WINDOW)
# How long a ledger that could not be read admits nothing.
CONSERVATIVE_HOLD = timedelta(hours=1)
LEDGER_VERSION = 1

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@final
@dataclass(frozen=True)
class RateLimits:
    """The size of each bucket; the defaults are Let's Encrypt's.

    Attributes:
        new_orders_per_3h: New orders per account in any 3 hours.
        failed_validations_per_name_per_hour: Failed validations of one name in any hour.
        duplicate_certificates_per_week: Certificates for one exact set of names in any 7 days.
        certificates_per_domain_per_week: New certificates naming one registered domain in any 7 days.

    Raises:
        ValueError: A limit that is not a positive int.
    """

    new_orders_per_3h: int = 300
    failed_validations_per_name_per_hour: int = 5
    duplicate_certificates_per_week: int = 5
    certificates_per_domain_per_week: int = 50

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{limit.name} must be a positive int, got {value!r}")


def registered_domain(name: str) -> str:
    """The bucket of ``name`` for the per-domain limit: its last two labels, ``*.`` removed, lower case.

    ``www.a.example`` -> ``a.example``; ``*.a.example`` -> ``a.example``; ``localhost`` -> ``localhost``.
    """
    return _domain_of(_canonical_name(name))


def _domain_of(canonical: str) -> str:
    last = canonical.rfind(".")
    second = canonical.rfind(".", 0, last) if last > 0 else -1
    domain = canonical[second + 1 :]
    return domain[2:] if domain.startswith("*.") else domain


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValueError(f"invalid name {name!r}")
    canonical = name.lower()
    if canonical.endswith("."):
        canonical = canonical.rstrip(".")
    if not canonical:
        raise ValueError(f"invalid name {name!r}")
    return canonical


def names_key(names: Iterable[str]) -> tuple[str, ...]:
    """The canonical form of a set of names: lower case, without a trailing dot, distinct, sorted.

    Raises:
        ValueError: No names, an empty name, or a single string where a collection was meant.
    """
    if isinstance(names, str):
        raise ValueError(f"names must be a collection of names, not the string {names!r}")
    key = sorted({_canonical_name(name) for name in names})
    if not key:
        raise ValueError("an order needs at least one name")
    return tuple(key)


@final
@dataclass(frozen=True, order=True)
class Issued:
    """One certificate issued.

    Attributes:
        at: When it was issued (aware).
        names: Its names (canonicalised by :func:`names_key`).
        renewal: Whether the caller recorded it as a renewal (exempt from, and not counted toward, the
            per-domain bucket).
        pending: Ordered at ``at``, not yet issued (see :mod:`snakeway.acme.reservation`); counted the same.
    """

    at: datetime
    names: tuple[str, ...]
    renewal: bool = False
    pending: bool = False

    def __post_init__(self) -> None:
        require_aware(at=self.at)
        object.__setattr__(self, "names", names_key(self.names))
        object.__setattr__(self, "renewal", bool(self.renewal))
        object.__setattr__(self, "pending", bool(self.pending))

    @cached_property
    def domains(self) -> frozenset[str]:
        """The registered domains among the names (see :func:`registered_domain`)."""
        return frozenset(_domain_of(name) for name in self.names)


def _first_counted(events: Sequence[T], now: datetime, window: timedelta, moment: Callable[[T], datetime]) -> int:
    """The index of the first of ``events`` (sorted by ``moment``) that counts at ``now``: ``t > now - window``."""
    start = now - window
    if not events or moment(events[0]) > start:  # the common case: nothing to skip
        return 0
    return bisect.bisect_right(events, start, key=moment)


def _order_moment(when: datetime) -> datetime:
    return when


def _failure_moment(failure: tuple[datetime, str]) -> datetime:
    return failure[0]


def _issued_moment(cert: Issued) -> datetime:
    return cert.at


@final
@dataclass(frozen=True)
class Ledger:
    """The events a CA's rate limits count, for one ACME account; sorted by time.

    Attributes:
        orders: When each new order was created.
        failed_validations: ``(when, name)`` for each failed validation, names in lower case.
        issued: Each certificate issued.
        blocked_until: Nothing is admitted before this moment (see :meth:`conservative`); None: no such hold.

    Raises:
        ValueError: A naive datetime or an invalid name.
    """

    orders: tuple[datetime, ...] = ()
    failed_validations: tuple[tuple[datetime, str], ...] = ()
    issued: tuple[Issued, ...] = ()
    blocked_until: datetime | None = None

    def __post_init__(self) -> None:
        require_aware(blocked_until=self.blocked_until)
        for when in self.orders:
            require_aware(order=when)
        failures = []
        for when, name in self.failed_validations:
            require_aware(failed_validation=when)
            failures.append((when, _canonical_name(name)))
        object.__setattr__(self, "orders", tuple(sorted(self.orders)))
        object.__setattr__(self, "failed_validations", tuple(sorted(failures)))
        object.__setattr__(self, "issued", tuple(sorted(self.issued)))

    @classmethod
    def conservative(cls, now: datetime) -> Ledger:
        """What a ledger that cannot be read stands for: nothing is admitted for :data:`CONSERVATIVE_HOLD`."""
        require_aware(now=now)
        return cls(blocked_until=now + CONSERVATIVE_HOLD)

    def pruned(self, now: datetime) -> Ledger:
        """This ledger without the events no bucket counts any more at ``now``.

        Answers for ``now`` and any later moment are unchanged; an earlier moment (a clock stepped back) may
        see fewer events than were recorded.
        """
        require_aware(now=now)
        blocked = self.blocked_until if self.blocked_until is not None and self.blocked_until > now else None
        return Ledger(
            orders=self.orders[_first_counted(self.orders, now, NEW_ORDER_WINDOW, _order_moment) :],
            failed_validations=self.failed_validations[
                _first_counted(self.failed_validations, now, FAILED_VALIDATION_WINDOW, _failure_moment) :
            ],
            issued=self.issued[_first_counted(self.issued, now, CERTIFICATE_WINDOW, _issued_moment) :],
            blocked_until=blocked,
        )

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict; moments as integer microseconds since the epoch (UTC).

        Pending certificates are listed apart, under ``pending``: a reader that predates them still reads
        the rest (and a ledger written before them has no such key).
        """
        return {
            "version": LEDGER_VERSION,
            "orders": [_to_micros(when) for when in self.orders],
            "failed_validations": [[_to_micros(when), name] for when, name in self.failed_validations],
            "issued": [_issued_json(cert) for cert in self.issued if not cert.pending],
            "pending": [_issued_json(cert) for cert in self.issued if cert.pending],
            "blocked_until": None if self.blocked_until is None else _to_micros(self.blocked_until),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Ledger:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: An unknown version, a missing or mistyped field, a moment out of range.
        """
        version = data.get("version")
        if isinstance(version, bool) or version != LEDGER_VERSION:
            raise ValueError(f"version: expected {LEDGER_VERSION}, got {version!r}")
        orders = tuple(_from_micros(value, "orders") for value in _list(data, "orders"))
        failures = []
        for item in _list(data, "failed_validations"):
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], str):
                raise ValueError(f"failed_validations: expected [moment, name], got {item!r}")
            failures.append((_from_micros(item[0], "failed_validations"), item[1]))
        issued = []
        for key in ("issued", "pending"):
            for item in _list(data, key):
                if (
                    not isinstance(item, list)
                    or len(item) != 3
                    or not isinstance(item[1], list)
                    or not isinstance(item[2], bool)
                ):
                    raise ValueError(f"{key}: expected [moment, [names], renewal], got {item!r}")
                issued.append(Issued(_from_micros(item[0], key), tuple(item[1]), item[2], key == "pending"))
        blocked = data.get("blocked_until")
        return cls(
            orders=orders,
            failed_validations=tuple(failures),
            issued=tuple(issued),
            blocked_until=None if blocked is None else _from_micros(blocked, "blocked_until"),
        )


def _issued_json(cert: Issued) -> list[object]:
    return [_to_micros(cert.at), list(cert.names), cert.renewal]


def _to_micros(when: datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def _from_micros(value: object, key: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an integer moment, got {value!r}")
    try:
        return _EPOCH + timedelta(microseconds=value)
    except OverflowError:
        raise ValueError(f"{key}: moment {value!r} is out of range") from None


def _list(data: Mapping[str, object], key: str) -> list[object]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list, got {value!r}")
    return value


# --- recording events ----------------------------------------------------------------------------


def spend_order(ledger: Ledger, now: datetime) -> Ledger:
    """The ledger after a new order was created at ``now`` (pruned at ``now``)."""
    ledger = ledger.pruned(now)
    return replace(ledger, orders=(*ledger.orders, now))


def record_failed_validation(ledger: Ledger, names: Iterable[str], now: datetime) -> Ledger:
    """The ledger after the validation of each of ``names`` failed at ``now`` (pruned at ``now``)."""
    key = names_key(names)
    ledger = ledger.pruned(now)
    return replace(ledger, failed_validations=(*ledger.failed_validations, *((now, name) for name in key)))


def record_issued(ledger: Ledger, names: Iterable[str], now: datetime, *, renewal: bool = False) -> Ledger:
    """The ledger after a certificate for ``names`` was issued at ``now`` (pruned at ``now``).

    Args:
        ledger: The ledger so far.
        names: The certificate's names.
        now: When it was issued.
        renewal: Whether the order was a renewal (see :func:`when_allowed`); a renewal does not count toward
            the per-domain bucket. Left False, it does: stricter, never looser, than the CA.
    """
    issued = Issued(now, tuple(names_key(names)), renewal)
    ledger = ledger.pruned(now)
    return replace(ledger, issued=(*ledger.issued, issued))


# --- asking --------------------------------------------------------------------------------------


def _free_at(times: list[datetime], limit: int, window: timedelta) -> datetime | None:
    """When a bucket holding ``times`` (sorted, all counted now) admits one more event; None: it does now."""
    if len(times) < limit:
        return None
    return times[len(times) - limit] + window


def when_allowed(
    ledger: Ledger, limits: RateLimits, names: Iterable[str], now: datetime, *, renewal: bool
) -> datetime | None:
    """When an order for ``names`` may start without any bucket it could spend going over its limit.

    Args:
        ledger: The account's ledger.
        limits: The bucket sizes.
        names: The names of the order.
        now: The moment of asking.
        renewal: Whether the order renews a certificate for exactly these names (exempt from the
            per-domain bucket).

    Returns:
        None if the order may start at ``now``; else the earliest moment it may (later than ``now``),
        assuming no event is recorded meanwhile.

    Raises:
        ValueError: A naive ``now``, or ``names`` empty or invalid (see :func:`names_key`).
    """
    require_aware(now=now)
    key = names_key(names)
    wanted = set(key)
    moments: list[datetime | None] = [ledger.blocked_until]

    orders = ledger.orders[_first_counted(ledger.orders, now, NEW_ORDER_WINDOW, _order_moment) :]
    moments.append(_free_at(list(orders), limits.new_orders_per_3h, NEW_ORDER_WINDOW))

    per_name: dict[str, list[datetime]] = {}
    failures = ledger.failed_validations
    for when, name in failures[_first_counted(failures, now, FAILED_VALIDATION_WINDOW, _failure_moment) :]:
        if name in wanted:
            per_name.setdefault(name, []).append(when)
    limit = limits.failed_validations_per_name_per_hour
    moments.extend(_free_at(times, limit, FAILED_VALIDATION_WINDOW) for times in per_name.values())

    issued = ledger.issued[_first_counted(ledger.issued, now, CERTIFICATE_WINDOW, _issued_moment) :]
    duplicates = [cert.at for cert in issued if cert.names == key]
    moments.append(_free_at(duplicates, limits.duplicate_certificates_per_week, CERTIFICATE_WINDOW))
    if not renewal:
        domains = {registered_domain(name) for name in key}
        per_domain: dict[str, list[datetime]] = {}
        for cert in issued:
            if not cert.renewal:
                for domain in cert.domains & domains:
                    per_domain.setdefault(domain, []).append(cert.at)
        limit = limits.certificates_per_domain_per_week
        moments.extend(_free_at(times, limit, CERTIFICATE_WINDOW) for times in per_domain.values())

    latest = max((moment for moment in moments if moment is not None), default=None)
    return latest if latest is not None and latest > now else None


def usage(ledger: Ledger, limits: RateLimits, now: datetime) -> dict[str, float]:
    """How full each kind of bucket is at ``now``: the highest fraction of its limit any one bucket uses.

    Keys are the names of the :class:`RateLimits` fields. A fraction above 1.0 means a bucket holds more
    than its limit (events recorded by something that did not ask :func:`when_allowed`, or a limit lowered
    since). A :meth:`Ledger.conservative` hold is not a bucket and shows in none.
    """
    require_aware(now=now)
    orders = len(ledger.orders) - _first_counted(ledger.orders, now, NEW_ORDER_WINDOW, _order_moment)
    failures = ledger.failed_validations
    per_name: dict[str, int] = {}
    for _, name in failures[_first_counted(failures, now, FAILED_VALIDATION_WINDOW, _failure_moment) :]:
        per_name[name] = per_name.get(name, 0) + 1
    per_set: dict[tuple[str, ...], int] = {}
    per_domain: dict[str, int] = {}
    for cert in ledger.issued[_first_counted(ledger.issued, now, CERTIFICATE_WINDOW, _issued_moment) :]:
        per_set[cert.names] = per_set.get(cert.names, 0) + 1
        if not cert.renewal:
            for domain in cert.domains:
                per_domain[domain] = per_domain.get(domain, 0) + 1
    return {
        "new_orders_per_3h": orders / limits.new_orders_per_3h,
        "failed_validations_per_name_per_hour": max(per_name.values(), default=0)
        / limits.failed_validations_per_name_per_hour,
        "duplicate_certificates_per_week": max(per_set.values(), default=0) / limits.duplicate_certificates_per_week,
        "certificates_per_domain_per_week": max(per_domain.values(), default=0)
        / limits.certificates_per_domain_per_week,
    }
