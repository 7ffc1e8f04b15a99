"""TLS listeners against a real snakeway process: HSTS, key-exchange groups, internal certificates."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import h11
import trio
from cryptography import x509

from tests.helpers import LOOPBACK, closed_port, start_upstream
from tests.hostile.harness import exchange, running, statuses, until_logged, write_config
from tests.tlshelpers import client_context, tls_request

STS = b"strict-transport-security"


def tls_config(
    directory: Path, upstream: int, *, tls_extra: str = "", workers: int = 2, server: str = ""
) -> tuple[Path, int, int]:
    """An internal-CA TLS listener for ``a.test`` and ``127.0.0.1`` (routes ``/app`` to ``upstream`` and
    ``/static`` to ``directory/www``) with a redirect listener: (config, TLS port, redirect port)."""
    redirect = closed_port()
    www = directory / "www"
    www.mkdir(exist_ok=True)
    (www / "f.txt").write_bytes(b"static")
    bind = (f', tls = {{ mode = "internal", domains = ["a.test", "127.0.0.1"] {tls_extra} }}'
            f", redirect_http_to_https = {{ port = {redirect} }}")
    body = f"""
  services = [{{ name = "app", routes = [{{ hosts = ["a.test"], path = "/app" }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}] }}]
  static_files = [{{ routes = [{{ hosts = ["a.test"], path = "/static", file_dir = "{www}" }}] }}]
