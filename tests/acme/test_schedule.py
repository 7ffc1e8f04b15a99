"""The renewal schedule (pure, with hypothesis) and the wall-clock seam it is driven by."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from snakeway.acme.ari import RenewalInfo
from snakeway.acme.schedule import (
    BACKOFF_CAP,
    PERMANENT_BACKOFF,
    RETRY_AFTER_CAP,
    RenewalState,
    backoff_delay,
    is_permanent,
    next_attempt,
    next_check,
    parse_retry_after,
)
from snakeway.clock import SystemClock, sleep_until
from snakeway.testing import TrioLinkedClock
from tests.acme.strategies import DAY, HOUR, NOW, jitters, moments, renewal_infos

# --- back-off ----------------------------------------------------------------------------------


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="jitter"):
        next_attempt(NOW, 1, None, jitter=1.0)
    with pytest.raises(ValueError, match="negative"):
        backoff_delay(-1)
    with pytest.raises(ValueError, match="positive"):
        next_check(NOW, 0, jitter=0.0)




def test_backoff_steps() -> None:
    minutes = [backoff_delay(n) / timedelta(minutes=1) for n in range(7)]
    assert minutes == [0, 1, 10, 100, 360, 360, 360]


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_backoff_is_monotone_and_capped(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert backoff_delay(low) <= backoff_delay(high) <= BACKOFF_CAP


@given(moments, st.integers(1, 100), st.none() | moments, jitters)
def test_next_attempt_respects_now_backoff_and_retry_after(
    now: datetime, failures: int, retry_after: datetime | None, jitter: float
) -> None:
    when = next_attempt(now, failures, retry_after, jitter=jitter)
    assert when >= now + backoff_delay(failures)
    assert when <= max(now + backoff_delay(failures) * 1.1, retry_after or now)
    if retry_after is not None:
        assert when >= retry_after


@given(moments, st.floats(min_value=1.0, max_value=86_400.0), jitters)
def test_next_check_jitter_is_ten_percent(now: datetime, interval: float, jitter: float) -> None:
    delay = (next_check(now, interval, jitter=jitter) - now).total_seconds()
    assert interval * 0.9 - 1e-6 <= delay <= interval * 1.1 + 1e-6


# --- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", NOW + timedelta(seconds=120)),
        (" 30\t", NOW + timedelta(seconds=30)),
        ("9" * 5000, NOW + RETRY_AFTER_CAP),
        ("86400000", NOW + RETRY_AFTER_CAP),
        ("300000000000", NOW + RETRY_AFTER_CAP),
        ("0000000000000060", NOW + timedelta(seconds=60)),
        ("00", None),
        ("Wed, 01 May 2030 13:00:00 GMT", NOW + timedelta(hours=1)),
        ("Wednesday, 01-May-30 13:00:00 GMT", NOW + timedelta(hours=1)),
        ("Wed May  1 13:00:00 2030", NOW + timedelta(hours=1)),
        ("Wed, 01 May 2099 13:00:00 GMT", NOW + RETRY_AFTER_CAP),
        (None, None),
        ("", None),
        ("0", None),
        ("-5", None),
        ("+5", None),
        ("1.5", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not DIGIT
        ("soon", None),
        ("Wed, 01 May 2030 11:00:00 GMT", None),  # in the past
        ("Wed, 31 Feb 2030 13:00:00 GMT", None),
        ("Wed, 01 May 2030 13:00:00 UTC", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: datetime | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_rfc850_two_digit_year_is_never_far_in_the_future() -> None:
    # Seen in 2030, "99" is 1999 (past), not 2099.
    assert parse_retry_after("Friday, 01-Jan-99 00:00:00 GMT", NOW) is None


@given(st.text() | st.from_regex(r"[0-9 ]{0,30}", fullmatch=True), moments)
def test_parse_retry_after_is_total(value: str, now: datetime) -> None:
    result = parse_retry_after(value, now)
    assert result is None or now < result <= now + RETRY_AFTER_CAP


# --- RenewalState ------------------------------------------------------------------------------


def test_state_transitions() -> None:
    state = RenewalState("a.test")
    assert state.may_attempt(NOW)
    once = state.failed(NOW, "connection refused")
    assert (once.failures, once.last_error, once.last_attempt) == (1, "connection refused", NOW)
    assert once.next_attempt == NOW + timedelta(minutes=1)
    assert not once.may_attempt(NOW + timedelta(seconds=59))
    twice = once.failed(NOW, "boom", NOW + timedelta(hours=2), jitter=0.5)
    assert (twice.failures, twice.next_attempt) == (2, NOW + timedelta(hours=2))
    ok = twice.succeeded(NOW + 3 * DAY)
    assert ok == RenewalState("a.test", 0, None, NOW + 3 * DAY, None, NOW + 3 * DAY)
    assert len(state.failed(NOW, "x" * 5000).last_error or "") == 1000


states = st.builds(
    RenewalState,
    name=st.sampled_from(["a.test", "*.b.test"]),
    failures=st.integers(0, 50),
    last_error=st.none() | st.text(),
    last_attempt=st.none() | moments,
    next_attempt=st.none() | moments,
    last_success=st.none() | moments,
    retry_after=st.none() | moments,
    permanent=st.booleans(),
    ari=st.none() | renewal_infos(),
    ari_serial=st.none() | st.text(),
    ari_next_poll=st.none() | moments,
    ari_moment=st.none() | moments,
)


@given(states)
def test_state_json_round_trip(state: RenewalState) -> None:
    assert RenewalState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_state_saved_before_ari_and_floors_existed_still_loads() -> None:
    old = {
        "name": "a.test",
        "failures": 2,
        "last_error": "connection refused",
        "last_attempt": "2030-05-01T12:00:00+00:00",
        "next_attempt": "2030-05-01T12:10:00+00:00",
        "last_success": None,
    }
    state = RenewalState.from_json(old)
    assert state == RenewalState("a.test", 2, "connection refused", NOW, NOW + timedelta(minutes=10))
    assert (state.retry_after, state.permanent, state.ari, state.ari_next_poll) == (None, False, None, None)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": 1},
        {"name": "a.test", "failures": "1"},
        {"name": "a.test", "failures": True},
        {"name": "a.test", "failures": -1},
        {"name": "a.test", "last_attempt": "yesterday"},
        {"name": "a.test", "last_attempt": "2030-01-01T00:00:00"},
        {"name": "a.test", "last_error": 5},
        {"name": "a.test", "permanent": "yes"},
        {"name": "a.test", "permanent": 1},
        {"name": "a.test", "retry_after": 5},
        {"name": "a.test", "ari": "soon"},
        {"name": "a.test", "ari": {"start": "2030-01-01T00:00:00+00:00"}},
        {"name": "a.test", "ari": {"start": "2030-01-02T00:00:00+00:00", "end": "2030-01-01T00:00:00+00:00"}},
        {"name": "a.test", "ari": {"start": "2030-01-01T00:00:00", "end": "2030-01-02T00:00:00+00:00"}},
        {
            "name": "a.test",
            "ari": {"start": "2030-01-01T00:00:00+00:00", "end": "2030-01-02T00:00:00+00:00", "explanation_url": 3},
        },
        {"name": "a.test", "ari_serial": 12},
        {"name": "a.test", "ari_next_poll": "2030-01-01T00:00:00"},
        {"name": "a.test", "ari_moment": "tomorrow"},
    ],
)
def test_state_from_bad_json(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        RenewalState.from_json(data)


def test_retry_after_floor_is_kept_in_the_state() -> None:
    """The CA's floor survives a restart (it is in the saved state) and a later failure without one."""
    floor = NOW + 2 * DAY
    limited = RenewalState("a.test").failed(NOW, "rateLimited", floor)
    assert limited.retry_after == floor and limited.next_attempt == floor
    reloaded = RenewalState.from_json(json.loads(json.dumps(limited.to_json())))
    assert reloaded.retry_after == floor and not reloaded.may_attempt(floor - timedelta(seconds=1))
    again = reloaded.failed(NOW + DAY, "connection refused")  # a forced retry that failed otherwise
    assert again.retry_after == floor and again.next_attempt == floor
    later = again.failed(floor + DAY, "connection refused")  # the floor has passed
    assert later.retry_after is None and later.next_attempt == floor + DAY + backoff_delay(3)


