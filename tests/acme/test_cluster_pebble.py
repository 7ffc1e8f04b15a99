"""Three ``python -m snakeway serve`` nodes sharing one Redis store, against Pebble (real processes).

Each node has one worker, its own state directory and ports; Pebble's validations reach all of them through the
round-robin balancer of :mod:`tests.cluster`. Orders are counted in Pebble's own log, leases and serials read
in Redis, and what each node serves is seen in TLS handshakes verified against Pebble's root.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.cluster import Cluster, Node, run_cluster
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


LEASE_SECONDS = 30  # the store's lease on a certificate being ordered
CHECK_INTERVAL = 1
ISSUANCE = 10  # seconds an order at Pebble may take on a busy machine


async def until_held(cluster: Cluster, name: str, timeout: float = 20) -> Node:
    """Wait until Pebble's validation of ``name`` is held at the balancers; the node holding its lease."""
    with trio.fail_after(timeout):
        while cluster.validations_held() == 0:
            await trio.sleep(0.05)
    holder = cluster.lease_holder(name)
    assert holder is not None
    return holder


async def test_another_node_completes_the_order_of_a_node_killed_while_holding_its_lease(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    name = NAMES[0]
    async with run_cluster(tmp_path, [name], upstream=upstream, challenge="tls-alpn-01",
                           check_interval=CHECK_INTERVAL, start=False) as cluster:
        cluster.hold_validations()
        for node in cluster.nodes:
            await cluster.start(node)
        holder = await until_held(cluster, name)
        holder.process.kill()
        await holder.process.wait()
        cluster.release_validations()  # the validation goes to a node that is up
        survivors = [node for node in cluster.nodes if node is not holder]
        # Once the lease expires, the next check of another node takes it and orders again.
        served = await cluster.until_served([name], nodes=survivors,
                                            timeout=LEASE_SECONDS + CHECK_INTERVAL + ISSUANCE)
        assert cluster.stored_serial(name) == served[name]
        assert cluster.orders() == 2  # the killed node's, and the one that took over
    assert b"issued by" not in holder.log
    assert sum(b"issued by" in node.log for node in survivors) == 1
