from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from snakeway.tls.clienthello import (
    MAX_CLIENT_HELLO_BYTES,
    ClientHello,
    ClientHelloParser,
    NeedMore,
    NotTLS,
    parse_client_hello,
    read_client_hello,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

# --- ClientHellos: real ones from OpenSSL, synthetic ones for properties -----------------------------------------


def real_hello(server_hostname: str | None, alpn: Sequence[str] = ()) -> bytes:
    """The first flight of a Python ``ssl`` client: its ClientHello, as OpenSSL frames it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:  # waiting for the ServerHello: the ClientHello is out
        return outgoing.read()
    raise AssertionError("handshake completed without a server")


def unframe(data: bytes) -> bytes:
    """The handshake bytes of a run of records (assumed well-formed)."""
    out = bytearray()
    while data:
        length = int.from_bytes(data[3:5], "big")
        out += data[5 : 5 + length]
        data = data[5 + length :]
    return bytes(out)


def frame(message: bytes, sizes: Sequence[int] = (), *, version: bytes = b"\x03\x01") -> bytes:
    """``message`` in handshake records of the given fragment sizes (the rest in records of at most 2^14)."""
    out = bytearray()
    pos = 0
    for size in [*sizes, *[2**14] * (len(message) // 2**14 + 1)]:
        if pos >= len(message):
            break
        fragment = message[pos : pos + size]
        out += b"\x16" + version + len(fragment).to_bytes(2, "big") + fragment
        pos += len(fragment)
    return bytes(out)


def vec(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def ext(ext_type: int, data: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + vec(2, data)


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec(2, b"".join(bytes([name_type]) + vec(2, n) for n in names)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(16, vec(2, b"".join(vec(1, p) for p in protocols)))


def hello_message(extensions: bytes | None, *, session_id: bytes = b"\x01" * 32) -> bytes:
    """A ClientHello handshake message (type and length included) with the given raw extension block."""
    body = b"\x03\x03" + b"\x00" * 32 + vec(1, session_id) + vec(2, b"\x13\x01\xc0\x2b") + vec(1, b"\x00")
    if extensions is not None:
        body += vec(2, extensions)
    return b"\x01" + len(body).to_bytes(3, "big") + body


HELLO = real_hello("a.test", ["acme-tls/1"])

# --- Real ClientHellos ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_hostname", "alpn", "expected"),
    [
        (None, [], ClientHello(None, ())),
        ("a.test", [], ClientHello("a.test", ())),
        ("a.test", ["acme-tls/1"], ClientHello("a.test", ("acme-tls/1",))),
        ("www.example.com", ["h2", "http/1.1"], ClientHello("www.example.com", ("h2", "http/1.1"))),
        ("bücher.example", ["http/1.1"], ClientHello("xn--bcher-kva.example", ("http/1.1",))),
        ("Mixed.Case.TEST", [], ClientHello("Mixed.Case.TEST", ())),  # as sent: normalising is the lookup's job
        ("127.0.0.1", ["http/1.1"], ClientHello(None, ("http/1.1",))),  # no SNI for IP addresses (RFC 6066)
    ],
)
def test_real_client_hellos(server_hostname: str | None, alpn: list[str], expected: ClientHello) -> None:
    assert parse_client_hello(real_hello(server_hostname, alpn)) == expected


def test_fed_byte_by_byte_needs_more_until_the_last_byte() -> None:
    parser = ClientHelloParser()
    verdicts = [parser.feed(HELLO[i : i + 1]) for i in range(len(HELLO))]
    assert verdicts[:-1] == [NeedMore()] * (len(HELLO) - 1)
    assert verdicts[-1] == ClientHello("a.test", ("acme-tls/1",))


def test_every_proper_prefix_needs_more() -> None:
    for end in range(len(HELLO)):
        assert parse_client_hello(HELLO[:end]) == NeedMore(), end


@given(st.binary())
def test_bytes_after_the_hello_are_ignored(trailer: bytes) -> None:
    assert parse_client_hello(HELLO + trailer) == ClientHello("a.test", ("acme-tls/1",))


def test_a_verdict_is_final() -> None:
    parser = ClientHelloParser()
    assert parser.feed(b"GET") == NotTLS("record content type 71 is not handshake (22)")
    assert parser.feed(HELLO) == NotTLS("record content type 71 is not handshake (22)")
    parser = ClientHelloParser()
    assert isinstance(parser.feed(HELLO), ClientHello)
    assert parser.feed(b"\x15garbage") == ClientHello("a.test", ("acme-tls/1",))


# --- Not TLS ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", id="plain-http"),
        pytest.param(b"G", id="one-byte-of-http"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="h2-preface"),
        pytest.param(b"\x80\x2e\x01\x00\x02", id="sslv2-hello"),
        pytest.param(b"\x15\x03\x03\x00\x02\x02\x28", id="alert-record"),
        pytest.param(b"\x16\x02", id="record-version-major-2"),
        pytest.param(b"\x16\x03\x01\x00\x00", id="empty-record"),
        pytest.param(b"\x16\x03\x01\x40\x01", id="record-over-2^14"),
        pytest.param(b"\x16\x03\x01\x00\x30\x02", id="server-hello"),
        pytest.param(frame(b"\x01\x00\x00\x0a" + b"\x00" * 10), id="truncated-body"),
    ],
)
def test_not_tls(data: bytes) -> None:
    assert isinstance(parse_client_hello(data), NotTLS)


def test_empty_input_needs_more() -> None:
    assert parse_client_hello(b"") == NeedMore()


def test_plain_http_is_refused_at_the_first_byte() -> None:
    assert isinstance(ClientHelloParser().feed(b"G"), NotTLS)


# --- Fragmentation and size bounds ------------------------------------------------------------------------------


def test_hello_split_across_two_records_reassembles() -> None:
    message = unframe(HELLO)
    for cut in (1, 3, 4, 5, 100, len(message) - 1):
        assert parse_client_hello(frame(message, [cut])) == ClientHello("a.test", ("acme-tls/1",)), cut


def test_hello_in_one_byte_records_reassembles() -> None:
    message = unframe(HELLO)
    data = frame(message, [1] * len(message))
    assert len(data) == 6 * len(message)
    parser = ClientHelloParser()
    verdicts = [parser.feed(data[i : i + 1]) for i in range(len(data))]
    assert set(verdicts[:-1]) == {NeedMore()}
    assert verdicts[-1] == ClientHello("a.test", ("acme-tls/1",))


def test_openssl_splits_a_hello_over_2_14_bytes_and_it_reassembles() -> None:
    protocols = [f"{i:03d}" + "p" * 226 for i in range(70)]
    data = real_hello("big.test", protocols)
    assert data[3:5] == b"\x40\x00"  # a full first record: OpenSSL split it
    assert len(data) <= MAX_CLIENT_HELLO_BYTES
    assert parse_client_hello(data) == ClientHello("big.test", tuple(protocols))


def test_record_of_another_type_between_fragments_is_not_tls() -> None:
    message = unframe(HELLO)
    first, second = frame(message[:50]), frame(message[50:])
    assert isinstance(parse_client_hello(first + b"\x17" + second[1:]), NotTLS)
    assert parse_client_hello(first) == NeedMore()


def test_size_limit_is_on_raw_bytes() -> None:
    assert parse_client_hello(HELLO, max_bytes=len(HELLO)) == ClientHello("a.test", ("acme-tls/1",))
    assert isinstance(parse_client_hello(HELLO, max_bytes=len(HELLO) - 1), NotTLS)
    # The same hello in two records needs five bytes more.
    two = frame(unframe(HELLO), [10])
    assert isinstance(parse_client_hello(two, max_bytes=len(HELLO)), NotTLS)
    assert isinstance(parse_client_hello(two, max_bytes=len(two)), ClientHello)


def test_oversized_hello_is_refused_from_its_header() -> None:
    header = b"\x16\x03\x01\x40\x00" + b"\x01\xff\xff\xff"
    assert isinstance(parse_client_hello(header), NotTLS)
    # 16 KiB of body still fits the default limit, and waits for the rest.
    assert parse_client_hello(b"\x16\x03\x01\x40\x00" + b"\x01\x00\x40\x00") == NeedMore()


def test_tiny_records_that_cannot_end_within_the_limit_are_refused() -> None:
    message = hello_message(sni_ext(b"a" * 255) + alpn_ext(*[b"p" * 200] * 3))
    assert len(message) + 5 < 2000
    data = frame(message, [1] * len(message))  # six raw bytes per handshake byte
    assert len(data) > 2000
    verdict = parse_client_hello(data, max_bytes=2000)
    assert isinstance(verdict, NotTLS)
    assert "2000" in verdict.reason
    assert parse_client_hello(data[:1999], max_bytes=2000) == NeedMore()


# --- Extensions, synthetic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        (None, ClientHello(None, ())),
        (b"", ClientHello(None, ())),
        (ext(23, b"") + ext(0xFF01, b"\x00"), ClientHello(None, ())),
        (sni_ext(b"a.test") + alpn_ext(b"acme-tls/1"), ClientHello("a.test", ("acme-tls/1",))),
        (alpn_ext(b"h2", b"\xff\xfe") + sni_ext(b"b.test"), ClientHello("b.test", ("h2", "\xff\xfe"))),
        (sni_ext(b"x", name_type=7), ClientHello(None, ())),  # an unknown name type is skipped
        (sni_ext(b"a" * 255), ClientHello("a" * 255, ())),
    ],
)
def test_synthetic_extensions(extensions: bytes | None, expected: ClientHello) -> None:
    assert parse_client_hello(frame(hello_message(extensions))) == expected


@pytest.mark.parametrize(
    "extensions",
    [
        pytest.param(sni_ext(b"a.test") + sni_ext(b"b.test"), id="duplicate-extension"),
        pytest.param(sni_ext(b"a.test", b"b.test"), id="two-host-names"),
        pytest.param(sni_ext(b""), id="empty-host-name"),
        pytest.param(sni_ext(b"a" * 256), id="host-name-too-long"),
        pytest.param(sni_ext(b"a\x00.test"), id="nul-in-host-name"),
        pytest.param(sni_ext("bücher.test".encode()), id="non-ascii-host-name"),
        pytest.param(ext(0, b""), id="empty-sni-extension"),
        pytest.param(ext(0, vec(2, b"")), id="empty-server-name-list"),
        pytest.param(ext(0, vec(2, b"\x00" + vec(2, b"a.test")) + b"x"), id="bytes-after-server-name-list"),
        pytest.param(ext(16, vec(2, b"")), id="empty-alpn-list"),
        pytest.param(alpn_ext(b"h2", b""), id="empty-alpn-protocol"),
        pytest.param(ext(16, vec(2, b"\x05h2")), id="alpn-name-overruns"),
        pytest.param(ext(16, b"\x00"), id="alpn-truncated-length"),
        pytest.param(ext(0, b"") + b"\x00", id="trailing-byte-in-extensions"),
    ],
)
def test_malformed_extensions_are_not_tls(extensions: bytes) -> None:
    assert isinstance(parse_client_hello(frame(hello_message(extensions))), NotTLS)


def test_malformed_fixed_fields_are_not_tls() -> None:
    assert isinstance(parse_client_hello(frame(hello_message(None, session_id=b"\x00" * 33))), NotTLS)
    good = hello_message(b"")
    assert isinstance(parse_client_hello(frame(good + b"x")), ClientHello)  # next message: ignored
    body = good[4:] + b"x"  # a byte after the extensions, inside the message
    assert isinstance(parse_client_hello(frame(b"\x01" + len(body).to_bytes(3, "big") + body)), NotTLS)


host_names = st.binary(min_size=1, max_size=255).filter(lambda b: b.isascii() and b"\x00" not in b)
protocols = st.lists(st.binary(min_size=1, max_size=255), max_size=20)


@given(
    server_name=st.none() | host_names,
    alpn=protocols,
    cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=8),
    record_version=st.sampled_from([b"\x03\x00", b"\x03\x01", b"\x03\x03"]),
)
def test_synthetic_round_trip(
    server_name: bytes | None, alpn: list[bytes], cuts: list[int], record_version: bytes
) -> None:
    extensions = ext(10, b"\x00\x02\x00\x1d")
    if alpn:
        extensions += alpn_ext(*alpn)
    if server_name is not None:
        extensions += sni_ext(server_name)
    data = frame(hello_message(extensions), cuts, version=record_version)
    expected = ClientHello(
        None if server_name is None else server_name.decode("ascii"), tuple(p.decode("latin-1") for p in alpn)
    )
    assert parse_client_hello(data) == expected


# --- Totality and chunking (fuzz tests: their example counts come from the hypothesis profile) -------------------

VERDICT_TYPES = (ClientHello, NeedMore, NotTLS)


@pytest.mark.fuzz
@given(st.binary(max_size=4096))
@example(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
def test_total_on_any_bytes(data: bytes) -> None:
    assert isinstance(parse_client_hello(data), VERDICT_TYPES)


@pytest.mark.fuzz
@given(st.binary(max_size=300))
def test_total_on_any_handshake_payload(payload: bytes) -> None:
    """Random bytes behind a valid record and handshake header reach the body parser."""
    message = b"\x01" + len(payload).to_bytes(3, "big") + payload
    assert isinstance(parse_client_hello(frame(message)), VERDICT_TYPES)


SEEDS = [
    HELLO,
    real_hello(None),
    real_hello("bücher.example", ["h2", "http/1.1"]),
    frame(unframe(HELLO), [7, 50, 1]),
    frame(hello_message(sni_ext(b"a.test") + alpn_ext(b"acme-tls/1"))),
]


@st.composite
def mutated_hellos(draw: st.DrawFn) -> bytes:
    """A real or synthetic ClientHello with bytes replaced, inserted or deleted, then maybe truncated."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(min_value=0, max_value=255))
        if action == "replace" and data:
            data[pos] = byte
        elif action == "insert":
            data.insert(pos, byte)
        elif data:
            del data[pos]
    end = draw(st.integers(min_value=0, max_value=len(data)))
    return bytes(data[: draw(st.sampled_from([len(data), end]))])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.fuzz
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_hellos(), cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=10))
def test_mutations_are_total_and_chunking_never_matters(data: bytes, cuts: list[int]) -> None:
    whole = parse_client_hello(data)
    assert isinstance(whole, VERDICT_TYPES)
    parser = ClientHelloParser()
    verdicts = [parser.feed(chunk) for chunk in chunked(data, cuts)]
    assert verdicts[-1] == whole
    # Once decided, always decided: NeedMore can only precede the verdict.
    decided = [v for v in verdicts if not isinstance(v, NeedMore)]
    assert all(v == whole for v in decided)


