"""GET /metrics of a real snakeway process with two workers, parsed as Prometheus parses it."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.acme.test_renewal_pebble import ISSUED, follow_log, handshake, pebble_at
from tests.acme.test_renewal_pebble import until_logged as pebble_logged
from tests.acme.test_renewal_pebble import write_config as pebble_config
from tests.admin.adminclient import Admin, admin_block, eventually, serving, write_config
from tests.helpers import LOOPBACK, Client, start_upstream
from tests.hostile.harness import proxy_to
from tests.proc import Running, snakeway
from tests.tlshelpers import client_context


async def scrape(admin: Admin, token: str | None = "") -> tuple[int, bytes, bytes]:
    """(status, content type, body) of GET /metrics; ``token=None`` sends no Authorization header."""
    response = await admin.exchange("GET", "/metrics", token=token)
    return response.status, response.header(b"content-type") or b"", response.body


async def samples(admin: Admin) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, content_type, body = await scrape(admin)
    assert status == 200, body
    assert content_type.startswith(b"text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


async def keep_reading(proc: Running) -> None:
    with contextlib.suppress(AssertionError, trio.ClosedResourceError, trio.BrokenResourceError):
        while True:
            await proc.read_more()


async def test_a_thousand_requests_over_two_workers_are_counted_once_each(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, seen = await start_upstream(nursery)
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, proxy_to(upstream, "/app"), line)
    async with serving(config, admin) as proc:
        nursery.start_soon(keep_reading, proc)  # the access log: a full pipe would stop the workers
        requests = 1000
        connections = 40  # kept alive, 25 requests each; the kernel spreads the connections over the workers

        async def one_connection() -> None:
            client = await Client.connect(port)
            try:
                for i in range(requests // connections):
                    target = "/app" if i % 5 == 0 else "/elsewhere"  # 200 proxied, 800 without a route: 404
                    assert (await client.request("GET", target)).status == (200 if target == "/app" else 404)
            finally:
                await client.aclose()

        with trio.fail_after(60):
            async with trio.open_nursery() as clients:
                for _ in range(connections):
                    clients.start_soon(one_connection)
        assert len(seen.requests) == requests // 5

        async def settled() -> object:
            got = await samples(admin)
            total = sum(v for (name, _), v in got.items() if name == "snakeway_responses_total")
            return got if total == requests else None

        got = await eventually(settled)
        app = (("class", "2xx"), ("ingress", "hostile"), ("service", "app"))
        assert got["snakeway_requests_total", app] == requests // 5
        assert got["snakeway_responses_total", (("class", "2xx"),)] == requests // 5
        assert got["snakeway_responses_total", (("class", "4xx"),)] == requests - requests // 5
        assert got["snakeway_request_duration_seconds_count", ()] == requests
        assert got["snakeway_request_duration_seconds_bucket", (("le", "+Inf"),)] == requests
        assert got["snakeway_workers_alive", ()] == 2
        assert got["snakeway_worker_restarts_total", ()] == 0
        endpoint = (("endpoint", f"127.0.0.1:{upstream}"), ("service", "app"))
        assert got["snakeway_upstream_healthy", endpoint] == 1
        assert got["snakeway_upstream_connect_failures_total", endpoint] == 0
        # Both workers answered scrapes: each of them gives the same total.
        for _ in range(20):
            again = await samples(admin)
            assert again["snakeway_responses_total", (("class", "4xx"),)] == requests - requests // 5


async def test_metrics_need_the_bearer_token(tmp_path: Path) -> None:
    line, admin = admin_block(tmp_path)
    config, _ = write_config(tmp_path, "", line)
    async with serving(config, admin):
        for token in (None, "x" * 43, admin.token[:-1]):
            status, content_type, body = await scrape(admin, token)
            assert (status, content_type) == (401, b"application/json")
            assert b"snakeway_" not in body


async def test_the_expiry_gauge_is_the_certificates_not_after(tmp_path: Path) -> None:
    line, admin = admin_block(tmp_path, tls='mode = "internal", domains = ["localhost"]')
    config, _ = write_config(tmp_path, "", line, workers=2)
    async with serving(config, admin, workers=2, https=True):
        admin.tls = client_context(tmp_path / "state" / "pki" / "root.pem")
        leaf = await handshake(admin.port, admin.tls, "localhost")
        got = await samples(admin)
        cert = (("id", "internal:localhost"), ("kind", "internal"))
        assert got["snakeway_certificate_not_after_timestamp_seconds", cert] == leaf.not_valid_after_utc.timestamp()
        (listed,) = (await admin.get("/admin/certs"))["certificates"]
        renewal = got["snakeway_certificate_renewal_timestamp_seconds", cert]
        assert renewal == datetime.fromisoformat(listed["renewal_at"]).timestamp()
        assert leaf.not_valid_before_utc.timestamp() < renewal < leaf.not_valid_after_utc.timestamp()


async def test_tls_handshakes_on_the_proxy_listener_are_counted_by_outcome(tmp_path: Path) -> None:
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, "", line, bind=', tls = { mode = "internal", domains = ["site.test"] }')
    async with serving(config, admin, https=False):
        context = client_context(tmp_path / "state" / "pki" / "root.pem")
        for _ in range(6):
            await handshake(port, context, "site.test")
        for _ in range(2):  # plain HTTP on the TLS port
            stream = await trio.open_tcp_stream(LOOPBACK, port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
            with trio.fail_after(10):
                while await stream.receive_some(4096):
                    pass
            await stream.aclose()

        async def settled() -> object:
            got = await samples(admin)
            plain = got.get(("snakeway_tls_handshake_failures_total", (("reason", "plain_http"),)))
            return got if got["snakeway_tls_handshakes_total", ()] == 6 and plain == 2 else None

        got = await eventually(settled)
        assert {k[1] for k in got if k[0] == "snakeway_tls_handshake_failures_total"} == {(("reason", "plain_http"),)}


async def test_acme_requests_to_pebble_are_counted_by_endpoint(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    line, admin = admin_block(tmp_path)
    async with pebble_at(tmp_path) as pebble:
        pebble_config(config, directory_url=pebble.directory_url, ca_file=pebble.ca_file, pebble=pebble,
                      upstream=upstream, names=("metrics.example.test",), workers=2)
        config.write_text(config.read_text() + line + "\n")
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            await pebble_logged(proc, lambda log: ISSUED in log and log.count(
                b"listening on http://127.0.0.1:" + str(admin.port).encode()) == 2, timeout=30)

            async def settled() -> object:
                got = await samples(admin)
                return got if got.get(("snakeway_acme_requests_total", (("endpoint", "certificate"),
                                                                         ("outcome", "ok")))) == 1 else None

            got = await eventually(settled)
            acme = {dict(labels)["endpoint"]: value for (name, labels), value in got.items()
                    if name == "snakeway_acme_requests_total" and dict(labels)["outcome"] == "ok"}
            assert acme["newOrder"] == 1  # one worker ordered it, the other read it from the store
            assert got[("snakeway_certificate_renewal_attempts_total", (("outcome", "issued"),))] == 1
            assert acme["finalize"] == 1
            assert acme["challenge"] >= 1
