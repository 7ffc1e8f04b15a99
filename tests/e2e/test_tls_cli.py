"""HTTPS from a real snakeway process, with curl, openssl s_client and SIGHUP."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path

import trio
import trustme

from tests.helpers import closed_ports, start_upstream
from tests.proc import snakeway
from tests.tlshelpers import client_context, tls_request, write_leaf


def write_config(path: Path, tls_port: int, plain_port: int, upstream: int, a: Path, b: Path) -> None:
    path.write_text(
        f"""
server {{
  version   = 1
  workers   = 1
  state_dir = "{path.parent / 'state'}"
}}
ingress "site" {{
  bind = {{
    interface = "127.0.0.1"
    port      = {tls_port}
    tls = {{ mode = "manual", default = "a.test", certs = [
      {{ cert = "{a}.pem", key = "{a}.key" }},
      {{ cert = "{b}.pem", key = "{b}.key" }},
    ] }}
    redirect_http_to_https = {{ port = {plain_port} }}
  }}
  services = [{{
    name      = "app"
    routes    = [{{ hosts = ["*"], path = "/" }}]
    upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}]
  }}]
}}
"""
    )


async def run(*args: str) -> str:
    result = await trio.run_process(list(args), capture_stdout=True, capture_stderr=True, stdin=b"")
    return result.stdout.decode() + result.stderr.decode()


async def test_real_clients_and_sighup_swap(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    write_leaf(ca, tmp_path, "a.test")
    write_leaf(ca, tmp_path, "b.test")
    upstream, _ = await start_upstream(nursery)
    tls_port, plain_port = closed_ports(2)
    config = tmp_path / "snakeway.hcl"
    write_config(config, tls_port, plain_port, upstream, tmp_path / "a.test", tmp_path / "b.test")
    async with snakeway(config, ready=f"listening on http://127.0.0.1:{plain_port}".encode()) as proc:
        out = await run(
            "curl", "-sS", "--max-time", "10", "--cacert", str(ca_file),
            "--resolve", f"b.test:{tls_port}:127.0.0.1", f"https://b.test:{tls_port}/hello",
        )
        assert out == "GET /hello 0"
        out = await run(
            "openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-servername", "b.test",
            "-CAfile", str(ca_file), "-verify_return_error", "-verify_hostname", "b.test",
        )
        assert "Verify return code: 0 (ok)" in out  # the chain, and b.test's certificate
        out = await run(
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
            f"http://127.0.0.1:{plain_port}/x?y=1", "-H", "Host: a.test",
        )
        assert out == f"308 https://a.test:{tls_port}/x?y=1"

        first = (await tls_request(tls_port, client_context(ca_file), "a.test")).serial
        failures: list[BaseException] = []
        serials: set[int] = set()
        stop = trio.Event()

        async def handshake_loop() -> None:
            while not stop.is_set():
                try:
                    serials.add((await tls_request(tls_port, client_context(ca_file), "a.test")).serial)
                except (OSError, ssl.SSLError, trio.BrokenResourceError) as exc:
                    failures.append(exc)

        async with trio.open_nursery() as clients:
            for _ in range(3):
                clients.start_soon(handshake_loop)
            await trio.sleep(0.2)
            write_leaf(ca, tmp_path, "a.test")  # new PEM files in place, then SIGHUP
            proc.process.send_signal(signal.SIGHUP)
            await proc.wait_for(b"configuration reloaded")
            await trio.sleep(0.2)
            stop.set()
        assert failures == []
        second = (await tls_request(tls_port, client_context(ca_file), "a.test")).serial
        assert second != first
        assert serials == {first, second}

        # An expired certificate is refused with a clear message; the current one stays.
        expired = trustme.CA().issue_cert("a.test", not_after=__import__("datetime").datetime(2020, 1, 1))
        (tmp_path / "a.test.pem").write_bytes(b"".join(b.bytes() for b in expired.cert_chain_pems))
        (tmp_path / "a.test.key").write_bytes(expired.private_key_pem.bytes())
        proc.process.send_signal(signal.SIGHUP)
        await proc.wait_for(b"reload failed")
        await proc.wait_for(b"expired")
        assert (await tls_request(tls_port, client_context(ca_file), "a.test")).serial == second
