"""`server.workers`: several processes behind the same ports, one supervisor."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
from pathlib import Path

import trio
import trustme

from tests.helpers import closed_port, get, start_upstream
from tests.pebble import free_port, run_pebble
from tests.proc import Running, snakeway
from tests.tlshelpers import client_context, tls_request, write_leaf

PID = re.compile(rb"\[(\d+)\] snakeway")


def pids(log: bytes, what: bytes) -> set[int]:
    return {int(m.group(1)) for line in log.splitlines() if what in line for m in [PID.search(line)] if m}


async def wait_count(proc: Running, what: bytes, count: int, timeout: float = 15) -> None:
    """Until ``count`` different processes have logged ``what``."""
    with trio.fail_after(timeout):
        while len(pids(proc.log, what)) < count:
            await proc.read_more()


def plain_config(path: Path, listen: int, upstream: int, route: str = "/") -> None:
    path.write_text(
        f"""
server {{
  version  = 1
  workers   = 2
  pid_file  = "{path.parent / 'snakeway.pid'}"
  state_dir = "{path.parent / 'state'}"
}}
ingress "web" {{
  bind = {{ interface = "127.0.0.1", port = {listen} }}
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "{route}" }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}] }}]
}}
"""
    )


async def two_workers(nursery: trio.Nursery, tmp_path: Path) -> tuple[Path, int, int]:
    """A two-worker configuration in front of a fresh upstream: (config, listen port, upstream port)."""
    upstream, _ = await start_upstream(nursery)
    listen = closed_port()
    config = tmp_path / "snakeway.hcl"
    plain_config(config, listen, upstream)
    return config, listen, upstream


async def test_workers_share_the_port_reload_restart_and_stop(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, listen, upstream = await two_workers(nursery, tmp_path)
    async with snakeway(config) as proc:
        await wait_count(proc, b"listening on", 2)
        workers = pids(proc.log, b"listening on")
        assert proc.process.pid not in workers
        assert (tmp_path / "snakeway.pid").read_text().strip() == str(proc.process.pid)
        # The kernel spreads new connections over both workers.
        with trio.fail_after(15):
            while pids(proc.log, b"snakeway.access") != workers:
                assert (await get(listen)).status == 200
                await proc.read_more()
        # SIGHUP reaches every worker.
        plain_config(config, listen, upstream, route="/v2")
        proc.process.send_signal(signal.SIGHUP)
        await wait_count(proc, b"configuration reloaded", 2)
        for _ in range(6):
            assert (await get(listen, "/")).status == 404
            assert (await get(listen, "/v2")).status == 200
        # A worker that dies is replaced.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        await proc.wait_for(b"starting a new one")
        await wait_count(proc, b"listening on", 3)
        # SIGTERM stops everything, exit code 0.
        proc.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await proc.process.wait() == 0
        for pid in pids(proc.log, b"listening on"):
            assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()


async def test_one_order_per_certificate_and_every_worker_serves_it(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    names = ("w.example.test", "www.w.example.test")
    (tmp_path / "pebble").mkdir()
    async with run_pebble(tmp_path / "pebble", http_port=free_port(), tls_port=free_port()) as pebble:
        state = tmp_path / "state"
        config = tmp_path / "snakeway.hcl"
        config.write_text(
            f"""
server {{
  version   = 1
  workers   = 2
  state_dir = "{state}"
  tls_automation = {{
    acme = {{ directory_url = "{pebble.directory_url}", ca_file = "{pebble.ca_file}" }}
  }}
}}
ingress "site" {{
  bind = {{
    interface = "127.0.0.1"
    port      = {pebble.tls_port}
    tls       = {{ mode = "acme", domains = ["{names[0]}", "{names[1]}"] }}
    redirect_http_to_https = {{ port = {pebble.http_port} }}
  }}
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "/" }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}] }}]
}}
"""
        )
        async with snakeway(config) as proc:
            await wait_count(proc, b"listening on https", 2)
            await proc.wait_for(b"issued by", timeout=30)
            # The other worker picks it up from the store within a second.
            await wait_count(proc, b"picked up from the store", 1, timeout=1.0)
            root = await pebble.roots()
            serials = set()
            for _ in range(30):
                serials.add((await tls_request(pebble.tls_port, client_context(root), names[1])).serial)
            assert len(serials) == 1
            assert proc.log.count(b"ordering from") == 1
            assert proc.log.count(b"issued by") == 1
            assert pids(proc.log, b"picked up from the store").isdisjoint(pids(proc.log, b"issued by"))
            proc.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await proc.process.wait() == 0


def gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return b"zombie" in status.read_bytes().lower()
    except FileNotFoundError:
        return True


async def test_workers_stop_when_the_supervisor_is_killed(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, listen, _ = await two_workers(nursery, tmp_path)
    async with snakeway(config) as proc:
        await wait_count(proc, b"listening on", 2)
        workers = pids(proc.log, b"listening on")
        proc.process.kill()
        with trio.fail_after(10):
            while not all(gone(pid) for pid in workers):
                await trio.sleep(0.1)
        assert await closed(listen)


async def closed(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


def resuming_requests(port: int, context: ssl.SSLContext, count: int) -> list[bool]:
    """``count`` HTTPS requests on new connections, each offering the previous one's session; whether each resumed."""
    session, resumed = None, []
    for number in range(count):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw, server_hostname="a.test", session=session) as tls:
                tls.sendall(f"GET /r{number} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n".encode())
                while tls.recv(65536):
                    pass
                resumed.append(tls.session_reused)
                session = tls.session
    return resumed


async def test_a_session_resumes_on_whichever_worker_the_client_reaches(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    files = write_leaf(ca, tmp_path, "a.test")
    config, listen, upstream = await two_workers(nursery, tmp_path)
    plain_config(config, listen, upstream)
    config.write_text(config.read_text().replace(
        f"port = {listen} }}", f'port = {listen}, tls = {{ mode = "manual", cert = "{files.cert}", key = "{files.key}" }} }}'
    ))
    async with snakeway(config) as proc:
        await wait_count(proc, b"listening on", 2)
        resumed = await trio.to_thread.run_sync(resuming_requests, listen, client_context(ca.cert_pem.bytes()), 16)
        with trio.fail_after(10):
            while proc.log.count(b'"GET /r') < 16:
                await proc.read_more()
    served_by = {int(m.group(2)): int(m.group(1)) for m in re.finditer(rb'\[(\d+)\] snakeway\.access: \S+ \S+ "GET /r(\d+) ', proc.log)}
    assert len(set(served_by.values())) == 2, served_by  # the kernel spread the connections over both workers
    assert resumed == [False] + [True] * 15
