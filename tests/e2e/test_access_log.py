"""`server.access_log`: stderr, off, or a file that a reload opens again (log rotation)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trustme

from snakeway.config.load import load_config
from snakeway.config.model import Config
from snakeway.errors import ConfigError
from tests.e2e.test_tls import with_tls
from tests.helpers import get, service_config, start_snakeway, start_upstream
from tests.tlshelpers import client_context, manual, tls_request, write_leaf

LINE = re.compile(
    r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO( \[\d+\])? snakeway\.access: 127\.0\.0\.1 \S+ "GET (\S+) HTTP/1\.1" (\d{3}) '
    r'\d+ [\d.]+ms \S+( sni=\S+ TLSv1\.[23])? "[^"]*"$'
)


def logging_to(config: Config, target: str | Path) -> Config:
    return replace(config, server=replace(config.server, access_log=target))


def entries(path: Path) -> list[tuple[str, ...]]:
    lines = path.read_text().splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return [m.groups()[1:] for m in matches if m]


async def test_a_file_gets_one_line_per_request_and_a_reload_reopens_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    upstream, _ = await start_upstream(nursery)
    log = tmp_path / "access.log"
    config = logging_to(with_tls(service_config([upstream]), manual(write_leaf(ca, tmp_path, "a.test"))), log)
    server, port = await start_snakeway(nursery, config, lambda: config)
    context = client_context(ca.cert_pem.bytes())
    await tls_request(port, context, "a.test", host="a.test", target="/one")
    await tls_request(port, context, "a.test", host="a.test", target="/two?q=1")
    assert entries(log) == [("/one", "200", " sni=a.test TLSv1.3"), ("/two?q=1", "200", " sni=a.test TLSv1.3")]
    assert log.stat().st_mode & 0o777 == 0o640
    # Rotation: move the file away, reload, and the next line goes to a new file.
    log.rename(tmp_path / "access.log.1")
    assert await server.reload()
    await tls_request(port, context, "a.test", host="a.test", target="/three")
    assert entries(log) == [("/three", "200", " sni=a.test TLSv1.3")]
    assert len(entries(tmp_path / "access.log.1")) == 2


async def test_off_writes_nothing_and_a_reload_can_turn_it_on(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    log = tmp_path / "access.log"
    configs = [logging_to(service_config([upstream]), "off"), logging_to(service_config([upstream]), log)]
    server, port = await start_snakeway(nursery, configs[0], lambda: configs[1])
    assert (await get(port, "/quiet")).status == 200
    assert not server.shared.access.enabled
    assert await server.reload()
    assert not log.exists() or log.read_text() == ""
    assert (await get(port, "/loud")).status == 200
    assert entries(log) == [("/loud", "200", None)]


async def test_a_reload_that_cannot_open_the_file_keeps_the_old_one(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    log = tmp_path / "access.log"
    bad = logging_to(service_config([upstream]), tmp_path / "gone" / "access.log")
    server, port = await start_snakeway(nursery, logging_to(service_config([upstream]), log), lambda: bad)
    assert not await server.reload()
    assert (await get(port, "/still")).status == 200
    assert entries(log) == [("/still", "200", None)]


def test_the_directory_must_exist(tmp_path: Path) -> None:
    main = tmp_path / "snakeway.hcl"
    main.write_text('server {\n  version = 1\n  access_log = "logs/access.log"\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert str(info.value) == (
        f'{main}:3: server.access_log: directory "{tmp_path / "logs"}" does not exist (expected "stderr", "off" '
        "or a file)"
    )
    (tmp_path / "logs").mkdir()
    assert load_config(main).server.access_log == tmp_path / "logs" / "access.log"
    main.write_text('server {\n  version = 1\n  access_log = "off"\n}\n')
    assert load_config(main).server.access_log == "off"
