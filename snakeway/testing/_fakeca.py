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
  :attr:`FakeCA.issued`, :attr:`FakeCA.accounts`, :attr:`FakeCA.answered`, and
  per name :attr:`FakeCA.records`);
* optional latency (:attr:`FakeCA.delay`, always a ``trio.sleep``) and an optional
  ``validator`` that really checks a challenge (e.g. fetches the http-01 token);
* load and failure controls for simulations: random faults (``fault_rate``),
  one request at a time (``serial_requests``), names that never validate
  (``never_valid``), and Let's Encrypt's rate limits enforced CA-side
  (``limits``, :mod:`snakeway.testing._fakelimits`);
* ARI (``ari``, an :class:`~snakeway.testing.AriPolicy`) and ``replaces`` with
  ``alreadyReplaced``, and ``resume_order`` of an order by its URL.

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
* A failed validation raises with the problem type of the failed challenge
  (``unauthorized``, ``connection``, or ``invalid_problem`` for ``never_valid`` names).
* The one deliberate difference: an authorization whose challenge was never
  answered fails at once instead of sitting "pending" until the deadline, so a
  forgotten ``answer()`` shows up as a clear error rather than a slow timeout.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, final

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from snakeway.acme import crypto
from snakeway.acme.ari import RenewalInfo
from snakeway.acme.backend import AccountInfo, ChallengeTask, OrderHandle
from snakeway.clock import WallClock
from snakeway.config.model import Challenge
from snakeway.errors import IssuanceError
from snakeway.testing._fakeari import AriPolicy, NameRecord
from snakeway.testing._fakebook import CABook
from snakeway.testing._fakecrypto import make_root, sign_leaf
from snakeway.testing._fakefaults import ACME_ERROR, PlannedFailure
from snakeway.testing._fakelimits import CALimits, CALimitSettings
from snakeway.testing._fakeorders import Authorization, Order, RequestGate, unwrap, validate

DEFAULT_LIFETIME: Final = timedelta(days=90)
BASE_URL: Final = "https://fake-ca.test/acme"

