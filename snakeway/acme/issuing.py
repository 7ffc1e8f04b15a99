"""One issuance at the CA: account, order, challenges, finalize, download (a thin trio shell).

Theory of operation
-------------------
:class:`Issuer` runs the five steps of RFC 8555 for one certificate and returns the new bundle; it
decides nothing about *whether* to order (that is :mod:`snakeway.acme.decide`) and saves nothing but the
order in flight. Around the steps:

* **The profile** (``acme.profile``) must be one the CA's directory offers: otherwise no order goes
  to it (:func:`snakeway.acme.issuers.profile_refusal`; a permanent failure, so with several CAs the
  next one is tried at once), and the log says so in one line, once: at start-up
  (:meth:`Issuer.check_profile`) or at the first order.
* **The account** is registered once, under the coordinator's account lock, so several workers share
  one account (and one rate-limit budget); each order follows the stored account, and one the CA lost or
  deactivated is registered anew (:mod:`snakeway.acme.account`).
* **replaces.** A renewal's order names the certificate it replaces (its ARI CertID), so a CA can
  exempt it from its limits. A CA that answers ``alreadyReplaced`` (another order already replaced
  it) or ``malformed`` (it does not know that certificate) gets the order again without it.
* **Transient failures** (a 5xx without ``Retry-After``, a lost connection) of one request are tried
  again a few times within the attempt (:data:`TRANSIENT_PAUSES`), so a CA that fails one request in
  three still issues in one attempt instead of spending back-off steps and new orders.
* **Challenges** are provisioned before they are answered (locally, and through the coordinator for
  the other workers), and removed afterwards, whatever happened.
* **Resuming.** Right before finalize, the order's URL and the certificate key are kept in the store
  (an :class:`~snakeway.acme.store.OrderRecord`). If anything fails from there on (a timeout, a lost
  connection, a crash), the next attempt picks that order up again and downloads its certificate
  instead of ordering a new one, which would spend one of the CA's duplicate certificates for nothing.
  The record is dropped once the certificate is saved, or when the CA no longer has a usable order.
  An order at another CA (one a certificate fell back from, see :mod:`snakeway.acme.issuers`) is
  not resumed here: its URL is not at this CA's account's origin, and asking that CA again (down,
  perhaps) with this CA's account would only fail.

Every failure is an :class:`~snakeway.errors.IssuanceError` whose ``stage`` says which step failed:
``"order"``, ``"validation"`` (the CA could not validate a name: the budget counts those per name) or
``"finalize"``; what is permanent depends on it (:func:`snakeway.acme.schedule.is_permanent`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import trio

from snakeway.acme import crypto, issuers
from snakeway.acme.account import AccountKeeper, account_gone
from snakeway.acme.backend import AcmeBackend, ChallengeTask, OrderHandle
from snakeway.acme.challenges import Http01Tokens, http01_key
from snakeway.acme.coordination import Coordinator
from snakeway.acme.managed import ManagedCert
from snakeway.acme.store import CertBundle, CertStore, OrderRecord, StoreError
from snakeway.acme.tlsalpn import TlsAlpnChallenges, tls_alpn_key
from snakeway.config.model import AcmeSettings, Challenge
from snakeway.errors import IssuanceError
from snakeway.tls.sources import Offload

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Pauses between the tries of one request the CA failed transiently (a 5xx, a lost connection): one
# faulty answer in three must not cost the whole attempt and its back-off.
TRANSIENT_PAUSES = (1.0, 2.0, 4.0, 8.0)
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"
# A stored order older than this is not resumed (CAs let orders expire after about a week).
RESUME_WITHIN = timedelta(days=6)
# What a CA answers to a ``replaces`` it will not take: already replaced by another order, or not a
# certificate it knows (issued by another CA, or to another account). The order goes again without it.
REFUSED_REPLACES = frozenset({
    "urn:ietf:params:acme:error:alreadyReplaced", "urn:ietf:params:acme:error:malformed",
})


class Issuer:
    """Runs orders at one CA for the CertManager.

    Args:
      acme: ``tls_automation.acme``.
      store: where the account and orders in flight are kept.
      backend: the CA.
      coordinator: locks and shared challenges between processes sharing the store.
      http01, tlsalpn: the challenge answers served by this process.
      share_challenges: whether other processes (workers, other nodes) may receive the CA's validation connection.
      offload: runs CPU-bound work (keys, CSRs).
    """

    def __init__(
        self,
        *,
        acme: AcmeSettings,
        store: CertStore,
        backend: AcmeBackend,
        coordinator: Coordinator,
        http01: Http01Tokens,
        tlsalpn: TlsAlpnChallenges,
        share_challenges: bool,
        offload: Offload,
    ) -> None:
        self.acme = acme
        self.store = store
        self.backend = backend
        self.coordinator = coordinator
        self.http01 = http01
        self.tlsalpn = tlsalpn
        self.share_challenges = share_challenges
        self.offload = offload
        self._profile_said = False  # the CA lacks the profile: said once
        self.account = AccountKeeper(acme=acme, store=store, backend=backend, coordinator=coordinator)

    async def issue(
        self, cert: ManagedCert, *, now: datetime, deadline: float, replaces: str | None, serving: str | None = None
    ) -> CertBundle:
        """Obtain a certificate for ``cert``: resume an order in flight, or order anew.

        An account the CA no longer knows, or has deactivated, is registered again with a new key and the
        order tried once more (:mod:`snakeway.acme.account`).

        Args:
          now: wall time, for the order record.
          deadline: absolute trio time by which the CA must have answered.
          replaces: the ARI CertID of the certificate this one renews, or None.
          serving: the serial of the stored certificate: an order in flight that gives it again is done already
            (its record outlived it) and is not finished twice.
        """
        refusal = await _retrying(deadline, self._profile_refusal)  # before an account is made there for nothing
        if refusal is not None:
            raise IssuanceError(refusal, problem_type=issuers.PROFILE_UNAVAILABLE)
        try:
            return await self._issue(cert, now=now, deadline=deadline, replaces=replaces, serving=serving)
        except IssuanceError as exc:
            if not account_gone(exc):
                raise
            await self.account.replace_gone(exc)
        return await self._issue(cert, now=now, deadline=deadline, replaces=replaces, serving=serving)

    async def _issue(
        self, cert: ManagedCert, *, now: datetime, deadline: float, replaces: str | None, serving: str | None
    ) -> CertBundle:
        await _retrying(deadline, self.ensure_account)
        resumed = await self._resume(cert, now, deadline, serving)
        if resumed is not None:
            return resumed
        key_pem: bytes = await self.offload(crypto.generate_key, cert.key_type)
        csr_pem: bytes = await self.offload(crypto.make_csr, key_pem, cert.domains)
        with _stage("order"):
            order = await _retrying(deadline, lambda: self._new_order(cert, csr_pem, replaces))
            tasks = self.backend.challenges(order, cert.challenge)
        try:
            with _stage("order"):
                await self._provision(tasks)
                for task in tasks:
                    await _retrying(deadline, functools.partial(self.backend.answer, task))
            with _stage("validation"):
                await _retrying(deadline, lambda: self.backend.wait_authorizations(order, deadline))
        finally:
            await self._cleanup(tasks)
        await self.store.save_order(OrderRecord(cert.name, order.url, key_pem, now))
        with _stage("finalize"):
            chain_pem = await _retrying(deadline, lambda: self.backend.finalize(order, csr_pem, deadline))
        return CertBundle.from_pem(cert.name, cert.domains, chain_pem.encode("ascii"), key_pem)

    async def check_profile(self) -> None:
        """At start-up: say (once) if the CA does not offer the configured profile; never raises."""
        try:
            await self._profile_refusal()
        except IssuanceError as exc:  # the CA away: the first order will tell
            logger.debug("ACME CA %s: profiles not checked at start-up: %s", self.acme.directory_url, exc)

    async def _profile_refusal(self) -> str | None:
        """Why no order may go to this CA for want of the configured profile (logged once); None: it may.

        Raises:
            IssuanceError: The CA's directory could not be read.
        """
        if self.acme.profile is None:
            return None
        refusal = issuers.profile_refusal(self.acme.profile, await self.backend.offered_profiles())
        if refusal is not None and not self._profile_said:
            self._profile_said = True
            logger.error("ACME CA %s: %s; no certificate is ordered from it", self.acme.directory_url, refusal)
        return refusal

    async def _new_order(self, cert: ManagedCert, csr_pem: bytes, replaces: str | None) -> OrderHandle:
        try:
            return await self.backend.new_order(cert.domains, csr_pem, replaces=replaces)
        except IssuanceError as exc:
            if replaces is None or exc.problem_type not in REFUSED_REPLACES:
                raise
            logger.info("certificate for %s: the CA refused 'replaces' (%s); ordering without it", cert.name, exc)
            return await self.backend.new_order(cert.domains, csr_pem)

    async def _resume(
        self, cert: ManagedCert, now: datetime, deadline: float, serving: str | None
    ) -> CertBundle | None:
        """The certificate of an order interrupted after finalize, or None to order anew."""
        record = await self.store.load_order(cert.name)
        if record is None:
            return None
        account = await self.store.load_account(self.acme.directory_url)
        if account is not None and account.uri and _origin(account.uri) != _origin(record.order_url):
            return None  # an order at another CA: left to it (dropped once a certificate is saved)
        if now - record.created > RESUME_WITHIN:
            await self._drop_order(cert.name)
            return None
        try:
            order = await _retrying(deadline, lambda: self.backend.resume_order(record.order_url))
            csr_pem: bytes = await self.offload(crypto.make_csr, record.key_pem, cert.domains)
            chain_pem = await _retrying(deadline, lambda: self.backend.finalize(order, csr_pem, deadline))
            bundle = CertBundle.from_pem(cert.name, cert.domains, chain_pem.encode("ascii"), record.key_pem)
        except IssuanceError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise  # the CA is unwell: keep the order for the next attempt
            logger.info("certificate for %s: the order in flight cannot be finished (%s); ordering anew",
                        cert.name, exc)
            await self._drop_order(cert.name)
            return None
        except ValueError as exc:  # the order's certificate does not fit (names, key)
            logger.warning("certificate for %s: the order in flight gave an unusable certificate (%s); ordering anew",
                           cert.name, exc)
            await self._drop_order(cert.name)
            return None
        if bundle.serial == serving:  # the record outlived the certificate it gave: that one is stored already
            await self._drop_order(cert.name)
            return None
        logger.info("certificate for %s: finished the order interrupted after finalize (%s)",
                    cert.name, record.order_url)
        return bundle

    async def _drop_order(self, name: str) -> None:
        """Forget the order in flight of ``name``; a store that refuses leaves it, to be dropped next time."""
        try:
            await self.store.delete_order(name)
        except StoreError as exc:
            logger.warning("certificate for %s: could not drop the finished order's record: %s", name, exc)

    async def ensure_account(self) -> None:
        """Sign with the stored account (registered if the store has none); see :mod:`snakeway.acme.account`."""
        await self.account.ensure()

    async def _provision(self, tasks: list[ChallengeTask]) -> None:
        for task in tasks:
            if task.kind is Challenge.HTTP_01:
                self.http01.add(task.token, task.key_authorization)
            else:
                self.tlsalpn.add(task.domain, task.key_authorization)
            if self.share_challenges:  # other processes may get the CA's connection
                await self.coordinator.put_challenge(_challenge_key(task), task.key_authorization)

    async def _cleanup(self, tasks: list[ChallengeTask]) -> None:
        for task in tasks:
            if task.kind is Challenge.HTTP_01:
                self.http01.remove(task.token)
            else:
                self.tlsalpn.remove(task.domain)
            if self.share_challenges:
                with trio.CancelScope(shield=True):
                    await self.coordinator.delete_challenge(_challenge_key(task))


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _challenge_key(task: ChallengeTask) -> str:
    return http01_key(task.token) if task.kind is Challenge.HTTP_01 else tls_alpn_key(task.domain)


@contextlib.contextmanager
def _stage(stage: str) -> Iterator[None]:
    """Mark an :class:`IssuanceError` raised inside with the step that failed (a time-out is no verdict)."""
    try:
        yield
    except IssuanceError as exc:
        if exc.stage is None and not str(exc).startswith("timed out"):
            exc.stage = stage
        raise


async def _retrying(deadline: float, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, tried again after a short pause while the CA fails it transiently (see :func:`transient`)."""
    for pause in (*TRANSIENT_PAUSES, None):
        try:
            return await call()
        except IssuanceError as exc:
            if pause is None or not transient(exc) or trio.current_time() + pause >= deadline:
                raise
            logger.debug("the CA failed a request (%s); trying again in %.0f s", exc, pause)
            await trio.sleep(pause)
    raise AssertionError("unreachable")


def transient(exc: IssuanceError) -> bool:
    """Whether a failed request is worth repeating at once: a 5xx or a lost connection, no Retry-After.

    A CA that asked to wait (``Retry-After``, a 429) is not asked again before; a refusal (4xx) will
    not change; a time-out has used up the attempt's time already; a problem without a status was
    decided before any request (the CA's directory lacks the configured profile, or demands External
    Account Binding): nothing was lost on the way.
    """
    if exc.retry_after is not None or exc.problem_type == RATE_LIMITED or str(exc).startswith("timed out"):
        return False
    if exc.status is None:
        return exc.problem_type is None
    return exc.status >= 500
