"""A real headless Chromium driven over the DevTools protocol (a websocket on 127.0.0.1), as a user would use it.

Chromium runs in its own session with a temporary profile; leaving the block kills its whole process group.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

CHROMIUM = "chromium"


class Page:
    """One tab, reached through the browser's websocket in flattened session mode."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, session: str | None = None) -> None:
        self.ws = ws
        self.session = session
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result (events that arrive meanwhile are dropped)."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self.ws.send_message(json.dumps(message))
        with trio.fail_after(30):
            while True:
                answer = json.loads(await self.ws.get_message())
                if answer.get("id") == ident:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer["result"]  # type: ignore[no-any-return]

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Evaluate ``expression`` until it is true (its value)."""
        with trio.fail_after(timeout):
            while not (value := await self.evaluate(expression)):
                await trio.sleep(0.1)
        return value

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    async def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"])
        path.write_bytes(data)
        return data


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium with a blank tab; killed, with every process it started, when the block ends."""
    profile.mkdir(parents=True, exist_ok=True)
    proc = await trio.lowlevel.open_process(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1200,900", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        with trio.fail_after(30):
            while not active.exists() or len(active.read_text().splitlines()) < 2:
                assert proc.poll() is None, "chromium exited at start"
                await trio.sleep(0.1)
        port, path = active.read_text().splitlines()[:2]
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}{path}", max_message_size=64 << 20) as ws:
            browser = Page(ws)
            target = (await browser.send("Target.createTarget", url="about:blank"))["targetId"]
            attached = await browser.send("Target.attachToTarget", targetId=target, flatten=True)
            page = Page(ws, attached["sessionId"])
            await page.send("Page.enable")
            await page.send("Runtime.enable")
            await page.send("Emulation.setDeviceMetricsOverride", width=1200, height=900, deviceScaleFactor=1,
                            mobile=False)
            yield page
    finally:
        with trio.CancelScope(shield=True):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
