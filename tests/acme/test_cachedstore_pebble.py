"""A real `python -m snakeway serve` that starts while Redis is down, from the local copy a previous run left.

The first run obtains the certificate from Pebble into Redis (and so into its copy in ``state_dir``). Redis
then stops; the second run starts without it, serves the certificate from the copy (the handshake verifies
against Pebble's roots) and says so. Redis comes back empty (no persistence): the next check re-seeds it from
the copy, and nothing is ordered again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.acme.test_crash_pebble import NAMES
from tests.acme.test_redis_pebble import node_files, served_certificate, write_config
from tests.acme.test_renewal_pebble import follow_log, pebble_at, until_logged
from tests.proc import snakeway

if TYPE_CHECKING:
    from pathlib import Path

    import trio

    from tests.redisserver import RedisServer

CHECK_INTERVAL = 2  # seconds: the checks that fail while Redis is down come again soon after it is back


async def test_a_node_starting_while_redis_is_down_serves_its_copy_and_re_seeds_redis_without_ordering(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    upstream, key_file, config, store = await node_files(nursery, tmp_path, redis_server.url)
    async with pebble_at(tmp_path) as pebble:
        write_config(config, pebble, redis_server.url, key_file, upstream)
        text = config.read_text()
        config.write_text(text.replace("check_interval_seconds = 600", f"check_interval_seconds = {CHECK_INTERVAL}"))
        roots = await pebble.roots()
        async with snakeway(config) as proc:
            await proc.wait_for(b"issued by", timeout=60)
            first = await served_certificate(pebble.tls_port, roots)
        issued = await store.load(NAMES[0])
        assert issued is not None

        await redis_server.stop()
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            copy = tmp_path / "state" / "redis-cache"
            await until_logged(proc, lambda log: b"from the local copy" in log, 10)
            log = proc.log.decode()
            assert (f"Redis at {redis_server.url} unreachable (Unable to establish a connection to 127.0.0.1:"
                    f"{redis_server.port}): serving 1 certificate from the local copy in {copy}") in log
            assert f"loaded stored certificate for {', '.join(NAMES)}" in log
            assert await served_certificate(pebble.tls_port, roots) == first

            await redis_server.start()  # empty: restarted without persistence
            await until_logged(proc, lambda log: b"re-seeded Redis" in log, 10 * CHECK_INTERVAL)
            reseeded = await store.load(NAMES[0])
            assert reseeded is not None and reseeded.serial == issued.serial
            back = f"Redis at {redis_server.url} reachable again"  # the copy's line (the renewer logs its own)
            await until_logged(proc, lambda log: back.encode() in log, 1)
            assert await served_certificate(pebble.tls_port, roots) == first
            log = proc.log.decode()
            assert "ordering from" not in log and "issued by" not in log
            assert log.count("from the local copy in") == 1
            assert log.count(back) == 1
