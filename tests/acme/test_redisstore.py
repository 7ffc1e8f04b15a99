"""What only the Redis store promises, against a real redis-server: sealed keys, damage, many entries, outages.

The CertStore contract itself runs against Redis in tests/acme/test_store.py.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import coredis
import pytest
import trio
import trustme

from snakeway.acme.budget import CONSERVATIVE_HOLD, Ledger
from snakeway.acme.managed import ManagedCert
from snakeway.acme.redisrecords import encode_meta
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.schedule import BACKOFF_CAP, RenewalState
from snakeway.acme.store import AccountRecord, OrderRecord, StoreError
from snakeway.clock import SystemClock
from snakeway.tls.sni import listener_context
from tests.acme.test_manager_startup import make_bundle as make_startup_bundle
from tests.acme.test_manager_startup import make_manager
from tests.acme.test_store import DIRECTORY, NOW, FixedClock, SteppedClock, a_ledger, key_pem, make_bundle
from tests.tls.helpers import client_context, handshake

if TYPE_CHECKING:
    from tests.redisserver import RedisServer

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def raw_values(url: str) -> dict[bytes, bytes]:
    """Every value in the database, straight from Redis: strings as they are, hash fields as ``key/field``."""
    found: dict[bytes, bytes] = {}
    async with coredis.Redis.from_url(url) as client:
        for key in await client.keys("*"):
            kind = await client.type(key)
            if kind in ("string", b"string"):
                found[key] = await client.get(key)
            else:
                for field, value in (await client.hgetall(key)).items():
                    found[key + b"/" + field] = value
    return found


async def fill(store: RedisStore, ca: trustme.CA) -> None:
    await store.save(make_bundle(ca, "a.test", "www.a.test"))
    await store.save_account(AccountRecord(DIRECTORY, key_pem(ca), "https://acme.test/acct/1"))
    await store.save_order(OrderRecord("a.test", "https://acme.test/order/1", key_pem(ca), NOW))


async def test_private_keys_are_sealed_with_a_key_file(redis_server: RedisServer, ca: trustme.CA) -> None:
    store = RedisStore(redis_server.url, encryption_key=KEY, clock=FixedClock())
    await fill(store, ca)
    values = await raw_values(redis_server.url)
    assert sorted(values) == [
        b"snakeway:account:https://acme.test/directory/key", b"snakeway:account:https://acme.test/directory/meta",
        b"snakeway:cert:a.test/chain", b"snakeway:cert:a.test/key", b"snakeway:certs/a.test",
        b"snakeway:generation", b"snakeway:order:a.test/key", b"snakeway:order:a.test/meta",
    ]
    assert values[b"snakeway:generation"] == b"1"  # one certificate saved
    assert b"BEGIN CERTIFICATE" in values[b"snakeway:cert:a.test/chain"]
    assert not [key for key, value in values.items() if b"PRIVATE KEY" in value]
    for key in (b"snakeway:cert:a.test/key", b"snakeway:account:https://acme.test/directory/key",
                b"snakeway:order:a.test/key"):
        assert values[key].startswith(b"aesgcm1:")
    # Two writes of one key never share a nonce.
    bundle = make_bundle(ca, "b.test")
    await store.save(bundle)
    first = (await raw_values(redis_server.url))[b"snakeway:cert:b.test/key"]
    await store.save(bundle)
    assert (await raw_values(redis_server.url))[b"snakeway:cert:b.test/key"][8:20] != first[8:20]
    assert await store.load("b.test") == bundle


async def test_without_a_key_file_private_keys_are_in_clear(redis_server: RedisServer, ca: trustme.CA) -> None:
    store = RedisStore(redis_server.url, key_prefix="plain", clock=FixedClock())
    await fill(store, ca)
    values = await raw_values(redis_server.url)
    assert values[b"plain:cert:a.test/key"].startswith(b"-----BEGIN")
    # A key file added later still reads what was stored in clear.
    sealed = RedisStore(redis_server.url, key_prefix="plain", encryption_key=KEY, clock=FixedClock())
    assert await sealed.load("a.test") == await store.load("a.test")


async def test_a_wrong_key_file_is_a_clear_error_not_a_missing_entry(
    redis_server: RedisServer, ca: trustme.CA
) -> None:
    store = RedisStore(redis_server.url, encryption_key=KEY, clock=FixedClock())
    await fill(store, ca)
    wrong = RedisStore(redis_server.url, encryption_key=OTHER_KEY, key_source="/etc/snakeway/old.key")
    message = "cannot decrypt snakeway:cert:a.test with /etc/snakeway/old.key: wrong encryption_key_file"
    with pytest.raises(StoreError, match=message):
        await wrong.load("a.test")
    with pytest.raises(StoreError, match="cannot decrypt snakeway:account:https://acme.test/directory with"):
        await wrong.load_account(DIRECTORY)
    with pytest.raises(StoreError, match="cannot decrypt snakeway:order:a.test with"):
        await wrong.load_order("a.test")
    keyless = RedisStore(redis_server.url)
    with pytest.raises(StoreError, match="snakeway:cert:a.test is encrypted, but no encryption_key_file"):
        await keyless.load("a.test")
    # Nothing was lost: the right key still opens everything.
    assert await store.load("a.test") is not None
    assert await store.load_account(DIRECTORY) is not None


async def test_a_sealed_key_moved_under_another_name_does_not_open(redis_server: RedisServer, ca: trustme.CA) -> None:
    store = RedisStore(redis_server.url, encryption_key=KEY, clock=FixedClock())
    await store.save(make_bundle(ca, "a.test"))
    await store.save(make_bundle(ca, "b.test"))
    async with coredis.Redis.from_url(redis_server.url) as client:
        sealed = await client.hget("snakeway:cert:a.test", "key")
        await client.hset("snakeway:cert:b.test", {"key": sealed})
    with pytest.raises(StoreError, match="cannot decrypt snakeway:cert:b.test"):
        await store.load("b.test")


async def test_index_of_ten_thousand_certificates(redis_server: RedisServer, ca: trustme.CA) -> None:
    store = RedisStore(redis_server.url, encryption_key=KEY, clock=FixedClock())
    real = make_bundle(ca, "real.test")
    await store.save(real)
    # The index reads metadata only, so entries written as the store writes them need no certificate behind.
    metas = {f"n{i}.test": encode_meta(replace(real, name=f"n{i}.test", domains=(f"n{i}.test",)), NOW)
             for i in range(10_000)}
    async with coredis.Redis.from_url(redis_server.url) as client:
        await client.hset("snakeway:certs", metas)
    found = await store.index()
    assert len(found) == 10_001
    assert found["n9999.test"].domains == ("n9999.test",)
    assert (found["n17.test"].not_after, found["n17.test"].serial) == (real.not_after, real.serial)
    assert found["real.test"].cert_path is None
    assert sorted(await store.index(["n5.test", "absent.test", "real.test"])) == ["n5.test", "real.test"]
    # load validates fully: an index entry without a certificate is not served.
    assert await store.load("n5.test") is None


async def test_damaged_entries_behave_as_in_the_file_store(
    redis_server: RedisServer, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SteppedClock()
    store = RedisStore(redis_server.url, encryption_key=KEY, clock=clock)
    await fill(store, ca)
    await store.save_state(RenewalState("a.test").failed(NOW, "rateLimited", NOW + timedelta(days=2)))
    await store.save_ledger(DIRECTORY, a_ledger())
    async with coredis.Redis.from_url(redis_server.url) as client:
        await client.hset("snakeway:cert:a.test", {"chain": b"-----BEGIN CERTIFICATE-----\ngarbage"})
        await client.hset("snakeway:account:https://acme.test/directory", {"meta": b"{not json"})
        await client.set("snakeway:state:a.test", b'{"name": "b.test"}')
        await client.set(f"snakeway:ledger:{DIRECTORY}", b"[]")
    with caplog.at_level(logging.WARNING, logger="snakeway.acme.redisstore"):
        assert await store.load("a.test") is None
        assert await store.list() == []
        assert await store.load_account(DIRECTORY) is None
        state = await store.load_state("a.test")
        ledger = await store.load_ledger(DIRECTORY)
    assert state is not None and (state.failures, state.next_attempt) == (4, NOW + BACKOFF_CAP)
    assert ledger == Ledger.conservative(NOW)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "longest back-off" in errors[0] and "no order is started before" in errors[1]
    assert any("ignoring unusable certificate 'a.test'" in r.getMessage() for r in caplog.records)
    # The holds run from the first time the damage was seen; the damaged values are kept beside.
    clock.at = NOW + timedelta(minutes=30)
    assert await store.load_state("a.test") == state
    assert await store.load_ledger(DIRECTORY) == Ledger.conservative(NOW)
    assert Ledger.conservative(NOW).blocked_until == NOW + CONSERVATIVE_HOLD
    values = await raw_values(redis_server.url)
    assert values[b"snakeway:state:a.test:corrupt"] == b'{"name": "b.test"}'
    assert values[f"snakeway:ledger:{DIRECTORY}:corrupt".encode()] == b"[]"


async def test_redis_down_raises_store_error(redis_server: RedisServer, ca: trustme.CA) -> None:
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/0"
    await redis_server.stop()
    store = RedisStore(url, encryption_key=KEY)
    where = f"Redis at redis://127.0.0.1:{redis_server.port}/0"
    for action, call in [
        ("load certificate 'a.test'", store.load("a.test")),
        ("save certificate 'a.test'", store.save(make_bundle(ca, "a.test"))),
        ("index certificates", store.index()),
        ("list certificates", store.list()),
        ("load renewal state of 'a.test'", store.load_state("a.test")),
        (f"save rate-limit ledger for {DIRECTORY}", store.save_ledger(DIRECTORY, Ledger())),
    ]:
        with pytest.raises(StoreError) as info:
            await call
        assert str(info.value).startswith(f"cannot {action}: {where}: ")
        assert "s3cret" not in str(info.value)


async def test_a_refused_password_is_a_store_error(redis_server: RedisServer) -> None:
    redis_server.raw("CONFIG", "SET", "requirepass", "right")
    with pytest.raises(StoreError, match=f"cannot index certificates: Redis at redis://127.0.0.1:{redis_server.port}/0"):
        await RedisStore(f"redis://:wrong@127.0.0.1:{redis_server.port}/0").index()
    assert await RedisStore(f"redis://:right@127.0.0.1:{redis_server.port}/0").index() == {}


async def test_start_up_reads_every_stored_certificate_in_two_requests(
    redis_server: RedisServer, ca: trustme.CA
) -> None:
    """Not one connection per certificate: the index and the PEMs, one request each, contexts built on first use."""
    certs = [ManagedCert(f"acme:{name}", (name,)) for name in ("a.test", "b.test", "c.test", "d.test")]
    store = RedisStore(redis_server.url, encryption_key=KEY)
    for cert in certs:
        await store.save(make_startup_bundle(ca, cert))
    before = connections(redis_server)
    manager, registry = make_manager(tuple(certs), store, SystemClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        assert connections(redis_server) - before == 2 + 1  # the index, the PEMs, and this question
        for cert in certs:
            entry = registry.entry(cert.cert_id)
            assert entry is not None and entry.lazy is not None and entry.built is None
        base = listener_context(registry.holder("listener"))
        for name in ("a.test", "d.test"):
            outcome = await handshake(base, client_context(ca), name)
            assert outcome.ok, outcome.client_error
        nursery.cancel_scope.cancel()


def connections(server: RedisServer) -> int:
    """How many connections the server has accepted so far."""
    stats = server.raw("INFO", "stats").decode()
    return int(stats.split("total_connections_received:")[1].split()[0])
