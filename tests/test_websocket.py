"""The WebSocket splice: bytes both ways, and the idle timeout (MockClock over memory streams)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from snakeway.proxy.websocket import splice

IDLE = 30.0


class Tunnel:
    """A client and an upstream joined by :func:`splice` over memory streams."""

    def __init__(self) -> None:
        self.client, self.a = trio.testing.memory_stream_pair()
        self.b, self.upstream = trio.testing.memory_stream_pair()
        self.idle: bool | None = None
        self.ended_at: float | None = None

    async def run(self, pending: bytes = b"") -> None:
        self.idle = await splice(self.a, pending, self.b, b"", idle_timeout=IDLE)
        self.ended_at = trio.current_time()


async def test_a_tunnel_where_nothing_moves_closes_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tunnel = Tunnel()
    await tunnel.run()
    assert tunnel.idle is True
    assert tunnel.ended_at == pytest.approx(IDLE)


@pytest.mark.parametrize("direction", ["client to upstream", "upstream to client", "alternating"])
async def test_bytes_in_either_direction_keep_a_tunnel_open(
    autojump_clock: trio.testing.MockClock, direction: str
) -> None:
    tunnel = Tunnel()
    received = bytearray()

    async def talk() -> None:
        for n in range(10):
            await trio.sleep(IDLE * 0.9)
            to_upstream = direction == "client to upstream" or (direction == "alternating" and n % 2 == 0)
            src, dst = (tunnel.client, tunnel.upstream) if to_upstream else (tunnel.upstream, tunnel.client)
            await src.send_all(b"ping")
            received.extend(await dst.receive_some(4))
        last_byte_at[0] = trio.current_time()

    last_byte_at = [0.0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(talk)
        await tunnel.run()
    assert received == b"ping" * 10  # every one went through, 9 idle periods in all
    assert tunnel.idle is True
    assert tunnel.ended_at == pytest.approx(last_byte_at[0] + IDLE)


async def test_a_tunnel_ends_with_either_side_and_is_then_not_idle(autojump_clock: trio.testing.MockClock) -> None:
    tunnel = Tunnel()

    async def hang_up() -> None:
        await trio.sleep(IDLE / 2)
        await tunnel.upstream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up)
        await tunnel.run(pending=b"early")
    assert tunnel.idle is False
    assert tunnel.ended_at == pytest.approx(IDLE / 2)


async def test_a_write_the_peer_never_takes_counts_as_idle(autojump_clock: trio.testing.MockClock) -> None:
    client, a = trio.testing.memory_stream_pair()
    b, upstream = trio.testing.lockstep_stream_pair()  # a write waits until the upstream reads
    await client.send_all(b"unread")
    started = trio.current_time()
    assert await splice(a, b"", b, b"", idle_timeout=IDLE) is True
    assert trio.current_time() - started == pytest.approx(IDLE)
