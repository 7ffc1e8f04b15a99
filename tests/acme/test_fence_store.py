"""Fenced writes of the Redis store against a real redis-server: a write made under a lease another node has taken
over since is refused, and the newer node's data stays.

"Node a" and "node b" are two :class:`RedisLeases` (or coordinators) and stores on one Redis, as two machines.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import coredis
import pytest
import trio
import trustme

from snakeway.acme.backend import OrderHandle
from snakeway.acme.coordination import Fence, LockLost, current_fence, fenced
from snakeway.acme.ledger import BUDGET_LOCK
from snakeway.acme.managed import ManagedCert
from snakeway.acme.rediscoord import RedisCoordinator
from snakeway.acme.redislease import RedisLeases
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import AccountRecord, FencedOut, OrderRecord
from snakeway.testing import FakeCA, TrioLinkedClock
from tests.acme.test_fence_renewer import other_nodes_certificate
from tests.acme.test_renewal_engine import EPOCH, manager
from tests.acme.test_store import DIRECTORY, NOW, FixedClock, a_ledger, key_pem, make_bundle

if TYPE_CHECKING:
    from tests.redisserver import RedisServer

NAME = "a.test"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def store_of(server: RedisServer) -> RedisStore:
    return RedisStore(server.url, encryption_key=bytes(range(32)), clock=FixedClock())


async def take_over(server: RedisServer, name: str = NAME) -> Fence:
    """What a node that took ``name`` over after the holder's lease ran out does first: a lease, a newer token."""
    leases = RedisLeases(server.url)
    async with coredis.Redis.from_url(server.url) as client:
        await client.delete([leases.keys.lease(name)])  # the paused holder's lease expired
    lease = await leases.acquire(name, "node-b:2:bbbb", 30.0)
    assert lease is not None
    return Fence(name, lease.token)


async def first_lease(server: RedisServer, name: str = NAME) -> Fence:
    lease = await RedisLeases(server.url).acquire(name, "node-a:1:aaaa", 30.0)
    assert lease is not None
    return Fence(name, lease.token)


async def get(server: RedisServer, key: str) -> bytes | None:
    async with coredis.Redis.from_url(server.url) as client:
        return await client.get(key)


async def generation(server: RedisServer) -> int:
    return int(await get(server, "snakeway:generation") or b"0")


async def snapshot(server: RedisServer) -> dict[bytes, bytes | None]:
    """Every key of the database and its serialized value (``DUMP``)."""
    async with coredis.Redis.from_url(server.url) as client:
        return {key: await client.dump(key) for key in await client.keys("*")}


