"""The accept loop (snakeway/accept.py): what it logs when descriptors run out, and how many
connections it admits per wake-up. Fake acceptors on trio's MockClock; no sockets."""

from __future__ import annotations

import errno
import logging
import socket
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from snakeway.accept import ACCEPT_BATCH, LOG_INTERVAL_SECONDS, CapacityLog, SocketAcceptor, serve_acceptor


class FakeConn:
    """Stands for an accepted socket."""

    def __init__(self, number: int) -> None:
        self.number = number


class FakeAcceptor:
    """A listener whose ``accept()`` fails with ``errors`` until trio time ``until``, then hands
    out ``queued`` connections, then has nothing."""

    def __init__(self, *, queued: int = 0, code: int = errno.EMFILE, until: float = 0.0) -> None:
        self.queued = queued
        self.code = code
        self.until = until
        self.handed = 0
        self.waits = 0
        self.closed = False

    async def wait(self) -> None:
        self.waits += 1
        await trio.lowlevel.checkpoint()
        if self.handed >= self.queued and trio.current_time() >= self.until:
            await trio.sleep_forever()

    def accept(self) -> tuple[Any, Any] | None:
        if trio.current_time() < self.until:
            raise OSError(self.code, "fake")
        if self.handed >= self.queued:
            return None
        self.handed += 1
        return FakeConn(self.handed), ("127.0.0.1", 40000 + self.handed)

    def close(self) -> None:
        self.closed = True


class FakeNursery:
    def start_soon(self, *args: Any) -> None:
        raise AssertionError("nothing was accepted")


def capacity_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "snakeway.accept"]


async def test_out_of_descriptors_logs_one_line_per_interval_without_traceback(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # accept() fails with EMFILE for 35 s; the loop retries every 0.1 s (about 350 failures).
    acceptor = FakeAcceptor(queued=1, until=35.0)
    served: list[tuple[float, Any]] = []

    async def handler(conn: Any, addr: Any) -> None:
        served.append((trio.current_time(), addr))

    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as handlers:
        with trio.move_on_after(40):
            await serve_acceptor(acceptor, handler, handlers)
    records = capacity_records(caplog)
    failures = [r for r in records if "EMFILE" in r.getMessage()]
    assert len(failures) == 4  # at 0, 10, 20 and 30 s
    assert all(r.exc_info is None and r.levelno == logging.ERROR for r in failures)
    assert "Too many open files" in failures[0].getMessage()
    # The later lines count what was not logged: about 100 attempts per 10 s.
    assert "failed attempts since the last message" in failures[1].getMessage()
    counted = int(failures[1].getMessage().split("; ")[-1].split()[0])
    assert 95 <= counted <= 105
    # Accepting resumes within one pause of the failures ending, and says so once, with the
    # failures since the last line.
    assert len(served) == 1 and 35.0 <= served[0][0] <= 35.2
    again = [r.getMessage() for r in records if "accepting new connections again" in r.getMessage()]
    assert len(again) == 1
    assert 45 <= int(again[0].split("after ")[1].split()[0]) <= 55
    assert len(records) == 5 and all(r.exc_info is None for r in records)


@pytest.mark.parametrize("code", [errno.ENFILE, errno.ENOMEM, errno.ENOBUFS])
async def test_every_capacity_error_pauses_instead_of_crashing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    acceptor = FakeAcceptor(queued=3, code=code, until=1.0)
    served: list[Any] = []

    async def handler(conn: Any, addr: Any) -> None:
        served.append(conn.number)

    async with trio.open_nursery() as handlers:
        with trio.move_on_after(5):
            await serve_acceptor(acceptor, handler, handlers)
    assert sorted(served) == [1, 2, 3]
    lines = [r.getMessage() for r in capacity_records(caplog)]
    assert len(lines) == 2 and errno.errorcode[code] in lines[0]


async def test_other_accept_errors_end_the_loop(autojump_clock: trio.testing.MockClock) -> None:
    acceptor = FakeAcceptor(code=errno.EINVAL, until=1.0)

    async def handler(conn: Any, addr: Any) -> None:
        raise AssertionError("nothing was accepted")

    with pytest.raises(OSError, match="fake") as caught:
        await serve_acceptor(acceptor, handler, FakeNursery())  # type: ignore[arg-type]
    assert caught.value.errno == errno.EINVAL


async def test_a_burst_is_admitted_a_batch_per_wake_up(autojump_clock: trio.testing.MockClock) -> None:
    queued = 3 * ACCEPT_BATCH + 5
    acceptor = FakeAcceptor(queued=queued)
    started: list[int] = []
    seen: list[int] = []  # connections handed out, at each wake-up (each is a schedule point)
    wait = acceptor.wait

    async def counting_wait() -> None:
        seen.append(acceptor.handed)
        await wait()

    acceptor.wait = counting_wait  # type: ignore[method-assign]

    async def stopper() -> None:
        while len(started) < queued:
            await trio.lowlevel.checkpoint()
        await trio.sleep(1)  # the accept loop goes back to waiting meanwhile
        nursery.cancel_scope.cancel()

    async def handler(conn: Any, addr: Any) -> None:
        started.append(conn.number)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stopper)
        await serve_acceptor(acceptor, handler, nursery)
    assert sorted(started) == list(range(1, queued + 1))
    # A wake-up takes a batch of connections (not one), and no more than a batch.
    assert seen == [0, ACCEPT_BATCH, 2 * ACCEPT_BATCH, 3 * ACCEPT_BATCH, queued]


