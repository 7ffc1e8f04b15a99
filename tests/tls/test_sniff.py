"""Classifying a TLS port's first bytes (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.tls.sniff import HTTPS_REQUIRED_RESPONSE, MAX_METHOD_BYTES, FirstBytes, classify


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", FirstBytes.NEED_MORE),
        (b"\x16\x03\x01\x02\x00", FirstBytes.TLS),
        (b"\x16", FirstBytes.TLS),
        (b"GET / HTTP/1.1\r\n", FirstBytes.PLAIN_HTTP),
        (b"OPTIONS * HTTP/1.1\r\n", FirstBytes.PLAIN_HTTP),
        (b"PRI * HTTP/2.0\r\n", FirstBytes.PLAIN_HTTP),
        (b"G", FirstBytes.NEED_MORE),
        (b"POS", FirstBytes.NEED_MORE),
        (b"GET ", FirstBytes.PLAIN_HTTP),
        (b"GE /", FirstBytes.OTHER),  # too short a method
        (b"get / HTTP/1.1", FirstBytes.OTHER),
        (b"GET/", FirstBytes.OTHER),
        (b"A" * MAX_METHOD_BYTES, FirstBytes.OTHER),
        (b"A" * (MAX_METHOD_BYTES - 1), FirstBytes.NEED_MORE),
        (b"\x80\x2e\x01", FirstBytes.OTHER),  # SSLv2-style hello
        (b"SSH-2.0-OpenSSH", FirstBytes.OTHER),
    ],
)
def test_classify(data: bytes, expected: FirstBytes) -> None:
    assert classify(data) is expected


@given(st.binary(max_size=64))
def test_need_more_is_bounded(data: bytes) -> None:
    verdict = classify(data)
    if verdict is FirstBytes.NEED_MORE:
        assert len(data) < MAX_METHOD_BYTES
    # Appending never turns a decided verdict into another one.
    if verdict is not FirstBytes.NEED_MORE:
        assert classify(data + b"x") is verdict


def test_response_is_well_formed() -> None:
    head, _, body = HTTPS_REQUIRED_RESPONSE.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"this port speaks HTTPS" in body
