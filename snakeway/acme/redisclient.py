"""One Redis connection per operation, on the coredis client: what every Redis module of snakeway talks through.

coredis runs its connections in tasks of a nursery the client opens, so each operation opens a
client, runs its commands and closes it again: the store needs no lifetime of its own, and a Redis that went
away and came back needs no reconnection logic. Operations are rare (start-up, renewals, checks), so the extra
connection costs nothing that matters. Nothing but Redis commands runs inside a client's context, so an error
there is Redis's: a refused connection, a timeout or an error reply raises ``StoreError``. Only PEM validation
and decryption, outside, raise anything else.

The store (:mod:`snakeway.acme.redisstore`), the leases (:mod:`snakeway.acme.redislease`) and the coordinator
(:mod:`snakeway.acme.rediscoord`) all run their commands through :func:`run_commands`; the coordinator's one
long-lived connection, its pub/sub subscription, is its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import coredis
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from snakeway.acme.redisrecords import redacted
from snakeway.acme.store import StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0
DEFAULT_PREFIX = "snakeway"



async def run_commands(url: str, action: str, commands: Callable[[Any], Awaitable[T]]) -> T:
    """``commands(client)`` on a fresh client of the Redis at ``url``, closed again (see the module docstring).

    Raises:
        StoreError: A refused connection, a timeout or an error reply; the message names ``action`` and the
            server (without its password).
    """
    client = coredis.Redis.from_url(
        url, connect_timeout=CONNECT_TIMEOUT, stream_timeout=COMMAND_TIMEOUT, retry_policy=NoRetryPolicy()
    )
    try:
        async with client:
            return await commands(client)
    except (RedisError, OSError) as exc:
        raise StoreError(f"cannot {action}: Redis at {redacted(url)}: {exc}") from exc
    except BaseExceptionGroup as group:  # raised through the client's nursery
        raise StoreError(f"cannot {action}: Redis at {redacted(url)}: {redis_failure(group)}") from group


def redis_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first of the Redis errors (or ``OSError``) ``group`` holds, raised through coredis's nurseries.

    Raises:
        BaseExceptionGroup: ``group`` itself, if it holds anything else.
    """
    failed, rest = group.split((RedisError, OSError))
    if failed is None or rest is not None:
        raise group
    first: BaseException = failed
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
