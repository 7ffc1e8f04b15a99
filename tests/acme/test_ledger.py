"""The shared rate-limit budget (thin shell): two nodes spending from one ledger, on trio's MockClock."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from snakeway.acme.budget import CERTIFICATE_WINDOW, Ledger
from snakeway.acme.coordination import LocalCoordinator
from snakeway.acme.ledger import IN_FLIGHT_RETRY, LAND_TIMEOUT, SharedBudget
from snakeway.acme.reservation import PENDING_BOUND
from snakeway.acme.store import MemoryStore, StoreError
from snakeway.config.model import AcmeSettings, RateLimitSettings
from snakeway.testing import TrioLinkedClock

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
LIMIT = 3
NAMES = [(f"n{i}.example.test",) for i in range(2 * LIMIT)]


def node(store: MemoryStore, coordinator: LocalCoordinator, clock: TrioLinkedClock) -> SharedBudget:
    acme = AcmeSettings(
        directory_url="https://ca.test/dir", rate_limits=RateLimitSettings(certificates_per_domain_per_week=LIMIT)
    )
    return SharedBudget(acme=acme, store=store, coordinator=coordinator, clock=clock)


def two_nodes(store: MemoryStore | None = None) -> tuple[SharedBudget, SharedBudget, TrioLinkedClock]:
    store = store or MemoryStore()
    coordinator, clock = LocalCoordinator(), TrioLinkedClock(EPOCH)
    return node(store, coordinator, clock), node(store, coordinator, clock), clock


async def fill(budget: SharedBudget) -> None:
    """Order the first LIMIT names on ``budget``: the bucket is full of its orders in flight."""
    for names in NAMES[:LIMIT]:
        assert await budget.spend_order(names, renewal=False) is None


async def spend_all(pairs: list[tuple[SharedBudget, tuple[str, ...]]]) -> dict[tuple[str, ...], datetime | None]:
    """Every ``spend_order`` at once; the answer of each, by names."""
    answers: dict[tuple[str, ...], datetime | None] = {}

    async def spend(budget: SharedBudget, names: tuple[str, ...]) -> None:
        answers[names] = await budget.spend_order(names, renewal=False)

    async with trio.open_nursery() as nursery:
        for budget, names in pairs:
            nursery.start_soon(spend, budget, names)
    return answers


async def test_two_nodes_ordering_at_once_never_reserve_more_than_the_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    one, two, clock = two_nodes()
    answers = await spend_all([(one if i % 2 else two, names) for i, names in enumerate(NAMES)])
    admitted = [names for names, when in answers.items() if when is None]
    assert len(admitted) == LIMIT
    # Only orders in flight fill the bucket: the others ask again soon, not in 7 days.
    assert {when for when in answers.values() if when is not None} == {clock.now() + IN_FLIGHT_RETRY}
    ledger = await one.store.load_ledger(one.directory_url)
    assert ledger is not None and sum(cert.pending for cert in ledger.issued) == LIMIT


async def test_a_failed_order_frees_its_room_for_the_other_node_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    one, two, _ = two_nodes()
    await fill(one)
    assert await two.spend_order(NAMES[LIMIT], renewal=False) is not None
    await one.landed(NAMES[0])  # ended without a certificate
    assert await two.spend_order(NAMES[LIMIT], renewal=False) is None


async def test_an_issued_certificate_holds_its_room_for_the_week(autojump_clock: trio.testing.MockClock) -> None:
    one, two, clock = two_nodes()
    await fill(one)
    await trio.sleep(60)
    issued_at = clock.now()
    for names in NAMES[:LIMIT]:
        await one.issued(names, renewal=False)
        await one.landed(names)  # already settled: nothing is released
    assert await two.spend_order(NAMES[LIMIT], renewal=False) == issued_at + CERTIFICATE_WINDOW
    ledger = await one.store.load_ledger(one.directory_url)
    assert ledger is not None and [cert.pending for cert in ledger.issued] == [False] * LIMIT


async def test_a_node_that_died_mid_order_leaves_its_certificates_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    one, two, _ = two_nodes()
    await fill(one)
    # "one" never lands its orders (it died). Past the bound, they may have been issued: wait for the window.
    await trio.sleep(PENDING_BOUND.total_seconds())
    assert await two.spend_order(NAMES[LIMIT], renewal=False) == EPOCH + CERTIFICATE_WINDOW


async def test_landing_releases_even_when_the_order_is_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    one, two, _ = two_nodes()
    await fill(one)
    with trio.CancelScope() as scope:
        scope.cancel()
        await one.landed(NAMES[0])
    assert await two.spend_order(NAMES[LIMIT], renewal=False) is None


class UnwritableLedger(MemoryStore):
    """A store whose ledger can be read but no longer written."""

    writable = True

    async def save_ledger(self, directory_url: str, ledger: Ledger) -> None:
        if not self.writable:
            raise StoreError("Read-only file system")
        await super().save_ledger(directory_url, ledger)


async def test_a_release_that_cannot_be_written_is_logged_not_raised(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = UnwritableLedger()
    one, _, _ = two_nodes(store)
    assert await one.spend_order(NAMES[0], renewal=False) is None
    store.writable = False
    await one.landed(NAMES[0])
    assert "could not release the rate-limit reservation for n0.example.test: Read-only file system" in caplog.text
    ledger = await store.load_ledger(one.directory_url)
    assert ledger is not None and [cert.pending for cert in ledger.issued] == [True]  # still counted: stricter


class StuckLock(LocalCoordinator):
    """A coordinator whose budget lock another process holds and never gives up."""

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[bool]:
        yield False


async def test_a_release_that_cannot_get_the_lock_gives_up_after_a_bound(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = MemoryStore(), TrioLinkedClock(EPOCH)
    one = node(store, LocalCoordinator(), clock)
    assert await one.spend_order(NAMES[0], renewal=False) is None
    one.coordinator = StuckLock()
    started = trio.current_time()
    with caplog.at_level(logging.ERROR, logger="snakeway.acme.manager"):
        await one.landed(NAMES[0])
    assert trio.current_time() - started == pytest.approx(LAND_TIMEOUT, abs=0.1)
    assert "could not release the rate-limit reservation for n0.example.test in 10s" in caplog.text
