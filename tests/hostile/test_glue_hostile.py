"""New TLS connections and static files through a real snakeway process.

A TLS connection is served with ``trio.SSLStream`` right on the accepted
socket: a slow but steady reader of a large relayed response gets all of it,
its writes timed by their progress as on a plain connection. Static files over
plain HTTP are copied by the kernel and come out whole, ranged, as HEAD and
conditional, on one kept-alive connection. Real time, short timeouts.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import h11
import trio

from tests.hostile.harness import LOOPBACK, exchange, running, statuses, until_logged, write_config
from tests.hostile.test_send_progress import READ_TIMEOUT, body_of, start_paced_upstream
from tests.tlshelpers import client_context

# A client reading TLS gets the socket's bytes a record (16 KiB) at a time, then plaintext from its buffer
# without reading the socket: at the rate below the kernel takes bytes for it every 0.4 s or so, well within
# this send timeout, while each third of the body (one write) takes more than a second to go.
TLS_SEND_TIMEOUT = 3.0
TLS_BODY = 192 * 1024


async def read_tls_steadily(port: int, ca: Path, request: bytes) -> tuple[bytes, float]:
    """``request`` over TLS from a client with a small receive buffer that reads 4 KiB of
    plaintext every 0.1 s until the response ends: (the response, how long it took)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((LOOPBACK, port))
    stream = trio.SSLStream(trio.SocketStream(sock), client_context(ca), server_hostname="a.test", https_compatible=True)
    conn = h11.Connection(h11.CLIENT)
    out = bytearray()
    started = trio.current_time()
    try:
        with trio.fail_after(TLS_BODY / 20_000 + 15):
            await stream.send_all(request)
            while type(event := conn.next_event()) not in (h11.EndOfMessage, h11.ConnectionClosed):
                if event is h11.NEED_DATA:
                    chunk = await stream.receive_some(4096)
                    out += chunk
                    conn.receive_data(chunk)
                    await trio.sleep(0.1)
    except (h11.RemoteProtocolError, trio.BrokenResourceError):  # cut: the caller compares what came
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return bytes(out), trio.current_time() - started


async def test_a_steady_slow_tls_reader_gets_a_whole_relayed_response(nursery: trio.Nursery, tmp_path: Path) -> None:
    paced_body = os.urandom(TLS_BODY)
    paced = await start_paced_upstream(nursery, paced_body)
    config, port = write_config(
        tmp_path,
        f"""
  services = [{{ name = "paced", routes = [{{ hosts = ["*"], path = "/paced" }}],
      upstreams = [{{ endpoint = {{ host = "{LOOPBACK}", port = {paced} }} }}] }}]
""",
        server=f"client = {{ send_timeout_seconds = {TLS_SEND_TIMEOUT} }}\n"
        f"upstream = {{ read_timeout_seconds = {READ_TIMEOUT} }}",
        workers=1,
        bind=', tls = { mode = "internal", domains = ["a.test"] }',
    )
    async with running(config, workers=1) as proc:
        response, took = await read_tls_steadily(
            port, tmp_path / "state" / "pki" / "root.pem", b"GET /paced/big HTTP/1.1\r\nHost: a.test\r\n\r\n"
        )
        await until_logged(proc, b'"GET /paced/big HTTP/1.1" ')
        assert statuses(response) == [200], response[:200]
        assert body_of(response) == paced_body, (len(body_of(response)), bytes(proc.log[-1500:]))
        assert took > 3 * READ_TIMEOUT  # each of the three writes waited on the client longer than that
        await until_logged(proc, b'"GET /paced/big HTTP/1.1" 200')


async def test_static_files_over_plain_http_whole_ranged_conditional_and_kept_alive(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    content = os.urandom(3 * 1024 * 1024 + 5)  # more than a socket takes at once: several copies by the kernel
    (site / "big.bin").write_bytes(content)
    config, port = write_config(
        tmp_path, f'static_files = [{{ routes = [{{ hosts = ["*"], path = "/", file_dir = "{site}" }}] }}]', workers=1
    )
    get = b"GET /big.bin HTTP/1.1\r\nHost: x.test\r\n%s\r\n"
    async with running(config, workers=1):
        whole = await exchange(port, get % b"", timeout=20)
        assert statuses(whole) == [200] and body_of(whole) == content
        last_modified = next(
            line.split(b":", 1)[1].strip()
            for line in whole.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line.lower().startswith(b"last-modified:")
        )
        # Three on one connection: a range, a HEAD, a conditional GET; then a whole file again.
        answers = await exchange(
            port,
            get % b"Range: bytes=100-199\r\n"
            + b"HEAD /big.bin HTTP/1.1\r\nHost: x.test\r\n\r\n"
            + get % (b"If-Modified-Since: " + last_modified + b"\r\n")
            + get % b"Range: bytes=-3\r\n",
            timeout=20,
        )
        assert statuses(answers) == [206, 200, 304, 206]
        ranged, rest = answers.split(b"\r\n\r\n", 1)
        assert rest[:100] == content[100:200]
        assert rest.endswith(content[-3:])
