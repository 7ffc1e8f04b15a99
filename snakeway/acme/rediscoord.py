"""Coordination between processes that share one Redis certificate store (see :mod:`snakeway.acme.coordination`).

Theory of operation
-------------------
* **one order per certificate**: :meth:`RedisCoordinator.lock` takes a lease (:mod:`snakeway.acme.redislease`)
  on the name, non-blocking: a process that does not get it yields False and leaves the work to the holder. A
  task renews the lease every third of its ttl while the block runs, and the block releases it at exit. A holder
  that dies stops renewing, so its lease expires within ``ttl`` and another process takes the work over. A
  holder that loses its lease (a renewal refused because another process took it after a pause, or Redis
  unreachable until the lease's expiry) cancels its block, and leaving the lock raises
  :class:`~snakeway.acme.coordination.LockLost`: an order in progress is abandoned rather than finished beside
  the new holder's, and the caller's error path (the certificate is checked again later) takes over;
* **no late writes**: the block runs under the lease's :class:`~snakeway.acme.coordination.Fence` (name and
  fencing token), so every store write made in it presents the token and
  :class:`~snakeway.acme.redisstore.RedisStore` applies it only if no newer lease on the name has been taken
  since. Cancelling the block is not enough on its own: a process that paused past its lease runs on from
  where it stopped (a save half sent, say) before its renewal task notices anything; the fence refuses what it
  writes then, as it refuses the failure the caller records under ``LockLost.fence`` afterwards;
* **a new certificate reaches every process**: :meth:`RedisCoordinator.generation` reads the ``generation``
  counter that :meth:`RedisStore.save <snakeway.acme.redisstore.RedisStore.save>` increments in the
  transaction of every save; :meth:`RedisCoordinator.stamps` are the serials of the ``certs`` index (one
  ``HMGET``);
* **a new certificate reaches every process within a second**: every save is announced on the ``saved``
  channel (see :mod:`snakeway.acme.redisstore`). :meth:`RedisCoordinator.follow_changes`, run by the store
  watch, keeps ONE subscriber connection to it; a message ends the watch's :meth:`~RedisCoordinator.wait_changed`
  and the watch scans at once. Pub/sub delivers at most once: a message sent while the subscriber is
  disconnected is lost. So the subscriber reconnects on its own (after 0.1 s, doubling up to
  ``PUSH_RECONNECT_CAP``), logs once when the subscription is lost and once when it is back, and wakes the watch
  when it is back, as a change may have been missed meanwhile; the generation is still polled (every
  ``poll_seconds``, 5 s: a message lost while connected is the rare case it covers) and the full scan every
  ``watch_interval`` stays the reconciliation;
* **any process answers a challenge**: key authorizations are strings ``challenge:<token>`` with a ttl, so a
  node that crashes mid-validation leaves nothing behind for long.

Each call opens a client for its commands and closes it again, as the store does; the subscription is the one
long-lived connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, final

import coredis
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from snakeway.acme.coordination import Fence, LockLost, fenced
from snakeway.acme.redisclient import CONNECT_TIMEOUT, DEFAULT_PREFIX, redis_failure, run_commands
from snakeway.acme.redislease import RedisLeases, new_owner
from snakeway.acme.redisrecords import RedisKeys, redacted
from snakeway.acme.store import StoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from snakeway.acme.redislease import Lease

logger = logging.getLogger(__name__)

LEASE_TTL = 30.0  # seconds a lock outlives its holder's last renewal
CHALLENGE_TTL = 600  # seconds a key authorization stays answerable without being deleted
PUSH_RECONNECT_FIRST = 0.1  # seconds before the first attempt to subscribe again after losing the subscription
PUSH_RECONNECT_CAP = 5.0  # ... doubling up to this


@final
class RedisCoordinator:
    """Coordination through the Redis at ``url``, under ``key_prefix`` (the store's own).

    Args:
        url: The store's Redis URL.
        key_prefix: The store's key prefix.
        lease_ttl: Seconds of each lock's lease; it is renewed every third of that.
        challenge_ttl: Seconds a shared key authorization lives.
    """

    # One look is a connection to Redis (about 1 ms). New certificates come by push (see follow_changes): the
    # generation only backs up a message lost while subscribed, so every 5 s is plenty.
    poll_seconds = 5.0

    def __init__(self, url: str, *, key_prefix: str = DEFAULT_PREFIX, lease_ttl: float = LEASE_TTL,
                 challenge_ttl: int = CHALLENGE_TTL) -> None:
        self.url = url
        self.keys = RedisKeys(key_prefix)
        self.leases = RedisLeases(url, key_prefix=key_prefix)
        self.lease_ttl = lease_ttl
        self.challenge_ttl = challenge_ttl
        self._told = False  # a save was announced since the last wait_changed
        # The subscription (follow_changes): True once lost (logged), None after it was made, False at first.
        self._push_lost: bool | None = False
        self._changed = trio.Event()

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[bool]:
        """True (and the lease ``name`` held while the block runs) or False if another process holds it.

        The block runs under the lease's fence (:func:`~snakeway.acme.coordination.fenced`): every store write in
        it presents the lease's token.

        Raises:
            LockLost: The lease was lost while the block ran (the block was cancelled then: its work is abandoned,
                and the caller's error path says so); it carries the lost fence.
            StoreError: Redis cannot be reached to take the lease.
        """
        lease = await self.leases.acquire(name, new_owner(), self.lease_ttl)
        if lease is None:
            yield False
            return
        lost: list[str] = []
        fence = Fence(name, lease.token)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep, lease, nursery.cancel_scope, lost)
                with fenced(fence):
                    yield True
                nursery.cancel_scope.cancel()  # the block is done: stop renewing
        except BaseExceptionGroup as group:
            # The block's own exception, as the caller raised it (the renewing task raises nothing), not wrapped
            # by the nursery: callers catch StoreError, IssuanceError... as with any other coordinator.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self.leases.release(lease)
        if lost:
            raise LockLost(f"lost the lock on {name!r} ({lost[0]}): the work under it was abandoned", fence)

    async def _keep(self, lease: Lease, block: trio.CancelScope, lost: list[str]) -> None:
        """Renew ``lease`` every third of its ttl; once it is lost, say why in ``lost`` and cancel ``block``."""
        interval = self.lease_ttl / 3
        while True:
            await trio.sleep(interval)
            try:
                if await self.leases.renew(lease, self.lease_ttl):
                    continue
                reason = "another process holds it now"
            except StoreError as exc:
                if trio.current_time() + interval < lease.expires_at:
                    logger.warning("could not renew the lock on %r (retrying): %s", lease.name, exc)
                    continue
                reason = str(exc)
            logger.error("lost the lock on %r (%s): abandoning the work in progress under it", lease.name, reason)
            lost.append(reason)
            block.cancel()
            return

    async def follow_changes(self) -> None:
        """Stay subscribed to the ``saved`` channel, reconnecting with a capped back-off, until cancelled.

        Every message, and every subscription made again after one was lost, ends the current (or next)
        :meth:`wait_changed`. Losing and regaining the subscription are logged once each.
        """
        delay = PUSH_RECONNECT_FIRST
        while True:
            try:
                await self._subscribe()
                reason = "the subscription ended"
            except (RedisError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            except BaseExceptionGroup as group:  # raised through coredis's nurseries
                if group.subgroup(trio.Cancelled) is not None:
                    # Cancelled from outside: coredis's teardown can fail beside it (a closed stream), which
                    # is no news. Raise the cancellation alone (a checkpoint in a cancelled scope raises it).
                    await trio.lowlevel.checkpoint()
                reason = str(redis_failure(group))
            was, self._push_lost = self._push_lost, True
            if was is not True:
                logger.warning(
                    "%s the push of new certificates from Redis at %s (%s): subscribing again, and looking "
                    "for them every %.0f s meanwhile", "lost" if was is None else "cannot subscribe to",
                    redacted(self.url), reason, self.poll_seconds,
                )
            if was is None:  # it was subscribed: try again soon
                delay = PUSH_RECONNECT_FIRST
            await trio.sleep(delay)
            delay = min(delay * 2, PUSH_RECONNECT_CAP)

    async def _subscribe(self) -> None:
        """Subscribe to the ``saved`` channel and tell :meth:`wait_changed` of every message, until it fails."""
        client = coredis.Redis.from_url(self.url, connect_timeout=CONNECT_TIMEOUT, retry_policy=NoRetryPolicy())
        async with client, client.pubsub(
            channels=[self.keys.saved], ignore_subscribe_messages=True, retry_policy=NoRetryPolicy()
        ) as pubsub:
            if self._push_lost:  # subscribed again: saves announced meanwhile were missed, so look now
                logger.info("new certificates are pushed from Redis at %s again", redacted(self.url))
                self._tell()
            self._push_lost = None  # subscribed: neither lost nor (should it fail now) retried in a loop
            async for _ in pubsub:
                self._tell()

    def _tell(self) -> None:
        self._told = True
        self._changed.set()

    async def wait_changed(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True (at once) if a save was announced since the last call."""
        if not self._told:
            with trio.move_on_after(seconds):
                await self._changed.wait()
        else:
            await trio.lowlevel.checkpoint()
        told, self._told = self._told, False
        if self._changed.is_set():
            self._changed = trio.Event()
        return told

    async def stamps(self, names: Iterable[str]) -> dict[str, str | None]:
        """The serial of each stored certificate of ``names`` (None when absent), from one read of the index."""
        wanted = list(names)
        if not wanted:
            return {}
        values = await run_commands(
            self.url, "read certificate stamps", lambda client: client.hmget(self.keys.certs, wanted)
        )
        return {name: _stamp(value) for name, value in zip(wanted, values, strict=True)}

    async def generation(self) -> object:
        """The ``generation`` counter: changes with every certificate saved by any process (None if unset)."""
        value = await run_commands(self.url, "read the store generation", lambda c: c.get(self.keys.generation))
        return None if value is None else bytes(value)

    async def put_challenge(self, key: str, value: str) -> None:
        where = self.keys.challenge(key)
        await run_commands(self.url, "share a challenge", lambda c: c.set(where, value, ex=self.challenge_ttl))

    async def get_challenge(self, key: str) -> str | None:
        """The shared answer of ``key``; None (logged) if Redis cannot be read: a validation left unanswered."""
        where = self.keys.challenge(key)
        try:
            value = await run_commands(self.url, "read a challenge", lambda c: c.get(where))
        except StoreError as exc:
            logger.warning("cannot answer a challenge another process may hold: %s", exc)
            return None
        return None if value is None else bytes(value).decode(errors="replace")

    async def delete_challenge(self, key: str) -> None:
        where = self.keys.challenge(key)
        await run_commands(self.url, "delete a challenge", lambda c: c.delete([where]))


def _stamp(value: bytes | None) -> str | None:
    """The serial and save time of an index entry: a new certificate changes it, even with a reused serial."""
    if value is None:
        return None
    try:
        data = json.loads(value)
        return f"{data.get('serial')}@{data.get('saved_at')}"
    except (ValueError, AttributeError):
        return bytes(value).hex()[:64]  # damaged: any change of it is still a change
