"""The renewer when another node takes a certificate over, and when the store is away: on trio's MockClock.

A paused node, a lease running out and a Redis going away cannot be timed against the real things on a mock
clock, so two fakes stand in for them, keeping the rules the Redis ones keep (tests/acme/test_fence_store.py
proves those against a real redis-server):

* :class:`LeaseCoordinator` gives each lock a fencing token and runs its block under the fence; "another node"
  takes a lease over with :meth:`LeaseCoordinator.take_over` (a newer token), and this node notices the loss
  (its block cancelled, ``LockLost`` at the lock's exit) only when the test says so;
* :class:`FencingStore` refuses a write whose fence is older than the newest token, as the Redis store does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import trio
import trio.testing
import trustme

from snakeway.acme.backend import OrderHandle
from snakeway.acme.coordination import Fence, LocalCoordinator, LockLost, current_fence, fenced
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import CertBundle, FencedOut, MemoryStore, OrderRecord, StoreError
from snakeway.clock import WallClock
from snakeway.testing import FakeCA, TrioLinkedClock
from tests.acme.test_renewal_engine import EPOCH, HOUR, A, FullDisk, cert, manager, run_for

B = cert("b.test")


class FencingStore(MemoryStore):
    """A memory store with the Redis store's fencing check: a write under an outdated fence raises FencedOut."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, int] = {}
        self.refused: list[tuple[str, Fence]] = []  # (method, fence) of every refused write

    def issue(self, name: str) -> int:
        self.tokens[name] = self.tokens.get(name, 0) + 1
        return self.tokens[name]

    def _check(self, method: str) -> None:
        fence = current_fence()
        if fence is not None and fence.token < self.tokens.get(fence.name, 0):
            self.refused.append((method, fence))
            raise FencedOut(method, fence.name, fence.token)

    async def save(self, bundle: CertBundle) -> None:
        self._check("save")
        await super().save(bundle)

    async def save_state(self, state: RenewalState) -> None:
        self._check("save_state")
        await super().save_state(state)

    async def save_order(self, order: OrderRecord) -> None:
        self._check("save_order")
        await super().save_order(order)

    async def delete_order(self, name: str) -> None:
        self._check("delete_order")
        await super().delete_order(name)


class LeaseCoordinator(LocalCoordinator):
    """Locks as leases with fencing tokens from ``store``, which another node can take over (see the module)."""

    def __init__(self, store: FencingStore) -> None:
        super().__init__()
        self.store = store
        self._blocks: dict[str, trio.CancelScope] = {}

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[bool]:
        async with super().lock(name) as mine:
            if not mine:
                yield False
                return
            fence = Fence(name, self.store.issue(name))
            with trio.CancelScope() as block:
                self._blocks[name] = block
                with fenced(fence):
                    yield True
            self._blocks.pop(name, None)
            if block.cancelled_caught:
                raise LockLost(f"lost the lock on {name!r} (another process holds it now)", fence)

    def take_over(self, name: str) -> Fence:
        """Another node takes the lease on ``name`` (this node's ran out while it paused): a newer token."""
        return Fence(name, self.store.issue(name))

    def notice_lost(self, name: str) -> None:
        """This node's lease renewal fails: its block is cancelled."""
        self._blocks[name].cancel()


def other_nodes_certificate(clock: WallClock) -> CertBundle:
    ca = trustme.CA()
    start = clock.now() - timedelta(hours=1)
    leaf = ca.issue_cert("a.test", not_before=start, not_after=start + timedelta(days=90))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return CertBundle.from_pem("a.test", ("a.test",), chain, leaf.private_key_pem.bytes())


class TakenOver(FakeCA):
    """While the CA validates or finalizes the first order, another node takes ``a.test`` over and saves its
    certificate."""

    coordinator: LeaseCoordinator
    store: FencingStore
    at = "finalize"  # or "validation"
    notice = True  # this node's renewal task notices the loss at once (else: only its next write does)
    theirs: CertBundle | None = None

    async def wait_authorizations(self, order: OrderHandle, deadline: float) -> None:
        await super().wait_authorizations(order, deadline)
        if self.at == "validation":
            await self._take_over()

    async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str:
        chain = await super().finalize(order, csr_pem, deadline)
        if self.at == "finalize":
            await self._take_over()
        return chain

    async def _take_over(self) -> None:
        if self.theirs is not None:
            return
        fence = self.coordinator.take_over("a.test")
        self.theirs = other_nodes_certificate(self.clock)
        with fenced(fence):
            await self.store.save(self.theirs)
            await self.store.save_state(RenewalState(name="a.test").succeeded(self.clock.now()))
        if self.notice:
            self.coordinator.notice_lost("a.test")


