"""``reload``, ``certs renew`` and ``trust``: what they ask a running snakeway, and what they print.

The admin listener is played by a small HTTP server in the test, answering as ``POST /admin/reload`` and
``POST /admin/certs/{id}/renew`` are documented to (docs/operations.md); the SIGHUP path runs a real snakeway.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio

from snakeway import control
from snakeway.cli import build_parser, curl_commands
from snakeway.config.load import load_config
from snakeway.config.model import Admin, Config
from tests.e2e.test_cli import write_config
from tests.helpers import closed_port, closed_ports, get, start_upstream
from tests.proc import PYTHON, snakeway

TOKEN = "t" * 40


@dataclass
class FakeAdmin:
    """What the admin listener was asked, and what it answers next: (status, JSON body)."""

    answer: tuple[int, object] = (200, {})
    seen: list[tuple[str, str, str | None, bytes]] = field(default_factory=list)


@contextmanager
def fake_admin() -> Iterator[tuple[FakeAdmin, int]]:
    state = FakeAdmin()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.seen.append(("POST", self.path, self.headers.get("Authorization"), body))
            status, answer = state.answer
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def with_admin(tmp_path: Path, port: int) -> Config:
    tokens = tmp_path / "admin.tokens"
    tokens.write_text(f"\n{TOKEN}\n{'u' * 40}\n")
    return Config(admin=Admin("127.0.0.1", port, tokens))


def test_reload_posts_to_the_admin_listener_with_the_first_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_admin() as (admin, port):
        admin.answer = (200, {"applied": True, "error": None})
        assert control.reload(with_admin(tmp_path, port)) == 0
    assert [(m, p, a) for m, p, a, _ in admin.seen] == [("POST", "/admin/reload", f"Bearer {TOKEN}")]
    assert capsys.readouterr().out == "reloaded: the new configuration is applied\n"


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        ((422, {"applied": False, "error": "snakeway.hcl:3: server.version: unsupported version 2"}),
         "snakeway: reload: snakeway.hcl:3: server.version: unsupported version 2\n"),
        ((401, {"error": "a valid bearer token is required"}), "snakeway: reload: a valid bearer token is required\n"),
        ((500, {}), "snakeway: reload: the admin listener answered 500\n"),
        ((200, ["not", "an object"]), "snakeway: reload: http://127.0.0.1:{port}/admin/reload answered 200 without "
                                      "a JSON object\n"),
    ],
)
def test_a_reload_the_admin_listener_refuses_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], answer: tuple[int, object], line: str
) -> None:
    with fake_admin() as (admin, port):
        admin.answer = answer
        assert control.reload(with_admin(tmp_path, port)) == 1
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", line.format(port=port))


def test_an_admin_listener_that_is_not_there_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    assert control.reload(with_admin(tmp_path, port)) == 1
    assert capsys.readouterr().err == (
        f"snakeway: reload: cannot reach the admin listener at http://127.0.0.1:{port}: Connection refused\n"
    )


def test_certs_renew_posts_the_name_and_prints_the_new_serial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_admin() as (admin, port):
        admin.answer = (200, {"id": "acme:a.test", "action": "renewal", "done": True,
                              "certificate": {"serial": "1f2e"}})
        assert control.renew(with_admin(tmp_path, port), "a.test/x") == 0
        admin.answer = (202, {"id": "acme:b.test", "action": "renewal", "done": False, "certificate": None})
        assert control.renew(with_admin(tmp_path, port), "b.test") == 0
        admin.answer = (404, {"error": "no certificate 'c.test'; GET /admin/certs lists them"})
        assert control.renew(with_admin(tmp_path, port), "c.test") == 1
    assert [p for _, p, _, _ in admin.seen] == [
        "/admin/certs/a.test%2Fx/renew", "/admin/certs/b.test/renew", "/admin/certs/c.test/renew",
    ]
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "acme:a.test: renewed, serial 1f2e",
        "acme:b.test: renewal under way (not done yet); `snakeway certs` shows how it ends",
    ]
    assert out.err == "snakeway: certs renew: no certificate 'c.test'; GET /admin/certs lists them\n"


def test_certs_renew_without_an_admin_listener_says_what_it_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert control.renew(Config(), "a.test") == 1
    err = capsys.readouterr().err
    assert err.startswith("snakeway: certs renew: needs the admin listener (bind_admin)") and err.count("\n") == 1


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "snakeway", *args], capture_output=True, text=True, timeout=60, check=False)


def test_reload_without_admin_or_pid_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "snakeway.hcl"
    config.write_text("server {\n  version = 1\n}\n")
    result = run("reload", "--config", str(config))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("snakeway: reload: the configuration has neither bind_admin nor server.pid_file")
    assert result.stderr.count("\n") == 1
    pid_file = tmp_path / "snakeway.pid"
    config.write_text(f'server {{\n  version = 1\n  pid_file = "{pid_file}"\n}}\n')
    result = run("--config", str(config), "reload")  # --config before the command too
    assert (result.returncode, result.stderr) == (
        1, f"snakeway: reload: {pid_file}: No such file or directory (is snakeway running?)\n"
    )


@pytest.mark.parametrize("workers", [1, 2])
async def test_reload_signals_the_pid_file_and_the_new_route_applies(
    nursery: trio.Nursery, tmp_path: Path, workers: int
) -> None:
    upstream, _ = await start_upstream(nursery)
    listen = closed_port()
    config = tmp_path / "snakeway.hcl"
    write_config(config, listen, upstream, route="/old")
    config.write_text(config.read_text().replace("workers  = 1", f"workers  = {workers}"))
    async with snakeway(config, ready=b"workers serving" if workers > 1 else b"listening on") as proc:
        assert (await get(listen, "/new")).status == 404
        write_config(config, listen, upstream, route="/new")
        config.write_text(config.read_text().replace("workers  = 1", f"workers  = {workers}"))
        result = await trio.run_process(
            [PYTHON, "-m", "snakeway", "reload", "--config", str(config)], capture_stdout=True, check=False
        )
        assert result.returncode == 0
        pid = (tmp_path / "snakeway.pid").read_text().strip()
        assert pid == str(proc.process.pid)
        assert result.stdout.decode() == (
            f"sent SIGHUP to snakeway (pid {pid}); its log says whether the new configuration was applied\n"
        )
        await proc.wait_for(b"configuration reloaded")
        assert (await get(listen, "/new")).status == 200
        proc.process.send_signal(signal.SIGTERM)
        assert await proc.process.wait() == 0


def test_config_is_accepted_before_or_after_the_command() -> None:
    parser = build_parser()
    for argv in (["--config", "a.hcl", "reload"], ["reload", "--config", "a.hcl"],
                 ["certs", "renew", "x", "--config", "a.hcl"], ["--config", "a.hcl", "certs", "renew", "x"],
                 ["certs", "--config", "a.hcl"], ["--config", "b.hcl", "serve", "--config", "a.hcl"]):
        assert parser.parse_args(argv).config == "a.hcl", argv
    assert parser.parse_args(["check"]).config is None
    args = parser.parse_args(["certs"])
    assert args.certs_command is None  # the listing, as before


def test_trust_shows_curl_for_the_configured_listeners(tmp_path: Path) -> None:
    config = tmp_path / "snakeway.hcl"
    port, other, ip = closed_ports(3)
    config.write_text(f"""
