"""A WebSocket echo server on trio-websocket: the upstream of the WebSocket row.

Run as a script: ``python benchmarks/ws_echo.py PORT`` (listens on 127.0.0.1).
"""

from __future__ import annotations

import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    await serve_websocket(echo, "127.0.0.1", port, ssl_context=None)


if __name__ == "__main__":
    try:
        trio.run(main, int(sys.argv[1]))
    except KeyboardInterrupt:
        pass
