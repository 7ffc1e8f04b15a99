"""Renewing one certificate: the shell that carries out :func:`snakeway.acme.decide.decide`.

Theory of operation
-------------------
The CertManager keeps one task per certificate and calls :meth:`Renewer.check` whenever the last answer's
time comes. A check gathers the facts (stored certificate, renewal state from the store, or the
certificate waiting to be saved), asks :func:`~snakeway.acme.decide.decide`, and does what it says:

* **Wait**: return the time; the task sleeps until then.
* **Poll ARI** in the ARI lane (:data:`ARI_CONCURRENCY` at once, never behind an order), under the
  certificate's lock so one worker asks for all of them, and keep the answer in the store; then decide
  again on it.
* **Order** in the order lane (:class:`~snakeway.acme.lanes.OrderLane`): under the certificate's lock,
  in this order, read the state again and decide again (another worker may have just renewed it), spend
  one order from the rate-limit budget (refused: wait until it allows), order
  (:class:`~snakeway.acme.issuing.Issuer`), write the state.
* **Save again** a certificate the store refused after issuance (:class:`~snakeway.acme.setbacks.Unsaved`).
  (Serving it builds a TLS context from temporary files: if even those cannot be written, it is served at
  the first check after the store has taken it.)

Another process can take a certificate over while this one works on it, when this one's lock is a lease
that ran out during a pause (see "Fences" in :mod:`snakeway.acme.coordination`):

* **A lost lock** (:class:`~snakeway.acme.coordination.LockLost`) cancels the work under it. The attempt is
  recorded as failed in the renewal state *under the lost lock's fence*: if nobody took the certificate
  over (the store was away until the lease ran out), the failure is kept and backs off as any other; if
  another process did, the store refuses the write and its state stands. The certificate is checked again
  soon (:data:`LOCKED_RECHECK_SECONDS`), and then follows the other process's work.
* **A refused save** (:class:`~snakeway.acme.store.FencedOut`) of a newly issued certificate means another
  process has taken the certificate over and has, or will have, saved its own: this one is dropped (not
  kept in memory to be saved again, which would overwrite the newer one), and the store's is served.

**The store away** (a Redis that cannot be reached): a check that cannot read or write the store changes
nothing (no order, the served certificate stays) and is tried again shortly
(:class:`~snakeway.acme.setbacks.StoreOutage`).

A failed order is recorded as a :class:`~snakeway.acme.setbacks.Failure`, which sets the back-off.

**Several CAs** (``tls_automation.acme`` as a list): each has its own account, order lane and budget
(:class:`~snakeway.acme.cas.Ca`); a certificate's renewal state names the CA its next attempt goes to,
and after ``issuer_fallback_after_failures`` failures in a row there (or one permanent failure) the next
CA is tried, at once (:mod:`snakeway.acme.issuers`). ARI is asked of the CA that issued the certificate
(``RenewalState.issued_by``).

The budget (:class:`snakeway.acme.ledger.SharedBudget`) is one ledger per CA account in the store, so
every worker spends from the same budget: a new order with its certificate reserved before ordering, a
failed validation per name when the CA could not validate, the certificate settled when it is issued, and
the reservation released when the order ends without one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from datetime import datetime, timedelta

import trio

from snakeway.acme import crypto, issuers
from snakeway.acme.backend import AcmeBackend
from snakeway.acme.cas import Ca, ca_for, open_cas
from snakeway.acme.coordination import Coordinator, LockLost, fenced
from snakeway.acme.decide import CA_ASKED, NOT_DUE, Order, PollAri, SaveAgain, Stored, Wait, decide
from snakeway.acme.hooks import HookRunner
from snakeway.acme.issuing import Issuer
from snakeway.acme.managed import ManagedCert, day_text
from snakeway.acme.schedule import RenewalState, next_check
from snakeway.acme.served import ServedCerts
from snakeway.acme.setbacks import MAX_NAMES as MAX_NAMES
from snakeway.acme.setbacks import STORE_RETRY_JITTER as STORE_RETRY_JITTER
from snakeway.acme.setbacks import STORE_RETRY_SECONDS as STORE_RETRY_SECONDS
from snakeway.acme.setbacks import Failure, StoreOutage, Unsaved, fall_back
from snakeway.acme.store import CertBundle, CertStore, FencedOut, StoreError
from snakeway.clock import WallClock
from snakeway.config.model import TlsAutomation
from snakeway.errors import IssuanceError
from snakeway.tls.certinfo import CertificateError

logger = logging.getLogger("snakeway.acme.manager")

# One issuance, from new order to saved certificate, must finish within this.
ISSUANCE_TIMEOUT = 300.0
# When another worker holds a certificate's lock, look again this soon.
LOCKED_RECHECK_SECONDS = 30.0
# ARI polls at the CA at once (their own lane: an order never waits for them).
ARI_CONCURRENCY = 4


class Renewer:
    """Checks, orders and saves certificates for the CertManager; publishes them to the cert map.

    Args:
      settings: ``server.tls_automation``.
      store, backend, clock, rng, coordinator: as the CertManager's.
      served: publishes to the cert map.
      issuer: runs the orders at the first CA (``settings.acme``).
      fallback: run them at the other CAs (``settings.fallback_acme``), in that order.
      hooks: runs ``on_renewed`` after each certificate saved (None: no hooks).
    """

    def __init__(
        self,
        *,
        settings: TlsAutomation,
        store: CertStore,
        backend: AcmeBackend,
        served: ServedCerts,
        clock: WallClock,
        rng: random.Random,
        coordinator: Coordinator,
        issuer: Issuer,
        attempts: dict[str, int] | None = None,
        fallback: tuple[Issuer, ...] = (),
        hooks: HookRunner | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.served = served
        self.clock = clock
        self.rng = rng
        self.coordinator = coordinator
        self.issuer = issuer
        self.hooks = hooks  # on_renewed, run once a new certificate is saved
        # Orders carried out, by outcome ("issued", "failed"): what the admin API's metrics count.
        self.attempts: dict[str, int] = attempts if attempts is not None else {}
        self.cas = open_cas((issuer, *fallback), store=store, coordinator=coordinator, clock=clock)
        self.lane, self.budget = self.cas[0].lane, self.cas[0].budget
        self._ari_lane = trio.CapacityLimiter(ARI_CONCURRENCY)
        self._no_ari: set[str] = set()  # the directory URLs of the CAs that have shown they have no ARI
        self._unsaved = Unsaved()  # issued certificates the store refused: served, saved again later
        self._store = StoreOutage()  # said once for every certificate, until the store answers again

    def periodic(self) -> datetime:
        """The next periodic check: ``check_interval_seconds`` from now, jittered."""
        return next_check(self.clock.now(), self.settings.check_interval_seconds, jitter=self.rng.random())

    # -- one check -------------------------------------------------------

    async def check(self, cert: ManagedCert, *, forced: bool, renew: bool = False) -> datetime:
        """Do what ``cert`` needs now; returns when to check it next.

        Args:
          forced: a "retry now": skip the failure back-off (never a CA's Retry-After nor the budget).
          renew: a forced renewal: order even when the certificate is not due (as ``forced`` otherwise).
        """
        try:
            try:
                return await self._check(cert, forced, renew)
            except LockLost as lost:  # in _order, _poll_ari or _save_again: the work under the lock was cancelled
                return await self._lost(cert, lost)
        except FencedOut:  # a write under a lock another process has taken over since (the store logged it)
            return self._soon()
        except StoreError as exc:  # nothing changes; check again shortly
            return self._store.away(exc, self.clock.now(), self.rng.random())

    async def _check(self, cert: ManagedCert, forced: bool, renew: bool = False) -> datetime:
        periodic = self.periodic()
        for _ in range(3):  # at most: an ARI poll, then a decision on its answer
            state, bundle = await self._facts(cert)
            action = self._decide(cert, state, bundle, periodic, forced, renew)
            if isinstance(action, Wait):
                if bundle is not None and action.why == NOT_DUE:
                    await self.served.rebuild_if_unservable(cert, bundle)
                elif forced and action.why == CA_ASKED:
                    logger.warning("certificate %s: the CA asked to wait until %s; not retrying sooner",
                                   cert.name, action.until.isoformat(timespec="seconds"))
                return action.until
            if isinstance(action, SaveAgain):
                return await self._save_again(cert)
            if isinstance(action, Order):
                async with self.cas[ca_for(self.cas, state)].lane.turn(action.urgency):
                    return await self._order(cert, bundle, forced, renew)
            assert isinstance(action, PollAri) and bundle is not None
            if not await self._poll_ari(cert, bundle):
                return min(periodic, self.clock.now() + timedelta(seconds=LOCKED_RECHECK_SECONDS))
        return periodic

    def _soon(self) -> datetime:
        """When to look again at a certificate another process holds (or has just taken over)."""
        return min(self.periodic(), self.clock.now() + timedelta(seconds=LOCKED_RECHECK_SECONDS))

    async def _lost(self, cert: ManagedCert, lost: LockLost) -> datetime:
        """Record the attempt a lost lock cancelled as failed, under the lost fence; check again soon.

        If another process has taken the certificate over since, the store refuses the write (its state stands).
        A lost lock nested in the certificate's (the account's) is the certificate's failure too, but its fence
        is not the certificate's: nothing is recorded then.
        """
        if lost.fence.name == cert.name:
            with fenced(lost.fence):
                state = await self.store.load_state(cert.name) or RenewalState(name=cert.name)
                await self._save_state(state.failed(self.clock.now(), str(lost), None, self.rng.random()))
        return self._soon()

    async def _facts(self, cert: ManagedCert) -> tuple[RenewalState, CertBundle | None]:
        unsaved = self._unsaved.get(cert.cert_id)
        if unsaved is not None:
            return unsaved[1], unsaved[0]
        state = await self.store.load_state(cert.name) or RenewalState(name=cert.name)
        bundle = await self.store.load(cert.name)
        self._store.back()
        return state, bundle

    def _decide(
        self, cert: ManagedCert, state: RenewalState, bundle: CertBundle | None, periodic: datetime, forced: bool,
        renew: bool = False,
    ) -> Wait | PollAri | SaveAgain | Order:
        days = self.settings.renew_within_days
        return decide(
            now=self.clock.now(), state=state, stored=stored(cert, bundle), periodic=periodic,
            ari=self._issued_by(state).url not in self._no_ari,
            forced=forced, renew_within=timedelta(days=days) if days is not None else None,
            unsaved=cert.cert_id in self._unsaved, renew=renew,
        )

    async def _order(self, cert: ManagedCert, bundle: CertBundle | None, forced: bool, renew: bool = False) -> datetime:
        """Lock, read the state again, spend from the budget, order, write the state: in that order."""
        now = self.clock.now()
        async with self.coordinator.lock(cert.name) as mine:
            if not mine:
                # Another process sharing the store is ordering it (or asking ARI); the result comes through it.
                # Routine in a cluster (every other node, at each of its checks while the order runs): debug only.
                logger.debug("certificate for %s: another process sharing the store is ordering it", cert.name)
                return min(self.periodic(), now + timedelta(seconds=LOCKED_RECHECK_SECONDS))
            state, fresh = await self._facts(cert)
            if fresh is not None and bundle is not None and fresh.serial != bundle.serial:
                await self.served.publish(cert, fresh)
                logger.info("certificate for %s: another process just renewed it; picked up from the store", cert.name)
                renew = False  # the renewal asked for has just happened
            action = self._decide(cert, state, fresh, self.periodic(), forced, renew)
            if not isinstance(action, Order):  # waiting now, or ARI first: check again then
                return action.until if isinstance(action, Wait) else self.clock.now()
            ca = self.cas[ca_for(self.cas, state)]
            refused = await ca.budget.spend_order(cert.domains, renewal=action.renewal)
            if refused is not None:
                logger.warning("certificate for %s: waiting for the CA's rate limits until %s (%s)",
                               cert.name, refused.isoformat(timespec="seconds"), ca.url)
                return refused
            try:
                return await self._issue(cert, state, fresh, action.renewal, ca)
            finally:
                await ca.budget.landed(cert.domains)  # shielded, bounded, never raises

    async def _issue(
        self, cert: ManagedCert, state: RenewalState, current: CertBundle | None, renewal: bool, ca: Ca
    ) -> datetime:
        started = trio.current_time()
        logger.info("certificate for %s: ordering from %s", ", ".join(cert.domains), ca.url)
        replaces = crypto.ari_cert_id(current.cert_pem) if current and renewal and ca.url not in self._no_ari \
            else None
        try:
            with trio.fail_after(ISSUANCE_TIMEOUT):
                bundle = await ca.issuer.issue(
                    cert, now=self.clock.now(), deadline=started + ISSUANCE_TIMEOUT, replaces=replaces,
                    serving=current.serial if current else None,
                )
        except (IssuanceError, trio.TooSlowError) as exc:
            return await self._failed(cert, state, exc, current.not_after if current else None, ca)
        self.attempts["issued"] = self.attempts.get("issued", 0) + 1
        await ca.budget.issued(cert.domains, renewal=renewal)
        self.served.saving(cert.cert_id, bundle.serial)
        state = dataclasses.replace(state, issued_by=ca.url if ca is not self.cas[0] else None)
        wake, kept = await self._keep(cert, bundle, state)
        if not kept:
            return wake
        try:
            await self.served.publish(cert, bundle)  # served now, saved or not
        except (CertificateError, OSError) as exc:  # e.g. no file can be written for its context
            logger.error("certificate for %s: issued, but it cannot be served yet (%s); trying again at the "
                         "next check once it is saved", cert.name, exc)
            return min(wake, self.periodic())
        logger.info(
            "certificate for %s issued by %s in %.2fs, valid until %s; serving it now",
            ", ".join(cert.domains), bundle.issuer or "the CA", trio.current_time() - started,
            day_text(bundle.not_after),
        )
        return wake

    async def _keep(self, cert: ManagedCert, bundle: CertBundle, state: RenewalState) -> tuple[datetime, bool]:
        """Save a newly issued ``bundle``; if the store refuses, serve it from memory and retry the save.

        Returns:
            When to check again, and whether ``bundle`` is kept (False: dropped, another process took over).
        """
        now = self.clock.now()
        try:
            await self.store.save(bundle)
        except FencedOut:  # saving it later would overwrite the newer holder's certificate
            self._unsaved.drop(cert.cert_id)
            logger.warning("certificate for %s: the new certificate (serial %s) is dropped: another process has "
                           "taken the certificate over; serving the store's", cert.name, bundle.serial)
            current = await self.store.load(cert.name)
            if current is not None:
                await self.served.rebuild_if_unservable(cert, current)
            return self._soon(), False
        except StoreError as exc:
            state = state.failed(now, f"the new certificate could not be saved: {exc}", None, self.rng.random())
            self._unsaved.keep(cert.cert_id, bundle, state)
            assert state.next_attempt is not None
            logger.error(
                "certificate for %s: issued but not saved (%s); serving it from memory, saving again at %s",
                cert.name, exc, state.next_attempt.isoformat(timespec="seconds"),
            )
            return state.next_attempt, True
        if self._unsaved.drop(cert.cert_id):
            logger.info("certificate for %s: saved to the store now", cert.name)
        with contextlib.suppress(StoreError):  # a record left behind is dropped when it gives this one again
            await self.store.delete_order(cert.name)
        await self._save_state(state.succeeded(now))
        if self.hooks is not None:
            self.hooks.renewed(bundle)  # in the background: never waits for the hook
        return now, True  # ask ARI about the new certificate at once (when the CA has ARI)

    async def _save_again(self, cert: ManagedCert) -> datetime:
        unsaved = self._unsaved.get(cert.cert_id)
        assert unsaved is not None  # decide() says SaveAgain only for an unsaved certificate
        bundle, state = unsaved
        async with self.coordinator.lock(cert.name) as mine:
            if not mine:
                return self.clock.now() + timedelta(seconds=LOCKED_RECHECK_SECONDS)
            stored = await self.store.load(cert.name)
            if stored is not None and stored.not_before > bundle.not_before:
                # Another process renewed it meanwhile (it took the work over after this one lost its lock, say):
                # saving the older certificate now would replace the newer one.
                self._unsaved.drop(cert.cert_id)
                logger.info("certificate for %s: another process has saved a newer certificate meanwhile; dropping "
                            "the unsaved one (serial %s) and serving the store's", cert.name, bundle.serial)
                await self.served.rebuild_if_unservable(cert, stored)
                return self.clock.now()  # decide again on the store's
            wake, _ = await self._keep(cert, bundle, state)
            return wake

    async def _failed(
        self, cert: ManagedCert, state: RenewalState, exc: Exception, expires: datetime | None, ca: Ca
    ) -> datetime:
        now = self.clock.now()
        self.attempts["failed"] = self.attempts.get("failed", 0) + 1
        failure = Failure.of(exc, cert.domains)
        if failure.stage == "validation":
            await ca.budget.failed_validation(cert.domains)
        failed = failure.recorded(state, now, self.rng.random(), expires)
        state = fall_back(failed, self.cas.index(ca), [each.url for each in self.cas],
                          self.settings.issuer_fallback_after_failures, now)
        await self._save_state(state)
        assert state.next_attempt is not None
        serving = "the current certificate stays in service" if self.served.serves(cert.cert_id) \
            else "no certificate is served for it yet"
        what = "failed (needs attention)" if failure.permanent and state is failed else "issuance failed"
        logger.error(
            "certificate for %s: %s (attempt %d): %s; %s; next attempt at %s",
            ", ".join(cert.domains), what, failed.failures, failure.reason, serving,
            state.next_attempt.isoformat(timespec="seconds"),
        )
        if state is not failed:
            logger.warning("certificate for %s: %d failed attempt(s) in a row at %s; ordering from %s next",
                           cert.name, failed.failures, ca.url, self.cas[ca_for(self.cas, state)].url)
        return state.next_attempt

    def _issued_by(self, state: RenewalState) -> Ca:
        """The CA that issued the certificate ``state`` is about (the first when it is no longer configured)."""
        return self.cas[issuers.issuer_index([ca.url for ca in self.cas], state.issued_by)]

    async def _save_state(self, state: RenewalState) -> None:
        try:
            await self.store.save_state(state)
        except FencedOut:  # another process has taken the certificate over: its state stands (the store said so)
            pass
        except StoreError as exc:  # the in-memory answer still decides this task's next wake-up
            logger.error("certificate %s: could not save its renewal state: %s", state.name, exc)

    # -- ARI ---------------------------------------------------------------

    async def _poll_ari(self, cert: ManagedCert, bundle: CertBundle) -> bool:
        """Ask the CA's ARI about ``bundle`` (one worker for all); False if another worker holds the lock."""
        async with self._ari_lane, self.coordinator.lock(cert.name) as mine:
            if not mine:
                return False
            state, fresh = await self._facts(cert)
            if fresh is None or fresh.serial != bundle.serial:
                return True  # changed meanwhile: decide again
            if state.ari_serial == bundle.serial and state.ari_next_poll and self.clock.now() < state.ari_next_poll:
                return True  # another worker asked meanwhile
            now, jitter = self.clock.now(), self.rng.random()
            ca = self._issued_by(state)
            answered = await ask_ari(ca.issuer, ca.issuer.backend, cert, bundle, state, now, jitter)
            if answered is None:
                self._no_ari.add(ca.url)  # the CA has no ARI
                return True
            await self._save_state(answered)
            self._unsaved.restate(cert.cert_id, answered)
            return True


