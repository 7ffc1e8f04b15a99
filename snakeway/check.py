"""``python -m snakeway check``: what it says beyond "the configuration loads".

Loading the configuration finds every error. A few things are not errors but
are worth a warning, because they depend on what is already in the
certificate store rather than on the file alone:

- ``renew_within_days`` longer than half a stored certificate's lifetime. The
  renewal engine never renews with more than half the lifetime left (it would
  buy nothing, and a short-lived certificate would be renewed at every check),
  so the setting is clamped for that certificate; the warning says when the
  certificate will really be renewed.
- A Redis certificate store without ``encryption_key_file`` (:func:`config_warnings`): private keys are
  stored in clear.

The comparison is pure (:func:`clamped_renewal`); :func:`store_warnings` reads the
store's index the way ``python -m snakeway certs`` reads the store. Warnings
never change ``check``'s exit status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from snakeway.acme.managed import day_text, managed_certs
from snakeway.acme.store import CertStore, StoredMeta, open_store
from snakeway.config import hcl
from snakeway.config.hcl import format_key_path
from snakeway.config.model import Config, StoreType

RENEW_WITHIN_PATH = ("server", "tls_automation", "renew_within_days")
STORE_PATH = ("server", "tls_automation", "cert_store")


@dataclass(frozen=True)
class Clamped:
    """A stored certificate for which ``renew_within_days`` is longer than half its lifetime.

    Attributes:
        name: The certificate's name (its first domain).
        lifetime: ``not_after - not_before``.
        renew_at: When it will be renewed: with half its lifetime left.
    """

    name: str
    lifetime: timedelta
    renew_at: datetime


def clamped_renewal(
    name: str, not_before: datetime, not_after: datetime, renew_within_days: float | None
) -> Clamped | None:
    """Whether ``renew_within_days`` is clamped to half the lifetime for this certificate.

    Exactly half is not clamped. ``None`` (the lifetime rule) never is.

    Args:
        name: The certificate's name, carried into the result.
        not_before: Start of validity (aware).
        not_after: End of validity (aware).
        renew_within_days: ``tls_automation.renew_within_days``.
    """
    if renew_within_days is None:
        return None
    half = (not_after - not_before) / 2
    if timedelta(days=renew_within_days) <= half:
        return None
    return Clamped(name, not_after - not_before, not_after - half)


def lifetime_text(lifetime: timedelta) -> str:
    """``160 hours`` below 10 days, ``90 days`` from there on (rounded: a backdated start adds minutes)."""
    if lifetime < timedelta(days=10):
        return f"{round(lifetime / timedelta(hours=1))} hours"
    return f"{round(lifetime / timedelta(days=1))} days"


def clamp_message(clamped: Clamped, renew_within_days: float) -> str:
    """What ``check`` says about one :class:`Clamped` certificate."""
    return (
        f"warning: renew_within_days = {renew_within_days:g} is more than half the lifetime of the stored "
        f"certificate {clamped.name!r} ({lifetime_text(clamped.lifetime)}); it will be renewed with half its "
        f"lifetime left, at {day_text(clamped.renew_at)}"
    )


def config_warnings(config: Config) -> list[str]:
    """Warnings about the configuration alone, as ``FILE:LINE: key.path: warning: ...``.

    - A Redis store without ``encryption_key_file`` keeps private keys in clear: anyone who can read the
      database (or a dump of it) has them.
    """
    automation = config.server.tls_automation
    if automation is None:
        return []
    store = automation.cert_store
    if store.type is not StoreType.REDIS or store.encryption_key_file is not None:
        return []
    where = _where(config, STORE_PATH)
    return [
        f"{where}warning: no encryption_key_file: private keys are stored in Redis in clear "
        "(make a key with `openssl rand -base64 32`)"
    ]


async def store_warnings(config: Config, now: datetime, store: CertStore | None = None) -> list[str]:
    """Every warning about ``config`` and the certificates in its store, as ``FILE:LINE: key.path: warning: ...``.

    Expired certificates are left out: they are renewed at once whatever the settings.

    Raises:
        StoreError: The store cannot be read.
    """
    automation = config.server.tls_automation
    if automation is None or automation.renew_within_days is None:
        return []
    if store is None:
        store = open_store(automation.cert_store, automation.acme.data_dir, config.server.state_dir)
    names = [cert.name for cert in managed_certs(config)]
    stored = await _stored(store, names)
    days = automation.renew_within_days
    found = [clamped_renewal(m.name, m.not_before, m.not_after, days) for m in stored if m.not_after > now]
    if not any(found):
        return []
    where = _where(config, RENEW_WITHIN_PATH)
    return [f"{where}{clamp_message(c, days)}" for c in found if c is not None]


async def _stored(store: CertStore, names: list[str]) -> list[StoredMeta]:
    """The stored certificates of ``names``, in that order: from the index if the store has one."""
    index = getattr(store, "index", None)
    if index is not None:
        metas: dict[str, StoredMeta] = await index(names)
        return [metas[name] for name in names if name in metas]
    bundles = [await store.load(name) for name in names]
    return [StoredMeta.of(bundle) for bundle in bundles if bundle is not None]


def _where(config: Config, path: tuple[str, ...]) -> str:
    """``FILE:LINE: key.path: `` of a ``server`` key (it is in the entry file)."""
    if config.source is None:
        return ""
    line = hcl.load(config.source).line(path)
    return f"{config.source}:{line}: {format_key_path(path)}: "
