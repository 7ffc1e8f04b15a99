"""The CertManager's schedule on trio's MockClock, against the in-process FakeCA.

What Pebble cannot do: 90-day lifetimes, 429 with Retry-After, bursts of 5xx,
an ARI window, a CA that is down for hours. Wall time follows trio time
(TrioLinkedClock), so ``autojump_clock`` runs months in milliseconds.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
import trio

from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.managed import ManagedCert
from snakeway.acme.manager import CertManager
from snakeway.acme.store import MemoryStore
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.config.model import AcmeSettings, TlsAutomation
from snakeway.testing import AriPolicy, FakeCA, TrioLinkedClock, inline
from snakeway.tls.registry import CertRegistry, Served

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86400
A = ManagedCert("acme:a.test", ("a.test", "www.a.test"))
B = ManagedCert("acme:b.test", ("b.test",))


class Rig:
    def __init__(self, certs: tuple[ManagedCert, ...] = (A,), store: MemoryStore | None = None, ca: FakeCA | None = None) -> None:
        self.clock = TrioLinkedClock(EPOCH)
        self.ca = ca or FakeCA(self.clock)
        self.store = store or MemoryStore()
        self.registry = CertRegistry()
        self.registry.configure({"listener": Served(tuple(c.cert_id for c in certs))})
        self.manager = CertManager(
            settings=TlsAutomation(renew_within_days=30, check_interval_seconds=600, acme=AcmeSettings(directory_url="https://ca.test/dir")),
            certs=certs,
            store=self.store,
            backend=self.ca,
            registry=self.registry,
            http01=Http01Tokens(),
            tlsalpn=TlsAlpnChallenges(),
            clock=self.clock,
            rng=random.Random(7),
            offload=inline,  # threads would let MockClock jump mid-issuance
        )

    def served(self, name: str) -> object:
        return self.registry.holder("listener").current.lookup(name)

    def days(self) -> float:
        return (self.clock.now() - EPOCH).total_seconds() / DAY


async def test_first_certificate_then_renewal_near_day_60(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig()
    await nursery.start(rig.manager.run)
    await trio.sleep(1)
    assert rig.ca.orders == [A.domains]
    first = rig.served("www.a.test")
    assert first is not None
    order_days = []
    while len(rig.ca.orders) < 3:
        count = len(rig.ca.orders)
        await trio.sleep(600)
        if len(rig.ca.orders) > count:
            order_days.append(rig.days())
    # 90-day certificates, renewed with 30 days left, checked every ~10 minutes.
    assert order_days[0] == pytest.approx(60, abs=0.02)
    assert order_days[1] == pytest.approx(120, abs=0.04)
    assert rig.served("www.a.test") is not first


async def test_started_only_after_stored_certificates_are_in_the_map(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig()
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.manager.run)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    again = Rig(store=rig.store)
    again.ca.unreachable = True
    async with trio.open_nursery() as nursery:
        await nursery.start(again.manager.run)
        assert again.served("a.test") is not None  # right at started(), CA or not
        nursery.cancel_scope.cancel()


async def test_429_retry_after_is_honoured_and_survives_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig()
    rig.ca.fail_next(1, status=429, retry_after=timedelta(hours=3), step="new_order")
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.manager.run)
        await trio.sleep(60 * 60)
        assert rig.ca.orders == [] and rig.served("a.test") is None
        nursery.cancel_scope.cancel()
    state = await rig.store.load_state("a.test")
    assert state is not None and state.failures == 1
    assert "429" in (state.last_error or "")
    assert state.next_attempt is not None and state.next_attempt >= EPOCH + timedelta(hours=3)
    # A restart one hour in does not reset the back-off: still nothing before hour 3.
    again = Rig(store=rig.store, ca=rig.ca)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.manager.run)
        await trio.sleep(60 * 60)
        assert again.ca.orders == []
        await trio.sleep(2 * 60 * 60)
        assert again.ca.orders == [A.domains]
        assert again.served("a.test") is not None
        nursery.cancel_scope.cancel()


async def test_server_errors_back_off_1_10_100_minutes_and_keep_the_old_certificate(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = Rig()
    await nursery.start(rig.manager.run)
    await trio.sleep(1)
    first = rig.served("a.test")
    assert first is not None
    # Day 60: renewal is due, and the CA refuses three attempts in a row (a refusal that is neither
    # permanent nor worth repeating at once: a 5xx would be tried again within the attempt).
    rig.ca.fail_next(3, status=400, step="new_order", problem_type="urn:ietf:params:acme:error:malformed")
    await trio.sleep(59.9 * DAY)
    attempts: list[float] = []
    seen = rig.ca.calls.count("new_order")
    while len(rig.ca.orders) < 2:
        await trio.sleep(10)
        if rig.ca.calls.count("new_order") > seen:
            seen = rig.ca.calls.count("new_order")
            attempts.append(rig.days())
        assert rig.served("a.test") is not None  # never without a certificate
    gaps = [(b - a) * 24 * 60 for a, b in pairwise(attempts)]
    assert gaps[0] == pytest.approx(1, rel=0.15, abs=0.2)
    assert gaps[1] == pytest.approx(10, rel=0.15)
    assert gaps[2] == pytest.approx(100, rel=0.15)
    assert rig.served("a.test") is not first
    state = await rig.store.load_state("a.test")
    assert state is not None and state.failures == 0


async def test_outage_at_start_up_then_recovery_within_one_back_off_step(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = Rig()
    rig.ca.unreachable = True
    await nursery.start(rig.manager.run)
    await trio.sleep(20)  # the first attempt tries a lost connection 5 times over 15 seconds
    state = await rig.store.load_state("a.test")
    assert state is not None and state.failures == 1 and "connection refused" in (state.last_error or "")
    assert rig.ca.calls.count("ensure_account") == 5
    rig.ca.unreachable = False
    await trio.sleep(66)  # the first back-off step: one minute plus at most 10 % jitter
    assert rig.served("a.test") is not None


async def test_one_failing_name_does_not_stop_the_others(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    async def validator(task) -> bool:  # type: ignore[no-untyped-def]
        return task.domain != "b.test"

    rig = Rig(certs=(A, B))
    rig.ca.validator = validator
    await nursery.start(rig.manager.run)
    await trio.sleep(3600)
    assert rig.served("a.test") is not None
    assert rig.served("b.test") is None
    state = await rig.store.load_state("b.test")
    assert state is not None and state.failures >= 2


async def test_ari_window_brings_renewal_forward(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig()
    rig.ca.ari = AriPolicy()
    await nursery.start(rig.manager.run)
    await trio.sleep(1)
    # The CA now suggests renewing on day 20 (say, ahead of a revocation); seen at the next ARI poll.
    rig.ca.ari = AriPolicy(window=lambda nb, na, serial: (EPOCH + timedelta(days=20), EPOCH + timedelta(days=21)))
    while len(rig.ca.orders) < 2:
        await trio.sleep(600)
    assert 20 <= rig.days() <= 21.01  # a random moment inside the window


async def test_ari_window_can_move_renewal_later(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig()
    # 90-day certificates: the lifetime rule says day 60; the CA says days 70 to 72.
    rig.ca.ari = AriPolicy(window=lambda nb, na, serial: (nb + timedelta(days=70), nb + timedelta(days=72)))
    await nursery.start(rig.manager.run)
    while len(rig.ca.orders) < 2:
        await trio.sleep(600)
    assert 70 <= rig.days() <= 72.01
    # Polled once at issuance, then every 6 hours (the CA's Retry-After): 4 a day, in one worker.
    polls = rig.ca.calls.count("renewal_info")
    assert polls <= 1 + 4 * rig.days() + 1


async def test_retry_now_skips_the_back_off(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig()
    rig.ca.unreachable = True
    await nursery.start(rig.manager.run)
    await trio.sleep(20)  # the first attempt (and its quick retries of a lost connection) failed
    state = await rig.store.load_state("a.test")
    assert state is not None and state.failures == 1
    rig.ca.unreachable = False
    rig.manager.retry_now()
    await trio.sleep(1)
    assert rig.served("a.test") is not None
