"""The soak: mixed load against one snakeway with 2 workers for a long time, reloads and certificate swaps included.

``make soak`` (or ``python -m benchmarks.soak``); ``SOAK_SECONDS`` sets the duration (default 600). It starts,
on 127.0.0.1 and free ports, from a temporary directory:

- an HTTP upstream and a WebSocket echo server (``benchmarks/soak_load.py upstream``, ``benchmarks/ws_echo.py``);
- snakeway with ``workers = 2``: a plain listener (``/app`` proxied, ``/ws`` WebSockets, ``/static`` files) and
  a TLS listener with a ``manual`` certificate from a local CA;
- the load generator (``benchmarks/soak_load.py load``), a process of its own so that it does not share a loop
  with snakeway; its docstring lists the kinds of traffic and which outcomes count as failures.

While the load runs, this process sends snakeway SIGHUP every 5 s and, every 10 s, first writes a new
certificate (a new leaf from the same CA, written next to the files and renamed over them) so that the
reload swaps it; a few new TLS connections then check that the new certificate is served within 5 s. It
samples the RSS of snakeway's process tree (supervisor and workers) after one minute (or two thirds of the
run, if shorter) and a second before the load ends.

It exits non-zero when a request failed through no fault of the client, when a swapped certificate was not
served, when a worker was replaced (it crashed), or when the RSS at the end is not within 10 % of the first
sample. Every process it starts it stops, on success, failure and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.certs import CA
from benchmarks.procs import LOOPBACK, Group, Proc, free_port, install_handlers

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
HUP_EVERY = 5.0
SWAP_EVERY = 10.0
HEADER_TIMEOUT = 3
RSS_TOLERANCE = 0.10
BIG_BYTES = 4 * 1024 * 1024


def write_config(tmp: Path, ports: dict[str, int]) -> Path:
    app = f'upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {ports["upstream"]} }} }}]'
    text = f"""\
