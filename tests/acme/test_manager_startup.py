"""The CertManager's start-up from a store with an index: lazy contexts, validation on first use, spread checks.

Most tests use a real FileStore in ``tmp_path`` and the real clock (the store works in threads, which
``autojump_clock`` would race); the spreading tests use a MemoryStore on MockClock, as the schedule tests do.
"""

from __future__ import annotations

import logging
import random
import ssl
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
import trustme

from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.coordination import Coordinator
from snakeway.acme.filestore import FileStore
from snakeway.acme.managed import ManagedCert
from snakeway.acme.manager import SPREAD_FIRST_CHECKS_ABOVE, CertManager, missing_spread
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import CertBundle, CertStore, MemoryStore
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.clock import SystemClock, WallClock
from snakeway.config.model import AcmeSettings, TlsAutomation
from snakeway.testing import FakeCA, TrioLinkedClock, inline
from snakeway.tls import sources
from snakeway.tls.registry import CertRegistry, Served
from snakeway.tls.sni import listener_context
from snakeway.tls.sources import Offload
from tests.tls.helpers import client_context, handshake

if TYPE_CHECKING:
    from pathlib import Path

A = ManagedCert("acme:a.test", ("a.test", "www.a.test"))
B = ManagedCert("acme:b.test", ("b.test",))
C = ManagedCert("acme:c.test", ("c.test",))
D = ManagedCert("acme:d.test", ("d.test",))
SETTINGS = TlsAutomation(
    renew_within_days=30, check_interval_seconds=600, acme=AcmeSettings(directory_url="https://ca.test/dir")
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def make_bundle(ca: trustme.CA, cert: ManagedCert) -> CertBundle:
    start = datetime.now(UTC) - timedelta(hours=1)
    leaf = ca.issue_cert(*cert.domains, not_before=start, not_after=start + timedelta(days=90))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return CertBundle.from_pem(cert.name, cert.domains, chain, leaf.private_key_pem.bytes())


class CountingStore:
    """A store that counts the renewal states read: one per check of a certificate."""

    def __init__(self, inner: CertStore) -> None:
        self.inner = inner
        self.loads = 0

    async def load_state(self, name: str) -> RenewalState | None:
        self.loads += 1
        return await self.inner.load_state(name)

    def __getattr__(self, attribute: str) -> object:
        return getattr(self.inner, attribute)


def make_manager(
    certs: tuple[ManagedCert, ...],
    store: CertStore,
    clock: WallClock,
    backend: FakeCA | None = None,
    *,
    spread_above: int = SPREAD_FIRST_CHECKS_ABOVE,
    offload: Offload | None = None,
    coordinator: Coordinator | None = None,
    watch_interval: float | None = None,
) -> tuple[CertManager, CertRegistry]:
    registry = CertRegistry()
    registry.configure({"listener": Served(tuple(c.cert_id for c in certs))})
    manager = CertManager(
        settings=SETTINGS,
        certs=certs,
        store=store,
        backend=backend or FakeCA(clock),
        registry=registry,
        http01=Http01Tokens(),
        tlsalpn=TlsAlpnChallenges(),
        clock=clock,
        rng=random.Random(7),
        spread_first_checks_above=spread_above,
        offload=offload,
        coordinator=coordinator,
        watch_interval=watch_interval,
    )
    return manager, registry


class Builds:
    """Counts the contexts sources builds, lazily from files or eagerly from PEM."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[str] = []
        self.pems = 0
        real_files, real_pem = sources.server_context, sources.context_from_pem

        def from_files(*args: object, **kwargs: object) -> ssl.SSLContext:
            self.files.append(str(args[0]))
            return real_files(*args, **kwargs)  # type: ignore[arg-type]

        def from_pem(*args: object, **kwargs: object) -> ssl.SSLContext:
            self.pems += 1
            return real_pem(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(sources, "server_context", from_files)
        monkeypatch.setattr(sources, "context_from_pem", from_pem)


async def filled_store(tmp_path: Path, ca: trustme.CA, *certs: ManagedCert) -> FileStore:
    store = FileStore(tmp_path / "certs", tmp_path / "acme")
    for cert in certs:
        await store.save(make_bundle(ca, cert))
    return store


async def test_stored_certificates_are_registered_without_building_a_context(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await filled_store(tmp_path, ca, A, B, C)
    calls: list[str] = []
    for method in ("index", "load"):
        real = getattr(store, method)

        async def spy(*args: object, _real: object = real, _method: str = method) -> object:
            calls.append(_method)
            return await _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(store, method, spy)
    builds = Builds(monkeypatch)
    manager, registry = make_manager((A, B, C), store, SystemClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        assert calls[:1] == ["index"]
        assert "load" not in calls[:1]  # nothing loaded in full before started()
        assert (builds.files, builds.pems) == ([], 0)
        for cert in (A, B, C):
            entry = registry.entry(cert.cert_id)
            assert entry is not None
            assert entry.lazy is not None
            assert entry.built is None
            assert entry.names == cert.domains
        served = registry.holder("listener").current
        assert sorted(served.names) == ["a.test", "b.test", "c.test", "www.a.test"]
        assert (builds.files, builds.pems) == ([], 0)
        # The first lookup builds from the store's own files (no temporary copy), once.
        assert served.lookup("www.a.test") is not None
        assert served.lookup("a.test") is served.lookup("www.a.test")
        assert builds.files == [str((tmp_path / "certs" / "a.test").resolve() / "cert.pem")]
        assert builds.pems == 0
        outcome = await handshake(listener_context(registry.holder("listener")), client_context(ca), "b.test")
        assert outcome.ok, outcome.client_error
        assert len(builds.files) == 2
        nursery.cancel_scope.cancel()


async def test_a_stored_pair_that_does_not_match_is_refused_never_served(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    store = await filled_store(tmp_path, ca, A, B)
    other_key = ca.issue_cert("other.test").private_key_pem.bytes()
    ((tmp_path / "certs" / "a.test").resolve() / "key.pem").write_bytes(other_key)
    fake = FakeCA(SystemClock())
    fake.unreachable = True  # no replacement: what is refused stays refused
    manager, registry = make_manager((A, B), store, SystemClock(), fake)
    base = listener_context(registry.holder("listener"))
    with caplog.at_level(logging.WARNING):
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            for _ in range(3):
                outcome = await handshake(base, client_context(ca), "a.test")
                assert outcome.server is None
                error = outcome.client_ssl_error
                assert error is not None, outcome.client_error
                assert error.reason == "TLSV1_ALERT_INTERNAL_ERROR"
            assert (await handshake(base, client_context(ca), "b.test")).ok
            nursery.cancel_scope.cancel()
    refused = [r for r in caplog.records if r.name == "snakeway.tls.certmap"]
    assert len(refused) == 1
    assert "a.test" in refused[0].getMessage()
    assert "cannot be served" in refused[0].getMessage()


async def test_a_failed_build_is_rebuilt_by_the_next_check(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    store = await filled_store(tmp_path, ca, A)
    key = (tmp_path / "certs" / "a.test").resolve() / "key.pem"
    manager, registry = make_manager((A,), store, SystemClock())
    base = listener_context(registry.holder("listener"))
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        with trio.fail_after(10):
            while A.cert_id not in manager.next_checks:  # the first check is done
                await trio.sleep(0.01)
        key.rename(key.with_name("away"))  # a passing failure: the file is briefly not there
        assert not (await handshake(base, client_context(ca), "a.test")).ok
        key.with_name("away").rename(key)
        assert not (await handshake(base, client_context(ca), "a.test")).ok  # no retry per handshake
        manager.retry_now()
        with trio.fail_after(10):
            while (entry := registry.entry(A.cert_id)) is None or entry.lazy is not None:
                await trio.sleep(0.01)
        assert entry.built is not None  # built and validated in a thread
        assert (await handshake(base, client_context(ca), "a.test")).ok
        assert "served again after its context failed to build" in caplog.text
        assert "key.pem: No such file" in caplog.text
        nursery.cancel_scope.cancel()


async def test_retry_now_on_healthy_certificates_checks_once(
    tmp_path: Path, ca: trustme.CA
) -> None:
    fake = FakeCA(SystemClock())
    store = CountingStore(await filled_store(tmp_path, ca, A))
    manager, _ = make_manager((A,), store, SystemClock(), fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        with trio.fail_after(10):
            while A.cert_id not in manager.next_checks:
                await trio.sleep(0.01)
        first = manager.next_checks[A.cert_id]
        checks = store.loads
        manager.retry_now()
        await trio.sleep(0.5)
        # The forced check ran once and napped again until the next periodic check: no loop.
        assert 0 < store.loads - checks <= 3
        assert manager.next_checks[A.cert_id] > datetime.now(UTC) + timedelta(seconds=300)
        assert manager.next_checks[A.cert_id] != first
        assert fake.orders == []
        nursery.cancel_scope.cancel()


# --- spreading the first checks ---------------------------------------------------------------------------------


EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


async def issued_memory_store(*certs: ManagedCert) -> MemoryStore:
    """A MemoryStore holding certificates the FakeCA issued (at EPOCH, trio time 0)."""
    store = MemoryStore()
    clock = TrioLinkedClock(EPOCH)
    manager, _ = make_manager(certs, store, clock, offload=inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return store


@pytest.mark.parametrize("many", [True, False])
async def test_first_checks_of_stored_certificates_are_spread_only_when_many(
    autojump_clock: trio.testing.MockClock, many: bool
) -> None:
    store = await issued_memory_store(A, B, C)
    clock = TrioLinkedClock(EPOCH)
    fake = FakeCA(clock)
    spread_above = 2 if many else SPREAD_FIRST_CHECKS_ABOVE
    # D is not stored.
    manager, registry = make_manager((A, B, C, D), store, clock, fake, spread_above=spread_above, offload=inline)
    async with trio.open_nursery() as nursery:
        start = clock.now()
        await nursery.start(manager.run)
        for cert in (A, B, C):
            entry = registry.entry(cert.cert_id)
            assert entry is not None
            assert entry.lazy is not None  # MemoryStore has an index too (no paths: built from its PEM)
        await trio.sleep(1)
        assert fake.orders == [D.domains]  # missing: checked (and ordered) at once
        checked = [manager.next_checks[c.cert_id] > start + timedelta(seconds=300) for c in (A, B, C)]
        if not many:
            assert all(checked)
            nursery.cancel_scope.cancel()
            return
        assert not any(checked)
        firsts = [manager.next_checks[c.cert_id] for c in (A, B, C)]
        assert all(start < first <= start + timedelta(seconds=60) for first in firsts)
        assert len(set(firsts)) == 3
        await trio.sleep(60)
        assert all(manager.next_checks[c.cert_id] > start + timedelta(seconds=300) for c in (A, B, C))
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("many", [True, False])
async def test_missing_certificates_are_ordered_at_once_unless_many(
    autojump_clock: trio.testing.MockClock, many: bool
) -> None:
    clock = TrioLinkedClock(EPOCH)
    fake = FakeCA(clock)
    spread_above = 2 if many else SPREAD_FIRST_CHECKS_ABOVE
    manager, _ = make_manager((A, B, C), MemoryStore(), clock, fake, spread_above=spread_above, offload=inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(0.01)
        if many:  # three spread over 0.75 s: not all ordered yet
            assert len(fake.orders) < 3
            await trio.sleep(1)
        assert sorted(fake.orders) == sorted([A.domains, B.domains, C.domains])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("missing", "above", "seconds"), [
    (1, 0, 0.25), (1, 100, 0.0), (50, 100, 0.0), (100, 100, 0.0), (101, 100, 25.25), (10_000, 100, 30.0),
])
def test_how_long_missing_certificates_are_spread(missing: int, above: int, seconds: float) -> None:
    assert missing_spread(missing, above) == seconds


async def test_due_stored_certificates_are_checked_at_once_even_when_many(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = await issued_memory_store(A, B)
    await trio.sleep(70 * 86400)  # FakeCA certificates live 90 days: due with 30 left
    clock = TrioLinkedClock(EPOCH)
    fake = FakeCA(clock)
    manager, registry = make_manager((A, B), store, clock, fake, spread_above=1, offload=inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        assert registry.entry(A.cert_id) is not None  # still served meanwhile
        await trio.sleep(1)
        assert sorted(fake.orders) == [A.domains, B.domains]
        nursery.cancel_scope.cancel()


async def test_retry_now_starts_spread_certificates_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = await issued_memory_store(A, B, C)
    clock = TrioLinkedClock(EPOCH)
    fake = FakeCA(clock)
    manager, _ = make_manager((A, B, C), store, clock, fake, spread_above=1, offload=inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(0.001)
        assert fake.calls.count("renewal_info") == 0
        manager.retry_now()
        await trio.sleep(1)
        assert fake.calls.count("renewal_info") == 3
        await trio.sleep(120)
        assert fake.calls.count("renewal_info") == 3  # each task started once
        nursery.cancel_scope.cancel()


async def test_configure_drops_a_spread_certificate_before_its_first_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = await issued_memory_store(A, B, C)
    clock = TrioLinkedClock(EPOCH)
    fake = FakeCA(clock)
    manager, _ = make_manager((A, B, C), store, clock, fake, spread_above=1, offload=inline)
    changed_c = ManagedCert(C.cert_id, ("c.test", "www.c.test"))
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await manager.configure((A, changed_c))  # B dropped, C changed (not covered: ordered at once)
        await trio.sleep(1)
        assert fake.orders == [changed_c.domains]
        await trio.sleep(120)
        assert fake.calls.count("renewal_info") == 1  # A's first check only: B never, C's old task never
        assert fake.orders == [changed_c.domains]
        nursery.cancel_scope.cancel()
