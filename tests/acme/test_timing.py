"""The renewal timing rules: the lifetime rule (snakeway.renewal) and ARI on top of it (snakeway.acme.timing)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from snakeway.acme.ari import RenewalInfo
from snakeway.acme.timing import (
    ARI_DEFAULT_POLL,
    ARI_MAX_POLL,
    ARI_MIN_POLL,
    ari_moment,
    next_ari_poll,
    renewal_moment,
    urgency,
)
from snakeway.renewal import clamped, emergency_time, lifetime_renewal_time, renew_before
from tests.acme.strategies import DAY, HOUR, NOW, jitters, moments, renewal_infos
from tests.acme.strategies import spans as lifetimes

renew_withins = st.none() | lifetimes


def due_at(lifetime: timedelta, renew_within: timedelta | None = None) -> timedelta:
    """How long after issuance the lifetime rule renews a certificate issued at NOW."""
    return lifetime_renewal_time(NOW, NOW + lifetime, renew_within) - NOW


# --- the lifetime rule -------------------------------------------------------------------------


def test_default_renews_with_a_third_of_the_lifetime_left() -> None:
    assert due_at(90 * DAY) == 60 * DAY
    assert due_at(45 * DAY) == 30 * DAY
    assert due_at(10 * DAY) == 10 * DAY * 2 / 3


def test_lifetime_under_10_days_renews_with_half_left() -> None:
    assert due_at(160 * HOUR) == 80 * HOUR  # Let's Encrypt's short-lived profile
    assert due_at(24 * HOUR) == 12 * HOUR  # step-ca's default
    assert due_at(7 * DAY) == 3.5 * DAY


def test_160_hour_certificate_with_renew_within_30_days_is_not_due_right_after_issuance() -> None:
    """A fixed 30-day window made a 6-day certificate due at every check; it is capped at half the lifetime."""
    assert due_at(160 * HOUR, 30 * DAY) == 80 * HOUR
    assert clamped(30 * DAY, NOW, NOW + 160 * HOUR)


def test_configured_renew_within_is_used_up_to_half_the_lifetime() -> None:
    assert due_at(90 * DAY, 10 * DAY) == 80 * DAY
    assert due_at(90 * DAY, 45 * DAY) == 45 * DAY
    assert due_at(90 * DAY, 60 * DAY) == 45 * DAY
    assert not clamped(45 * DAY, NOW, NOW + 90 * DAY)
    assert clamped(45 * DAY + timedelta(microseconds=1), NOW, NOW + 90 * DAY)
    assert not clamped(None, NOW, NOW + 160 * HOUR)


def test_emergency_is_a_twentieth_of_the_lifetime_before_expiry() -> None:
    assert emergency_time(NOW, NOW + 90 * DAY) == NOW + 85.5 * DAY
    assert emergency_time(NOW, NOW + 160 * HOUR) == NOW + 152 * HOUR


def test_a_certificate_never_valid_counts_as_lifetime_zero() -> None:
    assert lifetime_renewal_time(NOW, NOW - DAY) == NOW - DAY
    assert emergency_time(NOW, NOW - DAY) == NOW - DAY
    assert renew_before(NOW, NOW - DAY, 30 * DAY) == timedelta(0)


def test_bad_arguments_are_rejected() -> None:
    naive = datetime(2030, 1, 1)  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        lifetime_renewal_time(naive, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        emergency_time(NOW, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        clamped(DAY, naive, NOW)
    with pytest.raises(ValueError, match="negative"):
        renew_before(NOW, NOW + DAY, -DAY)


@given(moments, lifetimes, renew_withins)
def test_lifetime_rule_renews_inside_the_second_half_of_the_lifetime(
    not_before: datetime, lifetime: timedelta, renew_within: timedelta | None
) -> None:
    """Never with more than half the lifetime left, never after expiry, whatever is configured."""
    not_after = not_before + lifetime
    moment = lifetime_renewal_time(not_before, not_after, renew_within)
    assert not_before + lifetime / 2 <= moment <= not_after
    assert clamped(renew_within, not_before, not_after) == (
        renew_within is not None and renew_before(not_before, not_after, renew_within) < renew_within
    )


@given(moments, lifetimes, lifetimes, lifetimes)
def test_lifetime_rule_is_monotone_in_renew_within(
    not_before: datetime, lifetime: timedelta, a: timedelta, b: timedelta
) -> None:
    """A longer configured window never renews later."""
    short, long = sorted((a, b))
    not_after = not_before + lifetime
    assert lifetime_renewal_time(not_before, not_after, long) <= lifetime_renewal_time(not_before, not_after, short)


@given(moments, lifetimes)
def test_emergency_comes_after_the_lifetime_rules_default(not_before: datetime, lifetime: timedelta) -> None:
    not_after = not_before + lifetime
    assert lifetime_renewal_time(not_before, not_after) <= emergency_time(not_before, not_after) <= not_after


# --- ARI ---------------------------------------------------------------------------------------


def test_ari_window_later_than_the_lifetime_rule_moves_renewal_later() -> None:
    info = RenewalInfo(NOW + 70 * DAY, NOW + 72 * DAY)
    moment = renewal_moment(NOW, NOW + 90 * DAY, renew_within=None, ari=info, ari_moment=ari_moment(info, 0.5))
    assert moment == NOW + 71 * DAY
    assert moment > lifetime_renewal_time(NOW, NOW + 90 * DAY)


def test_ari_window_earlier_than_the_lifetime_rule_moves_renewal_earlier() -> None:
    info = RenewalInfo(NOW + 10 * DAY, NOW + 12 * DAY)
    moment = renewal_moment(NOW, NOW + 90 * DAY, renew_within=30 * DAY, ari=info, ari_moment=ari_moment(info, 0.25))
    assert moment == NOW + 10.5 * DAY


def test_ari_moment_is_drawn_across_the_whole_window() -> None:
    """Not the window's start (RFC 9773 section 4.2): the jitter spreads renewals over all of it."""
    info = RenewalInfo(NOW, NOW + 10 * HOUR)
    assert [ari_moment(info, j) for j in (0.0, 0.1, 0.5, 0.9)] == [NOW, NOW + HOUR, NOW + 5 * HOUR, NOW + 9 * HOUR]
    with pytest.raises(ValueError, match="jitter"):
        ari_moment(info, 1.0)


