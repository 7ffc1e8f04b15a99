"""When the supervisor restarts a dead worker, and when it gives up."""

from __future__ import annotations

import signal

from hypothesis import given
from hypothesis import strategies as st

from snakeway.restarts import (
    MAX_RESTART_DELAY,
    QUICK_EXIT_SECONDS,
    QUICK_EXITS_TO_GIVE_UP,
    Streak,
    after_death,
    restart_delay,
)

SIGKILL, SIGSEGV = -signal.SIGKILL, -signal.SIGSEGV
EARLY, LATE = 0.1, QUICK_EXIT_SECONDS + 60

# Ways a worker ends: killed from outside, failed by itself (exit codes, a crash on a signal).
KILLS = st.sampled_from([-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP])
FAILURES = st.sampled_from([0, 1, 2, 70, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS])


def delays(deaths: list[tuple[float, int]]) -> list[float | None]:
    """The restart delays the supervisor uses for a slot whose workers die one after another so."""
    streak, out = Streak(), []
    for lived, code in deaths:
        streak, delay = after_death(streak, lived=lived, code=code)
        out.append(delay)
    return out


def test_a_worker_killed_at_every_start_is_restarted_ever_more_slowly() -> None:
    assert delays([(EARLY, SIGKILL)] * 8) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_one_that_ran_for_a_while_is_restarted_at_once_and_ends_the_streak() -> None:
    assert delays([(EARLY, SIGKILL), (EARLY, SIGKILL), (LATE, SIGKILL), (EARLY, SIGKILL)]) == [0.5, 1.0, 0.0, 0.5]
    assert delays([(EARLY, 1), (EARLY, 1), (LATE, 1), (EARLY, 1), (EARLY, 1)]) == [0.5, 1.0, 0.0, 0.5, 1.0]


def test_three_failures_at_start_in_a_row_give_up_kills_do_not_count() -> None:
    assert delays([(EARLY, 1), (EARLY, SIGSEGV), (EARLY, 0)]) == [0.5, 1.0, None]
    # A kill between failures neither counts nor breaks the run; it is backed off all the same.
    assert delays([(EARLY, 1), (EARLY, SIGKILL), (EARLY, 1), (EARLY, SIGKILL), (EARLY, 1)]) == [
        0.5, 1.0, 2.0, 4.0, None,
    ]


@given(st.lists(st.tuples(st.booleans(), st.one_of(KILLS, FAILURES)), max_size=40))
def test_back_off_and_giving_up_follow_the_streak(deaths: list[tuple[bool, int]]) -> None:
    streak = Streak()
    quick_in_a_row = failures_in_a_row = 0
    for quick, code in deaths:
        streak, delay = after_death(streak, lived=EARLY if quick else LATE, code=code)
        failed = code >= 0 or -code in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)
        quick_in_a_row = quick_in_a_row + 1 if quick else 0
        failures_in_a_row = (failures_in_a_row + failed) if quick else 0
        if failures_in_a_row >= QUICK_EXITS_TO_GIVE_UP:
            assert delay is None
            return
        assert delay == restart_delay(quick_in_a_row)
        assert 0 <= delay <= MAX_RESTART_DELAY
        assert (delay == 0) == (not quick)


@given(st.integers(min_value=1, max_value=10_000))
def test_the_delay_grows_until_the_cap(deaths: int) -> None:
    assert restart_delay(deaths) <= restart_delay(deaths + 1) <= MAX_RESTART_DELAY
    assert restart_delay(deaths) > 0
