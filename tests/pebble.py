"""Pebble, Let's Encrypt's ACME test server, as a test fixture.

:func:`run_pebble` starts ``pebble-challtestsrv`` (a DNS server answering every
name with 127.0.0.1; its own challenge servers off, because the code under
test answers the challenges) and ``pebble`` on free loopback ports, waits until
the ACME directory answers, and kills both at exit, whatever happened in
between.

Pebble's API certificate is made by trustme for ``127.0.0.1`` and
``localhost``; :attr:`Pebble.ca_file` is the CA to trust for the API. The CA
that signs *issued* certificates is different and new at every start: get it
with :meth:`Pebble.roots`.

If the ``pebble`` package is not installed the fixture fails (never skips):
these tests are the only proof that the ACME client talks to a real CA.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import pytest
import trio
import trustme

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02
_INSTALL_HINT = "apt-get install -y pebble (Debian package, provides /usr/bin/pebble)"


def free_port(kind: Literal["tcp", "udp"] = "tcp") -> int:
    """A port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` comes from the same range as the
    source ports of outgoing connections, and a busy suite makes hundreds of
    those: one could take the port before a child process binds it. So a port
    is picked at random below that range (where nothing is handed out without
    being asked for by number) and checked by binding it. Another process may
    still take it before the caller binds it; that small race is accepted in
    tests.
    """
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    low = _ephemeral_low()
    for _ in range(64):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket(socket.AF_INET, sock_type) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
        return port


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@dataclass(frozen=True)
class Pebble:
    """A running Pebble.

    Attributes:
        directory_url: The ACME directory, ``https://127.0.0.1:PORT/dir``.
        ca_file: PEM of the CA that signed Pebble's API certificate; give it to
            the ACME client as its trust root.
        http_port: Where Pebble's VA connects for HTTP-01 (any name → 127.0.0.1).
        tls_port: Where Pebble's VA connects for TLS-ALPN-01.
        management_url: Pebble's management API (``/roots/0`` and friends).
        log_dir: Holds ``pebble.log`` and ``challtestsrv.log``.
    """

    directory_url: str
    ca_file: Path
    http_port: int
    tls_port: int
    management_url: str
    log_dir: Path

    async def roots(self) -> bytes:
        """The PEM root that signs the certificates this Pebble issues."""
        return await self._get(f"{self.management_url}/roots/0")

    async def intermediates(self) -> bytes:
        """The PEM intermediate between :meth:`roots` and issued certificates."""
        return await self._get(f"{self.management_url}/intermediates/0")

    async def root(self, index: int) -> bytes:
        """The PEM root of chain ``index`` (0: the default chain; see ``alternate_roots``)."""
        return await self._get(f"{self.management_url}/roots/{index}")
    async def cert_status(self, serial: str) -> dict[str, object]:
        """What Pebble says of the certificate with ``serial`` (hex): ``Status`` ("Valid" or "Revoked"),
        ``Reason`` (the CRLReason code of a revoked one), from its management API."""
        body = json.loads(await self._get(f"{self.management_url}/cert-status-by-serial/{serial}"))
        assert isinstance(body, dict)
        return body

    async def _get(self, url: str) -> bytes:
        return await trio.to_thread.run_sync(_https_get, url, self.ca_file)


def _https_get(url: str, ca_file: Path, timeout: float = 5.0) -> bytes:
    """GET over HTTPS trusting only ``ca_file`` and ignoring proxy variables (blocking)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _pebble_binaries() -> tuple[str, str]:
    pebble = shutil.which("pebble")
    challtestsrv = shutil.which("pebble-challtestsrv")
    if pebble is None or challtestsrv is None:
        pytest.fail(f"Pebble is not installed (need pebble and pebble-challtestsrv): {_INSTALL_HINT}")
    return pebble, challtestsrv


def _write_files(workdir: Path, config: dict[str, object]) -> tuple[Path, Path]:
    """Write Pebble's API certificate, key, trust root and config (blocking)."""
    ca = trustme.CA()
    api_cert = ca.issue_cert(LOOPBACK, "localhost")
    api_cert.private_key_pem.write_to_path(str(workdir / "pebble-key.pem"))
    api_cert.cert_chain_pems[0].write_to_path(str(workdir / "pebble-cert.pem"))
    ca_file = workdir / "pebble-api-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config_file = workdir / "pebble.json"
    config_file.write_text(json.dumps({"pebble": config}, indent=2))
    return ca_file, config_file


def _log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


@asynccontextmanager
async def run_pebble(
    workdir: Path,
    *,
    http_port: int,
    tls_port: int,
    nonce_reject: int | None = None,
    authz_reuse: int | None = None,
    api_port: int | None = None,
    va_sleep: int | None = None,
    validity_seconds: int | None = None,
    eab_keys: dict[str, str] | None = None,
    alternate_roots: int | None = None,
) -> AsyncIterator[Pebble]:
    """Run pebble-challtestsrv and pebble until the block exits.

    Args:
        workdir: An empty directory for the config, certificates and logs.
        http_port: ``httpPort``: where the code under test answers HTTP-01.
        tls_port: ``tlsPort``: where it answers TLS-ALPN-01.
        nonce_reject: ``PEBBLE_WFE_NONCEREJECT``, the percentage of good nonces
            Pebble rejects with ``badNonce`` (Pebble's default is 5).
        authz_reuse: ``PEBBLE_AUTHZREUSE``, the percentage of valid
            authorizations Pebble reuses (Pebble's default is 50). Pebble draws
            ``rand(100) > authz_reuse`` for a new one, so even 0 reuses about
            1 in 100; only a new account is sure to get pending ones.
        va_sleep: make each validation wait up to this many seconds
            (``PEBBLE_VA_SLEEPTIME``) instead of ``PEBBLE_VA_NOSLEEP``.
        api_port: where the ACME API listens (default: a free port), to
            bring a CA back at the same address after an outage.
        validity_seconds: ``certificateValidityPeriod``: the lifetime of the
            certificates Pebble issues (default 5 years), for short-lived ones.
        eab_keys: ``externalAccountMACKeys`` (key id to base64url MAC key): Pebble
            then requires External Account Binding for every new account.
        alternate_roots: ``PEBBLE_ALTERNATE_ROOTS``: how many alternate chains (each
            to a root of its own, ``roots/1`` ...) Pebble offers besides the default.

    Yields:
        The running :class:`Pebble`, once its directory answers.

    Resource handling:
        Both processes are killed and reaped at exit, also when the body raises
        or is cancelled (the reaping is shielded and bounded by
        ``STOP_TIMEOUT``).

    Raises:
        pytest.fail.Exception: Pebble is not installed, or did not come up in
            ``STARTUP_TIMEOUT`` seconds (the message carries its log).
    """
    pebble_bin, challtestsrv_bin = _pebble_binaries()
    dns_port = free_port("udp")
    challtestsrv_mgmt_port = free_port()
    api_port = api_port or free_port()
    mgmt_port = free_port()
    config: dict[str, object] = {
        "listenAddress": f"{LOOPBACK}:{api_port}",
        "managementListenAddress": f"{LOOPBACK}:{mgmt_port}",
        "certificate": str(workdir / "pebble-cert.pem"),
        "privateKey": str(workdir / "pebble-key.pem"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    if validity_seconds is not None:
        config["certificateValidityPeriod"] = validity_seconds
    if eab_keys is not None:
        config["externalAccountBindingRequired"] = True
        config["externalAccountMACKeys"] = eab_keys
    ca_file, config_file = await trio.to_thread.run_sync(_write_files, workdir, config)
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1") if va_sleep is None else dict(os.environ, PEBBLE_VA_SLEEPTIME=str(va_sleep))
    if nonce_reject is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject)
    if authz_reuse is not None:
        env["PEBBLE_AUTHZREUSE"] = str(authz_reuse)
    if alternate_roots is not None:
        env["PEBBLE_ALTERNATE_ROOTS"] = str(alternate_roots)
    pebble = Pebble(
        directory_url=f"https://{LOOPBACK}:{api_port}/dir",
        ca_file=ca_file,
        http_port=http_port,
        tls_port=tls_port,
        management_url=f"https://{LOOPBACK}:{mgmt_port}",
        log_dir=workdir,
    )
    async with AsyncExitStack() as stack:
        challtestsrv = await _start(
            stack,
            [
                challtestsrv_bin,
                "-defaultIPv4", LOOPBACK,
                "-defaultIPv6", "",
                "-dns01", f"{LOOPBACK}:{dns_port}",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"{LOOPBACK}:{challtestsrv_mgmt_port}",
            ],
            workdir / "challtestsrv.log",
            env,
        )
        process = await _start(
            stack,
            [pebble_bin, "-config", str(config_file), "-dnsserver", f"{LOOPBACK}:{dns_port}"],
            workdir / "pebble.log",
            env,
        )
        await _wait_ready(pebble, challtestsrv, process, challtestsrv_mgmt_port)
        yield pebble


async def _start(
    stack: AsyncExitStack, argv: list[str], log_path: Path, env: dict[str, str]
) -> trio.Process:
    """Start ``argv`` with output to ``log_path``; ``stack`` kills and reaps it."""
    log: IO[bytes] = await trio.to_thread.run_sync(log_path.open, "wb")
    stack.callback(log.close)
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
    )
    stack.push_async_callback(_stop, process)
    return process


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _wait_ready(
    pebble: Pebble, challtestsrv: trio.Process, process: trio.Process, challtestsrv_port: int
) -> None:
    """Wait until challtestsrv's management port accepts and Pebble's directory answers."""
    with trio.move_on_after(STARTUP_TIMEOUT):
        while True:
            _check_alive(pebble, challtestsrv, "pebble-challtestsrv", "challtestsrv.log")
            try:
                stream = await trio.open_tcp_stream(LOOPBACK, challtestsrv_port)
            except OSError:
                await trio.sleep(_POLL_INTERVAL)
                continue
            await stream.aclose()
            break
        while True:
            _check_alive(pebble, process, "pebble", "pebble.log")
            try:
                await trio.to_thread.run_sync(_https_get, pebble.directory_url, pebble.ca_file, 1.0)
            except OSError:  # URLError, connection refused, TLS not up yet
                await trio.sleep(_POLL_INTERVAL)
                continue
            return
    pytest.fail(
        f"Pebble did not answer {pebble.directory_url} within {STARTUP_TIMEOUT} s; log:\n"
        + _log_tail(pebble.log_dir / "pebble.log")
    )


def _check_alive(pebble: Pebble, process: trio.Process, name: str, log_name: str) -> None:
    if process.returncode is not None:
        pytest.fail(
            f"{name} exited with status {process.returncode} while starting; log:\n"
            + _log_tail(pebble.log_dir / log_name)
        )
