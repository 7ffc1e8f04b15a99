"""The renewal engine in real snakeway processes against Pebble.

Each test runs ``python -m snakeway serve`` with an ACME configuration against a
real Pebble, either directly or through :class:`tests.ariproxy.AriProxy` (which
adds ARI and records what the CA was asked), and looks from outside: TLS
handshakes on the served names, the process's log, the file store, and the
requests the CA received.
"""

from __future__ import annotations

import re
import resource
import signal
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import trio
from cryptography import x509

from snakeway.acme import crypto
from snakeway.acme.filestore import FileStore
from tests.ariproxy import AriProxy
from tests.helpers import LOOPBACK, start_upstream
from tests.pebble import Pebble, free_port, run_pebble
from tests.proc import Running, snakeway
from tests.tlshelpers import client_context

ORDERING = re.compile(rb"certificate for ([^:\n]+): ordering from")
ISSUED = b" issued by "
WORKER = re.compile(rb"\[(\d+)\] snakeway")


def write_config(
    path: Path,
    *,
    directory_url: str,
    ca_file: Path,
    pebble: Pebble,
    upstream: int,
    names: tuple[str, ...],
    workers: int = 1,
    check_interval: float = 600,
    certificate_per_domain: bool = False,
    rate_limits: str = "",
    acme: str | None = None,
    automation: str = "",
) -> None:
    """A configuration serving ``names`` on Pebble's TLS port, certificates from ``directory_url``.

    ``renew_within_days`` is left unset: the lifetime rule decides. ``acme`` replaces the whole value of
    ``tls_automation.acme`` (then ``directory_url``, ``ca_file`` and ``rate_limits`` are not used);
    ``automation`` adds keys to ``tls_automation``.
    """
    state = path.parent / "state"
    domains = ", ".join(f'"{name}"' for name in names)
    limits = f"rate_limits = {{ {rate_limits} }}" if rate_limits else ""
    if acme is None:
        acme = f"""{{
      directory_url = "{directory_url}"
      ca_file       = "{ca_file}"
      data_dir      = "{state}/acme"
      {limits}
    }}"""
    path.write_text(
        f"""
server {{
  version   = 1
  workers   = {workers}
  state_dir = "{state}"
  tls_automation = {{
    check_interval_seconds = {check_interval}
    acme = {acme}
    {automation}
    cert_store = {{ type = "filesystem", cert_dir = "{state}/certs" }}
  }}
}}
ingress "site" {{
  bind = {{
    interface = "127.0.0.1"
    port      = {pebble.tls_port}
    tls       = {{ mode = "acme", domains = [{domains}], challenge = "http-01",
                  certificate_per_domain = {str(certificate_per_domain).lower()} }}
    redirect_http_to_https = {{ port = {pebble.http_port} }}
  }}
  services = [{{
    name      = "app"
    routes    = [{{ hosts = ["*"], path = "/" }}]
    upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}]
  }}]
}}
"""
    )


def file_store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "state" / "certs", tmp_path / "state" / "acme")


@asynccontextmanager
async def pebble_at(tmp_path: Path, **options: int) -> AsyncIterator[Pebble]:
    workdir = tmp_path / "pebble"
    workdir.mkdir()
    async with run_pebble(workdir, http_port=free_port(), tls_port=free_port(), **options) as pebble:
        yield pebble


async def follow_log(proc: Running) -> None:
    """Keep reading the process's log into ``proc.log`` until it exits (the pipe never fills)."""
    assert proc.process.stderr is not None
    while chunk := await proc.process.stderr.receive_some(65536):
        proc.log += chunk


async def until_logged(proc: Running, predicate: Callable[[bytes], bool], timeout: float) -> None:
    """Wait (while :func:`follow_log` reads) until ``predicate(proc.log)`` holds."""
    with trio.move_on_after(timeout):
        while not predicate(bytes(proc.log)):
            assert proc.process.returncode is None, proc.log.decode()[-4000:]
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not logged within {timeout} s; log:\n{proc.log.decode()[-4000:]}")


async def stop(proc: Running) -> None:
    """SIGTERM and wait: the whole log is in ``proc.log`` afterwards (with :func:`follow_log` running)."""
    proc.process.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        await proc.process.wait()
    await trio.sleep(0.1)  # the follower reads the last chunk


