"""What the renewal engine promises, measured by the simulator: the real CertManager, months of a CA's life.

Each scenario runs snakeway's CertManager against the fake CA on a mock clock (see
``snakeway.testing.simulate``) and asserts what an operator would see: no expired minute, no rate-limit
bucket over its limit, orders and ARI requests within their bounds, new names ordered promptly.

The full-scale runs (300 failing names for 120 days, 10,000 stored certificates) take minutes: they are
marked ``simulation`` and run by ``make simulate``; ``make test`` runs the same assertions on scenarios
scaled down to a few seconds.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest

from snakeway.testing import CALimitSettings
from snakeway.testing.simulate import PRESETS, Report, Scenario, run_detailed, run_scenario


def simulation(test):  # type: ignore[no-untyped-def]
    """A full-scale run: minutes, not the suite's two-minute limit per test."""
    return pytest.mark.simulation(pytest.mark.timeout(1800)(test))


def assert_within_limits(report: Report) -> None:
    """No bucket of the CA's ever held more than its limit, and the CA never had to refuse."""
    assert report.rate_limited == 0
    for bucket, peak in report.rate_limit_peak.items():
        limit = report.rate_limits[bucket]
        assert limit is None or peak <= limit, (bucket, peak, limit)


# --- 120 days, 10 certificates, 30 % of CA requests failing, a 3-day outage ----------------------------------


def test_faults_and_an_outage_expire_nothing_and_cost_few_orders() -> None:
    runs = {scenario.name: run_scenario(scenario) for scenario in PRESETS["faults"]}
    for name in ("faults-90d", "faults-45d", "faults-160h"):
        report = runs[name]
        assert report.expired_minutes == 0, name
        assert report.worst_remaining_fraction is not None and report.worst_remaining_fraction > 0, name
        assert_within_limits(report)
    assert runs["faults-90d"].orders <= 1.2 * runs["no-faults-90d"].orders


# --- names that never validate -------------------------------------------------------------------------------


def never_validate(scenario: Scenario) -> None:
    report = run_scenario(scenario)
    assert_within_limits(report)
    assert report.healthy_unserved == 0
    assert report.expired_minutes == 0
    # The healthy certificates were renewed on time: none had less than about a third of its life left.
    assert report.worst_remaining_fraction is not None and report.worst_remaining_fraction >= 0.3


def test_names_that_never_validate_stay_inside_the_limits_scaled() -> None:
    # A tenth of the full scenario, with a tenth of Let's Encrypt's order budget: the same pressure.
    limits = CALimitSettings(new_orders_per_3h=30)
    never_validate(Scenario(name="never-validate-scaled", certs=3, never_validate=30, days=75, limits=limits))


@simulation
def test_three_hundred_names_that_never_validate_stay_inside_lets_encrypts_limits() -> None:
    (scenario,) = PRESETS["never-validate"]
    never_validate(scenario)


# --- many stored certificates with ARI -----------------------------------------------------------------------


def many_with_ari(scenario: Scenario) -> None:
    report, outcome = run_detailed(scenario)
    assert report.new_name_first_order_s is not None and report.new_name_first_order_s <= 60
    assert report.healthy_unserved == 0
    # Once when first loaded, then when each answer's Retry-After says: whatever the number of workers.
    bound = 1 + math.ceil(scenario.days * timedelta(days=1) / scenario.ari_retry_after)
    most = max(record.ari_requests for record in outcome.ca.records.values())
    assert most <= bound
    assert_within_limits(report)


def test_a_new_name_is_ordered_at_once_beside_many_certificates_polling_ari_scaled() -> None:
    (full,) = PRESETS["many-ari"]
    many_with_ari(replace(full, name="many-ari-scaled", certs=1_000, days=0.3))


@simulation
def test_a_new_name_is_ordered_at_once_beside_ten_thousand_certificates_polling_ari() -> None:
    (scenario,) = PRESETS["many-ari"]
    many_with_ari(scenario)


# --- from empty ----------------------------------------------------------------------------------------------


def test_two_hundred_names_from_empty_are_all_issued() -> None:
    (scenario,) = PRESETS["from-empty"]
    report = run_scenario(scenario)
    assert report.certificates_issued == scenario.certs
    assert report.healthy_unserved == 0
    assert report.orders == scenario.certs  # none timed out and was ordered again
    assert_within_limits(report)
