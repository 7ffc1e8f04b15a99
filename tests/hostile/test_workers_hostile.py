"""Workers that die, SIGHUP bursts, and limits meant for the whole server, against a real snakeway."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import threading
import time
from functools import partial
from pathlib import Path
from typing import BinaryIO

import pytest
import trio
import trio_websocket
import trustme
from cryptography import x509

from snakeway.config.model import CertFiles
from snakeway.restarts import QUICK_EXIT_SECONDS
from snakeway.tls.internal_ca import LocalCA
from snakeway.tls.leaves import leaf_paths
from tests.hostile.harness import (
    LOOPBACK,
    exchange,
    proxy_to,
    running,
    start_logging_upstream,
    statuses,
    until_logged,
    write_config,
)
from tests.proc import Running, snakeway
from tests.tlshelpers import client_context, tls_request, write_leaf

_WORKER = re.compile(rb"\[(\d+)\] snakeway: listening on")


def workers_started(proc: Running) -> list[int]:
    """Every worker that has opened its listener, in order of start."""
    return [int(pid) for pid in _WORKER.findall(bytes(proc.log))]


def alive(pid: int) -> bool:
    try:
        return b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()
    except FileNotFoundError:
        return False


async def kill_a_worker_and_wait_for_its_replacement(proc: Running) -> None:
    before = workers_started(proc)
    os.kill(before[-1], signal.SIGKILL)
    await until_logged(proc, b"starting a new one", proc.log.count(b"starting a new one") + 1)
    await until_logged(proc, b"listening on", len(before) + 1)


async def statuses_of_new_connections(listen: int, target: str, count: int) -> list[int]:
    request = f"GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n".encode()
    return [status for _ in range(count) for status in statuses(await exchange(listen, request))]


async def test_a_restarted_worker_serves_the_last_reload_that_succeeded(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    config, listen = write_config(tmp_path, proxy_to(upstream, "/old"))
    async with running(config) as proc:
        assert await statuses_of_new_connections(listen, "/new", 4) == [404] * 4
        write_config(tmp_path, proxy_to(upstream, "/"), port=listen)  # adds /new
        proc.process.send_signal(signal.SIGHUP)
        await until_logged(proc, b"configuration reloaded", 2)
        await kill_a_worker_and_wait_for_its_replacement(proc)
        assert await statuses_of_new_connections(listen, "/new", 40) == [200] * 40

        # Rejected reloads (the port is taken; then a syntax error) are not what the next worker starts with.
        with socket.socket() as taken:
            taken.bind((LOOPBACK, 0))
            taken.listen()
            write_config(tmp_path, proxy_to(upstream, "/old"), port=taken.getsockname()[1])
            proc.process.send_signal(signal.SIGHUP)
            await until_logged(proc, b"reload failed", 2)
            config.write_text(config.read_text() + "\n}")
            proc.process.send_signal(signal.SIGHUP)
            await until_logged(proc, b"reload failed", 4)
            await kill_a_worker_and_wait_for_its_replacement(proc)
        assert b"Address already in use" in proc.log
        assert await statuses_of_new_connections(listen, "/new", 40) == [200] * 40


def with_certificate(files: CertFiles) -> str:
    """``bind`` keys (for the harness's ``write_config``) that make the listener a TLS one with ``files``."""
    return f', tls = {{ mode = "manual", cert = "{files.cert}", key = "{files.key}" }}'


async def test_a_restarted_worker_serves_the_certificate_of_the_last_reload(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    ca = trustme.CA()
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = write_leaf(ca, tmp_path / "old", "a.test"), write_leaf(ca, tmp_path / "new", "a.test")
    serial = {files: x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number for files in (old, new)}
    config, listen = write_config(tmp_path, proxy_to(upstream), bind=with_certificate(old))
    client = client_context(ca.cert_pem.bytes())
    async with running(config) as proc:
        assert (await tls_request(listen, client, "a.test")).serial == serial[old]
        # another file: the old one stays where it was
        write_config(tmp_path, proxy_to(upstream), port=listen, bind=with_certificate(new))
        proc.process.send_signal(signal.SIGHUP)
        await until_logged(proc, b"configuration reloaded", 2)
        await kill_a_worker_and_wait_for_its_replacement(proc)
        served = [(await tls_request(listen, client, "a.test")).serial for _ in range(20)]
        assert served == [serial[new]] * 20


def sighup_every_millisecond(pid: int, stop: threading.Event) -> int:
    sent = 0
    while not stop.is_set():
        os.kill(pid, signal.SIGHUP)
        sent += 1
        time.sleep(0.001)
    return sent


async def test_a_sighup_burst_while_workers_restart_stops_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    config, listen = write_config(tmp_path, proxy_to(upstream))
    async with running(config) as proc, trio.open_nursery() as reading:

        async def read_log() -> None:  # a full pipe would block every process that logs
            while True:
                await proc.read_more()

        reading.start_soon(read_log)
        stop = threading.Event()
        async with trio.open_nursery() as burst:
            burst.start_soon(partial(trio.to_thread.run_sync, sighup_every_millisecond, proc.process.pid, stop))
            try:
                for _ in range(6):
                    await trio.sleep(0.4)
                    with trio.fail_after(15):  # both may be waiting out their back-off
                        while not (victims := [pid for pid in workers_started(proc) if alive(pid)]):
                            await trio.sleep(0.05)
                    os.kill(victims[-1], signal.SIGKILL)
                await trio.sleep(0.5)
            finally:
                stop.set()
        assert proc.process.returncode is None
        with trio.fail_after(15):
            while len([pid for pid in workers_started(proc) if alive(pid)]) < 2:
                await trio.sleep(0.1)
        assert await statuses_of_new_connections(listen, "/", 20) == [200] * 20
        reading.cancel_scope.cancel()
    assert b"keeps exiting" not in proc.log
    assert b"killed by SIGHUP" not in proc.log  # every worker handled its SIGHUPs as reloads
    assert proc.log.count(b"killed by SIGKILL") == 6


async def test_a_worker_killed_at_every_start_is_restarted_ever_more_slowly(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    config, listen = write_config(tmp_path, proxy_to(upstream))
    async with running(config) as proc:
        waited = []
        for _ in range(3):  # as the OOM killer would: each new worker killed as soon as it is up
            started = workers_started(proc)
            killed_at = trio.current_time()
            os.kill(started[-1], signal.SIGKILL)
            await until_logged(proc, b"listening on", len(started) + 1)
            waited.append(trio.current_time() - killed_at)
        assert re.findall(rb"killed by SIGKILL; starting a new one in ([\d.]+) s", proc.log) == [b"0.5", b"1", b"2"]
        assert [w >= least for w, least in zip(waited, (0.5, 1, 2), strict=True)] == [True] * 3, waited
        assert await statuses_of_new_connections(listen, "/", 10) == [200] * 10


async def accept_websocket(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        pass


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


async def open_websockets(listen: int, attempts: int) -> tuple[list[trio.SocketStream], list[int]]:
    """Try ``attempts`` upgrades, keeping the accepted ones open: (accepted, statuses of the refused)."""
    accepted, refused = [], []
    for _ in range(attempts):
        stream = await trio.open_tcp_stream(LOOPBACK, listen)
        await stream.send_all(UPGRADE)
        head = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(65536)
                assert chunk, head
                head += chunk
        (status,) = statuses(head.split(b"\r\n", 1)[0] + b"\r\n")
        if status == 101:
            accepted.append(stream)
        else:
            refused.append(status)
            await stream.aclose()
    return accepted, refused


async def still_open(stream: trio.SocketStream) -> bool:
    """The proxy keeps the tunnel: a ping frame (masked, empty) comes back as a pong."""
    try:
        await stream.send_all(b"\x89\x80" + bytes(4))
        with trio.fail_after(2):
            return (await stream.receive_some(2))[:1] == b"\x8a"
    except trio.BrokenResourceError:
        return False


def local_port(stream: trio.SocketStream) -> int:
    return stream.socket.getsockname()[1]


def serving_worker(listen: int, client_port: int, workers: list[int]) -> int:
    """The worker holding the proxy's end of the connection from ``client_port``."""
    wanted = f":{listen:04X} " + "0100007F:" + f"{client_port:04X} "
    inode = next(line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines() if wanted in line)
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                pass
    raise AssertionError(f"no worker holds the connection from port {client_port}")


async def test_ws_max_connections_is_a_limit_for_the_server(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream = await nursery.start(
        partial(trio_websocket.serve_websocket, accept_websocket, LOOPBACK, 0, ssl_context=None)
    )
    services = proxy_to(upstream.port, "/ws", ", enable_websocket = true, ws_max_connections = 3")
    config, listen = write_config(tmp_path, services)
    async with running(config) as proc:
        opened, refused = await open_websockets(listen, 10)
        assert (len(opened), refused) == (3, [503] * 7)
        # Closing one frees its slot (once the proxy has seen the close).
        await opened.pop().aclose()
        with trio.fail_after(5):
            while not (more := await open_websockets(listen, 1))[0]:
                await trio.sleep(0.05)
        opened += more[0]
        assert await open_websockets(listen, 4) == ([], [503] * 4)
        # A worker that dies gives its slots back.
        workers = [pid for pid in workers_started(proc) if alive(pid)]
        held_by = [serving_worker(listen, local_port(ws), workers) for ws in opened]
        victim = held_by[0]
        os.kill(victim, signal.SIGKILL)
        await until_logged(proc, b"starting a new one")
        survivors = [ws for ws in opened if await still_open(ws)]
        assert len(survivors) == sum(1 for pid in held_by if pid != victim)
        await until_logged(proc, b"listening on", 3)
        reopened, refused = await open_websockets(listen, 6)
        assert (len(reopened), refused) == (3 - len(survivors), [503] * (3 + len(survivors)))
        for ws in opened + reopened:
            await ws.aclose()


async def test_a_worker_started_during_a_reload_serves_the_reloaded_configuration(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    config, listen = write_config(tmp_path, proxy_to(upstream, "/old"))
    async with running(config) as proc:
        write_config(tmp_path, proxy_to(upstream, "/"), port=listen)
        victim = workers_started(proc)[-1]
        await trio.sleep(QUICK_EXIT_SECONDS)  # a worker that ran this long is replaced at once
        # The replacement is forked after the supervisor forwarded this SIGHUP, before the
        # surviving worker has applied it.
        proc.process.send_signal(signal.SIGHUP)
        os.kill(victim, signal.SIGKILL)
        await until_logged(proc, b"listening on", 3)
        await until_logged(proc, b"configuration reloaded", 1)
        # The replacement either started from the reload the survivor published (when the
        # supervisor adopted it before forking) or is sent a SIGHUP of its own: either way
        # it serves /new within the supervisor's once-a-second adoption, then every time. Until
        # then new connections land on either worker: 16 in a row are not the survivor by luck.
        with trio.fail_after(5):
            while await statuses_of_new_connections(listen, "/new", 16) != [200] * 16:
                await trio.sleep(0.1)
        assert await statuses_of_new_connections(listen, "/new", 40) == [200] * 40


async def start_slow_upstream(nursery: trio.Nursery, seconds: float) -> tuple[int, trio.Event]:
    """An upstream that answers each request ``seconds`` after reading it: (port, set once a request came)."""
    arrived = trio.Event()

    async def serve(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        arrived.set()
        await trio.sleep(seconds)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return listeners[0].socket.getsockname()[1], arrived


def private_directories(state_dir: Path) -> list[Path]:
    """The supervisors' own directories (for their workers only) in ``state_dir``."""
    return [path for path in (state_dir / "supervisors").iterdir() if path.is_dir()]


async def test_a_sighup_during_the_drain_does_not_cut_it_short(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, arrived = await start_slow_upstream(nursery, 1.5)
    # At debug level: a worker's acknowledgement of a signal its supervisor forwards is a debug line.
    config, listen = write_config(tmp_path, proxy_to(upstream), server='log = { level = "debug" }')
    async with running(config) as proc:
        (private,) = private_directories(tmp_path / "state")
        assert private.stat().st_mode & 0o777 == 0o700
        answer = []

        async def slow_request() -> None:
            answer.append(await exchange(listen, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", timeout=10))

        async with trio.open_nursery() as client:
            client.start_soon(slow_request)
            with trio.fail_after(5):
                await arrived.wait()
            proc.process.send_signal(signal.SIGTERM)
            await until_logged(proc, b"SIGTERM: shutting down", 3)  # the supervisor and both workers
            proc.process.send_signal(signal.SIGHUP)
            for pid in workers_started(proc):
                with contextlib.suppress(ProcessLookupError):  # the idle worker may be gone already
                    os.kill(pid, signal.SIGHUP)
        with trio.fail_after(15):
            assert await proc.process.wait() == 0
    assert statuses(answer[0]) == [200]
    assert answer[0].endswith(b"slow")
    assert private_directories(tmp_path / "state") == []


async def test_the_directory_of_a_killed_supervisor_is_removed_by_the_next_one(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    config, listen = write_config(tmp_path, proxy_to(upstream))
    state = tmp_path / "state"
    async with running(config) as proc:
        (left,) = private_directories(state)
        assert [(path.stat().st_mode & 0o777) for path in (left, left.parent)] == [0o700, 0o700]
        workers = workers_started(proc)
        proc.process.kill()
        await proc.process.wait()
        with trio.fail_after(10):  # they notice and shut down
            while any(alive(pid) for pid in workers):
                await trio.sleep(0.1)
    assert left.is_dir()  # nobody was left to remove it
    async with running(config) as proc:
        assert not left.exists()
        (mine,) = private_directories(state)
        assert await statuses_of_new_connections(listen, "/", 4) == [200] * 4
        proc.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await proc.process.wait() == 0
    assert private_directories(state) == []



INTERNAL = ', tls = { mode = "internal", domains = ["a.test"] }'


def hold_leaf_lock(state_dir: Path, names: list[str]) -> BinaryIO:
    """Take the lock of the internal leaf for ``names``, as a worker issuing it does: a snakeway
    starting meanwhile waits for it before it listens. Closing the file releases it."""
    _, _, lock_path = leaf_paths(LocalCA.load_or_create(state_dir), names)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(lock_path, "ab")  # the caller closes it
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_sigterm_after_a_sighup_during_start_up_stops_snakeway_at_once(
    nursery: trio.Nursery, tmp_path: Path, workers: int
) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    # At debug level: what a worker's supervisor says for all (the local CA, a signal) each worker says at debug.
    config, _ = write_config(
        tmp_path, proxy_to(upstream), workers=workers, bind=INTERNAL, server='log = { level = "debug" }'
    )
    with hold_leaf_lock(tmp_path / "state", ["a.test"]):
        async with snakeway(config, ready=None) as proc:
            # Each worker's start-up now waits for the leaf's lock (the supervisor names the CA first).
            await until_logged(proc, b"local CA:", workers + (workers > 1))
            proc.process.send_signal(signal.SIGHUP)
            await until_logged(proc, b"SIGHUP: reloading the configuration", workers)
            proc.process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):  # not drain_seconds + 5 s later, when a supervisor kills its workers
                assert await proc.process.wait() == 0
            await proc.drain_log()
    assert proc.log.count(b"SIGTERM: shutting down") == workers + (workers > 1)
    assert b"listening on" not in proc.log


async def test_a_sighup_during_start_up_reloads_once_serving(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_logging_upstream(nursery)
    config, listen = write_config(tmp_path, proxy_to(upstream, "/old"), workers=1, bind=INTERNAL)
    lock = hold_leaf_lock(tmp_path / "state", ["a.test"])
    try:
        async with snakeway(config, ready=None) as proc:
            await until_logged(proc, b"local CA:")
            write_config(tmp_path, proxy_to(upstream, "/"), workers=1, bind=INTERNAL, port=listen)  # adds /new
            proc.process.send_signal(signal.SIGHUP)
            await until_logged(proc, b"SIGHUP: reloading")
            assert b"listening on" not in proc.log
            lock.close()
            await until_logged(proc, b"listening on")
            await until_logged(proc, b"configuration reloaded")
            client = client_context(LocalCA.load_or_create(tmp_path / "state").root_path)
            result = await tls_request(listen, client, "a.test", host="a.test", target="/new")
            assert result.response is not None and result.response.status == 200
            proc.process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await proc.process.wait() == 0
    finally:
        lock.close()