def taken_over(notice: bool, at: str = "finalize") -> tuple[TakenOver, FencingStore, LeaseCoordinator, TrioLinkedClock]:
    clock = TrioLinkedClock(EPOCH)
    store = FencingStore()
    coordinator = LeaseCoordinator(store)
    ca = TakenOver(clock)
    ca.coordinator, ca.store, ca.notice, ca.at = coordinator, store, notice, at
    return ca, store, coordinator, clock


# --- a lost lease --------------------------------------------------------------------------------------------


async def test_a_lost_lease_records_the_failure_under_its_fence_which_the_new_holder_refuses(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ca, store, coordinator, clock = taken_over(notice=True)
    mgr, _ = manager((A,), store, ca, clock, coordinator=coordinator)
    await run_for(mgr, 6 * HOUR)
    assert ca.theirs is not None
    # This node's late write of its failed attempt was refused: the other node's state and certificate stand.
    assert [(method, fence.token) for method, fence in store.refused] == [("save_state", 1)]
    state = await store.load_state("a.test")
    assert state is not None and state.failures == 0 and state.last_error is None
    stored = await store.load("a.test")
    assert stored is not None and stored.serial == ca.theirs.serial
    assert ca.orders == [A.domains]  # it follows the other node's work instead of ordering again
    assert mgr.served.ours(A.cert_id)[0] == ca.theirs.serial  # and serves the other node's certificate
    assert not [r for r in caplog.records if r.exc_info is not None or "unexpected error" in r.getMessage()]


async def test_a_lost_lease_nobody_took_over_records_the_failure_and_orders_again_soon(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock = TrioLinkedClock(EPOCH)
    store = FencingStore()
    coordinator = LeaseCoordinator(store)

    class LostAtFinalize(FakeCA):
        lost = False

        async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str:
            chain = await super().finalize(order, csr_pem, deadline)
            if not self.lost:  # the store was away until the lease ran out; nobody else took it
                self.lost = True
                coordinator.notice_lost("a.test")
            return chain

    ca = LostAtFinalize(clock)
    mgr, _ = manager((A,), store, ca, clock, coordinator=coordinator)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(20)
        state = await store.load_state("a.test")
        assert state is not None and state.failures == 1 and "lost the lock on 'a.test'" in (state.last_error or "")
        assert mgr.next_checks[A.cert_id] <= clock.now() + timedelta(seconds=30)  # not the 10-minute check
        await trio.sleep(HOUR)
        nursery.cancel_scope.cancel()
    assert store.refused == []
    # After the back-off, the next attempt resumes the abandoned order (its record is in the store) and saves.
    stored, state = await store.load("a.test"), await store.load_state("a.test")
    assert stored is not None and int(stored.serial, 16) == ca.issued[0]
    assert ca.orders == [A.domains] and ca.calls.count("resume_order") == 1
    assert state is not None and state.failures == 0
    assert not [r for r in caplog.records if r.exc_info is not None or "unexpected error" in r.getMessage()]


async def test_a_save_refused_by_the_fence_drops_the_new_certificate_and_serves_the_stores(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ca, store, coordinator, clock = taken_over(notice=False)  # the first sign of the take-over is the refused save
    caplog.set_level(logging.INFO)
    mgr, _ = manager((A,), store, ca, clock, coordinator=coordinator)
    await run_for(mgr, 6 * HOUR)
    assert ca.theirs is not None
    stored = await store.load("a.test")
    assert stored is not None and stored.serial == ca.theirs.serial  # never overwritten by a save "again"
    assert [method for method, _ in store.refused] == ["save"]  # refused once, not retried on a back-off
    assert mgr.served.ours(A.cert_id)[0] == ca.theirs.serial
    assert ca.orders == [A.domains]
    [dropped] = [r for r in caplog.records if "is dropped" in r.getMessage()]
    assert dropped.levelno == logging.WARNING
    assert dropped.getMessage().startswith("certificate for a.test: the new certificate (serial ")
    assert dropped.getMessage().endswith("another process has taken the certificate over; serving the store's")


# --- the store away ------------------------------------------------------------------------------------------

REFUSED = "cannot load certificate 'a.test': Redis at redis://127.0.0.1:6379/0: Error 111 connecting: Connection refused"


class AwayStore(MemoryStore):
    """A store whose Redis goes away on demand: while ``away``, every read and write of a certificate's data fails."""

    away = False
    failed = 0

    def _reach(self) -> None:
        if self.away:
            self.failed += 1
            raise StoreError(REFUSED)

    async def load(self, name: str) -> CertBundle | None:
        self._reach()
        return await super().load(name)

    async def load_state(self, name: str) -> RenewalState | None:
        self._reach()
        return await super().load_state(name)

    async def save(self, bundle: CertBundle) -> None:
        self._reach()
        await super().save(bundle)

    async def save_state(self, state: RenewalState) -> None:
        self._reach()
        await super().save_state(state)


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the manager's error boundary logs: tracebacks and "unexpected error"."""
    return [r.getMessage() for r in caplog.records if r.exc_info is not None or "unexpected error" in r.getMessage()]


async def test_a_store_away_is_said_once_and_orders_resume_within_seconds_of_its_return(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    store = AwayStore()
    mgr, _ = manager((A, B), store, ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        store.away = True
        await trio.sleep(600)
        assert ca.orders == []
        assert 2 * 600 / 15 <= store.failed <= 2 * (600 / 10 + 1)  # each certificate looks every 10-15 s...
        away = [r for r in caplog.records if "certificate store unreachable" in r.getMessage()]
        assert [(r.levelno, r.getMessage()) for r in away] == [(  # ...and the worker says so once
            logging.WARNING,
            f"certificate store unreachable ({REFUSED}): renewals wait until it is back; checking every 10-15 s",
        )]
        store.away = False
        await trio.sleep(16)
        assert sorted(ca.orders) == [A.domains, B.domains]  # not a 10-minute check interval later
        assert await store.load("a.test") is not None and await store.load("b.test") is not None
        back = [(r.levelno, r.getMessage()) for r in caplog.records if "reachable again" in r.getMessage()]
        assert back == [(logging.INFO, "certificate store reachable again: renewals resume")]
        store.away = True  # and away again: said again, once
        await trio.sleep(HOUR)
        nursery.cancel_scope.cancel()
    assert len([r for r in caplog.records if "certificate store unreachable" in r.getMessage()]) == 2
    assert problems(caplog) == []


async def test_while_the_store_is_away_the_served_certificate_stays_and_nothing_is_ordered(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    store = AwayStore()
    served = other_nodes_certificate(clock)
    await store.save(served)
    mgr, registry = manager((A,), store, ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        store.away = True
        entry = registry.entry(A.cert_id)
        assert entry is not None
        await trio.sleep(6 * HOUR)
        assert registry.entry(A.cert_id) is entry
        assert mgr.served.ours(A.cert_id)[0] == served.serial
        nursery.cancel_scope.cancel()
    assert ca.orders == [] and store.failed > 6 * HOUR / 15
    assert problems(caplog) == []


async def test_an_order_record_refused_by_the_fence_abandons_the_order_quietly(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ca, store, coordinator, clock = taken_over(notice=False, at="validation")
    mgr, _ = manager((A,), store, ca, clock, coordinator=coordinator)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        while ca.theirs is None:
            await trio.sleep(1)
        await trio.sleep(1)
        assert [method for method, _ in store.refused] == ["save_order"]  # the order is abandoned there
        assert mgr.next_checks[A.cert_id] <= clock.now() + timedelta(seconds=30)
        await trio.sleep(6 * HOUR)
        nursery.cancel_scope.cancel()
    stored = await store.load("a.test")
    assert stored is not None and ca.theirs is not None and stored.serial == ca.theirs.serial
    assert mgr.served.ours(A.cert_id)[0] == ca.theirs.serial
    assert ca.orders == [A.domains] and "finalize" not in ca.calls
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]  # not taken for the store away
    assert problems(caplog) == []


async def test_an_unsaved_certificate_never_replaces_a_newer_one_another_node_saved_meanwhile(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = TrioLinkedClock(EPOCH)
    ca = FakeCA(clock)
    store = FullDisk()  # refuses this node's saves while full
    mgr, _ = manager((A,), store, ca, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(2 * HOUR)
        assert ca.orders == [A.domains] and await store.load("a.test") is None  # served from memory meanwhile
        theirs = other_nodes_certificate(clock)  # another node took over (this one's lease lost) and renewed it
        await MemoryStore.save(store, theirs)  # its save went through
        store.full = False
        await trio.sleep(12 * HOUR)  # past this node's next "save again"
        nursery.cancel_scope.cancel()
    stored = await store.load("a.test")
    assert stored is not None and stored.serial == theirs.serial
    assert mgr.served.ours(A.cert_id)[0] == theirs.serial
    assert ca.orders == [A.domains]
    assert any("another process has saved a newer certificate meanwhile" in r.getMessage() for r in caplog.records)
