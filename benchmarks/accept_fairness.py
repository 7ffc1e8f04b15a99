"""``make bench-accept``: how long a new connection waits while thousands of others keep a proxy busy.

wrk keeps ``BENCH_ACCEPT_CONNECTIONS`` (2,000) keep-alive connections busy
against each proxy in turn; after a warm-up, a prober opens a new connection
``BENCH_ACCEPT_RATE`` (50) times a second for ``BENCH_ACCEPT_SECONDS`` (20 s),
sends one ``GET`` and times connect-to-first-byte: from the ``connect()`` call
to the first byte of the response. That figure, p50 and p99, is set beside
the latency wrk saw on its busy connections in the same seconds: a fair
proxy makes a new client wait about as long as a request on a connection it
already serves.

Contenders: snakeway as checked out; snakeway at ``BENCH_ACCEPT_BASELINE``
when set (a git revision, e.g. the commit before a change to the accept loop,
unpacked with ``git archive`` into the temporary directory); nginx and Caddy
when installed. Each proxy forwards to the benchmark's nginx upstream, and
everything talks to 127.0.0.1 only. RLIMIT_NOFILE is raised to its hard
limit for every process started here.

Other settings: ``SNAKEWAY_WORKERS`` (snakeway's default: one per core),
``BENCH_NO_INSTALL`` (never run apt-get), ``BENCH_ACCEPT_ONLY`` (a comma-separated
list of contenders). Results: printed, and written to
``benchmarks/results/accept.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # python benchmarks/accept_fairness.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from benchmarks import clients, contenders, deps, procs
from benchmarks.certs import CA
from benchmarks.procs import LOOPBACK, Group, free_port

RESULTS = contenders.HERE / "results" / "accept.json"
WARM_UP_S = 4.0
PROBE_TIMEOUT_S = 30.0


@dataclass
class Outcome:
    name: str
    probes: int = 0
    failed: int = 0
    first_byte_ms: list[float] = field(default_factory=list, repr=False)
    wrk_rps: float = 0.0
    wrk_p50_ms: float = 0.0
    wrk_p99_ms: float = 0.0
    wrk_errors: int = 0
    note: str = ""

    def quantile(self, q: float) -> float | None:
        return clients.quantile(self.first_byte_ms, q)

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("first_byte_ms")
        data["first_byte_p50_ms"] = self.quantile(0.5)
        data["first_byte_p99_ms"] = self.quantile(0.99)
        data["first_byte_max_ms"] = max(self.first_byte_ms) if self.first_byte_ms else None
        return data


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the prober ----------------------------------------------------------------------------------


async def _probe(port: int, rate: float, seconds: float) -> tuple[list[float], int]:
    """Open a connection every 1/``rate`` s for ``seconds``; connect-to-first-byte of each, in ms."""
    times: list[float] = []
    failed = [0]
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    async def one() -> None:
        started = time.perf_counter()
        try:
            with trio.fail_after(PROBE_TIMEOUT_S):
                stream = await trio.open_tcp_stream(LOOPBACK, port)
                try:
                    await stream.send_all(request)
                    first = await stream.receive_some(1)
                    if not first:
                        raise OSError("closed before answering")
                    times.append((time.perf_counter() - started) * 1000)
                    while await stream.receive_some(65536):
                        pass
                finally:
                    await stream.aclose()
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            failed[0] += 1

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        for i in range(int(rate * seconds)):
            await trio.sleep_until(start + i / rate)
            nursery.start_soon(one)
    return times, failed[0]


def measure(name: str, port: int, connections: int, rate: float, seconds: float) -> Outcome:
    """wrk on ``connections`` busy connections; the prober after the warm-up, during wrk's run."""
    outcome = Outcome(name)
    box: dict[str, object] = {}

    def load() -> None:
        try:
            box["wrk"] = clients.wrk(f"http://{LOOPBACK}:{port}/", WARM_UP_S + seconds + 1, connections=connections)
        except Exception as exc:  # noqa: BLE001 - reported with the outcome
            box["error"] = exc

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(WARM_UP_S)
    times, failed = clients.run_trio(_probe, port, rate, seconds)
    thread.join(seconds + 60)
    outcome.first_byte_ms, outcome.failed, outcome.probes = times, failed, int(rate * seconds)
    result = box.get("wrk")
    if isinstance(result, clients.WrkResult):
        outcome.wrk_rps, outcome.wrk_p50_ms, outcome.wrk_p99_ms = result.rps, result.p50_ms, result.p99_ms
        outcome.wrk_errors = result.errors + result.non_2xx
    else:
        outcome.note = f"wrk: {box.get('error')}"
    return outcome


# --- the contenders ------------------------------------------------------------------------------


def unpack(revision: str, into: Path) -> Path:
    """snakeway's package at git ``revision``, unpacked under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(contenders.ROOT), "archive", revision, "snakeway"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_snakeway(group: Group, setup: contenders.Setup, name: str, src: Path) -> contenders.Running:
    workdir = setup.tmp / name.replace(" ", "-").replace("@", "")
    workdir.mkdir(parents=True)
    port = free_port()
    config = contenders.server_block(workdir / "state") + f"""
