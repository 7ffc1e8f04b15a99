"""``python -m snakeway certs``: the managed certificates as a table, read from the store.

With a Redis store the table has a ``LEASE`` column: the node holding a lease on each certificate right now
(its owner id, ``<host>:<pid>:<random>``: the node ordering it), or ``-``. Other stores have no leases to show.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from snakeway.acme.managed import managed_certs
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import CertBundle, CertStore, open_store
from snakeway.acme.timing import renewal_moment
from snakeway.config.model import Config, StoreType

COLUMNS = ("NAMES", "ISSUER", "NOT AFTER", "STATE", "NEXT CHECK", "LAST ERROR")
LEASE_COLUMN = "LEASE"  # before LAST ERROR, with a store that has leases


@dataclass(frozen=True)
class Row:
    names: str
    issuer: str
    not_after: str
    state: str
    next_check: str
    last_error: str
    lease: str | None = None  # who holds a lease on it ("-": nobody); None: the store has no leases


def describe(
    domains: tuple[str, ...],
    bundle: CertBundle | None,
    state: RenewalState | None,
    *,
    now: datetime,
    renew_within: timedelta | None,
) -> Row:
    """One row: pure, so every state is easy to test. The renewal moment is the manager's (ARI included)."""
    failing = state is not None and state.failures > 0
    moment = None
    if bundle is not None:
        ari = state.ari if state is not None and state.ari_serial == bundle.serial else None
        moment = renewal_moment(bundle.not_before, bundle.not_after, renew_within=renew_within, ari=ari,
                                ari_moment=state.ari_moment if ari is not None and state is not None else None)
    if bundle is None:
        status, next_at = ("failing" if failing else "missing"), None
    elif bundle.not_after <= now:
        status, next_at = "expired", None
    elif state is not None and state.revoked_serial == bundle.serial:
        status, next_at = ("revoked, replacement failing" if failing else "revoked, replacing"), None
    elif moment is not None and now >= moment:
        status, next_at = ("renewal failing" if failing else "due"), None
    else:
        status, next_at = "valid", moment
    if state is not None and state.permanent:
        status = "failed (needs attention)"
    if failing and state is not None and state.next_attempt is not None:
        next_at = state.next_attempt
        status += f" ({state.failures} failed attempt{'s' if state.failures > 1 else ''})"
    return Row(
        names=", ".join(domains),
        issuer=_short_issuer(bundle.issuer) if bundle else "-",
        not_after=f"{bundle.not_after:%Y-%m-%d %H:%M}" if bundle else "-",
        state=status,
        next_check=f"{next_at:%Y-%m-%d %H:%M}" if next_at else "at the next check",
        last_error=(state.last_error or "-") if state else "-",
    )


def _short_issuer(issuer: str) -> str:
    for part in issuer.split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() in ("CN", "O"):
            return value.strip()
    return issuer or "-"


async def rows(config: Config, now: datetime, store: CertStore | None = None) -> list[Row]:
    automation = config.server.tls_automation
    if automation is None:
        return []
    if store is None:
        store = open_store(automation.cert_store, automation.acme.data_dir, config.server.state_dir)
    certs = managed_certs(config)
    holders = await _lease_holders(config, store, [cert.name for cert in certs])
    out = []
    for cert in certs:
        bundle = await store.load(cert.name)
        state = await store.load_state(cert.name)
        days = automation.renew_within_days
        renew_within = timedelta(days=days) if days is not None else None
        row = describe(cert.domains, bundle, state, now=now, renew_within=renew_within)
        out.append(row if holders is None else replace(row, lease=holders.get(cert.name) or "-"))
    return out


async def _lease_holders(config: Config, store: CertStore, names: list[str]) -> dict[str, str | None] | None:
    """Who holds a lease on each of ``names`` (one read), with a Redis store; None with a store without leases."""
    automation = config.server.tls_automation
    if automation is None or automation.cert_store.type is not StoreType.REDIS:
        return None
    from snakeway.acme.redislease import RedisLeases  # coredis only loads with a Redis store
    from snakeway.acme.redisstore import RedisStore

    if not isinstance(store, RedisStore):
        return None
    return await RedisLeases(store.url, key_prefix=store.keys.prefix).holders(names)


def render(table: list[Row]) -> str:
    """A plain-text table, columns padded to their widest cell (``LEASE`` only if a row has a lease field)."""
    leases = any(r.lease is not None for r in table)
    columns = [*COLUMNS[:-1], *([LEASE_COLUMN] if leases else []), COLUMNS[-1]]
    cells = [columns] + [
        [r.names, r.issuer, r.not_after, r.state, r.next_check, *([r.lease or "-"] if leases else []), r.last_error]
        for r in table
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns) - 1)]
    lines = []
    for row in cells:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)