server {{
  version    = 1
  workers    = 2
  state_dir  = "state"
  access_log = "off"
  client     = {{ header_timeout_seconds = {HEADER_TIMEOUT} }}
}}
ingress "plain" {{
  bind = {{ interface = "127.0.0.1", port = {ports["http"]} }}
  services = [
    {{ name = "app", routes = [{{ hosts = ["*"], path = "/app" }}], {app} }},
    {{ name = "ws", routes = [{{ hosts = ["*"], path = "/ws", enable_websocket = true }}],
      upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {ports["ws"]} }} }}] }},
  ]
  static_files = [{{ routes = [{{ hosts = ["*"], path = "/static", file_dir = "www" }}] }}]
}}
ingress "tls" {{
  bind = {{ interface = "127.0.0.1", port = {ports["https"]},
           tls = {{ mode = "manual", cert = "certs/site.pem", key = "certs/site.key" }} }}
  services = [{{ name = "app-tls", routes = [{{ hosts = ["*"], path = "/app" }}], {app} }}]
}}
"""
    path = tmp / "snakeway.hcl"
    path.write_text(text)
    return path


def swap_certificate(ca: CA, certs: Path) -> bytes:
    """Write a new leaf for localhost over the old files (each renamed into place); its DER."""
    cert_pem, key_pem = ca.issue(["localhost", "127.0.0.1"])
    for name, data in (("site.key", key_pem), ("site.pem", cert_pem + ca.cert_pem)):
        staged = certs / f".{name}.new"
        staged.write_bytes(data)
        staged.chmod(0o600)
        os.replace(staged, certs / name)
    return ssl.PEM_cert_to_DER_cert(cert_pem.decode())


def served_certificate(port: int, context: ssl.SSLContext) -> bytes | None:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                return sock.getpeercert(binary_form=True)
    except OSError:
        return None


def new_certificate_served(port: int, context: ssl.SSLContext, der: bytes, deadline: float) -> bool:
    """Whether 4 new connections in a row (so, very likely, both workers) serve ``der`` before ``deadline``."""
    streak = 0
    while time.monotonic() < deadline:
        streak = streak + 1 if served_certificate(port, context) == der else 0
        if streak == 4:
            return True
        time.sleep(0.05)
    return False


def worker_pids(proc: Proc) -> set[int]:
    return set(proc.session_pids()) - {proc.pid}


def run(seconds: float, tmp: Path) -> int:
    ca = CA("snakeway soak CA")
    certs, www = tmp / "certs", tmp / "www"
    certs.mkdir()
    www.mkdir()
    (tmp / "state").mkdir()
    swap_certificate(ca, certs)
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    (www / "file.bin").write_bytes(os.urandom(64 * 1024))
    (www / "big.bin").write_bytes(os.urandom(BIG_BYTES))
    ports = {name: free_port() for name in ("upstream", "ws", "http", "https")}
    config = write_config(tmp, ports)
    spec = {"seconds": seconds, "http_port": ports["http"], "https_port": ports["https"],
            "ca_file": str(tmp / "ca.pem"), "www": str(www), "header_timeout": HEADER_TIMEOUT}
    (tmp / "spec.json").write_text(json.dumps(spec))
    context = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    problems: list[str] = []
    with Group() as group:
        group.start("upstream", [PYTHON, "-m", "benchmarks.soak_load", "upstream", str(ports["upstream"])],
                    tmp / "upstream.log", env=env, cwd=HERE.parent).wait_port(ports["upstream"], 20)
        group.start("ws-echo", [PYTHON, str(HERE / "ws_echo.py"), str(ports["ws"])], tmp / "ws.log",
                    env=env).wait_port(ports["ws"], 20)
        proxy = group.start("snakeway", [PYTHON, "-m", "snakeway", "serve", "--config", str(config)],
                            tmp / "snakeway.log", env=env, cwd=tmp)
        proxy.wait_port(ports["http"], 60)
        proxy.wait_port(ports["https"], 60)
        deadline = time.monotonic() + 20
        while len(workers := worker_pids(proxy)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        if len(workers) != 2:
            problems.append(f"expected 2 workers, found {len(workers)}")
        load = group.start("load", [PYTHON, "-m", "benchmarks.soak_load", "load", str(tmp / "spec.json"),
                                    str(tmp / "result.json")], tmp / "load.log", env=env, cwd=HERE.parent)
        start = time.monotonic()
        first_at = min(60.0, seconds * 2 / 3)
        rss_first = rss_end = 0.0  # under load: the first at first_at, the last a second before the load ends
        hups = swaps = 0
        next_hup = start + HUP_EVERY
        while load.alive() and time.monotonic() < start + seconds + 60:
            now = time.monotonic()
            if not rss_first and now >= start + first_at:
                rss_first = proxy.memory_mib()[0]
                print(f"RSS after {first_at:.0f} s: {rss_first:.1f} MiB", flush=True)
            if now >= next_hup and now < start + seconds - 2:
                swap = hups % 2 == 1  # every other reload, i.e. every SWAP_EVERY seconds
                der = swap_certificate(ca, certs) if swap else b""
                os.kill(proxy.pid, signal.SIGHUP)
                hups += 1
                if swap:
                    swaps += 1
                    if not new_certificate_served(ports["https"], context, der, time.monotonic() + 5):
                        problems.append(f"certificate swap {swaps} not served within 5 s")
                next_hup = max(next_hup + HUP_EVERY, time.monotonic() + 1)
            if not rss_end and now >= start + seconds - 1:
                rss_end = proxy.memory_mib()[0]
            time.sleep(0.1)
        rss_end = rss_end or proxy.memory_mib()[0]
        if load.alive():
            problems.append("the load generator did not finish in time")
        if not proxy.alive():
            problems.append(f"snakeway exited: {proxy.log_tail()}")
        replaced = workers - worker_pids(proxy)
        if replaced:
            problems.append(f"workers {sorted(replaced)} were replaced (crashed): {proxy.log_tail()}")
    result_path = tmp / "result.json"
    if not result_path.exists():
        problems.append(f"no result from the load generator: {load.log_tail()}")
        result: dict = {"requests": {}, "failures": {}, "client_caused": {}}
    else:
        result = json.loads(result_path.read_text())
    failed = sum(sum(reasons.values()) for reasons in result["failures"].values())
    if failed:
        problems.append(f"{failed} requests failed through no fault of the client")
    growth = (rss_end - rss_first) / rss_first if rss_first else float("inf")
    if abs(growth) > RSS_TOLERANCE:
        problems.append(f"RSS changed by {growth:+.1%} between {first_at:.0f} s and the end (limit ±10 %)")
    print(f"\nsoak: {seconds:.0f} s, snakeway with 2 workers, {hups} SIGHUPs, {swaps} certificate swaps")
    print("requests by kind:")
    for kind, count in sorted(result["requests"].items()):
        print(f"  {kind:13} {count:8d}")
    print(f"  {'total':13} {sum(result['requests'].values()):8d}")
    print(f"failures the server caused: {failed} {json.dumps(result['failures']) if failed else ''}")
    print(f"client-caused closes (not failures): {json.dumps(result['client_caused'])}")
    print(f"RSS of supervisor + workers: {rss_first:.1f} MiB after {first_at:.0f} s, {rss_end:.1f} MiB at the end "
          f"({growth:+.1%})")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("soak passed" if not problems else "soak FAILED")
    return 1 if problems else 0


def main() -> int:
    install_handlers()
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    keep = os.environ.get("SOAK_KEEP_TMP", "") not in ("", "0")
    tmp = Path(tempfile.mkdtemp(prefix="snakeway-soak-"))
    try:
        return run(seconds, tmp)
    finally:
        if keep:
            print(f"logs and configuration kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
