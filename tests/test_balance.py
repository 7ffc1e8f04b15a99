from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.config.model import Endpoint, Route, Service, Strategy, Upstream, UpstreamSettings
from snakeway.proxy.balance import Balancer, Health
from snakeway.proxy.pool import UpstreamPool
from snakeway.proxy.runtime import Shared, build_runtime
from tests.helpers import service_config

COOLDOWN = 10.0


def make_service(weights: list[int], strategy: Strategy) -> Service:
    upstreams = tuple(Upstream(Endpoint("10.0.0.1", 8000 + i), weight=w) for i, w in enumerate(weights))
    return Service(name="svc", routes=(Route(hosts=("*",), path="/"),), upstreams=upstreams, strategy=strategy)


def first_picks(balancer: Balancer, n: int, now: float = 0.0) -> Counter[Upstream]:
    return Counter(balancer.order(now)[0] for _ in range(n))


# --- Health -------------------------------------------------------------------------------------


def test_health_cooldown_ends_at_now_plus_cooldown() -> None:
    health = Health(COOLDOWN)
    ep = Endpoint("a", 1)
    assert health.is_up(ep, 0.0)
    health.mark_failed(ep, 5.0)
    assert health.down_until(ep) == 15.0
    assert not health.is_up(ep, 5.0)
    assert not health.is_up(ep, 14.999)
    assert health.is_up(ep, 15.0)
    assert health.down_until(ep) is None  # expired entries are dropped


def test_health_mark_ok_and_no_shortening() -> None:
    health = Health(COOLDOWN)
    ep = Endpoint("a", 1)
    health.mark_failed(ep, 20.0)
    health.mark_failed(ep, 0.0)  # an older report must not shorten the cooldown
    assert health.down_until(ep) == 30.0
    health.mark_ok(ep)
    assert health.is_up(ep, 21.0)
    health.mark_ok(Endpoint("never", 2))  # unknown endpoint: no error


def test_health_rejects_negative_cooldown() -> None:
    with pytest.raises(ValueError, match="cooldown"):
        Health(-1.0)


# --- strategies ---------------------------------------------------------------------------------


def test_round_robin_is_smooth() -> None:
    svc = make_service([5, 1, 1], Strategy.ROUND_ROBIN)
    a, b, c = svc.upstreams
    balancer = Balancer(svc, Health(COOLDOWN))
    # nginx's documented sequence for weights 5, 1, 1.
    assert [balancer.order(0.0)[0] for _ in range(7)] == [a, a, b, a, c, a, a]


def test_round_robin_skips_down_and_rest_follow_next_pick_order() -> None:
    svc = make_service([1, 1, 1], Strategy.ROUND_ROBIN)
    a, b, c = svc.upstreams
    health = Health(COOLDOWN)
    balancer = Balancer(svc, health)
    health.mark_failed(b.endpoint, 0.0)
    assert balancer.order(1.0) == [a, c, b]
    assert balancer.order(1.0) == [c, a, b]
    assert balancer.order(1.0) == [a, c, b]
    # b recovers and takes part again.
    counts = first_picks(balancer, 30, now=COOLDOWN)
    assert set(counts) == {a, b, c}
    assert all(9 <= n <= 11 for n in counts.values())


def test_failover_keeps_configured_order() -> None:
    svc = make_service([1, 5, 1], Strategy.FAILOVER)
    a, b, c = svc.upstreams
    health = Health(COOLDOWN)
    balancer = Balancer(svc, health)
    assert [balancer.order(0.0) for _ in range(3)] == [[a, b, c]] * 3
    health.mark_failed(a.endpoint, 0.0)
    assert balancer.order(1.0) == [b, c, a]
    assert balancer.order(COOLDOWN) == [a, b, c]


def test_all_down_are_last_resort_soonest_recovery_first() -> None:
    svc = make_service([1, 1, 1], Strategy.FAILOVER)
    a, b, c = svc.upstreams
    health = Health(COOLDOWN)
    balancer = Balancer(svc, health)
    health.mark_failed(a.endpoint, 3.0)
    health.mark_failed(b.endpoint, 1.0)
    health.mark_failed(c.endpoint, 2.0)
    assert balancer.order(4.0) == [b, c, a]


def test_random_first_pick_is_weighted() -> None:
    svc = make_service([3, 1, 0], Strategy.RANDOM)
    a, b, c = svc.upstreams
    balancer = Balancer(svc, Health(COOLDOWN), rng=random.Random(1234))
    counts = first_picks(balancer, 8000)
    assert counts[c] == 0  # zero weight: never first while others weigh something
    assert 5700 < counts[a] < 6300
    assert 1700 < counts[b] < 2300


