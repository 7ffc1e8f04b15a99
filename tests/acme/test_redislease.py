"""Leases and fencing tokens against a real redis-server, in real time (short ttls and ``trio.sleep``).

Each "node" is its own :class:`RedisLeases` (its own connections), as two machines sharing one Redis would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import coredis
import pytest
import trio

from snakeway.acme.redislease import Lease, RedisLeases, Write, new_owner
from snakeway.acme.store import StoreError
from tests.pebble import free_port

if TYPE_CHECKING:
    from tests.redisserver import RedisServer

LONG = 30.0  # seconds: a lease that does not expire during a test
SHORT = 0.2  # seconds: a lease the test waits out
NAME = "example.com"


async def value_of(url: str, key: str) -> bytes | None:
    async with coredis.Redis.from_url(url) as client:
        value: bytes | None = await client.get(key)
        return value


async def test_one_holder_at_a_time_across_nodes(redis_server: RedisServer) -> None:
    a, b = RedisLeases(redis_server.url), RedisLeases(redis_server.url)
    lease = await a.acquire(NAME, "node-a", LONG)
    assert lease is not None
    assert (lease.name, lease.owner, lease.token) == (NAME, "node-a", 1)
    assert lease.expires_at <= trio.current_time() + LONG
    assert await b.acquire(NAME, "node-b", LONG) is None
    assert await a.acquire(NAME, "node-a", LONG) is None  # not even its own holder twice
    assert await b.holder(NAME) == "node-a"
    # Another name is another lease, with its own tokens.
    other = await b.acquire("other.test", "node-b", LONG)
    assert other is not None
    assert other.token == 1
    assert await a.release(lease)
    assert await b.holder(NAME) is None
    taken = await b.acquire(NAME, "node-b", LONG)
    assert taken is not None
    assert taken.token == 2


async def test_expiry_lets_another_node_take_it_with_a_higher_token(redis_server: RedisServer) -> None:
    a, b = RedisLeases(redis_server.url), RedisLeases(redis_server.url)
    first = await a.acquire(NAME, "node-a", SHORT)
    assert first is not None
    await trio.sleep(SHORT + 0.1)
    assert await a.holder(NAME) is None
    second = await b.acquire(NAME, "node-b", LONG)
    assert second is not None
    assert second.token > first.token
    assert await a.holder(NAME) == "node-b"


async def test_renew_keeps_the_lease_and_a_non_owner_cannot_renew(redis_server: RedisServer) -> None:
    a, b = RedisLeases(redis_server.url), RedisLeases(redis_server.url)
    lease = await a.acquire(NAME, "node-a", SHORT)
    assert lease is not None
    before = lease.expires_at
    for _ in range(4):  # 4 x 0.1 s: twice the ttl, held throughout
        await trio.sleep(SHORT / 2)
        assert await a.renew(lease, SHORT)
    assert lease.expires_at > before
    assert await b.acquire(NAME, "node-b", LONG) is None
    assert await b.holder(NAME) == "node-a"
    # A lease object of another owner (or an old lease of the same one) renews nothing.
    assert not await b.renew(Lease(NAME, "node-b", lease.token, 0.0), LONG)
    assert not await b.renew(Lease(NAME, "node-a", lease.token - 1, 0.0), LONG)
    await trio.sleep(SHORT + 0.1)
    assert await b.holder(NAME) is None  # neither refused renewal extended it
    # Once another node took it over, the old holder's renewal fails and leaves the new lease alone.
    taken = await b.acquire(NAME, "node-b", LONG)
    assert taken is not None
    assert not await a.renew(lease, LONG)
    assert await a.holder(NAME) == "node-b"


async def test_release_by_a_non_owner_does_nothing(redis_server: RedisServer) -> None:
    a, b = RedisLeases(redis_server.url), RedisLeases(redis_server.url)
    lease = await a.acquire(NAME, "node-a", LONG)
    assert lease is not None
    assert not await b.release(Lease(NAME, "node-b", lease.token, 0.0))
    assert not await b.release(Lease(NAME, "node-a", lease.token + 1, 0.0))
    assert await b.holder(NAME) == "node-a"
    assert await b.acquire(NAME, "node-b", LONG) is None
    assert await a.release(lease)
    assert not await a.release(lease)  # twice: the second finds nothing of its own


async def test_a_paused_node_cannot_overwrite_the_newer_holders_work(redis_server: RedisServer) -> None:
    a, b = RedisLeases(redis_server.url), RedisLeases(redis_server.url)
    key = "snakeway:cert:example.com:test"
    lease_a = await a.acquire(NAME, "node-a", SHORT)
    assert lease_a is not None
    assert lease_a.token == 1
    assert await a.fenced_set(lease_a, key, b"a's first")  # in time: written
    await trio.sleep(SHORT + 0.1)  # node A pauses past its lease
    lease_b = await b.acquire(NAME, "node-b", LONG)
    assert lease_b is not None
    assert lease_b.token == 2
    assert await b.fenced_set(lease_b, key, b"b's")
    # A wakes up, still believing it holds the lease: its late writes are refused and change nothing.
    assert not await a.fenced_set(lease_a, key, b"a's late")
    assert not await a.fenced_hset(lease_a, "snakeway:certs:test", {NAME: b"a's meta"})
    assert not await a.fenced_write(lease_a, [Write("del", key)])
    assert await value_of(redis_server.url, key) == b"b's"
    assert await value_of(redis_server.url, "snakeway:token:example.com") == b"2"
    async with coredis.Redis.from_url(redis_server.url) as client:
        assert await client.exists(["snakeway:certs:test"]) == 0
    assert await a.holder(NAME) == "node-b"


async def test_fenced_writes_apply_together(redis_server: RedisServer) -> None:
    leases = RedisLeases(redis_server.url)
    lease = await leases.acquire(NAME, "node-a", LONG)
    assert lease is not None
    async with coredis.Redis.from_url(redis_server.url) as client:
        await client.hset("h", {"old": "1", "kept": "1"})
        await client.hset("r", {"old": "1"})
        await client.set("gone", "1")
        assert await leases.fenced_write(lease, [
            Write("set", "s", (b"v",)), Write("hset", "h", ("f", "v")), Write("hreplace", "r", ("f", "v")),
            Write("del", "gone"),
        ])
        assert await client.get("s") == b"v"
        assert await client.hgetall("h") == {b"old": b"1", b"kept": b"1", b"f": b"v"}
        assert await client.hgetall("r") == {b"f": b"v"}
        assert await client.exists(["gone"]) == 0
        assert await leases.fenced_hset(lease, "r", {"g": "w"}, replace=True)
        assert await client.hgetall("r") == {b"g": b"w"}


async def test_tokens_strictly_increase_over_many_acquisitions(redis_server: RedisServer) -> None:
    nodes = [RedisLeases(redis_server.url) for _ in range(3)]
    tokens = []
    for round_ in range(30):
        lease = await nodes[round_ % 3].acquire(NAME, f"node-{round_ % 3}", LONG)
        assert lease is not None
        tokens.append(lease.token)
        assert await nodes[round_ % 3].release(lease)
    assert tokens == list(range(1, 31))


async def test_a_lost_counter_is_raised_by_the_next_fenced_write(redis_server: RedisServer) -> None:
    leases = RedisLeases(redis_server.url)
    for _ in range(4):
        lease = await leases.acquire(NAME, "node-a", LONG)
        assert lease is not None
        await leases.release(lease)
    old = await leases.acquire(NAME, "node-a", SHORT)
    assert old is not None
    assert old.token == 5
    async with coredis.Redis.from_url(redis_server.url) as client:
        await client.flushall()  # Redis restarted empty
    assert await leases.fenced_set(old, "k", "old")  # nobody newer: written, and the counter is back at 5
    new = await leases.acquire(NAME, "node-b", LONG)
    assert new is not None
    assert new.token == 6


async def test_twenty_racing_acquisitions_have_exactly_one_winner(redis_server: RedisServer) -> None:
    won: list[Lease] = []

    async def race(index: int) -> None:
        lease = await RedisLeases(redis_server.url).acquire(NAME, f"node-{index}", LONG)
        if lease is not None:
            won.append(lease)

    async with trio.open_nursery() as nursery:
        for index in range(20):
            nursery.start_soon(race, index)
    assert len(won) == 1
    assert won[0].token == 1
    assert await RedisLeases(redis_server.url).holder(NAME) == won[0].owner


async def test_keys_live_under_the_prefix(redis_server: RedisServer) -> None:
    leases = RedisLeases(redis_server.url, key_prefix="edge")
    lease = await leases.acquire(NAME, "node-a", LONG)
    assert lease is not None
    async with coredis.Redis.from_url(redis_server.url) as client:
        assert sorted(await client.keys("*")) == [b"edge:lease:example.com", b"edge:token:example.com"]
    assert await RedisLeases(redis_server.url).holder(NAME) is None


async def test_an_unreachable_redis_is_a_store_error() -> None:
    leases = RedisLeases(f"redis://:secret@127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreError, match=r"cannot acquire lease 'example.com': Redis at redis://127\.0\.0\.1:") as info:
        await leases.acquire(NAME, "node-a", LONG)
    assert "secret" not in str(info.value)
    lease = Lease(NAME, "node-a", 1, 0.0)
    for attempt in (leases.renew(lease, LONG), leases.release(lease), leases.holder(NAME),
                    leases.fenced_set(lease, "k", "v")):
        with pytest.raises(StoreError):
            await attempt


def test_owner_ids_are_distinct_and_readable() -> None:
    owners = {new_owner() for _ in range(100)}
    assert len(owners) == 100
    host, pid, suffix = next(iter(owners)).rsplit(":", 2)
    assert host
    assert int(pid) > 0
    assert len(suffix) == 8
