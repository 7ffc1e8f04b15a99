"""A Redis certificate store with a local read-through copy: certificates stay served while Redis is away.

Theory of operation
-------------------
:class:`CachedStore` wraps the :class:`~snakeway.acme.redisstore.RedisStore` a serving process uses (see
:func:`open_cached`) and keeps a copy of what it needs to serve in a
:class:`~snakeway.acme.filestore.FileStore` under ``<state_dir>/redis-cache`` (0700; private keys 0600, as
the file store keeps them; the workers of one node share it):

* **read-through**: ``load``, ``index``, ``pems``, ``list`` and ``load_account`` ask Redis. Every certificate
  Redis hands out in full (``load``: each certificate's check, and the store watch's pick-up of another
  node's) and every ACME account is written to the copy, unless the copy already holds that serial (that
  account): a steady state writes nothing. ``save``, ``save_account`` and ``delete`` go to Redis, then to the
  copy; a Redis failure there raises :class:`~snakeway.acme.store.StoreError` as before, and the copy is left
  alone (it holds what Redis held). ``index`` does not copy (it reads no PEM): a certificate reaches the copy
  at its first check after start-up;
* **Redis away**: when Redis cannot be reached (a refused connection, a timeout, an error reply), those reads
  answer from the copy instead, so a node keeps serving, and a node starting while Redis is down serves what
  its copy holds. One line is logged when Redis becomes unreachable ("serving N certificates from the local
  copy") and one when it is reachable again, whichever operation noticed it. Everything else (renewal state,
  orders, rate-limit ledgers) is not copied: it passes through and fails while Redis is away, and the
  renewal machinery retries it later;
* **re-seeding**: when Redis answers but lacks a certificate (or the account) that the copy holds unexpired
  (Redis restarted without persistence, or its data was lost), the copy is written back to Redis and
  returned, instead of "missing" (which would order it again). Every node holding a copy does this; if two
  copies differ, the last write wins and every node picks that one up, as after any save.

A key that cannot be decrypted is a configuration mistake, not Redis away: it raises as it does without the
copy. Writes to the copy take an ``flock`` on ``<copy>/.lock``, so two workers of one node copying the same
certificate at once cannot remove each other's new version; a copy that cannot be written (disk full) is
logged once per state change and does not fail the operation: Redis has the data.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from typing import TYPE_CHECKING, TypeVar, final

import trio
from coredis.exceptions import RedisError

from snakeway.acme import redisclient, redisstore
from snakeway.acme.filestore import FileStore
from snakeway.acme.redisrecords import redacted
from snakeway.acme.store import StoreError
from snakeway.clock import SystemClock
from snakeway.files import ensure_dir

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
    from pathlib import Path

    from snakeway.acme.budget import Ledger
    from snakeway.acme.redisstore import RedisStore
    from snakeway.acme.schedule import RenewalState
    from snakeway.acme.store import AccountRecord, CertBundle, OrderRecord, StoredMeta
    from snakeway.clock import WallClock
    from snakeway.config.model import CertStoreSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

COPY_DIR = "redis-cache"  # under server.state_dir
LOCK_FILE = ".lock"


def open_cached(settings: CertStoreSettings, state_dir: Path, *, clock: WallClock | None = None) -> CachedStore:
    """The Redis store ``settings`` describe, with its local copy in ``<state_dir>/redis-cache``.

    Raises:
        StoreError: As :func:`snakeway.acme.redisstore.from_settings` (the encryption key file).
    """
    return CachedStore(redisstore.from_settings(settings, clock=clock), state_dir / COPY_DIR, clock=clock)


class RedisAway(StoreError):
    """Redis could not be reached (or answered with an error): the copy answers reads meanwhile."""


@final
class CachedStore:
    """``redis`` with a read-through copy in ``copy_dir`` (see the module docstring).

    Args:
        redis: The store in Redis.
        copy_dir: The local copy's directory: ``certs/`` and ``acme/`` of a :class:`FileStore` in it.
        clock: What "unexpired" is measured against (re-seeding, the count of certificates served).

    Construction does no I/O.
    """

    def __init__(self, redis: RedisStore, copy_dir: Path, *, clock: WallClock | None = None) -> None:
        self.redis = redis
        self.copy_dir = copy_dir
        self.copy = FileStore(copy_dir / "certs", copy_dir / "acme", clock=clock)
        self._clock: WallClock = clock if clock is not None else SystemClock()
        self._away = False
        self._copy_failing = False

    # --- Redis, and whether it is there --------------------------------------------------------------------

    async def _redis(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` on Redis, noting whether Redis answered (logged once per change).

        Raises:
            RedisAway: Redis cannot be reached.
            StoreError: Anything else the store refuses (a key that cannot be decrypted).
        """
        try:
            result = await call()
        except StoreError as exc:
            if not isinstance(exc.__cause__, (RedisError, OSError, BaseExceptionGroup)):
                raise
            await self._went_away(exc)
            raise RedisAway(str(exc)) from exc
        if self._away:
            self._away = False
            logger.info("Redis at %s reachable again", redacted(self.redis.url))
        return result

    async def _went_away(self, exc: StoreError) -> None:
        if self._away:
            return
        self._away = True
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup):
            cause = redisclient.redis_failure(cause)
        now = self._clock.now()
        kept = await self._from_copy(self.copy.index) or {}
        serving = sum(1 for meta in kept.values() if meta.not_after > now)
        logger.warning(
            "Redis at %s unreachable (%s): serving %d %s from the local copy in %s", redacted(self.redis.url),
            cause, serving, "certificate" if serving == 1 else "certificates", self.copy_dir,
        )

    # --- the copy --------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _copy_lock(self) -> AsyncIterator[None]:
        fd = await trio.to_thread.run_sync(_lock, self.copy_dir)
        try:
            yield
        finally:
            os.close(fd)

    async def _to_copy(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` on the copy under its lock; a failure is logged (once per change), not raised."""
        try:
            async with self._copy_lock():
                await write()
        except (StoreError, OSError) as exc:
            if not self._copy_failing:
                logger.warning("cannot keep the local copy of Redis in %s up to date: %s", self.copy_dir, exc)
            self._copy_failing = True
            return
        if self._copy_failing:
            logger.info("the local copy of Redis in %s is kept up to date again", self.copy_dir)
        self._copy_failing = False

    async def _from_copy(self, read: Callable[[], Awaitable[T]]) -> T | None:
        """``read()`` on the copy, or None if the copy cannot be read (logged): Redis answers for itself."""
        try:
            return await read()
        except StoreError as exc:
            logger.warning("cannot read the local copy of Redis in %s: %s", self.copy_dir, exc)
            return None

    async def _copy_bundle(self, bundle: CertBundle) -> None:
        async def write() -> None:
            held = await self.copy.index([bundle.name])
            if bundle.name not in held or held[bundle.name].serial != bundle.serial:
                await self.copy.save(bundle)

        await self._to_copy(write)

    async def _copy_account(self, account: AccountRecord) -> None:
        async def write() -> None:
            if await self.copy.load_account(account.directory_url) != account:
                await self.copy.save_account(account)

        await self._to_copy(write)

    async def _reseed(self, name: str) -> CertBundle | None:
        """The copy's unexpired certificate ``name`` written back into Redis (which lacks it), or None."""
        kept = await self._from_copy(lambda: self.copy.load(name))
        if kept is None or kept.not_after <= self._clock.now():
            return None
        return await self._write_back(f"the certificate for {name}", kept, self.redis.save)

    async def _write_back(self, what: str, kept: T, save: Callable[[T], Awaitable[None]]) -> T:
        """``save(kept)``: the copy's ``kept`` into Redis, which lacks it; returns ``kept``, served either way."""
        try:
            await self._redis(lambda: save(kept))
        except RedisAway:
            return kept  # gone again meanwhile: serve the copy, re-seed on a later look
        logger.warning("re-seeded Redis at %s with %s from the local copy (Redis had none)",
                       redacted(self.redis.url), what)
        return kept

    # --- certificates ------------------------------------------------------------------------------------------

    async def load(self, name: str) -> CertBundle | None:
        try:
            bundle = await self._redis(lambda: self.redis.load(name))
        except RedisAway:
            return await self.copy.load(name)
        if bundle is None:
            return await self._reseed(name)
        await self._copy_bundle(bundle)
        return bundle

    async def save(self, bundle: CertBundle) -> None:
        await self._redis(lambda: self.redis.save(bundle))
        await self._copy_bundle(bundle)

    async def delete(self, name: str) -> None:
        await self._redis(lambda: self.redis.delete(name))
        await self._to_copy(lambda: self.copy.delete(name))

    async def list(self) -> builtins.list[str]:
        try:
            return await self._redis(self.redis.list)
        except RedisAway:
            return await self.copy.list()

    async def index(self, names: Iterable[str] | None = None) -> dict[str, StoredMeta]:
        """Redis's index; certificates it lacks and the copy holds unexpired are re-seeded and listed too.

        With Redis away, the copy's index: its entries carry the paths of the copy's files.
        """
        wanted = None if names is None else list(names)
        try:
            found = await self._redis(lambda: self.redis.index(wanted))
        except RedisAway:
            return await self.copy.index(wanted)
        missing = None if wanted is None else [name for name in wanted if name not in found]
        if missing == []:
            return found  # the common case: the copy is not even read
        now = self._clock.now()
        kept = await self._from_copy(lambda: self.copy.index(missing)) or {}
        for name, meta in kept.items():
            if name not in found and meta.not_after > now and await self._reseed(name) is not None:
                found[name] = meta
        return dict(sorted(found.items()))

    async def pems(self, names: builtins.list[str]) -> dict[str, tuple[bytes, bytes]]:
        """See :meth:`RedisStore.pems`; from the copy while Redis is away."""
        try:
            return await self._redis(lambda: self.redis.pems(names))
        except RedisAway:
            found: dict[str, tuple[bytes, bytes]] = {}
            for name in names:
                bundle = await self.copy.load(name)
                if bundle is not None:
                    found[name] = (bundle.cert_pem, bundle.key_pem)
            return found

    # --- the ACME account ------------------------------------------------------------------------------------

    async def load_account(self, directory_url: str) -> AccountRecord | None:
        try:
            account = await self._redis(lambda: self.redis.load_account(directory_url))
        except RedisAway:
            return await self.copy.load_account(directory_url)
        if account is not None:
            await self._copy_account(account)
            return account
        kept = await self._from_copy(lambda: self.copy.load_account(directory_url))
        if kept is None:
            return None
        return await self._write_back(f"the ACME account for {directory_url}", kept, self.redis.save_account)

    async def save_account(self, account: AccountRecord) -> None:
        await self._redis(lambda: self.redis.save_account(account))
        await self._copy_account(account)

    # --- passed through: renewal state, orders, ledgers ----------------------------------------------------

    async def load_state(self, name: str) -> RenewalState | None:
        return await self._redis(lambda: self.redis.load_state(name))

    async def save_state(self, state: RenewalState) -> None:
        await self._redis(lambda: self.redis.save_state(state))

    async def load_order(self, name: str) -> OrderRecord | None:
        return await self._redis(lambda: self.redis.load_order(name))

    async def save_order(self, order: OrderRecord) -> None:
        await self._redis(lambda: self.redis.save_order(order))

    async def delete_order(self, name: str) -> None:
        await self._redis(lambda: self.redis.delete_order(name))

    async def load_ledger(self, directory_url: str) -> Ledger | None:
        return await self._redis(lambda: self.redis.load_ledger(directory_url))

    async def save_ledger(self, directory_url: str, ledger: Ledger) -> None:
        await self._redis(lambda: self.redis.save_ledger(directory_url, ledger))


def _lock(copy_dir: Path) -> int:
    """An exclusive ``flock`` on the copy's lock file (created, with the copy's directory, if missing)."""
    ensure_dir(copy_dir)
    fd = os.open(copy_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd
