"""What every coordinator of processes sharing one store promises, run against the file store and Redis.

Each fixture gives two coordinators as two processes (or machines) would hold them over one store: two
:class:`FileCoordinator` over the same directories (separate ``flock`` descriptions, as separate processes
have), or two :class:`RedisCoordinator` with their own connections to one real redis-server; and the store
they coordinate. Real time throughout: the file coordinator's generation is a directory's timestamp, and
Redis is a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme

from snakeway.acme.coordination import Coordinator, FileCoordinator
from snakeway.acme.filestore import FileStore
from snakeway.acme.rediscoord import RedisCoordinator
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.store import CertStore, StoreError
from tests.acme.test_store import make_bundle
from tests.redisserver import run_redis

NAME = "example.com"
TICK = 0.02  # seconds: more than a filesystem timestamp's granularity, so two saves never share one


@dataclass
class Shared:
    a: Coordinator
    b: Coordinator
    store: CertStore


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=["file", "redis"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shared]:
    if request.param == "file":
        certs, data = tmp_path / "certs", tmp_path / "acme"
        yield Shared(FileCoordinator(certs, data), FileCoordinator(certs, data), FileStore(certs, data))
        return
    (tmp_path / "redis").mkdir()
    async with run_redis(tmp_path / "redis") as server:
        yield Shared(RedisCoordinator(server.url), RedisCoordinator(server.url), RedisStore(server.url))


async def test_one_lock_holder_at_a_time_and_release_lets_the_other_in(shared: Shared) -> None:
    async with shared.a.lock(NAME) as mine:
        assert mine
        async with shared.b.lock(NAME) as theirs:
            assert not theirs
        async with shared.a.lock(NAME) as again:
            assert not again  # not re-entrant: a second order from the same process is refused too
        async with shared.b.lock("other.example") as other:
            assert other  # names are independent
    async with shared.b.lock(NAME) as theirs:
        assert theirs
        async with shared.a.lock(NAME) as mine:
            assert not mine


async def test_an_error_in_the_block_comes_out_as_itself_and_releases_the_lock(shared: Shared) -> None:
    with pytest.raises(StoreError, match="the store failed inside"):  # not wrapped in an exception group
        async with shared.a.lock(NAME) as mine:
            assert mine
            raise StoreError("the store failed inside")
    async with shared.b.lock(NAME) as theirs:
        assert theirs


async def test_a_save_under_the_lock_is_seen_by_the_other_process(shared: Shared, ca: trustme.CA) -> None:
    bundle = make_bundle(ca, NAME)
    async with shared.a.lock(NAME) as mine:
        assert mine
        await shared.store.save(bundle)
    loaded = await shared.store.load(NAME)
    assert loaded is not None and loaded.serial == bundle.serial


async def test_challenges_put_by_one_are_read_by_the_other(shared: Shared) -> None:
    assert await shared.b.get_challenge("http-01:token-1") is None
    await shared.a.put_challenge("http-01:token-1", "token-1.thumbprint")
    assert await shared.b.get_challenge("http-01:token-1") == "token-1.thumbprint"
    await shared.b.delete_challenge("http-01:token-1")
    assert await shared.a.get_challenge("http-01:token-1") is None


async def test_every_save_changes_the_generation_and_the_stamp_of_its_name_only(
    shared: Shared, ca: trustme.CA
) -> None:
    names = [NAME, "absent.example"]
    assert await shared.b.stamps(names) == {NAME: None, "absent.example": None}
    assert await shared.a.stamps([]) == {}
    seen = [await shared.b.generation()]
    stamps = []
    for _ in range(2):  # a first certificate, then its renewal
        await trio.sleep(TICK)
        await shared.store.save(make_bundle(ca, NAME))
        seen.append(await shared.b.generation())
        stamps.append(await shared.a.stamps(names))
    assert len(set(map(repr, seen))) == 3, seen
    first, second = stamps
    assert first[NAME] is not None and second[NAME] is not None and first[NAME] != second[NAME]
    assert first["absent.example"] is None and second["absent.example"] is None


async def test_a_watcher_waiting_between_looks_sees_a_save_by_its_next_look(shared: Shared, ca: trustme.CA) -> None:
    """However a coordinator learns of changes (a push, or a poll of the generation), a save made while the other
    process waits between two looks is visible at its next look, at most ``poll_seconds`` later."""
    before = await shared.b.generation()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shared.b.follow_changes)
        await trio.sleep(0.2)  # subscribed, where there is something to subscribe to

        async def save() -> None:
            await trio.sleep(TICK)
            await shared.store.save(make_bundle(ca, NAME))

        nursery.start_soon(save)
        with trio.fail_after(shared.b.poll_seconds + 1):
            while await shared.b.generation() == before:
                await shared.b.wait_changed(shared.b.poll_seconds)
        nursery.cancel_scope.cancel()
