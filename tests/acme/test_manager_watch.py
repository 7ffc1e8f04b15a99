"""How a worker notices a certificate another worker saved: the store's generation, polled, then the stamps.

A scripted coordinator stands in for the store's directory (tests/e2e/test_workers.py does it with real
processes and files): each test says when the generation and a stamp change, and times the pickup on MockClock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest
import trio
import trio.testing

from snakeway.acme import watch as watch_module
from snakeway.acme.coordination import LocalCoordinator
from snakeway.acme.store import CertBundle, MemoryStore, StoreError
from snakeway.testing import TrioLinkedClock, inline
from snakeway.tls.registry import CertRegistry
from tests.acme.test_manager_startup import EPOCH, A, issued_memory_store, make_manager

POLL = watch_module.GENERATION_POLL_SECONDS
SAFETY_SCAN = 10.0


class ScriptedCoordinator(LocalCoordinator):
    def __init__(self) -> None:
        super().__init__()
        self.generation_now = 0
        self.stamp: dict[str, str] = {}
        self.scans = 0

    async def generation(self) -> object:
        await trio.lowlevel.checkpoint()
        return self.generation_now

    async def stamps(self, names: Iterable[str]) -> dict[str, str | None]:
        await trio.lowlevel.checkpoint()
        self.scans += 1
        return {name: self.stamp.get(name) for name in names}


async def running_worker(nursery: trio.Nursery) -> tuple[MemoryStore, ScriptedCoordinator, CertRegistry]:
    store = await issued_memory_store(A)
    coordinator = ScriptedCoordinator()
    coordinator.stamp[A.name] = "v1"
    manager, registry = make_manager(
        (A,), store, TrioLinkedClock(EPOCH), offload=inline, coordinator=coordinator, watch_interval=SAFETY_SCAN
    )
    await nursery.start(manager.run)
    return store, coordinator, registry


async def newer_bundle() -> CertBundle:
    """A newer certificate for A, as another worker's CertManager would save it."""
    await trio.sleep(1)  # a later issuance: another serial
    bundle = await (await issued_memory_store(A)).load(A.name)
    assert bundle is not None
    return bundle


async def seconds_until_served(registry: CertRegistry, limit: float) -> float:
    before, started = registry.entry(A.cert_id), trio.current_time()
    with trio.fail_after(limit):
        while registry.entry(A.cert_id) is before:
            await trio.sleep(POLL / 10)
    return trio.current_time() - started