def order_times(log: bytes) -> list[datetime]:
    """When each order the log shows was started."""
    return [
        datetime.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)  # logged in local time
        for m in re.finditer(rb"^(\S+ \S+) INFO .*: ordering from", log, re.MULTILINE)
    ]


def worker_pids(log: bytes, what: bytes) -> set[int]:
    """The process ids of the workers that logged ``what``."""
    return {int(m.group(1)) for line in log.splitlines() if what in line for m in [WORKER.search(line)] if m}


def orders(log: bytes) -> list[str]:
    """The names (comma-joined) of every order the log says was started."""
    return [m.group(1).decode() for m in ORDERING.finditer(log)]


async def handshake(port: int, ctx: ssl.SSLContext, name: str) -> x509.Certificate:
    """Handshake with SNI ``name`` (verifying the chain and the validity period); the served leaf."""
    stream = trio.SSLStream(await trio.open_tcp_stream(LOOPBACK, port), ctx, server_hostname=name)
    try:
        await stream.do_handshake()
        return x509.load_der_x509_certificate(stream.getpeercert(binary_form=True))
    finally:
        await trio.aclose_forcefully(stream)


LIFETIME = 20  # seconds: Pebble's certificateValidityPeriod in the short-lived test


async def test_short_lived_certificates_renew_at_half_their_lifetime_and_are_never_served_expired(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    names = ("short.example.test",)
    config = tmp_path / "snakeway.hcl"
    async with pebble_at(tmp_path, validity_seconds=LIFETIME) as pebble:
        # Checked every second: a certificate under 10 days is renewed with half its lifetime left,
        # not at every check.
        write_config(config, directory_url=pebble.directory_url, ca_file=pebble.ca_file, pebble=pebble,
                     upstream=upstream, names=names, check_interval=1)
        ctx = client_context(await pebble.roots())
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: ISSUED in log, timeout=20)
            seen: dict[int, x509.Certificate] = {}
            problems: list[str] = []
            observe_until = trio.current_time() + 1.75 * LIFETIME
            while trio.current_time() < observe_until:
                try:
                    cert = await handshake(pebble.tls_port, ctx, names[0])
                except (OSError, trio.BrokenResourceError) as exc:  # an expired certificate fails verification
                    problems.append(f"handshake failed: {exc!r}")
                else:
                    now = datetime.now(UTC)
                    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
                        problems.append(f"served {cert.serial_number} outside its validity at {now}")
                    seen.setdefault(cert.serial_number, cert)
                await trio.sleep(0.1)
            await stop(proc)
    assert problems == []
    certs = sorted(seen.values(), key=lambda c: c.not_valid_before_utc)
    assert len(certs) >= 3, f"expected at least 2 renewals, saw {len(certs)} certificates; log:\n{proc.log.decode()}"
    for cert in certs:
        assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(seconds=LIFETIME)
    # Not an order at every check: one per certificate seen (plus perhaps one in flight at the stop).
    started = order_times(bytes(proc.log))
    assert len(certs) <= len(started) <= len(certs) + 1, started
    # Each renewal was ordered when half the lifetime of the certificate it replaces had passed, not before
    # and not much later (the log's times are local and to the millisecond).
    for old, ordered in zip(certs, started[1:], strict=False):
        lifetime = old.not_valid_after_utc - old.not_valid_before_utc
        late = ordered - (old.not_valid_before_utc + lifetime / 2)
        assert timedelta(milliseconds=-1) <= late <= timedelta(seconds=1), (ordered, old.not_valid_before_utc, lifetime)


