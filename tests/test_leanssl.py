"""trio.SSLStream with quickened inner locks: fewer trips through the scheduler, the same behaviour."""

from __future__ import annotations

import gc
import ssl
import weakref

import pytest
import trio
import trio.testing
import trustme

from snakeway.tcp import TcpStream
from snakeway.tls.leanssl import QuickLock, forget_handshake, quicken
from tests.test_tcp import _pair, _Steps


async def _tls_pair(*, quick: bool) -> tuple[trio.SSLStream[TcpStream], trio.SSLStream[TcpStream]]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("a.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    raw_client, raw_server = await _pair()
    client = trio.SSLStream(raw_client, client_ctx, server_hostname="a.test")
    server = trio.SSLStream(raw_server, server_ctx, server_side=True, https_compatible=True)
    if quick:
        quicken(server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        await server.do_handshake()
    return client, server


async def _steps_of_an_exchange(quick: bool) -> int:
    """Trips through the scheduler of the server's side of one small request and response."""
    client, server = await _tls_pair(quick=quick)
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        for _ in range(3):  # the same rhythm as a kept-alive HTTPS connection
            await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
            steps.steps = 0
            assert await server.receive_some() == b"GET / HTTP/1.1\r\n\r\n"
            await server.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            counted = steps.steps
            assert await client.receive_some() == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    finally:
        trio.lowlevel.remove_instrument(steps)
        await server.aclose()
        await client.aclose()
    return counted


async def test_a_quickened_stream_serves_a_request_in_fewer_trips_through_the_scheduler() -> None:
    assert await _steps_of_an_exchange(quick=True) < await _steps_of_an_exchange(quick=False)


async def test_a_free_quick_lock_is_taken_without_a_checkpoint_and_a_held_one_waits_its_turn() -> None:
    lock = QuickLock()
    with trio.testing.assert_no_checkpoints():
        async with lock:
            pass
    order = []

    async def take(name: str) -> None:
        async with lock:
            order.append(name)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        async with lock:
            nursery.start_soon(take, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(take, "second")
            await trio.testing.wait_all_tasks_blocked()
            assert order == []  # both wait while this task holds it
    assert order == ["first", "second"]


async def test_reads_and_writes_from_two_tasks_still_take_turns() -> None:
    # A WebSocket tunnel reads a TLS client in one task and writes to it in another.
    client, server = await _tls_pair(quick=True)
    payload = b"x" * (4 * 1024 * 1024)
    got = bytearray()

    async def echo_back() -> None:
        while len(got) < len(payload):
            got.extend(await client.receive_some(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_back)
        nursery.start_soon(server.send_all, payload)
        await client.send_all(b"ping")
        assert await server.receive_some() == b"ping"
    assert bytes(got) == payload
    await server.aclose()
    await client.aclose()


def test_a_stream_without_the_expected_locks_is_left_alone() -> None:
    class Other:
        _inner_send_lock = "not a lock"
        _inner_recv_lock = trio.Lock()

    other = Other()
    quicken(other)  # type: ignore[arg-type]
    assert other._inner_send_lock == "not a lock"
    assert isinstance(other._inner_recv_lock, trio.Lock)


@pytest.mark.parametrize("quick", [True, False])
async def test_a_cancelled_read_leaves_the_lock_free(quick: bool) -> None:
    client, server = await _tls_pair(quick=quick)
    with trio.move_on_after(0.05):
        await server.receive_some()  # nothing comes
    await client.send_all(b"later")
    assert await server.receive_some() == b"later"
    await server.aclose()
    await client.aclose()


async def test_a_closed_connection_is_freed_without_the_cyclic_garbage_collector() -> None:
    gc.collect()
    gc.disable()
    try:
        client, server = await _tls_pair(quick=True)
        forget_handshake(server)
        await client.send_all(b"hello")
        assert await server.receive_some() == b"hello"
        freed = weakref.ref(server)
        await server.aclose()
        await client.aclose()
        del server
        assert freed() is None  # by reference counting alone
    finally:
        gc.enable()


async def test_forgetting_waits_for_the_handshake_to_be_done() -> None:
    client, server = await _tls_pair(quick=True)
    fresh = trio.SSLStream(server.transport_stream, ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), server_side=True)
    forget_handshake(fresh)  # not done: it still needs its handshake
    assert fresh._handshook._afn is not None
    await server.aclose()
    await client.aclose()


async def test_a_released_lock_goes_to_the_first_waiter_before_anyone_else() -> None:
    lock = QuickLock()
    order = []

    async def take(name: str) -> None:
        async with lock:
            order.append(name)

    async with trio.open_nursery() as nursery:
        async with lock:
            nursery.start_soon(take, "waiter")
            await trio.testing.wait_all_tasks_blocked()
        # Released: handed to the waiter, which has not run yet; a newcomer waits its turn.
        nursery.start_soon(take, "newcomer")
    assert order == ["waiter", "newcomer"]


async def test_a_waiter_that_gives_up_leaves_the_lock_free_for_the_next() -> None:
    lock = QuickLock()
    scope = trio.CancelScope()

    async def wait_and_give_up() -> None:
        with scope:
            async with lock:
                raise AssertionError("got the lock it gave up on")

    async with trio.open_nursery() as nursery:
        async with lock:
            nursery.start_soon(wait_and_give_up)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
    with trio.testing.assert_no_checkpoints():
        async with lock:  # free again
            pass
