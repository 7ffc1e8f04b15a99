"""Leases with fencing tokens in Redis: one holder of a name at a time, and no late writes from an old holder.

Theory of operation
-------------------
A **lease** is the key ``<prefix>:lease:<name>`` holding its owner's id, set with ``SET NX PX``: whoever set it
holds the lease until it expires (or is released), and nobody else can set it meanwhile. The holder renews it
while it works (``PEXPIRE``, only if it still holds it) and releases it when done (``DEL``, only if it still
holds it). Both checks and the write run in one Lua script, so no other node's command falls between them.

A lease alone does not keep two nodes from writing. A holder can pause for longer than its lease (a long garbage
collection, ``SIGSTOP``, a network partition) without knowing it: when it runs again it still believes it holds
the lease, while another node took it over and did the work again. Checking "do I still hold it?" before a write
does not help, since the pause can fall between the check and the write.

So each lease comes with a **fencing token**: ``<prefix>:token:<name>``, a counter incremented in the same Lua
script that sets the lease, so the tokens of one name only grow and every lease has its own. Every write made
under a lease presents the token, and a Lua script applies it only if no higher token has been issued since
(the presented token is at least the counter's value); otherwise it writes nothing and says so. Redis runs one
script at a time, so check and write are one step. The script applies a list of writes (``set``,
``hset``, ``hreplace``, ``del``, ``incr``) together: a whole certificate save (its hash, its index entry and
the ``generation`` counter) is one fenced write. :class:`~snakeway.acme.redisstore.RedisStore` makes every
write this way while its task holds a lock (the fence :class:`~snakeway.acme.rediscoord.RedisCoordinator` sets
for the lock's block, see :mod:`snakeway.acme.coordination`).

What a paused node **cannot** do: overwrite anything once another node has taken the lease, however late it
wakes (the newer holder's token is higher), nor renew or release the newer holder's lease (both check owner and
token). What it **can** do: write while nobody else has taken the lease, even after its lease expired — nobody
else has done the work then, and the write is the same one it would have made in time. It also keeps running
its own non-Redis work (an ACME order, say) until it notices the lease is lost: the fence protects the store,
not the rest of the world.

The counter lives in Redis. If Redis loses it (restarted without persistence), a fenced write with a token above
the counter raises the counter to that token, so writes are still applied in token order and the next lease gets
a higher token than any that has written.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import trio

from snakeway.acme.redisclient import DEFAULT_PREFIX, run_commands
from snakeway.acme.redisrecords import RedisKeys, Write

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from snakeway.acme.coordination import Fence

# KEYS: lease, token. ARGV: owner, ttl in ms. The new token, or nil if the lease is held.
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
"""

# KEYS: lease, token. ARGV: owner, token, then the ttl in ms to renew (absent to release). 1 if done, else 0.
RENEW_OR_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
if ARGV[3] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('DEL', KEYS[1])
"""

# KEYS: token, then the keys written. ARGV: token, then for each written key: op, n, n arguments. 1 if written.
FENCED_WRITE = """
local presented = tonumber(ARGV[1])
if presented < tonumber(redis.call('GET', KEYS[1]) or '0') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
local at = 2
for i = 2, #KEYS do
  local op, n = ARGV[at], tonumber(ARGV[at + 1])
  local args = {unpack(ARGV, at + 2, at + 1 + n)}
  at = at + 2 + n
  if op == 'del' or op == 'hreplace' then redis.call('DEL', KEYS[i]) end
  if op == 'set' then redis.call('SET', KEYS[i], args[1]) end
  if op == 'incr' then redis.call('INCR', KEYS[i]) end
  if (op == 'hset' or op == 'hreplace') and n > 0 then redis.call('HSET', KEYS[i], unpack(args)) end
end
return 1
"""


def new_owner() -> str:
    """A fresh owner id, readable in logs and ``certs``: ``<host>:<pid>:<random>``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Lease:
    """A lease held by ``owner`` with fencing ``token``.

    Attributes:
        name: What is leased (a certificate name).
        owner: The owner id stored in the lease key.
        token: The fencing token every write under this lease presents.
        expires_at: ``trio.current_time()`` by which the lease has surely expired in Redis (measured from before
            the command was sent, so never later than Redis's own expiry); :meth:`RedisLeases.renew` moves it.
    """

    name: str
    owner: str
    token: int
    expires_at: float


