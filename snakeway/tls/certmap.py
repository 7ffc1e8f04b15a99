"""Which certificate to serve for a server name: an immutable map, swapped whole. Pure, no I/O.

A :class:`CertMap` maps canonical names (see :mod:`snakeway.hostnames`) to :class:`CertEntry` objects, each a
ready :class:`ssl.SSLContext` plus the names its certificate covers. It never changes: a renewal builds a new map
with :meth:`CertMap.with_entries` and the owner publishes it with one reference assignment
(:meth:`CertMapHolder.publish`). The SNI callback reads :attr:`CertMapHolder.current` once per handshake, so
every handshake sees either the old map or the new one, whole, and needs no lock.

Lookup order: the exact name, then the wildcard one label up (``a.b.test`` -> ``*.b.test``); IP addresses match
exactly only. :meth:`CertMap.lookup` is total: it never raises, whatever the client sent.

The default certificate (for clients that send no SNI or an unknown name) is either a host name whose entry
serves as default, which follows renewals, or a fixed context. Passing a context that is also an entry's context
is turned into the host-name form, so it follows renewals too.

Lazy contexts
-------------
With thousands of certificates, building every :class:`ssl.SSLContext` at start-up costs seconds and a context's
memory per certificate, most of them for names nobody asks for soon. An entry may therefore hold a
:class:`LazyContext` instead: a builder (a plain callable, injected, so this module still does no I/O itself)
that runs on the first :attr:`CertEntry.context` access, in practice inside the SNI callback of the first
handshake for one of its names, and whose result is cached. Such a build must be cheap because the handshake
waits for it: the store's own files through ``load_cert_chain`` take about a millisecond with OpenSSL 3.0 (most
of it PEM decoding), once per certificate.

A build that fails is cached too: it is logged once as a warning, ``context`` is ``None`` from then on and every
handshake for that certificate is refused (:func:`snakeway.tls.sni.make_sni_callback` answers
``internal_error``), without retrying, until the owner publishes a replacement. So :meth:`CertMap.lookup` and
:meth:`CertMap.choose` stay total. Lazy contexts are built and read on trio's thread only; a map can still be
shared by any number of listeners, and a renewal replaces the entry, not the cached context.

Entries keep their :class:`LazyContext` when the map is rebuilt (:meth:`CertMap.with_entries` accepts
:class:`CertEntry` objects), so a context built once stays built across map swaps of unrelated certificates.
"""

from __future__ import annotations

import logging
import ssl
from types import MappingProxyType
from typing import TYPE_CHECKING, final

from snakeway import hostnames

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

logger = logging.getLogger(__name__)


@final
class LazyContext:
    """A certificate's context, built by ``build`` on first use and cached; a failed build is cached as failed.

    Args:
        build: Makes the context (for example :func:`snakeway.tls.contexts.server_context` on the store's files).
            It runs synchronously in whichever code first asks, usually the SNI callback, so it must be quick.
        source: What to call the certificate in the log (its name, a file).

    Error handling:
        Any ``Exception`` from ``build`` is caught, logged once as a warning and remembered: :meth:`get` then
        returns ``None`` without calling ``build`` again. The one broad ``except`` is deliberate: this runs
        inside the SNI callback, which must never raise.
    """

    __slots__ = ("_build", "_context", "_error", "source")

    def __init__(self, build: Callable[[], ssl.SSLContext], *, source: str) -> None:
        self._build: Callable[[], ssl.SSLContext] | None = build
        self._context: ssl.SSLContext | None = None
        self._error: str | None = None
        self.source = source

    def get(self) -> ssl.SSLContext | None:
        """The context, built now if this is the first call; ``None`` if its build failed (now or before)."""
        context = self._context
        if context is not None or self._build is None:
            return context
        try:
            context = self._build()
        except Exception as exc:  # see "Error handling": never out of the SNI callback
            self._error = str(exc) or type(exc).__name__
            self._build = None  # never again; drop what the builder holds (PEM bytes)
            logger.warning(
                "certificate %s cannot be served: %s; its handshakes are refused until it is replaced",
                self.source, self._error,
            )
            return None
        self._context, self._build = context, None
        return context

    @property
    def built(self) -> ssl.SSLContext | None:
        """The context if it has been built, without building it."""
        return self._context

    @property
    def error(self) -> str | None:
        """Why the build failed, if it did."""
        return self._error

    def __repr__(self) -> str:
        state = "built" if self._context is not None else "failed" if self._error is not None else "pending"
        return f"LazyContext({self.source!r}, {state})"


