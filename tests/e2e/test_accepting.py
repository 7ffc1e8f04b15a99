"""How the server accepts connections (snakeway/accept.py inside Server): a handler that crashes
does not stop the server, listeners close on reload and shutdown, bursts are all served."""

from __future__ import annotations

import gc
import logging
import warnings
from dataclasses import replace

import pytest
import trio

import snakeway.connection
from snakeway.config.model import Bind
from snakeway.server import Server
from tests.helpers import (
    LOOPBACK,
    closed_port,
    get,
    raw,
    refuses,
    service_config,
    start_snakeway,
    start_upstream,
    status_of,
)


def unclosed_sockets(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning) and "socket" in str(w.message)]


async def test_a_handler_that_crashes_does_not_stop_the_server(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = snakeway.connection.Http1Connection
    crashes = 0

    class CrashesOnce(real):  # type: ignore[misc, valid-type]
        async def run(self) -> None:
            nonlocal crashes
            if crashes == 0:
                crashes += 1
                raise RuntimeError("a bug in a handler")
            await super().run()

    monkeypatch.setattr(snakeway.connection, "Http1Connection", CrashesOnce)
    port, _ = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    assert await raw(proxy, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == b""  # closed, unanswered
    assert (await get(proxy)).status == 200
    crashed = [r for r in caplog.records if r.getMessage() == "connection handler crashed"]
    assert len(crashed) == 1 and crashed[0].levelno == logging.ERROR and crashed[0].exc_info is not None


async def test_a_reload_that_drops_a_listener_closes_it(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    config = service_config([port])
    (ingress,) = config.ingresses
    second = closed_port()
    both = replace(config, ingresses=(ingress, replace(ingress, name="second", bind=Bind(LOOPBACK, second))))
    configs = iter([config])
    server, first = await start_snakeway(nursery, both, loader=lambda: next(configs))
    assert (await get(second)).status == 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert await server.reload()
        with trio.fail_after(5):
            while not await refuses(second):
                await trio.sleep(0.01)
        gc.collect()
    assert unclosed_sockets(caught) == []  # closed by the loop, not left to the garbage collector
    assert (await get(first)).status == 200


async def test_shutdown_closes_the_listeners(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    server = Server(service_config([port]))
    done = trio.Event()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        await server.serve(task_status=task_status)
        done.set()

    await nursery.start(serve)
    (address,) = server.addresses.values()
    assert (await get(address[1])).status == 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        server.shutdown()
        with trio.fail_after(5):
            await done.wait()
        gc.collect()
    assert unclosed_sockets(caught) == []
    assert await refuses(address[1])


async def test_a_burst_of_new_connections_is_all_served(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    answers: list[int] = []

    async def one(i: int) -> None:
        reply = await raw(proxy, b"GET /%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % i, timeout=20)
        answers.append(status_of(reply))

    async with trio.open_nursery() as clients:
        for i in range(300):
            clients.start_soon(one, i)
    assert answers == [200] * 300
