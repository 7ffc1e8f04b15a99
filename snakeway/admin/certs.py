"""``GET /admin/certs``: every certificate the server serves, as JSON. Pure: the facts are gathered elsewhere.

A certificate is ACME (its renewal state comes from the certificate store, shared by every worker), manual
(files named in the configuration, renewed by replacing them and reloading) or internal (issued by the local
CA and renewed by snakeway when a third of its lifetime is left).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from snakeway.acme.report import describe
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import CertBundle
from snakeway.acme.timing import renewal_moment
from snakeway.renewal import lifetime_renewal_time

ACME, MANUAL, INTERNAL = "acme", "manual", "internal"


@dataclass(frozen=True)
class Issued:
    """The facts of a certificate file (manual or internal)."""

    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: str  # lower-case hex
    issuer: str  # RFC 4514


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _common(cert_id: str, kind: str, names: tuple[str, ...], issued: Issued | None, now: datetime) -> dict[str, Any]:
    return {
        "id": cert_id,
        "kind": kind,
        "names": list(names),
        "issuer": issued.issuer if issued else None,
        "serial": issued.serial if issued else None,
        "not_before": _iso(issued.not_before) if issued else None,
        "not_after": _iso(issued.not_after) if issued else None,
        "expires_in_seconds": int((issued.not_after - now).total_seconds()) if issued else None,
    }


def _validity(issued: Issued | None, now: datetime) -> str:
    if issued is None:
        return "missing"
    if now >= issued.not_after:
        return "expired"
    return "not yet valid" if now < issued.not_before else "valid"


def acme_view(
    cert_id: str,
    domains: tuple[str, ...],
    bundle: CertBundle | None,
    state: RenewalState | None,
    *,
    now: datetime,
    renew_within: timedelta | None,
    next_check: datetime | None,
) -> dict[str, Any]:
    """An ACME certificate: the store's certificate and renewal state, and when this worker checks it next."""
    issued = None
    if bundle is not None:
        issued = Issued(bundle.domains, bundle.not_before, bundle.not_after, bundle.serial, bundle.issuer)
    row = describe(domains, bundle, state, now=now, renew_within=renew_within)
    ari = state.ari if state is not None and bundle is not None and state.ari_serial == bundle.serial else None
    renewal = None
    if bundle is not None:
        renewal = renewal_moment(bundle.not_before, bundle.not_after, renew_within=renew_within, ari=ari,
                                 ari_moment=state.ari_moment if ari is not None and state is not None else None)
    return {
        **_common(cert_id, ACME, domains, issued, now),
        "state": row.state,
        "renewal_at": _iso(renewal),
        "last_error": state.last_error if state is not None else None,
        "failures": state.failures if state is not None else 0,
        "next_attempt": _iso(state.next_attempt) if state is not None else None,
        "next_check": _iso(next_check),
        "ari_window": {"start": _iso(ari.start), "end": _iso(ari.end)} if ari is not None else None,
    }


def file_view(cert_id: str, kind: str, names: tuple[str, ...], issued: Issued | None, now: datetime,
              error: str | None = None) -> dict[str, Any]:
    """A manual or internal certificate (``error``: why its file could not be read)."""
    renewal = None
    if kind == INTERNAL and issued is not None:
        renewal = lifetime_renewal_time(issued.not_before, issued.not_after)
    return {
        **_common(cert_id, kind, names, issued, now),
        "state": _validity(issued, now) if error is None else "unreadable",
        "renewal_at": _iso(renewal),
        "last_error": error,
        "failures": 0,
        "next_attempt": None,
        "next_check": _iso(renewal),
        "ari_window": None,
    }


def find(cert_ids: list[str], wanted: str) -> str | None:
    """The certificate ``wanted`` names: its id, or the name of an ACME certificate (``acme:<name>``)."""
    if wanted in cert_ids:
        return wanted
    return f"{ACME}:{wanted}" if f"{ACME}:{wanted}" in cert_ids else None
