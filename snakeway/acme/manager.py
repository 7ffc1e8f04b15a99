"""The CertManager: keeps every ACME-managed certificate present and fresh.

Theory of operation
-------------------
``run`` is started with ``nursery.start``. Before it reports ``started()`` it loads every stored
certificate into the cert map, so the first handshake after start-up already has it. Then one task per
certificate loops: :meth:`snakeway.acme.renewer.Renewer.check` does what the certificate needs now
(wait, ask the CA's ARI, order, save again: see there) and names the time of the next check; the task
sleeps until then, or until :meth:`CertManager.retry_now` (SIGHUP) wakes it. The first checks wait for
``listening``: the server sets it once every listener is bound, so no order (nor ARI question) starts before
the listeners that answer the CA's validation are up, while stored certificates are served from the first
handshake. When other processes share the store, a :class:`~snakeway.acme.watch.StoreWatch` puts certificates
they saved into this process's map.

The manager's nursery also holds the ``on_renewed`` hooks (:mod:`snakeway.acme.hooks`: the process that
saved a new certificate runs it, in the background) and, once the listeners are up, the update of the
account's contacts (:mod:`snakeway.acme.account`). :meth:`CertManager.revoke` and
:meth:`CertManager.rollover_account_key` are the admin API's operator actions. With several CAs each has
its own account: contacts are kept up to date for every one, a revocation is signed by the account of the
CA that issued the certificate, and a rollover rolls every stored account's key.

Each certificate has its own error boundary: an unexpected error is logged with its traceback and the
certificate is checked again at the next periodic check; the certificate that was being served stays
served.

Many certificates
-----------------
Stored certificates are loaded by :mod:`snakeway.acme.startup`, from the store's index when it has one:
10,000 certificates serve well under a second after start. With more than ``SPREAD_FIRST_CHECKS_ABOVE``
certificates, the first check of each one that is not due waits a random delay (see there), and its task
is only started then (one task, ``_start_deferred``, starts them): 10,000 tasks starting together would
hold up the first handshakes for most of a second. More than ``SPREAD_FIRST_CHECKS_ABOVE`` certificates
missing at start-up have their first orders spread over a few seconds too (:func:`missing_spread`); fewer
are ordered at once, the order lanes keeping at most ``max_concurrent_orders`` at the CA, and processes
sharing the store take them in turn by their locks. ``retry_now`` starts them all at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import trio

from snakeway.acme.account import rollover_stored
from snakeway.acme.backend import AcmeBackend
from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.coordination import Coordinator, LocalCoordinator
from snakeway.acme.filestore import FileStore
from snakeway.acme.hooks import HookRunner
from snakeway.acme.issuing import Issuer
from snakeway.acme.managed import ManagedCert
from snakeway.acme.renewer import Renewer
from snakeway.acme.revoke import revoke_stored
from snakeway.acme.served import ServedCerts
from snakeway.acme.startup import load_stored
from snakeway.acme.store import AccountRecord, CertBundle, CertStore, StoreError
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.acme.watch import StoreWatch
from snakeway.clock import WallClock, sleep_until
from snakeway.config.model import TlsAutomation
from snakeway.errors import IssuanceError
from snakeway.tls.registry import CertRegistry
from snakeway.tls.sources import Offload

logger = logging.getLogger(__name__)

# With more certificates than this, the first checks of stored ones are spread out (see acme/startup.py).
SPREAD_FIRST_CHECKS_ABOVE = 100
# Many certificates missing at start-up are spread over up to this many seconds (a quarter second each).
MISSING_SPREAD_SECONDS = 30.0


def missing_spread(missing: int, above: int) -> float:
    """Over how many seconds the first orders of ``missing`` certificates at start-up are spread.

    Not at all for ``above`` or fewer: they are ordered at once (a few dozen names are served within
    seconds). More are spread a quarter second each, up to ``MISSING_SPREAD_SECONDS``, so that thousands
    of first checks do not start together.
    """
    return 0.0 if missing <= above else min(MISSING_SPREAD_SECONDS, 0.25 * missing)


class CertManager:
    """Obtains and renews ACME certificates and publishes them to the cert map.

    Args:
      settings: ``server.tls_automation``.
      certs: what to manage.
      store: where bundles, renewal state, the budget and the account live.
      backend: the ACME CA (``ClientV2Backend``, or ``FakeCA`` in tests); with several configured, the first.
      fallback_backends: the other CAs of ``settings.fallback_acme``, in that order.
      registry: the cert map owner; issued certificates are published there.
      http01: tokens answered on plain listeners.
      tlsalpn: challenge certificates answered on TLS listeners.
      clock: wall time.
      rng: jitter source.
      offload: runs CPU-bound work (keys, contexts); default a worker thread.
      coordinator: locks and shared challenges between processes sharing
        the store (default: this process only).
      watch_interval: when other processes share the store, how often to
        look for certificates they saved (seconds); None: never.
      listening: set once the listeners that answer challenges are bound;
        no certificate is checked (so none ordered) before. None: at once.
      spread_first_checks_above: with more certificates than this, the first
        checks of stored ones that are not due are spread out, and with more
        missing than this, their first orders (see above).
    """

    def __init__(
        self,
        *,
        settings: TlsAutomation,
        certs: Iterable[ManagedCert],
        store: CertStore,
        backend: AcmeBackend,
        registry: CertRegistry,
        http01: Http01Tokens,
        tlsalpn: TlsAlpnChallenges,
        clock: WallClock,
        rng: random.Random | None = None,
        offload: Offload | None = None,
        coordinator: Coordinator | None = None,
        watch_interval: float | None = None,
        listening: trio.Event | None = None,
        spread_first_checks_above: int = SPREAD_FIRST_CHECKS_ABOVE,
        attempts: dict[str, int] | None = None,
        fallback_backends: Sequence[AcmeBackend] = (),
    ) -> None:
        if len(fallback_backends) != len(settings.fallback_acme):
            raise ValueError(f"{len(settings.fallback_acme)} fallback CAs configured, "
                             f"{len(fallback_backends)} backends given")
        self.settings = settings
        self.certs = {c.cert_id: c for c in certs}
        self.store = store
        self.backend = backend
        self.registry = registry
        self.clock = clock
        self.rng = rng or random.Random()
        self.offload: Offload = offload or trio.to_thread.run_sync
        self.coordinator: Coordinator = coordinator or LocalCoordinator()
        self.watch_interval = watch_interval
        self.listening = listening
        self.spread_first_checks_above = spread_first_checks_above
        issuer, *fallback = (
            Issuer(
                acme=acme, store=store, backend=ca, coordinator=self.coordinator, http01=http01,
                tlsalpn=tlsalpn, share_challenges=watch_interval is not None, offload=self.offload,
            )
            for acme, ca in zip(settings.issuers, (backend, *fallback_backends), strict=True)
        )
        self.issuer = issuer
        self.issuers: tuple[Issuer, ...] = (issuer, *fallback)  # every CA, in order; each its own account
        self.served = ServedCerts(registry, clock, self.offload)
        self.hooks = HookRunner(settings.hooks, store_cert_dir=store.cert_dir if isinstance(store, FileStore) else None)
        self.renewer = Renewer(
            settings=settings, store=store, backend=backend, served=self.served, clock=clock, rng=self.rng,
            coordinator=self.coordinator, issuer=issuer, attempts=attempts, fallback=tuple(fallback),
            hooks=self.hooks,
        )
        self.next_checks: dict[str, datetime] = {}
        self._tasks: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._forced: set[str] = set()
        self._renew: set[str] = set()  # forced renewals asked for (renew_one)
        self._checked: dict[str, trio.Event] = {}  # cert id -> set when the check asked for by retry_one ends
        self._naps: dict[str, trio.CancelScope] = {}
        self._first_checks: dict[str, datetime] = {}  # cert id -> spread-out first check (see _load_stored)
        # Certificates whose task starts at their spread-out first check: a heap of (when, order, cert, scope).
        self._deferred: list[tuple[datetime, int, ManagedCert, trio.CancelScope]] = []
        self._deferred_order = itertools.count()
        self._starter_running = False
        self._starter_nap: trio.CancelScope | None = None
        self._start_all = False

    # -- running ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load stored certificates, report started, then keep every certificate fresh."""
        watch = None
        if self.watch_interval is not None:
            watch = StoreWatch(
                store=self.store, coordinator=self.coordinator, clock=self.clock, certs=lambda: self.certs,
                ours=self.served.ours, publish=self.served.publish,
            )
            await watch.first_look()
        await self._load_stored(self.certs.values(), at_start=True)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.hooks.run)
            nursery.start_soon(self._sync_account)
            for cert in self.certs.values():
                self._start(cert)
            if watch is not None and self.watch_interval is not None:
                nursery.start_soon(watch.run, self.watch_interval)
            for ca in self.renewer.cas:  # a profile the CA lacks is said at start-up, not at the next renewal
                if ca.issuer.acme.profile is not None:
                    nursery.start_soon(ca.issuer.check_profile)
            task_status.started()
            await trio.sleep_forever()

    async def configure(self, certs: Iterable[ManagedCert], settings: TlsAutomation | None = None) -> None:
        """Apply a reloaded configuration: new certificates are loaded and checked now.

        ``settings``: the reloaded ``tls_automation``, whose hooks and account contacts take effect (a changed
        contact updates the account); its other keys need a restart.
        """
        if settings is not None:
            self.hooks.configure(settings.hooks)
            reloaded = {acme.directory_url: acme for acme in settings.issuers}
            for running in self.issuers:  # a CA no longer configured keeps its contacts until the restart
                acme = reloaded.get(running.acme.directory_url)
                if acme is not None:
                    running.account.configure(acme)
            if self._nursery is not None:
                self._nursery.start_soon(self._sync_account)
        wanted = {c.cert_id: c for c in certs}
        for cert_id in list(self._tasks):
            if cert_id not in wanted or wanted[cert_id] != self.certs.get(cert_id):
                self._tasks.pop(cert_id).cancel()
        added = [c for i, c in wanted.items() if i not in self._tasks]
        self.certs = wanted
        await self._load_stored(added, at_start=False)
        for cert in added:
            self._start(cert)

    async def _sync_account(self) -> None:
        """Update each CA's account's contacts if its ``contact_email`` changed (once the listeners are up); an
        account not registered yet is left alone."""
        if self.listening is not None:
            await self.listening.wait()
        for running in self.issuers:
            try:
                await running.account.sync_contact()
            except (IssuanceError, StoreError) as exc:
                logger.warning("ACME account at %s: could not update its contact (%s); trying again at the next "
                               "start or reload", running.acme.directory_url, exc)

    async def revoke(self, cert_id: str, reason: str) -> CertBundle:
        """Revoke ``cert_id``'s stored certificate and mark it for replacement (:mod:`snakeway.acme.revoke`);
        the caller orders the replacement with :meth:`retry_one` ``(renew=True)``.

        Raises:
          KeyError: ``cert_id`` is not a certificate this manager keeps.
          ValueError, ActionRefused, IssuanceError, StoreError: see :func:`~snakeway.acme.revoke.revoke_stored`.
        """
        cert = self.certs[cert_id]
        return await revoke_stored(name=cert.name, reason=reason, store=self.store,
                                   accounts=[running.account for running in self.issuers], coordinator=self.coordinator)

    async def rollover_account_key(self) -> list[AccountRecord]:
        """Roll over the key of every configured CA's stored account
        (:func:`~snakeway.acme.account.rollover_stored`)."""
        return await rollover_stored([running.account for running in self.issuers])

    def retry_now(self) -> None:
        """Check every certificate at once, skipping any back-off (not a CA's Retry-After, nor the budget)."""
        for cert_id in self.certs:
            self._forced.add(cert_id)
            nap = self._naps.get(cert_id)
            if nap is not None:
                nap.cancel()
        if self._deferred:  # certificates whose first check was spread out: start them all now
            self._start_all = True
            if self._starter_nap is not None:
                self._starter_nap.cancel()

    def retry_one(self, cert_id: str, *, renew: bool = False) -> trio.Event:
        """Check ``cert_id`` at once, skipping any back-off; with ``renew``, order a new certificate even if the
        stored one is not due (never before a CA's Retry-After, nor beyond the budget).

        Returns:
          An event set when that check has ended (whatever it did).

        Raises:
          KeyError: ``cert_id`` is not a certificate this manager keeps.
        """
        if cert_id not in self.certs:
            raise KeyError(cert_id)
        self._forced.add(cert_id)
        if renew:
            self._renew.add(cert_id)
        done = self._checked.setdefault(cert_id, trio.Event())
        nap = self._naps.get(cert_id)
        if nap is not None:
            nap.cancel()
        if self._deferred:  # its first check may have been spread out: start those tasks now
            self._start_all = True
            if self._starter_nap is not None:
                self._starter_nap.cancel()
        return done

    def _start(self, cert: ManagedCert) -> None:
        """Start ``cert``'s task now or, if its first check was spread out (see :meth:`_load_stored`), then."""
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._tasks[cert.cert_id] = scope
        first = self._first_checks.pop(cert.cert_id, None)
        if first is None:
            self._nursery.start_soon(self._keep_fresh, cert, scope)
            return
        # No task until then: 10,000 tasks starting at once would hold up the first handshakes.
        self.next_checks[cert.cert_id] = first
        heapq.heappush(self._deferred, (first, next(self._deferred_order), cert, scope))
        if not self._starter_running:
            self._starter_running = True
            self._nursery.start_soon(self._start_deferred)

    async def _start_deferred(self) -> None:
        """Start the tasks of spread-out certificates as their first checks come due."""
        assert self._nursery is not None
        try:
            while self._deferred:
                if not self._start_all:
                    with trio.CancelScope() as nap:
                        self._starter_nap = nap
                        await sleep_until(self.clock, self._deferred[0][0])
                    self._starter_nap = None
                now = self.clock.now()
                while self._deferred and (self._start_all or self._deferred[0][0] <= now):
                    _, _, cert, scope = heapq.heappop(self._deferred)
                    if self._tasks.get(cert.cert_id) is scope:  # not dropped or replaced by configure()
                        self._nursery.start_soon(self._keep_fresh, cert, scope)
        finally:
            self._starter_running = self._start_all = False
            self._starter_nap = None

    async def _load_stored(self, certs: Iterable[ManagedCert], *, at_start: bool) -> None:
        """Put every unexpired stored certificate of ``certs`` into the cert map, in one registry update."""
        certs = list(certs)
        now = self.clock.now()
        loaded = await load_stored(
            self.store, certs, self.settings, now,
            spread=len(self.certs) > self.spread_first_checks_above, rng=self.rng, offload=self.offload,
        )
        self._first_checks.update(loaded.first_checks)
        missing = [c for c in certs if c.cert_id not in loaded.serials]
        spread = missing_spread(len(missing), self.spread_first_checks_above) if at_start else 0.0
        for cert in missing if spread else ():
            self._first_checks[cert.cert_id] = now + timedelta(seconds=spread * self.rng.random())
        self.served.loaded(loaded.entries, loaded.serials)

    async def _keep_fresh(self, cert: ManagedCert, scope: trio.CancelScope) -> None:
        with scope:
            if self.listening is not None:
                await self.listening.wait()
            while True:
                try:
                    wake = await self.check(cert)
                except Exception:  # the per-certificate error boundary
                    logger.exception("certificate %s: unexpected error; checking again later", cert.name)
                    wake = self.renewer.periodic()
                await self._nap(cert, wake)

    async def _nap(self, cert: ManagedCert, wake: datetime) -> None:
        """Sleep until ``wake``, or until :meth:`retry_now`."""
        self.next_checks[cert.cert_id] = wake
        with trio.CancelScope() as nap:
            self._naps[cert.cert_id] = nap
            if cert.cert_id not in self._forced:
                await sleep_until(self.clock, wake)
        self._naps.pop(cert.cert_id, None)

    async def check(self, cert: ManagedCert) -> datetime:
        """Do what ``cert`` needs now; returns when to check it next."""
        # A forced check (retry_now) is this one, whatever it finds: healthy certificates included, or their
        # task would check again and again without napping.
        forced = cert.cert_id in self._forced
        self._forced.discard(cert.cert_id)
        renew = cert.cert_id in self._renew
        self._renew.discard(cert.cert_id)
        done = self._checked.pop(cert.cert_id, None)  # asked for before this check began: this is the one
        try:
            return await self.renewer.check(cert, forced=forced, renew=renew)
        finally:
            if done is not None:
                done.set()
