"""Counters, one worker's snapshot, and the merge of every worker's into the server's figures."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from snakeway.admin.figures import Counters, EndpointState, merge, snapshot

statuses = st.sampled_from([101, 200, 204, 301, 304, 404, 499, 502, 504, 799])


def count(counters: Counters, service: str | None, status: int) -> None:
    """What the request path does for one response."""
    counters.totals[status // 100] += 1
    if service is not None:
        counters.service(service).by_class[status // 100] += 1


def snap(counters: Counters, endpoints: list[EndpointState] = (), services: tuple[str, ...] = ("app",),
         pid: int = 1) -> dict[str, object]:
    # Through JSON, as a sibling's snapshot arrives.
    return json.loads(json.dumps(snapshot(counters, endpoints, services, pid=pid, at=0.0)))


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["app", "api", None]), statuses), max_size=60))
def test_merged_totals_are_the_sum_whatever_worker_served_each_request(requests: list) -> None:
    workers = [Counters() for _ in range(4)]
    for worker, service, status in requests:
        count(workers[worker], service, status)
    merged = merge([snap(w, services=("app", "api")) for w in workers])
    assert merged["workers"] == 4
    assert merged["requests"]["total"] == len(requests)
    assert merged["requests"]["failures"] == sum(1 for _, _, s in requests if 500 <= s < 600)
    assert merged["requests"]["successes"] == sum(1 for _, _, s in requests if s < 400)
    assert merged["requests"]["client_errors"] == sum(1 for _, _, s in requests if 400 <= s < 500)
    for name in ("app", "api"):
        mine = [s for _, service, s in requests if service == name]
        assert merged["services"][name]["total"] == len(mine)
        assert merged["services"][name]["responses"]["2xx"] == sum(1 for s in mine if 200 <= s < 300)


def test_only_the_answering_workers_services_are_shown() -> None:
    old, new = Counters(), Counters()
    count(old, "gone", 200)
    count(new, "app", 200)
    merged = merge([snap(new, services=("app",)), snap(old, services=("gone",))])
    assert list(merged["services"]) == ["app"]
    assert merged["requests"]["total"] == 2  # the old service's requests stay in the totals


def endpoint(down_for: float | None, failures: int, in_use: int) -> EndpointState:
    return EndpointState("app", "127.0.0.1:9000", 1, down_for, failures, in_use)


def test_an_upstream_is_unhealthy_when_any_worker_has_it_cooling_down() -> None:
    merged = merge([
        snap(Counters(), [endpoint(None, 0, 2)]),
        snap(Counters(), [endpoint(4.5, 3, 1)], pid=2),
        snap(Counters(), [endpoint(2.0, 1, 0)], pid=3),
    ])
    assert merged["upstreams"]["app"] == [{
        "endpoint": "127.0.0.1:9000", "weight": 1, "healthy": False, "down_for_seconds": 4.5, "failures": 4,
        "in_flight": 3,
    }]
    healthy = merge([snap(Counters(), [endpoint(None, 1, 0)]), snap(Counters(), [endpoint(None, 0, 0)], pid=2)])
    assert healthy["upstreams"]["app"][0]["healthy"] is True


def test_a_replacement_worker_goes_on_from_its_predecessors_counts() -> None:
    dead = Counters()
    for status in (200, 200, 503):
        count(dead, "app", status)
    replacement = Counters()
    replacement.add(snap(dead))
    count(replacement, "app", 200)
    merged = merge([snap(replacement)])
    assert merged["requests"]["total"] == 4
    assert merged["services"]["app"]["responses"] == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 0, "5xx": 1, "other": 0}


def test_websockets_open_are_summed() -> None:
    a, b = Counters(), Counters()
    a.service("app").websockets_open = 2
    b.service("app").websockets_open = 1
    assert merge([snap(a), snap(b, pid=2)])["services"]["app"]["websockets_open"] == 3


def test_no_snapshot_no_figures() -> None:
    assert merge([]) == {"workers": 0, "workers_alive": 0, "restarts": 0, "tls_handshakes": {}, "acme_requests": {},
                         "renewal_attempts": {},
                         "requests": merge([])["requests"],
                         "durations": [0] * 13, "duration_sum_seconds": 0.0, "services": {}, "upstreams": {}}
    assert merge([])["requests"]["total"] == 0
