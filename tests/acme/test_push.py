"""New certificates pushed over Redis pub/sub: two "nodes" in one test process, over a real redis-server, in real time.

Each node is what a snakeway process runs over a shared Redis store: its own :class:`RedisStore`, its own
:class:`RedisCoordinator` (its own connections, its own subscription) and a :class:`StoreWatch` that puts what
it loads into its cert map (here a dict). The full scan is set far beyond the test, and the generation is
polled every 5 s: a certificate that reaches the other node within a second came by push.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import trio
import trustme

from snakeway.acme import rediscoord
from snakeway.acme.managed import ManagedCert
from snakeway.acme.rediscoord import RedisCoordinator
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.store import CertBundle
from snakeway.acme.watch import StoreWatch
from tests.acme.test_store import FixedClock, make_bundle

if TYPE_CHECKING:
    from tests.redisserver import RedisServer

NAME = "push.example"
CERT = ManagedCert("push", (NAME,))
FAR = 3600.0  # the full scan: never within a test
PROMISED = 1.0  # seconds within which every node serves a certificate another node saved


@dataclass
class Node:
    store: RedisStore
    coordinator: RedisCoordinator
    served: dict[str, CertBundle] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)

    async def publish(self, cert: ManagedCert, bundle: CertBundle) -> None:
        await trio.lowlevel.checkpoint()
        self.served[cert.cert_id] = bundle
        self.changed.set()

    async def serving(self, serial: str) -> None:
        """Return once this node's cert map holds ``serial``."""
        while (bundle := self.served.get(CERT.cert_id)) is None or bundle.serial != serial:
            await self.changed.wait()
            self.changed = trio.Event()


async def start_node(nursery: trio.Nursery, server: RedisServer, *, poll: float | None = None) -> Node:
    """A node watching ``server``; ``poll``: how often it looks at the generation (default: the coordinator's)."""
    node = Node(RedisStore(server.url, clock=FixedClock()), RedisCoordinator(server.url))
    if poll is not None:
        node.coordinator.poll_seconds = poll
    watch = StoreWatch(
        store=node.store, coordinator=node.coordinator, clock=FixedClock(), certs=lambda: {CERT.cert_id: CERT},
        ours=lambda _: (None, None), publish=node.publish,
    )
    nursery.start_soon(watch.run, FAR)
    return node


async def subscribers(server: RedisServer, count: int) -> None:
    """Wait until ``count`` connections are subscribed to the ``saved`` channel (one per node)."""
    channel = RedisCoordinator(server.url).keys.saved
    expected = f"*2\r\n${len(channel)}\r\n{channel}\r\n:{count}\r\n".encode()
    with trio.fail_after(10):
        while await trio.to_thread.run_sync(server.raw, "PUBSUB", "NUMSUB", channel) != expected:
            await trio.sleep(0.02)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_a_save_on_one_node_is_served_by_the_other_within_a_second(
    nursery: trio.Nursery, redis_server: RedisServer, ca: trustme.CA
) -> None:
    a, b = await start_node(nursery, redis_server), await start_node(nursery, redis_server)
    await subscribers(redis_server, 2)
    assert a.coordinator.poll_seconds > PROMISED  # so only the push can keep the promise
    for _ in range(3):  # every save, not only the first
        bundle = make_bundle(ca, NAME)
        await a.store.save(bundle)
        with trio.fail_after(PROMISED):
            await b.serving(bundle.serial)


async def test_a_dropped_subscription_comes_back_and_later_saves_still_arrive(
    nursery: trio.Nursery, redis_server: RedisServer, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=rediscoord.__name__)
    a, b = await start_node(nursery, redis_server), await start_node(nursery, redis_server)
    await subscribers(redis_server, 2)
    for _ in range(2):
        assert redis_server.raw("CLIENT", "KILL", "TYPE", "pubsub") == b":2\r\n"
        await subscribers(redis_server, 2)  # both subscribed again on their own
        bundle = make_bundle(ca, NAME)
        await a.store.save(bundle)
        with trio.fail_after(PROMISED):
            await b.serving(bundle.serial)
    messages = [r.getMessage() for r in caplog.records if r.name == rediscoord.__name__]
    lost = (f"lost the push of new certificates from Redis at {redis_server.url} "
            "(Connection lost while waiting for push messages): subscribing again, and looking for them every 5 s "
            "meanwhile")
    back = f"new certificates are pushed from Redis at {redis_server.url} again"
    # Two nodes, two drops: one line each time a subscription is lost, one when it is back.
    assert sorted(messages) == sorted([lost, back] * 4)


async def test_a_save_missed_while_unsubscribed_is_picked_up_when_the_subscription_is_back(
    nursery: trio.Nursery, redis_server: RedisServer, ca: trustme.CA
) -> None:
    """Redis restarted: whatever was announced while the node could not listen is looked for when it can again."""
    b = await start_node(nursery, redis_server, poll=FAR)  # neither the generation nor a full scan finds it
    await subscribers(redis_server, 1)
    await redis_server.stop()
    await trio.sleep(1)  # the node tries to subscribe again after 0.1, 0.2, 0.4, 0.8 s...
    await redis_server.start()  # empty, on the same port
    await subscribers(redis_server, 0)
    bundle = make_bundle(ca, NAME)
    await RedisStore(redis_server.url, clock=FixedClock()).save(bundle)  # announced to nobody
    with trio.fail_after(rediscoord.PUSH_RECONNECT_CAP + PROMISED):
        await b.serving(bundle.serial)
