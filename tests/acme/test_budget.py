"""The client-side rate-limit budget (pure): examples of each bucket, then hypothesis against a brute-force oracle."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.acme.budget import (
    CERTIFICATE_WINDOW,
    CONSERVATIVE_HOLD,
    FAILED_VALIDATION_WINDOW,
    NEW_ORDER_WINDOW,
    Issued,
    Ledger,
    RateLimits,
    names_key,
    record_failed_validation,
    record_issued,
    registered_domain,
    spend_order,
    usage,
    when_allowed,
)
from snakeway.acme.reservation import PENDING_BOUND, release, reservation, reserve, settle, when_reservable

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)
LE = RateLimits()


def orders_at(*moments: datetime) -> Ledger:
    ledger = Ledger()
    for moment in moments:
        ledger = spend_order(ledger, moment)
    return ledger


# --- limits and names --------------------------------------------------------------------------


def test_lets_encrypt_defaults() -> None:
    assert (
        LE.new_orders_per_3h,
        LE.failed_validations_per_name_per_hour,
        LE.duplicate_certificates_per_week,
        LE.certificates_per_domain_per_week,
    ) == (300, 5, 5, 50)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "5", None])
def test_limits_must_be_positive_ints(bad: object) -> None:
    with pytest.raises(ValueError, match="new_orders_per_3h must be a positive int"):
        RateLimits(new_orders_per_3h=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("www.a.example", "a.example"),
        ("*.a.example", "a.example"),
        ("deep.www.A.Example.", "a.example"),
        ("a.example", "a.example"),
        ("localhost", "localhost"),
        ("shop.example.co.uk", "co.uk"),  # the documented approximation: no public-suffix list
    ],
)
def test_registered_domain_is_the_last_two_labels(name: str, domain: str) -> None:
    assert registered_domain(name) == domain


def test_names_key_is_a_canonical_set() -> None:
    assert names_key(["WWW.a.test", "a.test.", "www.a.test"]) == ("a.test", "www.a.test")
    for bad in ("a.test", [], [""], ["."], [None]):
        with pytest.raises(ValueError, match="name"):
            names_key(bad)  # type: ignore[arg-type]


# --- each bucket -------------------------------------------------------------------------------


def test_new_orders_wait_until_the_oldest_leaves_the_3_hour_window() -> None:
    limits = RateLimits(new_orders_per_3h=3)
    ledger = orders_at(NOW, NOW + MINUTE, NOW + 2 * MINUTE)
    later = NOW + 10 * MINUTE
    assert when_allowed(ledger, limits, ["a.test"], later, renewal=True) == NOW + NEW_ORDER_WINDOW
    assert when_allowed(ledger, limits, ["a.test"], NOW + NEW_ORDER_WINDOW - TICK, renewal=True) is not None
    assert when_allowed(ledger, limits, ["a.test"], NOW + NEW_ORDER_WINDOW, renewal=True) is None
    # Two orders left of three: still allowed before the window moves.
    assert when_allowed(orders_at(NOW, NOW), limits, ["a.test"], later, renewal=False) is None


def test_300_orders_in_3_hours_by_default() -> None:
    ledger = orders_at(*(NOW + i * 30 * timedelta(seconds=1) for i in range(300)))
    last = NOW + 299 * timedelta(seconds=30)
    assert when_allowed(ledger, LE, ["a.test"], last, renewal=True) == NOW + NEW_ORDER_WINDOW
    assert when_allowed(ledger.pruned(last), LE, ["a.test"], last, renewal=True) == NOW + NEW_ORDER_WINDOW
    assert usage(ledger, LE, last)["new_orders_per_3h"] == 1.0


def test_a_name_that_failed_5_times_in_the_last_hour_waits() -> None:
    ledger = Ledger()
    for i in range(5):
        ledger = record_failed_validation(ledger, ["bad.test"], NOW + i * MINUTE)
    later = NOW + 30 * MINUTE
    assert when_allowed(ledger, LE, ["ok.test", "BAD.test"], later, renewal=False) == NOW + FAILED_VALIDATION_WINDOW
    assert when_allowed(ledger, LE, ["ok.test"], later, renewal=False) is None
    assert when_allowed(ledger, LE, ["bad.test"], NOW + FAILED_VALIDATION_WINDOW, renewal=False) is None
    # Four failures are still within budget.
    ledger = record_failed_validation(Ledger(), ["bad.test", "other.test"], NOW)
    ledger = record_failed_validation(ledger, ["bad.test"], NOW)
    assert when_allowed(ledger, RateLimits(failed_validations_per_name_per_hour=3), ["bad.test"], NOW, renewal=False) is None


def test_duplicate_certificates_count_the_exact_set_of_names() -> None:
    ledger = Ledger()
    for day in range(5):
        ledger = record_issued(ledger, ["www.a.test", "a.test"], NOW + day * timedelta(days=1), renewal=True)
    later = NOW + timedelta(days=5)
    expected = NOW + CERTIFICATE_WINDOW
    assert when_allowed(ledger, LE, ["A.test", "WWW.a.test"], later, renewal=True) == expected
    assert when_allowed(ledger, LE, ["a.test", "www.a.test"], later, renewal=False) == expected
    assert when_allowed(ledger, LE, ["a.test"], later, renewal=False) is None  # another set
    assert when_allowed(ledger, LE, ["a.test", "www.a.test", "b.a.test"], later, renewal=False) is None
    assert when_allowed(ledger, LE, ["a.test", "www.a.test"], expected, renewal=True) is None


def test_certificates_per_registered_domain_exempt_renewals() -> None:
    limits = RateLimits(certificates_per_domain_per_week=3)
    ledger = record_issued(Ledger(), ["one.example.test"], NOW)
    ledger = record_issued(ledger, ["*.two.example.test", "two.example.test"], NOW + MINUTE)
    ledger = record_issued(ledger, ["three.example.test", "three.other.test"], NOW + 2 * MINUTE)
    later = NOW + timedelta(days=1)
    assert when_allowed(ledger, limits, ["four.example.test"], later, renewal=False) == NOW + CERTIFICATE_WINDOW
    assert when_allowed(ledger, limits, ["*.EXAMPLE.test"], later, renewal=False) == NOW + CERTIFICATE_WINDOW
    assert when_allowed(ledger, limits, ["four.example.test"], later, renewal=True) is None
    assert when_allowed(ledger, limits, ["four.other.test"], later, renewal=False) is None  # other.test: 1 of 3
    # A renewal recorded as such is not counted; one recorded without saying so is (stricter).
    assert when_allowed(record_issued(Ledger(), ["x.example.test"], NOW, renewal=True),
                        RateLimits(certificates_per_domain_per_week=1), ["y.example.test"], later, renewal=False) is None
    assert when_allowed(record_issued(Ledger(), ["x.example.test"], NOW),
                        RateLimits(certificates_per_domain_per_week=1), ["y.example.test"], later, renewal=False) is not None


def test_the_answer_is_the_latest_of_the_full_buckets() -> None:
    limits = RateLimits(new_orders_per_3h=1, failed_validations_per_name_per_hour=1, duplicate_certificates_per_week=1)
    ledger = spend_order(Ledger(), NOW)
    ledger = record_failed_validation(ledger, ["a.test"], NOW + MINUTE)
    ledger = record_issued(ledger, ["b.test"], NOW + 2 * MINUTE)
    at = NOW + 3 * MINUTE
    assert when_allowed(ledger, limits, ["a.test"], at, renewal=True) == NOW + NEW_ORDER_WINDOW
    assert when_allowed(ledger, limits, ["a.test", "b.test"], at, renewal=True) == NOW + NEW_ORDER_WINDOW
    assert when_allowed(ledger, limits, ["b.test"], at, renewal=True) == NOW + 2 * MINUTE + CERTIFICATE_WINDOW


def test_conservative_ledger_admits_nothing_for_an_hour() -> None:
    ledger = Ledger.conservative(NOW)
    for names in (["a.test"], ["b.test", "*.c.test"]):
        for renewal in (True, False):
            assert when_allowed(ledger, LE, names, NOW, renewal=renewal) == NOW + CONSERVATIVE_HOLD
            assert when_allowed(ledger, LE, names, NOW + CONSERVATIVE_HOLD - TICK, renewal=renewal) is not None
            assert when_allowed(ledger, LE, names, NOW + CONSERVATIVE_HOLD, renewal=renewal) is None
    # Spending keeps the hold; the hold goes once it is over.
    assert spend_order(ledger, NOW + MINUTE).blocked_until == NOW + CONSERVATIVE_HOLD
    assert ledger.pruned(NOW + CONSERVATIVE_HOLD).blocked_until is None
    assert Ledger.from_json(json.loads(json.dumps(ledger.to_json()))) == ledger


def test_usage_is_the_fullest_bucket_of_each_kind() -> None:
    ledger = orders_at(NOW, NOW)
    ledger = record_failed_validation(ledger, ["a.test", "b.test"], NOW)
    ledger = record_failed_validation(ledger, ["a.test"], NOW)
    ledger = record_issued(ledger, ["a.test"], NOW)
    ledger = record_issued(ledger, ["x.a.test"], NOW)
    ledger = record_issued(ledger, ["a.test"], NOW, renewal=True)
    limits = RateLimits(new_orders_per_3h=4, failed_validations_per_name_per_hour=4)
    assert usage(ledger, limits, NOW) == {
        "new_orders_per_3h": 0.5,
        "failed_validations_per_name_per_hour": 0.5,
        "duplicate_certificates_per_week": 2 / 5,
        "certificates_per_domain_per_week": 2 / 50,
    }
    assert set(usage(ledger, limits, NOW + CERTIFICATE_WINDOW).values()) == {0.0}


def test_recording_prunes_what_no_bucket_counts() -> None:
    ledger = orders_at(NOW)
    ledger = record_failed_validation(ledger, ["a.test"], NOW)
    ledger = record_issued(ledger, ["a.test"], NOW)
    ledger = spend_order(ledger, NOW + NEW_ORDER_WINDOW)
    assert ledger.orders == (NOW + NEW_ORDER_WINDOW,)
    assert ledger.failed_validations == ()
    assert [cert.at for cert in ledger.issued] == [NOW]
    assert spend_order(ledger, NOW + CERTIFICATE_WINDOW).issued == ()


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2030, 1, 1)  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        when_allowed(Ledger(), LE, ["a.test"], naive, renewal=False)
    with pytest.raises(ValueError, match="timezone-aware"):
        spend_order(Ledger(), naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        Ledger(issued=(Issued(naive, ("a.test",)),))


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 2},
        {"version": True},
        {"version": 1, "orders": {}},
        {"version": 1, "orders": [1.5]},
        {"version": 1, "orders": [True]},
        {"version": 1, "orders": ["2030-01-01T00:00:00+00:00"]},
        {"version": 1, "orders": [10**20]},
        {"version": 1, "failed_validations": [[1, 2]]},
        {"version": 1, "failed_validations": [[1, ""]]},
        {"version": 1, "failed_validations": [[1]]},
        {"version": 1, "issued": [[1, [], False]]},
        {"version": 1, "issued": [[1, ["a.test"], "no"]]},
        {"version": 1, "issued": [[1, "a.test", False]]},
        {"version": 1, "issued": [[1, [7], False]]},
        {"version": 1, "blocked_until": "soon"},
        {"version": 1, "pending": [[1, ["a.test"]]]},
        {"version": 1, "pending": {}},
    ],
)
def test_malformed_json_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        Ledger.from_json(data)


# --- properties --------------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]),
)
NAMES = ["a.one.test", "www.a.one.test", "*.one.test", "b.two.test", "c.two.test", "THREE.test"]
name_sets = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)
small_limits = st.builds(
    RateLimits,
    new_orders_per_3h=st.integers(1, 4),
    failed_validations_per_name_per_hour=st.integers(1, 3),
    duplicate_certificates_per_week=st.integers(1, 3),
    certificates_per_domain_per_week=st.integers(1, 4),
)
ledgers = st.builds(
    Ledger,
    orders=st.lists(moments, max_size=8).map(tuple),
    failed_validations=st.lists(st.tuples(moments, st.sampled_from(NAMES)), max_size=8).map(tuple),
    issued=st.lists(
        st.builds(Issued, moments, name_sets.map(tuple), st.booleans(), st.booleans()), max_size=8
    ).map(tuple),
    blocked_until=st.none() | moments,
)


@dataclass
class Oracle:
    """Every event ever recorded, never pruned, and the CA's rule counted by brute force."""

    limits: RateLimits
    orders: list[datetime] = field(default_factory=list)
    failures: list[tuple[datetime, str]] = field(default_factory=list)
    issued: list[tuple[datetime, frozenset[str], bool]] = field(default_factory=list)

    def counts(self, at: datetime, *, upto: datetime | None = None) -> dict[str, dict[object, int]]:
        """Every bucket's count at ``at``: events with ``at - window < t`` (and ``t <= upto``, if given)."""
        buckets: dict[str, dict[object, int]] = {"orders": {}, "failures": {}, "duplicates": {}, "domains": {}}

        def add(kind: str, key: object) -> None:
            buckets[kind][key] = buckets[kind].get(key, 0) + 1

        def counted(t: datetime, window: timedelta) -> bool:
            return t > at - window and (upto is None or t <= upto)

        for t in self.orders:
            if counted(t, NEW_ORDER_WINDOW):
                add("orders", None)
        for t, name in self.failures:
            if counted(t, FAILED_VALIDATION_WINDOW):
                add("failures", name)
        for t, names, renewal in self.issued:
            if counted(t, CERTIFICATE_WINDOW):
                add("duplicates", names)
                if not renewal:
                    for domain in {registered_domain(name) for name in names}:
                        add("domains", domain)
        return buckets

    def allows(self, names: frozenset[str], at: datetime, *, renewal: bool) -> bool:
        counts = self.counts(at)
        limits = self.limits
        return (
            counts["orders"].get(None, 0) < limits.new_orders_per_3h
            and all(counts["failures"].get(name, 0) < limits.failed_validations_per_name_per_hour for name in names)
            and counts["duplicates"].get(names, 0) < limits.duplicate_certificates_per_week
            and (
                renewal
                or all(
                    counts["domains"].get(registered_domain(name), 0) < limits.certificates_per_domain_per_week
                    for name in names
                )
            )
        )

    def within_limits(self) -> bool:
        """Whether every sliding window, ``(m - window, m]``, held at most its limit at every moment ``m``.

        A count only rises at an event, so checking at every event's moment covers every moment.
        """
        limits = self.limits
        moments = self.orders + [t for t, _ in self.failures] + [t for t, _, _ in self.issued]
        for at in moments:
            counts = self.counts(at, upto=at)
            if (
                max(counts["orders"].values(), default=0) > limits.new_orders_per_3h
                or max(counts["failures"].values(), default=0) > limits.failed_validations_per_name_per_hour
                or max(counts["duplicates"].values(), default=0) > limits.duplicate_certificates_per_week
                or max(counts["domains"].values(), default=0) > limits.certificates_per_domain_per_week
            ):
                return False
        return True


