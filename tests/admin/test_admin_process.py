"""The admin API of a real snakeway process with two workers: auth, figures for the whole server, reload, errors."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_websocket

from tests.admin.adminclient import admin_block, eventually, serving, write_config
from tests.helpers import closed_port, get, start_upstream
from tests.hostile.harness import proxy_to, until_logged
from tests.hostile.test_workers_hostile import accept_websocket, open_websockets

REALM = b'Bearer realm="snakeway-admin"'


async def test_every_request_needs_a_valid_bearer_token_even_for_unknown_paths(tmp_path: Path) -> None:
    line, admin = admin_block(tmp_path)
    config, _ = write_config(tmp_path, "", line)
    async with serving(config, admin):
        for target in ("/admin/stats", "/admin/nothing", "/login"):  # / refused is a login form: test_status_page*
            for token in (None, "x" * 43, admin.token[:-1], admin.token + "x"):
                status, headers, body = await admin.request("GET", target, token=token)
                assert (status, headers["www-authenticate"]) == (401, REALM), (target, token)
                assert body == {"error": "a valid bearer token is required (Authorization: Bearer <token>)"}
            status, headers, _ = await admin.request("GET", target, token=None,
                                                     headers=[("authorization", f"Basic {admin.token}")])
            assert status == 401
        status, _, body = await admin.request("GET", "/admin/nothing")  # with the token: the path is looked at
        assert (status, body) == (404, {"error": "no admin endpoint /admin/nothing"})


async def test_stats_count_each_request_once_whichever_worker_served_it(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, seen = await start_upstream(nursery)
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, proxy_to(upstream, "/app"), line)
    async with serving(config, admin) as proc:
        requests = 300
        async with trio.open_nursery() as clients:  # each on a new connection: the kernel spreads them
            for i in range(requests):
                target = "/app" if i % 3 else "/elsewhere"
                clients.start_soon(get, port, target)
                if i % 20 == 19:
                    await trio.sleep(0.01)
        assert len(seen.requests) == 2 * requests // 3

        async def settled() -> object:
            stats = await admin.get("/admin/stats")
            return stats if stats["requests"]["total"] == requests else None

        stats = await eventually(settled)
        assert stats["workers"] == 2
        assert stats["requests"]["responses"]["2xx"] == 2 * requests // 3
        assert stats["requests"]["client_errors"] == requests // 3  # no route: 404
        assert stats["services"]["app"]["total"] == 2 * requests // 3
        assert stats["services"]["app"]["successes"] == 2 * requests // 3
        assert stats["services"]["app"]["failures"] == 0
        await trio.sleep(1.2)  # every worker has written its figures again since: still counted once
        assert (await admin.get("/admin/stats"))["requests"]["total"] == requests
        await until_logged(proc, b"snakeway.access", requests)
        pids = {line.split(b"[")[1].split(b"]")[0] for line in bytes(proc.log).splitlines() if b"snakeway.access" in line}
        assert len(pids) == 2  # both workers served some: the figures above are both workers' together


async def test_an_upstream_that_refused_shows_unhealthy_with_its_failures(nursery: trio.Nursery, tmp_path: Path) -> None:
    live, _ = await start_upstream(nursery)
    dead = closed_port()
    body = f"""
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "/" }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {dead} }} }},
                             {{ endpoint = {{ host = "127.0.0.1", port = {live} }} }}] }}]
