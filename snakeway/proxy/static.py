"""Static files: what to answer, decided without trio.

Theory of operation
-------------------
:func:`plan_static` turns one request into a *plan*: a frozen dataclass that
says exactly what to send. It may look at the filesystem (``realpath``,
``stat``, ``scandir``) because that is part of deciding, but it never reads a
file's contents and never touches trio; :mod:`snakeway.proxy.static_io` carries
the plan out. Everything here is synchronous and total: for any input it
returns a plan and does not raise.

Mapping a URL to a file, in order:

1. Only ``GET`` and ``HEAD``; anything else is ``405`` with ``Allow``.
2. The path arrives as :mod:`snakeway.uri` normalised it (escapes
   checked, dot-segments resolved, the route's path in the same form): it
   must be printable ASCII (``400`` otherwise), then the route prefix is
   stripped on a segment boundary (``/static`` + ``/static/a.css`` gives
   ``a.css``).
3. Each segment is percent-decoded on its own into one file name: a decoded
   ``/``, ``\\`` or NUL, and a ``.`` or ``..`` segment however spelt, names
   no file and is ``404``. Empty segments are dropped, so ``a//b`` is ``a/b``
   (nginx's ``merge_slashes``).
4. The candidate is resolved with ``realpath`` and must lie inside the
   ``realpath`` of ``file_dir``: a symlink that points outside is ``404``.
   Symlinks inside are followed.
5. A directory without a trailing slash is ``301`` to the slashed URL (the
   query is kept). With the slash: the index file if there is one, else a
   listing when enabled, else ``403`` as nginx does. A trailing slash on a
   regular file, and anything that is neither a file nor a directory (FIFOs,
   devices), is ``404``.

Hidden files (``.well-known``, ``.env``) are served when asked for by name,
as nginx does; listings leave them out, as nginx's autoindex does. Do not put
secrets under ``file_dir``.

For a file: ``If-Match`` / ``If-Unmodified-Since`` (``412``), then
``If-None-Match`` (weak comparison, lists and ``*``) or, without it,
``If-Modified-Since`` (``304``; a date later than the server's clock is
ignored, RFC 9110 §13.1.3, so ``Fri, 31 Dec 9999`` cannot pin a stale copy in
a cache), then a single ``Range`` on ``GET`` guarded by
``If-Range`` (``206``, or ``416`` with ``Content-Range: bytes */size``). Several
ranges, a malformed ``Range`` or another unit are ignored and the whole file
is sent with ``200``, which RFC 9110 §14.2 allows. The ETag is strong, built
from the modification time in nanoseconds and the size.
"""

from __future__ import annotations

import html
import itertools
import mimetypes
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import final
from urllib.parse import quote, unquote_to_bytes

from snakeway.config.model import StaticSite
from snakeway.proxy.routing import strip_prefix
from snakeway.proxy.validators import (
    etag_matches,
    header_map,
    http_date,
    if_range_holds,
    parse_http_date,
    parse_range,
)

Header = tuple[bytes, bytes]

#: A listing stops after this many directory entries (bounded memory).
MAX_LISTING_ENTRIES = 10_000

# Checked before the system's mime.types, which differ between distributions.
_TYPE_OVERRIDES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".htm": "text/html",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".gz": "application/gzip",
    ".txt": "text/plain",
}
_UTF8_TYPES = frozenset(
    {"application/javascript", "application/json", "application/manifest+json", "application/xml", "image/svg+xml"}
)
_BAD_CHARS = re.compile(r"[^\x21-\x7e]")  # controls, space, DEL and non-ASCII


@final
@dataclass(frozen=True)
class SendFile:
    """Send ``length`` bytes of the regular file ``path``, from offset ``start``.

    ``path`` is absolute and already resolved (no symlinks); ``headers``
    include ``Content-Length`` (and ``Content-Range`` for ``206``).
    """

    path: str
    status: int
    headers: tuple[Header, ...]
    start: int
    length: int


@dataclass(frozen=True)
class Reply:
    """A complete response held in memory. ``headers`` carry its framing."""

    status: int
    headers: tuple[Header, ...]
    body: bytes = b""


@final
@dataclass(frozen=True)
class Listing(Reply):
    """A ``200`` HTML directory listing."""


@final
@dataclass(frozen=True)
class Redirect(Reply):
    """A ``301`` that adds the trailing slash to a directory's URL."""

    @property
    def location(self) -> bytes:
        return dict(self.headers)[b"location"]


@final
@dataclass(frozen=True)
class NotModified(Reply):
    """A ``304``: the client's cached copy is current. No body."""


