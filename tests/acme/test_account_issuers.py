"""The ACME account lifecycle with several CAs, on trio's MockClock against two in-process FakeCAs: each CA's
account is its own; a lost account is registered again at its CA only; a revocation is signed by the account
of the CA that issued the certificate; a key rollover rolls every stored account; contacts follow each CA's
entry. The single-CA cases are test_account_keeper.py's."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from snakeway.acme.account import ACCOUNT_DOES_NOT_EXIST
from snakeway.acme.manager import CertManager
from snakeway.acme.revoke import ActionRefused
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import MemoryStore
from snakeway.config.model import AcmeSettings
from snakeway.testing import FakeCA, TrioLinkedClock
from tests.acme.test_issuers_fallback import EPOCH, FIRST, MALFORMED, SECOND, A, automation, manager, run_until


def two_cas(clock: TrioLinkedClock | None = None) -> tuple[TrioLinkedClock, FakeCA, FakeCA, MemoryStore]:
    """A clock, the first and the second CA (each with URLs of its own), and an empty store."""
    clock = clock or TrioLinkedClock(EPOCH)
    return clock, FakeCA(clock), FakeCA(clock, base_url="https://second.test"), MemoryStore()


async def issued_by_second(store: MemoryStore, first: FakeCA, second: FakeCA, clock: TrioLinkedClock) -> CertManager:
    """A manager whose certificate for A was issued by the second CA (the first refused three orders)."""
    first.fail_next(3, status=400, step="new_order", problem_type=MALFORMED)
    mgr = manager(store, first, second, clock, automation())
    await run_until(mgr, lambda: second.issued, 3600)
    state = await store.load_state(A.name)
    assert state is not None and state.issued_by == SECOND
    return mgr


async def test_revoke_is_signed_by_the_account_of_the_ca_that_issued_the_certificate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock, first, second, store = two_cas()
    mgr = await issued_by_second(store, first, second, clock)
    bundle = await store.load(A.name)
    assert bundle is not None
    revoked = await mgr.revoke(A.cert_id, "superseded")
    assert revoked.serial == bundle.serial
    assert second.revoked == {bundle.serial: 4} and first.revoked == {}
    assert "revoke" not in first.calls
    state = await store.load_state(A.name)
    assert state is not None and state.revoked_serial == bundle.serial and state.issued_by == SECOND
    assert RenewalState.from_json(state.to_json()) == state  # issued_by and revoked_serial both kept on disk


async def test_rollover_rolls_every_stored_account_and_skips_a_ca_without_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock, first, second, store = two_cas()
    mgr = manager(store, first, second, clock, automation())
    with pytest.raises(ActionRefused, match="no ACME account is stored yet"):
        await mgr.rollover_account_key()
    assert "change_key" not in first.calls + second.calls

    await run_until(mgr, lambda: first.issued, 600)  # the first CA issues: only it has an account
    assert await store.load_account(SECOND) is None
    before = await store.load_account(FIRST)
    assert before is not None
    (rolled,) = await mgr.rollover_account_key()
    assert rolled.directory_url == FIRST and rolled.uri == before.uri and rolled.key_pem != before.key_pem
    assert await store.load_account(SECOND) is None and "ensure_account" not in second.calls

    _, first, second, store = two_cas(clock)
    mgr = await issued_by_second(store, first, second, clock)  # both CAs have an account now
    stored = {url: await store.load_account(url) for url in (FIRST, SECOND)}
    records = await mgr.rollover_account_key()
    assert [r.directory_url for r in records] == [FIRST, SECOND]
    for record in records:
        old = stored[record.directory_url]
        assert old is not None and record.uri == old.uri and record.key_pem != old.key_pem
        assert await store.load_account(record.directory_url) == record
    assert first.calls.count("change_key") == 1 and second.calls.count("change_key") == 1


async def test_a_lost_account_at_the_second_ca_is_registered_again_there_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock, first, second, store = two_cas()
    first.fail_next(100, status=400, step="new_order", problem_type=MALFORMED)  # every order goes to the second
    mgr = manager(store, first, second, clock, automation(threshold=1))
    await run_until(mgr, lambda: second.issued, 3600)
    first_account, lost = await store.load_account(FIRST), await store.load_account(SECOND)
    assert first_account is not None and lost is not None

    second.fail_next(step="new_order", status=400, problem_type=ACCOUNT_DOES_NOT_EXIST)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        issued = len(second.issued)
        await mgr.retry_one(A.cert_id, renew=True).wait()  # refused at the first CA: the next goes to the second
        assert len(second.issued) == issued
        await mgr.retry_one(A.cert_id, renew=True).wait()
        nursery.cancel_scope.cancel()
    assert len(second.issued) == issued + 1
    fresh = await store.load_account(SECOND)
    assert fresh is not None and fresh.uri != lost.uri and fresh.key_pem != lost.key_pem
    assert fresh.uri is not None and fresh.uri.startswith("https://second.test/")
    assert await store.load_account(FIRST) == first_account  # the other CA's account is untouched


async def test_a_reload_updates_each_cas_account_with_its_own_contacts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock, first, second, store = two_cas()
    mgr = await issued_by_second(store, first, second, clock)
    settings = dataclasses.replace(
        automation(),
        acme=AcmeSettings(directory_url=FIRST, contact_email=("one@a.test",)),
        fallback_acme=(AcmeSettings(directory_url=SECOND, contact_email=("two@a.test",)),),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await mgr.configure((A,), settings)
        with trio.fail_after(60):
            while not (first.contacts and second.contacts):
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    one, two = await store.load_account(FIRST), await store.load_account(SECOND)
    assert one is not None and two is not None
    assert first.contacts == {one.uri: ("mailto:one@a.test",)} and one.contact == ("mailto:one@a.test",)
    assert second.contacts == {two.uri: ("mailto:two@a.test",)} and two.contact == ("mailto:two@a.test",)