"""
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, body, line)
    async with serving(config, admin):
        before = await admin.get("/admin/upstreams")
        assert [(e["endpoint"], e["healthy"], e["failures"]) for e in before["services"]["app"]] == [
            (f"127.0.0.1:{dead}", True, 0), (f"127.0.0.1:{live}", True, 0)]
        assert (await get(port, "/")).status == 200  # the dead one is tried first, then the live one

        async def marked_down() -> object:
            upstreams = await admin.get("/admin/upstreams")
            return upstreams if not upstreams["services"]["app"][0]["healthy"] else None

        after = await eventually(marked_down)
        dead_entry, live_entry = after["services"]["app"]
        assert dead_entry["failures"] == 1
        assert 0 < dead_entry["down_for_seconds"] <= 60
        assert (live_entry["healthy"], live_entry["failures"], live_entry["in_flight"]) == (True, 0, 0)


async def test_in_flight_counts_a_request_the_upstream_is_still_answering(nursery: trio.Nursery, tmp_path: Path) -> None:
    release = trio.Event()

    async def slow(request: object, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        await release.wait()
        return 200, [], b"done"

    upstream, _ = await start_upstream(nursery, slow)
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, proxy_to(upstream), line)
    async with serving(config, admin):
        async with trio.open_nursery() as clients:
            for _ in range(3):
                clients.start_soon(get, port, "/")

            async def three_in_flight() -> object:
                return (await admin.get("/admin/upstreams"))["services"]["app"][0]["in_flight"] == 3

            await eventually(three_in_flight)
            release.set()

        async def none_in_flight() -> object:
            return (await admin.get("/admin/upstreams"))["services"]["app"][0]["in_flight"] == 0

        await eventually(none_in_flight)


async def test_reload_applies_a_changed_route_or_says_why_not(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, proxy_to(upstream, "/old"), line)
    async with serving(config, admin):
        assert (await get(port, "/new")).status == 404
        write_config(tmp_path, proxy_to(upstream, "/new"), line, port=port)
        status, _, body = await admin.request("POST", "/admin/reload")
        assert (status, body) == (200, {"applied": True, "error": None})

        async def applied_everywhere() -> bool:  # the other worker reloads on the same SIGHUP, within moments
            return all([(await get(port, "/new")).status == 200 for _ in range(20)])

        await eventually(applied_everywhere)
        assert (await get(port, "/old")).status == 404

        config.write_text(config.read_text().replace('path = "/new"', "path = 42"))
        status, _, body = await admin.request("POST", "/admin/reload", body=b"{}")
        assert status == 422
        assert body["applied"] is False
        assert f"{config}:" in body["error"] and "path" in body["error"]
        assert (await get(port, "/new")).status == 200  # the running configuration stays

        # Each worker answers for the reload it ran; the one that did not serve the POST runs it on the
        # same SIGHUP, within moments.
        async def failed_everywhere() -> bool:
            answers = [await admin.get("/admin/health") for _ in range(8)]
            return all((h["status"], h["workers"], h["last_reload"]["applied"]) == ("ok", 2, False) for h in answers)

        await eventually(failed_everywhere)


async def test_bad_input_gets_a_clear_json_error(tmp_path: Path) -> None:
    line, admin = admin_block(tmp_path)
    config, _ = write_config(tmp_path, "", line, workers=1)
    async with serving(config, admin, workers=1):
        cases = [
            ("GET", "/admin/unknown", b"", 404, "no admin endpoint /admin/unknown"),
            ("GET", "/admin/reload", b"", 405, "/admin/reload takes POST"),
            ("DELETE", "/admin/stats", b"", 405, "/admin/stats takes GET"),
            ("POST", "/admin/certs/acme:a.test/renew", b"{not json", 400, "the body is not JSON"),
            ("POST", "/admin/reload", b"[]", 400, "the body must be a JSON object, got list"),
            ("POST", "/admin/certs/acme:nope.test/renew", b"{}", 404, "no certificate 'acme:nope.test'"),
            ("POST", "/admin/certs/nope/retry", b"", 404, "no certificate 'nope'"),
        ]
        for method, target, body, want, message in cases:
            status, headers, answer = await admin.request(method, target, body=body)
            assert status == want, (target, answer)
            assert list(answer) == ["error"] and answer["error"].startswith(message), answer
            if want == 405:
                assert headers["allow"] == (b"POST" if "reload" in target else b"GET")
        status, headers, answer = await admin.request("POST", "/admin/reload", body=b" " * 70_000)
        assert (status, headers["connection"]) == (413, b"close")
        assert answer["error"].startswith("the body must be at most 65536 bytes")
        status, headers, _ = await admin.request("POST", "/admin/reload", token="y" * 40, body=b"{}")
        assert (status, headers["connection"]) == (401, b"close")  # refused before its body was read


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_token_file_changed_then_reloaded_takes_effect(tmp_path: Path, workers: int) -> None:
    line, admin = admin_block(tmp_path)
    config, _ = write_config(tmp_path, "", line, workers=workers)
    async with serving(config, admin, workers=workers):
        old = admin.token
        new = "n" * 40
        (tmp_path / "admin.tokens").write_text(new + "\n")
        assert (await admin.request("GET", "/admin/health"))[0] == 200  # read at reload only
        assert (await admin.request("POST", "/admin/reload"))[0] == 200  # with the old token, the new applies
        admin.token = new

        async def old_refused_everywhere() -> bool:
            results = [(await admin.request("GET", "/admin/health", token=old))[0] for _ in range(10)]
            return all(status == 401 for status in results)

        await eventually(old_refused_everywhere)
        assert (await admin.request("GET", "/admin/health"))[0] == 200


async def test_a_worker_killed_and_replaced_loses_none_of_its_counts(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, proxy_to(upstream), line)
    async with serving(config, admin) as proc:
        for _ in range(60):
            assert (await get(port, "/")).status == 200

        async def counted(total: int) -> object:
            return (await admin.get("/admin/stats"))["requests"]["total"] == total

        await eventually(lambda: counted(60))
        await trio.sleep(0.6)  # every worker has written its figures since its last request
        await until_logged(proc, b"snakeway.access", 60)
        victim = int(bytes(proc.log).split(b"snakeway.access")[0].rsplit(b"[", 1)[1].split(b"]")[0])
        os.kill(victim, signal.SIGKILL)
        await until_logged(proc, b"starting a new one")
        await until_logged(proc, f"listening on http://127.0.0.1:{admin.port}".encode(), 3)
        for _ in range(10):
            assert (await get(port, "/")).status == 200
        await eventually(lambda: counted(70))
        await trio.sleep(1.2)  # the new worker has written its figures: its predecessor's counts included
        stats = await admin.get("/admin/stats")
        assert (stats["workers"], stats["requests"]["total"], stats["services"]["app"]["successes"]) == (2, 70, 70)


async def test_open_websockets_are_counted_over_both_workers(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream = await nursery.start(
        partial(trio_websocket.serve_websocket, accept_websocket, "127.0.0.1", 0, ssl_context=None)
    )
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, proxy_to(upstream.port, "/ws", ", enable_websocket = true"), line)
    async with serving(config, admin):
        opened, refused = await open_websockets(port, 6)
        assert (len(opened), refused) == (6, [])

        async def websockets(open_now: int, upgrades: int) -> bool:
            stats, upstreams = await admin.get("/admin/stats"), await admin.get("/admin/upstreams")
            app = stats["services"]["app"]
            return (app["websockets_open"], app["responses"]["1xx"], upstreams["services"]["app"][0]["in_flight"]) \
                == (open_now, upgrades, open_now)

        await eventually(lambda: websockets(6, 0))  # a 101 is counted when its tunnel ends
        for ws in opened[:4]:
            await ws.aclose()
        await eventually(lambda: websockets(2, 4))
        for ws in opened[4:]:
            await ws.aclose()
        await eventually(lambda: websockets(0, 6))
