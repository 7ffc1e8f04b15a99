"""Instructions per small proxied request on a kept-alive plain HTTP connection.

``python -m benchmarks.request_cost`` runs ``snakeway serve`` (one worker,
access log off) under ``valgrind --tool=cachegrind`` twice: once for N
requests and once for 3N, each sent one after the other on one kept-alive
connection to a route proxied to an upstream in this process (outside
valgrind). The difference over 2N is the cost of one request in snakeway,
start-up and shutdown cancelled out: the figure docs/benchmarks.md quotes.

``python -m benchmarks.request_cost BYTES N`` does the same for responses of
BYTES bytes of body (relayed in several reads from 128 KiB up), N and 3N of them.

``python -m benchmarks.request_cost tls N`` counts new TLS connections instead:
each of the N and 3N requests on a connection of its own to a TLS listener (a
full handshake: the client resumes no session), with ``Connection: close``.
The figure is the cost of accepting, the handshake, one small request and the
close, in snakeway.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from benchmarks.certs import CA

BASE = 1000
LOOPBACK = "127.0.0.1"
BODY = b"hello world\n"
REQUEST = b"GET /bench HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: request_cost\r\nAccept: */*\r\n\r\n"
TLS_REQUEST = b"GET /bench HTTP/1.1\r\nHost: localhost\r\nUser-Agent: request_cost\r\nAccept: */*\r\nConnection: close\r\n\r\n"


async def _upstream(stream: trio.SocketStream, response: bytes) -> None:
    buffer = b""
    try:
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                await stream.send_all(response)
    except trio.BrokenResourceError:
        pass


async def _wait_listening(port: int) -> None:
    with trio.fail_after(120):
        while True:
            try:
                stream = await trio.open_tcp_stream(LOOPBACK, port)
            except OSError:
                await trio.sleep(0.2)
                continue
            await stream.aclose()
            return


async def _client(port: int, count: int, body: bytes) -> None:
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    for _ in range(count):
        await stream.send_all(REQUEST)
        answer = bytearray()
        while not answer.endswith(body):
            chunk = await stream.receive_some(1 << 20)
            assert chunk, "snakeway closed the connection"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    await stream.aclose()


async def _tls_client(port: int, count: int, ca: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    for _ in range(count):
        stream = trio.SSLStream(
            await trio.open_tcp_stream(LOOPBACK, port), context, server_hostname="localhost", https_compatible=True
        )
        await stream.send_all(TLS_REQUEST)
        answer = bytearray()
        while chunk := await stream.receive_some(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
        await stream.aclose()


async def _instructions(count: int, body: bytes, tls: bool = False) -> int:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (len(body), body)
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, partial(_upstream, response=response), 0))
            upstream = listeners[0].socket.getsockname()[1]
            probe = trio.socket.socket()
            await probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
            probe.close()
            listen = f'interface = "{LOOPBACK}", port = {port}'
            if tls:
                cert, key, ca = CA().write_leaf(Path(tmp), "leaf", ["localhost"])
                listen += f', tls = {{ mode = "manual", cert = "{cert}", key = "{key}", default = "localhost" }}'
            config = Path(tmp) / "snakeway.hcl"
            config.write_text(f"""
server {{
  version    = 1
  workers    = 1
  access_log = "off"
  state_dir  = "{tmp}/state"
}}
ingress "bench" {{
  bind = {{ {listen} }}
  services = [{{ name = "app", routes = [{{ hosts = ["*"], path = "/" }}],
                upstreams = [{{ endpoint = {{ host = "{LOOPBACK}", port = {upstream} }} }}] }}]
}}
""")
            out = Path(tmp) / "cachegrind.out"
            process = await trio.lowlevel.open_process(
                ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
                 sys.executable, "-m", "snakeway", "serve", "--config", str(config)],
                cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ, PYTHONHASHSEED="0"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                await _wait_listening(port)
                if tls:
                    await _tls_client(port, count, ca)
                else:
                    await _client(port, count, body)
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
            nursery.cancel_scope.cancel()
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        assert summary, "no summary in cachegrind's output"
        return int(summary.group(1))


def main() -> int:
    body, base, tls = BODY, BASE, False
    if len(sys.argv) == 3 and sys.argv[1] == "tls":
        base, tls = int(sys.argv[2]), True
    elif len(sys.argv) == 3:
        body, base = b"x" * (int(sys.argv[1]) - len(BODY)) + BODY, int(sys.argv[2])
    low = trio.run(_instructions, base, body, tls)
    high = trio.run(_instructions, 3 * base, body, tls)
    what = "new TLS connection with one request" if tls else "request"
    print(f"{(high - low) / (2 * base):,.0f} instructions per {what} of {len(body):,} bytes of body "
          f"({low:,} for {base}, {high:,} for {3 * base})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