async def test_a_new_generation_is_seen_within_a_poll(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        store, coordinator, registry = await running_worker(nursery)
        await store.save(await newer_bundle())
        coordinator.stamp[A.name] = "v2"
        coordinator.generation_now += 1
        assert await seconds_until_served(registry, 1.0) <= POLL * 1.2
        nursery.cancel_scope.cancel()


async def test_a_stamp_that_changes_within_the_same_tick_is_seen_on_the_next_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The generation is a coarse timestamp: a second save in the same tick does not change it again."""
    async with trio.open_nursery() as nursery:
        store, coordinator, registry = await running_worker(nursery)
        newer = await newer_bundle()
        scans = coordinator.scans
        coordinator.generation_now += 1  # a first save: the scan it causes finds nothing new for A ...
        while coordinator.scans == scans:
            await trio.sleep(POLL / 10)
        await store.save(newer)  # ... and a second one in the same tick leaves the generation as it was
        coordinator.stamp[A.name] = "v2"
        assert await seconds_until_served(registry, 1.0) <= POLL * 1.2
        nursery.cancel_scope.cancel()


async def test_without_a_new_generation_the_safety_scan_finds_it(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        store, coordinator, registry = await running_worker(nursery)
        await store.save(await newer_bundle())
        coordinator.stamp[A.name] = "v2"
        waited = await seconds_until_served(registry, SAFETY_SCAN + 1)
        assert POLL < waited <= SAFETY_SCAN
        nursery.cancel_scope.cancel()


class SavedDuringStartUp(MemoryStore):
    """A store into which another worker saves ``newer`` right after this worker's start-up has read it."""

    def __init__(self, coordinator: ScriptedCoordinator) -> None:
        super().__init__()
        self.coordinator = coordinator
        self.newer: CertBundle | None = None

    async def load(self, name: str) -> CertBundle | None:
        bundle = await super().load(name)
        if self.newer is not None:
            await super().save(self.newer)
            self.newer = None
            self.coordinator.stamp[name] = "v2"
            self.coordinator.generation_now += 1
        return bundle


async def test_a_certificate_saved_while_the_worker_starts_is_picked_up_within_a_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    coordinator = ScriptedCoordinator()
    store = SavedDuringStartUp(coordinator)
    older = await (await issued_memory_store(A)).load(A.name)
    assert older is not None
    await store.save(older)
    coordinator.stamp[A.name] = "v1"
    store.newer = await newer_bundle()
    # Its first check is spread out (a minute or so away): only the watch brings the newer one in soon.
    manager, registry = make_manager((A,), store, TrioLinkedClock(EPOCH), offload=inline, coordinator=coordinator,
                                     watch_interval=SAFETY_SCAN, spread_above=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        assert store.newer is None  # saved while the worker read the store at start-up
        assert await seconds_until_served(registry, POLL * 2) <= POLL * 1.2
        nursery.cancel_scope.cancel()


class SlowSavingStore(MemoryStore):
    """A store whose save is visible (new generation and stamp) a while before it returns."""

    def __init__(self, coordinator: ScriptedCoordinator) -> None:
        super().__init__()
        self.coordinator = coordinator

    async def save(self, bundle: CertBundle) -> None:
        await super().save(bundle)
        self.coordinator.stamp[bundle.name] = bundle.serial
        self.coordinator.generation_now += 1
        await trio.sleep(POLL * 3)  # e.g. the fsyncs of a filesystem store


async def test_a_worker_does_not_pick_up_its_own_save(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="snakeway.acme")
    coordinator = ScriptedCoordinator()
    store = SlowSavingStore(coordinator)
    manager, registry = make_manager(
        (A,), store, TrioLinkedClock(EPOCH), offload=inline, coordinator=coordinator, watch_interval=SAFETY_SCAN
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        with trio.fail_after(60):
            while registry.entry(A.cert_id) is None or "issued by" not in caplog.text:
                await trio.sleep(POLL)
        await trio.sleep(SAFETY_SCAN + 1)  # every poll and a safety scan after the save
        nursery.cancel_scope.cancel()
    assert caplog.text.count("issued by") == 1
    assert "picked up from the store" not in caplog.text


class FlakyCoordinator(ScriptedCoordinator):
    """A shared store that can be away (Redis stopped): every read raises StoreError meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.away = False

    async def generation(self) -> object:
        if self.away:
            await trio.lowlevel.checkpoint()
            raise StoreError("cannot read the store generation: Redis at redis://127.0.0.1:1/0: refused")
        return await super().generation()


@pytest.mark.parametrize("away_at_start", [False, True])
async def test_a_store_away_is_logged_once_and_the_watch_resumes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, away_at_start: bool
) -> None:
    caplog.set_level(logging.INFO, logger=watch_module.__name__)
    store = await issued_memory_store(A)
    coordinator = FlakyCoordinator()
    coordinator.stamp[A.name] = "v1"
    manager, registry = make_manager(
        (A,), store, TrioLinkedClock(EPOCH), offload=inline, coordinator=coordinator, watch_interval=SAFETY_SCAN
    )
    coordinator.away = away_at_start  # then the watch has no baseline to compare with yet
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        served = registry.entry(A.cert_id)
        coordinator.away = True
        await trio.sleep(SAFETY_SCAN * 3)  # many polls and safety scans while away: the worker keeps serving
        assert registry.entry(A.cert_id) is served
        await store.save(await newer_bundle())
        coordinator.stamp[A.name] = "v2"
        coordinator.generation_now += 1
        coordinator.away = False
        assert await seconds_until_served(registry, 1.0) <= POLL * 1.2
        nursery.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records if r.name == watch_module.__name__]
    assert [m for m in messages if "cannot watch" in m] == [
        "cannot watch the certificate store for new certificates: "
        "cannot read the store generation: Redis at redis://127.0.0.1:1/0: refused"
    ]
    assert "watching the certificate store again" in messages


class TellingCoordinator(ScriptedCoordinator):
    """A coordinator told of every save (as Redis pub/sub tells it), whose generation is only polled rarely."""

    poll_seconds = SAFETY_SCAN / 2

    def __init__(self) -> None:
        super().__init__()
        self.told = trio.Event()
        self.following = False

    async def follow_changes(self) -> None:
        self.following = True
        try:
            await trio.sleep_forever()
        finally:
            self.following = False

    async def wait_changed(self, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            await self.told.wait()
        told, self.told = self.told.is_set(), trio.Event()
        return told


async def test_a_save_the_coordinator_is_told_of_is_scanned_for_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Told of a save, the watch scans at once: neither the generation poll nor the safety scan is waited for."""
    store = await issued_memory_store(A)
    coordinator = TellingCoordinator()
    coordinator.stamp[A.name] = "v1"
    manager, registry = make_manager(
        (A,), store, TrioLinkedClock(EPOCH), offload=inline, coordinator=coordinator, watch_interval=SAFETY_SCAN
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(1)
        assert coordinator.following  # the watch keeps the coordinator's news coming while it watches
        await store.save(await newer_bundle())
        coordinator.stamp[A.name] = "v2"  # the generation stays: only being told says there is something new
        coordinator.told.set()
        assert await seconds_until_served(registry, 1.0) <= POLL
        nursery.cancel_scope.cancel()
