"""WebSocket through the proxy, with trio-websocket at both ends."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio_websocket

from snakeway.config.model import Route
from tests.helpers import LOOPBACK, service_config, start_snakeway


async def echo_server(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(message)
    except trio_websocket.ConnectionClosed:
        pass


async def start_ws_upstream(nursery: trio.Nursery) -> int:
    server = await nursery.start(
        partial(trio_websocket.serve_websocket, echo_server, LOOPBACK, 0, ssl_context=None)
    )
    return server.port


def ws_config(port: int, *, max_connections: int | None = None):  # type: ignore[no-untyped-def]
    route = Route(hosts=("*",), path="/ws", enable_websocket=True, ws_max_connections=max_connections)
    return service_config([port], routes=(route, Route(hosts=("*",), path="/")))


async def test_messages_flow_both_ways(nursery: trio.Nursery) -> None:
    upstream = await start_ws_upstream(nursery)
    _, proxy = await start_snakeway(nursery, ws_config(upstream))
    async with trio_websocket.open_websocket(LOOPBACK, proxy, "/ws", use_ssl=False) as ws:
        for text in ["hello", "x" * 100_000, "ünïcode"]:
            await ws.send_message(text)
            assert await ws.get_message() == text
        await ws.send_message(b"\x00\x01binary")
        assert await ws.get_message() == b"\x00\x01binary"


async def test_upstream_close_reaches_the_client(nursery: trio.Nursery) -> None:
    async def closer(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("bye")
        await ws.aclose(code=4001, reason="done")

    server = await nursery.start(partial(trio_websocket.serve_websocket, closer, LOOPBACK, 0, ssl_context=None))
    _, proxy = await start_snakeway(nursery, ws_config(server.port))
    async with trio_websocket.open_websocket(LOOPBACK, proxy, "/ws", use_ssl=False) as ws:
        assert await ws.get_message() == "bye"
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason.code == 4001


async def test_connection_limit_answers_503(nursery: trio.Nursery) -> None:
    upstream = await start_ws_upstream(nursery)
    _, proxy = await start_snakeway(nursery, ws_config(upstream, max_connections=1))
    async with trio_websocket.open_websocket(LOOPBACK, proxy, "/ws", use_ssl=False) as first:
        with pytest.raises(trio_websocket.HandshakeError) as info:
            async with trio_websocket.open_websocket(LOOPBACK, proxy, "/ws", use_ssl=False):
                pass
        assert isinstance(info.value, trio_websocket.ConnectionRejected)
        assert info.value.status_code == 503
        await first.send_message("still here")
        assert await first.get_message() == "still here"
    # The slot is free again once the first socket closed.
    with trio.fail_after(5):
        while True:
            try:
                async with trio_websocket.open_websocket(LOOPBACK, proxy, "/ws", use_ssl=False) as again:
                    await again.send_message("ok")
                    assert await again.get_message() == "ok"
                break
            except trio_websocket.ConnectionRejected:
                await trio.sleep(0.01)