def stored(cert: ManagedCert, bundle: CertBundle | None) -> Stored | None:
    """What :func:`~snakeway.acme.decide.decide` needs to know of ``bundle``."""
    if bundle is None:
        return None
    return Stored(bundle.not_before, bundle.not_after, bundle.serial, set(cert.domains) <= set(bundle.domains))


async def ask_ari(
    issuer: Issuer, backend: AcmeBackend, cert: ManagedCert, bundle: CertBundle, state: RenewalState,
    now: datetime, jitter: float,
) -> RenewalState | None:
    """``state`` after asking the CA's ARI about ``bundle``; None when the CA offers no ARI.

    A failed or malformed answer is logged and kept as such in the state (the lifetime rule applies, and
    the CA is asked again after the default interval); an ``explanationURL`` is logged.
    """
    try:
        await issuer.ensure_account()
        info = await backend.renewal_info(bundle.cert_pem)
    except IssuanceError as exc:
        logger.warning("certificate for %s: renewal information (ARI) failed: %s; using the lifetime rule",
                       cert.name, exc)
        return state.ari_failed(now, str(exc), bundle.serial)
    if info is None:
        return None
    if info.explanation_url:
        logger.info("certificate for %s: the CA explains its renewal window at %s", cert.name, info.explanation_url)
    return state.with_ari(info, bundle.serial, now, jitter)
