"""Start-up with very many stored certificates, in-process: ``python -m benchmarks.startup_many_certs``.

What it measures (printed as one JSON object on stdout):

- ``started_s``: seconds from ``nursery.start(CertManager.run)`` to ``started()``, with ``count`` certificates
  in a :class:`~snakeway.acme.filestore.FileStore` and one ``ManagedCert`` each (the ``FakeCA`` as backend,
  nothing due, so nothing is ordered);
- ``first_handshake_s``: from ``started()`` to the end of the first handshake, for the last name;
- ``rss_*_mib``: VmRSS of this process after imports, right after ``started()``, and after ``handshakes``
  first-use handshakes to distinct names (in memory: ``memory_stream_pair`` + ``trio.SSLStream`` both ends);
  ``hwm_mib`` is the peak (VmHWM);
- ``handshake_first_use_us`` / ``handshake_cached_us``: mean time of one such handshake, the first for its
  name (the context is built then, if it is built lazily) and again (cached);
- ``lookup_hit_us`` / ``lookup_miss_us`` / ``lookup_wildcard_us``: one :meth:`CertMap.lookup` on the map the
  listener serves: a name whose context is ready, an unknown name, a name only a wildcard entry covers;
- with ``--build-all``: ``lazy_build_us``, one first-use lookup that builds a context (what the SNI callback
  pays once per certificate), over every certificate not yet built, and ``rss_all_built_mib`` once all are.

The measurement runs in a fresh child process, so the parent's work (making certificates) does not count in its
memory. The store is filled once per directory (``--store``; a temporary one by default) through
``FileStore.save``, the real on-disk format, with ``fsync`` turned off while filling unless ``--durable``
(``fsync`` costs ~15 ms a save on a typical disk: minutes for 10,000). One ECDSA key is shared by all leaves,
signed by a local CA: this benchmarks loading, not key generation.

Standalone: it does not use the harness in ``benchmarks/run.py``, which may include its JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # python benchmarks/startup_many_certs.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DOMAIN = "bench.test"
READY = "filled.json"


def names_for(count: int) -> list[str]:
    return [f"c{i}.{DOMAIN}" for i in range(count)]


def _rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- filling the store (parent process) ----------------------------------------------------------


def fill(store_dir: Path, count: int, *, durable: bool) -> dict[str, float]:
    """Write ``count`` certificates into ``store_dir/certs`` with FileStore.save; the CA into ca.pem."""
    marker = store_dir / READY
    if marker.exists() and json.loads(marker.read_text()).get("count") == count:
        return {"fill_s": 0.0, "reused_store": 1.0}
    import trio
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from snakeway.acme.filestore import FileStore
    from snakeway.acme.store import CertBundle

    shutil.rmtree(store_dir / "certs", ignore_errors=True)
    store_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "startup_many_certs CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(pem)
    (store_dir / "ca.pem").write_bytes(ca_pem)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())  # FakeCA's ARI needs it

    def bundle(name: str) -> CertBundle:
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(aki, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return CertBundle.from_pem(name, (name,), leaf.public_bytes(pem) + ca_pem, leaf_key_pem)

    async def save_all() -> None:
        store = FileStore(store_dir / "certs", store_dir / "acme")
        for name in names_for(count):
            await store.save(bundle(name))

    started = time.perf_counter()
    real_fsync = os.fsync
    if not durable:
        os.fsync = lambda fd: None  # type: ignore[assignment]  # filling only; the child measures with fsync
    try:
        trio.run(save_all)
    finally:
        os.fsync = real_fsync
    elapsed = time.perf_counter() - started
    marker.write_text(json.dumps({"count": count}))
    return {"fill_s": elapsed, "fill_ms_per_cert": elapsed / count * 1e3, "fill_durable": float(durable)}


# --- measuring (child process) --------------------------------------------------------------------


def measure(store_dir: Path, count: int, handshakes: int, timeout: float, build_all: bool) -> dict[str, float | str]:
    import ssl

    import trio
    import trio.testing

    from snakeway.acme.challenges import Http01Tokens
    from snakeway.acme.filestore import FileStore
    from snakeway.acme.managed import ManagedCert
    from snakeway.acme.manager import CertManager
    from snakeway.acme.tlsalpn import TlsAlpnChallenges
    from snakeway.clock import SystemClock
    from snakeway.config.model import AcmeSettings, TlsAutomation
    from snakeway.testing import FakeCA
    from snakeway.tls.registry import CertRegistry, Served
    from snakeway.tls.sni import listener_context

    # As in production: INFO and above, formatted and written (to a file, not the terminal).
    logging.basicConfig(
        filename=store_dir / "measure.log", filemode="w", level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    names = names_for(count)
    out: dict[str, float | str] = {"count": float(count), "handshakes": float(handshakes)}

    async def one_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> None:
        client_raw, server_raw = trio.testing.memory_stream_pair()
        server = trio.SSLStream(server_raw, server_ctx, server_side=True)
        client = trio.SSLStream(client_raw, client_ctx, server_hostname=name)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)

    async def main() -> None:
        clock = SystemClock()
        certs = [ManagedCert(f"acme:{name}", (name,)) for name in names]
        registry = CertRegistry()
        registry.configure({"listener": Served(tuple(c.cert_id for c in certs))})
        manager = CertManager(
            settings=TlsAutomation(
                renew_within_days=1,
                check_interval_seconds=86400,
                acme=AcmeSettings(directory_url="https://ca.invalid/directory"),
            ),
            certs=certs,
            store=FileStore(store_dir / "certs", store_dir / "acme"),
            backend=FakeCA(clock),
            registry=registry,
            http01=Http01Tokens(),
            tlsalpn=TlsAlpnChallenges(),
            clock=clock,
            rng=random.Random(1),
        )
        holder = registry.holder("listener")
        server_ctx = listener_context(holder)
        client_ctx = ssl.create_default_context(cafile=str(store_dir / "ca.pem"))
        out["rss_before_mib"] = _rss_mib()
        async with trio.open_nursery() as nursery:
            started = time.perf_counter()
            with trio.fail_after(timeout):
                await nursery.start(manager.run)
            out["started_s"] = time.perf_counter() - started
            out["rss_started_mib"] = _rss_mib()
            out["map_names"] = float(len(holder.current))
            await one_handshake(server_ctx, client_ctx, names[-1])
            out["first_handshake_s"] = time.perf_counter() - started - out["started_s"]  # type: ignore[operator]

            step = max(1, count // handshakes)
            chosen = [names[(i * step) % count] for i in range(handshakes)]
            for label in ("handshake_first_use_us", "handshake_cached_us"):
                began = time.perf_counter()
                for name in chosen:
                    await one_handshake(server_ctx, client_ctx, name)
                out[label] = (time.perf_counter() - began) / len(chosen) * 1e6
            out["rss_after_handshakes_mib"] = _rss_mib()

            cmap = holder.current
            wildcard = cmap.with_entries([(["*.wild." + DOMAIN], server_ctx)])
            lookups = 200_000

            def per_call(lookup, asked: list[str]) -> float:  # type: ignore[no-untyped-def]
                began = time.perf_counter()
                for name in asked:
                    lookup(name)
                return (time.perf_counter() - began) / len(asked) * 1e6

            hits = [random.choice(chosen) for _ in range(lookups)]
            assert all(cmap.lookup(name) is not None for name in chosen)
            out["lookup_hit_us"] = per_call(cmap.lookup, hits)
            out["lookup_miss_us"] = per_call(cmap.lookup, [f"x{i}.unknown.test" for i in range(lookups)])
            wild_names = [f"w{i}.wild.{DOMAIN}" for i in range(lookups)]
            assert wildcard.lookup(wild_names[0]) is server_ctx
            out["lookup_wildcard_us"] = per_call(wildcard.lookup, wild_names)
            if build_all:
                # Every other certificate's context, built the way the SNI callback builds it (a lookup): the
                # cost of one lazy build, and the memory of all 10,000 contexts, as if every name had been asked.
                rest = [name for name in names if name not in set(chosen)]
                began = time.perf_counter()
                for name in rest:
                    if cmap.lookup(name) is None:
                        raise RuntimeError(f"no context for {name}")
                out["lazy_build_us"] = (time.perf_counter() - began) / max(1, len(rest)) * 1e6
                out["rss_all_built_mib"] = _rss_mib()
            out["hwm_mib"] = _rss_mib("VmHWM")
            nursery.cancel_scope.cancel()

    trio.run(main)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--handshakes", type=int, default=1_000)
    parser.add_argument("--store", type=Path, help="store directory, kept and reused (default: a temporary one)")
    parser.add_argument("--durable", action="store_true", help="fill the store with fsync on")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting for started() after this")
    parser.add_argument("--build-all", action="store_true",
                        help="then build every other context too (lazy_build_us, rss_all_built_mib)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.store, args.count, min(args.handshakes, args.count), args.timeout, args.build_all)))
        return 0
    temporary = args.store is None
    store_dir = Path(tempfile.mkdtemp(prefix="snakeway-many-certs-")) if temporary else args.store
    try:
        results: dict[str, float | str] = dict(fill(store_dir, args.count, durable=args.durable))
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.startup_many_certs", "--measure", "--store", str(store_dir),
             "--count", str(args.count), "--handshakes", str(args.handshakes), "--timeout", str(args.timeout),
             *(["--build-all"] if args.build_all else [])],
            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=False,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr[-5000:])
            return child.returncode
        results.update(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    finally:
        if temporary:
            shutil.rmtree(store_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
