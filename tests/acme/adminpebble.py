"""A real snakeway with an admin listener, ordering from a running Pebble: the start of the tests that act on
certificates and the account through the admin API or the command line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.acme.test_renewal_pebble import ISSUED, follow_log, until_logged, write_config
from tests.admin.adminclient import Admin, admin_block
from tests.helpers import start_upstream
from tests.pebble import Pebble
from tests.proc import Running, snakeway


@asynccontextmanager
async def issued_with_admin(
    nursery: trio.Nursery, tmp_path: Path, pebble: Pebble, names: tuple[str, ...], *, workers: int = 2,
    edit: Callable[[str], str] = lambda text: text,
) -> AsyncIterator[tuple[Path, Admin, Running]]:
    """snakeway serving ``names`` from ``pebble`` with ``bind_admin``: (its configuration, the admin listener,
    the process, its log followed), once the certificate is issued and every worker listens on the admin port.

    ``edit`` changes the configuration's text before the start.
    """
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    line, admin = admin_block(tmp_path)
    write_config(config, directory_url=pebble.directory_url, ca_file=pebble.ca_file, pebble=pebble,
                 upstream=upstream, names=names, workers=workers)
    config.write_text(edit(config.read_text() + line + "\n"))
    listening = b"listening on http://127.0.0.1:" + str(admin.port).encode()
    async with snakeway(config) as proc:
        nursery.start_soon(follow_log, proc)
        await until_logged(proc, lambda log: ISSUED in log and log.count(listening) == workers, timeout=30)
        yield config, admin, proc