def test_random_is_deterministic_with_seeded_rng() -> None:
    svc = make_service([1, 2, 3, 4], Strategy.RANDOM)
    orders = [[Balancer(svc, Health(COOLDOWN), rng=random.Random(7)).order(0.0) for _ in range(5)] for _ in range(2)]
    assert orders[0] == orders[1]


def test_random_all_zero_weights_is_uniform() -> None:
    svc = make_service([0, 0], Strategy.RANDOM)
    counts = first_picks(Balancer(svc, Health(COOLDOWN), rng=random.Random(3)), 2000)
    assert all(800 < n < 1200 for n in counts.values())


def test_empty_service() -> None:
    for strategy in Strategy:
        assert Balancer(make_service([], strategy), Health(COOLDOWN)).order(0.0) == []


# --- properties ---------------------------------------------------------------------------------

weights_st = st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=6)


@given(weights=weights_st, rounds=st.integers(min_value=1, max_value=4))
def test_round_robin_distribution_equals_weights(weights: list[int], rounds: int) -> None:
    svc = make_service(weights, Strategy.ROUND_ROBIN)
    balancer = Balancer(svc, Health(COOLDOWN))
    counts = first_picks(balancer, rounds * sum(weights))
    assert counts == Counter({u: rounds * u.weight for u in svc.upstreams})


@given(
    weights=st.lists(st.integers(min_value=-1, max_value=5), max_size=6),
    strategy=st.sampled_from(Strategy),
    failures=st.lists(st.tuples(st.integers(min_value=0, max_value=5), st.floats(0, 30)), max_size=8),
    calls=st.lists(st.floats(0, 60), min_size=1, max_size=5),
    seed=st.integers(0, 2**32),
)
def test_order_is_permutation_with_up_before_down(
    weights: list[int],
    strategy: Strategy,
    failures: list[tuple[int, float]],
    calls: list[float],
    seed: int,
) -> None:
    svc = make_service(weights, strategy)
    health = Health(COOLDOWN)
    balancer = Balancer(svc, health, rng=random.Random(seed))
    for index, when in failures:
        if index < len(svc.upstreams):
            health.mark_failed(svc.upstreams[index].endpoint, when)
    for now in sorted(calls):
        up = {u for u in svc.upstreams if health.is_up(u.endpoint, now)}
        order = balancer.order(now)
        assert Counter(order) == Counter(svc.upstreams)
        flags = [u in up for u in order]
        assert flags == sorted(flags, reverse=True)  # every up one before every down one
        if strategy is Strategy.FAILOVER:
            assert order[: len(up)] == [u for u in svc.upstreams if u in up]


@given(weights=weights_st, down=st.sets(st.integers(0, 5)), calls=st.integers(1, 5))
def test_failover_order_is_stable(weights: list[int], down: set[int], calls: int) -> None:
    svc = make_service(weights, Strategy.FAILOVER)
    health = Health(COOLDOWN)
    for i in down & set(range(len(weights))):
        health.mark_failed(svc.upstreams[i].endpoint, 0.0)
    balancer = Balancer(svc, health)
    orders = [balancer.order(1.0) for _ in range(calls)]
    assert all(order == orders[0] for order in orders)
    assert Balancer(svc, health).order(COOLDOWN) == list(svc.upstreams)


def test_a_reload_keeps_the_balancer_of_an_unchanged_service_only() -> None:
    """Round robin goes on where it was across a reload that leaves the service as it is."""
    config = service_config([8001, 8002], strategy=Strategy.ROUND_ROBIN)
    shared = Shared(pool=UpstreamPool(UpstreamSettings()), health=Health(COOLDOWN))
    before = build_runtime(config, shared)
    first = before.balancers["app"].balancer.order(0.0)[0]
    kept = build_runtime(config, shared, before)
    assert kept.balancers["app"].balancer is before.balancers["app"].balancer
    assert kept.balancers["app"].balancer.order(0.0)[0] != first  # the next pick, not the first again
    ingress = config.ingresses[0]
    changed_service = replace(ingress.services[0], strategy=Strategy.FAILOVER)
    changed = replace(config, ingresses=(replace(ingress, services=(changed_service,)),))
    assert build_runtime(changed, shared, kept).balancers["app"].balancer is not kept.balancers["app"].balancer
