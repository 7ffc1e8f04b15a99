"""The fake CA's order desk: an order's state machine from newOrder to its chain, and the root that signs.

:class:`OrderDesk` is the part of :class:`~snakeway.testing.FakeCA` that keeps the orders between
requests; :class:`~snakeway.testing.FakeCA` is the request shell around it (the calls it records, the
outage, latency and planned faults, the current account). An order moves
``pending -> ready -> valid`` (or ``invalid``, for good, when a validation fails):

* :meth:`~OrderDesk.open` accepts it per the :class:`~snakeway.testing._fakebook.CABook`
  (``replaces`` and the rate limits) and makes one pending authorization per name;
* :meth:`~OrderDesk.hand_out` gives the challenges still to answer (the same tokens when asked again),
  and :meth:`~OrderDesk.answer` takes an answered one;
* :meth:`~OrderDesk.validate` checks the answered challenges (``validator``, names that never
  validate); an authorization whose challenge was never answered fails at once;
* :meth:`~OrderDesk.finalize` checks the CSR against the order and signs the leaf with the desk's
  ECDSA P-256 root; a ``valid`` order gives its chain again, so a resumed order never issues twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from snakeway.acme import crypto
from snakeway.acme.backend import ChallengeTask
from snakeway.clock import WallClock
from snakeway.config.model import Challenge
from snakeway.errors import IssuanceError
from snakeway.testing._fakebook import CABook
from snakeway.testing._fakecrypto import make_root, sign_leaf
from snakeway.testing._fakefaults import ACME_ERROR
from snakeway.testing._fakeorders import Authorization, Order, validate

Validator = Callable[[ChallengeTask], Awaitable[bool]]
# Names whose authorizations always fail: a set of names, or a predicate.
NeverValid = Collection[str] | Callable[[str], bool]


@final
class OrderDesk:
    """The orders of a fake CA, their challenges, and the root that signs their certificates.

    Args:
        book: The CA's books, told of every order accepted, validation failed and certificate issued.

    Attributes:
        orders: The domains of each order opened.
        replaces: The ``replaces`` of each order opened (None for an order without).
        issued: Serial numbers of the certificates issued, in order.
        answered: The challenges answered, in order.
    """

    def __init__(self, book: CABook) -> None:
        self._book = book
        self.orders: list[tuple[str, ...]] = []
        self.replaces: list[str | None] = []
        self.issued: list[int] = []
        self.answered: list[ChallengeTask] = []
        self._answered: set[str] = set()  # their urls
        self._by_url: dict[str, Order] = {}
        self._challenges: dict[str, ChallengeTask] = {}  # by url
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        self._root = make_root(self._root_key)

    @property
    def root_pem(self) -> bytes:
        """The root certificate (PEM) every chain from this desk verifies to."""
        return self._root.public_bytes(serialization.Encoding.PEM)

    def sign(self, domains: Sequence[str], key_pem: bytes, *, not_before: datetime, lifetime: timedelta) -> str:
        """A chain for ``domains`` and ``key_pem`` signed without an order (known to the book, counted nowhere)."""
        public = crypto.load_private_key(key_pem).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        names = tuple(dict.fromkeys(domains))
        leaf = sign_leaf(self._root_key, self._root, public, names, not_before=not_before, lifetime=lifetime)
        chain = self._chain(leaf)
        self._book.certificate_issued(chain, names, leaf, replaces=None, order_url="", now=not_before, count=False)
        return chain

    def open(
        self, account_uri: str, domains: Sequence[str], replaces: str | None, now: datetime, new_url: Callable[[], str]
    ) -> Order:
        """A new pending order for ``domains`` of ``account_uri``, at a URL from ``new_url`` once accepted.

        Raises:
            IssuanceError: Refused by the book: ``replaces`` unknown or already replaced, or a rate limit.
        """
        names = tuple(dict.fromkeys(domains))
        self._book.accept_order(account_uri, names, replaces, now)
        order = Order(url=new_url(), account_uri=account_uri, domains=names,
                      authorizations=[Authorization(domain) for domain in names], replaces=replaces)
        self._by_url[order.url] = order
        self.orders.append(names)
        self.replaces.append(replaces)
        return order

    def find(self, url: str, account_uri: str) -> Order:
        """The order of ``account_uri`` at ``url``.

        Raises:
            IssuanceError: No such order of this account (404).
        """
        order = self._by_url.get(url)
        if order is None or order.account_uri != account_uri:
            raise IssuanceError(f"no such order {url}", status=404, problem_type=ACME_ERROR + "malformed")
        return order

    def hand_out(
        self, order: Order, kind: Challenge, thumbprint: str, new_url: Callable[[], str]
    ) -> list[ChallengeTask]:
        """The ``kind`` challenges of ``order`` still to answer (see :meth:`Order.tasks`), known by their URLs."""
        tasks = order.tasks(kind, thumbprint, new_url)
        for task in tasks:
            self._challenges[task.url] = task
        return tasks

    def answer(self, task: ChallengeTask) -> None:
        """Take ``task`` as answered.

        Raises:
            IssuanceError: No such challenge (404).
        """
        if task.url not in self._challenges:
            raise IssuanceError(f"no such challenge {task.url}", status=404, problem_type=ACME_ERROR + "malformed")
        self.answered.append(task)
        self._answered.add(task.url)

    async def validate(
        self, order: Order, deadline: float, *, validator: Validator | None, never_valid: NeverValid,
        invalid_problem: str, clock: WallClock,
    ) -> None:
        """Validate ``order``'s pending authorizations; all valid makes it ready.

        Raises:
            IssuanceError: An authorization failed (the order becomes invalid), was never answered, or
                ``validator`` did not answer by ``deadline``.
        """
        for authz in order.authorizations:
            if authz.status == "pending":
                never = never_valid(authz.domain) if callable(never_valid) else authz.domain in never_valid
                failure = await validate(authz, self._answered, validator if not never else None, deadline,
                                         never_valid=invalid_problem if never else None)
                if failure:
                    order.status, order.error = "invalid", f"authorization for {authz.domain} failed"
                    self._book.validation_failed(authz.domain, clock.now())
            if authz.status != "valid":
                raise IssuanceError(f"authorization for {authz.domain} is {authz.status}: {authz.error}",
                                    problem_type=authz.problem)
        if order.status == "pending":
            order.status = "ready"

    def finalize(self, order: Order, csr_pem: bytes, *, clock: WallClock, lifetime: timedelta) -> str:
        """Issue ``order``'s certificate for ``csr_pem`` (leaf and root, PEM); a valid order's chain again.

        Raises:
            IssuanceError: The order is not ready (403 orderNotReady) or invalid, or the CSR is bad
                (400 badCSR).
        """
        if order.status == "valid" and order.chain_pem is not None:
            return order.chain_pem
        if order.status == "invalid":
            raise IssuanceError(f"order {order.url} is invalid: {order.error}")
        if order.status != "ready":
            raise IssuanceError(
                f"order {order.url} is {order.status}, not ready",
                status=403, problem_type=ACME_ERROR + "orderNotReady",
            )
        csr = x509.load_pem_x509_csr(csr_pem)
        names = crypto.csr_names(csr_pem)
        if not csr.is_signature_valid or set(names) != set(order.domains):
            raise IssuanceError(
                f"CSR for {names} does not match order {order.url} for {order.domains}",
                status=400, problem_type=ACME_ERROR + "badCSR",
            )
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise IssuanceError(f"unsupported CSR key {type(public).__name__}", status=400,
                                problem_type=ACME_ERROR + "badCSR")
        not_before = clock.now().astimezone(UTC).replace(microsecond=0)
        leaf = sign_leaf(self._root_key, self._root, public, names, not_before=not_before, lifetime=lifetime)
        chain = self._chain(leaf)
        self._book.certificate_issued(chain, order.domains, leaf, replaces=order.replaces, order_url=order.url,
                                      now=clock.now())
        self.issued.append(leaf.serial_number)
        order.status, order.chain_pem = "valid", chain
        return chain

    def _chain(self, leaf: x509.Certificate) -> str:
        return (leaf.public_bytes(serialization.Encoding.PEM) + self.root_pem).decode("ascii")
