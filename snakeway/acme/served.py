"""What this worker serves of its ACME certificates: publishing bundles to the cert map (a thin shell).

:class:`ServedCerts` is the one way the CertManager's parts put a certificate into the cert map, so it
also knows which serial this worker serves (or has just issued and is saving) for each certificate: the
store watch must not take those for another worker's.
"""

from __future__ import annotations

import logging

from snakeway.acme.managed import ManagedCert
from snakeway.acme.store import CertBundle
from snakeway.clock import WallClock
from snakeway.tls.certinfo import CertificateError
from snakeway.tls.certmap import CertEntry
from snakeway.tls.registry import CertRegistry
from snakeway.tls.sources import Offload, entry_from_pem

logger = logging.getLogger("snakeway.acme.manager")


class ServedCerts:
    """Publishes ACME certificates to ``registry`` and remembers their serials.

    Args:
      registry: the cert map owner.
      clock: wall time (a certificate must be valid to be published).
      offload: builds the TLS context off the event loop.
    """

    def __init__(self, registry: CertRegistry, clock: WallClock, offload: Offload) -> None:
        self.registry = registry
        self.clock = clock
        self.offload = offload
        self._published: dict[str, str] = {}  # cert id -> serial in this process's map
        # cert id -> serial this process issued and is saving: the store watch can see the save
        # before the publish, and must not take it for another worker's.
        self._own: dict[str, str] = {}

    def serves(self, cert_id: str) -> bool:
        """Whether a certificate is in the cert map for ``cert_id``."""
        return self.registry.entry(cert_id) is not None

    def ours(self, cert_id: str) -> tuple[str | None, ...]:
        """The serials of ``cert_id`` this worker published or is saving (the store watch skips them)."""
        return self._published.get(cert_id), self._own.get(cert_id)

    def saving(self, cert_id: str, serial: str) -> None:
        """Note that this worker issued ``serial`` and is about to save it."""
        self._own[cert_id] = serial

    def loaded(self, entries: dict[str, CertEntry], serials: dict[str, str]) -> None:
        """Put stored certificates loaded at start-up (or reload) into the map, in one update."""
        self._published.update(serials)
        if entries:
            self.registry.update(entries)

    async def publish(self, cert: ManagedCert, bundle: CertBundle) -> None:
        """Build ``bundle``'s context (validated) and put it into the cert map."""
        entry, _ = await entry_from_pem(
            bundle.cert_pem, bundle.key_pem, now=self.clock.now(), source=cert.name, offload=self.offload
        )
        self.registry.update({cert.cert_id: entry})
        self._published[cert.cert_id] = bundle.serial

    async def rebuild_if_unservable(self, cert: ManagedCert, bundle: CertBundle) -> None:
        """Publish ``bundle`` (again) if this process does not serve it, or its lazy context failed to build.

        Publishing fails when no file can be written (a context is built from temporary files): on a full
        disk, a certificate issued while the store refused it is then served only once the store has taken
        it, from here. A lazy build fails for good (until replaced) so that a handshake never retries it; but
        the failure may have been passing (out of file descriptors, a save racing the build). The store has
        just vouched for ``bundle`` in full, so build it again here, validated, in a thread: once per check
        at most.
        """
        entry = self.registry.entry(cert.cert_id)
        lazy = entry.lazy if entry is not None else None
        failed = lazy.error if lazy is not None else None
        if failed is None and self._published.get(cert.cert_id) == bundle.serial:
            return
        try:
            await self.publish(cert, bundle)
        except (CertificateError, OSError) as exc:
            logger.warning("certificate for %s still cannot be served: %s", cert.name, exc)
            return
        if failed is None:
            logger.info("certificate for %s: serving the stored certificate now", cert.name)
        else:
            logger.info("certificate for %s: served again after its context failed to build (%s)", cert.name, failed)