steps = st.lists(
    st.tuples(
        st.sampled_from([timedelta(0), timedelta(minutes=7), timedelta(minutes=50), timedelta(hours=2), timedelta(days=2)])
        | st.none(),  # None: jump to the moment the last refusal named
        name_sets,
        st.booleans(),  # renewal
        st.sampled_from(["fail", "issue", "nothing"]),
        st.integers(0, 2**16),  # which of the names fail
    ),
    max_size=60,
)


@given(limits=small_limits, start=moments, steps=steps)
def test_a_client_that_asks_never_exceeds_a_bucket(
    limits: RateLimits, start: datetime, steps: list[tuple[timedelta | None, list[str], bool, str, int]]
) -> None:
    """Attempts that start only when ``when_allowed`` says None keep every sliding window within its limit;
    and every answer agrees with a brute-force count: None exactly when allowed, else the earliest moment."""
    ledger, oracle, now, refused_until = Ledger(), Oracle(limits), start, None
    for advance, names, renewal, outcome, pick in steps:
        if advance is not None:
            now += advance
        elif refused_until is not None and refused_until > now:
            now = refused_until  # exactly the moment named: the boundary
        key = frozenset(names_key(names))
        answer = when_allowed(ledger, limits, names, now, renewal=renewal)
        assert (answer is None) == oracle.allows(key, now, renewal=renewal)
        if answer is not None:
            assert answer > now
            assert oracle.allows(key, answer, renewal=renewal)
            assert not oracle.allows(key, answer - TICK, renewal=renewal)
            refused_until = answer
            continue
        ledger = spend_order(ledger, now)
        oracle.orders.append(now)
        if outcome == "fail":
            failed = [name for i, name in enumerate(sorted(key)) if pick >> i & 1] or sorted(key)[:1]
            ledger = record_failed_validation(ledger, failed, now)
            oracle.failures.extend((now, name) for name in failed)
        elif outcome == "issue":
            ledger = record_issued(ledger, names, now, renewal=renewal)
            oracle.issued.append((now, key, renewal))
        assert max(usage(ledger, limits, now).values()) <= 1.0
    assert oracle.within_limits()