def test_permanent_failure_backs_off_a_day_and_needs_attention() -> None:
    state = RenewalState("a.test").failed(NOW, "caa: forbidden", permanent=True)
    assert state.permanent and state.next_attempt == NOW + PERMANENT_BACKOFF
    assert state.failed(NOW + DAY, "caa", jitter=0.5, permanent=True).next_attempt == NOW + DAY + 1.05 * DAY
    transient = state.failed(NOW + DAY, "connection refused")
    assert not transient.permanent and transient.next_attempt == NOW + DAY + backoff_delay(2)
    assert not state.succeeded(NOW + DAY).permanent


@pytest.mark.parametrize(
    ("problem", "stage", "permanent"),
    [
        ("urn:ietf:params:acme:error:rejectedIdentifier", "order", True),
        ("urn:ietf:params:acme:error:caa", "validation", True),
        ("urn:ietf:params:acme:error:unauthorized", "finalize", True),
        ("urn:ietf:params:acme:error:unauthorized", "order", True),
        ("urn:ietf:params:acme:error:unauthorized", "validation", False),  # a wrong challenge answer
        ("caa", "order", True),
        ("urn:ietf:params:acme:error:malformed", "finalize", True),
        ("urn:ietf:params:acme:error:malformed", "order", False),
        ("urn:ietf:params:acme:error:rateLimited", "order", False),
        ("urn:ietf:params:acme:error:serverInternal", "finalize", False),
        ("urn:ietf:params:acme:error:badNonce", "order", False),
        ("urn:example:caa", "order", False),
        (None, "finalize", False),
    ],
)
def test_is_permanent(problem: str | None, stage: str, permanent: bool) -> None:
    assert is_permanent(problem, stage=stage) is permanent