ingress "plain" {{
  bind = {{ interface = "127.0.0.1", port = {port} }}
  services = [{contenders.service('up', ['*'], setup.upstream_port)}]
}}
"""
    path = workdir / "snakeway.hcl"
    path.write_text(config)
    # Started from ``src``, so that ``-m snakeway`` imports that tree's package.
    proc = group.start(name, [sys.executable, "-m", "snakeway", "serve", "--config", str(path)],
                       workdir / "snakeway.log", cwd=src)
    proc.wait_port(port, contenders.START_TIMEOUT)
    return contenders.Running(name, proc, port)


def starters(setup: contenders.Setup, baseline: str | None) -> dict[str, object]:
    found: dict[str, object] = {"snakeway": lambda g: start_snakeway(g, setup, "snakeway", contenders.ROOT)}
    if baseline:
        src = unpack(baseline, setup.tmp / "baseline-src")
        found[f"snakeway@{baseline}"] = lambda g: start_snakeway(g, setup, f"snakeway@{baseline}", src)
    for name in ("nginx", "caddy"):
        if contenders.missing_reason(name, setup) is None:
            found[name] = lambda g, n=name: contenders.STARTERS[n](g, setup)
    return found


def table(outcomes: list[Outcome], connections: int, rate: float) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else (f"{value:,.0f}" if value >= 10 else f"{value:.1f}")

    lines = [
        f"| {connections:,} busy keep-alive connections, {rate:g} new connections/s | new: first byte p50 (ms) "
        "| new: p99 (ms) | new: failed | busy: wrk p50 (ms) | busy: wrk p99 (ms) | busy: requests/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(f"| {o.name} | {ms(o.quantile(0.5))} | {ms(o.quantile(0.99))} | {o.failed} of {o.probes} "
                     f"| {ms(o.wrk_p50_ms)} | {ms(o.wrk_p99_ms)} | {o.wrk_rps:,.0f} |")
    return "\n".join(lines)


def main() -> int:
    procs.install_handlers()
    connections = int(os.environ.get("BENCH_ACCEPT_CONNECTIONS", "2000"))
    rate = float(os.environ.get("BENCH_ACCEPT_RATE", "50"))
    seconds = float(os.environ.get("BENCH_ACCEPT_SECONDS", "20"))
    baseline = os.environ.get("BENCH_ACCEPT_BASELINE") or None
    only = {n for n in os.environ.get("BENCH_ACCEPT_ONLY", "").split(",") if n}
    limit = raise_nofile()
    if limit < 2 * connections + 500:
        print(f"RLIMIT_NOFILE is {limit}: too low for {connections:,} connections through a proxy")
        return 1
    unavailable = {p: r for p, r in deps.ensure_packages().items() if p != "pebble"}
    if "wrk" in unavailable or "nginx" in unavailable:
        print(f"needs wrk and nginx: {unavailable}")
        return 1
    load = deps.load_average()
    print(f"load average at start: {load}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="snakeway-bench-accept-"))
    outcomes: list[Outcome] = []
    try:
        ca = CA()
        cert, key, ca_file = ca.write_leaf(tmp, "site", ["localhost", "127.0.0.1"])
        setup = contenders.Setup(tmp, cert, key, ca_file, unavailable=unavailable)
        setup.ws_port = free_port()  # nginx's and Caddy's configurations name one; nothing here uses it
        with Group() as infra:
            contenders.start_upstream(infra, setup)
            for name, start in starters(setup, baseline).items():
                if only and name.split("@")[0] not in only and name not in only:
                    continue
                print(f"{name}: {connections:,} busy connections, {rate:g} new/s for {seconds:g} s", flush=True)
                with Group() as group:
                    running = start(group)  # type: ignore[operator]
                    status, _ = clients.get(running.http_port)
                    if status != 200:
                        outcomes.append(Outcome(name, note=f"sanity GET answered {status}"))
                        continue
                    outcome = measure(name, running.http_port, connections, rate, seconds)
                    if not running.proc.alive():
                        outcome.note += f" (exited: {running.proc.log_tail(200)})"
                outcomes.append(outcome)
                print(f"    first byte p50 {outcome.quantile(0.5)} ms, p99 {outcome.quantile(0.99)} ms, "
                      f"{outcome.failed} failed; wrk p50 {outcome.wrk_p50_ms} ms {outcome.note}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", flush=True)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + table(outcomes, connections, rate) + "\n")
    data = {
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"connections": connections, "rate_per_s": rate, "seconds": seconds, "baseline": baseline,
                     "snakeway_workers": os.environ.get("SNAKEWAY_WORKERS", "default")},
        "machine": deps.machine(), "versions": deps.versions(),
        "load_average": {"start": load, "end": deps.load_average()},
        "outcomes": [o.summary() for o in outcomes],
    }
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(contenders.ROOT)}")
    return 0 if outcomes and not any(o.note for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
