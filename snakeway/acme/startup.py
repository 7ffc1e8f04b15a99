"""Loading stored certificates into the cert map when the CertManager starts, or a reload adds some.

With a store that offers ``index`` (see :class:`~snakeway.acme.store.CertIndex`:
both of ours do), loading before ``started()`` reads only metadata, in one
call, and registers each unexpired certificate with a context built on its
first handshake from the store's own files (see :mod:`snakeway.tls.certmap`),
all in one registry update: 10,000 certificates take well under a second.
A store not on disk hands over the PEMs instead of paths, all in one call if
it offers ``pems`` (Redis), else one ``load`` each (the memory store).
Validation waits for that first handshake (OpenSSL checks the key) and for
the certificate's first *check*, which loads the full bundle; a pair that
cannot be built is refused, never served, and the next check that finds the
stored bundle sound publishes it again, built and validated in a thread.

So that 10,000 first checks do not all load their bundle at once, when more
than the manager's ``SPREAD_FIRST_CHECKS_ABOVE`` certificates are managed
(``spread``), the first check of each one loaded from the store and not due by
its metadata waits a random delay of up to ``min(check_interval_seconds,
FIRST_CHECK_SPREAD_SECONDS)``. Missing and due certificates are checked at
once.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from snakeway.acme.managed import ManagedCert, day_text
from snakeway.acme.store import CertStore, StoredMeta
from snakeway.config.model import TlsAutomation
from snakeway.renewal import lifetime_renewal_time
from snakeway.tls.certmap import CertEntry
from snakeway.tls.sources import Offload, entry_from_pem, lazy_entry_from_files, lazy_entry_from_pem

logger = logging.getLogger("snakeway.acme.manager")

# The first checks of stored certificates are spread over at most this many seconds (or the check interval).
FIRST_CHECK_SPREAD_SECONDS = 60.0
# With more certificates than this loaded at once, one summary line is logged instead of one per certificate.
QUIET_ABOVE = 100


@dataclass
class Loaded:
    """What :func:`load_stored` found, by certificate id."""

    entries: dict[str, CertEntry] = field(default_factory=dict)  # for the cert map
    serials: dict[str, str] = field(default_factory=dict)  # of the certificates in ``entries``
    first_checks: dict[str, datetime] = field(default_factory=dict)  # spread-out first checks


async def load_stored(
    store: CertStore,
    certs: list[ManagedCert],
    settings: TlsAutomation,
    now: datetime,
    *,
    spread: bool,
    rng: random.Random,
    offload: Offload,
) -> Loaded:
    """Every unexpired stored certificate of ``certs``; with ``spread``, random first checks for those not due."""
    index = getattr(store, "index", None)  # the optional CertIndex
    if index is None:
        return await _from_bundles(store, certs, now, offload)
    return await _from_index(store, certs, await index([c.name for c in certs]), settings, now, spread, rng)


async def _from_index(
    store: CertStore,
    certs: list[ManagedCert],
    index: dict[str, StoredMeta],
    settings: TlsAutomation,
    now: datetime,
    spread: bool,
    rng: random.Random,
) -> Loaded:
    """Lazy entries from the store's metadata: no PEM parsed, no context built (see the module docstring)."""
    # One line per certificate, unless there are very many: then one line for all (and the rest at debug).
    level = logging.DEBUG if len(certs) > QUIET_ABOVE else logging.INFO
    window = min(settings.check_interval_seconds, FIRST_CHECK_SPREAD_SECONDS)
    days = settings.renew_within_days
    renew_within = timedelta(days=days) if days is not None else None
    loaded = Loaded()
    pems = await _pems(store, [m for m in index.values() if m.cert_path is None and m.not_after > now])
    for cert in certs:
        meta = index.get(cert.name)
        if meta is None or meta.not_after <= now:
            continue
        pair = pems.get(cert.name)
        if meta.cert_path is not None and meta.key_path is not None:
            source = f"for {cert.name} ({os.path.dirname(meta.cert_path)})"
            entry = lazy_entry_from_files(meta.domains, meta.cert_path, meta.key_path, source=source)
        elif pair is not None:  # trusted as the files are: OpenSSL checks the pair when the context is built
            entry = lazy_entry_from_pem(meta.domains, pair[0], pair[1], source=f"for {cert.name}")
        else:  # a store not on disk (MemoryStore): loading is cheap, the context is still built on first use
            bundle = await store.load(cert.name)
            if bundle is None or bundle.not_after <= now:
                continue
            meta = StoredMeta.of(bundle)
            entry = lazy_entry_from_pem(bundle.domains, bundle.cert_pem, bundle.key_pem, source=f"for {cert.name}")
        loaded.entries[cert.cert_id] = entry
        loaded.serials[cert.cert_id] = meta.serial
        logger.log(level, "loaded stored certificate for %s (valid until %s)", ", ".join(meta.domains),
                   day_text(meta.not_after))
        due = now >= lifetime_renewal_time(meta.not_before, meta.not_after, renew_within)
        if spread and set(cert.domains) <= set(meta.domains) and not due:
            loaded.first_checks[cert.cert_id] = now + timedelta(seconds=window * rng.random())
    if level == logging.DEBUG:
        logger.info(
            "loaded stored certificates: %d of %d, contexts built on first use; first checks spread over %.0f s",
            len(loaded.entries), len(certs), window if spread else 0,
        )
    return loaded


async def _pems(store: CertStore, metas: list[StoredMeta]) -> dict[str, tuple[bytes, bytes]]:
    """The chain and key of every certificate in ``metas``, in one call, from a store that offers ``pems``.

    A store not on disk whose every ``load`` is a round trip (Redis) offers it, so start-up with 10,000
    certificates is one request for the index and one for the PEMs, not 10,000 loads.
    """
    pems = getattr(store, "pems", None)
    if pems is None or not metas:
        return {}
    found: dict[str, tuple[bytes, bytes]] = await pems([meta.name for meta in metas])
    return found


async def _from_bundles(store: CertStore, certs: list[ManagedCert], now: datetime, offload: Offload) -> Loaded:
    """Eager entries, each bundle loaded and its context built in a thread (stores without an index)."""
    loaded = Loaded()
    for cert in certs:
        bundle = await store.load(cert.name)
        if bundle is None or bundle.not_after <= now:
            continue
        try:
            entry, _ = await entry_from_pem(bundle.cert_pem, bundle.key_pem, now=now, source=cert.name, offload=offload)
        except Exception as exc:  # a stored bundle we cannot serve is reported, never fatal
            logger.warning("stored certificate for %s cannot be served: %s", cert.name, exc)
            continue
        loaded.entries[cert.cert_id] = entry
        loaded.serials[cert.cert_id] = bundle.serial
        logger.info("loaded stored certificate for %s (valid until %s)", ", ".join(bundle.domains),
                    day_text(bundle.not_after))
    return loaded
