"""The renewal simulator: its figures are right on scenarios small enough to work out by hand.

These tests check the simulator's arithmetic and wiring (one store shared by the workers, the outage
switch, the added name, the command line), not how well the CertManager renews: whatever the manager
does, the report must say exactly that.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from snakeway.testing._simrecord import Exposure, Served
from snakeway.testing.simulate import PRESETS, Scenario, _parser, main, run_detailed, run_scenario, scenarios_from

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NAME = "c0.site0.test"


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def test_exposure_counts_expired_minutes_and_the_worst_remaining_lifetime_exactly() -> None:
    served = Served([
        (at(0), at(0), at(2)),  # valid until day 2, replaced on day 3: one day expired
        (at(3), at(3), at(5)),  # replaced on day 4 with a day left
        (at(4), at(4), at(6)),  # served to the end (day 5): one day left
    ])
    seen = Exposure()
    seen.add(served, at(5))
    assert seen.expired_minutes == 24 * 60
    assert seen.worst_hours == -24
    assert seen.worst_fraction == -0.5
    quiet = Exposure()
    quiet.add(Served([(at(0), at(0), at(10))]), at(4))
    assert (quiet.expired_minutes, quiet.worst_hours, quiet.worst_fraction) == (0, 6 * 24, 0.6)


def test_one_certificate_without_faults() -> None:
    report = run_scenario(Scenario(certs=1, days=50, limits=None))
    assert (report.orders, report.orders_healthy, report.certificates_issued) == (1, 1, 1)
    assert report.failed_validations == report.rate_limited == report.random_faults == 0
    assert report.expired_minutes == 0
    # Issued at the start, valid 90 days, served to day 50: 40 days left at the worst moment.
    assert report.worst_remaining_hours == pytest.approx(40 * 24)
    assert report.worst_remaining_fraction == pytest.approx(40 / 90)
    # account, order, one answer, authorizations, finalize: five requests in 50 days.
    assert report.other_requests_per_cert_per_day == pytest.approx(5 / 50)
    assert report.healthy_unserved == 0
    assert report.new_name_first_order_s is report.new_name_served_s is None


def test_expired_minutes_while_the_ca_is_down_past_expiry() -> None:
    # 2-day certificates, the CA down from hour 12 to day 5: the last certificate issued before the outage is
    # served expired from its not_after until the manager gets the next one, whenever that is. Without latency
    # each certificate is served from the moment it is issued (its not_before, to the second) until the next.
    scenario = Scenario(certs=1, days=6, lifetime=timedelta(days=2), outages=((0.5, 4.5),), limits=None)
    report, outcome = run_detailed(scenario)
    issued = outcome.ca.records[NAME].issued
    before = [dates for dates in issued if dates[0] < at(0.5)]
    after = [dates for dates in issued if dates[0] >= at(5)]
    assert before and after and len(before) + len(after) == len(issued)
    last_expiry, next_start = before[-1][1], after[0][0]
    expected = (next_start - last_expiry) / timedelta(minutes=1)
    assert expected > 2 * 24 * 60
    assert report.expired_minutes == pytest.approx(expected, abs=1 / 60)  # not_before is to the second
    assert report.worst_remaining_hours == pytest.approx(-expected / 60, abs=1 / 3600)
    assert report.worst_remaining_fraction == pytest.approx(-expected / 60 / 48, abs=1e-5)


def test_a_ca_down_from_the_start_serves_nothing_and_counts_no_expired_minutes() -> None:
    report = run_scenario(Scenario(certs=1, days=1, outages=((0, 2),), limits=None))
    assert (report.orders, report.certificates_issued, report.healthy_unserved) == (0, 0, 1)
    assert report.expired_minutes == 0
    assert report.worst_remaining_hours is None


def test_workers_share_one_store() -> None:
    report, outcome = run_detailed(Scenario(certs=1, days=2, workers=2))
    assert report.orders == report.certificates_issued == 1  # the other worker finds it ordered, then stored
    assert len(outcome.registries) == 2
    serving = [registry for registry in outcome.registries if f"acme:{NAME}" in registry.served]
    assert serving
    # A worker that does not serve it counts as not serving a healthy certificate.
    assert report.healthy_unserved == (len(serving) < 2)


def test_never_validating_names_and_the_ca_counters() -> None:
    scenario = Scenario(certs=1, never_validate=2, days=0.5)
    report, outcome = run_detailed(scenario)
    ca = outcome.ca
    assert report.certs == 3
    assert report.certificates_issued == 1
    assert report.failed_validations == ca.records["bad0.broken0.test"].failed_validations + \
        ca.records["bad1.broken1.test"].failed_validations
    assert report.failed_validations >= 2
    assert report.orders == len(ca.orders) == report.orders_healthy + report.failed_validations
    assert ca.limits is not None and report.rate_limit_peak == ca.limits.peak
    assert report.rate_limits["failed_validations"] == 5
    assert report.rate_limited == ca.rate_limited
    assert report.healthy_unserved == 0


def test_a_name_added_later_is_timed_from_configure() -> None:
    scenario = Scenario(certs=2, days=1, latency=0.5, add_name_at=0.5, workers=2)
    report, outcome = run_detailed(scenario)
    assert report.new_name_first_order_s is not None and report.new_name_served_s is not None
    assert outcome.added_at == at(0.5)
    first_order = outcome.ca.records["added.test"].first_order
    assert first_order is not None
    assert report.new_name_first_order_s == (first_order - at(0.5)).total_seconds()
    # The order is created once its request's 0.5 s are spent; answer, authorizations and finalize follow.
    assert report.new_name_first_order_s >= 0.5
    assert report.new_name_served_s >= report.new_name_first_order_s + 3 * 0.5
    assert outcome.added_served
    assert report.new_name_served_s == (min(outcome.added_served) - at(0.5)).total_seconds()


def test_presets_and_overrides_from_the_command_line() -> None:
    assert set(PRESETS) == {"faults", "never-validate", "many-ari", "from-empty"}
    faults = scenarios_from(_parser().parse_args(["--scenario", "faults", "--days", "2", "--outage", "1:0.5"]))
    assert [s.lifetime for s in faults] == [timedelta(days=90), timedelta(days=45), timedelta(hours=160),
                                            timedelta(days=90)]
    assert all(s.days == 2 and s.outages == ((1.0, 0.5),) for s in faults)
    limited = scenarios_from(_parser().parse_args(["--scenario", "never-validate", "--new-orders-per-3h", "10"]))
    assert limited[0].never_validate == 300
    assert limited[0].limits is not None and limited[0].limits.new_orders_per_3h == 10
    assert limited[0].limits.duplicate_certificates_per_week == 5
    unlimited = scenarios_from(_parser().parse_args(["--no-limits", "--lifetime", "160h", "--ari"]))
    assert (unlimited[0].limits, unlimited[0].lifetime, unlimited[0].ari) == (None, timedelta(hours=160), True)


def test_main_prints_one_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--certs", "1", "--days", "1", "--ari", "--ari-retry-after", "12h"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["scenario"] == "custom"
    [run] = printed["runs"]
    assert (run["orders"], run["certs"], run["expired_minutes"]) == (1, 1, 0)
    assert run["ari_requests_per_cert_per_day"] >= 1  # asked at least once for its certificate


def test_the_log_level_is_restored_after_a_run() -> None:
    logger = logging.getLogger("snakeway")
    before = logger.level
    run_scenario(Scenario(certs=1, days=0.1, log_level=logging.CRITICAL))
    assert logger.level == before
