"""The WebSocket counts shared by the workers of one supervisor: real forked processes."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakeway.config.model import Route
from snakeway.proxy.forward import RequestFailed
from snakeway.proxy.websocket import WebSocketSlots
from snakeway.proxy.wscount import SharedWebSocketCounts

CHAT = ("/chat", "*")
FEED = ("/feed", "a.test")


@pytest.fixture
def counts(tmp_path: Path) -> Iterator[SharedWebSocketCounts]:
    """A table for two workers."""
    table = SharedWebSocketCounts(2, tmp_path / "lock")
    yield table
    table.close()


def in_child(work: Callable[[], object]) -> int:
    """Fork; the child runs ``work`` and exits 0 (1 if it raised); returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def child_holding(counts: SharedWebSocketCounts, worker: int, key: tuple[str, ...], taken: int) -> tuple[int, int]:
    """A child in column ``worker`` that takes ``taken`` slots (limit 10) and waits to be killed: (pid, pipe)."""
    ready, done = os.pipe()

    def hold() -> None:
        counts.join(worker)
        for _ in range(taken):
            assert counts.acquire(key, 10) is not None
        os.write(done, b"x")
        signal.pause()

    pid = in_child(hold)
    os.close(done)
    assert os.read(ready, 1) == b"x"
    return pid, ready


def test_the_limit_holds_across_processes(counts: SharedWebSocketCounts) -> None:
    counts.join(0)
    first = counts.acquire(CHAT, 3)
    assert first is not None

    def second_worker() -> None:
        counts.join(1)
        assert counts.acquire(CHAT, 3) is not None
        assert counts.acquire(CHAT, 3) is not None
        assert counts.acquire(CHAT, 3) is None  # three open: one here, two in the other process
        assert counts.acquire(FEED, 3) is not None  # another route has its own count

    assert exit_code(in_child(second_worker)) == 0
    assert counts.total(CHAT) == 3
    assert counts.acquire(CHAT, 3) is None
    counts.release(first)
    assert counts.total(CHAT) == 2
    assert counts.acquire(CHAT, 3) is not None
    assert counts.acquire(CHAT, 4) is not None  # a higher limit (after a reload) counts on from there
    assert counts.total(CHAT) == 4


def test_a_dead_workers_slots_are_given_back(counts: SharedWebSocketCounts) -> None:
    pid, pipe = child_holding(counts, 1, CHAT, 2)
    os.close(pipe)
    assert counts.total(CHAT) == 2
    os.kill(pid, signal.SIGKILL)
    assert exit_code(pid) == -signal.SIGKILL
    counts.give_back(1)
    assert counts.total(CHAT) == 0
    assert counts.acquire(CHAT, 1) is not None


def test_a_worker_killed_inside_the_lock_does_not_keep_it(counts: SharedWebSocketCounts, tmp_path: Path) -> None:
    ready, done = os.pipe()

    def die_locked() -> None:
        with counts._locked():
            os.write(done, b"x")
            signal.pause()

    pid = in_child(die_locked)
    assert os.read(ready, 1) == b"x"
    probe = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        with pytest.raises(OSError):  # held by the child
            fcntl.lockf(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.kill(pid, signal.SIGKILL)
        exit_code(pid)
        fcntl.lockf(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel released it
        fcntl.lockf(probe, fcntl.LOCK_UN)
    finally:
        os.close(probe)
        os.close(ready)
        os.close(done)
    assert counts.acquire(CHAT, 1) is not None


def test_an_entry_with_nothing_open_serves_another_route(tmp_path: Path) -> None:
    counts = SharedWebSocketCounts(1, tmp_path / "lock", entries=2)
    try:
        a = counts.acquire(("/a",), 5)
        b = counts.acquire(("/b",), 5)
        assert a is not None and b is not None
        assert counts.acquire(("/c",), 5) is None  # full of open WebSockets
        counts.release(a)
        assert counts.acquire(("/c",), 5) == a
        assert counts.total(("/a",)) == 0
        assert counts.total(("/b",)) == 1
    finally:
        counts.close()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["/a", "/b", "/c", "/d", "/e"]), st.booleans()), max_size=40))
def test_counts_match_a_plain_dictionary(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, bool]]
) -> None:
    counts = SharedWebSocketCounts(1, tmp_path_factory.mktemp("c") / "lock", entries=3)
    try:
        check_against_a_dictionary(counts, steps)
    finally:
        counts.close()


def check_against_a_dictionary(counts: SharedWebSocketCounts, steps: list[tuple[str, bool]]) -> None:
    held: dict[str, list[int]] = {}
    for path, opening in steps:
        if opening:
            index = counts.acquire((path,), 2)
            open_routes = sum(1 for v in held.values() if v)
            if len(held.get(path, [])) >= 2 or (not held.get(path) and open_routes >= 3):
                assert index is None
            else:
                assert index is not None
                held.setdefault(path, []).append(index)
        elif held.get(path):
            counts.release(held[path].pop())
        for name in ("/a", "/b", "/c", "/d", "/e"):
            assert counts.total((name,)) == len(held.get(name, []))


def test_slots_answer_503_from_the_shared_count(counts: SharedWebSocketCounts) -> None:
    route = Route(hosts=("*",), path="/chat", enable_websocket=True, ws_max_connections=2)
    pid, pipe = child_holding(counts, 1, ("/chat", "*"), 1)
    try:
        slots = WebSocketSlots(counts)
        with slots.take(route):  # one here, one in the other process: the route is full
            with pytest.raises(RequestFailed) as info, slots.take(route):
                pass
            assert info.value.status == 503
        assert counts.total(("/chat", "*")) == 1
        with slots.take(route):
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        exit_code(pid)
        os.close(pipe)


def test_a_route_without_a_limit_needs_no_entry_in_the_table(tmp_path: Path) -> None:
    counts = SharedWebSocketCounts(1, tmp_path / "lock", entries=1)
    try:
        limited = Route(hosts=("*",), path="/chat", enable_websocket=True, ws_max_connections=5)
        unlimited = Route(hosts=("*",), path="/feed", enable_websocket=True)
        slots = WebSocketSlots(counts)
        with slots.take(limited):  # holds the table's only entry
            with slots.take(unlimited), slots.take(unlimited):
                assert counts.total(("/feed", "*")) == 0
            assert counts.total(("/chat", "*")) == 1
    finally:
        counts.close()


def test_without_shared_counts_the_limit_is_the_process_own() -> None:
    route = Route(hosts=("*",), path="/chat", enable_websocket=True, ws_max_connections=1)
    slots = WebSocketSlots()
    for _ in range(2):  # a slot given back can be taken again
        with slots.take(route):
            with pytest.raises(RequestFailed) as info, slots.take(route):
                pass
            assert info.value.status == 503
            with slots.take(Route(hosts=("*",), path="/feed", enable_websocket=True)):
                pass
