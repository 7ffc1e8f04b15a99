"""The admin API's handlers: what each endpoint reads from, or does to, the running server.

Each handler returns a status and a JSON object. Figures are the whole server's: with several workers, this
worker's own snapshot merged with its siblings' files (:mod:`snakeway.admin.share`). Actions reach every
worker: a reload goes through the supervisor, which reloads every worker as on SIGHUP (this worker answers
with its own outcome: every worker reads the same files); a renewal or retry is done by this worker, under
the certificate's lock in the store that every worker shares, and the others pick the new certificate up
from the store as they do any certificate another process saved. A revocation is a renewal preceded by the
revocation (:mod:`snakeway.acme.revoke`); a key rollover is done by this worker, and the others sign with the
stored new key from their next request to the CA.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import trio

from snakeway.acme.revoke import DEFAULT_REASON, ActionRefused
from snakeway.acme.store import StoreError
from snakeway.admin import certs as views
from snakeway.admin import errorlog, metrics
from snakeway.admin.figures import EndpointState, Snapshot, merge, snapshot
from snakeway.admin.routes import Call
from snakeway.config.model import TlsMode
from snakeway.errors import IssuanceError
from snakeway.tls.certinfo import CertificateError, leaf_info

if TYPE_CHECKING:
    from snakeway.admin.share import SharedFigures
    from snakeway.server import Server

logger = logging.getLogger(__name__)

RELOAD_WAIT_SECONDS = 120.0  # how long POST /admin/reload waits for the outcome
CERT_WAIT_SECONDS = 60.0  # how long renew and retry wait for the check they asked for, unless told



@dataclass(frozen=True)
class Text:
    """An answer that is not JSON: its body and content type (``GET /metrics``)."""

    body: bytes
    content_type: bytes


Answer = tuple[int, dict[str, Any] | Text]


class AdminApi:
    """The handlers, bound to one server (and, with several workers, to the figures files)."""

    def __init__(self, server: Server, figures: SharedFigures | None = None) -> None:
        self.server = server
        self.figures = figures
        self.started = time.time()
        errorlog.install()
        self._handlers: dict[str, Callable[[Call], Awaitable[Answer]]] = {
            "health": self.health,
            "upstreams": self.upstreams,
            "stats": self.stats,
            "reload": self.reload,
            "certs": self.certs,
            "renew": self.renew,
            "retry": self.retry,
            "revoke": self.revoke,
            "rollover_key": self.rollover_key,
            "status": self.status,
            "metrics": self.metrics,
        }

    def tokens(self) -> tuple[bytes, ...]:
        """The bearer tokens of the configuration running now (a reload reads the token file again)."""
        admin = self.server.runtime.config.admin
        return admin.tokens if admin is not None else ()

    async def call(self, call: Call) -> Answer:
        return await self._handlers[call.handler](call)

    # -- figures -------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """This worker's figures now."""
        shared = self.server.shared
        now = trio.current_time()
        services = [s for ingress in self.server.runtime.config.ingresses for s in ingress.services]
        endpoints = []
        for service in services:
            for upstream in service.upstreams:
                endpoint = upstream.endpoint
                until = shared.health.down_until(endpoint)
                endpoints.append(EndpointState(
                    service.name, str(endpoint), upstream.weight,
                    round(until - now, 3) if until is not None and until > now else None,
                    shared.health.failures.get(endpoint, 0), shared.pool.in_use(endpoint),
                ))
        figures = snapshot(shared.counters, endpoints, [s.name for s in services], pid=os.getpid(), at=time.time())
        figures["recent_errors"] = errorlog.RING.recent()
        return figures

    def shared_snapshot(self) -> Snapshot | None:
        """This worker's figures for its siblings, when the configuration has an admin listener to show them."""
        return self.snapshot() if self.server.runtime.config.admin is not None else None

    async def snapshots(self) -> list[Snapshot]:
        """Every worker's figures, this worker's (taken now) first."""
        others = await trio.to_thread.run_sync(self.figures.others) if self.figures is not None else []
        return [self.snapshot(), *others]

    async def merged(self) -> Snapshot:
        """The whole server's figures."""
        return merge(await self.snapshots())

    async def health(self, call: Call) -> Answer:
        figures = await self.merged()
        last = self.server.last_reload
        return 200, {
            "status": "ok",
            "pid": os.getpid(),
            "workers": figures["workers"],
            "uptime_seconds": round(time.time() - self.started, 3),
            "last_reload": None if last is None else {
                "at": last.at, "applied": last.applied, "error": last.error,
            },
        }

    async def upstreams(self, call: Call) -> Answer:
        figures = await self.merged()
        return 200, {"workers": figures["workers"], "services": figures["upstreams"]}

    async def stats(self, call: Call) -> Answer:
        figures = await self.merged()
        return 200, {"workers": figures["workers"], "requests": figures["requests"], "services": figures["services"]}

    async def status(self, call: Call) -> Answer:
        """What the status page shows (the listener renders it): certificates, upstreams, recent log errors."""
        snapshots = await self.snapshots()
        figures = merge(snapshots)
        return 200, {"certificates": await self._cert_views(), "services": figures["upstreams"],
                     "workers": figures["workers"],
                     "log": errorlog.merged(s.get("recent_errors", []) for s in snapshots)}
    async def metrics(self, call: Call) -> Answer:
        figures = await self.merged()
        ingress_of = {s.name: i.name for i in self.server.runtime.config.ingresses for s in i.services}
        text = metrics.render(figures, await self._cert_views(), ingress_of)
        return 200, Text(text, metrics.CONTENT_TYPE.encode())

    # -- reload ----------------------------------------------------------------------------------

    async def reload(self, call: Call) -> Answer:
        outcome = await self.server.reload_everywhere(RELOAD_WAIT_SECONDS)
        if outcome is None:
            return 202, {"applied": None, "error": f"the reload did not end within {RELOAD_WAIT_SECONDS:g} s; "
                         "see the log"}
        return (200 if outcome.applied else 422), {"applied": outcome.applied, "error": outcome.error}

    # -- certificates ----------------------------------------------------------------------------

    async def certs(self, call: Call) -> Answer:
        return 200, {"certificates": await self._cert_views()}

    async def _cert_views(self, only: str | None = None) -> list[dict[str, Any]]:
        server = self.server
        now = server.clock.now()
        out: list[dict[str, Any]] = []
        manager = server.manager
        if manager is not None:
            days = manager.settings.renew_within_days
            renew_within = timedelta(days=days) if days is not None else None
            for cert in list(manager.certs.values()):
                if only is not None and cert.cert_id != only:
                    continue
                try:
                    bundle = await manager.store.load(cert.name)
                    state = await manager.store.load_state(cert.name)
                except StoreError as exc:
                    view = views.acme_view(cert.cert_id, cert.domains, None, None, now=now, renew_within=None,
                                           next_check=manager.next_checks.get(cert.cert_id))
                    out.append({**view, "state": "unknown (store unreachable)", "last_error": str(exc)})
                    continue
                out.append(views.acme_view(cert.cert_id, cert.domains, bundle, state, now=now,
                                           renew_within=renew_within, next_check=manager.next_checks.get(cert.cert_id)))
        seen: set[str] = set()
        for spec in server.runtime.listeners.values():
            for tls in spec.tls:
                if tls.mode is not TlsMode.MANUAL:
                    continue
                for files in tls.certs:
                    cert_id = f"manual:{files.cert}"
                    if cert_id in seen or (only is not None and cert_id != only):
                        continue
                    seen.add(cert_id)
                    out.append(await _manual_view(cert_id, files.cert.read_bytes, now))
        for cert_id, (names, not_before, not_after, serial, issuer) in server.internal.issued().items():
            if only is None or cert_id == only:
                issued = views.Issued(names, not_before, not_after, f"{serial:x}", issuer)
                out.append(views.file_view(cert_id, views.INTERNAL, names, issued, now))
        return out

    def _cert_ids(self) -> list[str]:
        server = self.server
        ids = list(server.manager.certs) if server.manager is not None else []
        ids += [f"manual:{files.cert}" for spec in server.runtime.listeners.values() for tls in spec.tls
                if tls.mode is TlsMode.MANUAL for files in tls.certs]
        return ids + list(server.internal.issued())

    async def renew(self, call: Call) -> Answer:
        return await self._cert_action(call, renew=True)

    async def retry(self, call: Call) -> Answer:
        return await self._cert_action(call, renew=False)

    async def _cert_action(self, call: Call, *, renew: bool) -> Answer:
        found = self._acme_cert(call)
        if not isinstance(found, str):
            return found
        return await self._check_now(call, found, renew=renew, action="renewal" if renew else "retry")

    def _acme_cert(self, call: Call) -> str | Answer:
        """The id of the ACME certificate ``call`` names, or the answer refusing it."""
        assert call.cert_id is not None
        cert_id = views.find(self._cert_ids(), call.cert_id)
        if cert_id is None:
            return 404, {"error": f"no certificate {call.cert_id!r}; GET /admin/certs lists them"}
        manager = self.server.manager
        if manager is None or cert_id not in manager.certs:
            kind = cert_id.split(":", 1)[0]
            how = ("replace its files and reload" if kind == views.MANUAL
                   else "snakeway renews it when a third of its lifetime is left")
            return 409, {"error": f"{cert_id} is a {kind} certificate, not an ACME one: {how}"}
        return cert_id

    async def _check_now(
        self, call: Call, cert_id: str, *, renew: bool, action: str, extra: dict[str, Any] | None = None,
    ) -> Answer:
        """Check ``cert_id`` now (ordering with ``renew``) and wait up to ``wait_seconds`` for the check to end."""
        manager = self.server.manager
        assert manager is not None
        done = manager.retry_one(cert_id, renew=renew)
        wait = float(call.body.get("wait_seconds", CERT_WAIT_SECONDS))
        logger.info("admin: %s of certificate %s asked for", action, cert_id)
        with trio.move_on_after(wait):
            await done.wait()
        found = await self._cert_views(only=cert_id)
        view = found[0] if found else None
        return (200 if done.is_set() else 202), {"id": cert_id, "action": action, **(extra or {}),
                                                  "done": done.is_set(), "certificate": view}

    async def revoke(self, call: Call) -> Answer:
        """Revoke the certificate at the CA, then order its replacement at once (:mod:`snakeway.acme.revoke`)."""
        found = self._acme_cert(call)
        if not isinstance(found, str):
            return found
        manager = self.server.manager
        assert manager is not None
        reason = str(call.body.get("reason", DEFAULT_REASON))
        try:
            revoked = await manager.revoke(found, reason)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        except (ActionRefused, IssuanceError, StoreError) as exc:
            return _refused(exc, "the CA did not revoke it")
        return await self._check_now(call, found, renew=True, action="revoke",
                                     extra={"revoked": {"serial": revoked.serial, "reason": reason}})

    async def rollover_key(self, call: Call) -> Answer:
        """Roll over the key of every configured CA's stored ACME account; every worker signs with the new keys
        from its next request. ``account`` and ``directory_url`` name the first CA's; ``accounts`` lists all."""
        manager = self.server.manager
        if manager is None:
            return 409, {"error": "this configuration has no tls_automation, so no ACME account"}
        try:
            records = await manager.rollover_account_key()
        except (ActionRefused, IssuanceError, StoreError) as exc:
            return _refused(exc, "the CA did not take the new key")
        accounts = [{"account": record.uri, "directory_url": record.directory_url} for record in records]
        return 200, {**accounts[0], "accounts": accounts, "rolled_over": True}


def _refused(exc: ActionRefused | IssuanceError | StoreError, ca_refused: str) -> Answer:
    """The answer to an operator action that failed: 409 refused now, 502 ``ca_refused: …``, 503 the store."""
    if isinstance(exc, ActionRefused):
        return 409, {"error": str(exc)}
    if isinstance(exc, IssuanceError):
        return 502, {"error": f"{ca_refused}: {exc}"}
    return 503, {"error": f"the certificate store failed: {exc}"}


async def _manual_view(cert_id: str, read: Callable[[], bytes], now: Any) -> dict[str, Any]:
    try:
        info = leaf_info(await trio.to_thread.run_sync(read), cert_id)
    except (OSError, CertificateError) as exc:
        return views.file_view(cert_id, views.MANUAL, (), None, now, error=str(exc))
    issued = views.Issued(info.names, info.not_before, info.not_after, f"{info.serial:x}", info.issuer)
    return views.file_view(cert_id, views.MANUAL, info.names, issued, now)
