"""``python -m snakeway reload`` and ``certs renew`` through the admin listener of a real snakeway process."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.admin.adminclient import admin_block, eventually, serving, write_config
from tests.helpers import get, start_upstream
from tests.hostile.harness import proxy_to
from tests.proc import PYTHON


async def cli(*args: str) -> tuple[int, str]:
    """Run ``python -m snakeway ARGS``: its exit status and its stderr."""
    done = await trio.run_process([PYTHON, "-m", "snakeway", *args], capture_stdout=True, capture_stderr=True,
                                  check=False)
    return done.returncode, done.stderr.decode()


async def test_reload_from_the_command_line_applies_a_changed_route(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    line, admin = admin_block(tmp_path)
    config, port = write_config(tmp_path, proxy_to(upstream, "/old"), line)
    async with serving(config, admin):
        assert (await get(port, "/new")).status == 404
        write_config(tmp_path, proxy_to(upstream, "/new"), line, port=port)
        status, said = await cli("reload", "--config", str(config))  # --config after the command
        assert status == 0, said

        async def applied_everywhere() -> bool:
            return all([(await get(port, "/new")).status == 200 for _ in range(20)])

        await eventually(applied_everywhere)
        config.write_text(config.read_text().replace('path = "/new"', "path = 42"))
        status, said = await cli("--config", str(config), "reload")  # and before it
        assert status == 1  # a file that does not load is not sent for reloading: the mistake, in one line
        assert said.startswith(f"{config}:11: ") and "path" in said and said.count("\n") == 1, said
        assert (await get(port, "/new")).status == 200  # the running configuration stays


async def test_certs_renew_of_a_name_no_certificate_has_is_one_line(tmp_path: Path) -> None:
    line, admin = admin_block(tmp_path)
    config, _ = write_config(tmp_path, "", line)
    async with serving(config, admin):
        status, said = await cli("certs", "renew", "nothing.example", "--config", str(config))
    assert status == 1
    assert said.startswith("snakeway: certs renew: ") and said.count("\n") == 1, said
    assert "nothing.example" in said and "Traceback" not in said
