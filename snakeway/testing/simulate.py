"""The renewal simulator: the real CertManager against a FakeCA, for months of simulated time in seconds.

``python -m snakeway.testing.simulate --scenario faults`` (or ``make simulate``)
runs snakeway's own :class:`~snakeway.acme.manager.CertManager` (one per
``workers``, sharing one store and one coordinator, as worker processes share
theirs) on trio's ``MockClock`` against a :class:`~snakeway.testing.FakeCA` that
fails at random, goes down, answers ARI, refuses names and enforces Let's
Encrypt's rate limits, and prints one JSON report (see :class:`Report`).

From Python: ``run_scenario(Scenario(certs=1, days=90))`` returns a :class:`Report`;
``PRESETS`` holds the named scenarios, each a list of runs. Each run's
``real_seconds`` says what it cost; ``--profile`` prints where that time went.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import logging
import pstats
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final

from snakeway.testing._fakelimits import BUCKETS, CALimitSettings
from snakeway.testing._simrecord import exposure
from snakeway.testing._simrun import NEW_NAME, Outcome, healthy_names, run, seconds_between

# Calls of the backend that send no request to the CA.
NOT_REQUESTS: Final = frozenset({"challenges", "aclose"})


@dataclass(frozen=True)
class Scenario:
    """One simulated run.

    Attributes:
        name: Shown in the report.
        certs: Certificates that validate (one name each, each its own registered domain).
        never_validate: Further certificates whose name never validates.
        lifetime: Of every certificate the CA issues.
        days: Simulated time.
        fault_rate: Probability that a CA request fails with 503 or 500.
        outages: ``(start_day, length_days)`` during which the CA is unreachable.
        ari: Whether the CA answers ARI (window from two thirds of the lifetime, for 1/45 of it).
        ari_retry_after: The ``Retry-After`` of its ARI answers.
        latency: Seconds per CA request.
        serial_requests: CA requests (ARI excepted) served one at a time, as the real backend's session.
        ari_in_queue: ARI requests wait in that same queue (a backend without a separate ARI session).
        workers: CertManagers sharing the store.
        limits: The CA's rate limits; None: none.
        stored: The healthy certificates are already in the store at the start, of ages spread over
            the first half of their lifetime.
        add_name_at: The day a further name is added by ``configure()`` (None: never).
        check_interval: ``tls_automation.check_interval_seconds``.
        renew_within_days: ``tls_automation.renew_within_days`` (None: snakeway's default).
        seed: Seeds the CA's faults, the managers' jitter and the stored certificates' ages.
        log_level: Of the ``snakeway`` loggers during the run.
    """

    name: str = "custom"
    certs: int = 10
    never_validate: int = 0
    lifetime: timedelta = timedelta(days=90)
    days: float = 120.0
    fault_rate: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    ari: bool = False
    ari_retry_after: timedelta = timedelta(hours=6)
    latency: float = 0.0
    serial_requests: bool = True
    ari_in_queue: bool = False
    workers: int = 1
    limits: CALimitSettings | None = field(default_factory=CALimitSettings)
    stored: bool = False
    add_name_at: float | None = None
    check_interval: float = 600.0
    renew_within_days: float | None = None
    seed: int = 1
    log_level: int = logging.CRITICAL


@dataclass(frozen=True)
class Report:
    """What a run did, as the CA and each worker's cert map saw it.

    Attributes:
        orders: New orders the CA created (all names); ``orders_healthy`` those of names that validate.
        failed_validations: Authorizations that failed.
        certificates_issued: Certificates the CA issued during the run.
        ari_requests_per_cert_per_day / other_requests_per_cert_per_day: CA requests (those that reached
            it or failed on the way) per managed certificate per simulated day.
        worst_remaining_fraction / worst_remaining_hours: The least lifetime any served certificate had
            left at any moment (negative: expired), as a fraction of its lifetime and in hours.
        expired_minutes: Minutes served certificates spent past ``not_after``, summed over workers and
            certificates (exact, from the moments each cert map was updated).
        rate_limit_peak: The most events any key of each CA bucket held at once (over the limit:
            impossible; equal: the limit was reached), beside ``rate_limits``, the limits.
        rate_limited: New orders the CA refused with ``rateLimited``.
        healthy_unserved: Names that validate but no worker served at the end.
        new_name_first_order_s / new_name_served_s: From ``configure()`` adding a name to its first
            order, and to the first worker serving it (None: not added, or never).
        random_faults: Requests failed by ``fault_rate``.
        real_seconds: Real time the run took.
    """

    scenario: str
    days: float
    certs: int
    workers: int
    lifetime_hours: float
    orders: int
    orders_healthy: int
    failed_validations: int
    certificates_issued: int
    ari_requests_per_cert_per_day: float
    other_requests_per_cert_per_day: float
    worst_remaining_fraction: float | None
    worst_remaining_hours: float | None
    expired_minutes: float
    rate_limit_peak: dict[str, int]
    rate_limits: dict[str, int | None]
    rate_limited: int
    healthy_unserved: int
    new_name_first_order_s: float | None
    new_name_served_s: float | None
    random_faults: int
    real_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_scenario(scenario: Scenario) -> Report:
    """Run ``scenario`` (real CertManager, MockClock, FakeCA) and report on it."""
    return run_detailed(scenario)[0]


def run_detailed(scenario: Scenario) -> tuple[Report, Outcome]:
    """:func:`run_scenario`, with what the report was made from (the CA with its records, the cert maps)."""
    started = time.perf_counter()
    outcome = run(scenario)
    return _report(scenario, outcome, time.perf_counter() - started), outcome


def _report(scenario: Scenario, outcome: Outcome, real_seconds: float) -> Report:
    ca = outcome.ca
    healthy = set(healthy_names(scenario.certs)) | {NEW_NAME}
    records = ca.records
    managed = len(outcome.certs) + (outcome.added_at is not None)
    per_cert_day = 1.0 / (managed * scenario.days)
    requests = sum(n for call, n in outcome.requests.items() if call not in NOT_REQUESTS)
    ari = outcome.requests["renewal_info"]
    seen = exposure(outcome.registries, outcome.end)
    served_at_end = [set(registry.served) for registry in outcome.registries]
    unserved = sum(
        1 for cert in outcome.certs
        if cert.name in healthy and any(cert.cert_id not in served for served in served_at_end)
    )
    limits = ca.limits
    added_served = min(outcome.added_served) if outcome.added_served else None
    return Report(
        scenario=scenario.name,
        days=scenario.days,
        certs=len(outcome.certs),
        workers=scenario.workers,
        lifetime_hours=scenario.lifetime / timedelta(hours=1),
        orders=len(ca.orders),
        orders_healthy=sum(r.orders for name, r in records.items() if name in healthy),
        failed_validations=sum(r.failed_validations for r in records.values()),
        certificates_issued=len(ca.issued),
        ari_requests_per_cert_per_day=ari * per_cert_day,
        other_requests_per_cert_per_day=(requests - ari) * per_cert_day,
        worst_remaining_fraction=seen.worst_fraction,
        worst_remaining_hours=seen.worst_hours,
        expired_minutes=seen.expired_minutes,
        rate_limit_peak=dict(limits.peak) if limits is not None else dict.fromkeys(BUCKETS, 0),
        rate_limits={b: scenario.limits.limit(b) if scenario.limits else None for b in BUCKETS},
        rate_limited=ca.rate_limited,
        healthy_unserved=unserved,
        new_name_first_order_s=seconds_between(outcome.added_at, outcome.added_first_order),
        new_name_served_s=seconds_between(outcome.added_at, added_served),
        random_faults=ca.faults,
        real_seconds=round(real_seconds, 3),
    )


# --- presets ----------------------------------------------------------------------------------------

_FAULTS = Scenario(name="faults", certs=10, days=120, fault_rate=0.3, outages=((58.0, 3.0),))

PRESETS: Final[dict[str, list[Scenario]]] = {
    "faults": [
        replace(_FAULTS, name="faults-90d"),
        replace(_FAULTS, name="faults-45d", lifetime=timedelta(days=45)),
        replace(_FAULTS, name="faults-160h", lifetime=timedelta(hours=160)),
        replace(_FAULTS, name="no-faults-90d", fault_rate=0.0, outages=()),  # the baseline for the orders
    ],
    "never-validate": [Scenario(name="never-validate", certs=10, never_validate=300, days=120)],
    "many-ari": [
        # Two workers; the name is added half a minute in, while the first ARI polls of every stored
        # certificate are still under way (10,000 at 200 ms, a few at a time: minutes).
        Scenario(name="many-ari", certs=10_000, stored=True, ari=True, latency=0.2, days=0.5, workers=2,
                 add_name_at=0.0003),
    ],
    "from-empty": [Scenario(name="from-empty", certs=200, latency=0.2, days=1.0)],
}


# --- command line -----------------------------------------------------------------------------------


def _duration(text: str) -> timedelta:
    """``90d``, ``160h``, ``30m`` or seconds."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    if text[-1:] in units:
        return timedelta(**{units[text[-1]]: float(text[:-1])})
    return timedelta(seconds=float(text))


def _outage(text: str) -> tuple[float, float]:
    start, _, length = text.partition(":")
    return float(start), float(length)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m snakeway.testing.simulate",
        description="Run snakeway's CertManager against a simulated ACME CA on a mock clock; print a JSON report.",
    )
    parser.add_argument("--scenario", choices=sorted(PRESETS), help="a named scenario (each flag below overrides it)")
    parser.add_argument("--certs", type=int, help="certificates whose names validate")
    parser.add_argument("--never-validate", type=int, help="further certificates whose names never validate")
    parser.add_argument("--lifetime", type=_duration, help="certificate lifetime: 90d, 160h, ...")
    parser.add_argument("--days", type=float, help="simulated days")
    parser.add_argument("--fault-rate", type=float, help="probability a CA request fails (503/500)")
    parser.add_argument("--outage", type=_outage, action="append", metavar="START:LENGTH",
                        help="CA unreachable from day START for LENGTH days (repeatable)")
    parser.add_argument("--ari", action=argparse.BooleanOptionalAction, default=None, help="the CA answers ARI")
    parser.add_argument("--ari-retry-after", type=_duration, help="Retry-After of ARI answers (6h, ...)")
    parser.add_argument("--latency", type=float, help="seconds per CA request")
    parser.add_argument("--ari-in-queue", action=argparse.BooleanOptionalAction, default=None,
                        help="ARI requests wait behind order requests (one session for both)")
    parser.add_argument("--workers", type=int, help="CertManagers sharing one store")
    parser.add_argument("--no-limits", action="store_true", help="the CA enforces no rate limits")
    for bucket, flag in (("new_orders_per_3h", "--new-orders-per-3h"),
                         ("failed_validations_per_name_per_hour", "--failed-validations-per-name-per-hour"),
                         ("duplicate_certificates_per_week", "--duplicate-certificates-per-week"),
                         ("certificates_per_domain_per_week", "--certificates-per-domain-per-week")):
        parser.add_argument(flag, dest=bucket, type=int, help="a CA rate limit (default: Let's Encrypt's)")
    parser.add_argument("--stored", action=argparse.BooleanOptionalAction, default=None,
                        help="healthy certificates are in the store at the start")
    parser.add_argument("--add-name-at", type=float, help="day a name is added by configure()")
    parser.add_argument("--check-interval", type=float, help="check_interval_seconds")
    parser.add_argument("--renew-within-days", type=float, help="renew_within_days (default: snakeway's)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--profile", action="store_true", help="print where the real time went (stderr)")
    return parser


