"""The account lifecycle (snakeway.acme.account) and revocation (snakeway.acme.revoke) against the FakeCA, on
trio's MockClock: following the store, replacing a lost account once among workers, contacts, and a revoked
certificate replaced with a new key. The real-CA counterparts are test_account_pebble.py and
test_revoke_pebble.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import trio
import trio.testing

from snakeway.acme import crypto
from snakeway.acme.account import ACCOUNT_DOES_NOT_EXIST, UNAUTHORIZED, AccountKeeper, account_gone
from snakeway.acme.coordination import LocalCoordinator
from snakeway.acme.decide import Order, Stored, Wait, decide
from snakeway.acme.revoke import REVOCATION_REASONS, ActionRefused, reason_code, revoke_stored
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import MemoryStore
from snakeway.config.model import AcmeSettings
from snakeway.errors import IssuanceError
from snakeway.testing import FakeCA, TrioLinkedClock
from tests.acme.test_renewal_engine import EPOCH, A, manager, run_for, settings

DIRECTORY = "https://ca.test/dir"


def keeper(store: MemoryStore, ca: FakeCA, coordinator: LocalCoordinator, *emails: str) -> AccountKeeper:
    acme = AcmeSettings(directory_url=DIRECTORY, contact_email=emails)
    return AccountKeeper(acme=acme, store=store, backend=ca, coordinator=coordinator)


def test_account_gone_is_a_lost_or_deactivated_account_only() -> None:
    assert account_gone(IssuanceError("Account x not found.", problem_type=ACCOUNT_DOES_NOT_EXIST))
    assert account_gone(IssuanceError("Error: unauthorized :: Account has been deactivated",
                                      problem_type=UNAUTHORIZED))
    assert not account_gone(IssuanceError("not your certificate", problem_type=UNAUTHORIZED))
    assert not account_gone(IssuanceError("deactivated", problem_type=None))


def test_reasons_by_name() -> None:
    assert (reason_code("unspecified"), reason_code("keyCompromise"), reason_code("cessationOfOperation")) == (0, 1, 5)
    with pytest.raises(ValueError, match="keyCompromise"):
        reason_code("compromised")
    assert set(REVOCATION_REASONS) >= {"superseded", "affiliationChanged"}


def test_a_revoked_certificate_is_due_whatever_its_dates() -> None:
    now = EPOCH
    stored = Stored(now - timedelta(days=1), now + timedelta(days=89), "abc", covers=True)
    periodic = now + timedelta(hours=1)
    healthy = decide(now=now, state=RenewalState("a.test"), stored=stored, renew_within=None, ari=False,
                     periodic=periodic)
    assert isinstance(healthy, Wait)
    revoked = RenewalState("a.test", revoked_serial="abc")
    action = decide(now=now, state=revoked, stored=stored, renew_within=None, ari=True, periodic=periodic)
    assert isinstance(action, Order) and action.renewal
    replaced = replace(stored, serial="def")  # its replacement is not
    assert isinstance(decide(now=now, state=revoked, stored=replaced, renew_within=None, ari=False,
                             periodic=periodic), Wait)
    assert RenewalState.from_json(revoked.to_json()) == revoked
    assert RenewalState.from_json({"name": "a.test"}).revoked_serial is None  # a state saved before


async def test_a_worker_follows_a_key_another_worker_rolled_over(autojump_clock: trio.testing.MockClock) -> None:
    ca, store, coordinator = FakeCA(TrioLinkedClock(EPOCH)), MemoryStore(), LocalCoordinator()
    first, second = keeper(store, ca, coordinator), keeper(store, ca, coordinator)
    await first.ensure()
    await second.ensure()
    before = await store.load_account(DIRECTORY)
    assert before is not None and ca.calls.count("ensure_account") == 2
    await second.ensure()  # nothing changed: no request
    assert ca.calls.count("ensure_account") == 2

    rolled = await first.rollover()
    assert rolled.uri == before.uri and rolled.key_pem != before.key_pem
    assert await store.load_account(DIRECTORY) == rolled
    await second.ensure()  # the stored key is not the one it signs with: it takes the stored one up
    assert ca.calls.count("ensure_account") == 4  # the rollover's own check, then the follower's
    assert [a.uri for a in ca.accounts] == [before.uri]  # still the one account


async def test_tasks_needing_the_account_at_once_register_it_once(autojump_clock: trio.testing.MockClock) -> None:
    ca, store = FakeCA(TrioLinkedClock(EPOCH)), MemoryStore()
    account = keeper(store, ca, LocalCoordinator())
    async with trio.open_nursery() as nursery:
        for _ in range(10):  # the first orders of many certificates, together
            nursery.start_soon(account.ensure)
    assert ca.calls.count("ensure_account") == 1 and len(ca.accounts) == 1


async def test_a_lost_account_is_replaced_once_among_workers(autojump_clock: trio.testing.MockClock) -> None:
    ca, store, coordinator = FakeCA(TrioLinkedClock(EPOCH)), MemoryStore(), LocalCoordinator()
    first, second = keeper(store, ca, coordinator, "ops@a.test"), keeper(store, ca, coordinator, "ops@a.test")
    await first.ensure()
    await second.ensure()
    lost = await store.load_account(DIRECTORY)
    assert lost is not None
    gone = IssuanceError("Account has been deactivated", status=403, problem_type=UNAUTHORIZED)
    await first.replace_gone(gone)
    await second.replace_gone(gone)  # the same failure seen by another worker: it takes up the new account
    fresh = await store.load_account(DIRECTORY)
    assert fresh is not None and fresh.uri != lost.uri and fresh.key_pem != lost.key_pem
    assert fresh.contact == ("mailto:ops@a.test",)
    assert len(ca.accounts) == 2


async def test_an_order_refused_for_a_lost_account_registers_a_new_one_and_orders_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca, store = FakeCA(clock), MemoryStore()
    mgr, _ = manager((A,), store, ca, clock)
    await run_for(mgr, 60)
    first = await store.load(A.name)
    lost = await store.load_account("https://ca.test/dir")
    assert first is not None and lost is not None
    ca.fail_next(step="new_order", status=400, problem_type=ACCOUNT_DOES_NOT_EXIST)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await mgr.retry_one(A.cert_id, renew=True).wait()
        nursery.cancel_scope.cancel()
    renewed = await store.load(A.name)
    account = await store.load_account("https://ca.test/dir")
    assert renewed is not None and renewed.serial != first.serial
    assert account is not None and account.uri != lost.uri
    assert [r.levelname for r in caplog.records if "registered a new account" in r.getMessage()] == ["WARNING"]


async def test_sync_contact_updates_a_changed_contact_once(autojump_clock: trio.testing.MockClock) -> None:
    ca, store, coordinator = FakeCA(TrioLinkedClock(EPOCH)), MemoryStore(), LocalCoordinator()
    old = keeper(store, ca, coordinator, "old@a.test")
    assert await old.sync_contact() is False  # no account yet: its registration will carry the contact
    await old.ensure()
    assert await old.sync_contact() is False
    new = keeper(store, ca, coordinator, "new@a.test", "second@a.test")
    assert await new.sync_contact() is True
    record = await store.load_account(DIRECTORY)
    assert record is not None and record.contact == ("mailto:new@a.test", "mailto:second@a.test")
    assert ca.contacts == {record.uri: record.contact}
    assert await new.sync_contact() is False


async def test_revoke_then_the_replacement_has_a_new_key(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca, store = FakeCA(clock), MemoryStore()
    mgr, _ = manager((A,), store, ca, clock)
    with pytest.raises(ActionRefused, match="no certificate is stored"):
        await mgr.revoke(A.cert_id, "keyCompromise")
    await run_for(mgr, 60)
    old = await store.load(A.name)
    assert old is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        revoked = await mgr.revoke(A.cert_id, "keyCompromise")
        assert revoked.serial == old.serial and ca.revoked == {old.serial: 1}
        await mgr.retry_one(A.cert_id, renew=True).wait()
        nursery.cancel_scope.cancel()
    new = await store.load(A.name)
    assert new is not None and new.serial != old.serial
    assert crypto.load_private_key(new.key_pem).public_key() != crypto.load_private_key(old.key_pem).public_key()


async def test_revoke_of_a_certificate_the_ca_revoked_already_still_marks_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    ca, store, coordinator = FakeCA(clock), MemoryStore(), LocalCoordinator()
    mgr, _ = manager((A,), store, ca, clock, automation=settings())
    await run_for(mgr, 60)
    old = await store.load(A.name)
    assert old is not None
    ca.revoked[old.serial] = 0
    account = keeper(store, ca, coordinator)
    await revoke_stored(name=A.name, reason="superseded", store=store, accounts=[account],
                        coordinator=coordinator)
    state = await store.load_state(A.name)
    assert state is not None and state.revoked_serial == old.serial
    async with coordinator.lock(A.name):  # an order in flight holds it
        with pytest.raises(ActionRefused, match="being renewed"):
            await revoke_stored(name=A.name, reason="superseded", store=store, accounts=[account],
                                coordinator=coordinator)
