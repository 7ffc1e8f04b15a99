"""The CertManager: keeps every ACME-managed certificate present and fresh.

Theory of operation
-------------------
``run`` is started with ``nursery.start``. Before it reports ``started()`` it
loads every stored certificate into the cert map, so the first handshake after
start-up already has it. Then one task per certificate loops:

1. *check*: load the bundle and its renewal state from the store. A bundle
   that is missing, does not cover the configured names, or is due (less than
   ``renew_within_days`` left, or inside the CA's ARI window) needs issuance,
   unless a failure back-off (or a CA's Retry-After) is still running;
2. *issue* (under one deadline): new key, new order, prove control of each
   name (HTTP-01 tokens or TLS-ALPN-01 certificates, provisioned before the
   challenge is answered and removed afterwards), finalize with a CSR,
   download the chain, save it to the store, publish it to the cert map;
3. *sleep* on the wall clock until the next check: the renewal time, the
   periodic ``check_interval_seconds`` (jittered), or the back-off's end.

Each certificate has its own error boundary: a failure is logged loudly with
the time of the next attempt, recorded in the store (so a restart does not
reset the back-off), and the certificate that was being served stays served.

Many certificates
-----------------
Stored certificates are loaded by :mod:`snakeway.acme.startup`, from the store's index when it has one:
10,000 certificates serve well under a second after start. With more than ``SPREAD_FIRST_CHECKS_ABOVE``
certificates, the first check of each one that is not due waits a random delay (see there), and its task
is only started then (one task, ``_start_deferred``, starts them): 10,000 tasks starting together would
hold up the first handshakes for most of a second. ``retry_now`` starts them all at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections.abc import Iterable
from datetime import datetime, timedelta

import trio

from snakeway.acme import crypto
from snakeway.acme.backend import AcmeBackend, ChallengeTask
from snakeway.acme.challenges import Http01Tokens, http01_key
from snakeway.acme.coordination import Coordinator, LocalCoordinator
from snakeway.acme.managed import ManagedCert, day_text
from snakeway.acme.schedule import RenewalState, next_check, renewal_due, renewal_time
from snakeway.acme.startup import load_stored
from snakeway.acme.store import AccountRecord, CertBundle, CertStore
from snakeway.acme.tlsalpn import TlsAlpnChallenges, tls_alpn_key
from snakeway.clock import WallClock, sleep_until
from snakeway.config.model import Challenge, TlsAutomation
from snakeway.errors import IssuanceError
from snakeway.tls.certinfo import CertificateError
from snakeway.tls.registry import CertRegistry
from snakeway.tls.sources import Offload, entry_from_pem

logger = logging.getLogger(__name__)

# One issuance, from new order to saved certificate, must finish within this.
ISSUANCE_TIMEOUT = 300.0
# With several workers: how often each looks whether the store changed (one stat; see coordination.py).
GENERATION_POLL_SECONDS = 0.05
# When another worker holds a certificate's lock, look again this soon.
LOCKED_RECHECK_SECONDS = 30.0
# The lock name under which the ACME account is registered (not a valid host name).
ACCOUNT_LOCK = "acme-account.lock"
# With more certificates than this, the first checks of stored ones are spread out (see acme/startup.py).
SPREAD_FIRST_CHECKS_ABOVE = 100


class CertManager:
    """Obtains and renews ACME certificates and publishes them to the cert map.

    Args:
      settings: ``server.tls_automation``.
      certs: what to manage.
      store: where bundles, renewal state and the account live.
      backend: the ACME CA (``ClientV2Backend``, or ``FakeCA`` in tests).
      registry: the cert map owner; issued certificates are published there.
      http01: tokens answered on plain listeners.
      tlsalpn: challenge certificates answered on TLS listeners.
      clock: wall time.
      rng: jitter source.
      offload: runs CPU-bound work (keys, contexts); default a worker thread.
      coordinator: locks and shared challenges between worker processes
        (default: this process only).
      watch_interval: with several workers, how often to look for
        certificates another worker saved (seconds); None: never.
      spread_first_checks_above: with more certificates than this, the first
        checks of stored ones that are not due are spread out (see above).
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
        spread_first_checks_above: int = SPREAD_FIRST_CHECKS_ABOVE,
    ) -> None:
        self.settings = settings
        self.certs = {c.cert_id: c for c in certs}
        self.store = store
        self.backend = backend
        self.registry = registry
        self.http01 = http01
        self.tlsalpn = tlsalpn
        self.clock = clock
        self.rng = rng or random.Random()
        self.offload: Offload = offload or trio.to_thread.run_sync
        self.coordinator: Coordinator = coordinator or LocalCoordinator()
        self.watch_interval = watch_interval
        self.spread_first_checks_above = spread_first_checks_above
        self._stamps: dict[str, str | None] = {}
        self._published: dict[str, str] = {}  # cert id -> serial in this process's map
        # cert id -> serial this process issued and is saving: the store watch can see the save
        # before the publish, and must not take it for another worker's.
        self._own: dict[str, str] = {}
        self.next_checks: dict[str, datetime] = {}
        self._tasks: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._account_lock = trio.Lock()
        self._account_ready = False
        self._forced: set[str] = set()
        self._retry_after: dict[str, datetime] = {}
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
        await self._load_stored(self.certs.values())
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for cert in self.certs.values():
                self._start(cert)
            if self.watch_interval is not None:
                nursery.start_soon(self._watch_store, self.watch_interval)
            task_status.started()
            await trio.sleep_forever()

    async def configure(self, certs: Iterable[ManagedCert]) -> None:
        """Apply a reloaded configuration: new certificates are loaded and checked now."""
        wanted = {c.cert_id: c for c in certs}
        for cert_id in list(self._tasks):
            if cert_id not in wanted or wanted[cert_id] != self.certs.get(cert_id):
                self._tasks.pop(cert_id).cancel()
        added = [c for i, c in wanted.items() if i not in self._tasks]
        self.certs = wanted
        await self._load_stored(added)
        for cert in added:
            self._start(cert)

    def retry_now(self) -> None:
        """Check every certificate at once, skipping any back-off (not a CA's Retry-After)."""
        for cert_id in self.certs:
            self._forced.add(cert_id)
            nap = self._naps.get(cert_id)
            if nap is not None:
                nap.cancel()
        if self._deferred:  # certificates whose first check was spread out: start them all now
            self._start_all = True
            if self._starter_nap is not None:
                self._starter_nap.cancel()

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

    async def _load_stored(self, certs: Iterable[ManagedCert]) -> None:
        """Put every unexpired stored certificate of ``certs`` into the cert map, in one registry update."""
        loaded = await load_stored(
            self.store, list(certs), self.settings, self.clock.now(),
            spread=len(self.certs) > self.spread_first_checks_above, rng=self.rng, offload=self.offload,
        )
        self._published.update(loaded.serials)
        self._first_checks.update(loaded.first_checks)
        if loaded.entries:
            self.registry.update(loaded.entries)

    async def _keep_fresh(self, cert: ManagedCert, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                try:
                    wake = await self.check(cert)
                except Exception:  # the per-certificate error boundary
                    logger.exception("certificate %s: unexpected error; checking again later", cert.name)
                    wake = next_check(self.clock.now(), self.settings.check_interval_seconds, jitter=self.rng.random())
                await self._nap(cert, wake)

    async def _nap(self, cert: ManagedCert, wake: datetime) -> None:
        """Sleep until ``wake``, or until :meth:`retry_now`."""
        self.next_checks[cert.cert_id] = wake
        with trio.CancelScope() as nap:
            self._naps[cert.cert_id] = nap
            if cert.cert_id not in self._forced:
                await sleep_until(self.clock, wake)
        self._naps.pop(cert.cert_id, None)

    # -- one check -------------------------------------------------------

    async def check(self, cert: ManagedCert) -> datetime:
        """Issue ``cert`` if needed now; returns when to check it next."""
        now = self.clock.now()
        # A forced check (retry_now) is this one, whatever it finds: healthy certificates included, or their
        # task would check again and again without napping.
        forced = cert.cert_id in self._forced
        self._forced.discard(cert.cert_id)
        state = await self.store.load_state(cert.name) or RenewalState(name=cert.name)
        bundle = await self.store.load(cert.name)
        periodic = next_check(now, self.settings.check_interval_seconds, jitter=self.rng.random())
        if bundle is not None and set(cert.domains) <= set(bundle.domains):
            window = await self._renewal_window(bundle)
            days = self.settings.renew_within_days
            # TEMPORARY: 30 days stands for the lifetime rule (renew_within_days unset) until renewal_time takes it.
            renew_within = timedelta(days=days if days is not None else 30.0)
            if not renewal_due(bundle.not_before, bundle.not_after, now, renew_within=renew_within, ari_window=window):
                await self._rebuild_if_unservable(cert, bundle)
                due = renewal_time(bundle.not_before, bundle.not_after, renew_within=renew_within, ari_window=window)
                return min(due, periodic)
        if forced:
            floor = self._retry_after.get(cert.cert_id)
            if floor is not None and now < floor:
                logger.warning(
                    "certificate %s: the CA asked to wait until %s; not retrying sooner",
                    cert.name, floor.isoformat(timespec="seconds"),
                )
                return floor
        elif not state.may_attempt(now):
            assert state.next_attempt is not None
            return state.next_attempt
        try:
            async with self.coordinator.lock(cert.name) as mine:
                if not mine:
                    # Another worker is ordering it; its result arrives through the store.
                    logger.info("certificate for %s: another worker is ordering it", cert.name)
                    return min(periodic, now + timedelta(seconds=LOCKED_RECHECK_SECONDS))
                fresh = await self.store.load(cert.name)
                if fresh is not None and fresh != bundle and set(cert.domains) <= set(fresh.domains):
                    await self._publish(cert, fresh)
                    logger.info(
                        "certificate for %s: another worker just issued it; picked up from the store", cert.name
                    )
                    return periodic
                with trio.fail_after(ISSUANCE_TIMEOUT):
                    bundle = await self.issue(cert)
        except (IssuanceError, trio.TooSlowError) as exc:
            retry_after = exc.retry_after if isinstance(exc, IssuanceError) else None
            if retry_after is not None:
                self._retry_after[cert.cert_id] = retry_after
            reason = str(exc) or "issuance timed out"
            state = state.failed(self.clock.now(), reason, retry_after, self.rng.random())
            await self.store.save_state(state)
            assert state.next_attempt is not None
            if self.registry.entry(cert.cert_id):
                serving = "the current certificate stays in service"
            else:
                serving = "no certificate is served for it yet"
            logger.error(
                "certificate for %s: issuance failed (attempt %d): %s; %s; next attempt at %s",
                ", ".join(cert.domains), state.failures, reason, serving,
                state.next_attempt.isoformat(timespec="seconds"),
            )
            return state.next_attempt
        await self.store.save_state(state.succeeded(self.clock.now()))
        # Never sooner than the periodic check, even when the new certificate
        # is already "due" (renew_within_days longer than the CA's lifetime).
        return next_check(self.clock.now(), self.settings.check_interval_seconds, jitter=self.rng.random())

    async def issue(self, cert: ManagedCert) -> CertBundle:
        """The five steps: key, order, challenges, finalize, download; then store and publish."""
        started = trio.current_time()
        deadline = started + ISSUANCE_TIMEOUT
        logger.info("certificate for %s: ordering from %s", ", ".join(cert.domains), self.settings.acme.directory_url)
        await self._ensure_account()
        key_pem: bytes = await self.offload(crypto.generate_key, cert.key_type)
        csr_pem: bytes = await self.offload(crypto.make_csr, key_pem, cert.domains)
        order = await self.backend.new_order(cert.domains, csr_pem)
        tasks = self.backend.challenges(order, cert.challenge)
        try:
            await self._provision(tasks)
            for task in tasks:
                await self.backend.answer(task)
            await self.backend.wait_authorizations(order, deadline)
        finally:
            await self._cleanup(tasks)
        chain_pem = await self.backend.finalize(order, csr_pem, deadline)
        bundle = CertBundle.from_pem(cert.name, cert.domains, chain_pem.encode("ascii"), key_pem)
        self._own[cert.cert_id] = bundle.serial
        await self.store.save(bundle)
        await self._publish(cert, bundle)
        logger.info(
            "certificate for %s issued by %s in %.2fs, valid until %s; serving it now",
            ", ".join(cert.domains), bundle.issuer or "the CA", trio.current_time() - started,
            day_text(bundle.not_after),
        )
        return bundle

    # -- helpers ---------------------------------------------------------

    async def _publish(self, cert: ManagedCert, bundle: CertBundle) -> None:
        entry, _ = await entry_from_pem(
            bundle.cert_pem, bundle.key_pem, now=self.clock.now(), source=cert.name, offload=self.offload
        )
        self.registry.update({cert.cert_id: entry})
        self._published[cert.cert_id] = bundle.serial

    async def _rebuild_if_unservable(self, cert: ManagedCert, bundle: CertBundle) -> None:
        """Publish ``bundle`` again if the served entry's lazy context failed to build.

        A lazy build fails for good (until replaced) so that a handshake never retries it; but the failure may
        have been passing (out of file descriptors, a save racing the build). The store has just vouched for
        ``bundle`` in full, so build it again here, validated, in a thread: once per check at most.
        """
        entry = self.registry.entry(cert.cert_id)
        lazy = entry.lazy if entry is not None else None
        if lazy is None or lazy.error is None:
            return
        try:
            await self._publish(cert, bundle)
        except CertificateError as exc:
            logger.warning("certificate for %s still cannot be served: %s", cert.name, exc)
            return
        logger.info("certificate for %s: served again after its context failed to build (%s)", cert.name, lazy.error)

    async def _watch_store(self, interval: float) -> None:
        """Load certificates that another worker saved (several workers share one store)."""
        generation = await self.coordinator.generation()
        self._stamps = await self.coordinator.stamps(c.name for c in self.certs.values())
        scanned, changed = trio.current_time(), False
        while True:
            await trio.sleep(GENERATION_POLL_SECONDS)
            seen = await self.coordinator.generation()
            # Also scan on the poll after a change: one more change within the same clock tick leaves the
            # generation as it was.
            was_changed, changed = changed, seen != generation
            if not (changed or was_changed or trio.current_time() - scanned >= interval):
                continue
            generation, scanned = seen, trio.current_time()
            certs = list(self.certs.values())
            stamps = await self.coordinator.stamps(c.name for c in certs)
            for cert in certs:
                if stamps.get(cert.name) != self._stamps.get(cert.name) and stamps.get(cert.name) is not None:
                    bundle = await self.store.load(cert.name)
                    ours = (self._published.get(cert.cert_id), self._own.get(cert.cert_id))
                    if bundle is None or bundle.serial in ours:
                        continue  # gone, or the one this worker saved itself
                    if bundle.not_after > self.clock.now():
                        await self._publish(cert, bundle)
                        logger.info("certificate for %s picked up from the store", cert.name)
            self._stamps = stamps

    async def _ensure_account(self) -> None:
        async with self._account_lock:
            if self._account_ready:
                return
            acme = self.settings.acme
            contact = tuple(f"mailto:{e}" for e in acme.contact_email)
            while True:  # with several workers, one registers and the others reuse its account
                async with self.coordinator.lock(ACCOUNT_LOCK) as mine:
                    if mine:
                        record = await self.store.load_account(acme.directory_url)
                        info = await self.backend.ensure_account(record.key_pem if record else None, contact)
                        if record is None or record.uri != info.uri:
                            account = AccountRecord(acme.directory_url, info.key_pem, info.uri, contact)
                            await self.store.save_account(account)
                        self._account_ready = True
                        return
                await trio.sleep(0.1)

    async def _renewal_window(self, bundle: CertBundle) -> tuple[datetime, datetime] | None:
        try:
            await self._ensure_account()
            return await self.backend.renewal_info(bundle.cert_pem)
        except IssuanceError as exc:
            logger.debug("renewal information for %s unavailable: %s", bundle.name, exc)
            return None

    async def _provision(self, tasks: list[ChallengeTask]) -> None:
        for task in tasks:
            if task.kind is Challenge.HTTP_01:
                self.http01.add(task.token, task.key_authorization)
            else:
                self.tlsalpn.add(task.domain, task.key_authorization)
            if self.watch_interval is not None:  # other workers may get the CA's connection
                await self.coordinator.put_challenge(_challenge_key(task), task.key_authorization)

    async def _cleanup(self, tasks: list[ChallengeTask]) -> None:
        for task in tasks:
            if task.kind is Challenge.HTTP_01:
                self.http01.remove(task.token)
            else:
                self.tlsalpn.remove(task.domain)
            if self.watch_interval is not None:
                with trio.CancelScope(shield=True):
                    await self.coordinator.delete_challenge(_challenge_key(task))


def _challenge_key(task: ChallengeTask) -> str:
    return http01_key(task.token) if task.kind is Challenge.HTTP_01 else tls_alpn_key(task.domain)