async def test_a_renewal_names_the_certificate_it_replaces_and_ari_is_asked_once_per_certificate(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    names = ("ari.example.test", "www.ari.example.test")
    config = tmp_path / "snakeway.hcl"
    store = file_store(tmp_path)
    async with pebble_at(tmp_path) as pebble:
        with AriProxy(pebble, tmp_path) as proxy:
            now = datetime.now(UTC)
            # The first certificate asked about is told its window is over (renew now); every later one
            # gets a window in ten days, to be asked about again in an hour.
            proxy.set_window(now - timedelta(hours=2), now - timedelta(hours=1), retry_after=3600,
                             next_certificate=True)
            proxy.set_window(now + timedelta(days=10), now + timedelta(days=11), retry_after=3600)
            write_config(config, directory_url=proxy.directory_url, ca_file=proxy.ca_file, pebble=pebble,
                         upstream=upstream, names=names, workers=2, check_interval=1)
            async with snakeway(config) as proc:
                nursery.start_soon(follow_log, proc)
                await until_logged(proc, lambda log: log.count(ISSUED) >= 2, timeout=30)
                # Both workers check every second for a while: nobody asks ARI again, nobody orders again.
                await trio.sleep(5)
                await stop(proc)
            payloads = list(proxy.new_order_payloads)
            chains = list(proxy.certificates)
            ari_requests = list(proxy.ari_requests)
    assert len(payloads) == 2, payloads
    assert len(orders(bytes(proc.log))) == 2
    assert len(chains) == 2
    first_id, second_id = crypto.ari_cert_id(chains[0]), crypto.ari_cert_id(chains[1])
    assert "replaces" not in payloads[0]
    assert payloads[1]["replaces"] == first_id
    # The store holds the renewal, whose own CertID was asked about once; the replaced one once too.
    stored = await store.load(names[0])
    assert stored is not None and crypto.ari_cert_id(stored.cert_pem) == second_id
    assert Counter(ari_requests) == {first_id: 1, second_id: 1}


async def test_the_order_budget_holds_across_two_workers(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    names = tuple(f"n{i}.budget.example.test" for i in range(4))
    config = tmp_path / "snakeway.hcl"
    store = file_store(tmp_path)
    async with pebble_at(tmp_path) as pebble:
        with AriProxy(pebble, tmp_path, ari=False) as proxy:  # a pass-through that counts the orders
            write_config(config, directory_url=proxy.directory_url, ca_file=proxy.ca_file, pebble=pebble,
                         upstream=upstream, names=names, workers=2, check_interval=1, certificate_per_domain=True,
                         rate_limits="new_orders_per_3h = 2")
            async with snakeway(config) as proc:
                nursery.start_soon(follow_log, proc)

                def settled(log: bytes) -> bool:  # every name issued or waiting for the budget
                    return all(
                        f"certificate for {n} issued by".encode() in log
                        or f"certificate for {n}: waiting for the CA's rate limits".encode() in log
                        for n in names
                    )

                await until_logged(proc, settled, timeout=30)
                await trio.sleep(4)  # both workers check every second meanwhile
                await stop(proc)
            payloads = list(proxy.new_order_payloads)
    log = bytes(proc.log)
    made = orders(log)
    assert len(made) == 2 and len(set(made)) == 2, made
    assert len(payloads) == 2
    ordered_at_ca = {ident["value"] for p in payloads for ident in cast("list[dict[str, str]]", p["identifiers"])}
    assert ordered_at_ca == set(made)
    assert sorted(await store.list()) == sorted(made)
    for name in set(names) - set(made):
        assert f"certificate for {name}: waiting for the CA's rate limits until".encode() in log
    # Both workers were refused, and at least one of them had made fewer than two orders itself: they
    # spend from one budget.
    workers = worker_pids(log, b"listening on")
    assert len(workers) == 2
    assert worker_pids(log, b"waiting for the CA's rate limits") == workers
    # The budget both workers spent from is in the store: the two orders, and the two certificates.
    ledger = await store.load_ledger(proxy.directory_url)
    assert ledger is not None and len(ledger.orders) == 2 and len(ledger.issued) == 2


@contextmanager
def immutable(directory: Path) -> Iterator[Callable[[], None]]:
    """Make ``directory`` immutable (``chattr +i``: nothing can be created in it, not even by root) until
    the returned function is called or the block ends."""
    subprocess.run(["chattr", "+i", str(directory)], check=True, capture_output=True)

    def lift() -> None:
        subprocess.run(["chattr", "-i", str(directory)], check=True, capture_output=True)

    try:
        yield lift
    finally:
        lift()


async def test_a_certificate_the_store_refuses_is_served_and_saved_later_without_a_second_order(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    names = ("unsaved.example.test",)
    config = tmp_path / "snakeway.hcl"
    store = file_store(tmp_path)
    store.cert_dir.mkdir(parents=True, mode=0o700)
    async with pebble_at(tmp_path) as pebble:
        with AriProxy(pebble, tmp_path, ari=False) as proxy, immutable(store.cert_dir) as writable_again:
            write_config(config, directory_url=proxy.directory_url, ca_file=proxy.ca_file, pebble=pebble,
                         upstream=upstream, names=names, check_interval=1)
            ctx = client_context(await pebble.roots())
            async with snakeway(config) as proc:
                nursery.start_soon(follow_log, proc)
                await until_logged(
                    proc, lambda log: b"issued but not saved" in log and ISSUED in log or len(orders(log)) > 1,
                    timeout=20,
                )
                assert len(orders(bytes(proc.log))) == 1
                served = await handshake(pebble.tls_port, ctx, names[0])
                assert await store.load(names[0]) is None
                line = next(x for x in bytes(proc.log).splitlines() if b"issued but not saved" in x)
                assert b"Operation not permitted" in line and b"saving again at " in line
                # A retry now (SIGHUP) while the store still refuses: saved again, not ordered again.
                proc.process.send_signal(signal.SIGHUP)
                await until_logged(proc, lambda log: log.count(b"issued but not saved") >= 2, timeout=10)
                await trio.sleep(2)  # checks every second meanwhile
                assert len(proxy.new_order_payloads) == 1
                # The store takes writes again; the next retry saves the certificate that is served.
                writable_again()
                proc.process.send_signal(signal.SIGHUP)
                await until_logged(proc, lambda log: b"saved to the store now" in log, timeout=10)
                assert (await handshake(pebble.tls_port, ctx, names[0])).serial_number == served.serial_number
                await stop(proc)
            payloads = list(proxy.new_order_payloads)
    stored = await store.load(names[0])
    assert stored is not None and int(stored.serial, 16) == served.serial_number
    assert len(payloads) == 1
    assert len(orders(bytes(proc.log))) == 1


# Room for every small file snakeway writes (state, account, order, budget), not for a certificate chain.
FSIZE = 1500


async def test_a_certificate_issued_while_no_file_can_be_written_is_served_once_it_is_saved(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Serving a certificate builds its TLS context from files too: when not even those can be written, the
    certificate is served as soon as the store has taken it (and it is still not ordered again)."""
    upstream, _ = await start_upstream(nursery)
    names = ("full.example.test",)
    config = tmp_path / "snakeway.hcl"
    store = file_store(tmp_path)
    async with pebble_at(tmp_path) as pebble:
        with AriProxy(pebble, tmp_path, ari=False) as proxy:
            write_config(config, directory_url=proxy.directory_url, ca_file=proxy.ca_file, pebble=pebble,
                         upstream=upstream, names=names, check_interval=1)
            ctx = client_context(await pebble.roots())
            async with snakeway(config, fsize=FSIZE) as proc:
                nursery.start_soon(follow_log, proc)
                await until_logged(proc, lambda log: b"issued but not saved" in log, timeout=20)
                line = next(x for x in bytes(proc.log).splitlines() if b"issued but not saved" in x)
                assert b"File too large" in line
                await until_logged(proc, lambda log: b"issued, but it cannot be served yet" in log, timeout=5)
                await trio.sleep(2)  # checks every second meanwhile
                assert len(orders(bytes(proc.log))) == 1
                resource.prlimit(proc.process.pid, resource.RLIMIT_FSIZE,
                                 (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                proc.process.send_signal(signal.SIGHUP)  # retry now
                await until_logged(proc, lambda log: b"saved to the store now" in log, timeout=10)
                stored = await store.load(names[0])
                assert stored is not None
                with trio.fail_after(5):
                    while True:
                        try:
                            served = await handshake(pebble.tls_port, ctx, names[0])
                            break
                        except trio.BrokenResourceError:  # no certificate for the name (yet)
                            await trio.sleep(0.1)
                assert served.serial_number == int(stored.serial, 16)
                await stop(proc)
            payloads = list(proxy.new_order_payloads)
    assert len(payloads) == 1
    assert len(orders(bytes(proc.log))) == 1
