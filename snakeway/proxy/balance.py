"""Which upstream a request tries first: pure code, no trio, no I/O.

Theory of operation
-------------------
:class:`Health` is a passive health table: the proxy reports what it saw
(``mark_failed`` when an upstream refused or dropped a connection,
``mark_ok`` when it answered) and the table says who is cooling down. Time is
whatever float the caller passes in; the proxy passes ``trio.current_time()``
so that ``MockClock`` drives cooldowns in tests.

:class:`Balancer` turns a :class:`~snakeway.config.model.Service` plus the
health table into an *order*: the list of upstreams one request should try,
best first. Every upstream is in it exactly once. Healthy ones come first, in
the order the strategy chooses; the ones cooling down follow as a last resort
(soonest to recover first), so a request never fails only because every
upstream has been marked down.

- ``FAILOVER``: configured order.
- ``ROUND_ROBIN``: nginx's smooth weighted round robin over the healthy
  upstreams. Each call makes one pick: every healthy upstream's current weight
  grows by its weight, the largest wins (first configured on ties) and loses
  the total. Over any ``total_weight`` consecutive calls with a stable healthy
  set, each upstream is picked exactly ``weight`` times, spread evenly. The
  other healthy upstreams follow by current weight, i.e. in the order they
  would be picked next. Upstreams cooling down take no part, so they do not
  bank credit while down.
- ``RANDOM``: a weighted random permutation of the healthy upstreams; the
  first pick has probability ``weight / total_weight``.

Weights below zero count as zero. A zero-weight upstream is only tried
first when every healthy upstream weighs zero (then the choice is uniform).

A balancer holds per-service state that lives across requests. It is a plain
object built from a ``Service``. A reload keeps the balancer of every service
it leaves unchanged (round robin goes on where it was) and builds a new one
for a service that is new or changed (its state starts from zero, which is
harmless); the ``Health`` table is keyed by endpoint and survives every
reload (:func:`snakeway.proxy.runtime.build_runtime`).
"""

from __future__ import annotations

import bisect
import itertools
import random
from typing import TYPE_CHECKING, final

from snakeway.config.model import Strategy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from snakeway.config.model import Endpoint, Service, Upstream


@final
class Health:
    """Passive health: which endpoints are cooling down, and until when.

    Args:
      cooldown: seconds an endpoint is skipped after ``mark_failed``
        (``UpstreamSettings.failure_cooldown_seconds``).
    """

    def __init__(self, cooldown: float) -> None:
        if cooldown < 0:
            raise ValueError(f"cooldown must be >= 0, got {cooldown!r}")
        self.cooldown = cooldown
        self._down_until: dict[Endpoint, float] = {}
        # Refused or timed-out connects per endpoint since start (the admin API's "failures").
        self.failures: dict[Endpoint, int] = {}

    def mark_failed(self, endpoint: Endpoint, now: float) -> None:
        """Skip ``endpoint`` until ``now + cooldown``; never shortens a cooldown."""
        self.failures[endpoint] = self.failures.get(endpoint, 0) + 1
        until = now + self.cooldown
        self._down_until[endpoint] = max(until, self._down_until.get(endpoint, until))

    def mark_ok(self, endpoint: Endpoint) -> None:
        """The endpoint answered: it is up again, whatever its cooldown said."""
        # Every request asks, and the table is nearly always empty: an Endpoint's hash is a Python call.
        if self._down_until:
            self._down_until.pop(endpoint, None)

    def is_up(self, endpoint: Endpoint, now: float) -> bool:
        """False while ``now < down_until``. Drops entries whose cooldown ended."""
        if not self._down_until:  # as in mark_ok
            return True
        until = self._down_until.get(endpoint)
        if until is None:
            return True
        if now >= until:
            del self._down_until[endpoint]
            return True
        return False

    def down_until(self, endpoint: Endpoint) -> float | None:
        """When the endpoint's cooldown ends, or None if it is not marked down."""
        return self._down_until.get(endpoint)


@final
class Balancer:
    """Per-service upstream ordering; see the module docstring.

    Args:
      service: the service whose upstreams are balanced.
      health: the shared passive health table.
      rng: random source for ``RANDOM``; inject a seeded one in tests.
    """

    def __init__(self, service: Service, health: Health, *, rng: random.Random | None = None) -> None:
        self.service = service
        self.health = health
        self._rng = rng if rng is not None else random.Random()
        self._weights = [max(u.weight, 0) for u in service.upstreams]
        # Smooth weighted round robin state, by index into service.upstreams
        # (indices, not endpoints, so a service listing one endpoint twice works).
        self._current = [0] * len(service.upstreams)
        # A service of one upstream has one order whatever the strategy (round robin's pick leaves its
        # state as it was; a random permutation of one draws nothing that matters): while that upstream
        # is healthy, order() returns it without ordering anything.
        self._only = service.upstreams[0] if len(service.upstreams) == 1 else None

    def order(self, now: float) -> list[Upstream]:
        """The upstreams in the order a request should try them.

        A permutation of ``service.upstreams``: healthy ones first, ordered by
        the strategy, then the ones cooling down. ``ROUND_ROBIN`` advances its
        state by one pick per call (if any upstream is healthy).
        """
        only = self._only
        if only is not None and self.health.is_up(only.endpoint, now):
            return [only]
        upstreams = self.service.upstreams
        up: list[int] = []
        down: list[int] = []
        for i, upstream in enumerate(upstreams):
            (up if self.health.is_up(upstream.endpoint, now) else down).append(i)
        strategy = self.service.strategy
        if strategy is Strategy.ROUND_ROBIN:
            up = self._round_robin(up)
        elif strategy is Strategy.RANDOM:
            up = self._weighted_shuffle(up)
        # FAILOVER: configured order as is.
        down.sort(key=lambda i: self.health.down_until(upstreams[i].endpoint) or 0.0)
        return [upstreams[i] for i in itertools.chain(up, down)]

    def _round_robin(self, up: Sequence[int]) -> list[int]:
        if not up:
            return []
        current, weights = self._current, self._weights
        total = 0
        best = up[0]
        for i in up:
            current[i] += weights[i]
            total += weights[i]
            if current[i] > current[best]:
                best = i
        current[best] -= total
        rest = sorted((i for i in up if i != best), key=lambda i: -current[i])  # stable: ties keep config order
        return [best, *rest]

    def _weighted_shuffle(self, up: Sequence[int]) -> list[int]:
        rest = list(up)
        out: list[int] = []
        while rest:
            cumulative = list(itertools.accumulate(self._weights[i] for i in rest))
            total = cumulative[-1]
            if total <= 0:
                k = self._rng.randrange(len(rest))
            else:
                # bisect_right: a zero-weight entry spans an empty interval and is never hit.
                # min(): random() * total may round up to total.
                k = min(bisect.bisect_right(cumulative, self._rng.random() * total), len(rest) - 1)
            out.append(rest.pop(k))
        return out
