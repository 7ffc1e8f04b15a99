"""``snakeway certs revoke`` against a real Pebble: through a running server, and on the store when none runs."""

from __future__ import annotations

from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import Certificate

from tests.acme.adminpebble import issued_with_admin
from tests.acme.test_renewal_pebble import (
    ISSUED,
    file_store,
    follow_log,
    handshake,
    pebble_at,
    stop,
    until_logged,
    write_config,
)
from tests.admin.adminclient import admin_block, eventually
from tests.admin.test_admin_cli import cli
from tests.helpers import start_upstream
from tests.pebble import Pebble
from tests.proc import snakeway
from tests.tlshelpers import client_context

NAME = "revoke.example.test"


def public_der(cert: Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def serial_served(pebble: Pebble, ctx: object, want_other_than: str) -> Certificate | None:
    """The served leaf, once it is no longer ``want_other_than`` (None before)."""
    try:
        leaf = await handshake(pebble.tls_port, ctx, NAME)  # type: ignore[arg-type]
    except (OSError, trio.BrokenResourceError):
        return None
    return leaf if f"{leaf.serial_number:x}" != want_other_than else None


async def test_certs_revoke_through_the_running_server_revokes_at_the_ca_and_serves_a_new_key(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with pebble_at(tmp_path) as pebble, issued_with_admin(nursery, tmp_path, pebble, (NAME,)) as (
        config, admin, proc,
    ):
        ctx = client_context(await pebble.roots())
        old = await handshake(pebble.tls_port, ctx, NAME)
        old_serial = f"{old.serial_number:x}"
        assert (await pebble.cert_status(old_serial))["Status"] == "Valid"
        status, _, body = await admin.request("POST", f"/admin/certs/{NAME}/revoke",
                                              body=b'{"reason": "compromised"}')
        assert status == 400 and "unknown revocation reason 'compromised'" in body["error"], body
        assert (await pebble.cert_status(old_serial))["Status"] == "Valid"  # nothing revoked

        status, said = await cli("certs", "revoke", NAME, "--reason", "keyCompromise", "--config", str(config))
        assert status == 0, said

        revoked = await pebble.cert_status(old_serial)
        assert (revoked["Status"], revoked["Reason"]) == ("Revoked", 1)  # keyCompromise
        new = await eventually(lambda: serial_served(pebble, ctx, old_serial), timeout=20)
        assert public_der(new) != public_der(old)  # a compromised key is never served again
        assert (await pebble.cert_status(f"{new.serial_number:x}"))["Status"] == "Valid"
        stored = await file_store(tmp_path).load(NAME)
        assert stored is not None and stored.serial == f"{new.serial_number:x}"
        assert b"revoked (reason keyCompromise)" in proc.log


async def test_without_a_server_revoke_and_key_rollover_act_on_the_store_and_the_next_start_follows(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    line, _ = admin_block(tmp_path)  # an admin listener nothing listens on once the server has stopped
    async with pebble_at(tmp_path) as pebble:
        write_config(config, directory_url=pebble.directory_url, ca_file=pebble.ca_file, pebble=pebble,
                     upstream=upstream, names=(NAME,))
        config.write_text(config.read_text() + line + "\n")
        ctx = client_context(await pebble.roots())
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: ISSUED in log, timeout=30)
            old_serial = f"{(await handshake(pebble.tls_port, ctx, NAME)).serial_number:x}"
            await stop(proc)
        store = file_store(tmp_path)
        account = await store.load_account(pebble.directory_url)
        assert account is not None

        status, said = await cli("certs", "revoke", f"acme:{NAME}", "--config", str(config))
        assert status == 0, said
        assert (await pebble.cert_status(old_serial))["Status"] == "Revoked"
        state = await store.load_state(NAME)
        assert state is not None and state.revoked_serial == old_serial
        status, said = await cli("certs", "rollover-account-key", "--config", str(config))
        assert status == 0, said
        rolled = await store.load_account(pebble.directory_url)
        assert rolled is not None and rolled.uri == account.uri and rolled.key_pem != account.key_pem

        async with snakeway(config) as proc:  # not due by its dates: replaced because it is revoked
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: ISSUED in log, timeout=30)  # ordered with the rolled-over key
            new = await eventually(lambda: serial_served(pebble, ctx, old_serial), timeout=20)
            assert (await pebble.cert_status(f"{new.serial_number:x}"))["Status"] == "Valid"
            assert await store.load_account(pebble.directory_url) == rolled  # the same account, the new key
