"""Several CAs in the renewal engine, on trio's MockClock against two in-process FakeCAs: a certificate the
first CA keeps refusing is ordered from the second, with that CA's own account, budget and back-off, and its
next renewal starts at the first again. The real-process counterpart is test_issuers_pebble.py."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing

from snakeway.acme import crypto
from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.managed import ManagedCert
from snakeway.acme.manager import CertManager
from snakeway.acme.store import CertBundle, MemoryStore
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.config.model import AcmeSettings, KeyType, RateLimitSettings, TlsAutomation
from snakeway.testing import AriPolicy, FakeCA, TrioLinkedClock, inline
from snakeway.tls.registry import CertRegistry, Served

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
FIRST = "https://first.test/dir"
SECOND = "https://second.test/dir"
A = ManagedCert("acme:a.test", ("a.test",))
MALFORMED = "urn:ietf:params:acme:error:malformed"  # at the order stage: not permanent, not transient


def automation(threshold: int = 3, first_limits: RateLimitSettings | None = None) -> TlsAutomation:
    return TlsAutomation(
        check_interval_seconds=600,
        acme=AcmeSettings(directory_url=FIRST, rate_limits=first_limits or RateLimitSettings()),
        fallback_acme=(AcmeSettings(directory_url=SECOND),),
        issuer_fallback_after_failures=threshold,
    )


def manager(store: MemoryStore, first: FakeCA, second: FakeCA, clock: TrioLinkedClock,
            settings: TlsAutomation) -> CertManager:
    registry = CertRegistry()
    registry.configure({"listener": Served((A.cert_id,))})
    return CertManager(
        settings=settings, certs=(A,), store=store, backend=first, fallback_backends=(second,), registry=registry,
        http01=Http01Tokens(), tlsalpn=TlsAlpnChallenges(), clock=clock, rng=random.Random(3), offload=inline,
    )


async def run_until(mgr: CertManager, done: Callable[[], object], limit: float, step: float = 1) -> float:
    """Run ``mgr`` until ``done()`` holds (checked every ``step`` seconds of mock time); the mock seconds it took."""
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        with trio.fail_after(limit):
            while not done():
                await trio.sleep(step)
        nursery.cancel_scope.cancel()
    return trio.current_time() - start


async def test_after_three_refused_orders_the_second_ca_issues_and_the_renewal_starts_at_the_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    first, second = FakeCA(clock), FakeCA(clock)
    first.fail_next(3, status=400, step="new_order", problem_type=MALFORMED)
    store = MemoryStore()
    mgr = manager(store, first, second, clock, automation())
    took = await run_until(mgr, lambda: second.issued, 3600)
    # Three attempts at the first CA (back-off 1 min, then 10 min), then the second at once.
    assert first.calls.count("new_order") == 3 and not first.issued
    assert took < 15 * 60
    bundle = await store.load("a.test")
    assert bundle is not None and bundle.serial in {format(s, "x") for s in second.issued} | {str(s) for s in second.issued}
    state = await store.load_state("a.test")
    assert state is not None and state.issuer is None and state.failures == 0  # a success starts afresh
    # Each CA has its own account, stored under its directory URL.
    one, two = await store.load_account(FIRST), await store.load_account(SECOND)
    assert one is not None and two is not None and one.key_pem != two.key_pem
    # The renewal (day 60 of 90) goes to the first CA again, which now issues.
    took = await run_until(mgr, lambda: first.issued, 61 * 86400, step=600)
    assert 59 * 86400 < took
    assert len(second.issued) == 1


async def test_the_first_cas_retry_after_does_not_hold_up_the_second(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    first, second = FakeCA(clock), FakeCA(clock)
    first.fail_next(1, status=429, retry_after=timedelta(days=1), step="new_order")
    mgr = manager(MemoryStore(), first, second, clock, automation(threshold=1))
    took = await run_until(mgr, lambda: second.issued, 86400)
    assert took < 60


async def test_a_permanent_refusal_moves_on_at_once(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    first, second = FakeCA(clock), FakeCA(clock)
    first.fail_next(1, status=403, step="new_order", problem_type="urn:ietf:params:acme:error:rejectedIdentifier")
    mgr = manager(MemoryStore(), first, second, clock, automation())
    took = await run_until(mgr, lambda: second.issued, 86400)
    assert first.calls.count("new_order") == 1
    assert took < 60


async def test_the_first_cas_spent_budget_does_not_hold_up_the_second(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    first, second = FakeCA(clock), FakeCA(clock)
    first.fail_next(3, status=400, step="new_order", problem_type=MALFORMED)
    store = MemoryStore()
    # Three new orders per 3 hours at the first CA: all spent by the three refused ones.
    mgr = manager(store, first, second, clock, automation(first_limits=RateLimitSettings(new_orders_per_3h=3)))
    took = await run_until(mgr, lambda: second.issued, 3 * 3600)
    assert took < 15 * 60
    one, two = await store.load_ledger(FIRST), await store.load_ledger(SECOND)
    assert one is not None and two is not None
    assert (len(one.orders), len(two.orders)) == (3, 1)


async def test_after_the_last_ca_the_first_is_tried_again(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    first, second = FakeCA(clock), FakeCA(clock)
    first.fail_next(2, status=400, step="new_order", problem_type=MALFORMED)
    second.fail_next(2, status=400, step="new_order", problem_type=MALFORMED)
    mgr = manager(MemoryStore(), first, second, clock, automation(threshold=2))
    await run_until(mgr, lambda: first.issued, 86400)
    assert (first.calls.count("new_order"), second.calls.count("new_order")) == (3, 2)
    assert not second.issued


def test_a_backend_for_every_configured_ca_is_required() -> None:
    clock = TrioLinkedClock(EPOCH)
    with pytest.raises(ValueError, match="1 fallback CAs configured, 0 backends given"):
        CertManager(
            settings=automation(), certs=(A,), store=MemoryStore(), backend=FakeCA(clock), registry=CertRegistry(),
            http01=Http01Tokens(), tlsalpn=TlsAlpnChallenges(), clock=clock,
        )


# --- profiles ----------------------------------------------------------------------------------------------------

LACKS = "ACME CA https://first.test/dir: the CA offers no certificate profiles, and profile 'shortlived' is " \
        "configured; no certificate is ordered from it"


def lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(record.getMessage() == text for record in caplog.records)


async def test_a_ca_without_the_profile_is_passed_over_at_once_and_said_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock = TrioLinkedClock(EPOCH)
    first, second = FakeCA(clock), FakeCA(clock)
    second.profiles = {"classic": "90 days", "shortlived": "6 days"}
    settings = dataclasses.replace(
        automation(), acme=AcmeSettings(directory_url=FIRST, profile="shortlived"),
        fallback_acme=(AcmeSettings(directory_url=SECOND, profile="shortlived"),),
    )
    store = MemoryStore()
    took = await run_until(manager(store, first, second, clock, settings), lambda: second.issued, 86400)
    assert took < 60
    assert "new_order" not in first.calls and "ensure_account" not in first.calls  # nothing made there
    assert await store.load_account(FIRST) is None
    assert lines(caplog, LACKS) == 1


async def test_the_start_up_log_says_the_ca_lacks_the_profile_while_nothing_is_due(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock = TrioLinkedClock(EPOCH)
    first = FakeCA(clock)
    store = MemoryStore()
    key = crypto.generate_key(KeyType.ECDSA_P256)
    chain = first.sign(A.domains, key, not_before=EPOCH)
    await store.save(CertBundle.from_pem(A.name, A.domains, chain.encode(), key))
    settings = TlsAutomation(acme=AcmeSettings(directory_url=FIRST, profile="shortlived"))
    registry = CertRegistry()
    registry.configure({"listener": Served((A.cert_id,))})
    mgr = CertManager(
        settings=settings, certs=(A,), store=store, backend=first, registry=registry, http01=Http01Tokens(),
        tlsalpn=TlsAlpnChallenges(), clock=clock, rng=random.Random(3), offload=inline,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(3600)
        nursery.cancel_scope.cancel()
    assert lines(caplog, LACKS) == 1
    assert first.calls[0] == "offered_profiles"  # at start-up
    assert "new_order" not in first.calls  # no order: the certificate is not due


async def test_ari_is_asked_of_the_ca_that_issued_the_certificate(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioLinkedClock(EPOCH)
    first, second = FakeCA(clock, ari=AriPolicy()), FakeCA(clock, ari=AriPolicy())
    first.fail_next(1, status=400, step="new_order", problem_type=MALFORMED)
    store = MemoryStore()
    await run_until(manager(store, first, second, clock, automation(threshold=1)),
                    lambda: "renewal_info" in second.calls, 3600)
    assert "renewal_info" not in first.calls  # it does not know the certificate
    state = await store.load_state("a.test")
    assert state is not None and state.issued_by == SECOND and state.ari is not None


async def test_an_order_in_flight_at_the_first_ca_is_not_resumed_at_the_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioLinkedClock(EPOCH)
    first = FakeCA(clock, base_url="https://first.test/acme")
    second = FakeCA(clock, base_url="https://second.test/acme")
    # The first CA fails every finalize (after the order was kept for resuming), and every resumed order.
    first.fail_next(100, status=400, step="finalize", problem_type=MALFORMED)
    store = MemoryStore()
    await run_until(manager(store, first, second, clock, automation(threshold=1)), lambda: second.issued, 3600)
    assert "resume_order" not in second.calls  # the first CA's order is none of its business
    assert await store.load_order("a.test") is None  # dropped with the certificate saved
