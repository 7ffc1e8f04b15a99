"""Helpers for TLS tests: certificates from a trustme CA, and a real TLS client."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import h11
import trio
import trustme

from snakeway.config.model import CertFiles, Tls, TlsMode
from tests.helpers import LOOPBACK, Response


def write_leaf(ca: trustme.CA, directory: Path, *names: str) -> CertFiles:
    leaf = ca.issue_cert(*names)
    stem = names[0].replace("*", "_")
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return CertFiles(cert=cert, key=key)


def manual(*files: CertFiles, default: str | None = None) -> Tls:
    return Tls(mode=TlsMode.MANUAL, certs=files, default=default)


def client_context(ca_pem: bytes | Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if isinstance(ca_pem, Path):
        ctx.load_verify_locations(cafile=str(ca_pem))
    else:
        ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass
class TlsResult:
    peer_names: tuple[str, ...]
    serial: int
    version: str
    response: Response | None


async def tls_request(
    port: int,
    ctx: ssl.SSLContext,
    sni: str | None,
    *,
    host: str | None = None,
    target: str = "/",
) -> TlsResult:
    """Handshake with ``sni`` (None: send none), then optionally GET ``target`` with ``Host: host``."""
    if sni is None:
        ctx.check_hostname = False
    raw = await trio.open_tcp_stream(LOOPBACK, port)
    stream = trio.SSLStream(raw, ctx, server_hostname=sni, https_compatible=True)
    try:
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        names = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
        response = None
        if host is not None:
            response = await _get(stream, host, target)
        return TlsResult(names, cert.serial_number, stream.version() or "", response)
    finally:
        await trio.aclose_forcefully(stream)


async def _get(stream: trio.SSLStream, host: str, target: str) -> Response:
    conn = h11.Connection(h11.CLIENT)
    await stream.send_all(
        conn.send(h11.Request(method="GET", target=target, headers=[("host", host), ("connection", "close")]))
        + conn.send(h11.EndOfMessage())
    )
    status, headers, body = 0, [], bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        else:
            break
    return Response(status, headers, bytes(body))
