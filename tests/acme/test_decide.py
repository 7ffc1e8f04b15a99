"""decide(): the next step for one certificate, synchronously and with hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from snakeway.acme.ari import RenewalInfo
from snakeway.acme.decide import Order, PollAri, SaveAgain, Stored, Wait, decide
from snakeway.acme.schedule import RenewalState

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PERIODIC = NOW + timedelta(minutes=10)


def stored(age: timedelta, lifetime: timedelta, *, covers: bool = True, serial: str = "01") -> Stored:
    return Stored(NOW - age, NOW - age + lifetime, serial, covers)


def run(state: RenewalState | None = None, current: Stored | None = None, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "now": NOW, "state": state or RenewalState("a.test"), "stored": current,
        "renew_within": None, "ari": False, "periodic": PERIODIC,
    }
    args.update(kw)
    return decide(**args)  # type: ignore[arg-type]


def test_a_missing_certificate_is_ordered_first_in_line() -> None:
    action = run()
    assert isinstance(action, Order) and not action.renewal
    assert action.urgency[0] == 0


def test_a_160_hour_certificate_with_renew_within_30_days_is_not_renewed_right_after_issuance() -> None:
    # renew_within_days = 30 used to make such a certificate due at every check.
    action = run(current=stored(timedelta(minutes=5), timedelta(hours=160)), renew_within=timedelta(days=30))
    assert isinstance(action, Wait) and action.until == PERIODIC


def test_a_160_hour_certificate_is_renewed_at_half_its_life() -> None:
    young = run(current=stored(timedelta(hours=79), timedelta(hours=160)), periodic=NOW + DAY)
    assert isinstance(young, Wait) and young.until == NOW + timedelta(hours=1)
    due = run(current=stored(timedelta(hours=80), timedelta(hours=160)))
    assert isinstance(due, Order) and due.renewal and due.urgency[0] == 1


def test_a_certificate_for_fewer_names_is_ordered_again() -> None:
    action = run(current=stored(DAY, 90 * DAY, covers=False))
    assert isinstance(action, Order) and not action.renewal


def test_ari_is_asked_first_for_a_certificate_it_has_no_answer_about() -> None:
    state = RenewalState("a.test", ari_serial="00", ari_next_poll=NOW + DAY)  # about the previous certificate
    assert isinstance(run(state, stored(DAY, 90 * DAY), ari=True), PollAri)
    assert isinstance(run(None, stored(DAY, 90 * DAY), ari=True), PollAri)


def test_ari_is_asked_again_only_when_its_poll_is_due() -> None:
    window = RenewalInfo(NOW + 70 * DAY, NOW + 72 * DAY)
    state = RenewalState("a.test", ari=window, ari_serial="01", ari_next_poll=NOW + timedelta(hours=6),
                         ari_moment=NOW + 71 * DAY)
    waiting = run(state, stored(DAY, 90 * DAY), ari=True, periodic=NOW + DAY)
    assert isinstance(waiting, Wait) and waiting.until == NOW + timedelta(hours=6)
    later = run(state, stored(DAY, 90 * DAY), ari=True, now=NOW + timedelta(hours=6), periodic=NOW + DAY)
    assert isinstance(later, PollAri)


def test_an_ari_window_later_than_the_lifetime_rule_moves_renewal_later() -> None:
    # 90 days, issued 61 days ago: the lifetime rule (a third left) says due; the CA's window says day 70-72.
    window = RenewalInfo(NOW + 9 * DAY, NOW + 11 * DAY)
    state = RenewalState("a.test", ari=window, ari_serial="01", ari_next_poll=NOW + DAY, ari_moment=NOW + 10 * DAY)
    assert isinstance(run(None, stored(61 * DAY, 90 * DAY)), Order)
    action = run(state, stored(61 * DAY, 90 * DAY), ari=True, periodic=NOW + 30 * DAY)
    assert isinstance(action, Wait) and action.until == NOW + DAY  # the next ARI poll comes first


def test_the_emergency_rule_renews_whatever_ari_says() -> None:
    window = RenewalInfo(NOW + 30 * DAY, NOW + 31 * DAY)  # past expiry: a broken CA answer
    state = RenewalState("a.test", ari=window, ari_serial="01", ari_next_poll=NOW + DAY, ari_moment=NOW + 30 * DAY)
    action = run(state, stored(86 * DAY, 90 * DAY), ari=True)  # 4 days left < 90/20 = 4.5 days
    assert isinstance(action, Order)


def test_the_cas_retry_after_holds_even_against_a_forced_retry() -> None:
    state = RenewalState("a.test").failed(NOW - timedelta(minutes=1), "rateLimited", NOW + timedelta(hours=2))
    action = run(state, forced=True)
    assert isinstance(action, Wait) and action.until == NOW + timedelta(hours=2)


def test_a_forced_retry_skips_the_back_off() -> None:
    state = RenewalState("a.test").failed(NOW - timedelta(minutes=1), "connection refused", None)
    state = state.failed(NOW - timedelta(seconds=30), "connection refused", None)
    assert isinstance(run(state), Wait)
    assert isinstance(run(state, forced=True), Order)


def test_a_permanent_failure_waits_a_day() -> None:
    state = RenewalState("a.test").failed(NOW, "caa", None, permanent=True)
    action = run(state)
    assert isinstance(action, Wait) and action.until >= NOW + DAY


def test_an_unsaved_certificate_is_saved_again_never_ordered_again() -> None:
    state = RenewalState("a.test").failed(NOW - timedelta(minutes=2), "disk full", None)
    current = stored(timedelta(0), 90 * DAY)
    assert isinstance(run(state, current, unsaved=True), SaveAgain)
    early = RenewalState("a.test").failed(NOW, "disk full", None)
    waiting = run(early, current, unsaved=True)
    assert isinstance(waiting, Wait) and waiting.until == early.next_attempt


@given(
    age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=200)),
    lifetime=st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=398)),
    renew_within=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100)),
)
def test_never_an_order_with_more_than_half_the_lifetime_left(
    age: timedelta, lifetime: timedelta, renew_within: timedelta | None
) -> None:
    action = run(current=stored(age, lifetime), renew_within=renew_within)
    if lifetime - age > lifetime / 2:
        assert isinstance(action, Wait) and NOW < action.until <= PERIODIC
    if renew_within is None and lifetime - age <= lifetime / 3:  # the default rule: due with a third left
        assert isinstance(action, Order)