@given(ledger=ledgers)
def test_json_round_trip(ledger: Ledger) -> None:
    data = json.loads(json.dumps(ledger.to_json()))
    again = Ledger.from_json(data)
    assert again == ledger
    assert again.to_json() == data


@given(ledger=ledgers, limits=small_limits, now=moments, later=st.timedeltas(timedelta(0), timedelta(days=9)),
       names=name_sets, renewal=st.booleans())
def test_pruning_changes_no_answer(
    ledger: Ledger, limits: RateLimits, now: datetime, later: timedelta, names: list[str], renewal: bool
) -> None:
    pruned = ledger.pruned(now)
    assert len(pruned.orders) <= len(ledger.orders)
    at = now + later
    assert when_allowed(pruned, limits, names, at, renewal=renewal) == when_allowed(
        ledger, limits, names, at, renewal=renewal
    )
    assert usage(pruned, limits, at) == usage(ledger, limits, at)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(
    base=ledgers,
    key=st.sampled_from(["orders", "failed_validations", "issued", "pending", "blocked_until", "version"]),
    value=json_values,
)
def test_damaged_json_parses_or_raises_value_error(base: Ledger, key: str, value: object) -> None:
    data = base.to_json()
    data[key] = value
    try:
        Ledger.from_json(data)
    except ValueError:
        pass


