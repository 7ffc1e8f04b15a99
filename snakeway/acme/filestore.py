"""A :class:`~snakeway.acme.store.CertStore` on the local file system.

Theory of operation
-------------------
Layout (every directory 0700, every private key 0600)::

    cert_dir/
      a.test -> .a.test@3f2a...           symlink to the current version
      .a.test@3f2a.../cert.pem            full chain, leaf first
                     /key.pem             0600
                     /meta.json           name, domains, dates, issuer, serial, saved_at
      _wildcard_.b.test -> .…             "*.b.test"
    data_dir/
      state/<name>.json                   RenewalState
      accounts/<sha256(directory)[:16]>/account.json + account.key
      orders/<name>.json + <name>.key
      ledgers/<sha256(directory)[:16]>.json   rate-limit Ledger of that directory's account

**Atomic bundles.** A certificate and its key must change together: a crash
must never leave a new certificate beside an old key. Linux cannot rename a
directory over a non-empty one, so each save writes a fresh *version*
directory ``.<name>@<random>`` (all three files fsynced, then the directory),
points a temporary symlink at it and ``os.replace``-s that over ``<name>``:
one atomic step. Old versions (and any left by a crash) are deleted after
the swap. Entries starting with ``.`` are never names (names have no leading
dot, and ``@`` never occurs in a name), so ``list()`` ignores them.
``cert_dir/<name>/cert.pem`` and ``key.pem`` are stable paths for tools that
want files.

**Atomic single files.** Everything else is one file written as: temporary
file in the same directory (created ``O_EXCL`` with its final mode, so a key
is never readable by others, even briefly), write, flush, ``fsync``,
``os.replace``, ``fsync`` of the directory. Where two files belong together
(an account's JSON and key, an order's JSON and key) the JSON is written last
and records the key's SHA-256, so a crash between the two is detected.

**Distrust on load.** Every load re-validates: all files present, PEMs parse,
the key matches the certificate, meta.json agrees with the certificate. A bad
entry is logged with ``logger.warning`` and reported as missing, so it is
never served; the manager simply obtains a new certificate. Not so a renewal
state or a rate-limit ledger: reported missing, they would drop a back-off or a
budget, so a corrupt one is logged as an error and loads as the most
conservative record instead (:mod:`snakeway.acme.filerecords`). Unreadable files
(permissions) and failed writes raise :class:`~snakeway.acme.store.StoreError`.

**The index.** ``index()`` reads only meta.json (and checks that cert.pem and
key.pem exist) for every entry, in one worker-thread call: about 30 µs a
certificate instead of a full load's ~500 µs. Each :class:`StoredMeta` carries
the paths of the *resolved* version directory, so a context built from them
later reads a certificate and key that belong together even if a save swaps
the symlink meanwhile. A save garbage-collects the old version, after which
those paths are gone: whoever saves publishes the new certificate (the
manager does, and other workers pick it up through the coordinator's stamps),
so the old paths are not used after that.

**Threads and concurrency.** All blocking I/O runs in
``trio.to_thread.run_sync``; cancellation waits for the thread, so a write is
never half-abandoned. A ``trio.Lock`` serialises the operations of one
``FileStore``, so within one process a reader never sees a version being
garbage-collected. The workers of one supervisor share a directory pair, and
that lock does not reach across them; what keeps them apart instead: a
certificate is ordered and saved only by the worker holding its lock in
:mod:`snakeway.acme.coordination`, so two saves of one name never race (the
account likewise); every other file is replaced whole (``os.replace``), so a
concurrent write is last-writer-wins, never mixed; and a load that races a
save in another worker reads either version whole or, if that save
garbage-collects the version it resolved mid-read, finds a file missing:
the entry is logged as unusable and reported missing this once, and the new
version reaches the worker through the coordinator's stamps. The layout is
POSIX-only (symlinks).
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, final

import trio

from snakeway.acme import filerecords
from snakeway.acme.entries import (
    KEY_MODE,
    CorruptEntry,
    bundle_meta,
    dump_json,
    meta_fields,
    parse_json,
    read_existing,
    remove_tree,
)
from snakeway.acme.store import (
    AccountRecord,
    CertBundle,
    OrderRecord,
    StoredMeta,
    StoreError,
    check_name,
    name_to_path_part,
    path_part_to_name,
)
from snakeway.clock import SystemClock
from snakeway.files import DIR_MODE, ensure_dir, fsync_dir, write_new

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterable

    from snakeway.acme.budget import Ledger
    from snakeway.acme.schedule import RenewalState
    from snakeway.clock import WallClock

logger = logging.getLogger(__name__)

T = TypeVar("T")

PUBLIC_MODE = 0o644


# --- the store ----------------------------------------------------------------------------------


@final
class FileStore:
    """Certificates under ``cert_dir``; renewal state, accounts and orders under ``data_dir``.

    Args:
        cert_dir: Certificate bundles (created 0700 when first written).
        data_dir: ACME state (created 0700 when first written).
        clock: Source of ``saved_at`` in meta.json, and of the moment a conservative record
            (for a corrupt renewal state or ledger) starts from.

    Construction does no I/O. See the module docstring for the layout and
    guarantees.
    """

    def __init__(self, cert_dir: Path, data_dir: Path, *, clock: WallClock | None = None) -> None:
        self.cert_dir = Path(cert_dir)
        self.data_dir = Path(data_dir)
        self._clock: WallClock = clock if clock is not None else SystemClock()
        self._lock = trio.Lock()

    async def _run(self, action: str, fn: Callable[[], T]) -> T:
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(fn)
            except OSError as exc:
                raise StoreError(f"cannot {action}: {exc}") from exc

    # --- certificate bundles ---------------------------------------------------------------------

    async def load(self, name: str) -> CertBundle | None:
        part = name_to_path_part(name)
        return await self._run(f"load certificate {name!r}", lambda: self._load_bundle(name, part))

    async def save(self, bundle: CertBundle) -> None:
        saved_at = self._clock.now()
        await self._run(f"save certificate {bundle.name!r}", lambda: self._save_bundle(bundle, saved_at))

    async def delete(self, name: str) -> None:
        part = name_to_path_part(name)
        await self._run(f"delete certificate {name!r}", lambda: self._delete_bundle(part))

    async def list(self) -> builtins.list[str]:
        return await self._run("list certificates", self._list_bundles)

    async def index(self, names: Iterable[str] | None = None) -> dict[str, StoredMeta]:
        """See :class:`~snakeway.acme.store.CertIndex`: meta.json only, one thread call for all."""
        wanted = None if names is None else [(check_name(name), name_to_path_part(name)) for name in names]
        return await self._run("index certificates", lambda: self._index(wanted))

    def _index(self, wanted: builtins.list[tuple[str, str]] | None) -> dict[str, StoredMeta]:
        # Hot at start-up (10,000 entries): plain strings and few system calls per entry (readlink, open,
        # two stats), no pathlib until the result.
        if wanted is None:
            wanted = []
            for part in self._entry_parts():
                try:
                    wanted.append((path_part_to_name(part), part))
                except ValueError:
                    logger.warning("ignoring %s: not a certificate name", self.cert_dir / part)
        cert_dir = os.fspath(self.cert_dir)
        found: dict[str, StoredMeta] = {}
        for name, part in wanted:
            entry = os.path.join(cert_dir, part)
            try:
                target = os.readlink(entry)
            except FileNotFoundError:
                continue  # absent
            except OSError:  # not a symlink: a plain directory placed by hand (or a stray file)
                target = part
            # Resolved once, so both paths name one version (as _load_bundle does).
            version = os.path.join(cert_dir, target) if os.sep not in target else os.path.realpath(entry)
            try:
                found[name] = self._parse_meta(name, version)
            except (CorruptEntry, ValueError) as exc:  # as _loaded, without a Path per entry
                logger.warning("ignoring unusable %s in %s: %s", f"certificate {name!r}", entry, exc)
        return found

    def _parse_meta(self, name: str, version: str) -> StoredMeta:
        """meta.json of ``version`` as a :class:`StoredMeta`; the same checks as :meth:`_parse_bundle` short of PEM."""
        try:
            with open(os.path.join(version, "meta.json"), "rb") as file:
                data = file.read()
        except (FileNotFoundError, NotADirectoryError) as exc:
            if not os.path.isdir(version):
                raise CorruptEntry("not a directory (dangling link?)") from exc
            raise CorruptEntry("meta.json is missing") from exc
        domains, not_before, not_after, _, serial = meta_fields(parse_json(data, "meta.json"), name, "meta.json")
        cert_path, key_path = os.path.join(version, "cert.pem"), os.path.join(version, "key.pem")
        for path in (cert_path, key_path):
            if not os.path.isfile(path):
                raise CorruptEntry(f"{os.path.basename(path)} is missing")
        return StoredMeta(name, domains, not_before, not_after, serial, cert_path, key_path)

    def _entry_parts(self) -> builtins.list[str]:
        """The file names of ``cert_dir`` that may be certificates (not hidden), sorted."""
        try:
            with os.scandir(self.cert_dir) as entries:
                return sorted(e.name for e in entries if not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def _load_bundle(self, name: str, part: str) -> CertBundle | None:
        entry = self.cert_dir / part
        if not os.path.lexists(entry):
            return None
        # Resolve once, so all three files come from the same version.
        version = Path(os.path.realpath(entry))
        return filerecords.loaded(f"certificate {name!r}", entry, lambda: self._parse_bundle(name, version))

    def _parse_bundle(self, name: str, version: Path) -> CertBundle:
        if not version.is_dir():
            raise CorruptEntry("not a directory (dangling link?)")
        meta = parse_json(read_existing(version / "meta.json"), "meta.json")
        cert_pem = read_existing(version / "cert.pem")
        key_pem = read_existing(version / "key.pem")
        domains, *recorded = meta_fields(meta, name, "meta.json")
        bundle = CertBundle.from_pem(name, domains, cert_pem, key_pem)
        if tuple(recorded) != (bundle.not_before, bundle.not_after, bundle.issuer, bundle.serial):
            raise CorruptEntry("meta.json disagrees with cert.pem")
        return bundle

    def _save_bundle(self, bundle: CertBundle, saved_at: datetime) -> None:
        bundle = bundle.verified()  # raises ValueError: never persist what cannot be served
        part = name_to_path_part(bundle.name)
        meta = bundle_meta(bundle, saved_at)
        ensure_dir(self.cert_dir)
        token = secrets.token_hex(8)
        version = self.cert_dir / f".{part}@{token}"
        link_tmp = self.cert_dir / f".{part}@link-{token}"
        entry = self.cert_dir / part
        try:
            os.mkdir(version, DIR_MODE)
            write_new(version / "key.pem", bundle.key_pem, KEY_MODE)
            write_new(version / "cert.pem", bundle.cert_pem, PUBLIC_MODE)
            write_new(version / "meta.json", dump_json(meta), PUBLIC_MODE)
            fsync_dir(version)
            os.symlink(version.name, link_tmp)
            if entry.is_dir() and not entry.is_symlink():
                # A plain directory (placed by hand): move it aside first. Not
                # atomic, but only ever happens once for such an entry.
                os.rename(entry, self.cert_dir / f".{part}@old-{token}")
            os.replace(link_tmp, entry)
        except BaseException:
            link_tmp.unlink(missing_ok=True)
            remove_tree(version)
            raise
        fsync_dir(self.cert_dir)
        self._collect_garbage(part, keep=version.name)

    def _collect_garbage(self, part: str, *, keep: str | None) -> None:
        """Remove old and crash-leftover versions of ``part``."""
        prefix = f".{part}@"
        with os.scandir(self.cert_dir) as entries:
            stale = [e.path for e in entries if e.name.startswith(prefix) and e.name != keep]
        for path in stale:
            if os.path.islink(path):
                os.unlink(path)
            else:
                remove_tree(Path(path))

    def _delete_bundle(self, part: str) -> None:
        entry = self.cert_dir / part
        if entry.is_symlink():
            os.unlink(entry)
        elif entry.is_dir():
            os.rename(entry, self.cert_dir / f".{part}@old-{secrets.token_hex(8)}")
        elif os.path.lexists(entry):
            os.unlink(entry)
        else:
            return
        fsync_dir(self.cert_dir)
        self._collect_garbage(part, keep=None)

    def _list_bundles(self) -> builtins.list[str]:
        names = []
        for part in self._entry_parts():
            try:
                name = path_part_to_name(part)
            except ValueError:
                logger.warning("ignoring %s: not a certificate name", self.cert_dir / part)
                continue
            if self._load_bundle(name, part) is not None:
                names.append(name)
        return sorted(names)

    # --- renewal state, accounts, orders, ledgers: small JSON files (snakeway.acme.filerecords) ---------

    async def load_state(self, name: str) -> RenewalState | None:
        """The renewal state of ``name``; a corrupt one loads as :meth:`RenewalState.conservative`."""
        check_name(name)
        now = self._clock.now()
        return await self._run(
            f"load renewal state of {name!r}", lambda: filerecords.read_state(self.data_dir, name, now)
        )

    async def save_state(self, state: RenewalState) -> None:
        check_name(state.name)
        await self._run(f"save renewal state of {state.name!r}", lambda: filerecords.write_state(self.data_dir, state))

    async def load_account(self, directory_url: str) -> AccountRecord | None:
        return await self._run(
            f"load ACME account for {directory_url}", lambda: filerecords.read_account(self.data_dir, directory_url)
        )

    async def save_account(self, account: AccountRecord) -> None:
        await self._run(
            f"save ACME account for {account.directory_url}", lambda: filerecords.write_account(self.data_dir, account)
        )

    async def load_order(self, name: str) -> OrderRecord | None:
        check_name(name)
        return await self._run(f"load order for {name!r}", lambda: filerecords.read_order(self.data_dir, name))

    async def save_order(self, order: OrderRecord) -> None:
        await self._run(f"save order for {order.name!r}", lambda: filerecords.write_order(self.data_dir, order))

    async def delete_order(self, name: str) -> None:
        check_name(name)
        await self._run(f"delete order for {name!r}", lambda: filerecords.remove_order(self.data_dir, name))

    async def load_ledger(self, directory_url: str) -> Ledger | None:
        """The rate-limit ledger of ``directory_url``'s account; a corrupt one loads as :meth:`Ledger.conservative`."""
        now = self._clock.now()
        return await self._run(
            f"load rate-limit ledger for {directory_url}",
            lambda: filerecords.read_ledger(self.data_dir, directory_url, now),
        )

    async def save_ledger(self, directory_url: str, ledger: Ledger) -> None:
        await self._run(
            f"save rate-limit ledger for {directory_url}",
            lambda: filerecords.write_ledger(self.data_dir, directory_url, ledger),
        )