async def test_socket_acceptor_takes_queued_connections_without_waiting() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    acceptor = SocketAcceptor(listener)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        await acceptor.wait()
        got = [acceptor.accept() for _ in range(4)]
        assert [g is None for g in got] == [False, False, False, True]
        for accepted in got[:3]:
            assert accepted is not None
            conn, addr = accepted
            assert addr[0] == "127.0.0.1"
            conn.close()
    finally:
        for client in clients:
            client.close()
        acceptor.close()
    assert listener.fileno() == -1


# -- CapacityLog, pure -------------------------------------------------------------------------


def test_capacity_log_first_failure_speaks_then_stays_quiet() -> None:
    log = CapacityLog(interval=10, pause=0.1)
    first = log.failed(0.0, errno.EMFILE)
    assert first is not None and first.startswith("cannot accept new connections: EMFILE (Too many open files)")
    assert "retrying every 0.1 s" in first and "since the last message" not in first
    assert log.failed(5.0, errno.EMFILE) is None
    assert log.failed(9.9, errno.EMFILE) is None
    assert log.failed(10.0, errno.EMFILE) == (
        "cannot accept new connections: EMFILE (Too many open files); they wait in the kernel's queue, "
        "retrying every 0.1 s; 3 failed attempts since the last message"
    )


def test_capacity_log_says_once_that_accepting_works_again() -> None:
    log = CapacityLog(interval=10)
    assert log.failed(0.0, errno.EMFILE) is not None
    assert log.failed(1.0, errno.EMFILE) is None
    assert log.recovered() == "accepting new connections again after 1 more failed attempts"
    assert not log.failing
    # Flapping within the interval: quiet, and the count waits for the next line about failing.
    assert log.failed(2.0, errno.EMFILE) is None
    assert log.recovered() is None
    assert log.failed(3.0, errno.EMFILE) is None
    line = log.failed(10.0, errno.EMFILE)
    assert line is not None and line.endswith("; 3 failed attempts since the last message")
    assert log.recovered() == "accepting new connections again"


@given(st.lists(st.tuples(st.floats(0, 0.5), st.booleans()), max_size=400))
def test_capacity_log_never_exceeds_one_line_per_interval_and_loses_no_count(
    steps: list[tuple[float, bool]],
) -> None:
    interval = LOG_INTERVAL_SECONDS
    log = CapacityLog(interval=interval)
    now = 0.0
    lines: list[tuple[float, str]] = []
    failures = 0
    for gap, fails in steps:
        now += gap
        line = log.failed(now, errno.EMFILE) if fails else (log.recovered() if log.failing else None)
        failures += fails
        if line is not None:
            lines.append((now, line))
    # Lines about failing are an interval apart, with at most one about recovering between two.
    failing = [(t, line) for t, line in lines if line.startswith("cannot accept")]
    for (earlier, _), (later, _) in pairwise(failing):
        assert later - earlier >= interval
    kinds = [line.startswith("cannot accept") for _, line in lines]
    assert all(a != b for a, b in pairwise(kinds))
    # Every failure is counted in exactly one line, or still waiting for the next one.
    counted = 0
    for _, line in lines:
        if "failed attempts since" in line:
            counted += int(line.rsplit("; ", 1)[1].split()[0])
        elif "after " in line:
            counted += int(line.split("after ")[1].split()[0])
        elif line.startswith("cannot accept"):
            counted += 1
    assert counted + log._unreported == failures
