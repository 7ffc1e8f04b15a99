"""Fuzzing the Range and conditional-request decisions of plan_static.

Any values of ``Range``, ``If-Range``, ``If-Match``, ``If-None-Match``, ``If-Modified-Since`` and
``If-Unmodified-Since`` (random bytes, or values built to be nearly right: ranges with huge or missing numbers,
lists, other units, the file's own ETag in every spelling, dates a second either side of its modification
time) give a decision, never an exception, and the decision keeps these properties:

- a ``206`` is for a GET with a ``Range`` header, lies within the file, is at least one byte long, and says
  so in ``Content-Range``; a ``416`` is only for a range that starts at or after the end of the file (or a
  zero-length suffix);
- a ``304`` only when the validators say so: ``If-None-Match`` names the file's ETag (weakly) or is ``*``,
  or, without ``If-None-Match``, ``If-Modified-Since`` is a date not before the modification time and not
  after the server's clock;
- a ``412`` only when a precondition fails: ``If-Match`` does not name the ETag strongly (nor ``*``), or,
  without ``If-Match``, ``If-Unmodified-Since`` is a date before the modification time.

The dates are checked against :func:`email.utils.parsedate_to_datetime`, not the parser under test. The
example counts come from the hypothesis profile (``tests/conftest.py``).
"""

from __future__ import annotations

import email.utils
import os
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from snakeway.config.model import Route, StaticSite
from snakeway.proxy.static import ErrorReply, NotModified, SendFile, plan_static

pytestmark = pytest.mark.fuzz

MTIME = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
# The server's clock for the decisions: an If-Modified-Since after it is in the future, and ignored.
NOW = MTIME + 3_600
SIZES = {"empty.bin": 0, "one.bin": 1, "hundred.bin": 100, "big.bin": 70_000}
CONDITIONALS = (b"if-range", b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[StaticSite, dict[str, bytes]]:
    """A site with files of several sizes, all modified at MTIME; and each file's ETag."""
    root = tmp_path_factory.mktemp("static-fuzz")
    etags = {}
    for name, size in SIZES.items():
        (root / name).write_bytes(bytes(i % 251 for i in range(size)))
        os.utime(root / name, (MTIME, MTIME))
        etags[name] = b'"%x-%x"' % (os.stat(root / name).st_mtime_ns, size)
    return StaticSite(route=Route(hosts=("*",), path="/"), file_dir=Path(root)), etags


def http_date(timestamp: int, *, gmt: str = "GMT") -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).replace("GMT", gmt).encode("ascii")


NUMBERS = st.one_of(
    st.integers(0, 120).map(str),
    st.integers(0, 10**30).map(str),
    st.sampled_from(["", "0", "00", "99", "100", "101", "69999", "70000", "9" * 25, "9" * 5000, "-1", "1.5"]),
)
SPACE = st.sampled_from(["", " ", "\t", "  "])
RANGES = st.one_of(
    st.builds(lambda u, s1, a, s2, b: f"{u}={s1}{a}{s2}-{b}".encode(), st.sampled_from(["bytes", "BYTES", "Bytes",
              "items", "bytes "]), SPACE, NUMBERS, SPACE, NUMBERS),
    st.lists(st.tuples(NUMBERS, NUMBERS), min_size=1, max_size=3).map(
        lambda pairs: b"bytes=" + b",".join(f"{a}-{b}".encode() for a, b in pairs)),
    st.sampled_from([b"bytes=", b"bytes=-", b"bytes=--1", b"=0-1", b"bytes=0-1,", b"bytes=\x000-1", b"bytes=\xff"]),
)
DATES = st.one_of(
    st.builds(lambda delta, gmt: http_date(MTIME + delta, gmt=gmt), st.sampled_from([-86_400, -1, 0, 1, 86_400]),
              st.sampled_from(["GMT", "UTC", "+0000", "-0100", "+2359", "+9999", "EST", "XYZ"])),
    st.sampled_from([b"Tuesday, 14-Nov-23 22:13:20 GMT", b"Tue Nov 14 22:13:20 2023", b"14 Nov 2023 22:13:20",
                     b"Tue, 14 Nov 99999 22:13:20 GMT", b"Tue, 14 Nov 2023 25:61:61 GMT", b"Tue, 31 Feb 2023 00:00:00 GMT",
                     b"Tue, 14 Nov 0 22:13:20 GMT", b"Tue, 14 Nov -5 22:13:20 GMT", b"0", b"", b"Tue, 14 Nov 2023"]),
    st.builds(lambda y, d, h: f"Tue, {d} Nov {y} {h}:00:00 GMT".encode(), st.integers(-10**6, 10**12),
              st.integers(-5, 99), st.integers(-5, 99)),
)


@st.composite
def etag_values(draw: st.DrawFn, etag: bytes) -> bytes:
    """``*``, a list of tags in which the file's own ETag may appear (weak or strong), or a near miss."""
    tags = [draw(st.sampled_from([etag, b"W/" + etag, b'"other"', b'W/"other"', etag[:-1], etag.upper(), b"*",
                                  b'""', b"W/", etag + etag]))
            for _ in range(draw(st.integers(1, 3)))]
    return draw(st.sampled_from([b", ", b",", b" ", b""])).join(tags)