@pytest.mark.fuzz
@given(data=mutated_hellos(), max_bytes=st.integers(min_value=0, max_value=1000))
def test_small_limits_are_total(data: bytes, max_bytes: int) -> None:
    verdict = parse_client_hello(data, max_bytes=max_bytes)
    assert isinstance(verdict, VERDICT_TYPES)
    if isinstance(verdict, NeedMore):
        assert len(data) < max_bytes


def corrupt_length(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` with one of its length prefixes (1 or 2 bytes, at a random offset) set to a random value."""
    if len(data) < 2:
        return data
    pos = draw(st.integers(min_value=0, max_value=len(data) - 2))
    width = draw(st.sampled_from([1, 2]))
    return data[:pos] + draw(st.integers(0, 256**width - 1)).to_bytes(width, "big") + data[pos + width :]


@st.composite
def structured_hellos(draw: st.DrawFn) -> tuple[bytes, ClientHello | None, bool]:
    """A ClientHello built field by field, what it asks for if nothing was corrupted (else ``None``), and
    whether its handshake header is intact (then the records hold the whole message).

    Extensions come in any order and number: SNI and ALPN, well-formed or with one length field corrupted,
    unknown types, duplicates, empty ones; then the message is framed in records of random sizes.
    """
    extensions, corrupted = b"", False
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(["sni", "alpn", "other", "raw"]))
        if kind == "sni":
            name = draw(st.binary(min_size=1, max_size=255).map(lambda b: bytes(c % 128 or 1 for c in b)))
            block, ext_type = sni_ext(name), 0
        elif kind == "alpn":
            offered = draw(st.lists(st.binary(min_size=1, max_size=255), min_size=1, max_size=20))
            block, ext_type = alpn_ext(*offered), 16
        elif kind == "other":
            ext_type = draw(st.integers(min_value=1, max_value=0xFFFF).filter(lambda t: t != 16))
            block = ext(ext_type, draw(st.binary(max_size=40)))
        else:
            block, ext_type, corrupted = draw(st.binary(max_size=40)), -1, True
        if draw(st.integers(0, 9)) == 0:
            block, corrupted = corrupt_length(block, draw), True
        corrupted |= ext_type in seen
        seen.add(ext_type)
        if kind == "sni":
            server_name = name.decode("ascii")
        elif kind == "alpn":
            alpn = tuple(p.decode("latin-1") for p in offered)
        extensions += block
    session_id = draw(st.binary(max_size=33))
    corrupted |= len(session_id) > 32
    omit = not extensions and draw(st.booleans())  # no extension block at all, as TLS 1.0 allows
    message = hello_message(None if omit else extensions, session_id=session_id)
    framed_whole = draw(st.integers(0, 9)) != 0
    if not framed_whole:
        message, corrupted = corrupt_length(message, draw), True
    cuts = draw(st.lists(st.integers(min_value=1, max_value=300), max_size=6))
    expected = None if corrupted else ClientHello(server_name, alpn)
    return frame(message, cuts, version=draw(st.sampled_from([b"\x03\x01", b"\x03\x03"]))), expected, framed_whole


@pytest.mark.fuzz
@given(hello=structured_hellos(), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_structured_hellos_are_total_and_decoded(
    hello: tuple[bytes, ClientHello | None, bool], cuts: list[int]
) -> None:
    data, expected, framed_whole = hello
    whole = parse_client_hello(data)
    assert isinstance(whole, VERDICT_TYPES)
    if framed_whole:  # every byte of the message has arrived: the verdict is final
        assert isinstance(whole, (ClientHello, NotTLS))
    if expected is not None:
        assert whole == expected
    parser = ClientHelloParser()
    assert [parser.feed(chunk) for chunk in chunked(data, cuts)][-1] == whole


@pytest.mark.fuzz
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    data=mutated_hellos() | st.binary(max_size=600),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=10),
    max_bytes=st.sampled_from([MAX_CLIENT_HELLO_BYTES, 1, 64, 300]),
)
async def test_read_client_hello_is_total_on_any_chunks(data: bytes, cuts: list[int], max_bytes: int) -> None:
    """Whatever arrives, in whatever chunks: every byte read is returned, and the verdict is the parser's."""
    received, verdict = await read_client_hello(ChunkStream(chunked(data, cuts)), max_bytes=max_bytes)
    assert data.startswith(received)
    assert len(received) <= max_bytes
    if verdict is None:  # EOF first: everything was read and it was still a valid prefix
        assert received == data
        assert parse_client_hello(data, max_bytes=max_bytes) == NeedMore()
    else:
        assert parse_client_hello(received, max_bytes=max_bytes) == verdict == parse_client_hello(data, max_bytes=max_bytes)


# --- read_client_hello --------------------------------------------------------------------------------------------


class ChunkStream(trio.abc.ReceiveStream):
    """Hands out the given chunks one per receive (cut to ``max_bytes``), then EOF; records each request."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = [c for c in chunks if c]
        self.requests: list[int | None] = []

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        self.requests.append(max_bytes)
        if not self._chunks:
            return b""
        chunk = self._chunks.pop(0)
        if max_bytes is not None and len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self._chunks.insert(0, rest)
        return chunk

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_read_returns_every_byte_and_the_hello() -> None:
    stream = ChunkStream([HELLO[:10], HELLO[10:300], HELLO[300:]])
    received, verdict = await read_client_hello(stream)
    assert received == HELLO
    assert verdict == ClientHello("a.test", ("acme-tls/1",))


async def test_read_stops_at_the_verdict() -> None:
    stream = ChunkStream([b"GET / HTTP/1.1\r\n", b"Host: a.test\r\n\r\n"])
    received, verdict = await read_client_hello(stream)
    assert received == b"GET / HTTP/1.1\r\n"
    assert isinstance(verdict, NotTLS)
    assert len(stream.requests) == 1


async def test_read_keeps_bytes_after_the_hello_in_the_same_chunk() -> None:
    received, verdict = await read_client_hello(ChunkStream([HELLO + b"\x14\x03\x03\x00\x01\x01"]))
    assert received == HELLO + b"\x14\x03\x03\x00\x01\x01"
    assert isinstance(verdict, ClientHello)


@pytest.mark.parametrize("chunks", [[], [HELLO[:1]], [HELLO[:-1]]])
async def test_read_reports_eof_before_a_verdict(chunks: list[bytes]) -> None:
    received, verdict = await read_client_hello(ChunkStream(chunks))
    assert received == b"".join(chunks)
    assert verdict is None


async def test_read_never_asks_for_more_than_max_bytes() -> None:
    message = hello_message(sni_ext(b"a" * 255) + alpn_ext(*[b"p" * 200] * 10))
    data = frame(message, [1] * len(message))
    stream = ChunkStream([data])
    received, verdict = await read_client_hello(stream, max_bytes=3000)
    assert isinstance(verdict, NotTLS)
    assert received == data[:3000]
    assert all(r is not None and r >= 1 for r in stream.requests)


async def test_read_with_a_trickling_client_is_linear() -> None:
    """A hello in 1-byte records, one byte per receive: about 10k reads, each O(1) for the parser."""
    message = unframe(HELLO)
    data = frame(message, [1] * len(message))
    with trio.fail_after(5):  # generous: a quadratic parser would take minutes of CPU on a bigger hello
        received, verdict = await read_client_hello(ChunkStream([data[i : i + 1] for i in range(len(data))]))
    assert received == data
    assert verdict == ClientHello("a.test", ("acme-tls/1",))


async def test_read_from_a_trio_tls_client() -> None:
    client_ctx = ssl.create_default_context()
    client_ctx.set_alpn_protocols(["acme-tls/1", "http/1.1"])
    client_raw, server_raw = trio.testing.memory_stream_pair()
    client = trio.SSLStream(client_raw, client_ctx, server_hostname="c.test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)  # blocks waiting for a ServerHello that never comes
        received, verdict = await read_client_hello(server_raw)
        nursery.cancel_scope.cancel()
    assert verdict == ClientHello("c.test", ("acme-tls/1", "http/1.1"))
    assert parse_client_hello(received) == verdict
