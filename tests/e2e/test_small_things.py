"""What a user notices first: Date and reason phrases on snakeway's own answers, ``strip_prefix`` on a
proxied route, the distribution's name, the systemd unit, and the quick start as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import trio

from tests.helpers import closed_port, repo_root
from tests.hostile.harness import exchange, proxy_to, running, start_logging_upstream, until_logged, write_config

PYTHON = sys.executable


def head_of(response: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """The status line and the headers (lower-case names) of the first response in ``response``."""
    head = response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return head[0], {name.strip().lower(): value.strip() for name, value in (line.split(b":", 1) for line in head[1:])}


def assert_dated_now(headers: dict[bytes, bytes]) -> None:
    sent = parsedate_to_datetime(headers[b"date"].decode())
    assert headers[b"date"].endswith(b" GMT")
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5


async def test_snakeways_own_responses_carry_date_and_a_reason_phrase(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("a\n")
    body = proxy_to(upstream, "/api") + (
        f'static_files = [{{ routes = [{{ hosts = ["*"], path = "/files", file_dir = "{files}" }}] }}]'
    )
    config, listen = write_config(tmp_path, body, workers=1)
    async with running(config, workers=1):
        cases = [
            (b"GET /files/a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n", b"HTTP/1.1 200 OK"),
            (b"GET /files/none HTTP/1.1\r\nHost: a.test\r\n\r\n", b"HTTP/1.1 404 Not Found"),
            (b"POST /files/a.txt HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n",
             b"HTTP/1.1 405 Method Not Allowed"),
            (b"GET /files HTTP/1.1\r\nHost: a.test\r\n\r\n", b"HTTP/1.1 301 Moved Permanently"),
            (b"GET /elsewhere HTTP/1.1\r\nHost: a.test\r\n\r\n", b"HTTP/1.1 404 Not Found"),
            (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        ]
        for request, status_line in cases:
            line, headers = head_of(await exchange(listen, request))
            assert line == status_line, request
            assert_dated_now(headers)


async def test_the_redirect_to_https_is_dated_too(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    redirect = closed_port()
    config, _ = write_config(
        tmp_path, proxy_to(upstream), workers=1,
        bind=f', tls = {{ mode = "internal", domains = ["a.test"] }}, redirect_http_to_https = {{ port = {redirect} }}',
    )
    async with running(config, workers=1) as proc:
        # running() returns once the first listener (HTTPS) listens; the redirect listener opens just after.
        await until_logged(proc, f"listening on http://127.0.0.1:{redirect}".encode())
        line, headers = head_of(await exchange(redirect, b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"))
    assert line == b"HTTP/1.1 308 Permanent Redirect"
    assert_dated_now(headers)


@pytest.mark.parametrize(
    ("route", "sent", "received"),
    [
        ('path = "/api", strip_prefix = true', b"/api/users?id=1&x=/api", b"/users?id=1&x=/api"),
        ('path = "/api", strip_prefix = true', b"/api", b"/"),
        ('path = "/api", strip_prefix = true', b"/api?q", b"/?q"),
        ('path = "/api", strip_prefix = true', b"/api/", b"/"),
        ('path = "/api", strip_prefix = true', b"/api/a/../b", b"/b"),  # normalised first, as routed
        ('path = "/", strip_prefix = true', b"/a/b", b"/a/b"),
        ('path = "/api"', b"/api/users?id=1", b"/api/users?id=1"),
        ('path = "/api", strip_prefix = false', b"/api", b"/api"),
    ],
)
async def test_strip_prefix_sends_the_path_without_the_routes_prefix(
    nursery: trio.Nursery, tmp_path: Path, route: str, sent: bytes, received: bytes
) -> None:
    upstream, log = await start_logging_upstream(nursery)
    path, extra = route.split(", ", 1) if ", " in route else (route, "")
    prefix = path.split('"')[1]
    config, listen = write_config(tmp_path, proxy_to(upstream, prefix, f", {extra}" if extra else ""), workers=1)
    async with running(config, workers=1):
        answer = await exchange(listen, b"GET " + sent + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert head_of(answer)[0].startswith(b"HTTP/1.1 200 ")  # the upstream's own status line, relayed
    assert log.targets == [received]


def test_strip_prefix_is_a_boolean(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, proxy_to(1, "/api", ', strip_prefix = "yes"'), workers=1)
    result = subprocess.run([PYTHON, "-m", "snakeway", "check", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert re.search(r"snakeway\.hcl:\d+: ingress\.hostile\.services\[0\]\.routes\[0\]\.strip_prefix: ", result.stderr)


def test_the_distribution_is_not_pypis_other_snakeway() -> None:
    project = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]
    name = project["name"]
    assert re.sub(r"[-_.]+", "-", name).lower() == "snakeway-proxy"  # `pip install snakeway-proxy`
    assert project["scripts"] == {"snakeway": "snakeway.cli:main"}
    setuptools = tomllib.loads((repo_root() / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["snakeway*"]  # the import name stays snakeway
    assert f"pip install {name}" in (repo_root() / "README.md").read_text()


def test_the_systemd_unit_verifies_and_reloads_with_sighup(tmp_path: Path) -> None:
    unit = (repo_root() / "contrib" / "snakeway.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
    assert "\nExecStart=/opt/snakeway/venv/bin/python -m snakeway serve --config /etc/snakeway/snakeway.hcl\n" in unit
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: `make test` installs it (Debian package systemd)"
    config = tmp_path / "snakeway.hcl"
    config.write_text("server {\n  version = 1\n}\n")
    # As installed: the paths of this machine's Python and configuration, so verify finds the commands.
    local = unit.replace("/opt/snakeway/venv/bin/python", PYTHON).replace("/etc/snakeway/snakeway.hcl", str(config))
    (tmp_path / "snakeway.service").write_text(local)
    result = subprocess.run([analyze, "verify", str(tmp_path / "snakeway.service")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    broken = tmp_path / "broken" / "snakeway.service"
    broken.parent.mkdir()
    broken.write_text(local.replace("Type=exec", "Type=sometimes"))  # verify does find mistakes
    assert "Failed to parse service type" in subprocess.run(
        [analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60, check=False
    ).stderr


def _blocks(markdown: str, kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", markdown, re.S)


def test_the_quick_starts_configuration_checks_as_it_says(tmp_path: Path) -> None:
    quickstart = (repo_root() / "docs" / "quickstart.md").read_text()
    (hcl,) = _blocks(quickstart, "hcl")
    config = tmp_path / "snakeway.hcl"
    config.write_text(hcl)
    ran = subprocess.run([PYTHON, "-m", "snakeway", "check", "--config", str(config)], capture_output=True,
                         text=True, timeout=60, check=False, cwd=tmp_path)
    assert f"{config}: configuration is valid\n" == ran.stdout
    assert "snakeway.hcl: configuration is valid" in quickstart
    config.write_text(hcl.replace("port = 9001", 'port = "9001"'))
    ran = subprocess.run([PYTHON, "-m", "snakeway", "check", "--config", "snakeway.hcl"], capture_output=True,
                         text=True, timeout=60, check=False, cwd=tmp_path)
    assert ran.returncode == 1
    assert f"\n{ran.stderr}" in quickstart  # the very line the quick start shows
    assert "python -m snakeway serve --config snakeway.hcl.example" in quickstart
    assert "$(VPY) -m snakeway serve --config $(CONFIG)" in (repo_root() / "Makefile").read_text()
    assert "CONFIG  ?= snakeway.hcl.example" in (repo_root() / "Makefile").read_text()