@final
@dataclass(frozen=True)
class ErrorReply(Reply):
    """A ``4xx``/``5xx`` with a short plain-text body."""


StaticPlan = SendFile | Listing | Redirect | NotModified | ErrorReply


def error_reply(status: int, extra: tuple[Header, ...] = ()) -> ErrorReply:
    """An error with a one-line plain-text body such as ``404 Not Found``."""
    body = f"{status} {HTTPStatus(status).phrase}\n".encode("ascii")
    return ErrorReply(status, _text_headers(b"text/plain; charset=utf-8", body) + extra, body)


def split_target(target: bytes) -> tuple[str, str]:
    """Split an origin-form request target into (path, query), both still percent-encoded.

    Bytes outside ASCII survive as Latin-1 characters, which :func:`plan_static`
    rejects with ``400``.
    """
    path, _, query = target.decode("latin-1").partition("?")
    return path, query


def plan_static(
    site: StaticSite,
    method: bytes,
    path: str,
    headers: Iterable[Header],
    *,
    query: str = "",
    now: float | None = None,
) -> StaticPlan:
    """Decide the response to a request for a static file.

    Args:
      site: the static site whose route matched.
      method: the request method, e.g. ``b"GET"``.
      path: the request target's path as routed: normalised
        (:func:`snakeway.uri.normalize_path`), without the query;
        it starts with ``site.route.path``.
      headers: the request headers (any case; repeated fields are joined).
      query: the raw query, kept only in a trailing-slash redirect (and
        only if it is printable ASCII).
      now: the server's current time (Unix seconds) for ``If-Modified-Since``;
        defaults to ``time.time()``.

    Returns:
      A :class:`SendFile`, :class:`Listing`, :class:`Redirect`,
      :class:`NotModified` or :class:`ErrorReply`; see the module docstring.

    Error handling:
      Never raises for any ``path`` or header values: filesystem errors
      become ``404`` (``403`` for an unreadable directory).
    """
    if method not in (b"GET", b"HEAD"):
        return error_reply(405, ((b"allow", b"GET, HEAD"),))
    if _BAD_CHARS.search(path) or not path.startswith("/"):
        return error_reply(400)
    rel = strip_prefix(site.route.path, path)
    if rel is None:
        return error_reply(404)
    names = _decode_segments(rel)
    if isinstance(names, ErrorReply):
        return names
    root = os.path.realpath(site.file_dir)
    target = _inside(root, os.path.join(root, *names))
    st = _stat(target)
    if target is None or st is None:
        return error_reply(404)
    if stat.S_ISDIR(st.st_mode):
        if not path.endswith("/"):
            keep_query = query and not _BAD_CHARS.search(query)
            return _redirect("/" + path.lstrip("/") + "/" + (f"?{query}" if keep_query else ""))
        if site.index:
            index = _inside(root, os.path.join(target, site.index))
            index_st = _stat(index)
            if index is not None and index_st is not None and stat.S_ISREG(index_st.st_mode):
                return _plan_file(index, index_st, method, header_map(headers), now)
        if site.directory_listing:
            return _listing(root, target, path, at_root=not names)
        return error_reply(403)
    if not stat.S_ISREG(st.st_mode) or path.endswith("/"):
        return error_reply(404)
    return _plan_file(target, st, method, header_map(headers), now)


# -- URL to filesystem path ------------------------------------------------------------


def _decode_segments(rel: str) -> list[str] | ErrorReply:
    """Percent-decode each segment on its own into a file name, refusing anything that could climb out."""
    names = []
    for raw in rel.split("/"):
        if not raw:
            continue
        decoded = unquote_to_bytes(raw)
        if b"/" in decoded or b"\\" in decoded or b"\x00" in decoded or decoded in (b".", b".."):
            return error_reply(404)
        names.append(os.fsdecode(decoded))  # surrogateescape: any byte name is reachable
    return names


def _inside(root: str, candidate: str) -> str | None:
    """``candidate`` with symlinks resolved, or None if that lands outside ``root``."""
    real = os.path.realpath(candidate)
    try:
        return real if os.path.commonpath([root, real]) == root else None
    except ValueError:  # different drives (Windows)
        return None


def _stat(path: str | None) -> os.stat_result | None:
    if path is None:
        return None
    try:
        return os.stat(path)
    except OSError:
        return None


# -- files: validators, conditionals, ranges ----------------------------------------------


