"""Rows 8 and 9: many stored certificates, many idle connections.

Row 8 fills snakeway's filesystem certificate store with N valid certificates
from a local CA (one key shared by all leaves), writes a configuration with one
ACME listener naming them all (``certificate_per_domain = true``) and an ACME directory nobody listens at
(nothing is due for renewal, so nothing is ordered), and times process start
to the first HTTPS response for the last name. The same with one certificate
gives the floor (interpreter start, imports, config). SNI lookup cost is timed
in-process on a :class:`snakeway.tls.certmap.CertMap` of the same N names.

Row 9 starts a fresh instance of each proxy, opens N keep-alive connections
from the harness (one request each, then idle) and reads the memory of the
proxy's whole process tree while they are held.
"""

from __future__ import annotations

import os
import random
import re
import resource
import ssl
import time

from benchmarks import clients, contenders
from benchmarks.certs import CA, fill_store
from benchmarks.procs import Group, free_port
from benchmarks.rows import Row, measure


def scale_rows(certs: int, idle: int) -> list[Row]:
    return [
        Row(8, f"Start-up with {certs:,} stored certificates: start to first response", "s", False, 900),
        Row(9, f"{idle:,} idle keep-alive connections held: memory of the proxy", "MiB", False, 600),
    ]


def idle_target() -> tuple[int, str]:
    """How many idle connections to open, raising RLIMIT_NOFILE to its hard limit."""
    wanted = int(os.environ.get("BENCH_IDLE_CONNECTIONS", "10000"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    possible = wanted if limit == resource.RLIM_INFINITY else min(wanted, limit - 300)
    note = "" if possible >= wanted else f"RLIMIT_NOFILE hard limit {limit} allows only {possible} of {wanted}"
    return max(possible, 0), note


# --- row 8 --------------------------------------------------------------------------------------


def _stored_config(workdir, cert_dir, names: list[str], port: int, upstream: int) -> str:
    dead = free_port()  # nothing listens there: the CA is "down"
    automation = f"""  tls_automation = {{
    renew_within_days      = 1
    check_interval_seconds = 86400
    acme = {{ directory_url = "http://127.0.0.1:{dead}/directory" }}
    cert_store = {{ type = "filesystem", cert_dir = {contenders.q(cert_dir)} }}
  }}"""
    domains = ", ".join(contenders.q(name) for name in names)
    return contenders.server_block(workdir / "state", automation) + f"""
ingress "stored" {{
  bind = {{
    interface = "127.0.0.1", port = {port}
    tls = {{ mode = "acme", challenge = "tls-alpn-01", certificate_per_domain = true, domains = [{domains}] }}
  }}
  services = [{contenders.service('app', ['*'], upstream)}]
}}
"""


def _loaded_counts(log_text: str) -> str:
    """How far snakeway got, per process, from its log: one line per certificate, or a summary for many."""
    per_pid: dict[str, int] = {}
    for match in re.finditer(r"(?:\[(\d+)\] )?snakeway\.acme\.manager: loaded stored certificate(s: (\d+))?",
                             log_text):
        pid = match.group(1) or "-"
        per_pid[pid] = int(match.group(3)) if match.group(3) else per_pid.get(pid, 0) + 1
    return " and ".join(f"{n:,}" for n in sorted(per_pid.values())) or "0"


def _start_with_store(setup, tag: str, cert_dir, names: list[str], ca_file, timeout: float) -> tuple[float, float, float]:
    """(seconds to first response for the last name, RSS MiB, PSS MiB) of snakeway with ``names`` stored."""
    workdir = setup.tmp / f"stored-{tag}"
    port = free_port()
    config = _stored_config(workdir, cert_dir, names, port, setup.upstream_port)
    context = ssl.create_default_context(cafile=str(ca_file))
    with Group() as group:
        proc = contenders.run_snakeway(group, workdir, config, port, wait=False)
        served = clients.wait_https(port, [names[-1]], context, time.monotonic() + timeout, interval=0.05)
        if not served:
            if not proc.alive():
                raise RuntimeError(f"snakeway exited ({proc.popen.returncode}): {proc.log_tail(300)}")
            rss, _ = proc.memory_mib()
            loaded = _loaded_counts(proc.log_path.read_text(errors="replace"))
            raise RuntimeError(f"not serving after {timeout:.0f} s: {loaded} of {len(names):,} certificates loaded "
                               f"(per process), RSS {rss:.0f} MiB by then")
        elapsed = served[names[-1]] - proc.started
        for name in random.sample(names, min(20, len(names))):  # every certificate is really there
            status, _ = clients.get(port, "/", host=name, tls=context, sni=name)
            if status != 200:
                raise RuntimeError(f"{name} answered {status}")
        time.sleep(2.0)
        rss, pss = proc.memory_mib()
    return elapsed, rss, pss


def sni_lookup_us(names: list[str], lookups: int = 200_000) -> tuple[float, float, float]:
    """Microseconds per CertMap.choose(): hit among ``names``, miss, and hit in a one-entry map."""
    from snakeway.tls.certmap import CertMap

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # shared: the lookup does not look inside
    big = CertMap.build([([name], context) for name in names])
    small = CertMap.build([([names[0]], context)])

    def per_call(cmap: CertMap, asked: list[str]) -> float:
        choose = cmap.choose
        start = time.perf_counter()
        for name in asked:
            choose(name)
        return (time.perf_counter() - start) / len(asked) * 1e6

    hits = [random.choice(names) for _ in range(lookups)]
    misses = [f"x{i}.unknown.test" for i in range(lookups)]
    return per_call(big, hits), per_call(big, misses), per_call(small, [names[0]] * lookups)


def run_stored(row: Row, setup, count: int, rounds: int) -> None:
    for other in ("upstream", "caddy", "nginx"):
        row.na(other, "n/a: not measured (needs certificates in its own store format)")
    names = [f"c{i}.bench.test" for i in range(count)]
    ca = CA("bench store CA")
    (setup.tmp / "store").mkdir()
    ca_file = setup.tmp / "store" / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    cert_dir = setup.tmp / "store" / "certs"
    started = time.monotonic()
    print(f"row 8: writing {count:,} certificates into a snakeway store", flush=True)
    fill_store(cert_dir, names, ca)
    print(f"    written in {time.monotonic() - started:.1f} s", flush=True)
    timeout = float(os.environ.get("BENCH_STORE_TIMEOUT", "240"))

    mid = max(1, count // 10)

    def once(round_no: int) -> tuple[float, dict[str, float]]:
        cell = row.cells["snakeway"]
        hit, miss, small = sni_lookup_us(names)
        cell.add_extra(round_no, sni_hit_us=hit, sni_miss_us=miss, sni_one_entry_us=small)
        floor, floor_rss, _ = _start_with_store(setup, f"one-{round_no}", cert_dir, names[:1], ca_file, 60)
        cell.add_extra(round_no, one_cert_s=floor, one_cert_rss_mib=floor_rss)
        if 1 < mid < count:
            mid_s, mid_rss, _ = _start_with_store(setup, f"mid-{round_no}", cert_dir, names[:mid], ca_file, timeout)
            cell.add_extra(round_no, mid_count=float(mid), mid_s=mid_s, mid_rss_mib=mid_rss)
        limit = min(timeout, max(10.0, row.left() - 10))
        try:
            elapsed, rss, pss = _start_with_store(setup, f"all-{round_no}", cert_dir, names, ca_file, limit)
        except RuntimeError:
            cell.add_extra(round_no, gave_up_s=limit)
            raise
        return elapsed, {"rss_mib": rss, "pss_mib": pss}

    for round_no in range(rounds):
        print(f"round {round_no + 1}, row 8: {row.title}", flush=True)
        measure(row, "snakeway", round_no, lambda r=round_no: once(r), need=30)
        cell = row.cells["snakeway"]
        if round_no in cell.by_round:
            print(f"    snakeway: {cell.by_round[round_no]:.2f} s, RSS {cell.extra['rss_mib'][round_no]:.0f} MiB, "
                  f"SNI lookup {cell.extra['sni_hit_us'][round_no]:.2f} µs", flush=True)


# --- row 9 --------------------------------------------------------------------------------------


def run_idle(row: Row, setup, rounds: int) -> None:
    row.na("upstream", "n/a: not a proxy")
    target, limit_note = idle_target()
    if limit_note:
        row.note = limit_note
    if target <= 0:
        for name in contenders.PROXIES:
            row.na(name, f"n/a: {limit_note}")
        return

    def once(name: str, round_no: int) -> tuple[float, dict[str, float]]:
        with Group() as group:
            run = contenders.STARTERS[name](group, setup, f"-idle{round_no}")
            clients.get(run.http_port)
            time.sleep(0.5)
            base_rss, base_pss = run.proc.memory_mib()
            held, (rss, pss) = clients.hold_idle(run.http_port, target, run.proc.memory_mib,
                                                 min(180.0, max(10.0, row.left() - 20)))
            if not run.proc.alive():
                raise RuntimeError(f"{name} died while holding connections: {run.proc.log_tail(300)}")
        if held < target:
            row.cells[name].notes.append(f"round {round_no + 1}: only {held:,} of {target:,} connections held")
        per_conn = (rss - base_rss) * 1024 / held if held else 0.0
        return rss, {"pss_mib": pss, "base_rss_mib": base_rss, "base_pss_mib": base_pss, "held": float(held),
                     "kib_per_conn": per_conn}

    for round_no in range(rounds):
        print(f"round {round_no + 1}, row 9: {row.title}", flush=True)
        for name in contenders.PROXIES:
            reason = contenders.missing_reason(name, setup)
            if reason:
                row.na(name, f"n/a: {reason}")
                continue
            measure(row, name, round_no, lambda n=name, r=round_no: once(n, r), need=20)
            cell = row.cells[name]
            if round_no in cell.by_round:
                print(f"    {name}: RSS {cell.by_round[round_no]:.0f} MiB "
                      f"(idle {cell.extra['base_rss_mib'][round_no]:.0f} MiB, "
                      f"{cell.extra['held'][round_no]:,.0f} held)", flush=True)
