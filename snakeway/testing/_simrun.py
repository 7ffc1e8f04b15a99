"""One simulation run: the real CertManager(s) on trio's MockClock against a FakeCA (see ``simulate``).

Everything here runs inside ``trio.run(..., clock=MockClock(autojump_threshold=0))``:
every worker's manager, the outage switch, and the configuration change that adds a
name. Real time is spent only on the manager's and the fake's Python; simulated time
jumps whenever every task sleeps.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

import trio
import trio.testing

from snakeway.acme import crypto
from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.coordination import LocalCoordinator
from snakeway.acme.managed import ManagedCert
from snakeway.acme.manager import CertManager
from snakeway.acme.store import CertBundle, CertStore
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.config.model import AcmeSettings, KeyType, RateLimitSettings, TlsAutomation
from snakeway.testing._clock import TrioLinkedClock
from snakeway.testing._fakeari import AriPolicy
from snakeway.testing._fakeca import FakeCA
from snakeway.testing._fakelimits import BUCKETS
from snakeway.testing._offload import inline
from snakeway.testing._simrecord import DatedStore, WatchedRegistry
from snakeway.tls.registry import Served

if TYPE_CHECKING:
    from snakeway.testing.simulate import Scenario

EPOCH: Final = datetime(2030, 1, 1, tzinfo=UTC)
DIRECTORY: Final = "https://fake-ca.test/directory"
LISTENER: Final = "listener"
NEW_NAME: Final = "added.test"
DAY: Final = 86400.0


@dataclass
class Outcome:
    """What a run leaves for the report: the CA, each worker's registry, and the added name's times."""

    ca: FakeCA
    registries: list[WatchedRegistry]
    certs: list[ManagedCert]
    end: datetime
    requests: Counter[str] = field(default_factory=Counter)
    added_at: datetime | None = None
    added_first_order: datetime | None = None
    added_served: list[datetime] = field(default_factory=list)  # per worker that served it


def healthy_names(count: int) -> list[str]:
    """One name per certificate, each its own registered domain (the per-domain limit is not shared)."""
    return [f"c{i}.site{i}.test" for i in range(count)]


def failing_names(count: int) -> list[str]:
    return [f"bad{i}.broken{i}.test" for i in range(count)]


def run(scenario: Scenario) -> Outcome:
    """Run ``scenario`` to its end in simulated time."""
    logger = logging.getLogger("snakeway")
    level = logger.level
    logger.setLevel(scenario.log_level)
    holder: list[Outcome] = []
    try:
        trio.run(_main, scenario, holder, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.setLevel(level)
    return holder[0]


async def _main(scenario: Scenario, holder: list[Outcome]) -> None:
    clock = TrioLinkedClock(EPOCH)
    bad = set(failing_names(scenario.never_validate))
    ca = FakeCA(
        clock,
        lifetime=scenario.lifetime,
        delay=scenario.latency,
        ari=AriPolicy(retry_after=scenario.ari_retry_after) if scenario.ari else None,
        fault_rate=scenario.fault_rate,
        seed=scenario.seed,
        serial_requests=scenario.serial_requests,
        serial_ari=scenario.ari_in_queue,
        never_valid=bad,
        limits=scenario.limits,
    )
    names = healthy_names(scenario.certs) + sorted(bad)
    certs = [ManagedCert(f"acme:{name}", (name,)) for name in names]
    store = DatedStore()
    if scenario.stored:
        await _fill(store, ca, healthy_names(scenario.certs), scenario)
    outcome = Outcome(ca, [], certs, EPOCH)
    settings = _settings(scenario)
    coordinator = LocalCoordinator()
    managers = []
    ids = {c.cert_id: c.name for c in certs}
    ids[f"acme:{NEW_NAME}"] = NEW_NAME
    for worker in range(scenario.workers):
        registry = WatchedRegistry(store, ids, clock.now)
        registry.configure({LISTENER: Served(tuple(c.cert_id for c in certs))})
        outcome.registries.append(registry)
        managers.append(CertManager(
            settings=settings, certs=certs, store=cast(CertStore, store), backend=ca, registry=registry,
            http01=Http01Tokens(), tlsalpn=TlsAlpnChallenges(), clock=clock,
            rng=random.Random(scenario.seed * 1000 + worker), offload=inline, coordinator=coordinator,
        ))
    async with trio.open_nursery() as nursery:
        for manager in managers:
            await nursery.start(manager.run)
        for start, length in scenario.outages:
            nursery.start_soon(_outage, ca, start, length)
        if scenario.add_name_at is not None:
            nursery.start_soon(_add_name, scenario.add_name_at, managers, outcome, clock)
        await trio.sleep_until(scenario.days * DAY)
        outcome.end = clock.now()
        nursery.cancel_scope.cancel()
    outcome.requests = Counter(ca.calls)
    record = ca.records.get(NEW_NAME)
    outcome.added_first_order = record.first_order if record is not None else None
    for registry in outcome.registries:
        served = registry.served.get(f"acme:{NEW_NAME}")
        if served is not None:
            outcome.added_served.append(served.spans[0][0])
    holder.append(outcome)


# The CA's buckets, as ``tls_automation.acme.rate_limits`` names them.
SETTING: Final = {
    "new_orders": "new_orders_per_3h",
    "failed_validations": "failed_validations_per_name_per_hour",
    "duplicate_certificates": "duplicate_certificates_per_week",
    "certificates_per_domain": "certificates_per_domain_per_week",
}


def _settings(scenario: Scenario) -> TlsAutomation:
    """snakeway's configuration for the run: its rate limits are the CA's, as an operator would set them."""
    extra: dict[str, Any] = {}
    if scenario.renew_within_days is not None:
        extra["renew_within_days"] = scenario.renew_within_days
    known = {}
    if scenario.limits is not None:
        known = {SETTING[bucket]: scenario.limits.limit(bucket) for bucket in BUCKETS}
    limits = RateLimitSettings(**{key: value for key, value in known.items() if value is not None})
    acme = AcmeSettings(directory_url=DIRECTORY, rate_limits=limits)
    return TlsAutomation(check_interval_seconds=scenario.check_interval, acme=acme, **extra)


async def _fill(store: DatedStore, ca: FakeCA, names: list[str], scenario: Scenario) -> None:
    """Certificates already stored at the start, of ages spread evenly over the first half of their lifetime.

    One key for all of them: this fills a store, it does not measure key generation.
    """
    key_pem = crypto.generate_key(KeyType.ECDSA_P256)
    rng = random.Random(scenario.seed)
    half = scenario.lifetime / 2
    for name in names:
        not_before = (EPOCH - half * rng.random()).replace(microsecond=0)
        chain = ca.sign((name,), key_pem, not_before=not_before).encode("ascii")
        # Dated by hand: save() parses and checks the PEM once, and fills in issuer and serial.
        await store.save(CertBundle(name, (name,), chain, key_pem, not_before, not_before + scenario.lifetime))


async def _outage(ca: FakeCA, start_day: float, length_days: float) -> None:
    await trio.sleep_until(start_day * DAY)
    ca.unreachable = True
    await trio.sleep(length_days * DAY)
    ca.unreachable = False


async def _add_name(at_day: float, managers: list[CertManager], outcome: Outcome, clock: TrioLinkedClock) -> None:
    await trio.sleep_until(at_day * DAY)
    added = ManagedCert(f"acme:{NEW_NAME}", (NEW_NAME,))
    outcome.added_at = clock.now()
    for manager, registry in zip(managers, outcome.registries, strict=True):
        certs = [*outcome.certs, added]
        registry.configure({LISTENER: Served(tuple(c.cert_id for c in certs))})
        await manager.configure(certs)


def first_moment(moments: list[datetime]) -> datetime | None:
    return min(moments) if moments else None


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) / timedelta(seconds=1)
