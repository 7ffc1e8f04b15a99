"""Hostile and unusual upstream responses through a real snakeway process: what the client sees, and
whether the upstream connection is used again (a connection left in doubt must never carry another
request, or one response could be read as the answer to the next request).

The upstream is a raw socket server that answers each request head with bytes chosen by the target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.helpers import LOOPBACK
from tests.hostile.harness import exchange, proxy_to, running, start_logging_upstream, statuses, write_config

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class RawUpstream:
    """What a raw upstream saw: the request heads of each connection it accepted, in order."""

    port: int = 0
    connections: list[list[bytes]] = field(default_factory=list)

    def targets(self) -> list[list[bytes]]:
        return [[head.split(b" ", 2)[1] for head in heads] for heads in self.connections]

    def last_on_its_connection(self, target: bytes) -> bool:
        """``target`` was requested once, and nothing followed it on its connection."""
        (carried,) = [heads for heads in self.targets() if target in heads]
        return carried.count(target) == 1 and carried[-1] == target


Answer = Callable[[bytes, bytes], "bytes | tuple[bytes, bool]"]


async def start_raw_upstream(nursery: trio.Nursery, answer: Answer, *, unsolicited: bytes = b"") -> RawUpstream:
    """An upstream on 127.0.0.1 that sends ``answer(method, target)`` for each request head (requests
    without bodies); an answer given as ``(bytes, True)`` closes the connection after it. ``unsolicited``
    is sent, unasked, 20 ms after every answer."""
    up = RawUpstream()

    async def serve(stream: trio.SocketStream) -> None:
        heads: list[bytes] = []
        up.connections.append(heads)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                heads.append(head)
                method, target, _ = head.split(b" ", 2)
                reply = answer(method, target)
                data, close = reply if isinstance(reply, tuple) else (reply, False)
                await stream.send_all(data)
                if close:
                    return
                if unsolicited:
                    await trio.sleep(0.02)
                    await stream.send_all(unsolicited)
        except trio.BrokenResourceError:
            return
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    up.port = listeners[0].socket.getsockname()[1]
    return up


def get(target: bytes, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return b"%s %s HTTP/%s\r\nHost: x.test\r\n\r\n" % (method, target, version)


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


REFUSED = {
    b"/cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"/cl-twice": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"/cl-differ": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    b"/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc",
    b"/bare-cr": b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"/obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n X-B: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"/bad-name": b"HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 3\r\n\r\nabc",
    b"/bad-value": b"HTTP/1.1 200 OK\r\nX-A: 1\x002\r\nContent-Length: 3\r\n\r\nabc",
    b"/te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    b"/huge-head": b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 70_000 + b"\r\nContent-Length: 3\r\n\r\nabc",
    b"/http2": b"HTTP/2.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"/rtsp": b"RTSP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"/reason-ctl": b"HTTP/1.1 200 O\x07K\r\nContent-Length: 3\r\n\r\nabc",
    b"/unasked-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
}


async def test_invalid_responses_are_502_and_their_connections_are_not_reused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    up = await start_raw_upstream(nursery, lambda method, target: REFUSED.get(target, OK))
    config, port = write_config(tmp_path, proxy_to(up.port), workers=1)
    async with running(config, workers=1):
        for target in REFUSED:
            # The refused response, then a request on the same client connection: it must reach the
            # upstream on a new connection, not on the one whose response was refused.
            answer = await exchange(port, get(target) + get(b"/after"))
            assert statuses(answer) == [502, 200], (target, answer[:200])
            assert answer.endswith(b"\r\n\r\nok")
        kept = await exchange(port, get(b"/one") + get(b"/two"))
    assert statuses(kept) == [200, 200]
    for target in REFUSED:  # nothing was sent after a refused response on its connection
        assert up.last_on_its_connection(target), (target, up.targets())
    # A good response leaves its connection for the next request.
    assert any(heads[-2:] == [b"/one", b"/two"] for heads in up.targets()), up.targets()


async def test_head_responses_have_no_body_and_a_body_sent_anyway_poisons_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    def answer(method: bytes, target: bytes) -> bytes:
        if method == b"HEAD" and target == b"/liar":  # a body after a response to HEAD
            return b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nHTTP/1.1 200 OK\r\n"
        if method == b"HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n" + target[:7].ljust(7, b".")

    up = await start_raw_upstream(nursery, answer)
    config, port = write_config(tmp_path, proxy_to(up.port), workers=1)
    async with running(config, workers=1):
        honest = await exchange(port, get(b"/head", b"HEAD") + get(b"/next"))
        liar = await exchange(port, get(b"/liar", b"HEAD") + get(b"/after"))
    assert statuses(honest) == [200, 200]
    first, second = honest.split(b"HTTP/1.1 ", 2)[1:]
    assert b"content-length: 5\r\n" in first.lower() and first.endswith(b"\r\n\r\n")  # no body
    assert second.endswith(b"\r\n\r\n/next..")
    assert statuses(liar) == [200, 200]
    assert liar.endswith(b"\r\n\r\n/after.")
    # The connection carried on after a response to HEAD, but not after one with a body.
    assert up.targets() == [[b"/head", b"/next", b"/liar"], [b"/after"]]


async def test_a_late_extra_response_on_an_idle_connection_answers_no_one(nursery: trio.Nursery, tmp_path: Path) -> None:
    """An upstream that sends a second, unasked-for response a moment after the first: the pool must
    not hand that connection to the next request, even one that comes right after (the pool checks
    every idle connection before reuse), or the extra response would be its answer."""
    up = await start_raw_upstream(nursery, lambda _, target: b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
                                  + target[1:7].ljust(6, b"."),
                                  unsolicited=b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
    config, port = write_config(tmp_path, proxy_to(up.port), workers=1)
    async with running(config, workers=1):
        client = await trio.open_tcp_stream(LOOPBACK, port)
        seen = b""
        with trio.fail_after(5):
            await client.send_all(get(b"/first"))
            while not seen.endswith(b"first."):
                seen += await client.receive_some(65536)
            await trio.sleep(0.06)  # the extra response has reached snakeway; the connection idled 60 ms
            await client.send_all(get(b"/second"))
            while not seen.endswith((b"second", b"POISON")):
                seen += await client.receive_some(65536)
        await client.aclose()
    assert statuses(seen) == [200, 200]
    assert seen.endswith(b"second")
    assert up.targets() == [[b"/first"], [b"/second"]]  # the second request went on a new connection


async def test_1xx_are_skipped_and_204_304_are_bodiless_whatever_they_claim(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    answers = {
        b"/early": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK,
        b"/none": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        b"/same": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    }
    up = await start_raw_upstream(nursery, lambda method, target: answers.get(target, OK))
    config, port = write_config(tmp_path, proxy_to(up.port), workers=1)
    async with running(config, workers=1):
        answer = await exchange(port, get(b"/early") + get(b"/none") + get(b"/same") + get(b"/last"))
    assert statuses(answer) == [200, 204, 304, 200]
    assert answer.endswith(b"\r\n\r\nok")
    assert up.targets() == [[b"/early", b"/none", b"/same", b"/last"]]  # one connection throughout


async def test_responses_that_end_their_connection_are_relayed_and_not_reused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    answers: dict[bytes, bytes | tuple[bytes, bool]] = {
        b"/to-close": (b"HTTP/1.1 200 OK\r\n\r\nread until the close", True),
        b"/http10": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n10",
        b"/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\ncl",
        b"/extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nexHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
    }
    up = await start_raw_upstream(nursery, lambda method, target: answers.get(target, OK))
    config, port = write_config(tmp_path, proxy_to(up.port), workers=1)
    async with running(config, workers=1):
        to_close = await exchange(port, get(b"/to-close") + get(b"/a"))
        http10 = await exchange(port, get(b"/http10") + get(b"/b"))
        close = await exchange(port, get(b"/close") + get(b"/c"))
        extra = await exchange(port, get(b"/extra") + get(b"/d"))
        to_close_10 = await exchange(port, get(b"/to-close", version=b"1.0"))
    assert statuses(to_close) == [200, 200]
    assert b"\r\n\r\n14\r\nread until the close\r\n0\r\n\r\n" in to_close  # re-framed as chunks for HTTP/1.1
    assert body_of(to_close_10) == b"read until the close"  # and ended by the close for HTTP/1.0
    assert statuses(http10) == statuses(close) == statuses(extra) == [200, 200]
    assert b"\r\n\r\nex" in extra and b"forged" not in extra
    for target in (b"/http10", b"/close", b"/extra"):
        assert up.last_on_its_connection(target), up.targets()
    assert all(heads[-1] == b"/to-close" for heads in up.targets() if b"/to-close" in heads)


async def test_large_and_chunked_bodies_arrive_whole_and_the_client_connection_lives_on(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    big = os.urandom(1024 * 1024 + 17)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"a" * 70_000, b"b" * 3, b"c" * 200_000)) + b"0\r\n\r\n"
    answers = {
        b"/big": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big),
        b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
    }
    up = await start_raw_upstream(nursery, lambda method, target: answers.get(target, OK))
    config, port = write_config(tmp_path, proxy_to(up.port), workers=1)
    async with running(config, workers=1):
        answer = await exchange(port, get(b"/big") + get(b"/chunked") + get(b"/big") + get(b"/end"), timeout=20)
        plain = await exchange(port, get(b"/chunked", version=b"1.0"))
    assert statuses(answer[:200]) == [200]
    first_end = answer.index(b"\r\n\r\n") + 4
    assert answer[first_end : first_end + len(big)] == big
    assert answer.count(big) == 2
    assert answer.endswith(b"\r\n\r\nok")
    assert up.targets() == [[b"/big", b"/chunked", b"/big", b"/end", b"/chunked"]]  # one connection throughout
    assert body_of(plain) == b"a" * 70_000 + b"bbb" + b"c" * 200_000


async def test_request_bodies_go_upstream_as_sent_or_rechunked(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream), workers=1)
    big = b"z" * 300_000  # streamed, not read first
    async with running(config, workers=1):
        sized = await exchange(port, b"POST /s HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\n\r\nhello")
        chunked = await exchange(
            port, b"POST /c HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        large = await exchange(
            port, b"POST /l HTTP/1.1\r\nHost: x.test\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big), timeout=20
        )
    assert statuses(sized) == statuses(chunked) == statuses(large) == [200]
    by_target = {r.target: r for r in log.requests}
    assert by_target[b"/s"].body == b"hello" and by_target[b"/s"].header(b"content-length") == b"5"
    assert by_target[b"/c"].body == b"abcde" and by_target[b"/c"].header(b"transfer-encoding") == b"chunked"
    assert by_target[b"/l"].body == big
