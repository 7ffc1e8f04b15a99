"""The status page of a real snakeway (two workers, an internal certificate, an upstream that is down), over HTTP
and in a real headless Chromium that logs in through the form as a user does."""

from __future__ import annotations

import shutil
import ssl
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import trio

from tests.admin.adminclient import Admin, admin_block, eventually, serving, write_config
from tests.admin.browser import CHROMIUM, chromium
from tests.helpers import LOOPBACK, Client, Response, closed_port
from tests.hostile.harness import until_logged
from tests.proc import Running
from tests.tlshelpers import client_context

NAME = "status.test"


def configure(tmp_path: Path) -> tuple[Path, int, Admin, int]:
    """An HTTPS ingress with an internal certificate for status.test, routed to an upstream nobody listens on."""
    dead = closed_port()
    body = f"""
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "/" }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {dead} }} }}] }}]
"""
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, body, line, bind=f', tls = {{ mode = "internal", domains = ["{NAME}"] }}')
    return config, port, admin, dead


async def through_ingress(port: int, ctx: ssl.SSLContext) -> int:
    """The status of GET / through the HTTPS ingress (the upstream refuses: 502, and it is marked down)."""
    stream = trio.SSLStream(await trio.open_tcp_stream(LOOPBACK, port), ctx, server_hostname=NAME,
                            https_compatible=True)
    client = Client(stream)  # type: ignore[arg-type]  # any trio stream will do
    try:
        with trio.fail_after(10):
            return (await client.request("GET", "/", [("host", NAME)])).status
    finally:
        await trio.aclose_forcefully(stream)


def levels(proc: Running, text: bytes) -> list[bytes]:
    """The levels of the log lines that hold ``text``, in order."""
    return [line.split()[2] for line in bytes(proc.log).splitlines() if text in line]


async def admin_http(admin: Admin, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                     body: bytes = b"") -> Response:
    client = await Client.connect(admin.port)
    try:
        with trio.fail_after(30):
            return await client.request(method, target, [("host", "127.0.0.1"), *(headers or [])], body)
    finally:
        await client.aclose()


async def test_the_login_form_trades_a_token_for_a_session_that_a_token_change_revokes(tmp_path: Path) -> None:
    config, port, admin, dead = configure(tmp_path)
    async with serving(config, admin) as proc:
        refused = await admin_http(admin, "GET", "/")
        assert refused.status == 401
        assert refused.header(b"www-authenticate") == b'Bearer realm="snakeway-admin"'
        assert refused.header(b"content-type") == b"text/html; charset=utf-8"
        assert b'<form method="post" action="/login">' in refused.body and b'name="token"' in refused.body

        form = [("content-type", "application/x-www-form-urlencoded")]
        wrong = await admin_http(admin, "POST", "/login", form, b"token=" + b"x" * 43)
        assert wrong.status == 401 and b"That is not a valid token." in wrong.body
        assert wrong.header(b"set-cookie") is None
        await until_logged(proc, b"admin: status page login from 127.0.0.1")
        assert levels(proc, b"admin: status page login from 127.0.0.1") == [b"WARNING"]
        # A browser's first visit, without any credentials, is an info line; a wrong token a warning.
        assert levels(proc, b"admin: GET / from 127.0.0.1") == [b"INFO"]
        assert (await admin_http(admin, "GET", "/", [("authorization", "Bearer " + "x" * 43)])).status == 401
        await until_logged(proc, b"admin: GET / from 127.0.0.1", 2)
        assert levels(proc, b"admin: GET / from 127.0.0.1") == [b"INFO", b"WARNING"]
        many = b"&".join([b"a=1"] * 20) + f"&token={admin.token}".encode()  # more fields than a form has
        assert (await admin_http(admin, "POST", "/login", form, many)).status == 401

        login = await admin_http(admin, "POST", "/login", form, f"token={quote(admin.token)}".encode())
        assert (login.status, login.header(b"location")) == (303, b"/")
        cookie_header = login.header(b"set-cookie")
        assert cookie_header is not None
        cookie, *flags = cookie_header.decode().split("; ")
        assert cookie.startswith("snakeway_admin_session=")
        assert {"HttpOnly", "Secure", "SameSite=Strict", "Max-Age=43200"} <= set(flags)

        # The session is good on every worker (each connection may land on either) and for the JSON API too.
        for _ in range(10):
            shown = await admin_http(admin, "GET", "/", [("cookie", f"other=1; {cookie}")])
            assert shown.status == 200 and f"internal:{NAME}".encode() in shown.body
        stats = await admin_http(admin, "GET", "/admin/stats", [("cookie", cookie)])
        assert stats.status == 200 and stats.header(b"content-type") == b"application/json"
        # With the bearer token, too.
        assert (await admin_http(admin, "GET", "/", [("authorization", f"Bearer {admin.token}")])).status == 200
        forged = cookie[:-1] + ("0" if cookie[-1] != "0" else "1")
        assert (await admin_http(admin, "GET", "/", [("cookie", forged)])).status == 401

        # A new token file, reloaded: the old sessions are refused everywhere.
        (tmp_path / "admin.tokens").write_text("n" * 40 + "\n")
        assert (await admin.request("POST", "/admin/reload"))[0] == 200

        async def revoked() -> bool:
            return all([(await admin_http(admin, "GET", "/", [("cookie", cookie)])).status == 401 for _ in range(10)])

        await eventually(revoked)


