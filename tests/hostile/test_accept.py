"""Accepting under pressure: a worker out of file descriptors, and a burst of new connections."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.hostile.harness import LOOPBACK, exchange, proxy_to, running, start_logging_upstream, statuses, write_config

# Small enough that a hundred held connections exhaust it; large enough for snakeway to start.
DESCRIPTORS = 64
HELD = 100


async def test_out_of_descriptors_logs_a_line_not_tracebacks_and_recovers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream), workers=1)
    async with running(config, workers=1, nofile=DESCRIPTORS) as proc:
        # Clients that send half a request head and wait: each holds a descriptor in snakeway
        # until the header timeout (15 s), and the rest wait in the kernel's accept queue.
        held = []
        try:
            for _ in range(HELD):
                stream = await trio.open_tcp_stream(LOOPBACK, port)
                held.append(stream)
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
            with trio.fail_after(5):
                while b"EMFILE" not in proc.log:
                    await proc.read_more()
            # Out of descriptors for a while: retrying every 0.1 s, it would have logged 30 lines.
            with trio.move_on_after(3):
                while True:
                    await proc.read_more()
        finally:
            for stream in held:
                await stream.aclose()
        out_of_descriptors = proc.log.count(b"EMFILE")
        text = proc.log.decode()
        assert 1 <= out_of_descriptors <= 2, text
        assert "cannot accept new connections: EMFILE (Too many open files)" in text
        assert "Traceback" not in text, text
        # Once the clients are gone, a new client is served at once.
        with trio.fail_after(3):
            answer = await exchange(port, b"GET /after HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        assert statuses(answer) == [200], answer
        assert log.targets == [b"/after"]
        with trio.move_on_after(1):
            while b"accepting new connections again" not in proc.log:
                await proc.read_more()
        assert proc.log.count(b"accepting new connections again") == 1, proc.log.decode()
        assert b"Traceback" not in proc.log
