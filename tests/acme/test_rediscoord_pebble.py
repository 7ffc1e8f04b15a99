"""Two single-worker ``serve`` processes sharing one Redis store, against Pebble.

As two machines with their own state directories and one Redis: they coordinate through it (a lease per
certificate, the generation counter, shared challenges). Pebble's validations reach them through the round-robin
balancer of :mod:`tests.acme.test_shared_store_pebble`, so some land on the process that did not order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.acme.test_shared_store_pebble import two_nodes_order_once_and_both_serve
from tests.acme.test_shared_store_pebble import write_config as file_config

if TYPE_CHECKING:
    from pathlib import Path

    import trio

    from tests.pebble import Pebble
    from tests.redisserver import RedisServer


async def test_two_processes_sharing_a_redis_store_order_once_and_both_serve(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    def write(
        path: Path, *, names: tuple[str, ...], pebble: Pebble, upstream: int, tls_port: int, plain_port: int
    ) -> None:
        """The file-store node's configuration, with the store in Redis and nothing shared on disk."""
        unshared = path.parent / "unshared"  # each node's own: only Redis is shared
        file_config(path, names=names, shared=unshared, pebble=pebble, upstream=upstream, tls_port=tls_port,
                    plain_port=plain_port)
        file_store = f'cert_store = {{ type = "filesystem", cert_dir = "{unshared}/certs" }}'
        redis_store = f'cert_store = {{ type = "redis", url = "{redis_server.url}", key_prefix = "edge" }}'
        text = path.read_text()
        assert file_store in text
        path.write_text(text.replace(file_store, redis_store).replace(f'data_dir      = "{unshared}/acme"', ""))

    await two_nodes_order_once_and_both_serve(nursery, tmp_path, write)
