"""Where certificates, renewal state, ACME accounts, orders in flight and rate-limit ledgers are kept.

The :class:`CertStore` protocol is small, async and deals in frozen
dataclasses. Three implementations share one contract-test suite:

* :class:`MemoryStore` keeps everything in dicts (tests and
  ``cert_store { type = "memory" }``), in one process: with several workers
  each has its own.
* :class:`snakeway.acme.filestore.FileStore` keeps everything on disk,
  atomically and with private keys mode 0600.
* :class:`snakeway.acme.redisstore.RedisStore` keeps everything in Redis,
  private keys sealed with AES-GCM.

Use :func:`open_store` to build the one the configuration asks for.

Names
-----
A certificate is keyed by its *name*: its first domain, a certificate name
in canonical form (:func:`snakeway.hostnames.certificate_name`: lower-case
ASCII, IDNA A-labels, LDH labels only, optionally with a leading ``*.`` for a
wildcard), so every name the configuration accepts for a certificate can be
stored. :func:`check_name` enforces this; a name that passes is safe as a
file name once :func:`name_to_path_part` has replaced ``*`` (``*.a.test`` ->
``_wildcard_.a.test``; no LDH label contains ``_``, so this cannot collide).

Validation
----------
Both stores refuse to save a bundle that could not be served: the PEMs must
parse, the key must match the leaf certificate, every domain must be among
the leaf's names, and the dates must agree with the leaf. ``load`` returns the
bundle as parsed from its PEM, so ``issuer`` and ``serial`` are always filled.

Index
-----
Besides the :class:`CertStore` protocol, both stores offer ``index`` (the
optional :class:`CertIndex` protocol): every stored certificate's
:class:`StoredMeta` (names, dates, serial and, on disk, the paths of its
current ``cert.pem`` and ``key.pem``) without parsing a PEM, in one call. It is
what lets the CertManager start with thousands of certificates in well under a
second: it registers each one with a context built on first use from those
files, and leaves the full validation of ``load`` to its checks. The index
trusts the metadata, so it skips what is visibly corrupt (missing files,
unreadable or inconsistent meta.json) but cannot notice a key that does not
match its certificate; building the context does (``load_cert_chain``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, final

from snakeway import hostnames
from snakeway.acme import crypto
from snakeway.config.model import CertStoreSettings, StoreType
from snakeway.errors import SnakewayError
from snakeway.tls.certinfo import CertificateError, parse_pair

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable
    from datetime import datetime
    from pathlib import Path

    from snakeway.acme.budget import Ledger
    from snakeway.acme.schedule import RenewalState

WILDCARD_PATH_PREFIX = "_wildcard_."


class StoreError(SnakewayError):
    """The store could not write (or read) its medium: disk full, permissions, ...

    Raised ``from`` the underlying ``OSError``. A *corrupt* entry is not an
    error: it is logged and treated as missing.
    """


class FencedOut(StoreError):
    """A write refused by the fencing check: it was made under a lock another process has taken over since.

    Nothing of the write was applied; the newer holder's data stands. The store logs it (a warning saying
    the write was rejected by the fencing check) as it raises it. See "Fences" in
    :mod:`snakeway.acme.coordination`.
    """

    def __init__(self, action: str, name: str, token: int, subject: str = "the certificate") -> None:
        super().__init__(
            f"cannot {action}: fencing token {token} of the lease on {name!r} is outdated "
            f"(another node has taken {subject} over)"
        )
        self.name = name
        self.token = token


def check_name(name: str) -> str:
    """Return ``name`` if it is a certificate name in canonical form, else raise ``ValueError``.

    Canonical: :func:`snakeway.hostnames.certificate_name` (without IP
    addresses) returns it unchanged. So no ``/``, no ``..``, no ``_``, no
    upper case, no trailing dot, at most 253 characters.
    """
    if not isinstance(name, str):
        raise ValueError(f"invalid certificate name {name!r}: expected a string")
    try:
        canonical = hostnames.certificate_name(name, ip=False)
    except ValueError as exc:
        raise ValueError(f"invalid certificate name {name!r}: {exc}") from None
    if canonical != name:
        raise ValueError(f"invalid certificate name {name!r}: expected its canonical form {canonical!r}")
    return name


def name_to_path_part(name: str) -> str:
    """The file-system form of a (valid) name: ``*.a.test`` -> ``_wildcard_.a.test``."""
    check_name(name)
    if name.startswith("*."):
        return WILDCARD_PATH_PREFIX + name[2:]
    return name


def path_part_to_name(part: str) -> str:
    """Inverse of :func:`name_to_path_part`; raises ``ValueError`` for anything else."""
    name = "*." + part[len(WILDCARD_PATH_PREFIX) :] if part.startswith(WILDCARD_PATH_PREFIX) else part
    return check_name(name)


def _check_certificate_fields(name: str, domains: tuple[str, ...], not_before: datetime, not_after: datetime) -> None:
    """What a bundle and its metadata both promise: valid names, the first being the name, aware dates."""
    check_name(name)
    if not domains or domains[0] != name:
        raise ValueError(f"domains of {name!r} must start with the name, got {domains!r}")
    for domain in domains:
        check_name(domain)
    _require_aware("not_before", not_before)
    _require_aware("not_after", not_after)


def _require_aware(label: str, value: datetime) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{label} must be timezone-aware, got {value!r}")


# --- records -----------------------------------------------------------------------------------


@final
@dataclass(frozen=True)
class CertBundle:
    """A certificate chain with its private key, ready to serve.

    Attributes:
        name: The key of the certificate: its first domain (see :func:`check_name`).
        domains: Every name it was obtained for, ``name`` first.
        cert_pem: The full chain, leaf first.
        key_pem: The leaf's private key (unencrypted PEM).
        not_before: Start of validity (aware UTC).
        not_after: End of validity (aware UTC).
        issuer: The leaf's issuer DN (RFC 4514), or "" if unknown.
        serial: The leaf's serial number in lower-case hex, or "" if unknown.

    Construct with :meth:`from_pem`, which fills the dates from the PEM and
    checks the key; the plain constructor only checks the names and dates.
    """

    name: str
    domains: tuple[str, ...]
    cert_pem: bytes
    key_pem: bytes
    not_before: datetime
    not_after: datetime
    issuer: str = ""
    serial: str = ""

    def __post_init__(self) -> None:
        _check_certificate_fields(self.name, self.domains, self.not_before, self.not_after)

    @classmethod
    def from_pem(cls, name: str, domains: tuple[str, ...], cert_pem: bytes, key_pem: bytes) -> CertBundle:
        """Build a bundle from PEM, reading dates, issuer and serial from the leaf.

        Raises:
            ValueError: invalid names, unparsable PEM, a key that does not
                match the leaf, or a domain the leaf does not cover.
        """
        domains = tuple(domains)
        try:
            info = parse_pair(cert_pem, key_pem, source=f"certificate {name!r}")
        except CertificateError as exc:
            raise ValueError(str(exc)) from exc
        try:
            crypto.load_private_key(key_pem)  # an ECDSA or RSA key, as issuance makes
        except ValueError as exc:
            raise ValueError(f"certificate {name!r}: {exc}") from exc
        covered = set(info.names)  # subjectAltName only: see snakeway.tls.certinfo
        missing = [d for d in domains if d not in covered]
        if missing:
            raise ValueError(f"certificate {name!r} does not cover {', '.join(missing)}")
        return cls(
            name=name,
            domains=domains,
            cert_pem=cert_pem,
            key_pem=key_pem,
            not_before=info.not_before,
            not_after=info.not_after,
            issuer=info.issuer,
            serial=format(info.serial, "x"),
        )

    def verified(self) -> CertBundle:
        """This bundle re-parsed from its PEM (:meth:`from_pem`), if the fields agree.

        Raises:
            ValueError: the PEM is unusable, or the dates (or a non-empty
                issuer/serial) disagree with the leaf.
        """
        parsed = CertBundle.from_pem(self.name, self.domains, self.cert_pem, self.key_pem)
        if (parsed.not_before, parsed.not_after) != (self.not_before, self.not_after):
            raise ValueError(f"certificate {self.name!r}: dates disagree with the PEM")
        if self.issuer and self.issuer != parsed.issuer:
            raise ValueError(f"certificate {self.name!r}: issuer disagrees with the PEM")
        if self.serial and self.serial != parsed.serial:
            raise ValueError(f"certificate {self.name!r}: serial disagrees with the PEM")
        return parsed


@final
@dataclass(frozen=True)
class AccountRecord:
    """An ACME account at one CA (``directory_url``).

    Attributes:
        directory_url: The CA's directory; one account is kept per directory.
        key_pem: The account's private key (the JWS signing key).
        uri: The account URL once registered, else None.
        contact: ``mailto:`` URIs given at registration.
    """

    directory_url: str
    key_pem: bytes
    uri: str | None
    contact: tuple[str, ...] = ()


@final
@dataclass(frozen=True)
class OrderRecord:
    """An order in flight, kept so a restart can finish it instead of ordering again.

    Attributes:
        name: The certificate name the order is for.
        order_url: The order's URL at the CA.
        key_pem: The certificate key generated for this order (its CSR's key).
        created: When the order was created (aware).
    """

    name: str
    order_url: str
    key_pem: bytes
    created: datetime

    def __post_init__(self) -> None:
        check_name(self.name)
        _require_aware("created", self.created)


@final
@dataclass(frozen=True)
class StoredMeta:
    """What a store knows about a stored certificate without parsing its PEM (see "Index" above).

    Attributes:
        name: The certificate's name (see :func:`check_name`).
        domains: Every name it was obtained for, ``name`` first.
        not_before: Start of validity (aware UTC), as recorded at save.
        not_after: End of validity (aware UTC), as recorded at save.
        serial: The leaf's serial number in lower-case hex, or "" if unknown.
        cert_path: The path of the current version's full chain on disk; ``None`` for a store that is not on
            disk. A ``str``, not a ``Path``: an index of 10,000 certificates is built faster without pathlib.
        key_path: The path of the current version's private key on disk; ``None`` likewise.

    Raises:
        ValueError: Invalid names or naive dates (as :class:`CertBundle`).
    """

    name: str
    domains: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: str = ""
    cert_path: str | None = None
    key_path: str | None = None

    def __post_init__(self) -> None:
        _check_certificate_fields(self.name, self.domains, self.not_before, self.not_after)

    @classmethod
    def of(cls, bundle: CertBundle) -> StoredMeta:
        """The metadata of ``bundle`` (no paths)."""
        return cls(bundle.name, bundle.domains, bundle.not_before, bundle.not_after, bundle.serial)


# --- the protocol --------------------------------------------------------------------------------


class CertStore(Protocol):
    """Persistent storage for everything certificate management needs.

    Names are validated (``ValueError`` for an invalid one). ``load*``
    return None for an entry that is absent *or* unusable (corrupt, half
    written: logged as a warning), never a bundle that cannot be served.
    Except for two records that must never silently reset: a corrupt renewal
    state loads as the longest back-off and a corrupt ledger as one that admits
    nothing for an hour (logged as an error; see :mod:`snakeway.acme.filerecords`).
    ``save*`` replace atomically and raise :class:`StoreError` if the medium
    fails; ``delete*`` of an absent entry is a no-op.

    The rate-limit :class:`~snakeway.acme.budget.Ledger` is kept per ACME
    directory (one account each), shared by every worker using the store.
    """

    async def load(self, name: str) -> CertBundle | None: ...
    async def save(self, bundle: CertBundle) -> None: ...
    async def delete(self, name: str) -> None: ...
    async def list(self) -> builtins.list[str]: ...
    async def load_state(self, name: str) -> RenewalState | None: ...
    async def save_state(self, state: RenewalState) -> None: ...
    async def load_account(self, directory_url: str) -> AccountRecord | None: ...
    async def save_account(self, account: AccountRecord) -> None: ...
    async def load_order(self, name: str) -> OrderRecord | None: ...
    async def save_order(self, order: OrderRecord) -> None: ...
    async def delete_order(self, name: str) -> None: ...
    async def load_ledger(self, directory_url: str) -> Ledger | None: ...
    async def save_ledger(self, directory_url: str, ledger: Ledger) -> None: ...


class CertIndex(Protocol):
    """Optional, beside :class:`CertStore`: list stored certificates cheaply (see "Index" above).

    Callers detect it with ``getattr(store, "index", None)``.
    """

    async def index(self, names: Iterable[str] | None = None) -> dict[str, StoredMeta]:
        """The metadata of every stored certificate (of ``names`` only, if given), by name.

        One call for all: no PEM is parsed. Absent names are left out, and so are visibly corrupt entries
        (logged, as ``load`` does). An entry listed here may still fail ``load``'s full validation.

        Raises:
            ValueError: A name in ``names`` is invalid.
            StoreError: The medium cannot be read.
        """
        ...


@final
class MemoryStore:
    """A :class:`CertStore` in dicts: nothing survives the process.

    It validates exactly as :class:`~snakeway.acme.filestore.FileStore`
    does, so code tested against it behaves the same on disk.
    """

    def __init__(self) -> None:
        self._bundles: dict[str, CertBundle] = {}
        self._states: dict[str, RenewalState] = {}
        self._accounts: dict[str, AccountRecord] = {}
        self._orders: dict[str, OrderRecord] = {}
        self._ledgers: dict[str, Ledger] = {}

    async def load(self, name: str) -> CertBundle | None:
        return self._bundles.get(check_name(name))

    async def save(self, bundle: CertBundle) -> None:
        self._bundles[bundle.name] = bundle.verified()

    async def delete(self, name: str) -> None:
        self._bundles.pop(check_name(name), None)

    async def list(self) -> builtins.list[str]:
        return sorted(self._bundles)

    async def index(self, names: Iterable[str] | None = None) -> dict[str, StoredMeta]:
        """See :class:`CertIndex`; no paths (nothing is on disk), so callers build from ``load``'s PEM."""
        wanted = sorted(self._bundles) if names is None else [check_name(name) for name in names]
        return {name: StoredMeta.of(self._bundles[name]) for name in wanted if name in self._bundles}

    async def load_state(self, name: str) -> RenewalState | None:
        return self._states.get(check_name(name))

    async def save_state(self, state: RenewalState) -> None:
        self._states[check_name(state.name)] = state

    async def load_account(self, directory_url: str) -> AccountRecord | None:
        return self._accounts.get(directory_url)

    async def save_account(self, account: AccountRecord) -> None:
        crypto.load_private_key(account.key_pem)  # same check as FileStore
        self._accounts[account.directory_url] = replace(account, contact=tuple(account.contact))

    async def load_order(self, name: str) -> OrderRecord | None:
        return self._orders.get(check_name(name))

    async def save_order(self, order: OrderRecord) -> None:
        crypto.load_private_key(order.key_pem)
        self._orders[order.name] = order

    async def delete_order(self, name: str) -> None:
        self._orders.pop(check_name(name), None)

    async def load_ledger(self, directory_url: str) -> Ledger | None:
        return self._ledgers.get(directory_url)

    async def save_ledger(self, directory_url: str, ledger: Ledger) -> None:
        self._ledgers[directory_url] = ledger


def open_store(settings: CertStoreSettings, data_dir: Path | None, state_dir: Path) -> CertStore:
    """The store the configuration asks for. No I/O happens until first use, but reading Redis's encryption key.

    Args:
        settings: ``tls_automation.cert_store``.
        data_dir: ``tls_automation.acme.data_dir`` (state, accounts, orders, ledgers),
            or None for ``<state_dir>/acme``.
        state_dir: ``server.state_dir``; certificates default to
            ``<state_dir>/certs``.

    Raises:
        StoreError: Redis's ``encryption_key_file`` cannot be read or holds no key.
    """
    if settings.type is StoreType.MEMORY:
        return MemoryStore()
    if settings.type is StoreType.REDIS:
        from snakeway.acme import redisstore

        return redisstore.from_settings(settings)
    # Imported here: filestore builds on the records above, so a top-level
    # import would be circular.
    from snakeway.acme import filestore

    return filestore.FileStore(
        cert_dir=settings.cert_dir if settings.cert_dir is not None else state_dir / "certs",
        data_dir=data_dir if data_dir is not None else state_dir / "acme",
    )
