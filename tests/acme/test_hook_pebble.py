"""The ``on_renewed`` hook in a real snakeway process against Pebble: run once per issuance (two workers), with
the documented environment and files, its failure logged and nothing else."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.acme.test_renewal_pebble import ISSUED, follow_log, handshake, pebble_at, until_logged, write_config
from tests.helpers import start_upstream
from tests.proc import snakeway
from tests.tlshelpers import client_context

NAMES = ("hook.example.test", "www.hook.example.test")

# Writes its arguments, the SNAKEWAY_* environment and what the files hold, then fails on purpose.
HOOK = """#!/bin/sh
out="$1"
echo run >> "$out.runs"
{
  echo "ARGS=$*"
  env | grep '^SNAKEWAY_' | sort
  echo "KEY_MODE=$(stat -c %a "$SNAKEWAY_KEY_PATH")"
  echo "DIR_MODE=$(stat -c %a "$SNAKEWAY_CERT_DIR")"
} > "$out.tmp"
cp "$SNAKEWAY_CERT_PATH" "$out.cert"
cp "$SNAKEWAY_CHAIN_PATH" "$out.chain"
cp "$SNAKEWAY_FULLCHAIN_PATH" "$out.fullchain"
cp "$SNAKEWAY_KEY_PATH" "$out.key"
mv "$out.tmp" "$out"
echo "a line before" >&2
echo "the hook fails on purpose" >&2
exit 3
"""


async def served_everywhere(port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    """The leaf served for NAMES[0] once every worker serves it.

    The worker that issued the certificate serves it at once; the other loads it from the store
    moments later, and a handshake it takes meanwhile finds no certificate for the name.
    """
    with trio.fail_after(15):
        while True:
            try:
                leaves = [await handshake(port, ctx, NAMES[0]) for _ in range(8)]
            except trio.BrokenResourceError:
                await trio.sleep(0.1)
                continue
            assert len(set(leaves)) == 1
            return leaves[0]


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


async def test_on_renewed_runs_once_with_the_certificate_and_its_failure_is_only_logged(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    out = tmp_path / "hook-out"
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    async with pebble_at(tmp_path) as pebble:
        write_config(config, directory_url=pebble.directory_url, ca_file=pebble.ca_file, pebble=pebble,
                     upstream=upstream, names=NAMES, workers=2)
        text = config.read_text().replace(
            "    cert_store = ", f'    hooks = {{ on_renewed = ["{hook}", "{out}", "two words"] }}\n    cert_store = ', 1)
        config.write_text(text)
        ctx = client_context(await pebble.roots())
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: ISSUED in log and b"on_renewed hook" in log, timeout=30)
            leaf = await served_everywhere(pebble.tls_port, ctx)  # the hook's failure changed nothing

            env = read_env(out)
            assert env["ARGS"] == f"{out} two words"
            assert env["SNAKEWAY_CERT_NAME"] == NAMES[0]
            assert env["SNAKEWAY_CERT_DOMAINS"] == " ".join(NAMES)
            assert env["SNAKEWAY_CERT_SERIAL"] == f"{leaf.serial_number:x}"
            assert env["SNAKEWAY_CERT_NOT_AFTER"].startswith(leaf.not_valid_after_utc.isoformat()[:19])
            assert (env["KEY_MODE"], env["DIR_MODE"]) == ("600", "700")
            state = tmp_path / "state" / "certs" / NAMES[0]
            assert env["SNAKEWAY_STORE_CERT_PATH"] == str(state / "cert.pem")
            assert env["SNAKEWAY_STORE_KEY_PATH"] == str(state / "key.pem")
            assert not os.path.exists(env["SNAKEWAY_CERT_DIR"])  # the private copies are gone after the hook

            assert x509.load_pem_x509_certificate(Path(f"{out}.cert").read_bytes()) == leaf
            chain = x509.load_pem_x509_certificates(Path(f"{out}.chain").read_bytes())
            assert chain and all(c != leaf for c in chain) and chain[0].subject == leaf.issuer
            assert Path(f"{out}.fullchain").read_bytes() == (state / "cert.pem").read_bytes()
            key = serialization.load_pem_private_key(Path(f"{out}.key").read_bytes(), None)
            assert key.public_key() == leaf.public_key()

            failed = next(line for line in proc.log.splitlines() if b"on_renewed hook" in line)
            assert b"ERROR" in failed and b"exit status 3" in failed, failed
            assert b"a line before | the hook fails on purpose" in failed, failed
            await trio.sleep(1.0)  # the other worker only loads the certificate: it runs no hook
            assert Path(f"{out}.runs").read_text() == "run\n"
            assert proc.log.count(b"on_renewed hook") == 1
            assert proc.process.returncode is None
