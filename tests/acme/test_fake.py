"""FakeCA: the in-process ACME CA the manager tests use in place of Pebble."""

from __future__ import annotations

import inspect
import typing
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from josepy.b64 import b64encode
from josepy.jwk import JWK

from snakeway.acme import crypto
from snakeway.acme.ari import RenewalInfo
from snakeway.acme.backend import AcmeBackend, ChallengeTask, OrderHandle
from snakeway.clock import SystemClock
from snakeway.config.model import Challenge, KeyType
from snakeway.errors import IssuanceError
from snakeway.testing import (
    STEPS,
    AriPolicy,
    CALimitSettings,
    FakeCA,
    PlannedFailure,
    TrioLinkedClock,
    cert_dates,
    lifetime_window,
)
from snakeway.testing._fakelimits import registered_domain
from snakeway.tls.certinfo import leaf_info, load_chain

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
DOMAINS = ("a.test", "www.a.test")
DAY = 86400.0
ACME = "urn:ietf:params:acme:error:"


async def open_order(
    ca: FakeCA, domains: tuple[str, ...] = DOMAINS, *, replaces: str | None = None
) -> tuple[OrderHandle, bytes]:
    key = ca.accounts[0].key_pem if ca.accounts else None  # one account, as the manager keeps
    await ca.ensure_account(key, ("mailto:ops@a.test",))
    csr = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), domains)
    return await ca.new_order(domains, csr, replaces=replaces), csr


async def issue(
    ca: FakeCA, domains: tuple[str, ...] = DOMAINS, kind: Challenge = Challenge.HTTP_01, *, replaces: str | None = None
) -> str:
    """The manager's sequence: account, order, challenges, answers, authorizations, finalize."""
    order, csr = await open_order(ca, domains, replaces=replaces)
    for task in ca.challenges(order, kind):
        await ca.answer(task)
    deadline = trio.current_time() + 60
    await ca.wait_authorizations(order, deadline)
    return await ca.finalize(order, csr, deadline)


def verify(chain_pem: str, root_pem: bytes, name: str, when: datetime) -> None:
    leaf, *rest = load_chain(chain_pem.encode())
    store = Store([x509.load_pem_x509_certificate(root_pem)])
    verifier = PolicyBuilder().store(store).time(when).build_server_verifier(x509.DNSName(name))
    verifier.verify(leaf, rest)


# --- issuance ------------------------------------------------------------------------------------


async def test_issues_a_chain_that_verifies_to_the_root() -> None:
    ca = FakeCA(SystemClock())
    chain = await issue(ca)

    certs = load_chain(chain.encode())
    assert len(certs) == 2
    assert certs[1] == x509.load_pem_x509_certificate(ca.root_pem)
    assert leaf_info(chain.encode()).names == DOMAINS
    for name in DOMAINS:
        verify(chain, ca.root_pem, name, datetime.now(UTC))
    crypto.ari_cert_id(chain.encode())  # has an authority key identifier, so ARI works

    assert ca.orders == [DOMAINS]
    assert ca.issued == [certs[0].serial_number]
    assert len(ca.accounts) == 1
    assert ca.calls == [
        "ensure_account", "new_order", "challenges", "answer", "answer", "wait_authorizations", "finalize",
    ]


async def test_challenges_carry_token_and_key_authorization() -> None:
    ca = FakeCA(SystemClock())
    order, _ = await open_order(ca)
    tasks = ca.challenges(order, Challenge.TLS_ALPN_01)
    assert [t.domain for t in tasks] == list(DOMAINS)
    assert {t.kind for t in tasks} == {Challenge.TLS_ALPN_01}
    thumbprints = {t.key_authorization.split(".")[1] for t in tasks}
    assert len(thumbprints) == 1  # one account key
    for task in tasks:
        token, _ = task.key_authorization.split(".")
        assert token == task.token
        assert len(token) >= 22
    assert ca.challenges(order, Challenge.TLS_ALPN_01) == tasks  # stable until answered


