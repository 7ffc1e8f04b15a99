"""The renewal engine against today's CAs, on trio's MockClock against the in-process FakeCA.

Each test is one way the engine used to break: short-lived certificates, ARI, lanes and starvation, the
CA's rate limits, permanent errors, lost writes and lost state. Pebble cannot be told any of this (no ARI, no
rate limits, no 90 days in a second); the real-process counterparts are in test_renewal_pebble.py.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing

from snakeway.acme.backend import OrderHandle
from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.coordination import LocalCoordinator
from snakeway.acme.filestore import FileStore
from snakeway.acme.managed import ManagedCert
from snakeway.acme.manager import CertManager
from snakeway.acme.store import CertBundle, CertStore, MemoryStore, StoreError
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.config.model import AcmeSettings, RateLimitSettings, TlsAutomation
from snakeway.errors import IssuanceError
from snakeway.testing import AriPolicy, CALimitSettings, FakeCA, TrioLinkedClock, inline
from snakeway.tls.registry import CertRegistry, Served

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = 3600
DAY = 86400
A = ManagedCert("acme:a.test", ("a.test",))


def cert(name: str) -> ManagedCert:
    return ManagedCert(f"acme:{name}", (name,))


def settings(renew_within_days: float | None = None, **acme: object) -> TlsAutomation:
    return TlsAutomation(
        renew_within_days=renew_within_days, check_interval_seconds=600,
        acme=AcmeSettings(directory_url="https://ca.test/dir", **acme),  # type: ignore[arg-type]
    )


def manager(
    certs: tuple[ManagedCert, ...], store: CertStore, ca: FakeCA, clock: TrioLinkedClock, *,
    automation: TlsAutomation | None = None, coordinator: LocalCoordinator | None = None, seed: int = 7,
) -> tuple[CertManager, CertRegistry]:
    registry = CertRegistry()
    registry.configure({"listener": Served(tuple(c.cert_id for c in certs))})
    return CertManager(
        settings=automation or settings(), certs=certs, store=store, backend=ca, registry=registry,
        http01=Http01Tokens(), tlsalpn=TlsAlpnChallenges(), clock=clock, rng=random.Random(seed), offload=inline,
        coordinator=coordinator,
    ), registry


async def run_for(mgr: CertManager, seconds: float) -> None:
    """Run ``mgr`` for ``seconds`` of (mock) time, then stop it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


# --- short-lived certificates ------------------------------------------------------------------------------


async def test_a_160_hour_certificate_is_renewed_at_half_its_life_not_at_every_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, lifetime=timedelta(hours=160))
    store = MemoryStore()
    # renew_within_days = 30 used to make a 160-hour certificate due at every check (144 orders a day).
    mgr, _ = manager((A,), store, ca, clock, automation=settings(renew_within_days=30))
    await run_for(mgr, 7 * DAY)
    # Issued at 0, renewed with half the lifetime left: every 80 hours.
    assert len(ca.orders) == 1 + 7 * 24 // 80
    assert ca.records["a.test"].rate_limited == 0


