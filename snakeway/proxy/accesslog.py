"""The access log: one line per request, written with one ``write(2)``.

Lines look like the rest of snakeway's log (``server.log.format``), so the default (stderr) reads as one
stream. In ``text``::

    2026-11-28 04:30:36,682 INFO [7698] snakeway.access: 127.0.0.1 a.test "GET / HTTP/1.1" 200 512 1.6ms \\
        127.0.0.1:9000 sni=a.test TLSv1.3 "curl/8.5.0"

(one line, folded here): client address, Host, request line, status, bytes sent (response head included), duration, what
answered (an upstream endpoint, ``static``, ``redirect``, or ``-`` for snakeway's own answers), ``sni=… version``
on TLS listeners, and the User-Agent; ``-`` for a header the request lacks, ``[pid]`` with several workers. In
``json`` the same fields are the keys ``client``, ``host``, ``method``, ``path``, ``protocol``, ``status``,
``bytes``, ``duration_ms``, ``upstream``, ``sni``, ``tls_version`` and ``user_agent`` (``null`` where the text
has ``-`` or nothing), after ``time``, ``level``, ``logger``, ``pid`` and ``worker`` as in
:mod:`snakeway.logs`. Bytes spliced through a WebSocket tunnel are not counted, only its ``101`` head.

The line is formatted here rather than by
:mod:`logging`, which costs several times as much per request, and written straight to the file descriptor: a
line is one ``write`` (atomic between processes appending to the same file or pipe), nothing is buffered, so
nothing is lost or delayed when a worker is killed.

Fields a client chooses (Host, method, request target, User-Agent, SNI; the version is h11's ``digit.digit``)
are escaped as nginx escapes them: a ``"``, a ``\\``, a control character or a byte outside ASCII becomes
``\\xHH``, so a request target cannot end the quoted field, forge a second line or smuggle terminal escapes into
the log (in JSON the backslash of a ``\\xHH`` is escaped again, as JSON's grammar asks). A field with nothing to
escape (nearly all) costs a few string scans, about 0.1 µs.

``server.access_log`` chooses where: ``"stderr"``, ``"off"``, or a file opened for appending. A reload opens the
file again, which is how log rotation works: move the file away, then send SIGHUP.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from snakeway import logs
from snakeway.proxy.headers import request_headers

if TYPE_CHECKING:
    from snakeway.tls.handshake import HandshakeInfo

STDERR = "stderr"
OFF = "off"
FILE_MODE = 0o640

logger = logging.getLogger("snakeway.access")


def escape(field: bytes) -> str:
    """``field`` for the log: ``"``, ``\\``, controls and non-ASCII bytes as ``\\xHH`` (nginx's escaping)."""
    text = field.decode("latin-1")
    if _loggable(text):
        return text
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}" for b in field)


def escape_text(field: str) -> str:
    """:func:`escape` for a field held as text (the SNI name), escaped as its UTF-8 bytes."""
    return field if _loggable(field) else escape(field.encode("utf-8", "surrogateescape"))


def _loggable(text: str) -> bool:
    # The fast path: printable ASCII (which excludes controls and DEL) without a quote or a backslash.
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


class LogFile:
    """One access-log destination and the descriptor it owns.

    Opened before a configuration is applied (:meth:`open` can fail), handed to :meth:`AccessLog.reopen`
    when it is, and closed by whoever holds it last: the reload that failed, or the access log once it is
    replaced. Closing twice is harmless; stderr and ``off`` own nothing to close.
    """

    __slots__ = ("fd", "_owned")

    def __init__(self, fd: int | None, *, owned: bool) -> None:
        self.fd = fd
        self._owned = owned

    @classmethod
    def open(cls, target: str | Path) -> LogFile:
        """The destination ``target`` names; ``OSError`` if a file cannot be opened."""
        if target == OFF:
            return cls(None, owned=False)
        if target == STDERR:
            return cls(sys.stderr.fileno(), owned=False)
        return cls(os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE), owned=True)

    def close(self) -> None:
        if self._owned and self.fd is not None:
            self._owned = False
            os.close(self.fd)


NO_LOG = LogFile(None, owned=False)


