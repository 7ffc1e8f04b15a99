"""Instructions per accepted connection: snakeway's accept loop against ``trio.serve_listeners``.

``python -m benchmarks.accept_cost`` runs, under ``valgrind --tool=cachegrind``,
a process that accepts N connections from a client in the same process and
hands each to a handler that wraps it in a :class:`~snakeway.tcp.TcpStream`
and closes it, as ``Server._handle`` does before serving. Each variant runs
twice, with N and with 5N connections; the difference over 4N is the cost
of one connection, client included (the client's part is the same for both
variants, and is measured alone: connections nobody accepts). Variants:

- ``trio``: ``trio.serve_listeners`` on a ``trio.SocketListener``; the handler
  gets a ``trio.SocketStream`` and makes ``TcpStream(stream)`` of it (snakeway
  before its own accept loop);
- ``snakeway``: :func:`snakeway.accept.serve_sockets`; the handler gets the
  socket and its address and makes ``TcpStream.accepted(sock)``.

``python -m benchmarks.accept_cost run VARIANT N`` runs one variant without
valgrind.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import trio

from snakeway.accept import serve_sockets
from snakeway.tcp import TcpStream

BASE = 200


async def _run(variant: str, count: int) -> None:
    done = trio.Event()
    served = 0

    def one_more() -> None:
        nonlocal served
        served += 1
        if served == count:
            done.set()

    async def trio_handler(stream: trio.SocketStream) -> None:
        tcp = TcpStream(stream)
        tcp.socket.close()
        one_more()

    async def snakeway_handler(sock: socket.socket, peer: Any) -> None:
        tcp = TcpStream.accepted(sock)
        tcp.socket.close()
        one_more()

    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    async with trio.open_nursery() as nursery:
        if variant == "client":  # nothing accepts: the connections wait in the kernel's queue
            served = count - 1
            one_more()
        elif variant == "trio":
            trio_listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener))
            nursery.start_soon(partial(trio.serve_listeners, trio_handler, [trio_listener], handler_nursery=nursery))
        else:
            nursery.start_soon(serve_sockets, [listener], snakeway_handler, nursery)
        for _ in range(count):
            client = trio.socket.socket()
            await client.connect(("127.0.0.1", port))
            client.close()
        await done.wait()
        nursery.cancel_scope.cancel()


def instructions(variant: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cachegrind.out"
        subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
             sys.executable, "-m", "benchmarks.accept_cost", "run", variant, str(count)],
            check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent,
            env=dict(os.environ, PYTHONHASHSEED="0"),
        )
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        assert summary, "no summary in cachegrind's output"
        return int(summary.group(1))


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        trio.run(_run, sys.argv[2], int(sys.argv[3]))
        return 0
    per = {}
    for variant in ("client", "trio", "snakeway"):
        low, high = instructions(variant, BASE), instructions(variant, 5 * BASE)
        per[variant] = (high - low) / (4 * BASE)
    for variant in ("trio", "snakeway"):
        print(f"{variant:9} {per[variant] - per['client']:,.0f} instructions per accepted connection "
              f"({per[variant]:,.0f} with the client's {per['client']:,.0f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
