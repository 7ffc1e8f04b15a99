"""The path a request is routed by and forwarded with: pure code, no I/O.

A leaf module (the standard library and :mod:`snakeway.errors` only): the configuration normalises route
paths with it and the proxy normalises request paths, so both hold one form.

Theory of operation
-------------------
A proxy that routes on one reading of a path and forwards another lets a
client reach what no route names: with only ``/public`` routed,
``/public/%2e%2e/admin`` would be matched as a path under ``/public`` and
then decoded by the upstream into ``/admin``. So snakeway normalises the path
once, routes on the result and forwards exactly that result (with the
original query, untouched). What the router saw and what the upstream is
sent are then the same path, however far the upstream decodes it.

:func:`normalize_path` applies the normalisations of RFC 3986 section 6.2.2,
then removes dot-segments (section 5.2.4):

1. Percent-escapes: an escape of an unreserved character (``A-Z a-z 0-9 - .
   _ ~``) is decoded (``%7E`` is ``~``, ``%2e`` is ``.``); every other escape
   is kept, with upper-case hex digits (``%2f`` becomes ``%2F``). Reserved
   characters are never decoded, except for the slashes around dot-segments
   (below).
2. Dot-segments are ``.`` and ``..`` however they are spelt, and they may be
   bounded by an encoded slash as well as by ``/``: in ``/a/..%2Fb`` the
   segment ``..`` is followed by ``%2F``. An encoded slash next to a
   dot-segment is decoded to ``/``, so ``/a/..%2Fb`` is ``/a/../b``, which is
   ``/b``. The dot-segments are then removed; ``..`` at the root stays at the
   root.

Refused, with a :class:`TargetError` (a 400), because no single reading of
them can be trusted:

* a ``%`` not followed by two hex digits (``%``, ``%2``, ``%zz``);
* ``%00``: an encoded NUL;
* an overlong UTF-8 sequence spelt in escapes (``%C0%AE`` for ``.``,
  ``%E0%80%AE``, ``%C0%AF`` for ``/``): a lenient decoder reads them as the
  character they spell, a strict one refuses them;
* an encoded slash anywhere to the left of a ``..`` segment (``/a%2Fb/../c``,
  ``/a%2F..``, ``/a/..%2F..``): snakeway treats ``a%2Fb`` as one segment, which
  ``..`` removes whole, while a server that decodes ``%2F`` first sees two
  segments and removes only ``b``. An encoded slash to the right of every
  ``..`` (``/a/..%2Fb``) and around a ``.`` is unambiguous and is accepted;
* a dot-segment with parameters (``/a/..;x/b``, ``/a/.;/b``): for RFC 3986 an
  ordinary segment, but servlet containers drop the ``;`` parameters of a
  segment before they resolve dot-segments, and read ``..``;
* a dot-segment that appears only when ``\\`` and ``%5C`` are read as
  separators too (``/a/..\\b``, ``/a\\..\\b``, ``/a/..%5Cb``): for RFC 3986
  ``..\\b`` is one ordinary segment, but Windows servers (IIS, and file
  servers on Windows) take a backslash for a slash and resolve ``/a/..\\b``
  to ``/b``. A ``\\`` anywhere else (``/a\\b``) is an ordinary character and
  is forwarded as it came.

Empty segments are kept (``//`` is not merged), as in RFC 3986.

A path with no ``%``, no ``/.`` and no ``\\.`` has nothing to normalise (or
to refuse): :func:`snakeway.proxy.strict.request_target` tests for that with
three substring searches and skips the call. A ``#`` never reaches this
module: a fragment is never sent in a request, and ``request_target`` refuses
a target that has one.
"""

from __future__ import annotations

import re

from snakeway.errors import SnakewayError

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX_DIGITS = "0123456789abcdefABCDEF"
# Every two-character spelling of a byte (any case) -> its value.
_HEX = {(a + b).encode("ascii"): int(a + b, 16) for a in _HEX_DIGITS for b in _HEX_DIGITS}
# How a byte is written in a normalised path: unreserved ones as themselves.
_SPELLING = tuple(bytes([v]) if v in UNRESERVED else b"%%%02X" % v for v in range(256))
_DOTS = (b".", b"..")
ENCODED_SLASH = b"%2F"
ENCODED_BACKSLASH = b"%5C"  # upper-case: checked after escapes are normalised
_SEPARATOR = re.compile(rb"(/|%2F)")
# What a server that also takes a backslash for a slash splits a path on.
_ANY_SEPARATOR = re.compile(rb"/|\\|%2F|%5C")
# Second bytes that make a lead byte overlong: the sequence spells a code
# point that a shorter sequence encodes (RFC 3629 section 3; 0xF8 and 0xFC
# lead the five- and six-byte forms that old decoders still accept).
_OVERLONG_BELOW = {0xC0: 0xC0, 0xC1: 0xC0, 0xE0: 0xA0, 0xF0: 0x90, 0xF8: 0x88, 0xFC: 0x84}


