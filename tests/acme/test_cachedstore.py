"""The Redis store's local copy (:class:`CachedStore`) over a real redis-server that the tests stop and restart.

"Another node" is a plain :class:`RedisStore` on the same Redis. A restart of the test's server is a restart
without persistence (it runs with none): Redis comes back empty, on the same port.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import TYPE_CHECKING

import pytest
import trustme

from snakeway.acme import cachedstore
from snakeway.acme.cachedstore import CachedStore
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import AccountRecord, StoreError
from tests.acme.test_store import FixedClock, key_pem, make_bundle

if TYPE_CHECKING:
    from pathlib import Path

    from tests.redisserver import RedisServer

NAME = "copy.example"
DIRECTORY = "https://ca.test/directory"
KEY = bytes(range(32))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def node(server: RedisServer, tmp_path: Path, key: bytes = KEY) -> CachedStore:
    """What a serving process opens: the store in Redis, its copy in ``<state_dir>/redis-cache``."""
    redis = RedisStore(server.url, encryption_key=key, clock=FixedClock())
    return CachedStore(redis, tmp_path / "state" / cachedstore.COPY_DIR, clock=FixedClock())


def other_node(server: RedisServer) -> RedisStore:
    return RedisStore(server.url, encryption_key=KEY, clock=FixedClock())


def copy_version(store: CachedStore, name: str) -> str:
    """The version directory the copy's entry for ``name`` points at: a new one for every write."""
    return os.readlink(store.copy.cert_dir / name)


def state_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == cachedstore.__name__]


async def test_reads_go_to_redis_and_keep_the_copy_up_to_date(
    redis_server: RedisServer, tmp_path: Path, ca: trustme.CA
) -> None:
    store = node(redis_server, tmp_path)
    bundle = make_bundle(ca, NAME)
    account = AccountRecord(DIRECTORY, key_pem(ca), "https://ca.test/acct/1", ("mailto:ops@example.test",))
    await other_node(redis_server).save(bundle)
    await other_node(redis_server).save_account(account)

    assert await store.load(NAME) == bundle
    assert await store.load_account(DIRECTORY) == account
    assert await store.copy.load(NAME) == bundle
    assert await store.copy.load_account(DIRECTORY) == account
    copy_dir = tmp_path / "state" / "redis-cache"
    assert stat.S_IMODE(copy_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((store.copy.cert_dir / NAME / "key.pem").stat().st_mode) == 0o600

    # Unchanged in Redis: nothing is written again.
    version = copy_version(store, NAME)
    account_files = {p: p.stat().st_mtime_ns for p in (store.copy.data_dir / "accounts").rglob("*") if p.is_file()}
    assert await store.load(NAME) == bundle
    assert await store.load_account(DIRECTORY) == account
    assert copy_version(store, NAME) == version
    assert {p: p.stat().st_mtime_ns for p in account_files} == account_files

    # Renewed by another node: the next load brings the new one into the copy.
    renewed = make_bundle(ca, NAME)
    await other_node(redis_server).save(renewed)
    assert await store.load(NAME) == renewed
    assert copy_version(store, NAME) != version
    assert await store.copy.load(NAME) == renewed


async def test_with_redis_away_reads_come_from_the_copy_and_each_change_is_logged_once(
    redis_server: RedisServer, tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=cachedstore.__name__)
    store = node(redis_server, tmp_path)
    bundle = make_bundle(ca, NAME)
    account = AccountRecord(DIRECTORY, key_pem(ca), "https://ca.test/acct/1")
    await store.save(bundle)
    await store.save_account(account)
    await redis_server.stop()

    for _ in range(3):  # many reads while away: one line
        assert await store.load(NAME) == bundle
        index = await store.index([NAME, "absent.example"])
        assert list(index) == [NAME] and index[NAME].serial == bundle.serial
        assert index[NAME].cert_path is not None  # served from the copy's own files
        assert await store.load_account(DIRECTORY) == account
        assert await store.list() == [NAME]
        assert await store.pems([NAME]) == {NAME: (bundle.cert_pem, bundle.key_pem)}
    with pytest.raises(StoreError, match="Redis at"):
        await store.save(make_bundle(ca, NAME))  # the renewer's paths handle a refused save
    with pytest.raises(StoreError, match="Redis at"):
        await store.load_state(NAME)  # not in the copy: passed through
    assert await store.load(NAME) == bundle  # the refused save left the copy as it was
    assert state_lines(caplog) == [
        f"Redis at {redis_server.url} unreachable (Unable to establish a connection to 127.0.0.1:"
        f"{redis_server.port}): serving 1 certificate from the local copy in {tmp_path}/state/redis-cache"
    ]

    await redis_server.start()  # empty: restarted without persistence
    newer = make_bundle(ca, NAME)
    await store.save(newer)
    await store.save_state(RenewalState(name=NAME))
    assert await other_node(redis_server).load(NAME) == newer
    assert await store.copy.load(NAME) == newer
    assert state_lines(caplog)[1:] == [f"Redis at {redis_server.url} reachable again"]


async def test_an_emptied_redis_is_re_seeded_from_the_copy(
    redis_server: RedisServer, tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=cachedstore.__name__)
    store = node(redis_server, tmp_path)
    bundle, other = make_bundle(ca, NAME), make_bundle(ca, "other.example")
    expired = make_bundle(ca, "old.example", days=0)
    account = AccountRecord(DIRECTORY, key_pem(ca), "https://ca.test/acct/1")
    await store.save(bundle)
    await store.save(other)
    await store.save_account(account)
    await store.copy.save(expired)  # a copy keeps what it once held; an expired one is never re-seeded
    await redis_server.stop()
    await redis_server.start()
    redis = other_node(redis_server)
    assert await redis.load(NAME) is None  # Redis came back empty

    loaded = await store.load(NAME)
    assert loaded is not None and loaded.serial == bundle.serial
    stored = await redis.load(NAME)
    assert stored is not None and stored.serial == bundle.serial
    index = await store.index(["other.example", "old.example", "absent.example"])  # start-up's look
    assert list(index) == ["other.example"] and index["other.example"].serial == other.serial
    assert (await redis.index()).keys() == {NAME, "other.example"}
    assert await store.load("old.example") is None
    assert await store.load_account(DIRECTORY) == account
    assert await redis.load_account(DIRECTORY) == account
    url = redis_server.url
    assert state_lines(caplog) == [
        f"re-seeded Redis at {url} with the certificate for {NAME} from the local copy (Redis had none)",
        f"re-seeded Redis at {url} with the certificate for other.example from the local copy (Redis had none)",
        f"re-seeded Redis at {url} with the ACME account for {DIRECTORY} from the local copy (Redis had none)",
    ]

    # Once re-seeded, Redis has it: nothing more is written, nor logged.
    assert await store.load(NAME) == loaded
    assert len(state_lines(caplog)) == 3


async def test_a_key_that_cannot_be_decrypted_is_not_redis_away(
    redis_server: RedisServer, tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """The wrong key file is a mistake to report, not a reason to serve from the copy without saying why."""
    caplog.set_level(logging.INFO, logger=cachedstore.__name__)
    await node(redis_server, tmp_path).save(make_bundle(ca, NAME))
    wrong = node(redis_server, tmp_path, key=bytes(32))
    with pytest.raises(StoreError, match="cannot decrypt"):
        await wrong.load(NAME)
    assert state_lines(caplog) == []
