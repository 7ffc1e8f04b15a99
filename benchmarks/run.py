"""``make bench`` / ``python -m benchmarks.run``: snakeway side by side with Caddy and nginx.

Environment (all optional):

- ``BENCH_ROUNDS`` (3), ``BENCH_SECONDS`` (10): rounds, and seconds per wrk/WebSocket measurement.
- ``BENCH_SLOW_ROUNDS`` (1): rounds of rows 7-10 (50 names, 10,000 certificates, 10,000 connections, 3 nodes).
- ``BENCH_ROWS`` ("1-10"): which rows, e.g. ``1,2,6`` or ``1-5``.
- ``BENCH_NAMES`` (50), ``BENCH_STORED_CERTS`` (10000), ``BENCH_IDLE_CONNECTIONS`` (10000),
  ``BENCH_CLUSTER_NAMES`` (100: row 10).
- ``BENCH_ACME_TIMEOUT`` (240 s; ×5 for the many-names row), ``BENCH_STORE_TIMEOUT`` (240 s),
  ``BENCH_WS_CONNECTIONS`` (8). ``BENCH_DEBUG``: print tracebacks of failed cells.
- ``SNAKEWAY_WORKERS``: write ``workers = N`` into snakeway's server block (default: snakeway's own).
- ``BENCH_NGINX_WORKERS`` ("auto"), ``BENCH_ACCESS_LOG`` (off for nginx and Caddy; snakeway always logs).
- ``BENCH_NO_INSTALL``: never run apt-get. ``BENCH_KEEP_TMP``: keep the temp dir (configs, logs).
- ``BENCH_NO_WRITE``: print only. A subset of rows writes results/partial.{json,png}, never
  results/latest.json, docs/benchmarks.png or docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import contenders, deps, procs, report, rows, rows_acme, rows_cluster, rows_scale
from benchmarks.certs import CA


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def selected_rows() -> set[int]:
    spec = os.environ.get("BENCH_ROWS", "1-10").replace(" ", "")
    chosen: set[int] = set()
    for part in filter(None, spec.split(",")):
        low, _, high = part.partition("-")
        chosen.update(range(int(low), int(high or low) + 1))
    return chosen


def throughput(table: list[rows.Row], setup: contenders.Setup, upstream: contenders.Running, rounds: int,
               seconds: float) -> None:
    """Rows 1-5: every proxy running at once, measured in alternation."""
    with procs.Group() as group:
        running: dict[str, contenders.Running] = {"upstream": upstream}
        for name, start in contenders.STARTERS.items():
            reason = contenders.missing_reason(name, setup)
            if reason is None:
                try:
                    running[name] = start(group, setup)
                except Exception as exc:  # noqa: BLE001
                    reason = f"could not start: {str(exc).splitlines()[0][:160]}"
            if reason is None:
                reason = rows.sanity(running[name], setup)
                if reason:
                    running.pop(name)
            if reason:
                print(f"{name}: {reason}", flush=True)
                for row in table:
                    row.na(name, reason if reason.startswith("n/a") else f"n/a: {reason}")
        rows.run_throughput(table, running, setup, rounds, seconds)


def main() -> int:
    procs.install_handlers()
    rounds, seconds = _int("BENCH_ROUNDS", 3), float(os.environ.get("BENCH_SECONDS", "10"))
    slow_rounds = _int("BENCH_SLOW_ROUNDS", 1)
    names, stored, idle = _int("BENCH_NAMES", 50), _int("BENCH_STORED_CERTS", 10000), _int("BENCH_IDLE_CONNECTIONS", 10000)
    cluster_names = _int("BENCH_CLUSTER_NAMES", rows_cluster.DEFAULT_NAMES)
    chosen = selected_rows()
    started = time.monotonic()
    unavailable = deps.ensure_packages()
    meta: dict[str, object] = {
        "machine": deps.machine(),
        "versions": deps.versions(),
        "settings": {"rounds": rounds, "seconds": seconds, "slow_rounds": slow_rounds, "wrk": "-t1 -c32 --latency",
                     "snakeway_workers": os.environ.get("SNAKEWAY_WORKERS", "default"),
                     "nginx_workers": os.environ.get("BENCH_NGINX_WORKERS", "auto"),
                     "access_log_nginx_caddy": contenders.access_log(),
                     "ws_connections": _int("BENCH_WS_CONNECTIONS", 8), "rows": sorted(chosen)},
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": deps.load_average(),
    }
    busy = float(str(meta["load_average_at_start"]).split()[0] or 0) if meta["load_average_at_start"] != "unknown" else 0
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine is already busy (load average {meta['load_average_at_start']}): "
              "absolute figures will be low; the per-round ratios suffer less", flush=True)
    print(f"machine: {meta['machine']}\nversions: {meta['versions']}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="snakeway-bench-"))
    table = [*rows.throughput_rows(seconds, rounds), *rows_acme.acme_rows(names), *rows_scale.scale_rows(stored, idle),
             *rows_cluster.cluster_rows(cluster_names)]
    table = [row for row in table if row.number in chosen]
    interrupted = False
    try:
        ca = CA()
        cert, key, ca_file = ca.write_leaf(tmp, "site", ["localhost", "127.0.0.1"])
        setup = contenders.Setup(tmp, cert, key, ca_file, unavailable=unavailable)
        with procs.Group() as infra:
            try:
                upstream = contenders.start_upstream(infra, setup)
                contenders.start_ws_echo(infra, setup)
            except Exception as exc:  # noqa: BLE001 - nothing can be proxied without the upstream
                reason = f"n/a: upstream could not start: {str(exc).splitlines()[0][:160]}"
                print(reason)
                for row in table:
                    for name in contenders.NAMES:
                        row.na(name, reason)
                return report_and_exit(table, meta, started)
            by_number = {row.number: row for row in table}
            if any(n in by_number for n in range(1, 6)):
                throughput([by_number[n] for n in range(1, 6) if n in by_number], setup, upstream, rounds, seconds)
            acme = [by_number[n] for n in (6, 7) if n in by_number]
            if acme:
                if len(acme) == 2:
                    rows_acme.run_acme(acme, setup, rounds, slow_rounds, names)
                else:
                    print("rows 6 and 7 run together; select both")
            if 8 in by_number:
                rows_scale.run_stored(by_number[8], setup, stored, slow_rounds)
            if 9 in by_number:
                rows_scale.run_idle(by_number[9], setup, slow_rounds)
            if 10 in by_number:
                rows_cluster.run_cluster_row(by_number[10], setup, slow_rounds, cluster_names)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping everything", flush=True)
    finally:
        procs.stop_all()
        if os.environ.get("BENCH_KEEP_TMP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report_and_exit(table, meta, started, interrupted=interrupted)


def report_and_exit(table: list[rows.Row], meta: dict[str, object], started: float, *,
                    interrupted: bool = False) -> int:
    meta["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["load_average_at_end"] = deps.load_average()
    print("\n" + report.table(table) + "\n")
    for note in report.row_notes(table):
        print(f"- {note}")
    print("ratios: snakeway ÷ other, computed per round, median shown; above 1 = snakeway higher "
          "(better for throughput, worse for seconds and MiB); CPU: of each contender's processes per request, "
          "connection, MiB or message (above 1 = snakeway uses more)")
    if interrupted:
        print("interrupted: results not written")
        return 130
    if os.environ.get("BENCH_NO_WRITE"):
        return 0
    data = report.to_json(table, meta)
    results_dir = report.RESULTS.parent
    if set(meta["settings"]["rows"]) == set(range(1, 11)):  # type: ignore[index]
        json_path, chart_path = report.RESULTS, report.CHART
    else:  # a subset of rows must not replace the published results
        json_path, chart_path = results_dir / "partial.json", results_dir / "partial.png"
    report.write_json(data, json_path)
    chart_note = report.chart(table, meta, chart_path)
    if json_path == report.RESULTS:
        report.update_doc(report.doc_section(table, meta, chart_note))
        print(f"updated {report.DOC.relative_to(contenders.ROOT)}")
    else:
        print("a subset of rows: docs/benchmarks.md and benchmarks/results/latest.json left as they are")
    written = [json_path] + ([] if chart_note else [chart_path])
    print("wrote " + " and ".join(str(p.relative_to(contenders.ROOT)) for p in written) + (f"; {chart_note}" if chart_note else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
