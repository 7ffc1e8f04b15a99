"""``tls_automation.hooks``: parsed into :class:`snakeway.config.model.Hooks`, and every mistake named as the
user sees it (``FILE:LINE: key.path: message``), by ``snakeway check`` too."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from snakeway.config.load import load_config
from snakeway.config.model import Hooks
from tests.proc import PYTHON
from tests.test_config_renewal import BASE, automation
from tests.test_config_tls import line_of, problems, write


def with_hooks(hooks: str) -> str:
    return BASE.replace("  tls_automation = {\n", f"  tls_automation = {{\n    hooks = {{ {hooks} }}\n", 1)


def executable(tmp_path: Path, name: str = "deploy.sh", mode: int = 0o755) -> Path:
    program = tmp_path / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(mode)
    return program


def test_defaults_run_no_hook(tmp_path: Path) -> None:
    assert automation(tmp_path, BASE).hooks == Hooks(on_renewed=(), timeout_seconds=60.0)


def test_a_program_with_arguments_and_a_timeout(tmp_path: Path) -> None:
    program = executable(tmp_path)
    settings = automation(tmp_path, with_hooks(f'on_renewed = ["{program}", "--reload", "nginx"], '
                                               "timeout_seconds = 5"))
    assert settings.hooks == Hooks(on_renewed=(str(program), "--reload", "nginx"), timeout_seconds=5.0)


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ('on_renewed = ["deploy.sh"]', "on_renewed[0]: expected the program's absolute path, got \"deploy.sh\""),
        ('on_renewed = ["{missing}"]', "on_renewed[0]: program does not exist: {missing}"),
        ('on_renewed = ["{plain}"]', "on_renewed[0]: program is not executable: {plain}"),
        ('on_renewed = ["{tmp}"]', "on_renewed[0]: not a file: {tmp}"),
        ("on_renewed = []", "on_renewed: must not be empty"),
        ('on_renewed = "{program}"', "on_renewed: expected a list, got"),
        ('on_renewed = ["{program}", ""]', "on_renewed[1]: must not be empty"),
        ('on_renewed = ["{program}"], timeout_seconds = 0', "timeout_seconds: must be greater than 0, got 0"),
        ('on_renew = ["{program}"]', "on_renew"),
    ],
)
def test_each_mistake_names_file_line_and_key(tmp_path: Path, hooks: str, message: str) -> None:
    names = {"missing": tmp_path / "gone.sh", "plain": executable(tmp_path, "plain.sh", 0o644),
             "tmp": tmp_path, "program": executable(tmp_path)}
    text = with_hooks(hooks.format(**names))
    path = write(tmp_path, "main.hcl", text)
    (problem,) = problems(path)
    prefix = f"{path}:{line_of(text, 'hooks')}: server.tls_automation.hooks."
    assert problem.startswith(prefix), problem
    assert message.format(**names) in problem, problem


async def test_check_refuses_a_hook_program_that_is_gone(tmp_path: Path) -> None:
    program = executable(tmp_path)
    path = write(tmp_path, "main.hcl", with_hooks(f'on_renewed = ["{program}"]'))
    assert load_config(path).server.tls_automation is not None
    program.unlink()
    done = await trio.run_process([PYTHON, "-m", "snakeway", "check", "--config", str(path)],
                                  capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1
    assert f"hooks.on_renewed[0]: program does not exist: {program}" in done.stderr.decode()
