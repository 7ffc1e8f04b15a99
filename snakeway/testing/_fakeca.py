"""An in-process ACME CA for tests: :class:`FakeCA` implements :class:`~snakeway.acme.backend.AcmeBackend`.

Theory of operation: Pebble tests the real wire protocol, but it cannot be told
"answer the next order with a 429 and Retry-After", cannot be made unreachable
on demand, and dates its certificates by the host's clock, so a renewal test
under ``autojump_clock`` would have to wait 60 real days. :class:`FakeCA` keeps
the same method names, signatures and error behaviour as
:class:`~snakeway.acme.backend.ClientV2Backend`, and adds:

* a real signing CA (an ECDSA P-256 root made with ``cryptography``, see
  :mod:`snakeway.testing._fakecrypto`, kept with the orders in
  :mod:`snakeway.testing._fakedesk`) whose leaf certificates are valid from
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
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

import trio
from cryptography import x509

from snakeway.acme import crypto
from snakeway.acme.ari import RenewalInfo
from snakeway.acme.backend import AccountInfo, ChallengeTask, OrderHandle
from snakeway.clock import WallClock
from snakeway.config.model import Challenge
from snakeway.errors import IssuanceError
from snakeway.testing._fakeari import AriPolicy, NameRecord
from snakeway.testing._fakebook import CABook
from snakeway.testing._fakedesk import NeverValid as NeverValid
from snakeway.testing._fakedesk import OrderDesk
from snakeway.testing._fakedesk import Validator as Validator
from snakeway.testing._fakefaults import ACME_ERROR, PlannedFailure
from snakeway.testing._fakelimits import CALimits, CALimitSettings
from snakeway.testing._fakeorders import RequestGate, unwrap

DEFAULT_LIFETIME: Final = timedelta(days=90)
BASE_URL: Final = "https://fake-ca.test/acme"


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
        self._desk = OrderDesk(self._book)  # the orders between requests, and the root that signs
        self.orders = self._desk.orders
        self.replaces = self._desk.replaces
        self.issued = self._desk.issued
        self.accounts = self._book.accounts
        self.records: dict[str, NameRecord] = self._book.records
        self.limits: CALimits | None = self._book.limits  # with their counters (``peak``, ``used``)
        self.answered = self._desk.answered
        self.planned: list[PlannedFailure] = []
        self._ids = itertools.count(1)
        self._account: tuple[AccountInfo, str] | None = None  # the current one, as the real backend's session

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
        return self._desk.root_pem

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
        return self._desk.sign(domains, key_pem, not_before=not_before, lifetime=self.lifetime)

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
        order = self._desk.open(account.uri, domains, replaces, self.clock.now(),
                                lambda: f"{self.base_url}/order/{next(self._ids)}")
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
        order = self._desk.find(order_url, account.uri)
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
        return self._desk.hand_out(unwrap(order), kind, thumbprint, lambda: f"{self.base_url}/chall/{next(self._ids)}")

    async def answer(self, task: ChallengeTask) -> None:
        """Record that ``task`` is ready; it is validated in :meth:`wait_authorizations`.

        Raises:
            IssuanceError: Unknown challenge, unreachable, or a planned failure.
        """
        self.calls.append("answer")
        self._require()
        await self._enter("answer")
        self._desk.answer(task)

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
        await self._desk.validate(unwrap(order), deadline, validator=self.validator, never_valid=self.never_valid,
                                  invalid_problem=self.invalid_problem, clock=self.clock)

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
        return self._desk.finalize(unwrap(order), csr_pem, clock=self.clock, lifetime=self.lifetime)

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
