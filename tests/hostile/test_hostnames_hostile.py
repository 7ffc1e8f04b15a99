"""Host names a client sends, through a running snakeway: routing by them, and repeating them in a redirect.

A Host header may carry a name that no certificate can (``my_host.example.test``): it is routed as nginx routes
it, and a redirect listener repeats it in its Location. What is not a host name at all is refused.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.helpers import closed_port
from tests.hostile.harness import exchange, running, start_logging_upstream, statuses, until_logged, write_config


def _request(host: bytes, target: bytes = b"/p") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"


async def test_an_underscored_host_is_routed_case_port_and_dot_aside(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    body = f"""
  services = [{{ name = "app", routes = [{{ hosts = ["My_Host.example.test"] }}],
                upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}] }}]
"""
    config, port = write_config(tmp_path, body, workers=1)
    async with running(config, workers=1):
        answers = [
            await exchange(port, _request(host))
            for host in (b"my_host.example.test", b"MY_HOST.Example.test:8080", b"my_host.example.test.",
                         b"myhost.example.test", b"my-host.example.test")
        ]
    assert [statuses(answer) for answer in answers] == [[200], [200], [200], [404], [404]]
    assert [r.header(b"host") for r in log.requests] == [
        b"my_host.example.test", b"MY_HOST.Example.test:8080", b"my_host.example.test."
    ]


async def test_a_redirect_repeats_a_host_name_and_refuses_anything_else(tmp_path: Path) -> None:
    redirect = closed_port()
    bind = (', tls = { mode = "internal", domains = ["a.test"] }'
            f", redirect_http_to_https = {{ port = {redirect} }}")
    config, port = write_config(tmp_path, "", workers=1, bind=bind)
    async with running(config, workers=1) as proc:
        # running() returns once the first listener (HTTPS) listens; the redirect listener opens just after.
        await until_logged(proc, f"listening on http://127.0.0.1:{redirect}".encode())
        underscored = await exchange(redirect, _request(b"my_host.a.test:80"))
        ipv6 = await exchange(redirect, _request(b"[::1]"))
        escaped = await exchange(redirect, _request(b"a%41.test"))
        odd = await exchange(redirect, _request(b"a!b.test"))
    assert statuses(underscored) == [308]
    assert f"\r\nlocation: https://my_host.a.test:{port}/p\r\n".encode() in underscored.lower()
    assert statuses(ipv6) == [308]
    assert f"\r\nlocation: https://[::1]:{port}/p\r\n".encode() in ipv6.lower()
    assert statuses(escaped) == [400] and b"location" not in escaped.lower()
    assert statuses(odd) == [400] and b"location" not in odd.lower()
