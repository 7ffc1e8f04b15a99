"""A service of one upstream: its order needs no strategy, and health still applies."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from snakeway.config.model import Strategy
from snakeway.proxy.balance import Balancer, Health
from tests.test_balance import COOLDOWN, make_service


@given(
    strategy=st.sampled_from(list(Strategy)),
    weight=st.integers(-1, 3),
    events=st.lists(st.tuples(st.sampled_from(["fail", "ok", "order"]), st.floats(0, 100)), max_size=12),
)
def test_one_upstream_is_the_whole_order_whatever_its_health(
    strategy: Strategy, weight: int, events: list[tuple[str, float]]
) -> None:
    service = make_service([weight], strategy)
    (only,) = service.upstreams
    health = Health(COOLDOWN)
    balancer = Balancer(service, health, rng=random.Random(0))
    now = 0.0
    for what, later in events:
        now += later
        if what == "fail":
            health.mark_failed(only.endpoint, now)
        elif what == "ok":
            health.mark_ok(only.endpoint)
        else:
            assert balancer.order(now) == [only]
            # Ordering ends a cooldown that is over, as for a service of several upstreams.
            until = health.down_until(only.endpoint)
            assert until is None or until > now