async def test_a_160_hour_certificate_survives_a_three_day_outage(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, lifetime=timedelta(hours=160))
    store = MemoryStore()
    mgr, registry = manager((A,), store, ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(79 * HOUR)  # just before the first renewal moment
        ca.unreachable = True
        await trio.sleep(3 * DAY)
        ca.unreachable = False
        await trio.sleep(7 * HOUR)  # at most one back-off step (6 h, plus jitter)
        nursery.cancel_scope.cancel()
    bundle = await store.load("a.test")
    assert bundle is not None and bundle.not_before > EPOCH + 79 * timedelta(hours=1) + timedelta(days=3)
    assert registry.entry(A.cert_id) is not None


# --- ARI ---------------------------------------------------------------------------------------------------


async def test_a_malformed_ari_answer_falls_back_to_the_lifetime_rule(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, ari=AriPolicy(malformed=True))
    mgr, _ = manager((A,), MemoryStore(), ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        while len(ca.orders) < 2:
            await trio.sleep(600)
        nursery.cancel_scope.cancel()
    # Renewed at the lifetime rule (a third of 90 days left: day 60), not stopped for good.
    assert (clock.now() - EPOCH) / timedelta(days=1) == pytest.approx(60, abs=0.02)
    # Asked again every 6 hours after each failure, not at every check.
    assert ca.calls.count("renewal_info") <= 1 + 4 * 60 + 1


async def test_a_renewal_names_the_certificate_it_replaces(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, ari=AriPolicy())
    mgr, _ = manager((A,), MemoryStore(), ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        while len(ca.orders) < 2:
            await trio.sleep(600)
        nursery.cancel_scope.cancel()
    assert ca.replaces[0] is None
    assert ca.replaces[1] is not None


@pytest.mark.parametrize("problem", ["alreadyReplaced", "malformed"])
async def test_a_refused_replaces_is_ordered_again_without_it(
    autojump_clock: trio.testing.MockClock, problem: str
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, ari=AriPolicy())
    store = MemoryStore()
    mgr, _ = manager((A,), store, ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(1)
        # Another order already replaced it, or the CA does not know it (the operator changed CAs).
        ca.fail_next(1, status=409, step="new_order", problem_type="urn:ietf:params:acme:error:" + problem)
        while len(ca.orders) < 2:
            await trio.sleep(600)
        nursery.cancel_scope.cancel()
    assert ca.calls.count("new_order") == 3  # first, the renewal refused, the renewal again at once
    assert ca.replaces[1] is None
    state = await store.load_state("a.test")
    assert state is not None and state.failures == 0


# --- lanes and starvation ----------------------------------------------------------------------------------


async def test_forty_names_at_once_at_200_ms_per_request_are_all_issued(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, delay=0.2, serial_requests=True)
    certs = tuple(cert(f"n{i}.test") for i in range(40))
    store = MemoryStore()
    mgr, _ = manager(certs, store, ca, clock)
    await run_for(mgr, 200)
    assert sorted(await store.list()) == sorted(c.name for c in certs)
    assert not any("timed out" in (s.last_error or "") for s in [await store.load_state(c.name) for c in certs] if s)


async def test_ari_polls_of_many_certificates_never_delay_a_new_name(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, ari=AriPolicy())
    certs = tuple(cert(f"n{i}.test") for i in range(300))
    store = MemoryStore()
    first, _ = manager(certs, store, ca, clock)
    async with trio.open_nursery() as nursery:  # fill the store
        await nursery.start(first.run)
        while len(await store.list()) < len(certs):
            await trio.sleep(10)
        nursery.cancel_scope.cancel()
    await trio.sleep(4 * HOUR)  # the 300 new orders have left the CA's 3-hour window
    ca.delay, ca.serial_requests = 0.2, True
    mgr, _ = manager(certs, store, ca, clock, seed=8)
    new = cert("new.test")
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(5)  # the ARI polls of 300 certificates have started: 15 s of the CA's time at least
        added = trio.current_time()
        await mgr.configure((*certs, new))
        while await store.load(new.name) is None:
            await trio.sleep(0.5)
        waited = trio.current_time() - added
        nursery.cancel_scope.cancel()
    assert waited < 10


# --- the CA's limits ---------------------------------------------------------------------------------------


async def test_names_that_never_validate_stay_inside_the_cas_limits(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    bad = tuple(cert(f"bad{i}.test") for i in range(30))
    good = tuple(cert(f"good{i}.test") for i in range(3))
    limits = CALimitSettings(new_orders_per_3h=30)
    ca = FakeCA(clock, never_valid={c.name for c in bad}, limits=limits)
    automation = settings(rate_limits=RateLimitSettings(new_orders_per_3h=30))
    store = MemoryStore()
    mgr, _ = manager(bad + good, store, ca, clock, automation=automation)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(2 * DAY)
        mgr.retry_now()  # SIGHUP: retries only what the budget allows
        await trio.sleep(DAY)
        nursery.cancel_scope.cancel()
    assert sum(r.rate_limited for r in ca.records.values()) == 0
    for c in good:
        assert await store.load(c.name) is not None
    # Let's Encrypt's 5 failed validations per name per hour, and orders spread, not 4 each in the first 2 hours.
    assert all(ca.records[c.name].failed_validations >= 3 for c in bad)


async def test_a_permanent_error_waits_a_day_and_says_it_needs_attention(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    ca.fail_next(5, status=400, step="new_order", problem_type="urn:ietf:params:acme:error:rejectedIdentifier")
    store = MemoryStore()
    mgr, _ = manager((A,), store, ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(23 * HOUR)
        assert ca.calls.count("new_order") == 1
        state = await store.load_state("a.test")
        assert state is not None and state.permanent
        await trio.sleep(4 * HOUR)  # a day, plus up to 10 % jitter
        assert ca.calls.count("new_order") == 2
        nursery.cancel_scope.cancel()


async def test_the_cas_retry_after_holds_for_every_worker_after_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    ca.fail_next(1, status=429, step="new_order", retry_after=timedelta(hours=3),
                 problem_type="urn:ietf:params:acme:error:rateLimited")
    store = MemoryStore()
    mgr, _ = manager((A,), store, ca, clock)
    await run_for(mgr, 60)
    # A new process (restart, or another worker) gets a SIGHUP: still nothing before the CA's moment.
    again, _ = manager((A,), store, ca, clock, seed=9)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        again.retry_now()
        await trio.sleep(HOUR)
        assert ca.calls.count("new_order") == 1
        await trio.sleep(2 * HOUR + 60)
        assert ca.orders == [A.domains]
        nursery.cancel_scope.cancel()


# --- lost writes and lost state ----------------------------------------------------------------------------


class FullDisk(MemoryStore):
    """A store whose bundle writes fail while ``full``."""

    full = True
    saves = 0

    async def save(self, bundle: CertBundle) -> None:
        self.saves += 1
        if self.full:
            raise StoreError("No space left on device")
        await super().save(bundle)


async def test_a_failed_store_write_serves_the_new_certificate_and_never_orders_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    store = FullDisk()
    mgr, registry = manager((A,), store, ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(6 * HOUR)
        assert ca.orders == [A.domains]  # one certificate, not one per check (it used to be 37 in 6 h)
        assert registry.entry(A.cert_id) is not None  # served from memory
        assert store.saves >= 3  # the write is retried on the back-off
        store.full = False
        await trio.sleep(7 * HOUR)
        assert await store.load("a.test") is not None
        assert ca.orders == [A.domains]
        nursery.cancel_scope.cancel()


class LostAfterFinalize(FakeCA):
    """The CA issues, but the answers to the first finalize and its quick retries never arrive."""

    lost = 5

    async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str:
        chain = await super().finalize(order, csr_pem, deadline)
        if self.lost:
            self.lost -= 1
            raise IssuanceError("connection reset by peer")
        return chain


async def test_an_order_interrupted_after_finalize_is_resumed_not_ordered_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = LostAfterFinalize(clock)
    store = MemoryStore()
    mgr, _ = manager((A,), store, ca, clock)
    await run_for(mgr, 5 * 60)
    bundle = await store.load("a.test")
    assert bundle is not None and len(ca.issued) == 1 and int(bundle.serial, 16) == ca.issued[0]
    assert ca.orders == [A.domains]
    assert ca.calls.count("resume_order") == 1  # the next attempt picked the stored order up
    assert await store.load_order("a.test") is None


async def test_a_corrupt_state_file_keeps_the_longest_back_off(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    ca.unreachable = True
    store = FileStore(tmp_path / "certs", tmp_path / "acme", clock=clock)
    mgr, _ = manager((A,), store, ca, clock)
    await run_for(mgr, 5)
    for path in (tmp_path / "acme").rglob("*.json"):
        if "a.test" in path.name:
            path.write_text("{not json")
    calls = ca.calls.count("new_order")
    again, _ = manager((A,), store, ca, clock, seed=9)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        await trio.sleep(5 * HOUR)
        assert ca.calls.count("new_order") == calls  # the back-off did not reset
        nursery.cancel_scope.cancel()


async def test_two_workers_during_an_outage_do_not_make_paired_orders(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    ca.unreachable = True
    store = MemoryStore()
    shared = LocalCoordinator()
    one, _ = manager((A,), store, ca, clock, coordinator=shared, seed=1)
    two, _ = manager((A,), store, ca, clock, coordinator=shared, seed=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(one.run)
        await nursery.start(two.run)
        await trio.sleep(12 * HOUR)
        nursery.cancel_scope.cancel()
    # One worker's back-off: 1, 10, 100 min, then every 6 h: 5 attempts in 12 h, not twice as many.
    state = await store.load_state("a.test")
    assert state is not None and state.failures <= 6
    # Each attempt tries the lost connection 5 times (see issuing.TRANSIENT_PAUSES), one attempt at a time.
    assert ca.calls.count("ensure_account") == 5 * state.failures




@pytest.mark.parametrize(("faults", "failures"), [(4, 0), (5, 1)])
async def test_a_request_the_ca_fails_transiently_is_tried_again_within_the_attempt(
    autojump_clock: trio.testing.MockClock, faults: int, failures: int
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    ca.fail_next(faults, status=503, step="finalize")
    store = MemoryStore()
    mgr, _ = manager((A,), store, ca, clock)
    await run_for(mgr, 30)
    state = await store.load_state("a.test")
    assert state is not None and state.failures == failures
    assert ca.calls.count("finalize") == 5  # 1 + 4 quick retries; the fifth failure ends the attempt
    assert len(ca.orders) == 1


async def test_orders_in_flight_together_never_pass_the_per_domain_limit(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    # Six names of one registered domain, four orders at a time, a CA that allows 3 certificates a week.
    certs = tuple(cert(f"n{i}.example.test") for i in range(6))
    ca = FakeCA(clock, delay=1.0, limits=CALimitSettings(certificates_per_domain_per_week=3))
    automation = settings(rate_limits=RateLimitSettings(certificates_per_domain_per_week=3))
    store = MemoryStore()
    mgr, _ = manager(certs, store, ca, clock, automation=automation)
    await run_for(mgr, DAY)
    assert ca.rate_limited == 0
    assert ca.limits is not None and ca.limits.peak["certificates_per_domain"] == 3
    assert len(await store.list()) == 3


async def test_two_nodes_ordering_at_once_never_pass_the_per_domain_limit_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    # The same six names on two nodes sharing one store: each could fit 3 in its own orders in flight.
    certs = tuple(cert(f"n{i}.example.test") for i in range(6))
    ca = FakeCA(clock, delay=1.0, limits=CALimitSettings(certificates_per_domain_per_week=3))
    automation = settings(rate_limits=RateLimitSettings(certificates_per_domain_per_week=3))
    store, shared = MemoryStore(), LocalCoordinator()
    one, _ = manager(certs, store, ca, clock, automation=automation, coordinator=shared, seed=1)
    two, _ = manager(certs, store, ca, clock, automation=automation, coordinator=shared, seed=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(one.run)
        await nursery.start(two.run)
        await trio.sleep(DAY)
        nursery.cancel_scope.cancel()
    assert ca.rate_limited == 0
    assert ca.limits is not None and ca.limits.peak["certificates_per_domain"] == 3
    assert len(await store.list()) == 3


class KeepsOrders(MemoryStore):
    """A store that cannot delete an order in flight (the delete fails, the record stays)."""

    async def delete_order(self, name: str) -> None:
        raise StoreError("Read-only file system")


async def test_an_order_record_left_behind_never_gives_the_old_certificate_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock, lifetime=timedelta(hours=160))
    store = KeepsOrders()
    mgr, _ = manager((A,), store, ca, clock)
    await run_for(mgr, 4 * DAY)  # issued at 0, renewed after 80 hours, with the first order's record still there
    assert len(ca.orders) == 2 and len(ca.issued) == 2
    bundle = await store.load("a.test")
    assert bundle is not None and int(bundle.serial, 16) == ca.issued[1]