class AccessLog:
    """Where access lines go; :meth:`reopen` swaps the destination (on start and on every reload)."""

    def __init__(self) -> None:
        self._file = NO_LOG
        self._fd: int | None = None
        self._pid = ""
        self._json = False
        # Fields as written, by their bytes: a method, Host, User-Agent or version comes back request after
        # request, and a lookup costs less than escaping again. None (a header the request lacks) is "-".
        self._known: dict[bytes | None, str] = {}
        self._second = -1
        self._stamp = ""
        self._failed = False

    def reopen(self, opened: LogFile, *, with_pid: bool, json: bool = False) -> None:
        """Write to ``opened`` from now on, in JSON or text, and close the previous file. Cannot fail."""
        old = self._file
        self._file, self._fd = opened, opened.fd
        self._json = json
        self._known = {None: "null" if json else "-"}
        self._second = -1
        if json:
            worker = logs.worker()
            self._pid = f',"pid":{os.getpid()}' + (f',"worker":{worker}' if worker is not None else "")
        else:
            self._pid = f" [{os.getpid()}]" if with_pid else ""
        self._failed = False
        if old is not opened:
            old.close()

    def close(self) -> None:
        self.reopen(NO_LOG, with_pid=False)

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def request(
        self, client_ip: str, method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]],
        status: int, sent: int, seconds: float, upstream: str, handshake: HandshakeInfo | None,
    ) -> None:
        """One line for a request: ``headers`` are its headers as a list, ``sent`` the bytes of the
        response (head included), ``upstream`` what answered (an endpoint, ``static``, ``redirect`` or ``-``)."""
        fd = self._fd
        if fd is None:
            return
        fields = request_headers(headers)  # a connection passes a RequestHeaders: read, not searched
        host, agent = fields.host, fields.agent
        known = self._known
        if (written_host := known.get(host)) is None:
            written_host = self._learn(host)
        if (written_agent := known.get(agent)) is None:
            written_agent = self._learn(agent)
        if (written_method := known.get(method)) is None:
            written_method = self._learn(method)
        now = time.time()
        second = int(now)
        if self._json:
            line = self._json_line(
                now, client_ip, written_method, target, version, written_host, written_agent, status, sent, seconds,
                upstream, handshake,
            )
        else:
            if second != self._second:  # logging's asctime, formatted once a second
                self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            tls = ""
            if handshake is not None:
                tls = f" sni={escape_text(handshake.sni) if handshake.sni else '-'} {handshake.tls_version}"
            ms = _MILLISECONDS[int((now - second) * 1000)]
            line = (
                f"{self._stamp},{ms} INFO{self._pid} snakeway.access: {client_ip} "
                f'{written_host} "{written_method} {escape(target)} HTTP/{version.decode("ascii")}" '
                f'{status} {sent} {seconds * 1000:.1f}ms {upstream}{tls} "{written_agent}"\n'
            )
        try:
            os.write(fd, line.encode("utf-8", "backslashreplace"))
        except OSError as exc:
            if not self._failed:  # once, not once per request
                self._failed = True
                logger.error("cannot write the access log: %s; lines are dropped while this lasts", exc)

    def _learn(self, field: bytes | None) -> str:
        """``field`` as written (escaped; a JSON string in JSON), remembered if short."""
        assert field is not None  # None is known from the start
        written = _json_bytes(field) if self._json else escape(field)
        if len(field) <= KNOWN_FIELD_BYTES:
            if len(self._known) >= KNOWN_FIELDS:
                self._known = {None: self._known[None]}
            self._known[field] = written
        return written

    def _json_line(
        self, now: float, client_ip: str, method: str, target: bytes, version: bytes, host: str, agent: str,
        status: int, sent: int, seconds: float, upstream: str, handshake: HandshakeInfo | None,
    ) -> str:
        """The JSON line: ``method``, ``host`` and ``agent`` are JSON strings (or ``null``) already."""
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        if handshake is not None:
            sni = _json_text(escape_text(handshake.sni)) if handshake.sni else "null"
            tls = f'"{handshake.tls_version}"'
        else:
            sni = tls = "null"
        ms = _MILLISECONDS[int((now - second) * 1000)]
        served = "null" if upstream == NOBODY else f'"{upstream}"'  # endpoints and names need no escaping
        return (
            f'{{"time":"{self._stamp}.{ms}Z","level":"info","logger":"snakeway.access"'
            f'{self._pid},"client":"{client_ip}","host":{host},'
            f'"method":{method},"path":{_json_bytes(target)},'
            f'"protocol":"HTTP/{version.decode("ascii")}","status":{status},"bytes":{sent},'
            f'"duration_ms":{seconds * 1000:.1f},"upstream":{served},'
            f'"sni":{sni},"tls_version":{tls},"user_agent":{agent}}}\n'
        )


# A stamp's milliseconds, 000 to 999: an index costs a third of formatting one with :03d.
_MILLISECONDS = tuple(f"{ms:03d}" for ms in range(1000))

# Fields remembered as written (AccessLog._known): at most this many, of at most this many bytes each.
KNOWN_FIELDS = 1024
KNOWN_FIELD_BYTES = 256

# What ``upstream`` is when nothing but snakeway answered (an error, an ACME challenge).
NOBODY = "-"
STATIC = "static"
REDIRECT = "redirect"


def _json_bytes(field: bytes | None) -> str:
    """``field`` as a JSON string, escaped as in a text line (see :func:`escape`); ``null`` for None."""
    if field is None:
        return "null"
    return _json_text(escape(field))


def _json_text(text: str) -> str:
    # escape() leaves printable ASCII: only the backslash of a \xHH needs JSON's escaping.
    return f'"{text}"' if "\\" not in text else json.dumps(text)
