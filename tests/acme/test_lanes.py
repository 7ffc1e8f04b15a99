"""The order lane: capacity, urgency order, fairness, and no lost turns on cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from snakeway.acme.lanes import OrderLane


async def test_capacity_is_never_exceeded(autojump_clock: trio.testing.MockClock) -> None:
    lane = OrderLane(2)
    most = 0

    async def order() -> None:
        nonlocal most
        async with lane.turn(0):
            most = max(most, lane.running)
            await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        for _ in range(7):
            nursery.start_soon(order)
    assert most == 2
    assert trio.current_time() == 40  # 7 orders, 2 at a time, 10 s each
    assert lane.running == 0 and lane.queued == 0


async def test_urgent_waiters_go_first_then_first_come(autojump_clock: trio.testing.MockClock) -> None:
    lane = OrderLane(1)
    started: list[str] = []

    async def order(name: str, urgency: float, arrive: float) -> None:
        await trio.sleep(arrive)
        async with lane.turn(urgency):
            started.append(name)
            await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(order, "holder", 5, 0)
        nursery.start_soon(order, "early-not-urgent", 9, 1)
        nursery.start_soon(order, "late-but-urgent", 0, 2)
        nursery.start_soon(order, "same-urgency-later", 9, 3)
    assert started == ["holder", "late-but-urgent", "early-not-urgent", "same-urgency-later"]


async def test_a_cancelled_waiter_leaves_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    lane = OrderLane(1)
    order: list[str] = []

    async def hold() -> None:
        async with lane.turn(0):
            await trio.sleep(10)
            order.append("holder")

    async def wait(name: str) -> None:
        async with lane.turn(1):
            order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.sleep(1)
        with trio.move_on_after(1):
            await wait("cancelled")
        nursery.start_soon(wait, "next")
    assert order == ["holder", "next"]
    assert lane.running == 0 and lane.queued == 0


async def test_a_waiter_cancelled_as_its_turn_arrives_passes_it_on(autojump_clock: trio.testing.MockClock) -> None:
    lane = OrderLane(1)
    got: list[str] = []
    scope = trio.CancelScope()

    async def hold() -> None:
        async with lane.turn(0):
            await trio.sleep(5)
            # Cancelled while queued, and handed the turn before it runs again: it must pass the turn on.
            scope.cancel()

    async def unlucky() -> None:
        with scope:
            async with lane.turn(1):
                got.append("unlucky")

    async def patient() -> None:
        with trio.fail_after(100):  # a lost turn would leave it waiting for ever
            async with lane.turn(2):
                got.append("patient")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.sleep(1)
        nursery.start_soon(unlucky)
        nursery.start_soon(patient)
    assert got == ["patient"]
    assert lane.running == 0 and lane.queued == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        OrderLane(0)