class TargetError(SnakewayError, ValueError):
    """The request target cannot be normalised unambiguously: answer 400.

    Attributes:
      reason: what is wrong, for the log and the error response.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_path(path: bytes) -> bytes:
    """The normalised form of the path of an origin-form target (no query).

    Args:
      path: the path as sent, starting with ``/``.

    Returns:
      The path with unreserved characters decoded, other escapes upper-cased
      and dot-segments removed (see the module docstring).

    Raises:
      TargetError: the path does not start with ``/``, or it is one of the
        refused forms.
    """
    if not path.startswith(b"/"):
        raise TargetError("the path does not start with /")
    if b"%" in path:
        path = _decode_unreserved(path)
    if b"/." in path or b"%2F." in path:  # else no segment can be a dot-segment
        path = _remove_dot_segments(_segments(path))
    if b"\\" in path or ENCODED_BACKSLASH in path:
        _refuse_backslash_dot_segments(path)
    return path


def _decode_unreserved(path: bytes) -> bytes:
    """Step 1: escapes of unreserved characters decoded, the others checked and upper-cased."""
    parts = path.split(b"%")
    out = [parts[0]]
    lead = 0  # the previous escape's byte when nothing came between, else 0
    for part in parts[1:]:
        value = _HEX.get(part[:2])
        if value is None:
            raise TargetError("malformed percent-escape in the path")
        if value == 0:
            raise TargetError("encoded NUL in the path")
        if lead in _OVERLONG_BELOW and 0x80 <= value < _OVERLONG_BELOW[lead]:
            raise TargetError("overlong UTF-8 sequence in the path")
        out.append(_SPELLING[value])
        out.append(part[2:])
        lead = value if len(part) == 2 else 0
    return b"".join(out)


def _segments(path: bytes) -> list[bytes]:
    """Step 2: the path's segments, split on ``/`` and on the ``%2F`` next to a dot-segment.

    Raises:
      TargetError: an encoded slash comes before a ``..`` segment, or a
        dot-segment has parameters.
    """
    tokens = _SEPARATOR.split(path)  # piece, separator, piece, ...; the first piece is empty
    segments = []
    current = tokens[0]
    encoded_slash_seen = False
    for i in range(1, len(tokens), 2):
        before, separator, after = tokens[i - 1], tokens[i], tokens[i + 1]
        encoded = separator == ENCODED_SLASH
        encoded_slash_seen = encoded_slash_seen or encoded
        if after == b".." and encoded_slash_seen:
            raise TargetError("an encoded slash before a '..' segment in the path")
        if after[:1] == b"." and after not in _DOTS and after.partition(b";")[0] in _DOTS:
            raise TargetError("a dot-segment with parameters in the path")
        if not encoded or before in _DOTS or after in _DOTS:
            segments.append(current)
            current = after
        else:
            current += ENCODED_SLASH + after
    segments.append(current)
    return segments


def _refuse_backslash_dot_segments(path: bytes) -> None:
    """Refuse a path that has a dot-segment when ``\\`` and ``%5C`` separate segments too.

    ``path`` is normalised: its dot-segments between slashes are gone, so any
    one left is there only for a reader of backslashes.
    """
    for segment in _ANY_SEPARATOR.split(path):
        if segment[:1] == b"." and segment.partition(b";")[0] in _DOTS:
            raise TargetError("a dot-segment between backslashes in the path")


def _remove_dot_segments(segments: list[bytes]) -> bytes:
    """RFC 3986 section 5.2.4 over the segments of an absolute path (the first one is empty)."""
    out: list[bytes] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == b"..":
            if len(out) > 1:
                out.pop()
            if i == last:
                out.append(b"")
        elif segment == b".":
            if i == last:
                out.append(b"")
        else:
            out.append(segment)
    return b"/".join(out) if len(out) > 1 else b"/"