@pytest.mark.parametrize("key_type", list(KeyType))
async def test_key_authorization_uses_the_rfc7638_thumbprint(key_type: KeyType) -> None:
    ca = FakeCA(SystemClock())
    account = await ca.ensure_account(crypto.generate_key(key_type), ())
    csr = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), ["a.test"])
    order = await ca.new_order(["a.test"], csr)
    [task] = ca.challenges(order, Challenge.HTTP_01)
    jwk = JWK.load(account.key_pem)
    assert task.key_authorization == f"{task.token}.{b64encode(jwk.public_key().thumbprint()).decode()}"


async def test_rsa_csr_gets_an_rsa_leaf() -> None:
    ca = FakeCA(SystemClock())
    await ca.ensure_account(None, ())
    csr = crypto.make_csr(crypto.generate_key(KeyType.RSA2048), ["r.test"])
    order = await ca.new_order(["r.test"], csr)
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    await ca.wait_authorizations(order, trio.current_time() + 1)
    chain = await ca.finalize(order, csr, trio.current_time() + 1)
    verify(chain, ca.root_pem, "r.test", datetime.now(UTC))


async def test_same_key_finds_the_same_account() -> None:
    ca = FakeCA(SystemClock())
    first = await ca.ensure_account(None, ())
    again = await ca.ensure_account(first.key_pem, ("mailto:x@a.test",))
    other = await ca.ensure_account(None, ())
    assert again == first
    assert other.uri != first.uri
    assert ca.accounts == [first, other]


async def test_calls_need_an_account_first() -> None:
    ca = FakeCA(SystemClock())
    csr = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), ["a.test"])
    with pytest.raises(RuntimeError, match="ensure_account"):
        await ca.new_order(["a.test"], csr)
    await ca.ensure_account(None, ())
    await ca.aclose()
    with pytest.raises(RuntimeError, match="ensure_account"):
        await ca.new_order(["a.test"], csr)


async def test_csr_names_must_match_the_order() -> None:
    ca = FakeCA(SystemClock())
    await ca.ensure_account(None, ())
    csr = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), ["b.test"])
    with pytest.raises(ValueError, match="differ"):
        await ca.new_order(["a.test"], csr)
    order, _ = await open_order(ca, ("a.test",))
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    await ca.wait_authorizations(order, trio.current_time() + 1)
    with pytest.raises(IssuanceError) as info:
        await ca.finalize(order, csr, trio.current_time() + 1)
    assert (info.value.status, info.value.problem_type) == (400, "urn:ietf:params:acme:error:badCSR")


async def test_finalize_before_authorizations_is_order_not_ready() -> None:
    ca = FakeCA(SystemClock())
    order, csr = await open_order(ca)
    with pytest.raises(IssuanceError) as info:
        await ca.finalize(order, csr, trio.current_time() + 1)
    assert info.value.problem_type == "urn:ietf:params:acme:error:orderNotReady"
    assert ca.issued == []


async def test_unanswered_challenge_fails_the_authorizations() -> None:
    ca = FakeCA(SystemClock())
    order, _ = await open_order(ca)
    first, _second = ca.challenges(order, Challenge.HTTP_01)
    await ca.answer(first)
    with pytest.raises(IssuanceError, match="www.a.test is pending"):
        await ca.wait_authorizations(order, trio.current_time() + 1)


# --- clock and deadlines -------------------------------------------------------------------------


async def test_dates_follow_the_trio_linked_clock(autojump_clock: trio.testing.MockClock) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH))
    await trio.sleep(10 * DAY)
    first = await issue(ca)
    assert cert_dates(first.encode()) == (EPOCH + timedelta(days=10), EPOCH + timedelta(days=100))
    verify(first, ca.root_pem, "a.test", EPOCH + timedelta(days=99))
    with pytest.raises(x509.verification.VerificationError):
        verify(first, ca.root_pem, "a.test", EPOCH + timedelta(days=101))

    await trio.sleep(60 * DAY)
    second = await issue(ca)
    assert cert_dates(second.encode())[0] == EPOCH + timedelta(days=70)
    assert len(ca.issued) == 2
    assert ca.issued[0] != ca.issued[1]


