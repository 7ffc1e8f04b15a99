"""Three ``python -m snakeway serve`` nodes sharing one Redis store, against Pebble (real processes).

Each node has one worker, its own state directory and ports; Pebble's validations reach all of them through the
round-robin balancer of :mod:`tests.cluster`. Orders are counted in Pebble's own log, leases and serials read
in Redis, and what each node serves is seen in TLS handshakes verified against Pebble's root.
"""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from snakeway.acme.renewer import STORE_RETRY_JITTER, STORE_RETRY_SECONDS
from tests.acme.test_renewal_pebble import until_logged
from tests.cluster import PREFIX, Cluster, Node, pebble_issued, replacing, run_cluster
from tests.helpers import start_upstream

NAMES = tuple(f"n{i}.cluster.example.test" for i in range(20))
LIFETIME = 60  # seconds: Pebble's certificates in the renewal test, renewed at half their lifetime


def tracebacks(cluster: Cluster) -> list[int]:
    """The nodes whose log shows an unexpected error (a traceback)."""
    return [node.index for node in cluster.nodes if b"Traceback" in node.log]


async def test_three_nodes_order_twenty_certificates_once_each_serve_all_and_renew_each_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    async with run_cluster(tmp_path, NAMES, upstream=upstream, validity_seconds=LIFETIME, check_interval=2,
                           start=False) as cluster:
        # The first node orders every name the moment it is up: validations wait until all three are.
        cluster.hold_validations()
        for node in cluster.nodes:
            await cluster.start(node)
        cluster.release_validations()
        first = await cluster.until_served(NAMES, timeout=LIFETIME / 2)
        assert cluster.orders() == len(NAMES)
        # Validations went through the balancer, were all answered, and reached every node.
        assert {index for index, _ in cluster.http.answers} == {0, 1, 2}
        assert all(line == b"HTTP/1.1 200 OK" for _, line in cluster.http.answers), cluster.http.answers
        # At half their lifetime each is renewed, once, by one node; every node serves the renewal.
        renewed = await cluster.until_served(NAMES, unlike=first, timeout=LIFETIME)
        assert cluster.orders() == 2 * len(NAMES)
        assert all(cluster.stored_serial(name) == renewed[name] for name in NAMES)
        # Every certificate Pebble issued was served: none ordered for nothing.
        assert sorted(pebble_issued(cluster.pebble)) == sorted([*first.values(), *renewed.values()])
    assert tracebacks(cluster) == []


LEASE_SECONDS = 3  # the store's lease on a certificate being ordered (the least it takes)
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
                           check_interval=CHECK_INTERVAL, store_options=f"lease_seconds = {LEASE_SECONDS}",
                           start=False) as cluster:
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
    assert tracebacks(cluster) == []


async def test_a_node_paused_past_its_lease_mid_order_cannot_write_over_the_node_that_took_over(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    name = NAMES[0]
    async with run_cluster(tmp_path, [name], upstream=upstream, check_interval=CHECK_INTERVAL,
                           store_options=f"lease_seconds = {LEASE_SECONDS}", redis_relays=True,
                           start=False) as cluster:
        # The CA has validated the names: the node ordering writes its order in flight before finalizing. That
        # write is held on its way to Redis, and the node paused there, holding the lease.
        for node in cluster.nodes:
            node.redis_gate.close(replacing(f"{PREFIX}:order:{name}"))
        for node in cluster.nodes:
            await cluster.start(node)
        with trio.fail_after(20):
            while not (held := [node for node in cluster.nodes if node.redis_gate.held]):
                await trio.sleep(0.05)
        assert len(held) == 1 and cluster.lease_holder(name) is held[0]
        paused = held[0]
        paused.process.send_signal(signal.SIGSTOP)
        cluster.mark_down(paused)  # a stopped node answers no validation
        others = [node for node in cluster.nodes if node is not paused]
        for node in others:
            node.redis_gate.open()
        # Its lease runs out; another node takes the certificate over, orders it again and saves it.
        newer = await cluster.until_served([name], nodes=others, timeout=LEASE_SECONDS + CHECK_INTERVAL + ISSUANCE)
        assert cluster.stored_serial(name) == newer[name]
        stored = cluster.redis.raw("HGETALL", f"{PREFIX}:cert:{name}"), cluster.redis.raw("HGETALL", f"{PREFIX}:certs")
        # The paused node's write reaches Redis now, late, and Redis's answer reaches the node; then the node runs
        # on from where it stopped.
        relay = paused.relay
        assert relay is not None
        returned = relay.returned
        relay.gate.open()
        with trio.fail_after(5):
            while relay.returned == returned:
                await trio.sleep(0.01)
        paused.process.send_signal(signal.SIGCONT)
        await until_logged(paused.running, lambda log: b"rejected by the fencing check" in log, timeout=10)
        # The store holds the newer certificate, as it was; every node serves it, the woken one too.
        assert await cluster.until_served([name]) == newer
        assert (cluster.redis.raw("HGETALL", f"{PREFIX}:cert:{name}"),
                cluster.redis.raw("HGETALL", f"{PREFIX}:certs")) == stored
        assert cluster.orders() == 2
    line = next(x for x in paused.log.splitlines() if b"rejected by the fencing check" in x)
    assert f"cannot save order for {name!r}".encode() in line, line
    assert b"issued by" not in paused.log  # it stopped there: no certificate of its own


REDIS_AWAY = 30  # seconds


async def handshakes(cluster: Cluster, names: list[str], failures: list[str], done: list[int]) -> None:
    """Handshakes with every node for each of ``names``, in a loop: what failed in ``failures``, a count in
    ``done``."""
    while True:
        for node in cluster.nodes:
            for name in names:
                if await cluster.served(node, name) is None:
                    failures.append(f"node {node.index}, {name} at {trio.current_time():.1f}")
                done[0] += 1
        await trio.sleep(0.05)


async def test_with_redis_away_nodes_serve_on_and_issue_a_name_added_meanwhile_once_it_returns(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    names, added = list(NAMES[:2]), NAMES[2]
    async with run_cluster(tmp_path, names, upstream=upstream, check_interval=CHECK_INTERVAL) as cluster:
        await cluster.until_served(names)
        failures: list[str] = []
        done = [0]
        async with trio.open_nursery() as load:
            load.start_soon(handshakes, cluster, names, failures, done)
            await trio.to_thread.run_sync(cluster.redis.raw, "SAVE")  # it comes back with what it holds
            await cluster.redis.stop()
            before = done[0]
            cluster.reload([*names, added])  # deployed to every node while Redis is away
            await trio.sleep(REDIS_AWAY)
            during = done[0] - before
            await cluster.redis.start()  # from the dump it saved
            # Each node looks at the store again within its retry time; one of them orders the added name.
            await cluster.until_served([added], timeout=STORE_RETRY_SECONDS * (1 + STORE_RETRY_JITTER) + ISSUANCE)
            load.cancel_scope.cancel()
        assert failures == []
        assert during > 100  # handshakes went on all the while
        assert cluster.orders() == len(names) + 1
        assert all(node.process.returncode is None for node in cluster.nodes)
    assert tracebacks(cluster) == []
