"""GET /admin/certs for manual and internal certificates, on an admin listener that is itself TLS."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trustme

from tests.acme.test_renewal_pebble import handshake
from tests.admin.adminclient import admin_block, serving, write_config
from tests.tlshelpers import client_context, write_leaf


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


async def test_certs_shows_what_the_listeners_serve_and_renewing_a_file_certificate_is_refused(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = write_leaf(ca, tmp_path, "site.test")
    line, admin = admin_block(tmp_path, tls='mode = "internal", domains = ["localhost"]')
    bind = f', tls = {{ mode = "manual", cert = "{files.cert}", key = "{files.key}" }}'
    config, port = write_config(tmp_path, "", line, workers=1, bind=bind)
    async with serving(config, admin, workers=1, https=True):
        # Verified against the local CA: the admin listener's certificate is the internal one listed below.
        admin.tls = client_context(tmp_path / "state" / "pki" / "root.pem")
        internal = await handshake(admin.port, admin.tls, "localhost")
        manual = await handshake(port, client_context(ca.cert_pem.bytes()), "site.test")
        listed = {c["id"]: c for c in (await admin.get("/admin/certs"))["certificates"]}
        assert set(listed) == {f"manual:{files.cert}", "internal:localhost"}
        now = datetime.now(UTC)
        for cert_id, leaf, kind, names in [
            (f"manual:{files.cert}", manual, "manual", ["site.test"]),
            ("internal:localhost", internal, "internal", ["localhost"]),
        ]:
            shown = listed[cert_id]
            assert shown["kind"] == kind
            assert shown["names"] == names
            assert shown["serial"] == f"{leaf.serial_number:x}"
            assert shown["issuer"] == leaf.issuer.rfc4514_string()
            assert shown["not_before"] == iso(leaf.not_valid_before_utc)
            assert shown["not_after"] == iso(leaf.not_valid_after_utc)
            expected = (leaf.not_valid_after_utc - now).total_seconds()
            assert expected - 30 <= shown["expires_in_seconds"] <= expected
            assert (shown["state"], shown["last_error"], shown["ari_window"]) == ("valid", None, None)
        assert listed["internal:localhost"]["renewal_at"] is not None  # snakeway renews it itself
        assert listed[f"manual:{files.cert}"]["renewal_at"] is None

        quoted = f"manual:{files.cert}".replace("/", "%2F")
        status, _, body = await admin.request("POST", f"/admin/certs/{quoted}/renew")
        assert (status, body) == (409, {"error": f"manual:{files.cert} is a manual certificate, not an ACME one: "
                                                 "replace its files and reload"})
        status, _, body = await admin.request("POST", "/admin/certs/internal:localhost/retry")
        assert status == 409 and "internal certificate" in body["error"]


async def test_with_two_workers_both_serve_the_admin_certificate_of_the_one_local_ca(tmp_path: Path) -> None:
    line, admin = admin_block(tmp_path, tls='mode = "internal", domains = ["localhost"]')
    config, _ = write_config(tmp_path, "", line, workers=2)
    async with serving(config, admin, workers=2, https=True):
        admin.tls = client_context(tmp_path / "state" / "pki" / "root.pem")
        serials = {(await handshake(admin.port, admin.tls, "localhost")).serial_number for _ in range(20)}
        assert len(serials) == 1  # one certificate, shared by both workers, and verified against root.pem
        (listed,) = (await admin.get("/admin/certs"))["certificates"]
        assert listed["serial"] == f"{serials.pop():x}"