# --- orders in flight: reserve, settle, release -------------------------------------------------


def test_a_pending_certificate_is_stored_apart_and_an_old_ledger_still_loads() -> None:
    ledger = reserve(Ledger(), reservation(["a.test"], NOW, renewal=False), NOW)
    data = ledger.to_json()
    micros = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // TICK
    assert data["issued"] == [] and data["pending"] == [[micros, ["a.test"], False]]
    assert Ledger.from_json(json.loads(json.dumps(data))) == ledger
    old = {"version": 1, "orders": [], "failed_validations": [], "issued": [[0, ["a.test"], True]]}
    assert Ledger.from_json(old).issued == (Issued(datetime(1970, 1, 1, tzinfo=UTC), ("a.test",), True),)


def test_a_pending_certificate_counts_in_every_bucket_a_certificate_counts_in() -> None:
    limits = RateLimits(duplicate_certificates_per_week=1, certificates_per_domain_per_week=1)
    entry = reservation(["www.a.test"], NOW, renewal=False)
    ledger = reserve(Ledger(), entry, NOW)
    assert when_allowed(ledger, limits, ["b.a.test"], NOW, renewal=False) == NOW + CERTIFICATE_WINDOW  # domain
    assert when_allowed(ledger, limits, ["www.a.test"], NOW, renewal=True) == NOW + CERTIFICATE_WINDOW  # duplicate
    assert usage(ledger, limits, NOW)["certificates_per_domain_per_week"] == 1.0
    renewing = reserve(Ledger(), reservation(["www.a.test"], NOW, renewal=True), NOW)
    assert when_allowed(renewing, limits, ["b.a.test"], NOW, renewal=False) is None  # a renewal, as when issued


