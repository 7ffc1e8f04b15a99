"""decide(renew=True), the forced renewal of POST /admin/certs/{id}/renew: orders whatever the renewal moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from snakeway.acme.decide import Order, Stored, Wait, decide
from snakeway.acme.schedule import RenewalState

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PERIODIC = NOW + timedelta(minutes=10)


def run(state: RenewalState, stored: Stored | None, *, renew: bool, ari: bool = False) -> object:
    return decide(now=NOW, state=state, stored=stored, renew_within=None, ari=ari, periodic=PERIODIC, renew=renew)


@given(age_days=st.floats(0, 29), ari=st.booleans(), failures=st.integers(0, 5))
def test_a_healthy_certificate_is_ordered_at_once(age_days: float, ari: bool, failures: int) -> None:
    stored = Stored(NOW - timedelta(days=age_days), NOW - timedelta(days=age_days) + timedelta(days=90), "01", True)
    state = RenewalState("a.test")
    for _ in range(failures):  # a back-off in progress is skipped, as by a retry
        state = state.failed(NOW - timedelta(minutes=1), "refused", None, 0.5)
    assert not isinstance(run(state, stored, renew=False, ari=ari), Order)  # wait, or ask ARI first
    action = run(state, stored, renew=True, ari=ari)
    assert isinstance(action, Order) and action.renewal


def test_never_before_the_cas_retry_after() -> None:
    stored = Stored(NOW - timedelta(days=1), NOW + timedelta(days=89), "01", True)
    state = RenewalState("a.test", retry_after=NOW + timedelta(hours=2))
    action = run(state, stored, renew=True)
    assert isinstance(action, Wait) and action.until == NOW + timedelta(hours=2)
