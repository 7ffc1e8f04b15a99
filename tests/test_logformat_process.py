"""``server.log``: every line snakeway writes, as a real process with two workers, in JSON or text.

Requests go over TLS with curl (so SNI, TLS version and User-Agent are real), to a proxied route, to static
files, and to the HTTP-to-HTTPS redirect.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import trio

from tests.helpers import LOOPBACK, closed_port
from tests.hostile.harness import proxy_to, running, start_logging_upstream, until_logged, write_config

STATIC = 'static_files = [{ routes = [{ hosts = ["*"], path = "/files", file_dir = "%s" }] }]'
ACCESS_KEYS = {
    "time", "level", "logger", "pid", "worker", "client", "host", "method", "path", "protocol", "status", "bytes",
    "duration_ms", "upstream", "sni", "tls_version", "user_agent",
}


def site(tmp_path: Path, fmt: str, upstream: int, *, level: str = "info", workers: int = 2) -> tuple[Path, int, int]:
    """A configuration: TLS (internal CA) on one port, its redirect on another; /api proxied, /files static."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "hello.txt").write_text("hello\n")
    redirect = closed_port()
    config, port = write_config(
        tmp_path,
        proxy_to(upstream, "/api") + (STATIC % files),
        workers=workers,
        server=f'log = {{ format = "{fmt}", level = "{level}" }}',
        bind=f', tls = {{ mode = "internal", domains = ["a.test"] }}, '
        f"redirect_http_to_https = {{ port = {redirect}, status = 308 }}",
    )
    return config, port, redirect


async def curl(tmp_path: Path, port: int, path: str, *, scheme: str = "https") -> int:
    """GET ``path`` on a.test:``port`` as curl does; the status."""
    root = tmp_path / "state" / "pki" / "root.pem"
    result = await trio.run_process(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", str(root),
         "--resolve", f"a.test:{port}:{LOOPBACK}", "-A", "logtest/1.0", f"{scheme}://a.test:{port}{path}"],
        capture_stdout=True,
    )
    return int(result.stdout)


async def stop(proc: object) -> bytes:
    from tests.proc import Running

    assert isinstance(proc, Running)
    proc.process.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        await proc.drain_log()
        assert await proc.process.wait() == 0
    return bytes(proc.log)


async def test_json_lines_parse_and_access_lines_carry_every_field(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_logging_upstream(nursery, body=b"from upstream")
    config, port, redirect = site(tmp_path, "json", upstream)
    async with running(config) as proc:
        await until_logged(proc, b"2 workers serving")
        assert await curl(tmp_path, port, "/api/x?q=1") == 200
        assert await curl(tmp_path, port, "/files/hello.txt") == 200
        assert await curl(tmp_path, redirect, "/moved", scheme="http") == 308
        await until_logged(proc, b'"logger":"snakeway.access"', 3)
        log = await stop(proc)
    entries = [json.loads(line) for line in log.decode().splitlines()]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "snakeway.access"]
    assert all(set(e) == ACCESS_KEYS for e in access), access
    by_path = {e["path"]: e for e in access}
    api, static, moved = by_path["/api/x?q=1"], by_path["/files/hello.txt"], by_path["/moved"]
    assert api["upstream"] == f"127.0.0.1:{upstream}" and api["status"] == 200
    assert static["upstream"] == "static" and static["status"] == 200
    assert moved["upstream"] == "redirect" and moved["status"] == 308
    for entry in (api, static):
        assert (entry["sni"], entry["tls_version"], entry["host"]) == ("a.test", "TLSv1.3", f"a.test:{port}")
    assert (moved["sni"], moved["tls_version"], moved["host"]) == (None, None, f"a.test:{redirect}")
    for entry in access:
        assert (entry["client"], entry["method"], entry["protocol"]) == ("127.0.0.1", "GET", "HTTP/1.1")
        assert entry["user_agent"] == "logtest/1.0" and entry["level"] == "info"
        assert entry["bytes"] > 0 and entry["duration_ms"] >= 0 and entry["worker"] in (0, 1)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert static["bytes"] > len("hello\n")  # the head counts too
    server = [e for e in entries if e["logger"] != "snakeway.access"]
    assert {"time", "level", "logger", "pid", "message"} <= set(server[0])
    assert sum(e["message"] == "2 workers serving" and "worker" not in e for e in server) == 1
    assert sorted(e["worker"] for e in server if e["message"].startswith("listening on https://")) == [0, 1]
    # What concerns the whole server is said once, by the supervisor, not again by each worker.
    said_once = [(e["message"], "worker" in e) for e in server if e["message"].startswith(("local CA: ", "SIGTERM"))]
    assert said_once == [
        (f"local CA: {tmp_path / 'state' / 'pki' / 'root.pem'} (python -m snakeway trust)", False),
        ("SIGTERM: shutting down the workers", False),
    ]
    assert server[-1]["message"] == "stopped" and "worker" not in server[-1]
    assert sum(e["message"] == "stopped" for e in server) == 1


async def test_text_is_one_line_per_request(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    config, port, _ = site(tmp_path, "text", upstream)
    async with running(config) as proc:
        assert await curl(tmp_path, port, "/api/one") == 200
        assert await curl(tmp_path, port, "/files/hello.txt") == 200
        await until_logged(proc, b"snakeway.access:", 2)
        log = await stop(proc)
    lines = [line for line in log.decode().splitlines() if "snakeway.access:" in line]
    assert len(lines) == 2
    pattern = (
        r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \[\d+\] snakeway\.access: 127\.0\.0\.1 a\.test:%d '
        r'"GET %s HTTP/1\.1" 200 \d+ [\d.]+ms %s sni=a\.test TLSv1\.3 "logtest/1\.0"'
    )
    assert re.fullmatch(pattern % (port, "/api/one", re.escape(f"127.0.0.1:{upstream}")), lines[0]), lines[0]
    assert re.fullmatch(pattern % (port, "/files/hello\\.txt", "static"), lines[1]), lines[1]
    assert log.decode().splitlines()[-1].endswith("snakeway.supervisor: stopped")


async def test_a_client_that_sends_nothing_is_logged_at_debug_level_only(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    for level in ("info", "debug"):
        directory = tmp_path / level
        directory.mkdir()
        # One worker: it takes the connections in turn, so the empty ones are handled before curl's request.
        config, port, redirect = site(directory, "json", upstream, level=level, workers=1)
        async with running(config, workers=1) as proc:
            await until_logged(proc, b"listening on", 2)  # both listeners, the redirect's too
            for listen in (port, redirect):  # connect, send nothing, close
                stream = await trio.open_tcp_stream(LOOPBACK, listen)
                await stream.aclose()
            assert await curl(directory, port, "/api/after") == 200
            await until_logged(proc, b'"path":"/api/after"')
            if level == "debug":
                await until_logged(proc, b"closed before sending anything", 2)
            log = await stop(proc)
        entries = [json.loads(line) for line in log.decode().splitlines()]
        quiet = [e for e in entries if "sending anything" in e.get("message", "") or "sent nothing" in
                 e.get("message", "")]
        assert not [e for e in entries if e["level"] in ("warning", "error")], entries
        if level == "info":
            assert quiet == [] and not [e for e in entries if e["level"] == "debug"], entries
        else:
            assert len(quiet) == 2 and all(e["level"] == "debug" for e in quiet), entries
