"""Leaves of the local CA stored in the state directory: issued once, loaded by every other worker, renewed once."""

from __future__ import annotations

import multiprocessing
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509

from snakeway.config.model import Tls, TlsMode
from snakeway.listeners import cert_ids
from snakeway.renewal import lifetime_renewal_time
from snakeway.testing import TrioLinkedClock
from snakeway.tls.internal_ca import LEAF_LIFETIME, LocalCA
from snakeway.tls.leaves import leaf_paths, shared_leaf
from snakeway.tls.registry import CertRegistry, Served
from snakeway.tls.sni import listener_context
from snakeway.tls.sources import InternalIssuer
from tests.tls.helpers import handshake

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NAMES = ("svc.test", "127.0.0.1")


def serial(chain_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(chain_pem).serial_number


@pytest.fixture
def local_ca(tmp_path: Path) -> LocalCA:
    return LocalCA.load_or_create(tmp_path / "state", now=NOW - timedelta(days=1))


def test_issued_once_then_loaded(local_ca: LocalCA) -> None:
    first = shared_leaf(local_ca, NAMES, now=NOW)
    again = shared_leaf(local_ca, ["SVC.test", "127.0.0.1", "svc.test"], now=NOW + timedelta(days=1))
    assert first.issued and not again.issued
    assert (again.chain_pem, again.key_pem) == (first.chain_pem, first.key_pem)
    cert, key, _ = leaf_paths(local_ca, NAMES)
    assert cert.read_bytes() == first.chain_pem and key.read_bytes() == first.key_pem
    assert key.stat().st_mode & 0o777 == 0o600 and cert.parent.stat().st_mode & 0o777 == 0o700
    assert len(x509.load_pem_x509_certificates(first.chain_pem)) == 1  # no root in the chain


def test_other_names_get_another_leaf(local_ca: LocalCA) -> None:
    first = shared_leaf(local_ca, NAMES, now=NOW)
    other = shared_leaf(local_ca, ("other.test",), now=NOW)
    assert other.issued and serial(other.chain_pem) != serial(first.chain_pem)
    assert not shared_leaf(local_ca, NAMES, now=NOW).issued


def test_renewed_once_due_and_the_renewal_is_then_shared(local_ca: LocalCA) -> None:
    first = shared_leaf(local_ca, NAMES, now=NOW)
    cert = x509.load_pem_x509_certificate(first.chain_pem)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    due_at = lifetime_renewal_time(not_before, not_after)
    assert not shared_leaf(local_ca, NAMES, now=due_at - timedelta(seconds=1)).issued
    renewed = shared_leaf(local_ca, NAMES, now=due_at)  # the first worker to wake
    loaded = shared_leaf(local_ca, NAMES, now=due_at)  # the others, at the same moment
    assert renewed.issued and not loaded.issued
    assert serial(renewed.chain_pem) != serial(first.chain_pem) == serial(first.chain_pem)
    assert serial(loaded.chain_pem) == serial(renewed.chain_pem)


def test_a_leaf_of_another_root_or_a_torn_pair_is_replaced(local_ca: LocalCA, tmp_path: Path) -> None:
    stranger = LocalCA.load_or_create(tmp_path / "other", now=NOW - timedelta(days=1))
    foreign = stranger.issue(NAMES, now=NOW)
    cert, key, _ = leaf_paths(local_ca, NAMES)
    cert.parent.mkdir(mode=0o700)
    cert.write_bytes(foreign[0])
    key.write_bytes(foreign[1])
    replaced = shared_leaf(local_ca, NAMES, now=NOW)
    assert replaced.issued and local_ca.issued(x509.load_pem_x509_certificate(replaced.chain_pem))
    key.write_bytes(foreign[1])  # a crash between the key's write and the certificate's
    assert shared_leaf(local_ca, NAMES, now=NOW).issued


def _issue_in_child(state_dir: str) -> bytes:
    return shared_leaf(LocalCA.load_or_create(Path(state_dir)), NAMES, now=NOW).chain_pem


def test_processes_racing_for_the_first_leaf_all_get_the_same(local_ca: LocalCA, tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        chains = pool.map(_issue_in_child, [str(tmp_path / "state")] * 8)
    assert len(set(chains)) == 1
    assert shared_leaf(local_ca, NAMES, now=NOW).chain_pem == chains[0]


async def served_serial(registry: CertRegistry) -> int:
    """The serial of the certificate a listener on ``registry`` presents for svc.test."""
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE  # simulated dates: not verifiable
    outcome = await handshake(listener_context(registry.holder("listener")), client, "svc.test")
    assert outcome.ok and outcome.peer_serial is not None, outcome.client_error
    return outcome.peer_serial


async def test_two_workers_serve_the_same_leaf_before_and_after_renewal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    state = tmp_path / "state"
    LocalCA.load_or_create(state)  # as the supervisor does before forking
    tls = Tls(mode=TlsMode.INTERNAL, domains=NAMES)
    clock = TrioLinkedClock(datetime.now(UTC))
    registries = [CertRegistry(), CertRegistry()]
    issuers = [InternalIssuer(registry, state, clock) for registry in registries]
    for registry, issuer in zip(registries, issuers, strict=True):
        registry.configure({"listener": Served(cert_ids(tls), default="svc.test")})
        await issuer.configure([tls])
    # Started once both are configured: while a thread works, MockClock would jump to a running issuer's renewal.
    async with trio.open_nursery() as nursery:
        for issuer in issuers:
            await nursery.start(issuer.run)
        before = {await served_serial(r) for r in registries}
        assert len(before) == 1
        await trio.sleep((LEAF_LIFETIME * 2 / 3).total_seconds() + 60)  # past the renewal time
        for _ in range(600):  # renewal runs in worker threads, which MockClock does not wait for
            after = {await served_serial(r) for r in registries}
            if not after & before:
                break
            await trio.sleep(1)
        assert len(after) == 1 and not after & before
        nursery.cancel_scope.cancel()


async def test_a_served_leaf_renews_itself_with_half_of_its_life_left(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """7-day leaves are re-issued with half of their life left (under 10 days), on wall time, and served from then on."""
    tls = Tls(mode=TlsMode.INTERNAL, domains=NAMES)
    clock = TrioLinkedClock(datetime.now(UTC))
    registry = CertRegistry()
    issuer = InternalIssuer(registry, tmp_path / "state", clock)
    registry.configure({"listener": Served(cert_ids(tls), default="svc.test")})
    await issuer.configure([tls])
    async with trio.open_nursery() as nursery:
        await nursery.start(issuer.run)
        first = await served_serial(registry)
        await trio.sleep(3 * 86400)  # day 3: not yet due
        assert await served_serial(registry) == first
        await trio.sleep(1 * 86400)  # day 4: less than half of 7 days left
        for _ in range(600):  # renewal runs in a worker thread, which MockClock does not wait for
            second = await served_serial(registry)
            if second != first:
                break
            await trio.sleep(1)
        assert second != first
        not_after = issuer.not_after(cert_ids(tls)[0])
        assert not_after is not None and (not_after - clock.now()).days >= 6
        nursery.cancel_scope.cancel()