server {{
  version   = 1
  state_dir = "{tmp_path / 'state'}"
}}
ingress "a" {{
  bind = {{ interface = "127.0.0.1", port = {port}, tls = {{ mode = "internal", domains = ["a.test", "b.test"] }} }}
}}
ingress "local" {{
  bind = {{ interface = "0.0.0.0", port = {other}, tls = {{ mode = "internal", domains = ["localhost"] }} }}
}}
ingress "ip" {{
  bind = {{ interface = "127.0.0.1", port = {ip}, tls = {{ mode = "internal", domains = ["127.0.0.1"] }} }}
}}
""")
    result = run("trust", "--config", str(config))
    root = tmp_path / "state" / "pki" / "root.pem"
    assert result.returncode == 0 and result.stdout == f"{root}\n" and root.is_file()
    assert result.stderr.splitlines()[1:] == [
        f"  curl --cacert {root} --resolve a.test:{port}:127.0.0.1 https://a.test:{port}/",
        f"  curl --cacert {root} https://localhost:{other}/",
        f"  curl --cacert {root} https://127.0.0.1:{ip}/",
    ]
    assert curl_commands(load_config(config), root) == [line.strip() for line in result.stderr.splitlines()[1:]]


async def test_the_curl_that_trust_prints_works(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    port = closed_port()
    config = tmp_path / "snakeway.hcl"
    config.write_text(f"""
server {{
  version   = 1
  workers   = 1
  state_dir = "{tmp_path / 'state'}"
}}
ingress "a" {{
  bind = {{ interface = "127.0.0.1", port = {port}, tls = {{ mode = "internal", domains = ["a.test"] }} }}
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "/" }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}] }}]
}}
""")
    async with snakeway(config):
        trusted = await trio.run_process([PYTHON, "-m", "snakeway", "trust", "--config", str(config)],
                                         capture_stdout=True, capture_stderr=True)
        command = trusted.stderr.decode().splitlines()[1].split()
        assert command[0] == "curl"
        result = await trio.run_process([*command, "-sS", "-o", "/dev/null", "-w", "%{http_code}"],
                                        capture_stdout=True)
        assert result.stdout == b"200"


def test_certs_renew_from_the_command_line_without_admin(tmp_path: Path) -> None:
    config = tmp_path / "snakeway.hcl"
    config.write_text("server {\n  version = 1\n}\n")
    for argv in (["certs", "renew", "a.test", "--config", str(config)], ["--config", str(config), "certs", "renew",
                                                                          "a.test"]):
        result = run(*argv)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr.startswith("snakeway: certs renew: needs the admin listener (bind_admin)")
    listing = run("certs", "--config", str(config))  # the listing, as before
    assert (listing.returncode, listing.stderr) == (
        0, "no certificates are managed: this configuration has no server.tls_automation\n"
    )
