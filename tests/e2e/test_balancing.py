"""Load balancing and passive health across real upstreams."""

from __future__ import annotations

import trio

from snakeway.config.model import ServerSettings, Strategy, UpstreamSettings
from tests.helpers import Client, closed_port, get, service_config, start_snakeway, start_upstream


async def test_round_robin_spreads_requests(nursery: trio.Nursery) -> None:
    a, seen_a = await start_upstream(nursery)
    b, seen_b = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([a, b], strategy=Strategy.ROUND_ROBIN))
    client = await Client.connect(proxy)
    for _ in range(10):
        assert (await client.request()).status == 200
    await client.aclose()
    assert (len(seen_a.requests), len(seen_b.requests)) == (5, 5)


async def test_failover_uses_the_first_healthy_upstream(nursery: trio.Nursery) -> None:
    dead = closed_port()
    b, seen_b = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([dead, b]))
    for _ in range(3):
        assert (await get(proxy)).status == 200
    assert len(seen_b.requests) == 3


async def test_a_failed_upstream_cools_down_then_comes_back(nursery: trio.Nursery) -> None:
    """Passive health: a refused connect marks the upstream down for the cool-down (real time, a short one)."""
    cooldown = 1.0
    port = closed_port()
    b, seen_b = await start_upstream(nursery)
    settings = ServerSettings(upstream=UpstreamSettings(failure_cooldown_seconds=cooldown))
    server, proxy = await start_snakeway(nursery, service_config([port, b], server=settings))
    asked_at = trio.current_time()
    assert (await get(proxy)).status == 200
    failed_at = trio.current_time()  # the refusal was marked between asked_at and now
    health = server.shared.health
    (first, _) = server.runtime.balancers["app"].service.upstreams
    assert not health.is_up(first.endpoint, trio.current_time())
    # Start the first upstream on its port; it is skipped until the cool-down ends.
    _, seen_a = await start_upstream(nursery, port=port)
    assert (await get(proxy)).status == 200
    assert trio.current_time() - asked_at < cooldown, "too slow to check inside the cool-down: rerun"
    assert seen_a.requests == []
    await trio.sleep_until(failed_at + cooldown + 0.05)
    assert (await get(proxy)).status == 200
    assert len(seen_a.requests) == 1
