"""Which certificate to serve for a server name: an immutable map, swapped whole. Pure, no I/O.

A :class:`CertMap` maps canonical names (see :mod:`snakeway.tls.names`) to :class:`CertEntry` objects, each a
ready :class:`ssl.SSLContext` plus the names its certificate covers. It never changes: a renewal builds a new map
with :meth:`CertMap.with_entries` and the owner publishes it with one reference assignment
(:meth:`CertMapHolder.publish`). The SNI callback reads :attr:`CertMapHolder.current` once per handshake, so
every handshake sees either the old map or the new one, whole, and needs no lock.

Lookup order: the exact name, then the wildcard one label up (``a.b.test`` -> ``*.b.test``); IP addresses match
exactly only. :meth:`CertMap.lookup` is total: it never raises, whatever the client sent.

The default certificate (for clients that send no SNI or an unknown name) is either a host name whose entry
serves as default, which follows renewals, or a fixed context. Passing a context that is also an entry's context
is turned into the host-name form, so it follows renewals too.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, final

from snakeway.tls import names as _names

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterable, Mapping


@final
@dataclass(frozen=True)
class CertEntry:
    """One certificate: its canonical names and the context that serves it.

    ``names`` is empty only for a default context whose names the map was not told.
    """

    names: tuple[str, ...]
    context: ssl.SSLContext


@final
class CertMap:
    """An immutable map from server name to certificate context. Build with :meth:`build`."""

    # _default_name is a key of _by_name (an exact name or a wildcard), so the default follows renewals.
    __slots__ = ("_by_name", "_default_entry", "_default_name")

    def __init__(
        self,
        by_name: Mapping[str, CertEntry],
        *,
        default_name: str | None = None,
        default_entry: CertEntry | None = None,
    ) -> None:
        """Internal: use :meth:`build`, :meth:`empty` or the ``with_*`` methods, which validate."""
        self._by_name: Mapping[str, CertEntry] = MappingProxyType(dict(by_name))
        self._default_name = default_name
        self._default_entry = default_entry

    @classmethod
    def empty(cls) -> CertMap:
        """A map without certificates: every handshake is refused."""
        return cls({})

    @classmethod
    def build(
        cls,
        entries: Iterable[tuple[Iterable[str], ssl.SSLContext]],
        default: ssl.SSLContext | str | None = None,
    ) -> CertMap:
        """A map from ``(names, context)`` pairs.

        Args:
            entries: Each certificate's names (exact, ``*.parent`` or IP; any case, IDNA U- or A-labels,
                trailing dot allowed) and its context from :mod:`snakeway.tls.contexts`. When two entries
                claim a name, the later one wins.
            default: What to serve without SNI or for an unknown name: a host name covered by one of the
                entries, a context, or ``None`` to refuse such handshakes (``unrecognized_name`` alert).

        Raises:
            ValueError: A name is invalid, an entry has no name, or ``default`` names a host no entry covers.
        """
        return cls.empty().with_entries(entries).with_default(default)

    # --- reading ------------------------------------------------------------------------------------------------

    def lookup(self, name: object) -> ssl.SSLContext | None:
        """The context for server name ``name`` (exact, then wildcard), or ``None``. Total: never raises.

        The default is *not* consulted here; see :meth:`choose`.
        """
        entry = self.lookup_entry(name)
        return entry.context if entry is not None else None

    def lookup_entry(self, name: object) -> CertEntry | None:
        """Like :meth:`lookup`, with the certificate's names. Total: never raises."""
        key = self._key_for(name)
        return self._by_name[key] if key is not None else None

    def _key_for(self, name: object) -> str | None:
        host = _names.normalize_host(name)
        if host is None:
            return None
        if host in self._by_name:
            return host
        wildcard = _names.wildcard_for(host)
        return wildcard if wildcard is not None and wildcard in self._by_name else None

    def choose(self, name: object) -> CertEntry | None:
        """What to serve for SNI ``name`` (``None`` if the client sent none): its entry, else the default.

        ``None`` means: refuse the handshake. Total: never raises.
        """
        entry = self.lookup_entry(name)
        return entry if entry is not None else self.default_entry

    @property
    def default_entry(self) -> CertEntry | None:
        """The entry served without SNI or for an unknown name, if any."""
        if self._default_name is not None:
            return self._by_name.get(self._default_name)
        return self._default_entry

    @property
    def default(self) -> ssl.SSLContext | None:
        """The context served without SNI or for an unknown name, if any."""
        entry = self.default_entry
        return entry.context if entry is not None else None

    @property
    def names(self) -> tuple[str, ...]:
        """Every canonical name (and wildcard) the map answers for, sorted."""
        return tuple(sorted(self._by_name))

    @property
    def entries(self) -> tuple[CertEntry, ...]:
        """The distinct entries reachable by name, in name order."""
        seen: dict[int, CertEntry] = {}
        for name in self.names:
            entry = self._by_name[name]
            seen.setdefault(id(entry), entry)
        return tuple(seen.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        default = self._default_name or ("<context>" if self._default_entry else None)
        return f"CertMap(names={list(self.names)!r}, default={default!r})"

    # --- deriving new maps --------------------------------------------------------------------------------------

    def with_entries(self, entries: Iterable[tuple[Iterable[str], ssl.SSLContext]]) -> CertMap:
        """A new map where each name of ``entries`` now maps to its new context (a renewal, a new site).

        Names that ``entries`` do not mention keep their certificate; the default follows if it is a host name.

        Raises:
            ValueError: A name is invalid or an entry has no name.
        """
        by_name = dict(self._by_name)
        for raw_names, context in entries:
            if isinstance(raw_names, str):
                raise ValueError(f"entry names must be an iterable of names, not the string {raw_names!r}")
            canonical = tuple(dict.fromkeys(_names.normalize_pattern(name) for name in raw_names))
            if not canonical:
                raise ValueError("a certificate entry needs at least one name")
            entry = CertEntry(canonical, context)
            by_name.update(dict.fromkeys(canonical, entry))
        return CertMap(by_name, default_name=self._default_name, default_entry=self._default_entry)

    def without(self, names: Iterable[str]) -> CertMap:
        """A new map that no longer answers for ``names`` (a removed site).

        Raises:
            ValueError: A name is invalid.
        """
        by_name = dict(self._by_name)
        for name in names:
            by_name.pop(_names.normalize_pattern(name), None)
        return CertMap(by_name, default_name=self._default_name, default_entry=self._default_entry)

    def with_default(self, default: ssl.SSLContext | str | None) -> CertMap:
        """A new map with another default (see :meth:`build`).

        Raises:
            ValueError: ``default`` is a name no entry covers.
        """
        if default is None:
            return CertMap(self._by_name)
        if isinstance(default, str):
            key = self._key_for(default)
            if key is None:
                raise ValueError(f"the default certificate name {default!r} is not covered by any certificate")
            return CertMap(self._by_name, default_name=key)
        for key, entry in sorted(self._by_name.items()):
            if entry.context is default:
                return CertMap(self._by_name, default_name=key)
        return CertMap(self._by_name, default_entry=CertEntry((), default))


@final
class CertMapHolder:
    """The one mutable reference to the current :class:`CertMap`, owned by whoever renews certificates.

    Readers (the SNI callback) read :attr:`current` once per handshake; the owner replaces it whole with
    :meth:`publish`. One attribute assignment: atomic, and trio runs one task at a time anyway.
    """

    __slots__ = ("current",)

    def __init__(self, initial: CertMap | None = None) -> None:
        self.current: CertMap = initial if initial is not None else CertMap.empty()

    def publish(self, new: CertMap) -> None:
        """Make ``new`` the map for every handshake from now on; handshakes under way keep the one they read."""
        self.current = new
