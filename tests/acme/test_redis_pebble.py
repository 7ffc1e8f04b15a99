"""A real `python -m snakeway serve` with its certificates in a real redis-server, against Pebble."""

from __future__ import annotations

import base64
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from snakeway.acme.redisstore import RedisStore
from tests.acme.test_crash_pebble import NAMES
from tests.acme.test_crash_pebble import write_config as crash_config
from tests.acme.test_redisstore import raw_values
from tests.helpers import start_upstream
from tests.pebble import Pebble, free_port, run_pebble
from tests.proc import snakeway

if TYPE_CHECKING:
    from tests.redisserver import RedisServer

KEY = bytes(range(7, 39))


def write_config(path: Path, pebble: Pebble, redis_url: str, key_file: Path, upstream: int) -> None:
    """The crash test's configuration, with the certificates in Redis instead of files."""
    crash_config(path, pebble, upstream)
    state = path.parent / "state"
    file_store = f'cert_store = {{ type = "filesystem", cert_dir = "{state}/certs" }}'
    redis_store = (f'cert_store = {{ type = "redis", url = "{redis_url}", key_prefix = "edge", '
                   f'encryption_key_file = "{key_file}" }}')
    text = path.read_text()
    assert file_store in text
    path.write_text(text.replace(file_store, redis_store).replace(f'data_dir      = "{state}/acme"', ""))


async def node_files(nursery: trio.Nursery, tmp_path: Path, url: str) -> tuple[int, Path, Path, RedisStore]:
    """An upstream's port, the store's key file, where the configuration goes, and a view into the store."""
    upstream, _ = await start_upstream(nursery)
    key_file = tmp_path / "store.key"
    key_file.write_bytes(base64.b64encode(KEY) + b"\n")
    return upstream, key_file, tmp_path / "snakeway.hcl", RedisStore(url, key_prefix="edge", encryption_key=KEY)


async def served_certificate(port: int, roots: bytes) -> bytes:
    """The DER leaf served for ``NAMES[0]`` on ``port``, verified against Pebble's roots."""
    context = ssl.create_default_context(cadata=roots.decode())
    stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), context, server_hostname=NAMES[0])
    try:
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
        assert der is not None
        return der
    finally:
        await stream.aclose()


async def test_serve_obtains_into_redis_and_a_restart_loads_it(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    upstream, key_file, config, store = await node_files(nursery, tmp_path, url)
    workdir = tmp_path / "pebble"
    workdir.mkdir()
    async with run_pebble(workdir, http_port=free_port(), tls_port=free_port()) as pebble:
        write_config(config, pebble, url, key_file, upstream)
        roots = await pebble.roots()
        async with snakeway(config, ready=b"listening on ") as proc:
            await proc.wait_for(b"issued by", timeout=60)
            first = await served_certificate(pebble.tls_port, roots)
        bundle = await store.load(NAMES[0])
        assert bundle is not None and bundle.domains == NAMES
        assert await store.load_account(pebble.directory_url) is not None
        values = await raw_values(url)
        assert not [key for key, value in values.items() if b"PRIVATE KEY" in value]
        assert not (tmp_path / "state" / "certs").exists()  # nothing went to the file store
        listing = await trio.run_process(
            [sys.executable, "-m", "snakeway", "certs", "--config", str(config)], capture_stdout=True,
            capture_stderr=True,
        )
        row = listing.stdout.decode().splitlines()[1]
        assert row.startswith(", ".join(NAMES)) and "valid" in row and "Pebble" in row

        async with snakeway(config, ready=b"listening on ") as proc:
            await proc.wait_for(b"loaded stored certificate", timeout=30)
            assert await served_certificate(pebble.tls_port, roots) == first
            assert b"issued by" not in proc.log
            assert b"ordering from" not in proc.log
        assert await store.load(NAMES[0]) == bundle

        # Another key file: snakeway says why it cannot start, in one line, and orders nothing.
        key_file.write_bytes(base64.b64encode(bytes(32)))
        async with snakeway(config, ready=None) as proc:
            with trio.fail_after(30):
                await proc.drain_log()
                assert await proc.process.wait() == 1
        assert proc.log.decode().splitlines()[-1] == (
            f"snakeway: cannot decrypt edge:cert:{NAMES[0]} with {key_file}: wrong encryption_key_file, "
            "or a value moved there from another key"
        )
        assert b"Traceback" not in proc.log and b"ordering from" not in proc.log
        assert await store.load(NAMES[0]) == bundle


async def test_serve_says_when_redis_is_down(tmp_path: Path, redis_server: RedisServer) -> None:
    """A store it cannot reach at start: snakeway serves what its local copy holds (nothing yet) and says so."""
    config = tmp_path / "snakeway.hcl"
    port = redis_server.port
    await redis_server.stop()
    key_file = tmp_path / "store.key"
    key_file.write_bytes(base64.b64encode(KEY))
    fake = Pebble(f"https://127.0.0.1:{free_port()}/dir", key_file, free_port(), free_port(), "", tmp_path)
    write_config(config, fake, f"redis://:s3cret@127.0.0.1:{port}/0", key_file, free_port())
    async with snakeway(config, ready=b"listening on ") as proc:
        await proc.wait_for(b"from the local copy", timeout=10)
        await proc.wait_for(b"cannot subscribe to the push of new certificates", timeout=10)
    assert (f"Redis at redis://127.0.0.1:{port}/0 unreachable (Unable to establish a connection to 127.0.0.1:"
            f"{port}): serving 0 certificates from the local copy in {tmp_path}/state/redis-cache") in proc.log.decode()
    assert b"s3cret" not in proc.log
