"""The access log's escaping of the fields a client chooses (Host, method, request target, User-Agent, SNI)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.proxy.accesslog import AccessLog, LogFile, escape, escape_text
from snakeway.tls.handshake import HandshakeInfo

_ESCAPED = re.compile(r"\\x([0-9A-F]{2})")


def unescape(text: str) -> bytes:
    return re.sub(rb"\\x([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode("ascii"))


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        (b"/plain?a=1&b=%22", "/plain?a=1&b=%22"),
        (b'/a"b', r"/a\x22b"),
        (b"/a\\b", r"/a\x5Cb"),
        (b"/a\r\nfake line", r"/a\x0D\x0Afake line"),
        (b"/\x1b[31mred", r"/\x1B[31mred"),
        (b"/caf\xc3\xa9\x7f", r"/caf\xC3\xA9\x7F"),
        (b"", ""),
    ],
)
def test_escape(raw: bytes, logged: str) -> None:
    assert escape(raw) == logged


@given(st.binary())
def test_escaped_fields_are_printable_quote_free_and_reversible(raw: bytes) -> None:
    logged = escape(raw)
    assert all(0x20 <= ord(c) < 0x7F for c in logged)
    assert '"' not in logged
    assert "\\" not in _ESCAPED.sub("", logged)  # every backslash starts an escape
    assert unescape(logged) == raw


@given(st.text())
def test_escape_text_is_escape_of_the_utf8(text: str) -> None:
    assert escape_text(text) == escape(text.encode("utf-8", "surrogateescape"))


def test_a_quote_in_the_target_cannot_forge_a_field_or_a_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog()
    log.reopen(LogFile.open(path), with_pid=False)
    try:
        target = b'/x" 200 0.1ms\n2026-01-01 00:00:00,000 INFO snakeway.access: 6.6.6.6 "GET /forged'
        handshake = HandshakeInfo(client="127.0.0.1:1", tls_version="TLSv1.3", cipher="x", sni='evil"\n.test')
        headers = [(b"host", b'a.test"\n'), (b"user-agent", b'ua" "x\n')]
        log.request("127.0.0.1", b"GET", target, b"1.1", headers, 404, 99, 0.001, "-", handshake)
    finally:
        log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].count('"') == 4
    forged = r"/x\x22 200 0.1ms\x0A2026-01-01 00:00:00,000 INFO snakeway.access: 6.6.6.6 \x22GET /forged"
    assert f'127.0.0.1 a.test\\x22\\x0A "GET {forged} HTTP/1.1" 404 99 ' in lines[0]
    assert lines[0].endswith(r'sni=evil\x22\x0A.test TLSv1.3 "ua\x22 \x22x\x0A"')
    assert os.stat(path).st_size == len(lines[0]) + 1


def test_a_json_line_keeps_what_a_client_sent_in_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog()
    log.reopen(LogFile.open(path), with_pid=False, json=True)
    try:
        target = b'/x","status":200,"y":"\n{"forged":1}'
        handshake = HandshakeInfo(client="127.0.0.1:1", tls_version="TLSv1.2", cipher="x", sni='evil"\n.test')
        headers = [(b"user-agent", "caf\u00e9\\".encode())]
        log.request("127.0.0.1", b"GET", target, b"1.1", headers, 502, 7, 0.0123, "-", handshake)
    finally:
        log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["path"] == r'/x\x22,\x22status\x22:200,\x22y\x22:\x22\x0A{\x22forged\x22:1}'
    assert unescape(entry["path"]) == target
    assert (entry["status"], entry["bytes"], entry["duration_ms"]) == (502, 7, 12.3)
    assert (entry["host"], entry["upstream"], entry["sni"], entry["tls_version"]) == (
        None, None, r"evil\x22\x0A.test", "TLSv1.2"
    )
    assert unescape(entry["user_agent"]) == "caf\u00e9\\".encode()
    assert entry["pid"] == os.getpid() and "worker" not in entry



def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_reopen_closes_the_replaced_file_and_a_log_file_closes_once(tmp_path: Path) -> None:
    log = AccessLog()
    first = LogFile.open(tmp_path / "first.log")
    log.reopen(first, with_pid=False)
    second = LogFile.open(tmp_path / "second.log")
    assert first.fd is not None and second.fd is not None
    log.reopen(second, with_pid=False)
    assert not _is_open(first.fd)
    log.request("127.0.0.1", b"GET", b"/", b"1.1", [], 200, 0, 0.001, "static", None)
    assert (tmp_path / "second.log").read_text().count("\n") == 1
    assert (tmp_path / "first.log").read_text() == ""
    log.close()
    assert not _is_open(second.fd)
    # The freed numbers go to other files (the lowest free number is reused): a second close leaves them be.
    others = [os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT) for name in ("a", "b")]
    assert second.fd in others
    second.close()
    assert all(_is_open(fd) for fd in others)
    for fd in others:
        os.close(fd)
    stderr = LogFile.open("stderr")
    stderr.close()
    assert _is_open(stderr.fd)  # not ours to close
    assert LogFile.open("off").fd is None