"""
    path, listen = write_config(directory, body, workers=workers, server=server, bind=bind)
    return path, listen, redirect


def root_of(directory: Path) -> Path:
    return directory / "state" / "pki" / "root.pem"


async def tls_exchange(port: int, context: ssl.SSLContext, data: bytes, *, sni: str = "a.test") -> bytes:
    """``data`` over a new TLS connection; everything read until the server closes it."""
    raw = await trio.open_tcp_stream(LOOPBACK, port)
    stream = trio.SSLStream(raw, context, server_hostname=sni, https_compatible=True)
    out = bytearray()
    try:
        with trio.fail_after(10):
            await stream.send_all(data)
            while chunk := await stream.receive_some(65536):
                out += chunk
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return bytes(out)


def header_values(answer: bytes, name: bytes) -> list[bytes]:
    head = answer.split(b"\r\n\r\n", 1)[0]
    fields = [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]
    return [value.strip() for field, value in fields if field.lower() == name]


async def upstream_with_its_own_hsts(request: h11.Request, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return 200, [(b"strict-transport-security", b"max-age=0"), (b"content-type", b"text/plain")], b"app"


GET = b"GET %s HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"


async def test_hsts_on_every_https_response_and_never_on_plain_http(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery, upstream_with_its_own_hsts)
    hsts = ", hsts = { max_age_seconds = 63072000, include_subdomains = true, preload = true }"
    config, port, redirect = tls_config(tmp_path, upstream, tls_extra=hsts)
    expected = [b"max-age=63072000; includeSubDomains; preload"]
    async with running(config) as proc:
        await until_logged(proc, f"listening on http://127.0.0.1:{redirect}".encode(), 2)  # both workers
        context = client_context(root_of(tmp_path))
        proxied = await tls_exchange(port, context, GET % b"/app")
        static = await tls_exchange(port, context, GET % b"/static/f.txt")
        not_found = await tls_exchange(port, context, GET % b"/nowhere")
        rejected = await tls_exchange(port, context, b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
        plain = await exchange(redirect, GET % b"/app")
    assert statuses(proxied) == [200] and proxied.endswith(b"app")
    assert header_values(proxied, STS) == expected  # the upstream's max-age=0 is replaced
    assert statuses(static) == [200] and header_values(static, STS) == expected
    assert statuses(not_found) == [404] and header_values(not_found, STS) == expected
    assert statuses(rejected) == [400] and header_values(rejected, STS) == expected
    assert statuses(plain) == [308] and header_values(plain, STS) == []


async def test_without_hsts_the_upstreams_header_passes_untouched(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery, upstream_with_its_own_hsts)
    config, port, _ = tls_config(tmp_path, upstream, workers=1)
    async with running(config, workers=1):
        context = client_context(root_of(tmp_path))
        proxied = await tls_exchange(port, context, GET % b"/app")
        not_found = await tls_exchange(port, context, GET % b"/nowhere")
    assert header_values(proxied, STS) == [b"max-age=0"]
    assert header_values(not_found, STS) == []


async def s_client(port: int, root: Path, *args: str, brief: bool = True) -> tuple[int, str]:
    """``openssl s_client [-brief]`` to the listener (SNI a.test) with ``args``: (exit status, output)."""
    result = await trio.run_process(
        ["openssl", "s_client", *(["-brief"] if brief else []),
         "-connect", f"{LOOPBACK}:{port}", "-servername", "a.test",
         "-CAfile", str(root), "-verify_return_error", *args],
        stdin=b"", capture_stdout=True, capture_stderr=True, check=False,
    )
    return result.returncode, (result.stdout + result.stderr).decode("latin-1")


# (protocol, the client's groups, the key exchange expected or None for a refused handshake). The internal
# certificate is ECDSA P-256: in TLS 1.2 a client must list P-256 to use it, so X25519 alone is TLS 1.3 only.
GROUP_CASES = [
    ("-tls1_3", "X25519", "X25519"),
    ("-tls1_3", "P-256", "ECDH, prime256v1"),
    ("-tls1_3", "P-384:P-256", "ECDH, prime256v1"),  # the P-384 key share is refused: a HelloRetryRequest
    ("-tls1_3", "ffdhe2048:X25519", "X25519"),
    ("-tls1_2", "X25519:P-256", "X25519"),
    ("-tls1_2", "P-256", "ECDH, prime256v1"),
    *((version, group, None) for version in ("-tls1_3", "-tls1_2") for group in ("P-384", "P-521", "ffdhe2048")),
    ("-tls1_3", "X448:P-384:ffdhe3072", None),
]


async def test_key_exchange_only_over_x25519_and_p256(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    config, port, _ = tls_config(tmp_path, upstream)
    async with running(config):
        outcomes = [
            (case, await s_client(port, root_of(tmp_path), case[0], "-groups", case[1])) for case in GROUP_CASES
        ]
    for (version, groups, expected), (status, output) in outcomes:
        if expected is not None:  # the exit status may be 1: snakeway closes without close_notify
            assert "Verification: OK" in output, (version, groups, output)
            assert f"Server Temp Key: {expected}," in output, (version, groups, output)
        else:
            assert status != 0, (version, groups, output)
            assert "CONNECTION ESTABLISHED" not in output and "Server Temp Key" not in output, (version, groups, output)


ACCESS_PID = re.compile(rb"INFO \[(\d+)\] snakeway\.access: 127\.0\.0\.1 \S+ \"GET /app\?n=(\d+) ")


async def test_internal_mode_every_worker_presents_the_same_leaf_without_the_root(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    config, port, _ = tls_config(tmp_path, upstream)
    serials: dict[int, int] = {}  # connection number -> leaf serial
    async with running(config) as proc:
        context = client_context(root_of(tmp_path))
        workers: dict[int, int] = {}  # connection number -> worker pid, from the access log
        for n in range(60):
            result = await tls_request(port, context, "a.test", host="a.test", target=f"/app?n={n}")
            assert result.response is not None and result.response.status == 200
            serials[n] = result.serial
            with trio.fail_after(10):
                while n not in workers:
                    workers.update({int(n_): int(pid) for pid, n_ in ACCESS_PID.findall(bytes(proc.log))})
                    if n not in workers:
                        await proc.read_more()
            if n >= 7 and len(set(workers.values())) == 2:
                break
        _, output = await s_client(port, root_of(tmp_path), "-showcerts", brief=False)
    assert len(set(workers.values())) == 2, "the kernel never handed a connection to the second worker"
    assert len(set(serials.values())) == 1, serials
    assert "verify return:1" in output and "verify error" not in output, output
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", output, re.DOTALL)
    sent = [x509.load_pem_x509_certificate(block.encode("ascii")) for block in blocks]
    assert [c.serial_number for c in sent] == [serials[0]]  # the leaf alone
    assert all(c.issuer != c.subject for c in sent)  # no self-signed root