async def test_lifetime_is_configurable(autojump_clock: trio.testing.MockClock) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH), lifetime=timedelta(days=6))
    not_before, not_after = cert_dates((await issue(ca)).encode())
    assert not_after - not_before == timedelta(days=6)


async def test_delay_is_spent_in_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH), delay=2.0)
    start = trio.current_time()
    await issue(ca)
    requests = [c for c in ca.calls if c != "challenges"]
    assert trio.current_time() - start == pytest.approx(2.0 * len(requests))


async def test_finalize_honours_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH))
    order, csr = await open_order(ca)
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    await ca.wait_authorizations(order, trio.current_time() + 1)
    ca.delay = 30.0
    deadline = trio.current_time() + 10
    with pytest.raises(IssuanceError, match="timed out waiting for the order"):
        await ca.finalize(order, csr, deadline)
    assert trio.current_time() == pytest.approx(deadline)
    assert ca.issued == []

    with pytest.raises(IssuanceError, match="timed out"):  # a deadline already past
        await ca.finalize(order, csr, trio.current_time() - 1)

    ca.delay = 5.0
    chain = await ca.finalize(order, csr, trio.current_time() + 10)
    assert leaf_info(chain.encode()).names == DOMAINS


async def test_wait_authorizations_honours_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async def never(_task: ChallengeTask) -> bool:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    ca = FakeCA(TrioLinkedClock(EPOCH), validator=never)
    order, _ = await open_order(ca)
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    deadline = trio.current_time() + 30
    with pytest.raises(IssuanceError, match="timed out waiting for authorizations"):
        await ca.wait_authorizations(order, deadline)
    assert trio.current_time() == pytest.approx(deadline)


# --- validation ----------------------------------------------------------------------------------