WINDOW = RenewalInfo(NOW + 60 * DAY, NOW + 62 * DAY, retry_after=NOW + 3 * HOUR)


def test_ari_moment_is_drawn_once_per_window() -> None:
    first = RenewalState("a.test").with_ari(WINDOW, "01ab", NOW, jitter=0.25)
    assert first.ari == WINDOW and first.ari_serial == "01ab"
    assert first.ari_moment == NOW + 60.5 * DAY and first.ari_next_poll == NOW + 3 * HOUR
    same = first.with_ari(RenewalInfo(WINDOW.start, WINDOW.end), "01ab", NOW + 3 * HOUR, jitter=0.75)
    assert same.ari_moment == first.ari_moment  # the same window keeps its moment
    assert same.ari_next_poll == NOW + 9 * HOUR  # no Retry-After this time: 6 h
    moved = RenewalInfo(NOW + 70 * DAY, NOW + 72 * DAY)
    assert same.with_ari(moved, "01ab", NOW, jitter=0.75).ari_moment == NOW + 71.5 * DAY
    assert same.with_ari(WINDOW, "02cd", NOW, jitter=0.75).ari_moment == NOW + 61.5 * DAY  # a new certificate
    stray = replace(first, ari_moment=NOW)  # a kept moment outside its window (a hand-edited file)
    assert stray.with_ari(WINDOW, "01ab", NOW, jitter=0.5).ari_moment == NOW + 61 * DAY


def test_failed_ari_poll_keeps_the_answer_and_asks_again_in_6_hours() -> None:
    state = RenewalState("a.test").with_ari(WINDOW, "01ab", NOW, jitter=0.5)
    failed = state.ari_failed(NOW + 3 * HOUR, "renewalInfo without end")
    assert (failed.ari, failed.ari_moment, failed.ari_serial) == (state.ari, state.ari_moment, state.ari_serial)
    assert failed.ari_next_poll == NOW + 9 * HOUR
    assert RenewalState("a.test").ari_failed(NOW, "HTTP 500").ari_next_poll == NOW + 6 * HOUR


def test_success_forgets_failures_and_the_old_ari_answer() -> None:
    state = RenewalState("a.test").with_ari(WINDOW, "01ab", NOW, jitter=0.5).failed(NOW, "boom", NOW + HOUR)
    renewed = state.succeeded(NOW + 2 * HOUR)
    assert renewed == RenewalState("a.test", last_attempt=NOW + 2 * HOUR, last_success=NOW + 2 * HOUR)
    assert renewed.ari_next_poll is None  # asked about the new certificate at once


