"""`python -m snakeway` as a user runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio
import trustme

from snakeway import __version__
from snakeway.acme.filestore import FileStore
from snakeway.acme.store import CertBundle
from tests.helpers import Client, closed_port, get, start_upstream
from tests.proc import snakeway

PYTHON = sys.executable


def write_config(path: Path, listen: int, upstream: int, route: str = "/", drain: int = 10) -> None:
    path.write_text(
        f"""
server {{
  version  = 1
  workers  = 1
  pid_file = "{path.parent / 'snakeway.pid'}"
  shutdown = {{ drain_seconds = {drain} }}
}}
ingress "web" {{
  bind = {{ interface = "127.0.0.1", port = {listen} }}
  services = [{{
    name      = "app"
    routes    = [{{ hosts = ["*"], path = "{route}" }}]
    upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}]
  }}]
}}
"""
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "snakeway", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_check_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "snakeway.hcl"
    config.write_text(
        'server {\n  version = 1\n}\ningress "w" {\n'
        '  bind = { interface = "127.0.0.1", port = 99999 }\n'
        '  services = [{ name = "a", routes = [{ hosts = ["*"], path = "/" }],\n'
        '    upstreams = [{ endpoint = { host = "127.0.0.1", port = 9 } }], colour = "blue" }]\n}\n'
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert f"{config}:5: ingress.w.bind.port: " in lines[0]
    assert f"{config}:7: ingress.w.services[0].colour: unknown key" in lines[1]


def test_check_accepts_the_example() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [PYTHON, "-m", "snakeway", "check", "--config", "snakeway.hcl.example"],
        capture_output=True, text=True, cwd=root, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr


def write_acme_config(path: Path, domains: str, renew: str = "") -> None:
    path.write_text(
        f"""
server {{
  version   = 1
  state_dir = "{path.parent / 'state'}"
  tls_automation = {{
    {renew}
    acme = {{ directory_url = "https://ca.test/dir" }}
  }}
}}
ingress "site" {{
  bind = {{
    interface = "127.0.0.1", port = {closed_port()}
    tls = {{ mode = "acme",
            domains = [{domains}] }}
    redirect_http_to_https = {{ port = {closed_port()} }}
  }}
}}
"""
    )


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_check_refuses_a_certificate_of_more_than_100_names(tmp_path: Path) -> None:
    config = tmp_path / "snakeway.hcl"
    write_acme_config(config, ", ".join(f'"n{i}.example.com"' for i in range(101)))
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}:{line_of(config, 'domains =')}: ingress.site.bind.tls.domains: 101 names make one certificate, "
        "and ACME CAs issue at most 100 names per certificate; split them across listeners or set "
        "certificate_per_domain = true"
    ]


def test_check_warns_when_renew_within_days_is_clamped_for_a_stored_certificate(tmp_path: Path) -> None:
    config = tmp_path / "snakeway.hcl"
    write_acme_config(config, '"a.test", "www.a.test"', renew="renew_within_days = 30")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    leaf = trustme.CA().issue_cert("a.test", "www.a.test", not_before=start, not_after=start + timedelta(hours=160))
    chain = b"".join(b.bytes() for b in leaf.cert_chain_pems)
    bundle = CertBundle.from_pem("a.test", ("a.test", "www.a.test"), chain, leaf.private_key_pem.bytes())
    trio.run(FileStore(tmp_path / "state" / "certs", tmp_path / "state" / "acme").save, bundle)

    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: configuration is valid\n"
    assert result.stderr.splitlines() == [
        f"{config}:{line_of(config, 'renew_within_days')}: server.tls_automation.renew_within_days: warning: "
        "renew_within_days = 30 is more than half the lifetime of the stored certificate 'a.test' (160 hours); "
        f"it will be renewed with half its lifetime left, at {start + timedelta(hours=80):%Y-%m-%d %H:%M} UTC"
    ]

    # Unset, the lifetime rule applies and there is nothing to say.
    write_acme_config(config, '"a.test", "www.a.test"')
    result = run_cli("check", "--config", str(config))
    assert (result.returncode, result.stderr) == (0, "")


def test_config_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "env.hcl"
    write_config(config, closed_port(), 9)
    env = {**os.environ, "SNAKEWAY_CONFIG": str(config)}
    result = subprocess.run(
        [PYTHON, "-m", "snakeway", "check"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0
    assert str(config) in result.stdout


async def test_sighup_reloads_routes_without_dropping_connections(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    listen = closed_port()
    config = tmp_path / "snakeway.hcl"
    write_config(config, listen, upstream, route="/old")
    async with snakeway(config) as proc:
        assert (tmp_path / "snakeway.pid").read_text().strip() == str(proc.process.pid)
        client = await Client.connect(listen)
        assert (await client.request(target="/old")).status == 200
        await proc.wait_for(b'"GET /old HTTP/1.1" 200 ')  # the access log
        assert (await client.request(target="/new")).status == 404

        write_config(config, listen, upstream, route="/new")
        proc.process.send_signal(signal.SIGHUP)
        await proc.wait_for(b"configuration reloaded")
        assert (await client.request(target="/new")).status == 200  # same connection
        assert (await client.request(target="/old")).status == 404

        config.write_text("server { version = 2 }\n")
        proc.process.send_signal(signal.SIGHUP)
        await proc.wait_for(b"reload failed")
        assert b"server.version" in proc.log
        assert (await client.request(target="/new")).status == 200
        await client.aclose()


async def test_sigterm_drains_in_flight_requests(nursery: trio.Nursery, tmp_path: Path) -> None:
    release = trio.Event()

    async def slow(request, body):  # type: ignore[no-untyped-def]
        await release.wait()
        return 200, [], b"finished"

    upstream, seen = await start_upstream(nursery, slow)
    listen = closed_port()
    config = tmp_path / "snakeway.hcl"
    write_config(config, listen, upstream)
    async with snakeway(config) as proc:
        idle = await Client.connect(listen)
        in_flight = await Client.connect(listen)
        answer: list[bytes] = []

        async def ask() -> None:
            answer.append((await in_flight.request(target="/slow")).body)

        async with trio.open_nursery() as inner:
            inner.start_soon(ask)
            with trio.fail_after(10):
                while not seen.requests:
                    await trio.sleep(0.01)
            proc.process.send_signal(signal.SIGTERM)
            await proc.wait_for(b"shutting down")
            # An idle keep-alive connection is closed at once...
            with trio.fail_after(5):
                assert await idle.stream.receive_some(10) == b""
            # ...and no new connection is accepted.
            try:
                await get(listen)
                raise AssertionError("a new connection was accepted while draining")
            except OSError:
                pass
            release.set()
        assert answer == [b"finished"]
        with trio.fail_after(10):
            assert await proc.process.wait() == 0
        assert not (tmp_path / "snakeway.pid").exists()
