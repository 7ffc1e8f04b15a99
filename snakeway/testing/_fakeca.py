"""An in-process ACME CA for tests: :class:`FakeCA` implements :class:`~snakeway.acme.backend.AcmeBackend`.

Theory of operation: Pebble tests the real wire protocol, but it cannot be told
"answer the next order with a 429 and Retry-After", cannot be made unreachable
on demand, and dates its certificates by the host's clock, so a renewal test
under ``autojump_clock`` would have to wait 60 real days. :class:`FakeCA` keeps
the same method names, signatures and error behaviour as
:class:`~snakeway.acme.backend.ClientV2Backend`, and adds:

* a real signing CA (an ECDSA P-256 root made with ``cryptography``, see
  :mod:`snakeway.testing._fakecrypto`) whose leaf certificates are valid from
  ``clock.now()`` for ``lifetime``. With a :class:`~snakeway.testing.TrioLinkedClock`
  the dates follow trio's ``MockClock``;
* scripted faults: :meth:`FakeCA.fail_next` (or :attr:`FakeCA.planned`, a queue
  of :class:`~snakeway.testing.PlannedFailure`) makes the next calls of a step raise
  :class:`~snakeway.errors.IssuanceError` with an HTTP status, ``Retry-After`` and
  problem type, and :attr:`FakeCA.unreachable` simulates an outage;
* records for assertions (:attr:`FakeCA.calls`, :attr:`FakeCA.orders`,
  :attr:`FakeCA.issued`, :attr:`FakeCA.accounts`, :attr:`FakeCA.answered`);
* optional latency (:attr:`FakeCA.delay`, always a ``trio.sleep``) and an optional
  ``validator`` that really checks a challenge (e.g. fetches the http-01 token).

Fidelity notes, where the real backend decides what the fake does:

* ``challenges()`` and ``aclose()`` make no request in the real backend (the
  order was fetched by ``new_order``), so :attr:`~FakeCA.unreachable` and
  step-less planned failures leave them alone; ``fail_next(step="challenges")``
  still emulates "the CA offers no such challenge".
* ``new_order`` raises ``ValueError`` when the CSR's names differ from
  ``domains``, and every call but ``ensure_account`` raises ``RuntimeError``
  before an account exists (or after ``aclose``).
* Deadlines are absolute trio times. ``wait_authorizations`` and ``finalize``
  raise ``IssuanceError("timed out waiting for ...")`` once the CA's work
  (:attr:`~FakeCA.delay`, the validator) would pass the deadline, as the real
  backend's polling does.
* The one deliberate difference: an authorization whose challenge was never
  answered fails at once instead of sitting "pending" until the deadline, so a
  forgotten ``answer()`` shows up as a clear error rather than a slow timeout.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, final

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from snakeway.acme import crypto
from snakeway.acme.backend import AccountInfo, ChallengeTask, OrderHandle
from snakeway.clock import WallClock
from snakeway.config.model import Challenge, KeyType
from snakeway.errors import IssuanceError
from snakeway.testing._fakecrypto import JWK_CURVES, make_root, sign_leaf, thumbprint
from snakeway.testing._fakefaults import ACME_ERROR, PlannedFailure

DEFAULT_LIFETIME: Final = timedelta(days=90)
BASE_URL: Final = "https://fake-ca.test/acme"

Validator = Callable[[ChallengeTask], Awaitable[bool]]


@dataclass
class _Authorization:
    domain: str
    status: str = "pending"  # pending -> valid | invalid
    tasks: dict[Challenge, ChallengeTask] = field(default_factory=dict)
    error: str | None = None


@dataclass
class _Order:
    url: str
    account_uri: str
    domains: tuple[str, ...]
    authorizations: list[_Authorization]
    status: str = "pending"  # pending -> ready -> valid, or invalid
    error: str | None = None
    chain_pem: str | None = None


@final
class FakeCA:
    """An ACME CA in the test process, with the :class:`~snakeway.acme.backend.AcmeBackend` API.

    Args:
        clock: Dates the certificates (``TrioLinkedClock`` under ``MockClock``).
        lifetime: Validity of each leaf certificate.
        validator: Checks an answered challenge in ``wait_authorizations``
            (``True`` = valid). ``None`` accepts every answered challenge.
            ``OSError`` and ``trio.BrokenResourceError`` from it count as a
            failed (connection) validation; other exceptions propagate.
        delay: Seconds of simulated CA latency per request step (``trio.sleep``).
        renewal_window: What :meth:`renewal_info` returns (ARI); ``None`` = no ARI.

    All of these, and :attr:`unreachable`, are plain attributes tests may change
    between calls.

    Attributes:
        calls: Every method called, in order (failed calls included).
        orders: The domains of each order opened (failed ``new_order`` calls excluded).
        issued: Serial numbers of the certificates issued, in order.
        accounts: The accounts created (a known key finds its account again).
        answered: The challenges answered, in order.
        planned: Queue of :class:`~snakeway.testing.PlannedFailure`; a call takes the first that
            matches it.
    """

    def __init__(
        self,
        clock: WallClock,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
        validator: Validator | None = None,
        delay: float = 0.0,
        renewal_window: tuple[datetime, datetime] | None = None,
    ) -> None:
        if lifetime <= timedelta(0):
            raise ValueError(f"lifetime must be positive, got {lifetime}")
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        self.clock = clock
        self.lifetime = lifetime
        self.validator = validator
        self.delay = delay
        self.renewal_window = renewal_window
        self.unreachable = False
        self.calls: list[str] = []
        self.orders: list[tuple[str, ...]] = []
        self.issued: list[int] = []
        self.accounts: list[AccountInfo] = []
        self.answered: list[ChallengeTask] = []
        self.planned: list[PlannedFailure] = []
        self._ids = itertools.count(1)
        self._accounts_by_key: dict[bytes, tuple[AccountInfo, str]] = {}  # public DER -> (info, thumbprint)
        self._account: tuple[AccountInfo, str] | None = None  # the current one, as the real backend's session
        self._challenges: dict[str, tuple[_Order, _Authorization, ChallengeTask]] = {}  # by url
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        self._root = make_root(self._root_key)

    @property
    def root_pem(self) -> bytes:
        """The root certificate (PEM) every chain from this CA verifies to."""
        return self._root.public_bytes(serialization.Encoding.PEM)

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int | None = 503,
        retry_after: datetime | timedelta | None = None,
        step: str | None = None,
        problem_type: str | None = None,
    ) -> None:
        """Make the next ``n`` calls of ``step`` fail (see :class:`~snakeway.testing.PlannedFailure`).

        Raises:
            ValueError: ``n`` < 1, or the failure is invalid.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        failure = PlannedFailure(step=step, status=status, retry_after=retry_after, problem_type=problem_type)
        self.planned.extend([failure] * n)

    # --- AcmeBackend ------------------------------------------------------------------------------

    async def ensure_account(self, account_key_pem: bytes | None, contact: tuple[str, ...]) -> AccountInfo:
        """Register the account for ``account_key_pem`` (new P-256 key if None), or find it.

        Raises:
            ValueError: ``account_key_pem`` is not an ECDSA or RSA key.
            IssuanceError: Unreachable, or a planned failure.
        """
        self.calls.append("ensure_account")
        await self._enter("ensure_account")
        if account_key_pem is None:
            account_key_pem = crypto.generate_key(KeyType.ECDSA_P256)  # P-256: well under a millisecond
        public = crypto.load_private_key(account_key_pem).public_key()
        if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name not in JWK_CURVES:
            raise ValueError(f"unsupported account key curve {public.curve.name}")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        known = self._accounts_by_key.get(der)
        if known is None:
            info = AccountInfo(key_pem=account_key_pem, uri=f"{BASE_URL}/acct/{next(self._ids)}")
            known = (info, thumbprint(public))
            self._accounts_by_key[der] = known
            self.accounts.append(info)
        self._account = known
        return AccountInfo(key_pem=account_key_pem, uri=known[0].uri)

    async def new_order(self, domains: Sequence[str], csr_pem: bytes) -> OrderHandle:
        """Open an order for the names in ``csr_pem``, which must be ``domains``.

        Raises:
            ValueError: The CSR's names differ from ``domains``.
            RuntimeError: No account yet.
            IssuanceError: Unreachable, or a planned failure.
        """
        self.calls.append("new_order")
        if set(crypto.csr_names(csr_pem)) != set(domains):
            raise ValueError(f"CSR names {crypto.csr_names(csr_pem)} differ from {tuple(domains)}")
        account, _ = self._require()
        await self._enter("new_order")
        names = tuple(dict.fromkeys(domains))
        order = _Order(
            url=f"{BASE_URL}/order/{next(self._ids)}",
            account_uri=account.uri,
            domains=names,
            authorizations=[_Authorization(domain) for domain in names],
        )
        self.orders.append(names)
        return OrderHandle(url=order.url, domains=tuple(domains), resource=order)

    def challenges(self, order: OrderHandle, kind: Challenge) -> list[ChallengeTask]:
        """The ``kind`` challenges still to answer (valid authorizations are skipped).

        Calling it again returns the same tasks (same tokens).

        Raises:
            IssuanceError: An authorization is invalid, or a planned failure.
        """
        self.calls.append("challenges")
        _, thumbprint = self._require()
        self._inject("challenges")
        state = _unwrap(order)
        tasks = []
        for authz in state.authorizations:
            if authz.status == "valid":
                continue
            if authz.status != "pending":
                raise IssuanceError(f"authorization for {authz.domain} is {authz.status}")
            task = authz.tasks.get(kind)
            if task is None:
                token = secrets.token_urlsafe(32)
                url = f"{BASE_URL}/chall/{next(self._ids)}"
                task = ChallengeTask(
                    domain=authz.domain, kind=kind, token=token,
                    key_authorization=f"{token}.{thumbprint}", url=url, body=state,
                )
                authz.tasks[kind] = task
                self._challenges[url] = (state, authz, task)
            tasks.append(task)
        return tasks

    async def answer(self, task: ChallengeTask) -> None:
        """Record that ``task`` is ready; it is validated in :meth:`wait_authorizations`.

        Raises:
            IssuanceError: Unknown challenge, unreachable, or a planned failure.
        """
        self.calls.append("answer")
        self._require()
        await self._enter("answer")
        if task.url not in self._challenges:
            raise IssuanceError(f"no such challenge {task.url}", status=404, problem_type=ACME_ERROR + "malformed")
        self.answered.append(task)

    async def wait_authorizations(self, order: OrderHandle, deadline: float) -> None:
        """Validate the order's answered challenges (with ``validator``, if any).

        Raises:
            IssuanceError: An authorization failed (the order becomes invalid),
                a challenge was never answered, the deadline passed,
                unreachable, or a planned failure.
        """
        self.calls.append("wait_authorizations")
        self._require()
        await self._enter("wait_authorizations", deadline=deadline, what="authorizations")
        state = _unwrap(order)
        answered = {task.url for task in self.answered}
        for authz in state.authorizations:
            if authz.status == "pending":
                await self._validate(state, authz, answered, deadline)
            if authz.status != "valid":
                raise IssuanceError(f"authorization for {authz.domain} is {authz.status}: {authz.error}")
        if state.status == "pending":
            state.status = "ready"

    async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str:
        """Issue the certificate for a ready order.

        Returns:
            Leaf and root, PEM, leaf first.

        Raises:
            IssuanceError: The order is not ready (403 orderNotReady) or invalid,
                the CSR is bad (400 badCSR), the deadline passed, unreachable,
                or a planned failure.
        """
        self.calls.append("finalize")
        self._require()
        await self._enter("finalize", deadline=deadline, what="the order")
        state = _unwrap(order)
        if state.status == "valid" and state.chain_pem is not None:
            return state.chain_pem
        if state.status == "invalid":
            raise IssuanceError(f"order {state.url} is invalid: {state.error}")
        if state.status != "ready":
            raise IssuanceError(
                f"order {state.url} is {state.status}, not ready",
                status=403, problem_type=ACME_ERROR + "orderNotReady",
            )
        csr = x509.load_pem_x509_csr(csr_pem)
        names = crypto.csr_names(csr_pem)
        if not csr.is_signature_valid or set(names) != set(state.domains):
            raise IssuanceError(
                f"CSR for {names} does not match order {state.url} for {state.domains}",
                status=400, problem_type=ACME_ERROR + "badCSR",
            )
        leaf = self._sign(csr, names)
        self.issued.append(leaf.serial_number)
        state.status = "valid"
        state.chain_pem = (leaf.public_bytes(serialization.Encoding.PEM) + self.root_pem).decode("ascii")
        return state.chain_pem

    async def renewal_info(self, cert_pem: bytes) -> tuple[datetime, datetime] | None:
        """:attr:`renewal_window` (ARI), or None when it is None (a CA without ARI).

        Raises:
            ValueError: ``cert_pem`` has no authority key identifier (no ARI CertID).
            IssuanceError: Unreachable, or a planned failure.
        """
        self.calls.append("renewal_info")
        self._require()
        crypto.ari_cert_id(cert_pem)
        await self._enter("renewal_info")
        return self.renewal_window

    async def aclose(self) -> None:
        """Forget the current account, as the real backend closes its session."""
        self.calls.append("aclose")
        await trio.lowlevel.checkpoint()
        self._account = None

    # --- internals ---------------------------------------------------------------------------------

    def _require(self) -> tuple[AccountInfo, str]:
        if self._account is None:
            raise RuntimeError("call ensure_account() first")
        return self._account

    async def _enter(self, step: str, *, deadline: float | None = None, what: str = "") -> None:
        """A request to the CA: outage, latency (bounded by ``deadline``), planned failure."""
        if self.unreachable:
            await trio.lowlevel.checkpoint()
            raise IssuanceError("connection refused", status=None)
        if deadline is None:
            await trio.sleep(self.delay)
        else:
            await _work_until(deadline, self.delay, what)
        self._inject(step)

    def _inject(self, step: str) -> None:
        for index, failure in enumerate(self.planned):
            if failure.matches(step):
                del self.planned[index]
                raise failure.error(step, self.clock.now())

    async def _validate(self, order: _Order, authz: _Authorization, answered: set[str], deadline: float) -> None:
        tasks = [task for task in authz.tasks.values() if task.url in answered]
        if not tasks:
            authz.status, authz.error = "pending", "no challenge was answered"
            return
        task = tasks[0]
        if self.validator is None:
            authz.status = "valid"
            return
        error = f"{task.kind.value}: the validator rejected the answer ({ACME_ERROR}unauthorized)"
        with trio.move_on_at(deadline) as scope:
            try:
                ok = await self.validator(task)
            except (OSError, trio.BrokenResourceError) as exc:
                ok, error = False, f"{task.kind.value}: {exc!r} ({ACME_ERROR}connection)"
        if scope.cancelled_caught:
            raise IssuanceError("timed out waiting for authorizations")
        if ok:
            authz.status = "valid"
        else:
            authz.status, authz.error = "invalid", error
            order.status, order.error = "invalid", f"authorization for {authz.domain} failed"

    def _sign(self, csr: x509.CertificateSigningRequest, names: tuple[str, ...]) -> x509.Certificate:
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise IssuanceError(f"unsupported CSR key {type(public).__name__}", status=400,
                                problem_type=ACME_ERROR + "badCSR")
        not_before = self.clock.now().astimezone(UTC).replace(microsecond=0)
        return sign_leaf(self._root_key, self._root, public, names, not_before=not_before, lifetime=self.lifetime)


def _unwrap(order: OrderHandle) -> _Order:
    if not isinstance(order.resource, _Order):
        raise TypeError(f"expected an order from FakeCA, got {type(order.resource).__name__}")
    return order.resource


async def _work_until(deadline: float, delay: float, what: str) -> None:
    """Spend ``delay`` seconds of CA work, or raise at ``deadline`` if that comes first."""
    remaining = deadline - trio.current_time()
    if remaining <= 0:
        await trio.lowlevel.checkpoint()
        raise IssuanceError(f"timed out waiting for {what}")
    if delay > remaining:
        await trio.sleep(remaining)
        raise IssuanceError(f"timed out waiting for {what}")
    await trio.sleep(delay)