async def test_a_save_under_an_outdated_fence_is_refused_and_the_newer_certificate_stays(
    redis_server: RedisServer, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = store_of(redis_server), store_of(redis_server)
    old_fence = await first_lease(redis_server)
    new_fence = await take_over(redis_server)
    assert new_fence.token > old_fence.token
    newer = make_bundle(ca, NAME)
    with fenced(new_fence):
        await b.save(newer)
        await b.save_state(RenewalState(name=NAME))
    late = make_bundle(ca, NAME)
    with fenced(old_fence), pytest.raises(FencedOut) as refused:
        await a.save(late)
    message = str(refused.value)
    assert "save certificate 'a.test'" in message
    assert f"fencing token {old_fence.token} of the lease on 'a.test'" in message
    assert "another node has taken the certificate over" in message
    with fenced(old_fence), pytest.raises(FencedOut):
        await a.save_state(RenewalState(name=NAME, failures=1, last_error="late"))
    stored = await b.load(NAME)
    assert stored is not None and stored.serial == newer.serial
    assert await b.load_state(NAME) == RenewalState(name=NAME)
    warnings = [r for r in caplog.records if "rejected by the fencing check" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert "save certificate 'a.test'" in warnings[0].getMessage()


async def test_a_save_under_the_current_fence_is_written_and_counts_a_generation(
    redis_server: RedisServer, ca: trustme.CA
) -> None:
    store = store_of(redis_server)
    fence = await first_lease(redis_server)
    bundle = make_bundle(ca, NAME, "www.a.test")
    before = await generation(redis_server)
    with fenced(fence):
        await store.save(bundle)
        await store.save(bundle)
    assert await generation(redis_server) == before + 2  # every fenced save still tells the other nodes
    stored = await store.load(NAME)
    assert stored is not None and stored.serial == bundle.serial
    assert (await store.index())[NAME].serial == bundle.serial


async def test_a_holder_whose_lease_expired_but_was_not_taken_over_still_writes(
    redis_server: RedisServer, ca: trustme.CA
) -> None:
    store = store_of(redis_server)
    fence = await first_lease(redis_server)
    async with coredis.Redis.from_url(redis_server.url) as client:
        await client.delete([f"snakeway:lease:{NAME}"])  # expired; nobody else did the work
    with fenced(fence):
        await store.save(make_bundle(ca, NAME))
    assert await store.load(NAME) is not None


WRITES: dict[str, Callable[[RedisStore, trustme.CA], Awaitable[None]]] = {
    "save": lambda s, ca: s.save(make_bundle(ca, NAME)),
    "save_state": lambda s, ca: s.save_state(RenewalState(name=NAME, failures=3)),
    "save_order": lambda s, ca: s.save_order(OrderRecord(NAME, "https://acme.test/order/late", key_pem(ca), NOW)),
    "delete_order": lambda s, ca: s.delete_order(NAME),
    "save_ledger": lambda s, ca: s.save_ledger(DIRECTORY, a_ledger()),
    "save_account": lambda s, ca: s.save_account(AccountRecord(DIRECTORY, key_pem(ca), "https://acme.test/acct/9")),
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_every_write_under_an_outdated_fence_changes_nothing(
    redis_server: RedisServer, ca: trustme.CA, write: str
) -> None:
    store = store_of(redis_server)
    await store.save_order(OrderRecord(NAME, "https://acme.test/order/1", key_pem(ca), NOW))
    old_fence = await first_lease(redis_server)
    await take_over(redis_server)
    before = await snapshot(redis_server)
    with fenced(old_fence), pytest.raises(FencedOut):
        await WRITES[write](store, ca)
    assert await snapshot(redis_server) == before
    order = await store.load_order(NAME)
    assert order is not None and order.order_url == "https://acme.test/order/1"


async def test_writes_without_a_fence_are_plain_and_touch_no_token(redis_server: RedisServer, ca: trustme.CA) -> None:
    store = store_of(redis_server)
    await take_over(redis_server)  # a lease exists, but this task holds no lock (start-up, the CLI)
    assert current_fence() is None
    for write in WRITES.values():
        await write(store, ca)
    assert await store.load(NAME) is not None
    state = await store.load_state(NAME)
    assert state is not None and state.failures == 3
    assert await get(redis_server, f"snakeway:token:{NAME}") == b"1"  # the lease's token, untouched


# --- the coordinator sets the fence ------------------------------------------------------------------------


async def test_the_lock_block_writes_under_its_lease_and_the_budget_lock_under_its_own(
    redis_server: RedisServer, ca: trustme.CA
) -> None:
    a = RedisCoordinator(redis_server.url)
    store = store_of(redis_server)
    assert current_fence() is None
    async with a.lock(NAME) as mine:
        assert mine
        outer = current_fence()
        assert outer is not None and outer.name == NAME
        async with a.lock(BUDGET_LOCK) as budget:
            assert budget
            inner = current_fence()
            assert inner is not None and inner.name == BUDGET_LOCK  # the innermost lock's token
            await store.save_ledger(DIRECTORY, a_ledger())
        assert current_fence() == outer
        await store.save(make_bundle(ca, NAME))
        # Another node takes the name over (this one paused past its lease): the block's next write is refused.
        await take_over(redis_server)
        with pytest.raises(FencedOut):
            await store.save_state(RenewalState(name=NAME, failures=1))
    assert current_fence() is None
    assert await store.load_state(NAME) is None
    assert await store.load_ledger(DIRECTORY) == a_ledger()


async def test_a_lost_lock_raises_lock_lost_with_its_fence_and_writes_under_it_are_refused(
    redis_server: RedisServer
) -> None:
    a = RedisCoordinator(redis_server.url, lease_ttl=0.3)
    store = store_of(redis_server)
    with trio.fail_after(5), pytest.raises(LockLost) as lost:
        async with a.lock(NAME) as mine:
            assert mine
            held = current_fence()
            newer = await take_over(redis_server)
            with fenced(newer):
                await store.save_state(RenewalState(name=NAME))
            await trio.sleep(10)  # the renewal fails: the block is cancelled
    assert lost.value.fence == held
    assert current_fence() is None
    with fenced(lost.value.fence), pytest.raises(FencedOut):
        await store.save_state(RenewalState(name=NAME, failures=1, last_error="lost the lock"))
    assert await store.load_state(NAME) == RenewalState(name=NAME)


# --- the whole chain: a certificate manager whose lease another node takes over mid-order -------------------


async def test_a_node_whose_lease_was_taken_over_mid_order_has_its_late_write_rejected(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Real time, real Redis: the renewal task notices the lost lease, and what the node writes then is refused."""
    clock = TrioLinkedClock(EPOCH)
    store = RedisStore(redis_server.url, clock=clock)
    coordinator = RedisCoordinator(redis_server.url, lease_ttl=0.3)
    theirs: list[str] = []

    class TakenOver(FakeCA):
        async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str:
            chain = await super().finalize(order, csr_pem, deadline)
            if not theirs:  # this node "paused" past its lease: node b took the certificate and saved its own
                fence = await take_over(redis_server)
                bundle = other_nodes_certificate(clock)
                with fenced(fence):
                    await store.save(bundle)
                theirs.append(bundle.serial)
                await trio.sleep(1)  # this node wakes up: its renewal task finds the lease gone
            return chain

    cert = ManagedCert("acme:a.test", (NAME,))
    mgr, _ = manager((cert,), store, TakenOver(clock), clock, coordinator=coordinator)  # type: ignore[arg-type]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(mgr.run)
            while not any("rejected by the fencing check" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    [rejected] = [r for r in caplog.records if "rejected by the fencing check" in r.getMessage()]
    assert rejected.levelno == logging.WARNING
    assert "save renewal state of 'a.test'" in rejected.getMessage()  # the failed attempt, recorded too late
    assert "lost the lock on 'a.test'" in caplog.text
    stored = await store.load(NAME)
    assert stored is not None and [stored.serial] == theirs  # the store keeps the newer node's certificate
    assert await store.load_state(NAME) is None  # and nothing of this node's failed attempt