def test_orders_in_flight_are_asked_again_soon_and_stale_ones_wait_for_the_window() -> None:
    limits = RateLimits(certificates_per_domain_per_week=1)
    entry = reservation(["a.test"], NOW, renewal=False)
    ledger = reserve(Ledger(), entry, NOW)
    assert when_reservable(ledger, limits, ["b.a.test"], NOW, renewal=False, retry=MINUTE) == NOW + MINUTE
    later = NOW + PENDING_BOUND  # no order runs this long: its certificate may have been issued
    assert when_reservable(ledger, limits, ["b.a.test"], later, renewal=False, retry=MINUTE) == NOW + CERTIFICATE_WINDOW
    issued = record_issued(Ledger(), ["a.test"], NOW)
    assert when_reservable(issued, limits, ["b.a.test"], NOW, renewal=False, retry=MINUTE) == NOW + CERTIFICATE_WINDOW
    # A certificate fills the bucket for 2 more minutes, an order in flight after that: ask again then.
    mixed = reserve(record_issued(Ledger(), ["a.test"], NOW - CERTIFICATE_WINDOW + 2 * MINUTE), entry, NOW)
    assert when_reservable(mixed, limits, ["b.a.test"], NOW, renewal=False, retry=MINUTE) == NOW + 2 * MINUTE
    with pytest.raises(ValueError, match="pending"):
        reserve(Ledger(), Issued(NOW, ("a.test",)), NOW)