@final
class RedisLeases:
    """Leases and fenced writes in the Redis at ``url``, under ``key_prefix`` (see the module docstring).

    Every method opens a client for its command and closes it again, as
    :class:`~snakeway.acme.redisstore.RedisStore` does; construction does no I/O.

    Error handling:
        Every method raises :class:`~snakeway.acme.store.StoreError` when Redis is unreachable, times out or
        answers with an error. A holder that cannot renew must then treat its lease as lost at ``expires_at``.
    """

    def __init__(self, url: str, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.keys = RedisKeys(key_prefix)

    async def _eval(self, action: str, script: str, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        return await run_commands(self.url, action, lambda client: client.eval(script, keys, args))

    async def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """The lease ``name`` for ``ttl`` seconds with a new fencing token, or None if someone holds it."""
        start = trio.current_time()
        token = await self._eval(
            f"acquire lease {name!r}", ACQUIRE, [self.keys.lease(name), self.keys.token(name)], [owner, _ms(ttl)]
        )
        return None if token is None else Lease(name, owner, int(token), start + ttl)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend ``lease`` to ``ttl`` seconds from now; False (and nothing changed) if it is no longer held."""
        start = trio.current_time()
        renewed = await self._eval(
            f"renew lease {lease.name!r}", RENEW_OR_RELEASE, [self.keys.lease(lease.name), self.keys.token(lease.name)],
            [lease.owner, str(lease.token), _ms(ttl)],
        )
        if renewed:
            lease.expires_at = start + ttl
        return bool(renewed)

    async def release(self, lease: Lease) -> bool:
        """Give ``lease`` up; False (and nothing deleted) if it is no longer held: another's lease is left alone."""
        released = await self._eval(
            f"release lease {lease.name!r}", RENEW_OR_RELEASE,
            [self.keys.lease(lease.name), self.keys.token(lease.name)], [lease.owner, str(lease.token)],
        )
        return bool(released)

    async def holder(self, name: str) -> str | None:
        """The owner id of whoever holds the lease ``name`` now, or None."""
        key = self.keys.lease(name)
        value = await run_commands(self.url, f"read lease {name!r}", lambda client: client.get(key))
        return None if value is None else bytes(value).decode(errors="replace")

    async def holders(self, names: Sequence[str]) -> dict[str, str | None]:
        """The owner id of whoever holds each lease of ``names`` now (None if nobody), in one read."""
        wanted = list(names)
        if not wanted:
            return {}
        keys = [self.keys.lease(name) for name in wanted]
        values = await run_commands(self.url, "read leases", lambda client: client.mget(keys))
        return {
            name: None if value is None else bytes(value).decode(errors="replace")
            for name, value in zip(wanted, values, strict=True)
        }

    async def fenced_write(self, lease: Lease | Fence, writes: Sequence[Write], *, action: str = "") -> bool:
        """Apply ``writes`` atomically if no token above ``lease.token`` has been issued; else write nothing.

        Args:
            lease: The lease (or its :class:`~snakeway.acme.coordination.Fence`) the writes are made under.
            writes: What to write, in order.
            action: What the writes are, for the error message (default: a write under the lease).

        Returns:
            Whether the writes were applied. False means a newer lease exists: the caller's work is stale.
        """
        args: list[bytes | str | int] = [lease.token]
        for write in writes:
            args += [write.op, len(write.args), *write.args]
        written = await self._eval(
            action or f"write under lease {lease.name!r}", FENCED_WRITE,
            [self.keys.token(lease.name), *(write.key for write in writes)], args,
        )
        return bool(written)

    async def fenced_set(self, lease: Lease, key: str, value: bytes | str) -> bool:
        """Set the string ``key`` to ``value`` under ``lease`` (see :meth:`fenced_write`)."""
        return await self.fenced_write(lease, [Write("set", key, (value,))])

    async def fenced_hset(
        self, lease: Lease, key: str, fields: Mapping[str, bytes | str], *, replace: bool = False
    ) -> bool:
        """Set ``fields`` of the hash ``key`` (replacing it whole with ``replace``) under ``lease``."""
        flat = tuple(part for item in fields.items() for part in item)
        return await self.fenced_write(lease, [Write("hreplace" if replace else "hset", key, flat)])


def _ms(seconds: float) -> int:
    """``seconds`` as whole milliseconds, at least 1 (``PX 0`` is an error)."""
    return max(1, int(seconds * 1000))