def scenarios_from(args: argparse.Namespace) -> list[Scenario]:
    """The runs the command line asks for: a preset (or one custom run) with its overrides."""
    runs = PRESETS[args.scenario] if args.scenario else [Scenario()]
    changes: dict[str, Any] = {}
    for name in ("certs", "never_validate", "lifetime", "days", "fault_rate", "ari", "ari_retry_after", "latency",
                 "ari_in_queue", "workers", "stored", "add_name_at", "check_interval", "renew_within_days", "seed"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.outage:
        changes["outages"] = tuple(args.outage)
    limits = {b: getattr(args, b) for b in ("new_orders_per_3h", "failed_validations_per_name_per_hour",
                                            "duplicate_certificates_per_week", "certificates_per_domain_per_week")}
    limits = {k: v for k, v in limits.items() if v is not None}
    result = []
    for scenario in runs:
        scenario = replace(scenario, **changes)
        if args.no_limits:
            scenario = replace(scenario, limits=None)
        elif limits:
            scenario = replace(scenario, limits=replace(scenario.limits or CALimitSettings(), **limits))
        result.append(scenario)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reports = []
    for scenario in scenarios_from(args):
        if args.profile:
            profile = cProfile.Profile()
            report = profile.runcall(run_scenario, scenario)
            print(f"--- {scenario.name}: {report.real_seconds:.1f} s", file=sys.stderr)
            pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        else:
            report = run_scenario(scenario)
        reports.append(report.as_dict())
    json.dump({"scenario": args.scenario or "custom", "runs": reports}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
