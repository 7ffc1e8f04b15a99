"""An in-process ACME CA for tests: :class:`FakeCA` implements :class:`~snakeway.acme.backend.AcmeBackend`.

Theory of operation: Pebble tests the real wire protocol, but it cannot be told
"answer the next order with a 429 and Retry-After", cannot be made unreachable
on demand, and dates its certificates by the host's clock, so a renewal test
under ``autojump_clock`` would have to wait 60 real days. :class:`FakeCA` keeps
the same method names, signatures and error behaviour as
:class:`~snakeway.acme.backend.ClientV2Backend`, and adds:

* a real signing CA (an ECDSA P-256 root made with ``cryptography``) whose leaf
  certificates are valid from ``clock.now()`` for ``lifetime``. With a
  :class:`~snakeway.clock.TrioLinkedClock` the dates follow trio's ``MockClock``;
* scripted faults: :meth:`FakeCA.fail_next` (or :attr:`FakeCA.planned`, a queue
  of :class:`PlannedFailure`) makes the next calls of a step raise
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

import base64
import hashlib
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, final

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from snakeway.acme import crypto
from snakeway.acme.backend import AccountInfo, ChallengeTask, OrderHandle
from snakeway.clock import WallClock
from snakeway.config.model import Challenge, KeyType
from snakeway.errors import IssuanceError

DEFAULT_LIFETIME: Final = timedelta(days=90)
BASE_URL: Final = "https://fake-ca.test/acme"
ACME_ERROR: Final = "urn:ietf:params:acme:error:"

STEPS: Final = (
    "ensure_account",
    "new_order",
    "challenges",
    "answer",
    "wait_authorizations",
    "finalize",
    "renewal_info",
)
# The steps that send a request in the real backend: the ones an outage or a
# step-less planned failure can hit.
REQUEST_STEPS: Final = tuple(step for step in STEPS if step != "challenges")

_DEFAULT_PROBLEMS: Final = {
    429: ACME_ERROR + "rateLimited",
    500: ACME_ERROR + "serverInternal",
    400: ACME_ERROR + "malformed",
    403: ACME_ERROR + "unauthorized",
}
_ROOT_NOT_BEFORE: Final = datetime(2000, 1, 1, tzinfo=UTC)
_ROOT_NOT_AFTER: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # RFC 5280 "no expiry"
_CN_MAX: Final = 64  # ub-common-name
_JWK_CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

Validator = Callable[[ChallengeTask], Awaitable[bool]]


@final
@dataclass(frozen=True)
class PlannedFailure:
    """One scripted failure: the next call of ``step`` raises :class:`~snakeway.errors.IssuanceError`.

    Attributes:
        step: A name from :data:`STEPS`, or ``None`` for whichever request step
            comes next (never ``challenges``, which sends no request).
        status: The HTTP status the CA answers with; ``None`` for a network
            error without an answer ("connection reset by peer").
        retry_after: ``Retry-After`` as an aware datetime, or a ``timedelta`` from
            the clock's ``now()`` when the failure fires. Only for 429 and 503,
            the statuses for which the real backend reads the header.
        problem_type: The RFC 7807 type; ``None`` picks the usual one for
            ``status`` (429 rateLimited, 500 serverInternal, ...), if any.
        detail: The error message; a default names the status and the step.

    Raises:
        ValueError: On an unknown step, a status outside 400-599, a naive
            ``retry_after``, or ``retry_after`` with a status other than 429/503.
    """

    step: str | None = None
    status: int | None = 503
    retry_after: datetime | timedelta | None = None
    problem_type: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.step is not None and self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}; expected one of {', '.join(STEPS)} or None")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"a failure status must be 400-599 or None, got {self.status}")
        if self.retry_after is not None:
            if self.status not in (429, 503):
                raise ValueError(f"retry_after needs status 429 or 503 (the backend ignores it on {self.status})")
            if isinstance(self.retry_after, datetime) and self.retry_after.tzinfo is None:
                raise ValueError("retry_after must be timezone-aware")

    def matches(self, step: str) -> bool:
        return self.step == step or (self.step is None and step in REQUEST_STEPS)

    def error(self, step: str, now: datetime) -> IssuanceError:
        retry_after = self.retry_after
        if isinstance(retry_after, timedelta):
            retry_after = now + retry_after
        if retry_after is not None:
            retry_after = retry_after.astimezone(UTC)
        if self.status is None:
            message = self.detail or f"connection reset by peer ({step})"
            return IssuanceError(message)
        problem = self.problem_type or _DEFAULT_PROBLEMS.get(self.status)
        message = self.detail or f"HTTP {self.status} from the fake CA ({step})"
        return IssuanceError(message, status=self.status, retry_after=retry_after, problem_type=problem)


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
        planned: Queue of :class:`PlannedFailure`; a call takes the first that matches it.
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
        self._root = _make_root(self._root_key)

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
        """Make the next ``n`` calls of ``step`` fail (see :class:`PlannedFailure`).

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
        if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name not in _JWK_CURVES:
            raise ValueError(f"unsupported account key curve {public.curve.name}")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        known = self._accounts_by_key.get(der)
        if known is None:
            info = AccountInfo(key_pem=account_key_pem, uri=f"{BASE_URL}/acct/{next(self._ids)}")
            known = (info, _thumbprint(public))
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
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= _CN_MAX else [])
        root_ski = self._root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        is_rsa = isinstance(public, rsa.RSAPublicKey)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._root.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + self.lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=not subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=is_rsa), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
            .sign(self._root_key, hashes.SHA256())
        )


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


def _make_root(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "snakeway FakeCA"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"snakeway FakeCA root {secrets.token_hex(4)}"),
    ])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_ROOT_NOT_BEFORE)
        .not_valid_after(_ROOT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True, digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(
    *, digital_signature: bool = False, key_encipherment: bool = False, key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


def _thumbprint(public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the key authorization's suffix (RFC 8555 §8.1)."""
    jwk: dict[str, str]
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        numbers = public.public_numbers()
        x, y = _b64int(numbers.x, size), _b64int(numbers.y, size)
        jwk = {"crv": _JWK_CURVES[public.curve.name], "kty": "EC", "x": x, "y": y}
    else:
        rsa_numbers = public.public_numbers()
        jwk = {"e": _b64int(rsa_numbers.e), "kty": "RSA", "n": _b64int(rsa_numbers.n)}
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).decode("ascii").rstrip("=")


def _b64int(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).decode("ascii").rstrip("=")
