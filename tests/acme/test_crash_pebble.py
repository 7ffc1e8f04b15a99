"""Crash safety and `python -m snakeway certs`, with a real process and Pebble."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from snakeway.acme.filestore import FileStore
from tests.helpers import start_upstream
from tests.pebble import free_port, run_pebble
from tests.proc import snakeway

NAMES = ("crash.example.test", "www.crash.example.test")


def write_config(path: Path, pebble, upstream: int) -> None:  # type: ignore[no-untyped-def]
    state = path.parent / "state"
    path.write_text(
        f"""
server {{
  version   = 1
  workers   = 1
  state_dir = "{state}"
  tls_automation = {{
    renew_within_days      = 30
    check_interval_seconds = 600
    acme = {{
      directory_url = "{pebble.directory_url}"
      ca_file       = "{pebble.ca_file}"
      data_dir      = "{state}/acme"
      contact_email = ["ops@example.test"]
    }}
    cert_store = {{ type = "filesystem", cert_dir = "{state}/certs" }}
  }}
}}
ingress "site" {{
  bind = {{
    interface = "127.0.0.1"
    port      = {pebble.tls_port}
    tls       = {{ mode = "acme", domains = {list(NAMES)!r}, challenge = "http-01" }}
    redirect_http_to_https = {{ port = {pebble.http_port} }}
  }}
  services = [{{
    name      = "app"
    routes    = [{{ hosts = ["*"], path = "/" }}]
    upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}]
  }}]
}}
""".replace("'", '"')
    )


async def test_killed_mid_issuance_leaves_a_valid_store(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    workdir = tmp_path / "pebble"
    workdir.mkdir()
    config = tmp_path / "snakeway.hcl"
    store = FileStore(tmp_path / "state" / "certs", tmp_path / "state" / "acme")
    # Validations wait up to 2 s, so a kill right after the order starts lands mid-issuance.
    async with run_pebble(workdir, http_port=free_port(), tls_port=free_port(), va_sleep=2) as pebble:
        write_config(config, pebble, upstream)
        for delay in (0.0, 0.05, 0.3):
            async with snakeway(config, ready=b"ordering from") as proc:
                await trio.sleep(delay)
                proc.process.send_signal(signal.SIGKILL)
                await proc.process.wait()
            # Whatever the moment of the kill, the store holds a valid certificate or none.
            bundle = await store.load(NAMES[0])
            assert bundle is None or set(bundle.domains) == set(NAMES)
            assert await store.list() in ([], [NAMES[0]])
            if bundle is not None:  # this run finished before the kill (a quick validation): the next would not order
                break
        async with snakeway(config) as proc:
            # Either a killed run got as far as saving (and this one loads it),
            # or this one orders again and finishes.
            await proc.wait_for(b"issued by", b"loaded stored certificate", timeout=60)
        bundle = await store.load(NAMES[0])
        assert bundle is not None and set(bundle.domains) == set(NAMES)

        result = subprocess.run(
            [sys.executable, "-m", "snakeway", "certs", "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stderr
        header, row = result.stdout.splitlines()[:2]
        assert header.split()[:2] == ["NAMES", "ISSUER"]
        assert row.startswith(", ".join(NAMES)) and "valid" in row and "Pebble" in row
