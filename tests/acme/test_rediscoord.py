"""The Redis coordinator against a real redis-server, in real time (short lease ttls and ``trio.sleep``).

Each "process" is its own :class:`RedisCoordinator` (its own connections), as two machines sharing one Redis.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import coredis
import pytest
import trio
import trustme

from snakeway.acme.rediscoord import RedisCoordinator
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.store import StoreError
from tests.acme.test_store import make_bundle
from tests.pebble import free_port

if TYPE_CHECKING:
    from tests.redisserver import RedisServer

SHORT = 0.3  # seconds: a lease ttl renewed every 0.1 s
NAME = "example.com"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pair(server: RedisServer, ttl: float = 30.0) -> tuple[RedisCoordinator, RedisCoordinator]:
    return (RedisCoordinator(server.url, lease_ttl=ttl), RedisCoordinator(server.url, lease_ttl=ttl))


async def test_one_lock_holder_at_a_time_and_release_lets_the_other_in(redis_server: RedisServer) -> None:
    a, b = pair(redis_server)
    async with a.lock(NAME) as mine:
        assert mine
        async with b.lock(NAME) as theirs:
            assert not theirs
        async with a.lock(NAME) as again:
            assert not again  # not re-entrant: a second order from the same process is refused too
        async with b.lock("other.example") as other:
            assert other  # names are independent
    async with b.lock(NAME) as theirs:
        assert theirs
        async with a.lock(NAME) as mine:
            assert not mine


async def test_a_lock_is_renewed_while_its_block_runs(redis_server: RedisServer) -> None:
    a, b = pair(redis_server, ttl=SHORT)
    finished = False
    async with a.lock(NAME) as mine:
        assert mine
        for _ in range(5):  # five ttls: the lease would long have expired without renewals
            await trio.sleep(SHORT)
            async with b.lock(NAME) as theirs:
                assert not theirs
        finished = True
    assert finished
    async with b.lock(NAME) as theirs:
        assert theirs


async def test_a_lost_lease_cancels_the_block(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair(redis_server, ttl=SHORT)
    reached_end = False
    with trio.fail_after(5), pytest.raises(StoreError, match="lost the lock on 'example.com'.*abandoned"):
        async with a.lock(NAME) as mine:
            assert mine
            # Another process takes the name over (as after a pause longer than the ttl): a's next renewal fails.
            async with coredis.Redis.from_url(redis_server.url) as client:
                await client.delete([a.keys.lease(NAME)])
            async with b.lock(NAME) as theirs:
                assert theirs
                await trio.sleep(10)  # the order in progress: a lost lease ends it
                reached_end = True
    assert not reached_end
    assert "lost the lock on 'example.com'" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_leaving_a_cancelled_block_leaves_the_new_holder_alone(redis_server: RedisServer) -> None:
    a, b = pair(redis_server, ttl=SHORT)
    with trio.fail_after(5), pytest.raises(StoreError):
        async with a.lock(NAME) as mine:
            assert mine
            async with coredis.Redis.from_url(redis_server.url) as client:
                await client.delete([a.keys.lease(NAME)])
            await b.leases.acquire(NAME, "process-b", 30.0)
            await trio.sleep(10)
    assert await b.leases.holder(NAME) == "process-b"
    async with a.lock(NAME) as mine:
        assert not mine


async def test_challenges_put_by_one_are_read_by_the_other(redis_server: RedisServer) -> None:
    a, b = pair(redis_server)
    assert await b.get_challenge("token-1") is None
    await a.put_challenge("token-1", "token-1.thumbprint")
    assert await b.get_challenge("token-1") == "token-1.thumbprint"
    ttl = int(redis_server.raw("TTL", a.keys.challenge("token-1")).strip().lstrip(b":"))
    assert 0 < ttl <= 600  # a crashed node leaves nothing behind for long
    await b.delete_challenge("token-1")
    assert await a.get_challenge("token-1") is None


async def test_generation_changes_on_every_save_and_stamps_follow_the_serial(
    redis_server: RedisServer, ca: trustme.CA
) -> None:
    a, b = pair(redis_server)
    store = RedisStore(redis_server.url)
    before = await b.generation()
    assert await b.stamps([NAME, "absent.example"]) == {NAME: None, "absent.example": None}
    first = make_bundle(ca, NAME)
    await store.save(first)
    after_first = await b.generation()
    assert after_first != before
    stamps = await a.stamps([NAME, "absent.example"])
    assert stamps[NAME] is not None and str(first.serial) in stamps[NAME]
    assert stamps["absent.example"] is None
    second = make_bundle(ca, NAME)
    await store.save(second)
    assert await a.generation() not in (before, after_first)
    renewed = await b.stamps([NAME])
    assert renewed[NAME] is not None and str(second.serial) in renewed[NAME]
    assert renewed != stamps
    assert await a.stamps([]) == {}


async def test_a_challenge_lookup_with_redis_away_is_unanswered_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    away = RedisCoordinator(f"redis://127.0.0.1:{free_port()}/0")
    assert await away.get_challenge("http-01:token-1") is None
    assert "cannot answer a challenge another process may hold: cannot read a challenge: Redis at" in caplog.text


async def test_an_error_in_the_block_comes_out_as_itself(redis_server: RedisServer) -> None:
    a, b = pair(redis_server)
    with pytest.raises(StoreError, match="the store failed inside"):  # not wrapped in an exception group
        async with a.lock(NAME) as mine:
            assert mine
            raise StoreError("the store failed inside")
    async with b.lock(NAME) as theirs:
        assert theirs  # released on the way out
