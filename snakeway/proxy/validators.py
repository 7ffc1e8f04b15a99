"""HTTP validators: conditional requests and byte ranges, decided without I/O.

The parsing half of :func:`snakeway.proxy.static.plan_static`'s answers to
``If-Match``, ``If-None-Match``, ``If-Modified-Since``,
``If-Unmodified-Since``, ``If-Range`` and ``Range``. Every function is total:
a header value it cannot read is reported as absent (``None``), which is
what RFC 9110 asks of a server for an invalid date or range.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Iterable

Header = tuple[bytes, bytes]

_ETAG = re.compile(rb'(W/)?("[^"]*")')
_RANGE = re.compile(rb"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def header_map(headers: Iterable[Header]) -> dict[bytes, bytes]:
    """The request's headers by lower-case name; a repeated field's values joined with ``, ``."""
    joined: dict[bytes, bytes] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = joined[key] + b", " + value if key in joined else value
    return joined


def etag_matches(value: bytes, etag: bytes, *, weak: bool) -> bool:
    """RFC 9110 §8.8.3.2: weak comparison ignores ``W/``; strong needs both strong."""
    if value.strip() == b"*":
        return True
    return any(tag == etag and (weak or not w) for w, tag in _ETAG.findall(value))


def if_range_holds(value: bytes | None, etag: bytes, mtime: int) -> bool:
    """True if Range applies: no If-Range, or it names this exact version (strongly)."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith((b'"', b"W/")):
        return value == etag
    return parse_http_date(value) == mtime


def parse_range(value: bytes, size: int) -> tuple[int, int] | None:
    """(start, length) for a single byte range; length 0 means unsatisfiable.

    None means "ignore the header": malformed, another unit, or several ranges.
    """
    match = _RANGE.fullmatch(value)
    if b"," in value or match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the final n bytes
        suffix = _bounded_int(last)
        if suffix == 0:
            return (0, 0)
        if size == 0:  # satisfiable per RFC 9110 but not expressible: send the empty 200
            return None
        start = max(0, size - suffix)
        return (start, size - start)
    start = _bounded_int(first)
    end = _bounded_int(last) if last else size - 1
    if last and end < start:
        return None  # an invalid range-spec: ignore the header
    if start >= size:
        return (0, 0)
    return (start, min(end, size - 1) - start + 1)


def _bounded_int(digits: bytes) -> int:
    # int() refuses more than 4300 digits; anything past 19 digits is beyond any file anyway.
    return int(digits) if len(digits) <= 19 else 2**63


def parse_http_date(value: bytes | None) -> int | None:
    """An HTTP-date as a Unix timestamp, or None if absent, unparsable or not a real date.

    ``parsedate_tz`` reads fields it does not check (day 40, hour 63, zone +9999), which ``mktime_tz`` would
    carry into the next month or day; RFC 9110 §13.1.3 says to ignore a field that is not a valid HTTP-date,
    so the fields must make a real date, time and zone. No zone counts as GMT, as in ``mktime_tz``.
    """
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
        if parsed is None:
            return None
        zone = datetime.timezone(datetime.timedelta(seconds=parsed[9] or 0))
        return int(datetime.datetime(*parsed[:6], tzinfo=zone).timestamp())
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def http_date(timestamp: float) -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).encode("ascii")
