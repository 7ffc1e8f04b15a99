"""The figures the admin API shows: request counters, and one worker's snapshot of them merged with others'.

Theory of operation
-------------------
The request path counts into plain objects and never does more than an increment: a
:class:`ServiceCounts` per service (made once per service name, kept across reloads) whose ``by_class`` list
is indexed by the status class (``status // 100``), and the server's totals, the same kind of list. Nothing
is locked: a worker is one thread, and an increment runs between two checkpoints.

With several workers, each one turns its figures into a :class:`Snapshot` (a JSON-able dict, see
:func:`snapshot`) at least once a second and leaves it where its siblings can read it (:mod:`.share`). The
worker that answers an admin request merges every worker's snapshot, its own taken just now, with
:func:`merge`: counters are summed; an upstream is healthy only if no worker has it cooling down; its
failures and connections in use are summed too. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, final

# The response classes counted, by status // 100 (499, a client that went away, is a 4xx as in nginx).
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
OTHER = "other"
Snapshot = dict[str, Any]

# The upper bounds, in seconds, of the request duration histogram's buckets (the last one, +Inf, is implied:
# ``Counters.durations`` has one more slot than this tuple). Fixed, so that every worker's counts add up.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def new_classes() -> list[int]:
    """A counter per status class, indexed by ``status // 100``: 0 to 9, as a status has three digits
    (an upstream may send 600 to 999; those are shown as ``other``)."""
    return [0] * 10


@final
class ServiceCounts:
    """One service's counters; the request path adds to ``by_class[status // 100]``.

    Attributes:
      by_class: responses by status class (index ``status // 100``).
      websockets_open: WebSocket upgrades being handled or tunnels open now.
    """

    __slots__ = ("by_class", "websockets_open")

    def __init__(self) -> None:
        self.by_class = new_classes()
        self.websockets_open = 0


@final
class Counters:
    """Every counter of one process: per service, and for every request the listeners answered."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceCounts] = {}
        self.totals = new_classes()
        # Requests by duration: ``durations[bisect_left(DURATION_BUCKETS, seconds)]``, and their sum.
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        # Workers that died and were replaced in this worker's slot before it.
        self.restarts = 0
        # TLS handshakes on the proxy listeners by outcome: "ok" or why one failed (snakeway.tls.handshake).
        self.handshakes: dict[str, int] = {}
        # Calls to the ACME CA: ``acme_requests[endpoint][outcome]`` (snakeway.acme.backend).
        self.acme_requests: dict[str, dict[str, int]] = {}
        # Orders the certificate manager carried out, by outcome ("issued", "failed"; snakeway.acme.renewer).
        self.renewal_attempts: dict[str, int] = {}

    def service(self, name: str) -> ServiceCounts:
        """The counters of service ``name``, made on first use and kept across reloads."""
        counts = self.services.get(name)
        if counts is None:
            counts = self.services[name] = ServiceCounts()
        return counts

    def add(self, earlier: Snapshot) -> None:
        """Start from the counts of an earlier snapshot (a worker replacing one that died)."""
        _add_classes(self.totals, earlier.get("requests", {}))
        _add_list(self.durations, earlier.get("durations", []))
        self.duration_sum += _number(earlier.get("duration_sum_seconds"))
        self.restarts += int(_number(earlier.get("restarts"))) + 1
        _add_dict(self.handshakes, earlier.get("tls_handshakes"))
        _add_nested(self.acme_requests, earlier.get("acme_requests"))
        _add_dict(self.renewal_attempts, earlier.get("renewal_attempts"))
        for name, service in earlier.get("services", {}).items():
            _add_classes(self.service(name).by_class, service.get("responses", {}))


def _add_classes(into: list[int], responses: Mapping[str, int]) -> None:
    for index, name in enumerate((*CLASSES, OTHER), start=1):  # "other" goes to 6xx: summed alike
        value = responses.get(name, 0)
        into[index] += value if isinstance(value, int) else 0


def _add_list(into: list[int], values: object) -> None:
    if isinstance(values, list) and len(values) == len(into):
        for index, value in enumerate(values):
            into[index] += value if isinstance(value, int) else 0


def _add_dict(into: dict[str, int], values: object) -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            if isinstance(key, str) and isinstance(value, int):
                into[key] = into.get(key, 0) + value


def _add_nested(into: dict[str, dict[str, int]], values: object) -> None:
    if isinstance(values, dict):
        for key, inner in values.items():
            if isinstance(key, str):
                _add_dict(into.setdefault(key, {}), inner)


def _number(value: object) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _classes(by_class: list[int]) -> dict[str, int]:
    """The counts by class, and ``other``: statuses 600 to 999, which only an upstream can send."""
    return {**{name: by_class[index] for index, name in enumerate(CLASSES, start=1)}, OTHER: sum(by_class[6:])}


@dataclass(frozen=True)
class EndpointState:
    """One upstream endpoint as this worker sees it now."""

    service: str
    endpoint: str
    weight: int
    down_for: float | None  # seconds its cooldown has left; None when it is not cooling down
    failures: int
    in_use: int


def snapshot(
    counters: Counters, endpoints: Iterable[EndpointState], services: Iterable[str], *, pid: int, at: float
) -> Snapshot:
    """This worker's figures as JSON-able data; ``services``: the configured ones, in configuration order."""
    upstreams: dict[str, list[dict[str, Any]]] = {}
    for e in endpoints:
        upstreams.setdefault(e.service, []).append({
            "endpoint": e.endpoint, "weight": e.weight, "healthy": e.down_for is None, "down_for_seconds":
            e.down_for, "failures": e.failures, "in_flight": e.in_use,
        })
    return {
        "pid": pid,
        "at": at,
        "requests": _classes(counters.totals),
        "durations": list(counters.durations),
        "duration_sum_seconds": counters.duration_sum,
        "restarts": counters.restarts,
        "tls_handshakes": dict(counters.handshakes),
        "acme_requests": {endpoint: dict(outcomes) for endpoint, outcomes in counters.acme_requests.items()},
        "renewal_attempts": dict(counters.renewal_attempts),
        "services": {
            name: {
                "responses": _classes(counts.by_class),
                "websockets_open": counts.websockets_open,
            }
            for name, counts in counters.services.items()
        },
        "configured": list(services),
        "upstreams": upstreams,
    }


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """The figures of the whole server from every worker's snapshot (the answering worker's first).

    Counters are summed over every snapshot. Only the first snapshot's configured services are shown (the
    answering worker runs the newest configuration); counts of a service no longer configured stay in the
    totals only. An upstream endpoint is healthy when no worker has it cooling down (``down_for_seconds``:
    the longest cooldown left); failures and connections in flight are summed.
    """
    first = snapshots[0] if snapshots else {}
    configured: list[str] = list(first.get("configured", []))
    totals = new_classes()
    per_service = {name: new_classes() for name in configured}
    websockets = dict.fromkeys(configured, 0)
    upstreams: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in configured}
    durations = [0] * (len(DURATION_BUCKETS) + 1)
    duration_sum = 0.0
    restarts = alive = 0
    handshakes: dict[str, int] = {}
    acme: dict[str, dict[str, int]] = {}
    attempts: dict[str, int] = {}
    for snap in snapshots:
        _add_dict(attempts, snap.get("renewal_attempts"))
        _add_dict(handshakes, snap.get("tls_handshakes"))
        _add_nested(acme, snap.get("acme_requests"))
        _add_classes(totals, snap.get("requests", {}))
        _add_list(durations, snap.get("durations", []))
        duration_sum += _number(snap.get("duration_sum_seconds"))
        restarts += int(_number(snap.get("restarts")))
        alive += snap.get("alive", True) is not False
        for name, service in snap.get("services", {}).items():
            if name in per_service:
                _add_classes(per_service[name], service.get("responses", {}))
                websockets[name] += int(service.get("websockets_open", 0))
        for name, endpoints in snap.get("upstreams", {}).items():
            if name not in upstreams:
                continue
            for e in endpoints:
                seen = upstreams[name].setdefault(e["endpoint"], {**e, "failures": 0, "in_flight": 0})
                seen["failures"] += e["failures"]
                seen["in_flight"] += e["in_flight"]
                if e["down_for_seconds"] is not None:
                    seen["healthy"] = False
                    seen["down_for_seconds"] = max(seen["down_for_seconds"] or 0.0, e["down_for_seconds"])
    return {
        "workers": len(snapshots),
        "workers_alive": alive,
        "restarts": restarts,
        "tls_handshakes": handshakes,
        "acme_requests": acme,
        "renewal_attempts": attempts,
        "requests": _with_sums(totals),
        "durations": durations,
        "duration_sum_seconds": duration_sum,
        "services": {
            name: {**_with_sums(per_service[name]), "websockets_open": websockets[name]} for name in configured
        },
        "upstreams": {name: list(upstreams[name].values()) for name in configured},
    }


def _with_sums(by_class: list[int]) -> dict[str, Any]:
    """``total``, ``successes`` (1xx to 3xx), ``client_errors`` (4xx), ``failures`` (5xx) and each class."""
    return {
        "total": sum(by_class),
        "successes": by_class[1] + by_class[2] + by_class[3],
        "client_errors": by_class[4],
        "failures": by_class[5],
        "responses": _classes(by_class),
    }
