"""The Prometheus collector over synthetic snapshots: what a scrape shows, parsed as Prometheus would."""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from snakeway.admin.figures import DURATION_BUCKETS, Counters, EndpointState, merge, snapshot
from snakeway.admin.metrics import render
from snakeway.admin.routes import Call, decide
from tests.admin.test_admin_figures import count, snap


def observe(counters: Counters, seconds: float) -> None:
    """What the request path does with a request's duration."""
    counters.durations[bisect_left(DURATION_BUCKETS, seconds)] += 1
    counters.duration_sum += seconds


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def status_class(status: int) -> str:
    return f"{status // 100}xx" if status < 600 else "other"


CERT = {
    "id": "acme:example.test", "kind": "acme", "not_after": "2027-03-01T12:00:00+00:00",
    "renewal_at": "2027-01-30T12:00:00+00:00", "next_attempt": "2026-12-05T11:00:00+00:00", "failures": 2,
}


@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["app", "api"]),
                          st.sampled_from([200, 301, 404, 502, 799]),
                          st.floats(0, 100, allow_nan=False)), max_size=50))
def test_requests_and_durations_are_summed_over_workers(requests: list) -> None:
    workers = [Counters() for _ in range(3)]
    for worker, service, status, seconds in requests:
        count(workers[worker], service, status)
        observe(workers[worker], seconds)
    merged = merge([snap(w, services=("app", "api")) for w in workers])
    got = samples(render(merged, [], {"app": "web", "api": "backend"}))
    for service, ingress in (("app", "web"), ("api", "backend")):
        for cls in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"):
            expected = sum(1 for _, s, status, _ in requests if s == service and status_class(status) == cls)
            key = ("snakeway_requests_total", (("class", cls), ("ingress", ingress), ("service", service)))
            assert got[key] == expected
    assert got["snakeway_request_duration_seconds_count", ()] == len(requests)
    for bound in DURATION_BUCKETS:
        key = ("snakeway_request_duration_seconds_bucket", (("le", repr(bound)),))
        assert got[key] == sum(1 for *_, seconds in requests if seconds <= bound)
    assert got["snakeway_request_duration_seconds_sum", ()] == pytest.approx(sum(s for *_, s in requests))


def test_upstreams_certificates_and_workers() -> None:
    alive, dead = Counters(), Counters()
    dead.restarts = 1
    alive.handshakes.update({"ok": 5, "timeout": 1})
    dead.handshakes.update({"ok": 2, "plain_http": 3})
    alive.acme_requests["newOrder"] = {"ok": 1, "http_429": 2}
    dead.acme_requests["newOrder"] = {"ok": 4}
    alive.renewal_attempts.update({"issued": 1, "failed": 2})
    dead.renewal_attempts.update({"issued": 3})
    up = EndpointState("app", "127.0.0.1:9001", 1, None, 3, 2)
    down = EndpointState("app", "127.0.0.1:9002", 1, 12.5, 1, 0)
    first = snap(alive, [up, down], pid=10)
    other = json.loads(json.dumps(snapshot(dead, [up], ("app",), pid=11, at=0.0)))
    other["alive"] = False  # as SharedFigures.others marks a worker that is gone
    got = samples(render(merge([first, other]), [CERT], {"app": "web"}))
    one = (("endpoint", "127.0.0.1:9001"), ("service", "app"))
    two = (("endpoint", "127.0.0.1:9002"), ("service", "app"))
    assert got["snakeway_upstream_healthy", one] == 1
    assert got["snakeway_upstream_healthy", two] == 0
    assert got["snakeway_upstream_connect_failures_total", one] == 6
    assert got["snakeway_upstream_connections_in_use", one] == 4
    cert = (("id", "acme:example.test"), ("kind", "acme"))
    assert got["snakeway_certificate_not_after_timestamp_seconds", cert] == datetime(
        2027, 3, 1, 12, tzinfo=UTC).timestamp()
    assert got["snakeway_certificate_next_attempt_timestamp_seconds", cert] == datetime(
        2026, 12, 5, 11, tzinfo=UTC).timestamp()
    assert got["snakeway_certificate_renewal_failures", cert] == 2
    assert got["snakeway_tls_handshakes_total", ()] == 7
    assert got["snakeway_tls_handshake_failures_total", (("reason", "timeout"),)] == 1
    assert got["snakeway_tls_handshake_failures_total", (("reason", "plain_http"),)] == 3
    assert got["snakeway_acme_requests_total", (("endpoint", "newOrder"), ("outcome", "ok"))] == 5
    assert got["snakeway_acme_requests_total", (("endpoint", "newOrder"), ("outcome", "http_429"))] == 2
    assert got["snakeway_certificate_renewal_attempts_total", (("outcome", "issued"),)] == 4
    assert got["snakeway_certificate_renewal_attempts_total", (("outcome", "failed"),)] == 2
    assert got["snakeway_workers_alive", ()] == 1
    assert got["snakeway_worker_restarts_total", ()] == 1


def test_a_worker_replacing_a_dead_one_counts_a_restart_and_keeps_the_durations() -> None:
    first = Counters()
    observe(first, 0.2)
    first.acme_requests["newOrder"] = {"ok": 1}
    first.renewal_attempts["issued"] = 1
    second = Counters()
    second.add(snap(first))
    third = Counters()
    third.add(snap(second))
    merged = merge([snap(third)])
    assert merged["restarts"] == 2
    assert sum(merged["durations"]) == 1 and merged["duration_sum_seconds"] == 0.2
    assert merged["acme_requests"] == {"newOrder": {"ok": 1}}
    assert merged["renewal_attempts"] == {"issued": 1}


def test_metrics_is_one_route_behind_the_token() -> None:
    token = b"t" * 32
    assert decide(b"GET", b"/metrics", b"Bearer " + token, (token,)) == Call("metrics")
    assert decide(b"GET", b"/metrics", None, (token,)).status == 401  # type: ignore[union-attr]
    assert decide(b"POST", b"/metrics", b"Bearer " + token, (token,)).status == 405  # type: ignore[union-attr]


def family_names() -> set[str]:
    """The metric names a scrape shows (a histogram's and counters' base names as written in queries)."""
    counters = Counters()
    counters.handshakes["ok"] = 1
    counters.acme_requests["newOrder"] = {"ok": 1}
    counters.renewal_attempts["issued"] = 1
    text = render(merge([snap(counters, [EndpointState("app", "127.0.0.1:1", 1, None, 0, 0)])]), [CERT], {})
    names = set()
    for family in text_string_to_metric_families(text.decode()):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_the_docs_list_every_metric_and_only_those() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    section = docs.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(snakeway_\w+)` \|", section, re.MULTILINE))
    assert listed == family_names()


def test_the_grafana_dashboard_is_importable_and_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    assert dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    assert dashboard["panels"]
    known = family_names()
    used = set()
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["type"] and panel["gridPos"]
        assert panel["targets"]
        for target in panel["targets"]:
            for name in re.findall(r"snakeway_\w+", target["expr"]):
                used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used <= known, used - known
    assert used == known - {"snakeway_certificate_renewal_timestamp_seconds"}  # every other metric has a panel