# What serves one certificate: a ready context, or one built on first use.
ContextSource = ssl.SSLContext | LazyContext


@final
class CertEntry:
    """One certificate: its canonical names and the context that serves it, ready or built on first use.

    ``CertEntry(names, context)`` with a ready :class:`ssl.SSLContext`, or ``CertEntry(names, LazyContext(...))``.
    ``names`` is empty only for a default context whose names the map was not told. Immutable; two entries are
    equal when they have the same names and the same context (or the same :class:`LazyContext`).
    """

    __slots__ = ("_canonical", "_source", "names")
    names: tuple[str, ...]
    _source: ContextSource
    _canonical: bool

    def __init__(self, names: tuple[str, ...], context: ContextSource, *, _canonical: bool = False) -> None:
        if not isinstance(context, (ssl.SSLContext, LazyContext)):
            raise TypeError(f"a certificate entry needs an SSLContext or a LazyContext, not {context!r}")
        object.__setattr__(self, "names", tuple(names))
        object.__setattr__(self, "_source", context)
        object.__setattr__(self, "_canonical", _canonical)  # names known canonical: maps reuse the entry as is

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CertEntry is immutable (cannot set {name!r})")

    @property
    def context(self) -> ssl.SSLContext | None:
        """The context that serves this certificate, built now if it is lazy and not built yet.

        ``None`` only for a lazy entry whose build failed (see :class:`LazyContext`). Never raises.
        """
        source = self._source
        return source.get() if isinstance(source, LazyContext) else source

    @property
    def lazy(self) -> LazyContext | None:
        """The :class:`LazyContext`, if this entry's context is (or was) built on first use."""
        return self._source if isinstance(self._source, LazyContext) else None

    @property
    def built(self) -> ssl.SSLContext | None:
        """The context if it is ready, without building it (a lazy entry not yet used gives ``None``)."""
        source = self._source
        return source.built if isinstance(source, LazyContext) else source

    @property
    def source(self) -> ContextSource:
        """What :meth:`CertMap.with_entries` needs to share this entry's context: the context or its builder."""
        return self._source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CertEntry):
            return NotImplemented
        return self.names == other.names and self._source is other._source

    def __hash__(self) -> int:
        return hash((self.names, id(self._source)))

    def __repr__(self) -> str:
        return f"CertEntry({self.names!r}, {self._source!r})"


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
        entries: Iterable[tuple[Iterable[str], ContextSource] | CertEntry],
        default: ssl.SSLContext | str | None = None,
    ) -> CertMap:
        """A map from ``(names, context)`` pairs (or :class:`CertEntry` objects, see :meth:`with_entries`).

        Args:
            entries: Each certificate's names (exact, ``*.parent`` or IP; any case, IDNA U- or A-labels,
                trailing dot allowed) and its context from :mod:`snakeway.tls.contexts`, ready or a
                :class:`LazyContext`. When two entries claim a name, the later one wins.
            default: What to serve without SNI or for an unknown name: a host name covered by one of the
                entries, a context, or ``None`` to refuse such handshakes (``unrecognized_name`` alert).

        Raises:
            ValueError: A name is invalid, an entry has no name, or ``default`` names a host no entry covers.
        """
        return cls.empty().with_entries(entries).with_default(default)

    # --- reading ------------------------------------------------------------------------------------------------

    def lookup(self, name: object) -> ssl.SSLContext | None:
        """The context for server name ``name`` (exact, then wildcard), or ``None``. Total: never raises.

        The default is *not* consulted here; see :meth:`choose`. A lazy entry's context is built here on first
        use; ``None`` also when that build failed.
        """
        entry = self.lookup_entry(name)
        return entry.context if entry is not None else None

    def lookup_entry(self, name: object) -> CertEntry | None:
        """Like :meth:`lookup`, with the certificate's names. Total: never raises."""
        key = self._key_for(name)
        return self._by_name[key] if key is not None else None

    def _key_for(self, name: object) -> str | None:
        # Fast paths (the SNI callback runs this for every handshake). An SNI is normally canonical already:
        # lower-case A-labels, no trailing dot. A string equal to a key is canonical (normalisation is
        # idempotent), unless it is a wildcard key ("*..."), which a client's name never matches. A string
        # that hostnames.CANONICAL_HOST matches is a canonical host name and not an IP address, so its one wildcard is
        # "*." + everything after the first label. Anything else goes through full normalisation.
        if type(name) is str:
            if name in self._by_name and not name.startswith("*"):
                return name
            if len(name) <= hostnames.MAX_NAME_CHARS and hostnames.CANONICAL_HOST.fullmatch(name):
                _first, dot, parent = name.partition(".")
                wildcard = "*." + parent
                return wildcard if dot and wildcard in self._by_name else None
        host = hostnames.normalize_host(name)
        if host is None:
            return None
        if host in self._by_name:
            return host
        pattern = hostnames.wildcard_for(host)
        return pattern if pattern is not None and pattern in self._by_name else None

    def choose(self, name: object) -> CertEntry | None:
        """What to serve for SNI ``name`` (``None`` if the client sent none): its entry, else the default.

        ``None`` means: refuse the handshake. Total: never raises. The entry's context may still be lazy (its
        :attr:`~CertEntry.context` builds it) and, if that build fails, ``None``: refuse then too.
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

    def with_entries(self, entries: Iterable[tuple[Iterable[str], ContextSource] | CertEntry]) -> CertMap:
        """A new map where each name of ``entries`` now maps to its new context (a renewal, a new site).

        Each item is a ``(names, context)`` pair, where ``context`` is an :class:`ssl.SSLContext` or a
        :class:`LazyContext`, or a :class:`CertEntry` (whose context, built or not, is shared, not rebuilt).
        Names that ``entries`` do not mention keep their certificate; the default follows if it is a host name.

        Raises:
            ValueError: A name is invalid or an entry has no name.
        """
        by_name = dict(self._by_name)
        for item in entries:
            entry = canonical_entry(item) if isinstance(item, CertEntry) else _entry(*item)
            by_name.update(dict.fromkeys(entry.names, entry))
        return CertMap(by_name, default_name=self._default_name, default_entry=self._default_entry)

    def without(self, names: Iterable[str]) -> CertMap:
        """A new map that no longer answers for ``names`` (a removed site).

        Raises:
            ValueError: A name is invalid.
        """
        by_name = dict(self._by_name)
        for name in names:
            by_name.pop(hostnames.normalize_pattern(name), None)
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
            if entry.source is default:  # never builds a lazy context
                return CertMap(self._by_name, default_name=key)
        return CertMap(self._by_name, default_entry=CertEntry((), default))


def canonical_entry(entry: CertEntry) -> CertEntry:
    """``entry`` with canonical names, sharing its context (``entry`` itself if they already are).

    Raises:
        ValueError: A name is invalid, or there is none.
    """
    return entry if entry._canonical else _entry(entry.names, entry.source)


def _canonical_name(name: str) -> str:
    # Already canonical (the cheap check first): 10,000 certificates at start-up.
    if type(name) is str and len(name) <= hostnames.MAX_NAME_CHARS and hostnames.CANONICAL_PATTERN.fullmatch(name):
        return name
    return hostnames.normalize_pattern(name)


def _entry(raw_names: Iterable[str], context: ContextSource) -> CertEntry:
    if isinstance(raw_names, str):
        raise ValueError(f"entry names must be an iterable of names, not the string {raw_names!r}")
    canonical = tuple(dict.fromkeys(_canonical_name(name) for name in raw_names))
    if not canonical:
        raise ValueError("a certificate entry needs at least one name")
    return CertEntry(canonical, context, _canonical=True)


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
