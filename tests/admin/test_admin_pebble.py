"""Certificate actions of the admin API against a real Pebble: a forced renewal, a retry, and what certs shows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trio

from tests.acme.adminpebble import issued_with_admin
from tests.acme.test_renewal_pebble import handshake, pebble_at
from tests.admin.adminclient import eventually
from tests.tlshelpers import client_context

NAME = "renew.example.test"


async def test_renew_orders_a_new_certificate_now_and_every_worker_serves_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with pebble_at(tmp_path) as pebble:
        ctx = client_context(await pebble.roots())
        async with issued_with_admin(nursery, tmp_path, pebble, (NAME,)) as (_, admin, proc):

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
