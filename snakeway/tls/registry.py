"""Every certificate snakeway serves, by source, and the listeners that serve them.

Certificates come from three places: files named in the configuration
(``manual``), snakeway's local CA (``internal``) and an ACME CA (``acme``).
Each is known by an id (see :func:`snakeway.listeners.cert_ids`). A TLS
listener serves the certificates of the ids its ``tls`` blocks ask for.

Whoever obtains a certificate hands its :class:`CertEntry` to
:meth:`CertRegistry.update`; every listener that serves that id gets a new
:class:`CertMap` in one reference swap. An entry's context is either ready
(built off the handshake path) or lazy, built on its first handshake (see
:mod:`snakeway.tls.certmap`); the registry passes the entry objects themselves
into every map, so a lazy context is built once however many listeners serve
it and however often the maps are rebuilt. Pure bookkeeping, no I/O.

Cost: a publish rebuilds the map of each affected listener, linear in the
number of certificates it serves (names are canonicalised once, in
:meth:`CertRegistry.update`, not at every rebuild). Hand many certificates
over in one :meth:`CertRegistry.update` call: one rebuild, not one per
certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from snakeway import hostnames
from snakeway.tls.certmap import CertEntry, CertMap, CertMapHolder, canonical_entry

logger = logging.getLogger(__name__)

# A listener's default given as this means "its only certificate".
ONLY_CERTIFICATE = "*"


@dataclass(frozen=True)
class Served:
    """What one TLS listener serves: certificate ids and the default name."""

    ids: tuple[str, ...]
    default: str | None = None


class CertRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, CertEntry] = {}
        self._listeners: dict[object, tuple[Served, CertMapHolder]] = {}

    def holder(self, key: object) -> CertMapHolder:
        """The holder a listener's SNI callback reads (created empty if new)."""
        if key not in self._listeners:
            self._listeners[key] = (Served(()), CertMapHolder(CertMap.empty()))
        return self._listeners[key][1]

    def existing_holder(self, key: object) -> CertMapHolder | None:
        """The holder of listener ``key`` if the registry knows it; nothing is created."""
        known = self._listeners.get(key)
        return known[1] if known is not None else None

    def entry(self, cert_id: str) -> CertEntry | None:
        return self._entries.get(cert_id)

    def configure(self, listeners: Mapping[object, Served]) -> None:
        """Set what each listener serves (on start-up and reload); republishes all."""
        for key in list(self._listeners):
            if key not in listeners:
                del self._listeners[key]
        for key, served in listeners.items():
            holder = self.holder(key)
            self._listeners[key] = (served, holder)
        wanted = {i for served in listeners.values() for i in served.ids}
        for cert_id in list(self._entries):
            if cert_id not in wanted:
                del self._entries[cert_id]
        self._publish(lambda served: True)

    def replace(
        self, listeners: Mapping[object, tuple[Served, CertMapHolder]], entries: Mapping[str, CertEntry]
    ) -> None:
        """Set every listener (what it serves, through which holder) and install ``entries`` at once.

        The commit of a reload: ``entries`` must be canonical already (:func:`canonical_entry`, which can
        fail, is the caller's to run beforehand), so that nothing here can fail. Entries no listener asks for
        any more are dropped; every listener is republished.
        """
        self._listeners = dict(listeners)
        wanted = {i for served, _ in listeners.values() for i in served.ids}
        self._entries = {i: e for i, e in self._entries.items() if i in wanted}
        self._entries.update(entries)
        self._publish(lambda served: True)

    def update(self, entries: Mapping[str, CertEntry]) -> None:
        """Install new or renewed certificates; listeners serving them see them next handshake.

        Raises:
            ValueError: An entry has an invalid name or none; nothing is installed then.
        """
        entries = {cert_id: canonical_entry(entry) for cert_id, entry in entries.items()}
        self._entries.update(entries)
        self._publish(lambda served: any(i in entries for i in served.ids))

    def missing(self) -> list[str]:
        """Ids some listener asks for that have no certificate yet."""
        wanted = {i for served, _ in self._listeners.values() for i in served.ids}
        return sorted(wanted - self._entries.keys())

    def _publish(self, affected: Callable[[Served], bool]) -> None:
        for served, holder in self._listeners.values():
            if affected(served):
                holder.publish(self._build(served))

    def _build(self, served: Served) -> CertMap:
        entries = [self._entries[i] for i in served.ids if i in self._entries]
        default: str | None = served.default
        if default == ONLY_CERTIFICATE:
            default = entries[0].names[0] if len(entries) == 1 and entries[0].names else None
        if default is not None and not _any_covers(entries, default):
            default = None  # its certificate is not there (yet): refuse rather than guess
        return CertMap.build(entries, default=default)


def _any_covers(entries: list[CertEntry], name: str) -> bool:
    """Whether one of ``entries`` (canonical names, see :meth:`CertRegistry.update`) covers ``name``."""
    host = hostnames.normalize_host(name)
    return host is not None and any(hostnames.matches(pattern, host) for e in entries for pattern in e.names)
