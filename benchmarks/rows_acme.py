"""Rows 6 and 7: certificates from Pebble, snakeway against Caddy configured for the same Pebble.

The clock starts just before the proxy's process is spawned and stops at the
first HTTPS response (status 200) whose chain verifies against the root this
Pebble signs with (fetched from its management API, ``/roots/0``), for the
server name asked in SNI. A fresh Pebble and empty storage for every
measurement. Both proxies listen on Pebble's ``httpPort`` (HTTP-01) and serve
HTTPS on its ``tlsPort`` (TLS-ALPN-01), so each may use either challenge.
"""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

from benchmarks import clients, contenders
from benchmarks.pebble import Pebble, start_pebble
from benchmarks.procs import Group, Proc
from benchmarks.rows import Row, measure

DOMAIN = "bench.test"


def acme_rows(names: int) -> list[Row]:
    return [
        Row(6, "Process start to first HTTPS response with a Pebble certificate", "s", False, 300),
        Row(7, f"{names} names issued from empty by Pebble, until all are served", "s", False, 1200),
    ]


def _snakeway(group: Group, workdir: Path, pebble: Pebble, names: list[str], upstream: int) -> Proc:
    automation = f"""  tls_automation = {{
    renew_within_days = 30
    acme = {{ directory_url = {contenders.q(pebble.directory_url)}, ca_file = {contenders.q(pebble.api_ca_file)} }}
    cert_store = {{ type = "filesystem", cert_dir = {contenders.q(workdir / 'certs')} }}
  }}"""
    parts = [contenders.server_block(workdir / "state", automation)]
    for i, name in enumerate(names):
        parts.append(f"""ingress "n{i}" {{
  bind = {{
    interface = "127.0.0.1", port = {pebble.tls_port}
    tls = {{ mode = "acme", domains = [{contenders.q(name)}], challenge = "http-01" }}
    redirect_http_to_https = {{ port = {pebble.http_port}, status = 308 }}
  }}
  services = [{contenders.service(f"s{i}", [name], upstream)}]
}}
""")
    return contenders.run_snakeway(group, workdir, "\n".join(parts), pebble.tls_port, wait=False)


def _caddy(group: Group, workdir: Path, pebble: Pebble, names: list[str], upstream: int) -> Proc:
    extra = f"\tacme_ca {pebble.directory_url}\n\tacme_ca_root {pebble.api_ca_file}\n"
    caddyfile = contenders.caddy_global(workdir, pebble.http_port, pebble.tls_port, extra) + f"""
{', '.join(names)} {{
	reverse_proxy 127.0.0.1:{upstream}
}}
"""
    return contenders.run_caddy(group, workdir, caddyfile, pebble.tls_port, wait=False)


STARTERS = {"snakeway": _snakeway, "caddy": _caddy}


def time_until_served(name: str, workdir: Path, names: list[str], upstream: int, timeout: float) -> tuple[float, dict[str, float]]:
    """Seconds from spawning ``name`` until every one of ``names`` is served with a Pebble certificate."""
    with Group() as group:
        pebble = start_pebble(group, workdir / "pebble")
        context = ssl.create_default_context(cadata=pebble.root_pem().decode())
        proc = STARTERS[name](group, workdir / name, pebble, names, upstream)
        served = clients.wait_https(pebble.tls_port, names, context, time.monotonic() + timeout)
        if len(served) < len(names):
            state = "still running" if proc.alive() else f"exited ({proc.popen.returncode})"
            raise RuntimeError(f"{len(served)} of {len(names)} names served within {timeout:.0f} s; "
                               f"{name} {state}; log: {proc.log_path}")
        times = sorted(t - proc.started for t in served.values())
        return times[-1], {"first_s": times[0]}


def run_acme(rows: list[Row], setup: contenders.Setup, rounds: int, slow_rounds: int, names: int) -> None:
    first, many = rows
    for row in rows:
        for other in ("upstream", "nginx"):
            row.na(other, "n/a: not an ACME client" if other == "nginx" else "n/a: not applicable")
    if setup.unavailable and "pebble" in setup.unavailable:
        for row in rows:
            for name in ("snakeway", "caddy"):
                row.na(name, f"n/a: {setup.unavailable['pebble']}")
        return
    reason = contenders.missing_reason("caddy", setup)
    if reason:
        for row in rows:
            row.na("caddy", f"n/a: {reason}")
    many_names = [f"n{i}.{DOMAIN}" for i in range(names)]
    timeout = float(os.environ.get("BENCH_ACME_TIMEOUT", "240"))
    for round_no in range(max(rounds, slow_rounds)):
        order = ["snakeway", "caddy"] if round_no % 2 == 0 else ["caddy", "snakeway"]
        for row, wanted in ((first, [f"first.{DOMAIN}"]), (many, many_names)):
            if round_no >= (rounds if row is first else slow_rounds):
                continue
            print(f"round {round_no + 1}, row {row.number}: {row.title}", flush=True)
            for name in order:
                workdir = setup.tmp / f"acme-r{round_no}-row{row.number}"
                limit = min(timeout * (1 if row is first else 5), max(10.0, row.left() - 30))
                measure(row, name, round_no,
                        lambda n=name, w=workdir, lim=limit, want=wanted: time_until_served(n, w, want, setup.upstream_port, lim),
                        need=10)
                value = row.cells[name].by_round.get(round_no)
                if value is not None:
                    print(f"    {name}: {value:.2f} s", flush=True)