def _plan_file(
    path: str, st: os.stat_result, method: bytes, req: dict[bytes, bytes], now: float | None
) -> StaticPlan:
    size = st.st_size
    mtime = int(st.st_mtime)
    etag = b'"%x-%x"' % (st.st_mtime_ns, size)
    validators = ((b"etag", etag), (b"last-modified", http_date(mtime)))

    if (if_match := req.get(b"if-match")) is not None:
        if not etag_matches(if_match, etag, weak=False):
            return error_reply(412)
    elif (ius := parse_http_date(req.get(b"if-unmodified-since"))) is not None and mtime > ius:
        return error_reply(412)

    if (if_none_match := req.get(b"if-none-match")) is not None:
        if etag_matches(if_none_match, etag, weak=True):
            return NotModified(304, validators)
    elif (ims := parse_http_date(req.get(b"if-modified-since"))) is not None and mtime <= ims <= _now(now):
        return NotModified(304, validators)

    headers: tuple[tuple[bytes, bytes], ...] = (
        (b"content-type", _content_type(path)), *validators, (b"accept-ranges", b"bytes")
    )
    range_value = req.get(b"range")
    if method == b"GET" and range_value is not None and if_range_holds(req.get(b"if-range"), etag, mtime):
        byte_range = parse_range(range_value, size)
        if byte_range is not None:
            start, length = byte_range
            if length == 0:
                return error_reply(416, ((b"content-range", b"bytes */%d" % size),))
            content_range = b"bytes %d-%d/%d" % (start, start + length - 1, size)
            headers += ((b"content-range", content_range), (b"content-length", b"%d" % length))
            return SendFile(path, 206, headers, start, length)
    return SendFile(path, 200, (*headers, (b"content-length", b"%d" % size)), 0, size)


def _now(now: float | None) -> float:
    """The server's clock: an ``If-Modified-Since`` later than this is not a valid date (RFC 9110 §13.1.3)."""
    return time.time() if now is None else now


def _content_type(path: str) -> bytes:
    ext = os.path.splitext(path)[1].lower()
    mime = _TYPE_OVERRIDES.get(ext) or mimetypes.guess_type("f" + ext)[0] or "application/octet-stream"
    if mime.startswith("text/") or mime in _UTF8_TYPES:
        mime += "; charset=utf-8"
    return mime.encode("ascii")


# -- in-memory replies ----------------------------------------------------------------


def _redirect(location: str) -> Redirect:
    body = f"Moved Permanently: {location}\n".encode("ascii")
    headers = ((b"location", location.encode("ascii")), *_text_headers(b"text/plain; charset=utf-8", body))
    return Redirect(301, headers, body)


def _text_headers(content_type: bytes, body: bytes) -> tuple[Header, ...]:
    return ((b"content-type", content_type), (b"content-length", b"%d" % len(body)))


def _listing(root: str, directory: str, url_path: str, *, at_root: bool) -> ErrorReply | Listing:
    """An HTML index of ``directory``: escaped names, percent-encoded links, dirs first."""
    try:
        with os.scandir(directory) as entries:
            rows = [row for entry in itertools.islice(entries, MAX_LISTING_ENTRIES) if (row := _row(root, entry))]
    except OSError:
        return error_reply(403)
    rows.sort(key=lambda row: (not row[0], row[1]))
    title = html.escape("Index of " + unquote_to_bytes(url_path).decode("utf-8", "replace"))
    lines = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>{title}</title></head>',
        f"<body><h1>{title}</h1><table>",
        "<tr><th>Name</th><th>Last modified (UTC)</th><th>Size</th></tr>",
    ]
    if not at_root:
        lines.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for is_dir, name, st in rows:
        raw = os.fsencode(name)
        slash = "/" if is_dir else ""
        href = html.escape(quote(raw, safe="") + slash)
        label = html.escape(raw.decode("utf-8", "replace") + slash)
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.st_mtime))
        size = "-" if is_dir else str(st.st_size)
        lines.append(f'<tr><td><a href="{href}">{label}</a></td><td>{when}</td><td>{size}</td></tr>')
    lines.append("</table></body></html>\n")
    body = "\n".join(lines).encode("utf-8")
    return Listing(200, _text_headers(b"text/html; charset=utf-8", body), body)


def _row(root: str, entry: os.DirEntry[str]) -> tuple[bool, str, os.stat_result] | None:
    """(is_dir, name, stat) for a listable entry; None for hidden, broken or escaping ones."""
    if entry.name.startswith("."):
        return None
    try:
        if entry.is_symlink() and _inside(root, entry.path) is None:
            return None
        st = entry.stat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return (True, entry.name, st)
    return (False, entry.name, st) if stat.S_ISREG(st.st_mode) else None
