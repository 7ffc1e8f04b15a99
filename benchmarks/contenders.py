"""Start and stop the upstream and the three proxies, each with its own config in a temporary directory.

- upstream: nginx, one worker, ``return 200 "hello"`` on ``/`` and a 1 MiB file on ``/big``;
  plus a trio-websocket echo server (benchmarks/ws_echo.py) for ``/ws``.
- snakeway: ``python -m snakeway serve --config <generated hcl>``.
- Caddy: ``caddy run --config Caddyfile --adapter caddyfile``, admin off, XDG dirs in the temp dir.
- nginx: ``daemon off``, own prefix, ``proxy_pass`` with upstream keep-alive.

Everything listens on 127.0.0.1 only, on free ports. Each proxy has a plain-HTTP
port and an HTTPS port (the same self-made certificate for all three).
Access logs: off for all three (their fastest setting), unless BENCH_ACCESS_LOG=1
turns them on for all three, each to a file.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.deps import which
from benchmarks.procs import LOOPBACK, Group, Proc, free_port

BIG_BYTES = 1024 * 1024
START_TIMEOUT = 60.0
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROXIES = ("snakeway", "caddy", "nginx")
NAMES = ("upstream", *PROXIES)


def access_log() -> bool:
    return os.environ.get("BENCH_ACCESS_LOG", "") not in ("", "0", "off", "no")


@dataclass
class Setup:
    """What every contender shares: the temp dir, the certificate, the upstreams."""

    tmp: Path
    cert: Path
    key: Path
    ca: Path
    upstream_port: int = 0
    ws_port: int = 0
    ws_proc: Proc | None = None  # the WebSocket echo server
    unavailable: dict[str, str] | None = None  # Debian package -> why missing


@dataclass
class Running:
    name: str
    proc: Proc
    http_port: int
    https_port: int | None = None


def q(text: object) -> str:
    """An HCL string literal (JSON escapes are HCL escapes)."""
    return json.dumps(str(text))


def nofile_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


# --- the upstream -------------------------------------------------------------------------------


def _nginx_main(prefix: Path, workers: str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # else workers run as nobody and cannot read the temp dir
    temp = "\n".join(f"  {kind}_temp_path {prefix / 'tmp' / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    limit = nofile_limit()
    return f"""{user}daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {limit};
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections {max(1024, limit - 100)}; }}
http {{
{temp}
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
"""


def _run_nginx(group: Group, name: str, prefix: Path, conf: str, port: int) -> Proc:
    binary = which("nginx")
    if binary is None:
        raise RuntimeError("nginx not installed")
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    proc = group.start(name, [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
                       prefix / "stderr.log")
    proc.wait_port(port, START_TIMEOUT)
    return proc


def start_upstream(group: Group, setup: Setup) -> Running:
    prefix = setup.tmp / "upstream"
    (prefix / "www").mkdir(parents=True)
    (prefix / "www" / "big").write_bytes(os.urandom(BIG_BYTES))
    port = free_port()
    conf = _nginx_main(prefix, "1") + f"""  access_log off;
  server {{
    listen {LOOPBACK}:{port} backlog=4096;
    root {prefix / 'www'};
    location = / {{ return 200 "hello"; }}
    location = /big {{ }}
  }}
}}
"""
    proc = _run_nginx(group, "upstream nginx", prefix, conf, port)
    setup.upstream_port = port
    return Running("upstream", proc, port)


def start_ws_echo(group: Group, setup: Setup) -> Proc:
    port = free_port()
    proc = group.start("ws echo", [sys.executable, str(HERE / "ws_echo.py"), str(port)], setup.tmp / "ws_echo.log")
    proc.wait_port(port, START_TIMEOUT)
    setup.ws_port = port
    setup.ws_proc = proc
    return proc


# --- snakeway -----------------------------------------------------------------------------------


def server_block(state_dir: Path, extra: str = "") -> str:
    workers = os.environ.get("SNAKEWAY_WORKERS", "").strip()
    lines = [
        "server {",
        "  version   = 1",
        f"  state_dir = {q(state_dir)}",
        "  shutdown  = { drain_seconds = 1 }",
        "  client    = { idle_timeout_seconds = 600, header_timeout_seconds = 60 }",
    ]
    if workers:
        lines.append(f"  workers   = {int(workers)}")
    lines.append(f"  access_log = {q(str(state_dir.parent / 'access.log')) if access_log() else q('off')}")
    if extra:
        lines.append(extra)
    lines.append("}")
    return "\n".join(lines) + "\n"


def service(name: str, host_list: list[str], port: int, *, websocket: bool = False, path: str = "/") -> str:
    ws = ", enable_websocket = true" if websocket else ""
    hosts = ", ".join(q(h) for h in host_list)
    return (f'{{ name = {q(name)}, routes = [{{ hosts = [{hosts}], path = {q(path)}{ws} }}], '
            f'upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {port} }} }}] }}')


def run_snakeway(group: Group, workdir: Path, config: str, port: int, *, wait: bool = True, name: str = "snakeway") -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "snakeway.hcl"
    path.write_text(config)
    proc = group.start(name, [sys.executable, "-m", "snakeway", "serve", "--config", str(path)], workdir / "snakeway.log",
                       cwd=ROOT)
    if wait:
        proc.wait_port(port, START_TIMEOUT)
    return proc


def start_snakeway(group: Group, setup: Setup, tag: str = "") -> Running:
    workdir = setup.tmp / f"snakeway{tag}"
    http, https = free_port(), free_port()
    ingresses = []
    for kind, port, tls in (
        ("plain", http, ""),
        ("tls", https, f',\n    tls = {{ mode = "manual", cert = {q(setup.cert)}, key = {q(setup.key)}, default = "localhost" }}'),
    ):
        ingresses.append(f"""ingress {q(kind)} {{
  bind = {{ interface = "127.0.0.1", port = {port}{tls} }}
  services = [
    {service(kind + '-ws', ['*'], setup.ws_port, websocket=True, path='/ws')},
    {service(kind + '-up', ['*'], setup.upstream_port)},
  ]
}}
""")
    config = server_block(workdir / "state") + "\n" + "\n".join(ingresses)
    proc = run_snakeway(group, workdir, config, https)
    proc.wait_port(http, START_TIMEOUT)
    return Running("snakeway", proc, http, https)


# --- Caddy --------------------------------------------------------------------------------------


def caddy_global(workdir: Path, http_port: int, https_port: int, extra: str = "") -> str:
    return f"""{{
	admin off
	default_bind 127.0.0.1
	http_port {http_port}
	https_port {https_port}
	storage file_system {workdir / 'storage'}
	servers {{
		protocols h1 h2
	}}
{extra}}}
"""


def run_caddy(group: Group, workdir: Path, caddyfile: str, port: int, *, wait: bool = True) -> Proc:
    binary = which("caddy")
    if binary is None:
        raise RuntimeError("caddy not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "config", "home"):
        (workdir / sub).mkdir(exist_ok=True)
    path = workdir / "Caddyfile"
    path.write_text(caddyfile)
    env = dict(os.environ, XDG_DATA_HOME=str(workdir / "data"), XDG_CONFIG_HOME=str(workdir / "config"),
               HOME=str(workdir / "home"))
    proc = group.start("caddy", [binary, "run", "--config", str(path), "--adapter", "caddyfile"], workdir / "caddy.log",
                       env=env)
    if wait:
        proc.wait_port(port, START_TIMEOUT)
    return proc


def start_caddy(group: Group, setup: Setup, tag: str = "") -> Running:
    workdir = setup.tmp / f"caddy{tag}"
    http, https = free_port(), free_port()
    log = f"\tlog {{\n\t\toutput file {workdir / 'access.log'}\n\t}}\n" if access_log() else ""
    proxy = f"""{log}	reverse_proxy /ws* 127.0.0.1:{setup.ws_port}
	reverse_proxy 127.0.0.1:{setup.upstream_port}
