"""curl, the client operators reach for first, against a running proxy."""

from __future__ import annotations

from pathlib import Path

import trio

from snakeway.config.model import Route, StaticSite
from tests.helpers import service_config, start_snakeway, start_upstream


async def curl(*args: str) -> str:
    result = await trio.run_process(["curl", "-sS", "--max-time", "20", *args], capture_stdout=True)
    return result.stdout.decode()


async def test_curl_through_the_proxy(nursery: trio.Nursery, tmp_path: Path) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    out = await curl("-H", "Host: a.test", f"http://127.0.0.1:{proxy}/path?q=1")
    assert out == "GET /path?q=1 0"
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"u" * (20 * 1024 * 1024))
    out = await curl("-T", str(upload), "-H", "Host: a.test", f"http://127.0.0.1:{proxy}/put")
    assert out == f"PUT /put {20 * 1024 * 1024}"
    # curl sends Expect: 100-continue for a large upload; the upstream never sees it.
    assert b"expect" not in dict(seen.requests[-1].headers)


async def test_curl_static_files(nursery: trio.Nursery, tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "site" / "data.txt").write_bytes(b"0123456789")
    site = StaticSite(route=Route(hosts=("*",), path="/"), file_dir=tmp_path / "site")
    _, proxy = await start_snakeway(nursery, service_config([], static=(site,)))
    base = f"http://127.0.0.1:{proxy}"
    assert await curl(f"{base}/") == "<h1>hi</h1>"
    assert await curl("-r", "2-4", f"{base}/data.txt") == "234"
    head = await curl("-I", f"{base}/data.txt")
    assert "content-type: text/plain; charset=utf-8" in head.lower()
    etag = next(line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("etag"))
    code = await curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}", f"{base}/data.txt")
    assert code == "304"
    code = await curl("-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", f"{base}/../../etc/passwd")
    assert code in ("400", "404")
