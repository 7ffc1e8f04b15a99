"""Talking to a real snakeway's admin listener: its configuration, and JSON requests with a bearer token."""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.helpers import LOOPBACK, Client, closed_port
from tests.hostile import harness
from tests.hostile.harness import running, until_logged
from tests.proc import Running


@dataclass
class Admin:
    port: int
    token: str
    tls: ssl.SSLContext | None = None
    server_name: str = "localhost"

    async def exchange(
        self, method: str, target: str, *, token: str | None = "", body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Any:
        """The response to one request, whatever its body; ``token=None`` sends no Authorization header."""
        hdrs = [("host", "localhost"), *(headers or [])]
        if token is not None:
            hdrs.append(("authorization", f"Bearer {token or self.token}"))
        stream: trio.abc.Stream = await trio.open_tcp_stream(LOOPBACK, self.port)
        if self.tls is not None:
            stream = trio.SSLStream(stream, self.tls, server_hostname=self.server_name, https_compatible=True)
        client = Client(stream)  # type: ignore[arg-type]  # any trio stream will do
        try:
            with trio.fail_after(30):
                return await client.request(method, target, hdrs, body)
        finally:
            await client.aclose()

    async def request(
        self, method: str, target: str, *, token: str | None = "", body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> tuple[int, dict[str, bytes], Any]:
        """(status, headers, the JSON body) of one request; ``token=None`` sends no Authorization header."""
        response = await self.exchange(method, target, token=token, body=body, headers=headers)
        assert response.header(b"content-type") == b"application/json", response
        assert b"Traceback" not in response.body
        return response.status, {k.decode(): v for k, v in response.headers}, json.loads(response.body)

    async def get(self, target: str) -> Any:
        status, _, body = await self.request("GET", target)
        assert status == 200, body
        return body


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 43 characters


def admin_block(directory: Path, *, port: int | None = None, tls: str = "") -> tuple[str, Admin]:
    """A ``bind_admin`` line on 127.0.0.1 with a new token file in ``directory``."""
    token = new_token()
    (directory / "admin.tokens").write_text(f"{new_token()}\n\n{token}\n")
    port = port or closed_port()
    tls_key = f", tls = {{ {tls} }}" if tls else ""
    line = (f'bind_admin = {{ interface = "127.0.0.1", port = {port}{tls_key}, '
            f'auth = {{ bearer = {{ token_file = "{directory / "admin.tokens"}" }} }} }}')
    return line, Admin(port, token)


def write_config(
    directory: Path, ingress_body: str, admin_line: str, *, workers: int = 2, port: int | None = None, bind: str = "",
) -> tuple[Path, int]:
    """A configuration with one ingress on 127.0.0.1 that holds the admin listener: (its path, the ingress port).

    Upstreams refused cool down for a minute, so that a test sees them down.
    """
    return harness.write_config(directory, f"{ingress_body}\n  {admin_line}", workers=workers, port=port, bind=bind,
                                server="upstream = { failure_cooldown_seconds = 60 }")


async def eventually(check: Any, timeout: float = 5.0) -> Any:
    """Call the coroutine function ``check`` until it returns something true (its value), or fail."""
    with trio.fail_after(timeout):
        while not (value := await check()):
            await trio.sleep(0.05)
    return value


@asynccontextmanager
async def serving(config: Path, admin: Admin, *, workers: int = 2, https: bool = False) -> AsyncIterator[Running]:
    """snakeway on ``config`` until the block ends; entered once every worker listens on the admin port too."""
    async with running(config, workers=workers) as proc:
        scheme = "https" if https or admin.tls is not None else "http"
        await until_logged(proc, f"listening on {scheme}://127.0.0.1:{admin.port}".encode(), workers)
        yield proc