def test_emergency_rule_beats_an_ari_window_near_or_past_expiry() -> None:
    info = RenewalInfo(NOW + 88 * DAY, NOW + 95 * DAY)
    moment = renewal_moment(NOW, NOW + 90 * DAY, renew_within=None, ari=info, ari_moment=NOW + 89 * DAY)
    assert moment == NOW + 85.5 * DAY


def test_ari_window_already_over_means_renew_now() -> None:
    info = RenewalInfo(NOW - 3 * DAY, NOW - 2 * DAY)  # e.g. before a mass revocation
    moment = renewal_moment(NOW - 30 * DAY, NOW + 60 * DAY, renew_within=None, ari=info, ari_moment=NOW - 2 * DAY)
    assert moment <= NOW


def test_a_stale_or_missing_ari_moment_stays_inside_the_window() -> None:
    info = RenewalInfo(NOW + 70 * DAY, NOW + 72 * DAY)
    late = renewal_moment(NOW, NOW + 90 * DAY, renew_within=None, ari=info, ari_moment=NOW + 80 * DAY)
    early = renewal_moment(NOW, NOW + 90 * DAY, renew_within=None, ari=info, ari_moment=NOW)
    missing = renewal_moment(NOW, NOW + 90 * DAY, renew_within=None, ari=info, ari_moment=None)
    assert (late, early, missing) == (info.end, info.start, info.start)


def test_without_ari_the_lifetime_rule_decides() -> None:
    assert renewal_moment(NOW, NOW + 90 * DAY, renew_within=None) == NOW + 60 * DAY
    assert renewal_moment(NOW, NOW + 160 * HOUR, renew_within=30 * DAY, ari=None) == NOW + 80 * HOUR


@given(moments, lifetimes, renew_withins)
def test_without_ari_the_moment_is_inside_the_validity(
    not_before: datetime, lifetime: timedelta, renew_within: timedelta | None
) -> None:
    not_after = not_before + lifetime
    assert not_before <= renewal_moment(not_before, not_after, renew_within=renew_within) <= not_after


@given(moments, lifetimes, renew_withins, renewal_infos(), jitters)
def test_with_ari_the_moment_is_in_the_window_or_the_emergency_time(
    not_before: datetime, lifetime: timedelta, renew_within: timedelta | None, info: RenewalInfo, jitter: float
) -> None:
    not_after = not_before + lifetime
    drawn = ari_moment(info, jitter)
    assert info.start <= drawn <= info.end
    moment = renewal_moment(not_before, not_after, renew_within=renew_within, ari=info, ari_moment=drawn)
    emergency = emergency_time(not_before, not_after)
    assert moment <= emergency <= not_after
    assert moment == drawn or moment == emergency


# --- polling ARI -------------------------------------------------------------------------------


def test_ari_poll_follows_retry_after_within_bounds() -> None:
    assert next_ari_poll(NOW, None) == NOW + 6 * HOUR
    assert next_ari_poll(NOW, NOW + 2 * HOUR) == NOW + 2 * HOUR
    assert next_ari_poll(NOW, NOW + timedelta(seconds=10)) == NOW + timedelta(minutes=1)
    assert next_ari_poll(NOW, NOW - DAY) == NOW + timedelta(minutes=1)
    assert next_ari_poll(NOW, NOW + 30 * DAY) == NOW + DAY


@given(moments, st.none() | moments)
def test_ari_poll_is_never_sooner_than_a_minute_nor_later_than_a_day(
    now: datetime, retry_after: datetime | None
) -> None:
    delay = next_ari_poll(now, retry_after) - now
    assert ARI_MIN_POLL <= delay <= ARI_MAX_POLL
    if retry_after is None:
        assert delay == ARI_DEFAULT_POLL


# --- order queue -------------------------------------------------------------------------------


def test_missing_and_expired_certificates_are_ordered_first_then_the_nearest_moment() -> None:
    queue = {
        "valid, due tomorrow": urgency(NOW, NOW + 30 * DAY, NOW + DAY),
        "valid, due now": urgency(NOW, NOW + 30 * DAY, NOW),
        "missing": urgency(NOW, None, NOW + HOUR),
        "expired": urgency(NOW, NOW - HOUR, NOW - 40 * DAY),
        "expires this instant": urgency(NOW, NOW, NOW - 30 * DAY),
    }
    order = sorted(queue, key=queue.__getitem__)
    assert order == ["expired", "expires this instant", "missing", "valid, due now", "valid, due tomorrow"]


@given(moments, st.none() | moments, moments, moments, moments)
def test_a_missing_or_expired_certificate_always_precedes_a_valid_one(
    now: datetime, gone: datetime | None, valid_until: datetime, m1: datetime, m2: datetime
) -> None:
    assume((gone is None or gone <= now) and valid_until > now)
    assert urgency(now, gone, m1) < urgency(now, valid_until, m2)