Validator = Callable[[ChallengeTask], Awaitable[bool]]
# Names whose authorizations always fail: a set of names, or a predicate.
NeverValid = Collection[str] | Callable[[str], bool]


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
        delay: Seconds of simulated CA latency per request (``trio.sleep``).
        ari: How :meth:`renewal_info` answers (ARI); ``None`` = a CA without ARI.
        fault_rate: Probability that a request fails with HTTP 503 or 500 (after its latency).
        seed: Seeds the random faults (``None``: unseeded).
        serial_requests: Serve requests one at a time, ARI excepted, as the real backend's one
            session does.
        serial_ari: With ``serial_requests``, ARI requests wait their turn too (a backend that
            sends them through the same session as orders).
        never_valid: Names whose authorizations always fail (a collection, or a predicate).
        invalid_problem: The problem type of such a failure.
        limits: The CA-side rate limits to enforce (``CALimitSettings()``: Let's Encrypt's);
            ``None``: none.
        base_url: Where the CA's accounts, orders and challenges are (their URLs start with it).

    All of these but ``seed`` and ``limits``, and :attr:`unreachable`, are plain attributes tests may
    change between calls.

    Attributes:
        calls: Every method called, in order (failed calls included).
        orders: The domains of each order opened (failed ``new_order`` calls excluded).
        issued: Serial numbers of the certificates issued, in order.
        accounts: The accounts created (a known key finds its account again).
        answered: The challenges answered, in order.
        planned: Queue of :class:`~snakeway.testing.PlannedFailure`; a call takes the first that
            matches it.
        replaces: The ``replaces`` of each order opened (None for an order without).
        records: Per name: orders, failed validations, issued certificates, ARI requests, rateLimited
            answers (:class:`~snakeway.testing.NameRecord`).
        limits: The enforced :class:`~snakeway.testing.CALimits` and their counters, or None.
        profiles: The profiles the directory offers (``meta.profiles``), None for none (the default).
    """

    def __init__(
        self,
        clock: WallClock,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
        validator: Validator | None = None,
        delay: float = 0.0,
        ari: AriPolicy | None = None,
        fault_rate: float = 0.0,
        seed: int | None = 0,
        serial_requests: bool = False,
        serial_ari: bool = False,
        never_valid: NeverValid = (),
        invalid_problem: str = ACME_ERROR + "incorrectResponse",
        limits: CALimitSettings | None = None,
        base_url: str = BASE_URL,
    ) -> None:
        if lifetime <= timedelta(0):
            raise ValueError(f"lifetime must be positive, got {lifetime}")
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        self.clock = clock
        self.lifetime = lifetime
        self.validator = validator
        self.ari = ari
        self.never_valid = never_valid
        self.invalid_problem = invalid_problem
        self.delay = delay
        self.fault_rate = fault_rate
        self.serial_requests = serial_requests
        self.serial_ari = serial_ari
        self.unreachable = False
        self.profiles: dict[str, str] | None = None  # the directory's meta.profiles
        self.base_url = base_url
        self._gate = RequestGate(seed)
        self._book = CABook(limits)
        self.calls: list[str] = []
        # Serial (lower-case hex) -> CRLReason code of every certificate revoked.
        self.revoked: dict[str, int] = {}
        # The contacts each account was last given by update_contact, by account URL.
        self.contacts: dict[str, tuple[str, ...]] = {}
        self.orders: list[tuple[str, ...]] = []
        self.replaces: list[str | None] = []
        self.issued: list[int] = []
        self.accounts = self._book.accounts
        self.records: dict[str, NameRecord] = self._book.records
        self.limits: CALimits | None = self._book.limits  # with their counters (``peak``, ``used``)
        self.answered: list[ChallengeTask] = []
        self._answered: set[str] = set()  # their urls
        self.planned: list[PlannedFailure] = []
        self._ids = itertools.count(1)
        self._account: tuple[AccountInfo, str] | None = None  # the current one, as the real backend's session
        self._orders_by_url: dict[str, Order] = {}
        self._challenges: dict[str, ChallengeTask] = {}  # by url
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        self._root = make_root(self._root_key)

    # --- counters and controls --------------------------------------------------------------------

    @property
    def faults(self) -> int:
        """Random faults answered so far (``fault_rate``)."""
        return self._gate.faults

    @property
    def rate_limited(self) -> int:
        """New orders refused with ``rateLimited``."""
        return self._book.rate_limited

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

    def sign(self, domains: Sequence[str], key_pem: bytes, *, not_before: datetime) -> str:
        """A chain for ``domains`` and ``key_pem``, dated ``not_before``, signed without an order.

        For filling a store before a test or simulation starts: the certificate is known to
        :meth:`renewal_info` and ``replaces``, but counts in no record or rate limit.
        """
        public = crypto.load_private_key(key_pem).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        names = tuple(dict.fromkeys(domains))
        leaf = sign_leaf(self._root_key, self._root, public, names, not_before=not_before, lifetime=self.lifetime)
        chain = self._chain(leaf)
        self._book.certificate_issued(chain, names, leaf, replaces=None, order_url="", now=not_before, count=False)
        return chain

    # --- AcmeBackend ------------------------------------------------------------------------------

    async def ensure_account(self, account_key_pem: bytes | None, contact: tuple[str, ...]) -> AccountInfo:
        """Register the account for ``account_key_pem`` (new P-256 key if None), or find it.

        Raises:
            ValueError: ``account_key_pem`` is not an ECDSA or RSA key.
            IssuanceError: Unreachable, or a planned failure.
        """
        self.calls.append("ensure_account")
        await self._enter("ensure_account")
        self._account = self._book.account(account_key_pem, lambda: f"{self.base_url}/acct/{next(self._ids)}")
        return self._account[0]

    async def new_order(self, domains: Sequence[str], csr_pem: bytes, *, replaces: str | None = None) -> OrderHandle:
        """Open an order for the names in ``csr_pem``, which must be ``domains``.

        ``replaces`` is the ARI CertID of the certificate this order renews (RFC 9773 §5).

        Raises:
            ValueError: The CSR's names differ from ``domains``.
            RuntimeError: No account yet.
            IssuanceError: Unreachable, a planned failure, ``replaces`` unknown (``malformed``) or
                already replaced (``alreadyReplaced``), or a rate limit (429 ``rateLimited``).
        """
        self.calls.append("new_order")
        csr_names = crypto.csr_names(csr_pem)
        if set(csr_names) != set(domains):
            raise ValueError(f"CSR names {csr_names} differ from {tuple(domains)}")
        account, _ = self._require()
        await self._enter("new_order")
        names = tuple(dict.fromkeys(domains))
        self._book.accept_order(account.uri, names, replaces, self.clock.now())
        order = Order(
            url=f"{self.base_url}/order/{next(self._ids)}",
            account_uri=account.uri,
            domains=names,
            authorizations=[Authorization(domain) for domain in names],
            replaces=replaces,
        )
        self._orders_by_url[order.url] = order
        self.orders.append(names)
        self.replaces.append(replaces)
        return OrderHandle(url=order.url, domains=tuple(domains), resource=order)

    async def resume_order(self, order_url: str) -> OrderHandle:
        """The order at ``order_url``, as it is now (e.g. one interrupted after finalize).

        Raises:
            RuntimeError: No account yet.
            IssuanceError: Unreachable, a planned failure, or no such order of this account (404).
        """
        self.calls.append("resume_order")
        account, _ = self._require()
        await self._enter("resume_order")
        order = self._orders_by_url.get(order_url)
        if order is None or order.account_uri != account.uri:
            raise IssuanceError(f"no such order {order_url}", status=404, problem_type=ACME_ERROR + "malformed")
        return OrderHandle(url=order.url, domains=order.domains, resource=order)

    def challenges(self, order: OrderHandle, kind: Challenge) -> list[ChallengeTask]:
        """The ``kind`` challenges still to answer (valid authorizations are skipped).

        Calling it again returns the same tasks (same tokens).

        Raises:
            IssuanceError: An authorization is invalid, or a planned failure.
        """
        self.calls.append("challenges")
        _, thumbprint = self._require()
        self._inject("challenges")
        state = unwrap(order)
        tasks = state.tasks(kind, thumbprint, lambda: f"{self.base_url}/chall/{next(self._ids)}")
        for task in tasks:
            self._challenges[task.url] = task
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
        self._answered.add(task.url)

    async def wait_authorizations(self, order: OrderHandle, deadline: float) -> None:
        """Validate the order's answered challenges (with ``validator``, if any).

        Raises:
            IssuanceError: An authorization failed (the order becomes invalid; the error carries the
                challenge's problem type), a challenge was never answered, the deadline passed,
                unreachable, or a planned failure.
        """
        self.calls.append("wait_authorizations")
        self._require()
        await self._enter("wait_authorizations", deadline=deadline, what="authorizations")
        state = unwrap(order)
        for authz in state.authorizations:
            if authz.status == "pending":
                await self._validate(state, authz, self._answered, deadline)
            if authz.status != "valid":
                raise IssuanceError(f"authorization for {authz.domain} is {authz.status}: {authz.error}",
                                    problem_type=authz.problem)
        if state.status == "pending":
            state.status = "ready"

    async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str:
        """Issue the certificate for a ready order; for an order already valid, download its chain.

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
        state = unwrap(order)
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
        chain = self._chain(leaf)
        self._book.certificate_issued(chain, state.domains, leaf, replaces=state.replaces, order_url=state.url,
                                      now=self.clock.now())
        self.issued.append(leaf.serial_number)
        state.status, state.chain_pem = "valid", chain
        return chain

    async def renewal_info(self, cert_pem: bytes) -> RenewalInfo | None:
        """The ARI answer for ``cert_pem`` per :attr:`ari`; None when the CA has no ARI.

        Raises:
            ValueError: ``cert_pem`` has no authority key identifier (no ARI CertID).
            IssuanceError: Unreachable, a planned failure, or a malformed answer (``AriPolicy.malformed``).
        """
        self.calls.append("renewal_info")
        self._require()
        cert = self._book.lookup(cert_pem)
        await self._enter("renewal_info")
        self._book.ari_requested(cert)
        if self.ari is None:
            return None
        return self.ari.answer(cert, self.clock.now())

    async def offered_profiles(self) -> dict[str, str] | None:
        """:attr:`profiles` (works without an account, as the real backend's).

        Raises:
            IssuanceError: Unreachable, or a planned failure.
        """
        self.calls.append("offered_profiles")
        await self._enter("offered_profiles")
        return dict(self.profiles) if self.profiles is not None else None

    async def change_key(self, new_key_pem: bytes) -> None:
        """Move the current account to ``new_key_pem`` (its old key then registers a new account)."""
        self.calls.append("change_key")
        await self._enter("change_key")
        info, _ = self._require()
        self._account = self._book.rekey(info.uri, new_key_pem)

    async def update_contact(self, contact: tuple[str, ...]) -> None:
        """Record ``contact`` for the current account (:attr:`contacts`)."""
        self.calls.append("update_contact")
        await self._enter("update_contact")
        info, _ = self._require()
        self.contacts[info.uri] = tuple(contact)

    async def revoke(self, cert_pem: bytes, reason: int) -> None:
        """Record the leaf of ``cert_pem`` as revoked (:attr:`revoked`); ``alreadyRevoked`` the second time."""
        self.calls.append("revoke")
        await self._enter("revoke")
        self._require()
        serial = format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")
        if serial in self.revoked:
            raise IssuanceError("certificate already revoked", status=400,
                                problem_type=ACME_ERROR + "alreadyRevoked")
        self.revoked[serial] = reason

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
        """A request to the CA: outage, turn, latency (bounded by ``deadline``), faults."""
        if self.unreachable:
            await trio.lowlevel.checkpoint()
            raise IssuanceError("connection refused", status=None)
        serial = self.serial_requests and (step != "renewal_info" or self.serial_ari)
        await self._gate.enter(self.delay, self.fault_rate, serial=serial, deadline=deadline, what=what)
        self._inject(step)

    def _inject(self, step: str) -> None:
        for index, failure in enumerate(self.planned):
            if failure.matches(step):
                del self.planned[index]
                raise failure.error(step, self.clock.now())

    async def _validate(self, order: Order, authz: Authorization, answered: set[str], deadline: float) -> None:
        never = self.never_valid
        never_valid = never(authz.domain) if callable(never) else authz.domain in never
        failure = await validate(authz, answered, self.validator if not never_valid else None, deadline,
                                 never_valid=self.invalid_problem if never_valid else None)
        if failure:
            order.status, order.error = "invalid", f"authorization for {authz.domain} failed"
            self._book.validation_failed(authz.domain, self.clock.now())

    def _sign(self, csr: x509.CertificateSigningRequest, names: tuple[str, ...]) -> x509.Certificate:
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise IssuanceError(f"unsupported CSR key {type(public).__name__}", status=400,
                                problem_type=ACME_ERROR + "badCSR")
        not_before = self.clock.now().astimezone(UTC).replace(microsecond=0)
        return sign_leaf(self._root_key, self._root, public, names, not_before=not_before, lifetime=self.lifetime)

    def _chain(self, leaf: x509.Certificate) -> str:
        return (leaf.public_bytes(serialization.Encoding.PEM) + self.root_pem).decode("ascii")
