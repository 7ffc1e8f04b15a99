"""``python -m snakeway certs`` names the node holding a lease on each certificate (Redis store, a real redis-server)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from snakeway import cli
from snakeway.acme.redislease import RedisLeases
from tests.test_config_redis import config_text
from tests.test_config_tls import write

if TYPE_CHECKING:
    from tests.redisserver import RedisServer

OWNER = "edge-1.example.net:4242:0badcafe"


async def certs(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """The header and the first row ``python -m snakeway certs`` prints (run in a thread: it runs its own trio)."""
    code = await trio.to_thread.run_sync(cli.main, ["certs", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 0, err
    header, row, *_ = out.splitlines()
    return header, row


def cell(header: str, row: str, column: str) -> str:
    start = header.index(column)
    return row[start:].split()[0]


async def test_certs_shows_who_holds_a_lease_with_a_redis_store(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "main.hcl", config_text(tmp_path, f'{{ type = "redis", url = "{redis_server.url}" }}'))
    leases = RedisLeases(redis_server.url)
    lease = await leases.acquire("example.com", OWNER, 30.0)
    assert lease is not None
    header, row = await certs(config, capsys)
    assert header.split() == ["NAMES", "ISSUER", "NOT", "AFTER", "STATE", "NEXT", "CHECK", "LEASE", "LAST", "ERROR"]
    assert row.startswith("example.com") and "missing" in row
    assert cell(header, row, "LEASE") == OWNER
    assert await leases.release(lease)
    header, row = await certs(config, capsys)
    assert cell(header, row, "LEASE") == "-"  # nobody holds it now


async def test_certs_has_no_lease_column_with_a_file_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "main.hcl", config_text(tmp_path, '{ type = "filesystem" }'))
    header, row = await certs(config, capsys)
    assert "LEASE" not in header
    assert header.split() == ["NAMES", "ISSUER", "NOT", "AFTER", "STATE", "NEXT", "CHECK", "LAST", "ERROR"]
    assert row.startswith("example.com") and "missing" in row
