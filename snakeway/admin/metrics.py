"""``GET /metrics``: the whole server's figures in the Prometheus text format. Pure: no trio, no I/O.

Theory of operation
-------------------
The metrics are not kept in ``prometheus_client``'s own counters: with several workers each process would
count only what it served, and its multiprocess mode needs files of its own. Instead :class:`FiguresCollector`
is a custom collector over the same merged snapshot the admin API shows (:func:`snakeway.admin.figures.merge`:
every worker's figures, each request counted once whichever worker served it) and over the certificate views
of ``GET /admin/certs``. :func:`render` registers it in a new registry for one scrape and returns the text
``prometheus_client`` makes of it.

Counters are the server's since the supervisor started (a worker that replaces one that died goes on from its
predecessor's counts); gauges are as of the scrape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from snakeway.admin.figures import CLASSES, DURATION_BUCKETS, OTHER, Snapshot

CONTENT_TYPE = CONTENT_TYPE_LATEST


class FiguresCollector:
    """The metrics of one scrape.

    Args:
      figures: the merged snapshot (:func:`snakeway.admin.figures.merge`).
      certificates: the views ``GET /admin/certs`` lists (:mod:`snakeway.admin.certs`).
      ingress_of: the ingress each configured service belongs to.
    """

    def __init__(
        self, figures: Snapshot, certificates: Sequence[Mapping[str, Any]], ingress_of: Mapping[str, str]
    ) -> None:
        self.figures = figures
        self.certificates = certificates
        self.ingress_of = ingress_of

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._upstreams()
        yield from self._tls()
        yield from self._certificates()
        yield from self._workers()

    def _requests(self) -> Iterator[Metric]:
        figures = self.figures
        requests = CounterMetricFamily(
            "snakeway_requests", "Responses sent, by ingress, service and status class (all workers).",
            labels=("ingress", "service", "class"),
        )
        for name, service in figures.get("services", {}).items():
            for cls in (*CLASSES, OTHER):
                requests.add_metric((self.ingress_of.get(name, ""), name, cls), service["responses"][cls])
        yield requests
        total = CounterMetricFamily(
            "snakeway_responses", "Every response the proxy listeners sent, by status class, routed to a service "
            "or not (404s, redirects, ACME answers).", labels=("class",),
        )
        for cls in (*CLASSES, OTHER):
            total.add_metric((cls,), figures["requests"]["responses"][cls])
        yield total
        yield duration_histogram(figures.get("durations", []), figures.get("duration_sum_seconds", 0.0))
        websockets = GaugeMetricFamily("snakeway_websockets_open", "WebSocket tunnels open now, by service.",
                                       labels=("ingress", "service"))
        for name, service in figures.get("services", {}).items():
            websockets.add_metric((self.ingress_of.get(name, ""), name), service["websockets_open"])
        yield websockets

    def _upstreams(self) -> Iterator[Metric]:
        labels = ("service", "endpoint")
        healthy = GaugeMetricFamily("snakeway_upstream_healthy",
                                    "1 if no worker has the upstream endpoint cooling down after a failure, else 0.",
                                    labels=labels)
        failures = CounterMetricFamily("snakeway_upstream_connect_failures",
                                       "Failed connections to the upstream endpoint (all workers).", labels=labels)
        open_now = GaugeMetricFamily("snakeway_upstream_connections_in_use",
                                     "Connections to the upstream endpoint carrying a request now.", labels=labels)
        for service, endpoints in self.figures.get("upstreams", {}).items():
            for e in endpoints:
                key = (service, e["endpoint"])
                healthy.add_metric(key, 1 if e["healthy"] else 0)
                failures.add_metric(key, e["failures"])
                open_now.add_metric(key, e["in_flight"])
        yield from (healthy, failures, open_now)

    def _tls(self) -> Iterator[Metric]:
        handshakes = dict(self.figures.get("tls_handshakes", {}))
        done = CounterMetricFamily("snakeway_tls_handshakes", "TLS handshakes completed on the proxy listeners.",
                                   value=handshakes.pop("ok", 0))
        failed = CounterMetricFamily("snakeway_tls_handshake_failures",
                                     "TLS handshakes that failed on the proxy listeners, by reason.",
                                     labels=("reason",))
        for reason in sorted(handshakes):
            failed.add_metric((reason,), handshakes[reason])
        yield from (done, failed)

    def _certificates(self) -> Iterator[Metric]:
        labels = ("id", "kind")
        not_after = GaugeMetricFamily("snakeway_certificate_not_after_timestamp_seconds",
                                      "When the certificate expires (Unix time).", labels=labels)
        renewal = GaugeMetricFamily("snakeway_certificate_renewal_timestamp_seconds",
                                    "When snakeway means to renew the certificate (Unix time).", labels=labels)
        failures = GaugeMetricFamily("snakeway_certificate_renewal_failures",
                                     "Failed renewal attempts in a row (0 after a success).", labels=labels)
        next_attempt = GaugeMetricFamily("snakeway_certificate_next_attempt_timestamp_seconds",
                                         "When a failed renewal is tried again (Unix time).", labels=labels)
        for cert in self.certificates:
            key = (cert["id"], cert["kind"])
            for family, field in ((not_after, "not_after"), (renewal, "renewal_at"), (next_attempt, "next_attempt")):
                if (moment := cert.get(field)) is not None:
                    family.add_metric(key, datetime.fromisoformat(moment).timestamp())
            failures.add_metric(key, cert.get("failures", 0))
        acme = CounterMetricFamily("snakeway_acme_requests", "Calls to the ACME CA, by endpoint and outcome.",
                                   labels=("endpoint", "outcome"))
        for endpoint, outcomes in sorted(self.figures.get("acme_requests", {}).items()):
            for outcome, value in sorted(outcomes.items()):
                acme.add_metric((endpoint, outcome), value)
        attempts = CounterMetricFamily("snakeway_certificate_renewal_attempts",
                                       "Orders of certificates carried out, by outcome (issued or failed).",
                                       labels=("outcome",))
        for outcome, value in sorted(self.figures.get("renewal_attempts", {}).items()):
            attempts.add_metric((outcome,), value)
        yield from (not_after, renewal, failures, next_attempt, attempts, acme)

    def _workers(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("snakeway_workers_alive", "Worker processes running now.",
                                value=self.figures.get("workers_alive", 0))
        yield CounterMetricFamily("snakeway_worker_restarts",
                                  "Workers that died and were started again by the supervisor.",
                                  value=self.figures.get("restarts", 0))


def duration_histogram(durations: Sequence[int], total_seconds: float) -> HistogramMetricFamily:
    """The request duration histogram from per-bucket counts (``durations``, not cumulative, +Inf last)."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), durations, strict=False):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    family = HistogramMetricFamily(
        "snakeway_request_duration_seconds",
        "From a request's head read to its response sent (all workers).",
    )
    family.add_metric((), buckets, total_seconds)
    return family


def render(figures: Snapshot, certificates: Sequence[Mapping[str, Any]], ingress_of: Mapping[str, str]) -> bytes:
    """The Prometheus text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(figures, certificates, ingress_of))
    return generate_latest(registry)
