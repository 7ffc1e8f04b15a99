"""Row 10: three snakeway nodes sharing one Redis certificate store, N names from empty (snakeway only).

The cluster of the multi-node tests (:mod:`tests.cluster`): a ``redis-server``, a fresh Pebble (set up as for
rows 6 and 7), and three single-worker ``python -m snakeway serve`` processes with their own state directories
and ports, configured alike (one certificate per name, HTTP-01, snakeway's default check interval and lease),
with a round-robin TCP balancer in front of Pebble's ``httpPort`` and ``tlsPort`` so that validations reach
every node, as a load balancer in front of several machines would. The clock starts just before the first node
is spawned and stops when every node serves, for every name, the same certificate, verified against the root
Pebble signs with (a TLS handshake with that SNI on each node's port). The orders made are counted in Pebble's
own log: the goal is exactly one per name. Each name is under a registered domain of its own, as a host's
customers' would be: snakeway's budget keeps Let's Encrypt's limit of 50 certificates per registered domain a
week by default, which would hold half of 100 names under one domain back.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from benchmarks import clients
from benchmarks.contenders import Setup
from benchmarks.rows import Row, measure
from tests.cluster import run_cluster

NODES = 3
DEFAULT_NAMES = 100


def cluster_rows(names: int) -> list[Row]:
    return [Row(10, f"{NODES} nodes sharing one Redis, {names} names from empty, until every node serves every name",
                "s", False, 900)]


async def _time_cluster(workdir: Path, names: list[str], upstream: int, timeout: float) -> tuple[float, dict[str, float]]:
    async with run_cluster(workdir, names, upstream=upstream, size=NODES, check_interval=600, start=False) as cluster:
        started = trio.current_time()
        for node in cluster.nodes:
            await cluster.start(node)
        try:
            await cluster.until_served(names, timeout=timeout, confirm=False)
        except trio.TooSlowError:
            raise RuntimeError(f"not every node served every name within {timeout:.0f} s "
                               f"({cluster.orders()} orders made); logs in {workdir}") from None
        seconds = trio.current_time() - started
        return seconds, {"orders": float(cluster.orders())}


def time_cluster(workdir: Path, names: list[str], upstream: int, timeout: float) -> tuple[float, dict[str, float]]:
    """Seconds from spawning the first node until every node serves every one of ``names``, and the orders made."""
    workdir.mkdir(parents=True)
    try:
        result: tuple[float, dict[str, float]] = clients.run_trio(_time_cluster, workdir, names, upstream, timeout)
        return result
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the test harness fails with pytest's outcome (a BaseException): a failed cell
        raise RuntimeError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from exc


def run_cluster_row(row: Row, setup: Setup, slow_rounds: int, names: int) -> None:
    row.na("upstream", "n/a: not applicable")
    row.na("nginx", "n/a: not an ACME client")
    row.na("caddy", "n/a: snakeway only (Caddy shares certificates through storage plugins)")
    for package in ("pebble", "redis-server"):
        if setup.unavailable and package in setup.unavailable:
            row.na("snakeway", f"n/a: {setup.unavailable[package]}")
            return
    wanted = [f"www.site{i}.test" for i in range(names)]
    timeout = float(os.environ.get("BENCH_ACME_TIMEOUT", "240"))
    for round_no in range(slow_rounds):
        print(f"round {round_no + 1}, row {row.number}: {row.title}", flush=True)
        limit = min(timeout, max(10.0, row.left() - 30))
        measure(row, "snakeway", round_no,
                lambda r=round_no, lim=limit: time_cluster(setup.tmp / f"cluster-r{r}", wanted, setup.upstream_port, lim),
                need=60)
        cell = row.cells["snakeway"]
        if round_no in cell.by_round:
            print(f"    snakeway: {cell.by_round[round_no]:.1f} s, {cell.extra['orders'][round_no]:.0f} orders",
                  flush=True)