def test_release_frees_the_room_at_once_and_settle_counts_at_issuance() -> None:
    limits = RateLimits(certificates_per_domain_per_week=1)
    entry = reservation(["a.test"], NOW, renewal=False)
    ledger = reserve(Ledger(), entry, NOW)
    assert when_allowed(release(ledger, entry, NOW + MINUTE), limits, ["b.a.test"], NOW + MINUTE, renewal=False) is None
    settled = settle(ledger, entry, NOW + 5 * MINUTE)
    assert settled.issued == (Issued(NOW + 5 * MINUTE, ("a.test",)),)
    assert when_allowed(settled, limits, ["b.a.test"], NOW, renewal=False) == NOW + 5 * MINUTE + CERTIFICATE_WINDOW


@given(ledger=ledgers, limits=small_limits, now=moments, names=name_sets, renewal=st.booleans(), asked=name_sets,
       asked_renewal=st.booleans(), later=st.timedeltas(timedelta(0), timedelta(days=8)))
def test_reserve_then_release_gives_back_the_ledgers_admissions(
    ledger: Ledger, limits: RateLimits, now: datetime, names: list[str], renewal: bool, asked: list[str],
    asked_renewal: bool, later: timedelta,
) -> None:
    """Only the order stays spent (the CA counted it): every answer is that of the ledger with one more order."""
    entry = reservation(names, now, renewal=renewal)
    released = release(reserve(ledger, entry, now), entry, now + later)
    at = now + later
    assert when_allowed(released, limits, asked, at, renewal=asked_renewal) == when_allowed(
        spend_order(ledger, now), limits, asked, at, renewal=asked_renewal
    )


@given(ledger=ledgers, now=moments, names=name_sets, renewal=st.booleans(),
       later=st.timedeltas(timedelta(0), PENDING_BOUND))
def test_reserve_then_settle_counts_exactly_one_certificate(
    ledger: Ledger, now: datetime, names: list[str], renewal: bool, later: timedelta
) -> None:
    entry = reservation(names, now, renewal=renewal)
    settled = settle(reserve(ledger, entry, now), entry, now + later)
    assert settled == record_issued(spend_order(ledger, now), names, now + later, renewal=renewal)
    before = spend_order(ledger, now).pruned(now + later).issued
    assert len(settled.issued) == len(before) + 1
    assert sum(cert.pending for cert in settled.issued) == sum(cert.pending for cert in before)


@given(
    limits=small_limits,
    start=moments,
    steps=st.lists(
        st.tuples(
            st.sampled_from([timedelta(0), timedelta(seconds=1), timedelta(minutes=3), timedelta(hours=4)]),
            name_sets,
            st.booleans(),  # renewal
            st.sampled_from(["order", "order", "settle", "release"]),
            st.integers(0, 100),  # which order in flight settles or fails
        ),
        max_size=40,
    ),
)
def test_reservations_never_admit_more_than_a_bucket_holds(
    limits: RateLimits, start: datetime, steps: list[tuple[timedelta, list[str], bool, str, int]]
) -> None:
    """Orders that start whenever ``when_reservable`` says None, then end in any order, issued or failed, keep
    every bucket within its limit: counting the orders in flight, and counting the certificates issued."""
    ledger, now, flying = Ledger(), start, list[Issued]()
    real = Oracle(limits)  # the CA's view: certificates issued, none in flight
    for advance, names, renewal, action, pick in steps:
        now += advance
        if action == "order":
            if when_reservable(ledger, limits, names, now, renewal=renewal, retry=MINUTE) is not None:
                continue
            with_flights = Oracle(limits, real.orders, real.failures, real.issued + [
                (entry.at, frozenset(entry.names), entry.renewal) for entry in flying
            ])
            assert with_flights.allows(frozenset(names_key(names)), now, renewal=renewal)
            entry = reservation(names, now, renewal=renewal)
            ledger = reserve(ledger, entry, now)
            real.orders.append(now)
            flying.append(entry)
        elif flying:
            entry = flying.pop(pick % len(flying))
            if action == "settle":
                ledger = settle(ledger, entry, now)
                real.issued.append((now, frozenset(entry.names), entry.renewal))
            else:
                ledger = release(ledger, entry, now)
        assert max(usage(ledger, limits, now).values()) <= 1.0
    assert real.within_limits()
