"""`python -m snakeway` as a user runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from snakeway import __version__
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
        await proc.wait_for(b'127.0.0.1 "GET /old HTTP/1.1" 200 ')  # the access log
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