async def test_the_status_page_in_headless_chromium(tmp_path: Path) -> None:
    assert shutil.which(CHROMIUM), "chromium is missing: `make test` installs it (Debian package chromium)"
    config, port, admin, dead = configure(tmp_path)
    async with serving(config, admin):
        ctx = client_context(tmp_path / "state" / "pki" / "root.pem")
        assert await through_ingress(port, ctx) == 502

        async def marked_down() -> bool:
            upstreams = await admin.get("/admin/upstreams")
            return not upstreams["services"]["app"][0]["healthy"]

        await eventually(marked_down)
        await trio.sleep(1.2)  # the worker that saw it has written its figures since, for the other to read
        cert = next(c for c in (await admin.get("/admin/certs"))["certificates"] if c["id"] == f"internal:{NAME}")

        async with chromium(tmp_path / "chromium") as page:
            url = f"http://127.0.0.1:{admin.port}/"
            await page.goto(url)
            assert "Log in" in await page.evaluate("document.body.innerText")
            await page.evaluate(f"document.getElementById('token').value = {admin.token!r}; "
                                "document.getElementById('login').click(); true")
            # The cookie is Secure, yet Chromium keeps it over plain HTTP on 127.0.0.1: the page loads.
            await page.wait_for("document.getElementById('certificates') !== null")
            assert await page.evaluate("location.href") == url
            assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
            text = await page.evaluate("document.body.innerText")
            row = await page.evaluate("document.querySelector('#certificates tr.cert').innerText")
            assert f"internal:{NAME}" in row and NAME in row and "valid" in row and "internal" in row
            assert cert["not_after"][:10] in row  # the bar's legend: its lifetime
            assert cert["next_check"] in row  # when snakeway renews it
            bar = await page.evaluate(
                "(() => { const b = document.querySelector('#certificates .bar').getBoundingClientRect();"
                " const n = document.querySelector('#certificates .bar .now').getBoundingClientRect();"
                " const r = document.querySelector('#certificates .bar .renew').getBoundingClientRect();"
                " return [b.left, b.width, n.left, r.left]; })()")
            left, width, now_at, renew_at = bar
            assert width > 100
            assert left <= now_at < left + 0.05 * width  # just issued: now at the start of its lifetime
            start, end, renewal = (datetime.fromisoformat(cert[k]) for k in ("not_before", "not_after", "renewal_at"))
            share = (renewal - start) / (end - start)
            assert 0.4 < share < 0.9
            assert abs(renew_at - (left + share * width)) < 0.02 * width  # the renewal mark where /admin/certs says
            upstream = await page.evaluate("document.querySelector('#upstreams tr.upstream').innerText")
            assert f"127.0.0.1:{dead}" in upstream and "down" in upstream
            assert f"upstream 127.0.0.1:{dead} of app" in await page.evaluate(
                "document.getElementById('errors').innerText")
            # The log: the worker that tried the upstream warned about it (whichever worker drew the page).
            log = await page.evaluate("document.getElementById('log').innerText")
            assert f"upstream 127.0.0.1:{dead}:" in log and "warning" in log
            assert "2 worker(s)" in text
            png = await page.screenshot(tmp_path / "status.png")
            assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
