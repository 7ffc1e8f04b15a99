"""Certificate actions of the admin API against a real Pebble: a forced renewal, a retry, and what certs shows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trio

from tests.acme.test_renewal_pebble import ISSUED, follow_log, handshake, pebble_at, until_logged, write_config
from tests.admin.adminclient import admin_block, eventually
from tests.helpers import start_upstream
from tests.proc import snakeway
from tests.tlshelpers import client_context

NAME = "renew.example.test"


async def test_renew_orders_a_new_certificate_now_and_every_worker_serves_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    line, admin = admin_block(tmp_path)
    async with pebble_at(tmp_path) as pebble:
        write_config(config, directory_url=pebble.directory_url, ca_file=pebble.ca_file, pebble=pebble,
                     upstream=upstream, names=(NAME,), workers=2)
        config.write_text(config.read_text() + line + "\n")
        ctx = client_context(await pebble.roots())
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: ISSUED in log and log.count(b"listening on http://127.0.0.1:"
                                                                             + str(admin.port).encode()) == 2,
                               timeout=30)

            async def served_everywhere(serial: str) -> bool:  # by both workers: one ordered, one read the store
                try:
                    serials = [(await handshake(pebble.tls_port, ctx, NAME)).serial_number for _ in range(10)]
                except (OSError, trio.BrokenResourceError):  # the other worker has not loaded it yet
                    return False
                return all(f"{s:x}" == serial for s in serials)

            (before,) = (await admin.get("/admin/certs"))["certificates"]
            assert (before["id"], before["kind"], before["names"], before["state"]) == (
                f"acme:{NAME}", "acme", [NAME], "valid")
            await eventually(lambda: served_everywhere(before["serial"]), timeout=20)
            assert before["last_error"] is None and before["failures"] == 0
            assert datetime.fromisoformat(before["renewal_at"]) > datetime.now(UTC)  # not due

            status, _, body = await admin.request("POST", f"/admin/certs/{NAME}/renew")  # by name, or by id
            assert status == 200, body
            assert (body["id"], body["action"], body["done"]) == (f"acme:{NAME}", "renewal", True)
            renewed = body["certificate"]
            assert renewed["serial"] != before["serial"]
            assert renewed["not_before"] >= before["not_before"]
            (listed,) = (await admin.get("/admin/certs"))["certificates"]
            assert (listed["serial"], listed["not_after"], listed["state"]) == (
                renewed["serial"], renewed["not_after"], "valid")
            await eventually(lambda: served_everywhere(renewed["serial"]), timeout=20)

            status, _, body = await admin.request("POST", f"/admin/certs/acme:{NAME}/retry",
                                                  body=b'{"wait_seconds": 30}')
            assert (status, body["action"], body["done"]) == (200, "retry", True)
            assert body["certificate"]["serial"] == renewed["serial"]  # a retry of a healthy one orders nothing
            assert proc.log.count(b": ordering from") == 2
