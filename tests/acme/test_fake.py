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
from snakeway.acme.backend import AcmeBackend, ChallengeTask, OrderHandle
from snakeway.clock import SystemClock
from snakeway.config.model import Challenge, KeyType
from snakeway.errors import IssuanceError
from snakeway.testing import STEPS, FakeCA, PlannedFailure, TrioLinkedClock, cert_dates
from snakeway.tls.certinfo import leaf_info, load_chain

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
DOMAINS = ("a.test", "www.a.test")
DAY = 86400.0


async def open_order(ca: FakeCA, domains: tuple[str, ...] = DOMAINS) -> tuple[OrderHandle, bytes]:
    await ca.ensure_account(None, ("mailto:ops@a.test",))
    csr = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), domains)
    return await ca.new_order(domains, csr), csr


async def issue(ca: FakeCA, domains: tuple[str, ...] = DOMAINS, kind: Challenge = Challenge.HTTP_01) -> str:
    """The manager's sequence: account, order, challenges, answers, authorizations, finalize."""
    order, csr = await open_order(ca, domains)
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


async def test_renewal_info_emulates_ari() -> None:
    ca = FakeCA(SystemClock())
    cert = (await issue(ca)).encode()
    assert await ca.renewal_info(cert) is None
    window = (EPOCH, EPOCH + timedelta(days=1))
    ca.renewal_window = window
    assert await ca.renewal_info(cert) == window


# --- protocol conformance ------------------------------------------------------------------------


def test_satisfies_the_backend_protocol_statically() -> None:
    backend: AcmeBackend = FakeCA(SystemClock())  # mypy checks this line
    assert backend is not None


PROTOCOL_METHODS = sorted(
    name for name, value in vars(AcmeBackend).items() if inspect.isfunction(value) and not name.startswith("_")
)


def test_protocol_method_list() -> None:
    expected = ["ensure_account", "new_order", "challenges", "answer", "wait_authorizations", "finalize",
                "renewal_info", "resume_order", "aclose"]
    assert sorted(expected) == PROTOCOL_METHODS
    assert set(STEPS) == set(PROTOCOL_METHODS) - {"aclose"}


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_method_matches_the_protocol(name: str) -> None:
    expected, actual = getattr(AcmeBackend, name), getattr(FakeCA, name)
    assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(expected)
    want, got = inspect.signature(expected), inspect.signature(actual)
    assert [(p.name, p.kind, p.default) for p in got.parameters.values()] == [
        (p.name, p.kind, p.default) for p in want.parameters.values()
    ]
    assert typing.get_type_hints(actual) == typing.get_type_hints(expected)
