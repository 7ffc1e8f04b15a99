"""PrefixedStream: replays its prefix, then is its transport (trio's stream conformance suite included)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from snakeway.tls.prefixed import PrefixedStream


async def wrapped_pair() -> tuple[PrefixedStream, PrefixedStream]:
    left, right = trio.testing.memory_stream_pair()
    return PrefixedStream(left), PrefixedStream(right)


async def wrapped_lockstep_pair() -> tuple[PrefixedStream, PrefixedStream]:
    left, right = trio.testing.lockstep_stream_pair()
    return PrefixedStream(left), PrefixedStream(right)


async def replayed_pair() -> tuple[PrefixedStream, PrefixedStream]:
    """A pair whose receiving ends have read a greeting and been wrapped with it; the greeting is consumed here."""
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(b"hi")
    await right.send_all(b"yo")
    ends = []
    for stream, greeting in ((left, b"yo"), (right, b"hi")):
        prefix = await stream.receive_some()
        wrapped = PrefixedStream(stream, prefix)
        assert await wrapped.receive_some(1) + await wrapped.receive_some() == greeting
        ends.append(wrapped)
    return ends[0], ends[1]


async def test_conformance() -> None:
    await trio.testing.check_two_way_stream(wrapped_pair, wrapped_lockstep_pair)


async def test_conformance_after_replay() -> None:
    await trio.testing.check_two_way_stream(replayed_pair, wrapped_lockstep_pair)


async def test_replays_prefix_in_pieces_then_delegates() -> None:
    left, right = trio.testing.memory_stream_pair()
    stream = PrefixedStream(right, b"hello")
    await left.send_all(b" world")
    assert stream.prefix_pending == 5
    with trio.testing.assert_checkpoints():
        assert await stream.receive_some(2) == b"he"
    assert await stream.receive_some() == b"llo"
    assert stream.prefix_pending == 0
    assert await stream.receive_some() == b" world"
    await stream.send_all(b"back")
    assert await left.receive_some() == b"back"


async def test_closed_with_prefix_pending() -> None:
    _left, right = trio.testing.memory_stream_pair()
    stream = PrefixedStream(right, b"hello")
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"x")


async def test_concurrent_receives_with_prefix_pending() -> None:
    _left, right = trio.testing.memory_stream_pair()
    stream = PrefixedStream(right, b"hello")
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.receive_some, 1)
            nursery.start_soon(stream.receive_some, 1)


@pytest.mark.parametrize("bad", [0, -1])
async def test_rejects_bad_max_bytes(bad: int) -> None:
    _left, right = trio.testing.memory_stream_pair()
    stream = PrefixedStream(right, b"hello")
    with pytest.raises(ValueError, match="max_bytes"):
        await stream.receive_some(bad)
    with pytest.raises(TypeError):
        await stream.receive_some(1.5)  # type: ignore[arg-type]
    assert stream.prefix_pending == 5