async def serve_http01(answers: dict[str, str], *, task_status: trio.TaskStatus[int]) -> None:
    """A minimal http-01 responder on 127.0.0.1 (port 0): GET /.well-known/acme-challenge/<token>."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request and (data := await stream.receive_some(4096)):
                request += data
            path = request.split(b" ", 2)[1].decode()
            token = path.removeprefix("/.well-known/acme-challenge/")
            body = answers.get(token)
            head = "200 OK" if body is not None else "404 Not Found"
            payload = (body or "").encode()
            await stream.send_all(
                f"HTTP/1.1 {head}\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def http01_validator(port: int) -> typing.Callable[[ChallengeTask], typing.Awaitable[bool]]:
    async def validate(task: ChallengeTask) -> bool:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"GET /.well-known/acme-challenge/{task.token} HTTP/1.1\r\nHost: {task.domain}\r\n\r\n".encode()
            )
            response = b""
            while data := await stream.receive_some(4096):
                response += data
        head, _, body = response.partition(b"\r\n\r\n")
        return head.startswith(b"HTTP/1.1 200") and body.decode() == task.key_authorization

    return validate


async def test_validator_fetches_http01_answers(nursery: trio.Nursery) -> None:
    answers: dict[str, str] = {}
    port = await nursery.start(serve_http01, answers)
    ca = FakeCA(SystemClock(), validator=http01_validator(port))
    order, csr = await open_order(ca)
    for task in ca.challenges(order, Challenge.HTTP_01):
        answers[task.token] = task.key_authorization
        await ca.answer(task)
    with trio.fail_after(10):
        await ca.wait_authorizations(order, trio.current_time() + 10)
        chain = await ca.finalize(order, csr, trio.current_time() + 10)
    assert leaf_info(chain.encode()).names == DOMAINS


async def test_failed_validation_invalidates_the_order(nursery: trio.Nursery) -> None:
    answers: dict[str, str] = {}
    port = await nursery.start(serve_http01, answers)
    ca = FakeCA(SystemClock(), validator=http01_validator(port))
    order, csr = await open_order(ca)
    for task in ca.challenges(order, Challenge.HTTP_01):
        answers[task.token] = "wrong" if task.domain == "www.a.test" else task.key_authorization
        await ca.answer(task)
    with trio.fail_after(10), pytest.raises(IssuanceError, match="www.a.test is invalid.*unauthorized"):
        await ca.wait_authorizations(order, trio.current_time() + 10)
    with pytest.raises(IssuanceError, match="is invalid"):
        await ca.finalize(order, csr, trio.current_time() + 10)
    with pytest.raises(IssuanceError, match="invalid"):
        ca.challenges(order, Challenge.HTTP_01)
    assert ca.issued == []


async def test_connection_error_in_validator_is_a_failed_validation() -> None:
    async def refused(_task: ChallengeTask) -> bool:
        raise ConnectionRefusedError("nobody listening")

    ca = FakeCA(SystemClock(), validator=refused)
    order, _ = await open_order(ca, ("a.test",))
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    with pytest.raises(IssuanceError, match="a.test is invalid.*connection"):
        await ca.wait_authorizations(order, trio.current_time() + 1)


# --- faults --------------------------------------------------------------------------------------


async def test_rate_limit_with_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH))
    await ca.ensure_account(None, ())
    when = EPOCH + timedelta(hours=3)
    ca.fail_next(1, status=429, retry_after=when, step="new_order")
    csr = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS)
    with pytest.raises(IssuanceError) as info:
        await ca.new_order(DOMAINS, csr)
    assert info.value.status == 429
    assert info.value.retry_after == when
    assert info.value.problem_type == "urn:ietf:params:acme:error:rateLimited"
    assert ca.orders == []

    await ca.new_order(DOMAINS, csr)  # only the next one failed
    assert ca.orders == [DOMAINS]
    assert ca.calls.count("new_order") == 2


async def test_relative_retry_after_is_taken_from_the_clock(autojump_clock: trio.testing.MockClock) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH))
    await ca.ensure_account(None, ())
    ca.fail_next(status=503, retry_after=timedelta(minutes=5), step="renewal_info")
    await trio.sleep(100)
    with pytest.raises(IssuanceError) as info:
        await ca.renewal_info((await issue(ca)).encode())
    assert info.value.status == 503
    assert info.value.retry_after == EPOCH + timedelta(seconds=100, minutes=5)


async def test_fail_next_counts_per_step() -> None:
    ca = FakeCA(SystemClock())
    ca.fail_next(2, status=500, step="finalize")
    order, csr = await open_order(ca)  # other steps are unaffected
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    await ca.wait_authorizations(order, trio.current_time() + 1)
    for _ in range(2):
        with pytest.raises(IssuanceError) as info:
            await ca.finalize(order, csr, trio.current_time() + 1)
        assert (info.value.status, info.value.retry_after) == (500, None)
        assert info.value.problem_type == "urn:ietf:params:acme:error:serverInternal"
    await ca.finalize(order, csr, trio.current_time() + 1)
    assert ca.planned == []
    assert len(ca.issued) == 1


async def test_planned_queue_and_stepless_failures() -> None:
    ca = FakeCA(SystemClock())
    ca.planned.extend([
        PlannedFailure(step=None, status=None),  # the next request, whatever it is
        PlannedFailure(step="challenges", status=400, problem_type="urn:ietf:params:acme:error:malformed"),
    ])
    with pytest.raises(IssuanceError, match="connection reset") as info:
        await ca.ensure_account(None, ())
    assert info.value.status is None
    order, _ = await open_order(ca)
    with pytest.raises(IssuanceError) as info:
        ca.challenges(order, Challenge.HTTP_01)
    assert info.value.status == 400
    assert len(ca.challenges(order, Challenge.HTTP_01)) == 2


def test_planned_failures_are_validated() -> None:
    ca = FakeCA(SystemClock())
    with pytest.raises(ValueError, match="unknown step"):
        ca.fail_next(step="new_ordr")
    with pytest.raises(ValueError, match="429 or 503"):
        ca.fail_next(status=500, retry_after=EPOCH)
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.fail_next(status=429, retry_after=datetime(2030, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="400-599"):
        ca.fail_next(status=200)
    with pytest.raises(ValueError, match="at least 1"):
        ca.fail_next(0)
    assert ca.planned == []


async def test_unreachable_fails_every_request() -> None:
    ca = FakeCA(SystemClock())
    cert = (await issue(ca)).encode()
    order, csr = await open_order(ca)
    tasks = ca.challenges(order, Challenge.HTTP_01)
    ca.unreachable = True
    deadline = trio.current_time() + 1
    attempts = [
        ca.ensure_account(None, ()),
        ca.new_order(DOMAINS, csr),
        ca.answer(tasks[0]),
        ca.wait_authorizations(order, deadline),
        ca.finalize(order, csr, deadline),
        ca.renewal_info(cert),
    ]
    ca.calls.clear()
    for attempt in attempts:
        with pytest.raises(IssuanceError, match="connection refused") as info:
            await attempt
        assert info.value.status is None
        assert info.value.retry_after is None
    assert ca.calls == ["ensure_account", "new_order", "answer", "wait_authorizations", "finalize", "renewal_info"]
    assert ca.challenges(order, Challenge.HTTP_01) == tasks  # no request in the real backend either

    ca.unreachable = False
    await ca.answer(tasks[0])
    await ca.answer(tasks[1])
    await ca.wait_authorizations(order, deadline)
    await ca.finalize(order, csr, deadline)
    assert ca.orders == [DOMAINS, DOMAINS]
    assert len(ca.issued) == 2


# --- replaces and resume_order -------------------------------------------------------------------


async def test_replaces_is_recorded_and_a_replaced_certificate_cannot_be_replaced_again() -> None:
    ca = FakeCA(SystemClock())
    first = await issue(ca)
    first_id = crypto.ari_cert_id(first.encode())
    second = await issue(ca, replaces=first_id)
    assert ca.replaces == [None, first_id]
    with pytest.raises(IssuanceError) as info:
        await open_order(ca, replaces=first_id)
    assert (info.value.status, info.value.problem_type) == (409, ACME + "alreadyReplaced")
    assert len(ca.orders) == 2
    # An order that carries replaces but is never finalized replaces nothing.
    second_id = crypto.ari_cert_id(second.encode())
    await open_order(ca, replaces=second_id)
    await open_order(ca, replaces=second_id)
    assert ca.replaces[2:] == [second_id, second_id]


async def test_replaces_of_an_unknown_certificate_is_malformed() -> None:
    other = FakeCA(SystemClock())
    foreign = crypto.ari_cert_id((await issue(other)).encode())
    ca = FakeCA(SystemClock())
    with pytest.raises(IssuanceError) as info:
        await open_order(ca, replaces=foreign)
    assert (info.value.status, info.value.problem_type) == (400, ACME + "malformed")
    assert ca.orders == []


async def test_resume_order_downloads_the_chain_of_a_valid_order_without_issuing_again() -> None:
    ca = FakeCA(SystemClock())
    order, csr = await open_order(ca)
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    deadline = trio.current_time() + 10
    await ca.wait_authorizations(order, deadline)
    chain = await ca.finalize(order, csr, deadline)

    resumed = await ca.resume_order(order.url)
    assert (resumed.url, resumed.domains) == (order.url, DOMAINS)
    assert await ca.finalize(resumed, csr, deadline) == chain
    assert len(ca.issued) == 1

    pending, _ = await open_order(ca)
    with pytest.raises(IssuanceError) as info:
        await ca.finalize(await ca.resume_order(pending.url), csr, deadline)
    assert info.value.problem_type == ACME + "orderNotReady"
    with pytest.raises(IssuanceError) as info:
        await ca.resume_order(order.url + "0")
    assert info.value.status == 404
    ca.fail_next(step="resume_order", status=500)
    with pytest.raises(IssuanceError):
        await ca.resume_order(order.url)


# --- ARI -------------------------------------------------------------------------------------------


async def test_ari_policy_answers_a_window_computed_from_the_certificate(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[datetime, datetime, int]] = []

    def window(not_before: datetime, not_after: datetime, serial: int) -> tuple[datetime, datetime]:
        seen.append((not_before, not_after, serial))
        return not_before + timedelta(days=10), not_before + timedelta(days=11)

    policy = AriPolicy(window=window, retry_after=timedelta(hours=3), explanation_url="https://ca.test/why")
    ca = FakeCA(TrioLinkedClock(EPOCH), ari=policy)
    await trio.sleep(100)
    chain = (await issue(ca)).encode()
    await trio.sleep(50)
    info = await ca.renewal_info(chain)
    issued = EPOCH + timedelta(seconds=100)
    assert info == RenewalInfo(
        issued + timedelta(days=10), issued + timedelta(days=11),
        explanation_url="https://ca.test/why", retry_after=EPOCH + timedelta(seconds=150, hours=3),
    )
    assert seen == [(issued, issued + timedelta(days=90), load_chain(chain)[0].serial_number)]
    assert ca.records["a.test"].ari_requests == ca.records["www.a.test"].ari_requests == 1


def test_default_ari_window_starts_at_two_thirds_of_the_lifetime() -> None:
    assert lifetime_window(EPOCH, EPOCH + timedelta(days=90), 1) == (
        EPOCH + timedelta(days=60), EPOCH + timedelta(days=62)
    )
    assert AriPolicy().window is lifetime_window
    with pytest.raises(ValueError, match="negative"):
        AriPolicy(retry_after=timedelta(seconds=-1))


async def test_malformed_ari_answer_raises_and_no_ari_answers_none() -> None:
    ca = FakeCA(SystemClock())
    chain = (await issue(ca)).encode()
    assert await ca.renewal_info(chain) is None
    ca.ari = AriPolicy(malformed=True)
    with pytest.raises(IssuanceError, match="no end") as info:
        await ca.renewal_info(chain)
    assert info.value.problem_type == ACME + "malformed"
    assert ca.records["a.test"].ari_requests == 2


async def test_sign_makes_a_certificate_known_to_ari_and_replaces_but_counted_nowhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH), ari=AriPolicy())
    not_before = EPOCH - timedelta(days=10)
    chain = ca.sign(("s.test",), crypto.generate_key(KeyType.ECDSA_P256), not_before=not_before).encode()
    assert cert_dates(chain) == (not_before, not_before + timedelta(days=90))
    assert ca.records == {} and ca.issued == []
    await ca.ensure_account(None, ())
    info = await ca.renewal_info(chain)
    assert info is not None and info.start == not_before + timedelta(days=60)
    await issue(ca, ("s.test",), replaces=crypto.ari_cert_id(chain))
    assert len(ca.records["s.test"].issued) == 1


# --- load and failure controls ---------------------------------------------------------------------


async def outcomes(fault_rate: float, seed: int, n: int = 1000) -> tuple[list[int | None], FakeCA]:
    ca = FakeCA(SystemClock(), seed=seed, ari=AriPolicy())
    chain = (await issue(ca)).encode()
    ca.fault_rate = fault_rate
    statuses: list[int | None] = []
    for _ in range(n):
        try:
            await ca.renewal_info(chain)
            statuses.append(None)
        except IssuanceError as exc:
            statuses.append(exc.status)
    return statuses, ca


async def test_fault_rate_fails_that_share_of_requests_reproducibly() -> None:
    statuses, ca = await outcomes(0.3, seed=5)
    failed = [s for s in statuses if s is not None]
    assert 250 <= len(failed) <= 350
    assert set(failed) == {500, 503}
    assert ca.faults == len(failed)
    assert (await outcomes(0.3, seed=5))[0] == statuses  # the same seed, the same faults
    assert (await outcomes(0.3, seed=6))[0] != statuses
    assert set((await outcomes(1.0, seed=1, n=20))[0]) <= {500, 503}
    assert set((await outcomes(0.0, seed=1, n=20))[0]) == {None}
    with pytest.raises(ValueError, match="fault_rate"):
        FakeCA(SystemClock(), fault_rate=1.5)


async def test_serial_requests_wait_their_turn_but_ari_does_not(autojump_clock: trio.testing.MockClock) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH), delay=1.0, serial_requests=True)
    chain = (await issue(ca)).encode()
    csr = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS)

    async def round_of_requests() -> tuple[list[float], float]:
        """When two orders and one ARI request sent together finish."""
        start, done = trio.current_time(), {}

        async def order(label: str) -> None:
            await ca.new_order(DOMAINS, csr)
            done[label] = trio.current_time() - start

        async def ari() -> None:
            await ca.renewal_info(chain)
            done["ari"] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(order, "first")
            nursery.start_soon(order, "second")
            nursery.start_soon(ari)
        return sorted([done["first"], done["second"]]), done["ari"]

    assert await round_of_requests() == ([1.0, 2.0], 1.0)
    ca.serial_requests = False
    assert await round_of_requests() == ([1.0, 1.0], 1.0)


async def test_names_that_never_validate_fail_their_authorization() -> None:
    ca = FakeCA(SystemClock(), never_valid={"www.a.test"}, invalid_problem=ACME + "unauthorized")
    order, _ = await open_order(ca)
    for task in ca.challenges(order, Challenge.HTTP_01):
        await ca.answer(task)
    with pytest.raises(IssuanceError, match="www.a.test is invalid") as info:
        await ca.wait_authorizations(order, trio.current_time() + 1)
    assert info.value.problem_type == ACME + "unauthorized"
    assert (ca.records["a.test"].failed_validations, ca.records["www.a.test"].failed_validations) == (0, 1)

    ca = FakeCA(SystemClock(), never_valid=lambda name: name.startswith("bad"))
    await issue(ca, ("good.test",))
    with pytest.raises(IssuanceError) as info:
        await issue(ca, ("bad.test",))
    assert info.value.problem_type == ACME + "incorrectResponse"
    assert ca.records["bad.test"].failed_validations == 1
    assert len(ca.issued) == 1


# --- CA-side rate limits ---------------------------------------------------------------------------


async def refused(ca: FakeCA, domains: tuple[str, ...], *, replaces: str | None = None) -> IssuanceError:
    with pytest.raises(IssuanceError) as info:
        await open_order(ca, domains, replaces=replaces)
    assert (info.value.status, info.value.problem_type) == (429, ACME + "rateLimited")
    return info.value


async def test_new_orders_per_account_refused_until_the_oldest_leaves_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ca = FakeCA(TrioLinkedClock(EPOCH), limits=CALimitSettings(new_orders_per_3h=3))
    for _ in range(3):
        await open_order(ca, ("a.test",))
        await trio.sleep(600)
    error = await refused(ca, ("b.test",))
    assert error.retry_after == EPOCH + timedelta(hours=3)
    assert "new orders" in str(error)
    assert (ca.rate_limited, ca.records["b.test"].rate_limited, len(ca.orders)) == (1, 1, 3)
    await trio.sleep_until(3 * 3600 - 1)
    await refused(ca, ("b.test",))
    await trio.sleep_until(3 * 3600)
    await open_order(ca, ("b.test",))
    assert ca.limits is not None and ca.limits.peak["new_orders"] == 3


async def test_failed_validations_per_name_per_hour(autojump_clock: trio.testing.MockClock) -> None:
    limits = CALimitSettings(failed_validations_per_name_per_hour=2)
    ca = FakeCA(TrioLinkedClock(EPOCH), never_valid={"bad.test"}, limits=limits)
    for _ in range(2):
        with pytest.raises(IssuanceError, match="invalid"):
            await issue(ca, ("bad.test",))
        await trio.sleep(60)
    error = await refused(ca, ("bad.test",))
    assert error.retry_after == EPOCH + timedelta(hours=1)
    await issue(ca, ("good.test",))  # other names are not held back
    assert ca.records["bad.test"].failed_validations == 2


async def test_duplicate_and_per_domain_limits_with_renewals_and_ari_exempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = CALimitSettings(duplicate_certificates_per_week=2, certificates_per_domain_per_week=2)
    ca = FakeCA(TrioLinkedClock(EPOCH), limits=limits)
    await issue(ca, ("x.d.test",))
    await issue(ca, ("y.d.test",))
    await trio.sleep(DAY)
    # Two certificates under d.test: a new set of names under it is refused until the first is a week old...
    error = await refused(ca, ("z.d.test",))
    assert error.retry_after == EPOCH + timedelta(days=7)
    assert "certificates per domain" in str(error)
    await issue(ca, ("z.e.test",))  # ...other registered domains are not held back...
    renewed = await issue(ca, ("x.d.test",))  # ...and a renewal of a set issued before is exempt.
    # Two certificates for exactly {x.d.test}: a third is refused until the first is a week old...
    error = await refused(ca, ("x.d.test",))
    assert error.retry_after == EPOCH + timedelta(days=7)
    assert "duplicate certificates" in str(error)
    # ...unless it is an ARI renewal (replaces accepted): exempt from every limit.
    await issue(ca, ("x.d.test",), replaces=crypto.ari_cert_id(renewed.encode()))
    assert ca.limits is not None
    assert ca.limits.used("duplicate_certificates", "x.d.test", ca.clock.now()) == 3
    assert ca.limits.peak == {
        "new_orders": 3, "failed_validations": 0, "duplicate_certificates": 3, "certificates_per_domain": 4,
    }
    assert ca.rate_limited == 2


def test_registered_domain_is_the_last_two_labels() -> None:
    assert registered_domain("*.www.Example.COM") == "example.com"
    assert registered_domain("a.test.") == "a.test"
    with pytest.raises(ValueError, match="at least 1"):
        CALimitSettings(new_orders_per_3h=0)


# --- protocol conformance ------------------------------------------------------------------------


def test_satisfies_the_backend_protocol_statically() -> None:
    backend: AcmeBackend = FakeCA(SystemClock())  # mypy checks this line
    assert backend is not None


PROTOCOL_METHODS = sorted(
    name for name, value in vars(AcmeBackend).items() if inspect.isfunction(value) and not name.startswith("_")
)


def test_protocol_method_list() -> None:
    expected = ["ensure_account", "new_order", "challenges", "answer", "wait_authorizations", "finalize",
                "renewal_info", "resume_order", "offered_profiles", "change_key", "update_contact", "revoke",
                "aclose"]
    assert sorted(expected) == PROTOCOL_METHODS
    assert set(STEPS) == set(PROTOCOL_METHODS) - {"aclose"}
    for step in STEPS:
        assert inspect.iscoroutinefunction(getattr(FakeCA, step)) == (step != "challenges")


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_method_accepts_every_call_the_protocol_allows(name: str) -> None:
    """Same parameters as the protocol; any extra one is keyword-only with a default (callers may omit it)."""
    expected, actual = getattr(AcmeBackend, name), getattr(FakeCA, name)
    assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(expected)
    want = list(inspect.signature(expected).parameters.values())
    got = list(inspect.signature(actual).parameters.values())
    assert [(p.name, p.kind, p.default) for p in got[: len(want)]] == [(p.name, p.kind, p.default) for p in want]
    for extra in got[len(want):]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default is not inspect.Parameter.empty
    want_hints, got_hints = typing.get_type_hints(expected), typing.get_type_hints(actual)
    assert {k: got_hints[k] for k in want_hints if k != "return"} == {k: v for k, v in want_hints.items() if k != "return"}
    if name != "renewal_info":  # the engine's protocol answers RenewalInfo (test below)
        assert got_hints["return"] == want_hints["return"]


def test_engine_protocol_additions() -> None:
    replaces = inspect.signature(FakeCA.new_order).parameters["replaces"]
    assert (replaces.kind, replaces.default) == (inspect.Parameter.KEYWORD_ONLY, None)
    assert typing.get_type_hints(FakeCA.new_order)["replaces"] == str | None
    assert list(inspect.signature(FakeCA.resume_order).parameters) == ["self", "order_url"]
    assert typing.get_type_hints(FakeCA.resume_order) == {"order_url": str, "return": OrderHandle}
    assert typing.get_type_hints(FakeCA.renewal_info)["return"] == RenewalInfo | None
