"""A :class:`~snakeway.acme.store.CertStore` in Redis (or Valkey), on the coredis client.

Theory of operation
-------------------
Layout, every key under ``<prefix>:`` (``snakeway`` by default; records in :mod:`snakeway.acme.redisrecords`)::

    certs                     hash  name -> metadata JSON (names, dates, issuer, serial, saved_at): the index
    cert:<name>               hash  chain -> full chain PEM, key -> private key (sealed)
    state:<name>              string  RenewalState JSON
    account:<directory URL>   hash  meta -> {"uri", "contact"} JSON, key -> account key (sealed)
    order:<name>              hash  meta -> {"order_url", "created"} JSON, key -> certificate key (sealed)
    saved                     pub/sub channel  the name of each certificate saved (see "Push")
    ledger:<directory URL>    string  rate-limit Ledger JSON
    state:<name>:corrupt, ledger:<URL>:corrupt   a damaged record, kept when its conservative one replaced it

**Atomic bundles.** A save writes the certificate's hash and its index entry in one transaction, so a reader
never sees a new certificate beside an old key or index entry; the same transaction increments the
``generation`` counter, which other processes poll to notice it. Every other record is one key, replaced whole.

**Fenced writes.** Every write (``save``, ``save_state``, ``save_order``, ``delete_order``, ``save_ledger``,
``save_account``) made while the running task holds a lock presents that lock's fencing token
(:func:`~snakeway.acme.coordination.current_fence`, set by
:class:`~snakeway.acme.rediscoord.RedisCoordinator` for the lock's block): its transaction runs as the fenced
Lua script of :mod:`snakeway.acme.redislease`, which applies it only if no newer lease on that name has been
taken since. A refused write changes nothing, is logged ("rejected by the fencing check") and raises
:class:`~snakeway.acme.store.FencedOut`: a process that paused past its lease cannot overwrite the work of the
one that took over. Without a fence (start-up, the CLI, corrupt records replaced while loading) a transaction
is a plain ``MULTI``/``EXEC``.

**Private keys** are sealed with AES-256-GCM when ``encryption_key_file`` is set (see
:class:`~snakeway.acme.redisrecords.Sealer`), so a copy of the database (an RDB file, a replica, ``MONITOR``)
does not give them away. A key that cannot be opened (no key file, or another one) is a configuration mistake,
not damage: it raises :class:`~snakeway.acme.store.StoreError` instead of being treated as missing, because
"missing" would order every certificate again.

**Distrust on load**, as the file store: every load re-validates (PEM, key against certificate, metadata
against certificate). A damaged entry is logged and reported missing; a damaged renewal state or ledger loads
as its conservative record, which replaces it (the damaged value kept under ``<key>:corrupt``) so the hold runs
from the first time the damage was seen.

**The index** is one ``HGETALL`` (or ``HMGET``) of the ``certs`` hash: no PEM is parsed. Its
:class:`~snakeway.acme.store.StoredMeta` have no paths; the manager builds those contexts from ``load``.

**Connections**: each operation opens a client and closes it again (:mod:`snakeway.acme.redisclient`).

**Push.** Once a save is written, the store publishes the certificate's name on the ``<prefix>:saved``
channel, so every process subscribed through :class:`~snakeway.acme.rediscoord.RedisCoordinator` loads it at
once. The ``PUBLISH`` is its own command after the write, whichever way the write was made, so only a
certificate that is stored is announced; a process that missed the message (disconnected meanwhile) still
finds the certificate through the ``generation`` counter and its periodic full scan.

Several workers (or machines) sharing one Redis coordinate through it with
:class:`~snakeway.acme.rediscoord.RedisCoordinator`.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, TypeVar, final

from snakeway.acme import crypto
from snakeway.acme.budget import CONSERVATIVE_HOLD, Ledger
from snakeway.acme.coordination import current_fence
from snakeway.acme.entries import CorruptEntry, field, parse_json
from snakeway.acme.filerecords import encode_ledger
from snakeway.acme.redisclient import DEFAULT_PREFIX, run_commands
from snakeway.acme.redislease import RedisLeases
from snakeway.acme.redisrecords import (
    RedisKeys,
    Sealer,
    Write,
    account_meta,
    corrupt_copy,
    encode_meta,
    encode_state,
    order_meta,
    parse_account,
    parse_bundle,
    parse_meta,
    parse_order,
    read_key_file,
)
from snakeway.acme.schedule import BACKOFF_CAP, RenewalState
from snakeway.acme.store import (
    AccountRecord,
    CertBundle,
    FencedOut,
    OrderRecord,
    StoredMeta,
    StoreError,
    check_name,
)
from snakeway.clock import SystemClock

if TYPE_CHECKING:
    import builtins
    from collections.abc import Awaitable, Callable, Iterable

    from snakeway.clock import WallClock
    from snakeway.config.model import CertStoreSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

def from_settings(settings: CertStoreSettings, *, clock: WallClock | None = None) -> RedisStore:
    """The store ``tls_automation.cert_store`` describes (``type = "redis"``); reads the encryption key file.

    Raises:
        StoreError: The key file cannot be read or does not hold a key (the configuration checked it, but it may
            have changed since).
    """
    if settings.url is None:
        raise StoreError('cert_store type = "redis" needs a url')
    key, source = None, ""
    if settings.encryption_key_file is not None:
        source = str(settings.encryption_key_file)
        try:
            key = read_key_file(settings.encryption_key_file)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the Redis store's encryption_key_file {source}: {exc}") from exc
    return RedisStore(settings.url, key_prefix=settings.key_prefix, encryption_key=key, key_source=source, clock=clock)


@final
class RedisStore:
    """Certificates, renewal state, accounts, orders and ledgers in Redis at ``url``, under ``key_prefix``.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` for TLS.
        key_prefix: Every key starts with ``<key_prefix>:``.
        encryption_key: 32 bytes to seal private keys with, or None to store them in clear.
        key_source: Where ``encryption_key`` came from (its file), for error messages.
        clock: Source of ``saved_at`` and of the moment a conservative record starts from.

    Construction does no I/O. See the module docstring for the layout and guarantees.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        encryption_key: bytes | None = None,
        key_source: str = "",
        clock: WallClock | None = None,
    ) -> None:
        self.url = url
        self.keys = RedisKeys(key_prefix)
        self._sealer = Sealer(encryption_key, key_source)
        self._clock: WallClock = clock if clock is not None else SystemClock()

    async def _run(self, action: str, commands: Callable[[Any], Awaitable[T]]) -> T:
        """``commands(client)`` on a fresh client; any failure of Redis raises :class:`StoreError`."""
        return await run_commands(self.url, action, commands)

    async def _pipeline(self, action: str, queue: Callable[[Any], None]) -> tuple[Any, ...]:
        """The replies of the commands ``queue(pipeline)`` adds, run as one ``MULTI``/``EXEC`` transaction."""

        async def run(client: Any) -> tuple[Any, ...]:
            async with client.pipeline(transaction=True) as pipeline:
                queue(pipeline)
            return tuple(pipeline.results)

        return await self._run(action, run)

    async def _write(self, action: str, writes: builtins.list[Write], subject: str = "the certificate") -> None:
        """Apply ``writes`` together: fenced while the running task holds a lock, else as one transaction.

        Raises:
            FencedOut: The fence's lease has been taken over since: nothing was written (logged).
            StoreError: Redis failed.
        """
        fence = current_fence()
        if fence is None:
            await self._pipeline(action, lambda pipeline: _queue(pipeline, writes))
            return

        leases = RedisLeases(self.url, key_prefix=self.keys.prefix)
        if not await leases.fenced_write(fence, writes, action=action):
            refused = FencedOut(action, fence.name, fence.token, subject)
            logger.warning("a write to the certificate store was rejected by the fencing check: %s", refused)
            raise refused

    # --- certificate bundles ---------------------------------------------------------------------

    async def load(self, name: str) -> CertBundle | None:
        check_name(name)
        return (await self._load_bundles([name])).get(name)

    async def _load_bundles(self, names: builtins.list[str]) -> dict[str, CertBundle]:
        """The bundles of ``names`` that exist and are usable, in one transaction."""

        def queue(pipeline: Any) -> None:
            pipeline.hmget(self.keys.certs, names)
            for name in names:
                pipeline.hgetall(self.keys.cert(name))

        if not names:
            return {}
        action = f"load certificate {names[0]!r}" if len(names) == 1 else "load certificates"
        replies = await self._pipeline(action, queue)
        metas, hashes = replies[0], replies[1:]
        found: dict[str, CertBundle] = {}
        for name, meta, parts in zip(names, metas, hashes, strict=True):
            if meta is None and not parts:
                continue  # absent
            where = self.keys.cert(name)
            try:
                key = parts.get(b"key")
                key_pem = self._sealer.open(key, where) if key is not None else None
                found[name] = parse_bundle(name, meta, parts.get(b"chain"), key_pem)
            except (CorruptEntry, ValueError) as exc:
                logger.warning("ignoring unusable certificate %r in Redis (%s): %s", name, where, exc)
        return found

    async def pems(self, names: builtins.list[str]) -> dict[str, tuple[bytes, bytes]]:
        """The chain and opened private key of each stored certificate of ``names``, in one transaction.

        Not validated (start-up trusts them as it trusts the index; OpenSSL checks the pair when it builds the
        context). Absent names and entries with a part missing are left out.

        Raises:
            StoreError: Redis fails, or a key cannot be opened (see :class:`~snakeway.acme.redisrecords.Sealer`).
        """
        wanted = [check_name(name) for name in names]
        if not wanted:
            return {}

        def queue(pipeline: Any) -> None:
            for name in wanted:
                pipeline.hmget(self.keys.cert(name), ["chain", "key"])

        replies = await self._pipeline("load certificates", queue)
        found: dict[str, tuple[bytes, bytes]] = {}
        for name, (chain, sealed) in zip(wanted, replies, strict=True):
            if chain is None or sealed is None:
                continue
            try:
                found[name] = (chain, self._sealer.open(sealed, self.keys.cert(name)))
            except CorruptEntry as exc:
                logger.warning("ignoring unusable certificate %r in Redis (%s): %s", name, self.keys.cert(name), exc)
        return found

    async def save(self, bundle: CertBundle) -> None:
        bundle = bundle.verified()  # raises ValueError: never persist what cannot be served
        where = self.keys.cert(bundle.name)
        meta = encode_meta(bundle, self._clock.now())
        sealed = self._sealer.seal(bundle.key_pem, where)

        await self._write(f"save certificate {bundle.name!r}", [
            Write("hreplace", where, ("chain", bundle.cert_pem, "key", sealed)),
            Write("hset", self.keys.certs, (bundle.name, meta)),
            Write("incr", self.keys.generation),
        ])
        await self._announce(bundle.name)

    async def _announce(self, name: str) -> None:
        """Publish ``name`` on the ``saved`` channel once its save is written (see "Push" above).

        A failure is logged, not raised: the certificate is saved, and other processes find it at their next
        look at the ``generation`` counter or their next full scan.
        """
        try:
            await self._run(f"announce certificate {name!r}", lambda client: client.publish(self.keys.saved, name))
        except StoreError as exc:
            logger.warning("certificate %r saved, but other processes will only see it at their next look: %s",
                           name, exc)

    async def delete(self, name: str) -> None:
        check_name(name)

        def queue(pipeline: Any) -> None:
            pipeline.delete([self.keys.cert(name)])
            pipeline.hdel(self.keys.certs, [name])

        await self._pipeline(f"delete certificate {name!r}", queue)

    async def list(self) -> builtins.list[str]:
        """The names of every usable certificate (each fully validated, as the file store does)."""
        raw = await self._run("list certificates", lambda client: client.hkeys(self.keys.certs))
        names = []
        for value in raw:
            try:
                names.append(check_name(value.decode()))
            except (UnicodeDecodeError, ValueError):
                logger.warning("ignoring %r in Redis (%s): not a certificate name", value, self.keys.certs)
        return sorted(await self._load_bundles(names))

    async def index(self, names: Iterable[str] | None = None) -> dict[str, StoredMeta]:
        """See :class:`~snakeway.acme.store.CertIndex`: one read of the ``certs`` hash, no PEM parsed."""
        if names is None:
            raw = await self._run("index certificates", lambda client: client.hgetall(self.keys.certs))
            entries = [(key.decode(errors="replace"), value) for key, value in raw.items()]
        else:
            wanted = [check_name(name) for name in names]
            if not wanted:
                return {}
            values = await self._run("index certificates", lambda client: client.hmget(self.keys.certs, wanted))
            entries = list(zip(wanted, values, strict=True))
        found: dict[str, StoredMeta] = {}
        for name, value in sorted(entries):
            if value is None:
                continue
            try:
                found[name] = parse_meta(check_name(name), value)[0]
            except (CorruptEntry, ValueError) as exc:
                logger.warning("ignoring unusable certificate %r in Redis (%s): %s", name, self.keys.certs, exc)
        return found

    # --- renewal state and ledgers: a corrupt one holds ------------------------------------------

    async def _load_or_hold(self, what: str, key: str, parse: Callable[[bytes], T], hold: Callable[[str], T],
                            encode: Callable[[T], bytes], consequence: str) -> T | None:
        """None if ``key`` is absent, its parsed value, or ``hold(reason)`` written in its place (see above)."""
        value = await self._run(f"load {what}", lambda client: client.get(key))
        if value is None:
            return None
        try:
            return parse(value)
        except (CorruptEntry, ValueError) as exc:
            reason = str(exc)
        record = hold(reason)
        aside = corrupt_copy(key)
        logger.error("%s in Redis (%s) is corrupt (%s), kept as %s: %s", what, key, reason, aside, consequence)
        try:
            replacement = encode(record)

            def queue(pipeline: Any) -> None:
                pipeline.set(aside, value)
                pipeline.set(key, replacement)

            await self._pipeline(f"replace the corrupt {what}", queue)
        except StoreError as exc:  # the hold still applies to this load; the next one sees the damage again
            logger.warning("could not replace the corrupt %s in Redis: %s", what, exc)
        return record

    async def load_state(self, name: str) -> RenewalState | None:
        """The renewal state of ``name``; a corrupt one loads as :meth:`RenewalState.conservative`."""
        check_name(name)
        now = self._clock.now()

        def parse(value: bytes) -> RenewalState:
            state = RenewalState.from_json(parse_json(value, "renewal state"))
            if state.name != name:
                raise CorruptEntry(f"state is for {state.name!r}")
            return state

        consequence = f"renewal of {name!r} keeps the longest back-off and waits until {now + BACKOFF_CAP}"
        return await self._load_or_hold(
            f"renewal state of {name!r}", self.keys.state(name), parse,
            lambda reason: RenewalState.conservative(name, now, reason), encode_state, consequence,
        )

    async def save_state(self, state: RenewalState) -> None:
        key = self.keys.state(check_name(state.name))
        await self._write(f"save renewal state of {state.name!r}", [Write("set", key, (encode_state(state),))])

    async def load_ledger(self, directory_url: str) -> Ledger | None:
        """The rate-limit ledger of ``directory_url``'s account; a corrupt one loads as :meth:`Ledger.conservative`."""
        now = self._clock.now()

        def parse(value: bytes) -> Ledger:
            data = parse_json(value, "ledger")
            if data.get("directory_url") != directory_url:
                raise CorruptEntry(f"ledger is for {data.get('directory_url')!r}")
            return Ledger.from_json(field(data, "ledger", dict, "ledger"))

        return await self._load_or_hold(
            f"rate-limit ledger for {directory_url}", self.keys.ledger(directory_url), parse,
            lambda _: Ledger.conservative(now), lambda ledger: encode_ledger(directory_url, ledger),
            f"no order is started before {now + CONSERVATIVE_HOLD}",
        )

    async def save_ledger(self, directory_url: str, ledger: Ledger) -> None:
        key, value = self.keys.ledger(directory_url), encode_ledger(directory_url, ledger)
        await self._write(f"save rate-limit ledger for {directory_url}", [Write("set", key, (value,))],
                          "the rate-limit budget")

    # --- accounts and orders: JSON and a sealed key in one hash ----------------------------------

    async def _load_keyed(self, what: str, key: str, parse: Callable[[dict[str, object], bytes], T]) -> T | None:
        """``parse(meta, key_pem)`` of the hash at ``key`` (its ``meta`` JSON and opened ``key``); None if absent or
        corrupt (logged)."""
        parts = await self._run(f"load {what}", lambda client: client.hgetall(key))
        if not parts:
            return None
        try:
            meta, sealed = parts.get(b"meta"), parts.get(b"key")
            if meta is None or sealed is None:
                raise CorruptEntry("meta or key missing")
            key_pem = self._sealer.open(sealed, key)
            crypto.load_private_key(key_pem)
            return parse(parse_json(meta, "meta"), key_pem)
        except (CorruptEntry, ValueError) as exc:
            logger.warning("ignoring unusable %s in Redis (%s): %s", what, key, exc)
            return None

    async def _save_keyed(self, what: str, key: str, meta: dict[str, object], key_pem: bytes,
                          subject: str = "the certificate") -> None:
        crypto.load_private_key(key_pem)  # ValueError before anything is written
        value = ("meta", json.dumps(meta, separators=(",", ":")).encode(), "key", self._sealer.seal(key_pem, key))
        await self._write(f"save {what}", [Write("hreplace", key, value)], subject)

    async def load_account(self, directory_url: str) -> AccountRecord | None:
        key = self.keys.account(directory_url)
        return await self._load_keyed(
            f"ACME account for {directory_url}", key, lambda meta, pem: parse_account(directory_url, meta, pem)
        )

    async def save_account(self, account: AccountRecord) -> None:
        key = self.keys.account(account.directory_url)
        await self._save_keyed(f"ACME account for {account.directory_url}", key, account_meta(account), account.key_pem,
                               "the account")

    async def load_order(self, name: str) -> OrderRecord | None:
        key = self.keys.order(check_name(name))
        return await self._load_keyed(f"order for {name!r}", key, lambda meta, pem: parse_order(name, meta, pem))

    async def save_order(self, order: OrderRecord) -> None:
        key = self.keys.order(order.name)
        await self._save_keyed(f"order for {order.name!r}", key, order_meta(order), order.key_pem)

    async def delete_order(self, name: str) -> None:
        key = self.keys.order(check_name(name))
        await self._write(f"delete order for {name!r}", [Write("del", key)])


def _queue(pipeline: Any, writes: Iterable[Write]) -> None:
    """Queue ``writes`` on a ``MULTI``/``EXEC`` pipeline: what the fenced script does, without the fence."""
    for write in writes:
        if write.op in ("del", "hreplace"):
            pipeline.delete([write.key])
        if write.op == "set":
            pipeline.set(write.key, write.args[0])
        if write.op in ("hset", "hreplace") and write.args:
            pipeline.hset(write.key, dict(zip(write.args[::2], write.args[1::2], strict=True)))
        if write.op == "incr":
            pipeline.incr(write.key)