@st.composite
def header_sets(draw: st.DrawFn, etag: bytes) -> list[tuple[bytes, bytes]]:
    headers = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from((b"range", b"Range", *CONDITIONALS, b"IF-NONE-MATCH")))
        kind = name.lower()
        if kind == b"range":
            value = draw(RANGES | st.binary(max_size=30))
        elif kind in (b"if-match", b"if-none-match"):
            value = draw(etag_values(etag) | st.binary(max_size=30))
        elif kind == b"if-range":
            value = draw(etag_values(etag) | DATES | st.binary(max_size=30))
        else:
            value = draw(DATES | st.binary(max_size=30))
        headers.append((name, value))
    return headers


def joined(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The field value as a recipient sees it: repeated fields joined with ", "."""
    values = [v for n, v in headers if n.lower() == name]
    return b", ".join(values) if values else None


def names_etag(value: bytes, etag: bytes, *, weak: bool) -> bool:
    """Whether an entity-tag list names ``etag`` (RFC 9110 §8.8.3.2), or is ``*``."""
    if value.strip() == b"*":
        return True
    return any(tag == etag and (weak or not w) for w, tag in re.findall(rb'(W/)?("[^"]*")', value))


def big_int(digits: bytes) -> int:
    """``int(digits)`` for digit strings of any length (longer than 100 digits: 10**100)."""
    digits = digits.lstrip(b"0") or b"0"
    return int(digits) if len(digits) <= 100 else 10**100


def date_of(value: bytes | None) -> int | None:
    """The Unix time of an HTTP-date, by another parser than the one under test; None if it is not one."""
    if value is None:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value.decode("latin-1")).timestamp())
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


@st.composite
def requests(draw: st.DrawFn, etags: dict[str, bytes]) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    name = draw(st.sampled_from(sorted(SIZES)))
    return name, draw(st.sampled_from([b"GET", b"HEAD"])), draw(header_sets(etags[name]))


@given(data=st.data())
@example(data=None)  # the explicit cases below
def test_any_range_and_conditional_headers_give_a_sound_decision(
    files: tuple[StaticSite, dict[str, bytes]], data: st.DataObject | None
) -> None:
    site, etags = files
    cases = EXPLICIT if data is None else [data.draw(requests(etags))]
    for name, method, headers in cases:
        check_decision(site, etags[name], SIZES[name], method, "/" + name, headers)


EXPLICIT: list[tuple[str, bytes, list[tuple[bytes, bytes]]]] = [
    ("hundred.bin", b"GET", [(b"range", b"bytes=" + b"9" * 5000 + b"-")]),
    ("hundred.bin", b"GET", [(b"range", b"bytes=-" + b"9" * 5000)]),
    ("empty.bin", b"GET", [(b"range", b"bytes=-5")]),
    ("hundred.bin", b"GET", [(b"if-modified-since", b"Tue, 14 Nov 99999 22:13:20 GMT")]),
    ("hundred.bin", b"GET", [(b"if-unmodified-since", b"Tue, 14 Nov 2023 22:13:20 +9999")]),
    ("hundred.bin", b"GET", [(b"range", b"bytes=5-"), (b"if-range", b"Tue, 14 Nov 2023 22:13:20 GMT")]),
    ("hundred.bin", b"GET", [(b"if-modified-since", b"Tue, 40 Nov 2023 22:13:20 GMT")]),  # not a date: no 304
]


def check_decision(site: StaticSite, etag: bytes, size: int, method: bytes, path: str,
                   headers: list[tuple[bytes, bytes]]) -> None:
    plan = plan_static(site, method, path, headers, now=NOW)
    assert plan.status in {200, 206, 304, 412, 416}, plan
    for _, value in plan.headers:
        assert b"\r" not in value and b"\n" not in value
    if_match, if_none_match = joined(headers, b"if-match"), joined(headers, b"if-none-match")
    ius, ims = date_of(joined(headers, b"if-unmodified-since")), date_of(joined(headers, b"if-modified-since"))
    precondition_fails = (if_match is not None and not names_etag(if_match, etag, weak=False)) or (
        if_match is None and ius is not None and MTIME > ius)
    assert (plan.status == 412) == precondition_fails, headers
    if plan.status == 412:
        assert isinstance(plan, ErrorReply)
        return
    not_modified = (if_none_match is not None and names_etag(if_none_match, etag, weak=True)) or (
        if_none_match is None and ims is not None and MTIME <= ims <= NOW)
    if isinstance(plan, NotModified):
        assert not_modified, headers
        assert dict(plan.headers)[b"etag"] == etag and plan.body == b""
        return
    assert not not_modified, headers
    range_value = joined(headers, b"range")
    if plan.status == 416:
        assert method == b"GET" and range_value is not None
        assert dict(plan.headers)[b"content-range"] == b"bytes */%d" % size
        first = re.fullmatch(rb"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_value, re.IGNORECASE)
        assert first is not None, range_value
        start, end = first.groups()
        assert (start and big_int(start) >= size) or (not start and big_int(end) == 0), range_value
        return
    assert isinstance(plan, SendFile)
    if plan.status == 206:
        assert method == b"GET" and range_value is not None and b"," not in range_value
        assert 0 <= plan.start and plan.length >= 1 and plan.start + plan.length <= size
        last = plan.start + plan.length - 1
        assert dict(plan.headers)[b"content-range"] == b"bytes %d-%d/%d" % (plan.start, last, size)
        if_range = joined(headers, b"if-range")
        assert if_range is None or if_range.strip() == etag or date_of(if_range) == MTIME
    else:
        assert (plan.start, plan.length) == (0, size)
    assert dict(plan.headers)[b"content-length"] == b"%d" % plan.length
