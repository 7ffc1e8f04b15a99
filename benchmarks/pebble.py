"""Pebble (Let's Encrypt's ACME test server) for the certificate rows, set up as tests/pebble.py sets it up.

A fresh Pebble per measurement: it forgets accounts and orders when it stops,
and a long-lived one slows down after ~160 orders on one account.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks.certs import CA
from benchmarks.deps import which
from benchmarks.procs import LOOPBACK, Group, free_port

STARTUP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    api_ca_file: Path  # trust root of Pebble's own API certificate
    http_port: int  # where Pebble's VA connects for HTTP-01
    tls_port: int  # ... and for TLS-ALPN-01
    management_url: str
    workdir: Path

    def root_pem(self) -> bytes:
        """The root that signs what this Pebble issues (new at every start)."""
        return https_get(f"{self.management_url}/roots/0", self.api_ca_file)

    def write_root(self) -> Path:
        path = self.workdir / "issued-root.pem"
        path.write_bytes(self.root_pem())
        return path


def https_get(url: str, ca_file: Path, timeout: float = 5.0) -> bytes:
    context = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(url, timeout=timeout) as response:
        return bytes(response.read())


def start_pebble(group: Group, workdir: Path) -> Pebble:
    """Start pebble-challtestsrv (DNS: every name is 127.0.0.1) and pebble in ``group``; wait until ready."""
    pebble_bin, challtestsrv_bin = which("pebble"), which("pebble-challtestsrv")
    if not pebble_bin or not challtestsrv_bin:
        raise RuntimeError("pebble not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    dns_port, chall_mgmt = free_port("udp"), free_port()
    api_port, mgmt_port, http_port, tls_port = free_port(), free_port(), free_port(), free_port()
    ca = CA("pebble API CA")
    cert_path, key_path, ca_path = ca.write_leaf(workdir, "pebble-api", [LOOPBACK, "localhost"])
    config = {
        "pebble": {
            "listenAddress": f"{LOOPBACK}:{api_port}",
            "managementListenAddress": f"{LOOPBACK}:{mgmt_port}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config_path = workdir / "pebble.json"
    config_path.write_text(json.dumps(config, indent=2))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1")
    chall = group.start(
        "pebble-challtestsrv",
        [challtestsrv_bin, "-defaultIPv4", LOOPBACK, "-defaultIPv6", "", "-dns01", f"{LOOPBACK}:{dns_port}",
         "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"{LOOPBACK}:{chall_mgmt}"],
        workdir / "challtestsrv.log", env=env,
    )
    proc = group.start("pebble", [pebble_bin, "-config", str(config_path), "-dnsserver", f"{LOOPBACK}:{dns_port}"],
                       workdir / "pebble.log", env=env)
    chall.wait_port(chall_mgmt, STARTUP_TIMEOUT)
    pebble = Pebble(f"https://{LOOPBACK}:{api_port}/dir", ca_path, http_port, tls_port,
                    f"https://{LOOPBACK}:{mgmt_port}", workdir)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if not proc.alive():
            raise RuntimeError(f"pebble exited: {proc.log_tail()}")
        try:
            https_get(pebble.directory_url, ca_path, 1.0)
            return pebble
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pebble did not answer within {STARTUP_TIMEOUT} s: {proc.log_tail()}") from None
            time.sleep(0.02)
