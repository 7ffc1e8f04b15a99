"""Three ``python -m snakeway serve`` nodes sharing one Redis store, against Pebble (real processes).

Each node has one worker, its own state directory and ports; Pebble's validations reach all of them through the
round-robin balancer of :mod:`tests.cluster`. Orders are counted in Pebble's own log, leases and serials read
in Redis, and what each node serves is seen in TLS handshakes verified against Pebble's root.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.cluster import run_cluster
from tests.helpers import start_upstream

NAMES = tuple(f"n{i}.cluster.example.test" for i in range(20))
LIFETIME = 50  # seconds: Pebble's certificates in the renewal test, renewed at half their lifetime


async def test_three_nodes_order_twenty_certificates_once_each_serve_all_and_renew_each_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    async with run_cluster(tmp_path, NAMES, upstream=upstream, validity_seconds=LIFETIME, check_interval=2) as cluster:
        first = await cluster.until_served(NAMES, timeout=LIFETIME / 2)
        assert cluster.orders() == len(NAMES)
        # Validations went through the balancer, were all answered, and reached every node.
        assert {index for index, _ in cluster.http.answers} == {0, 1, 2}
        assert all(line == b"HTTP/1.1 200 OK" for _, line in cluster.http.answers), cluster.http.answers
        # At half their lifetime each is renewed, once, by one node; every node serves the renewal.
        renewed = await cluster.until_served(NAMES, unlike=first, timeout=LIFETIME)
        assert cluster.orders() == 2 * len(NAMES)
        assert all(cluster.stored_serial(name) == renewed[name] for name in NAMES)
    # Each node ordered some of them.
    assert all(b": ordering from" in node.log for node in cluster.nodes)