def test_a_corrupt_state_file_keeps_the_longest_back_off() -> None:
    state = RenewalState.conservative("a.test", NOW, "Expecting value: line 1 column 1")
    assert not state.may_attempt(NOW + BACKOFF_CAP - timedelta(seconds=1))
    assert state.may_attempt(NOW + BACKOFF_CAP)
    assert "corrupt" in (state.last_error or "") and "Expecting value" in (state.last_error or "")
    assert state.failed(NOW + BACKOFF_CAP, "boom").next_attempt == NOW + 2 * BACKOFF_CAP  # still at the cap
    assert RenewalState.from_json(state.to_json()) == state


@given(states, moments, st.none() | moments, jitters, st.booleans())
def test_failed_never_retries_before_the_floor(
    state: RenewalState, now: datetime, retry_after: datetime | None, jitter: float, permanent: bool
) -> None:
    after = state.failed(now, "boom", retry_after, jitter, permanent=permanent)
    assert after.next_attempt is not None
    for floor in (retry_after, state.retry_after if state.retry_after and state.retry_after > now else None):
        if floor is not None:
            assert after.next_attempt >= floor and after.retry_after is not None and after.retry_after >= floor
    assert after.next_attempt >= now + (PERMANENT_BACKOFF if permanent else backoff_delay(after.failures))


@given(states, renewal_infos(), st.text(), moments, jitters, jitters)
def test_with_ari_moment_is_inside_the_window(
    state: RenewalState, info: RenewalInfo, serial: str, now: datetime, j1: float, j2: float
) -> None:
    once = state.with_ari(info, serial, now, j1)
    assert once.ari_moment is not None and info.start <= once.ari_moment <= info.end
    assert once.with_ari(info, serial, now, j2).ari_moment == once.ari_moment
    assert once.ari_next_poll is not None and now < once.ari_next_poll <= now + DAY


# --- the clock seam ----------------------------------------------------------------------------


def test_system_clock_is_aware_utc() -> None:
    assert SystemClock().now().utcoffset() == timedelta(0)


def test_linked_clock_needs_aware_epoch() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TrioLinkedClock(datetime(2030, 1, 1))  # noqa: DTZ001


async def test_sleep_until_covers_60_days_under_autojump(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(NOW - timedelta(seconds=trio.current_time()))
    target = NOW + 60 * DAY
    await sleep_until(clock, target)
    assert target <= clock.now() < target + timedelta(seconds=1)


async def test_sleep_until_past_moment_only_checkpoints(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(NOW)
    start = trio.current_time()
    await sleep_until(clock, NOW - DAY)
    assert trio.current_time() == start


async def test_sleep_until_notices_a_wall_clock_jump(autojump_clock: trio.testing.MockClock) -> None:
    class JumpyClock:
        """Wall time that jumps a day ahead after the first hour (a resumed laptop)."""

        def now(self) -> datetime:
            elapsed = trio.current_time()
            return NOW + timedelta(seconds=elapsed) + (DAY if elapsed >= 3600 else timedelta(0))

    start = trio.current_time()
    await sleep_until(JumpyClock(), NOW + DAY, max_nap=600)
    assert trio.current_time() - start == pytest.approx(3600)


def test_the_back_off_shrinks_close_to_expiry() -> None:
    # 8 hours left: a tenth of that, not the 6-hour cap.
    assert next_attempt(NOW, 9, None, jitter=0.0, expires=NOW + 8 * HOUR) == NOW + 48 * timedelta(minutes=1)
    # Far from expiry: the ordinary back-off; never under the first step; a permanent failure waits its day.
    assert next_attempt(NOW, 9, None, jitter=0.0, expires=NOW + 90 * DAY) == NOW + 6 * HOUR
    assert next_attempt(NOW, 9, None, jitter=0.0, expires=NOW + timedelta(minutes=2)) == NOW + timedelta(minutes=1)
    assert next_attempt(NOW, 9, None, jitter=0.0, permanent=True, expires=NOW + HOUR) == NOW + DAY
    assert next_attempt(NOW, 9, None, jitter=0.0, expires=NOW - HOUR) == NOW + 6 * HOUR  # expired already
    # The CA's Retry-After still wins.
    floor = NOW + 3 * HOUR
    assert next_attempt(NOW, 9, floor, jitter=0.0, expires=NOW + 8 * HOUR) == floor
