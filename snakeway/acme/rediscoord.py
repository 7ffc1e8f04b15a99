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
* **any process answers a challenge**: key authorizations are strings ``challenge:<token>`` with a ttl, so a
  node that crashes mid-validation leaves nothing behind for long.

Each call opens a client for its commands and closes it again, as the store does.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, final

import trio

from snakeway.acme.coordination import Fence, LockLost, fenced
from snakeway.acme.redislease import RedisLeases, new_owner
from snakeway.acme.redisrecords import RedisKeys
from snakeway.acme.redisstore import DEFAULT_PREFIX, run_commands
from snakeway.acme.store import StoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from snakeway.acme.redislease import Lease

logger = logging.getLogger(__name__)

LEASE_TTL = 30.0  # seconds a lock outlives its holder's last renewal
CHALLENGE_TTL = 600  # seconds a key authorization stays answerable without being deleted


@final
class RedisCoordinator:
    """Coordination through the Redis at ``url``, under ``key_prefix`` (the store's own).

    Args:
        url: The store's Redis URL.
        key_prefix: The store's key prefix.
        lease_ttl: Seconds of each lock's lease; it is renewed every third of that.
        challenge_ttl: Seconds a shared key authorization lives.
    """

    # One look is a connection to Redis (about 1 ms): once a second keeps new certificates within the
    # second the CA's validation and a client's handshake need, at a fraction of the cost of 50 ms.
    poll_seconds = 1.0

    def __init__(self, url: str, *, key_prefix: str = DEFAULT_PREFIX, lease_ttl: float = LEASE_TTL,
                 challenge_ttl: int = CHALLENGE_TTL) -> None:
        self.url = url
        self.keys = RedisKeys(key_prefix)
        self.leases = RedisLeases(url, key_prefix=key_prefix)
        self.lease_ttl = lease_ttl
        self.challenge_ttl = challenge_ttl

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
