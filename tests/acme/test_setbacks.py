"""What a renewal keeps when it goes wrong (pure): a failed order's record, unsaved certificates, the store away."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import trio

from snakeway.acme import issuers
from snakeway.acme.schedule import PERMANENT_BACKOFF, RenewalState
from snakeway.acme.setbacks import (
    MAX_NAMES,
    STORE_RETRY_JITTER,
    STORE_RETRY_SECONDS,
    Failure,
    StoreOutage,
    Unsaved,
    fall_back,
)
from snakeway.acme.store import StoreError
from snakeway.clock import SystemClock
from snakeway.errors import IssuanceError
from tests.acme.strategies import NOW
from tests.acme.test_fence_renewer import other_nodes_certificate

CAS = ["https://one.test/dir", "https://two.test/dir"]
ACME = "urn:ietf:params:acme:error:"


def _error(problem: str | None, *, stage: str | None = "order", retry_after: timedelta | None = None) -> IssuanceError:
    exc = IssuanceError("refused", status=403, problem_type=problem,
                        retry_after=NOW + retry_after if retry_after is not None else None)
    exc.stage = stage
    return exc


def test_a_refused_name_is_permanent_a_failed_challenge_is_not() -> None:
    assert Failure.of(_error(ACME + "rejectedIdentifier"), ["a.test"]).permanent
    assert not Failure.of(_error(ACME + "unauthorized", stage="validation"), ["a.test"]).permanent
    assert Failure.of(_error(ACME + "unauthorized", stage=None), ["a.test"]).permanent  # no stage: the order's


def test_too_many_names_or_a_missing_profile_is_permanent_whatever_the_ca_said() -> None:
    names = [f"n{i}.test" for i in range(MAX_NAMES + 1)]
    assert Failure.of(_error(None), names).permanent
    assert not Failure.of(_error(None), names[:MAX_NAMES]).permanent
    assert Failure.of(_error(issuers.PROFILE_UNAVAILABLE), ["a.test"]).permanent


def test_a_timeout_is_recorded_with_a_reason_and_no_retry_after() -> None:
    failure = Failure.of(trio.TooSlowError(), ["a.test"])
    assert failure == Failure("issuance timed out", None, None, False)


def test_the_record_keeps_the_cas_retry_after_and_a_permanent_failure_waits_a_day() -> None:
    state = RenewalState(name="a.test")
    slow = Failure.of(_error(ACME + "rateLimited", retry_after=timedelta(hours=5)), ["a.test"])
    recorded = slow.recorded(state, NOW, 0.0, None)
    assert (recorded.failures, recorded.last_error, recorded.retry_after) == (1, "refused", NOW + timedelta(hours=5))
    assert recorded.next_attempt is not None and recorded.next_attempt >= NOW + timedelta(hours=5)
    hopeless = Failure.of(_error(ACME + "caa"), ["a.test"]).recorded(state, NOW, 0.0, None)
    assert hopeless.permanent and hopeless.next_attempt == NOW + PERMANENT_BACKOFF


def test_fall_back_moves_to_the_next_ca_after_the_threshold_and_round_to_the_first() -> None:
    once = Failure.of(_error(None), ["a.test"]).recorded(RenewalState(name="a.test"), NOW, 0.0, None)
    assert fall_back(once, 0, CAS, 2, NOW) is once  # one failure of two: stay
    twice = Failure.of(_error(None), ["a.test"]).recorded(once, NOW, 0.0, None)
    moved = fall_back(twice, 0, CAS, 2, NOW)
    assert (moved.issuer, moved.failures, moved.next_attempt) == (CAS[1], 0, NOW)
    back = fall_back(twice, 1, CAS, 2, NOW)
    assert back.issuer is None  # the first CA again
    assert fall_back(twice, 0, CAS[:1], 2, NOW) is twice  # one CA: nowhere to go


def test_a_permanent_failure_falls_back_at_once() -> None:
    hopeless = Failure.of(_error(ACME + "caa"), ["a.test"]).recorded(RenewalState(name="a.test"), NOW, 0.0, None)
    assert fall_back(hopeless, 0, CAS, 3, NOW).issuer == CAS[1]


def test_unsaved_certificates_are_kept_restated_and_dropped() -> None:
    bundle = other_nodes_certificate(SystemClock())
    unsaved = Unsaved()
    assert unsaved.get("a") is None and "a" not in unsaved and not unsaved.drop("a")
    unsaved.restate("a", RenewalState(name="a.test"))  # nothing kept: nothing to restate
    assert unsaved.get("a") is None
    first, later = RenewalState(name="a.test", failures=1), RenewalState(name="a.test", failures=2)
    unsaved.keep("a", bundle, first)
    assert "a" in unsaved and unsaved.get("a") == (bundle, first)
    unsaved.restate("a", later)
    assert unsaved.get("a") == (bundle, later)
    assert unsaved.drop("a") and unsaved.get("a") is None and not unsaved.drop("a")


def test_a_store_outage_is_said_once_and_retried_within_the_jittered_delay(caplog: pytest.LogCaptureFixture) -> None:
    watch = StoreOutage()
    caplog.set_level(logging.INFO, logger="snakeway.acme.manager")
    assert watch.away(StoreError("down"), NOW, 0.0) == NOW + timedelta(seconds=STORE_RETRY_SECONDS)
    longest = NOW + timedelta(seconds=STORE_RETRY_SECONDS * (1 + STORE_RETRY_JITTER * 0.999))
    assert watch.away(StoreError("down"), NOW, 0.999) == longest
    watch.back()
    watch.back()
    messages = [record.getMessage() for record in caplog.records]
    assert [m for m in messages if "unreachable" in m] == [
        "certificate store unreachable (down): renewals wait until it is back; checking every 10-15 s"
    ]
    assert messages.count("certificate store reachable again: renewals resume") == 1
    watch.away(StoreError("down again"), NOW, 0.5)
    assert sum("unreachable (down again)" in record.getMessage() for record in caplog.records) == 1