"""
    caddyfile = caddy_global(workdir, free_port(), free_port(), "\tauto_https disable_redirects\n") + f"""
http://:{http} {{
{proxy}}}

https://:{https} {{
	tls {setup.cert} {setup.key}
{proxy}}}
"""
    proc = run_caddy(group, workdir, caddyfile, https)
    proc.wait_port(http, START_TIMEOUT)
    return Running("caddy", proc, http, https)


# --- nginx as a proxy ---------------------------------------------------------------------------


def start_nginx(group: Group, setup: Setup, tag: str = "") -> Running:
    prefix = setup.tmp / f"nginx{tag}"
    prefix.mkdir(parents=True)
    http, https = free_port(), free_port()
    log = f"access_log {prefix / 'access.log'};" if access_log() else "access_log off;"
    locations = """    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffer_size 64k;
      proxy_buffers 16 64k;
      proxy_max_temp_file_size 0;
    }
    location /ws {
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_read_timeout 600s;
    }
"""
    conf = _nginx_main(prefix, os.environ.get("BENCH_NGINX_WORKERS", "auto")) + f"""  {log}
  upstream up {{ server 127.0.0.1:{setup.upstream_port}; keepalive 64; keepalive_requests 100000000; }}
  upstream ws {{ server 127.0.0.1:{setup.ws_port}; }}
  server {{
    listen {LOOPBACK}:{http} backlog=4096;
{locations}  }}
  server {{
    listen {LOOPBACK}:{https} ssl backlog=4096;
    ssl_protocols TLSv1.2 TLSv1.3;  # nginx 1.22's default lacks TLSv1.3, which snakeway and Caddy offer
    ssl_certificate {setup.cert};
    ssl_certificate_key {setup.key};
{locations}  }}
}}
"""
    proc = _run_nginx(group, "nginx", prefix, conf, https)
    proc.wait_port(http, START_TIMEOUT)
    return Running("nginx", proc, http, https)


STARTERS = {"snakeway": start_snakeway, "caddy": start_caddy, "nginx": start_nginx}


def missing_reason(name: str, setup: Setup) -> str | None:
    """Why a proxy cannot run at all (its package is missing), or None."""
    if name in ("caddy", "nginx") and setup.unavailable and name in setup.unavailable:
        return setup.unavailable[name]
    return None
