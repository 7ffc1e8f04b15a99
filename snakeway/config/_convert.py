"""The generic half of config validation: the problem reporter and value converters.

A *converter* has the signature ``(file, value, key_path) -> T | None``: it
reports what is wrong with ``value`` through :meth:`File.report` and returns
``None``; its parent then fails too, and validation goes on with the siblings.
Objects are declared as a schema, ``{hcl_key: Key(converter)}``, and turned
into a converter by :func:`schema`. Nothing here knows snakeway's keys: that is
:mod:`snakeway.config.load` (and :mod:`snakeway.config._tls`).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, overload

from snakeway import hostnames, uri
from snakeway.config.hcl import KeyPath, describe, format_key_path, quote
from snakeway.errors import Problem

if TYPE_CHECKING:
    from pathlib import Path

    from snakeway.config import hcl

T = TypeVar("T")
D = TypeVar("D")
M = TypeVar("M")
Convert = Callable[["File", object, KeyPath], T | None]

INTERFACES = {"loopback": "127.0.0.1", "all": "0.0.0.0"}

_BAD_PATH_CHARS = re.compile(r"[?#\s\x00-\x1f\x7f]")
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class Key:
    """One key of an object schema: how to convert it, whether it must be there, and its model field."""

    convert: Convert[object]
    required: bool = False
    field: str = ""


class File:
    """Validation of one file: knows its lines, appends its problems to a list shared by all files."""

    def __init__(self, doc: hcl.Document, problems: list[Problem]) -> None:
        self.doc = doc
        self.problems = problems

    def report(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.doc.path, self.doc.line(path), format_key_path(path), message))

    def where(self, path: KeyPath) -> str:
        """``FILE:LINE (key.path)``: how a problem refers to another place."""
        location = f"{self.doc.path}:{self.doc.line(path)}"
        return f"{location} ({format_key_path(path)})" if path else location

    def table(
        self, value: object, path: KeyPath, allowed: Collection[str] | None, required: Collection[str] = ()
    ) -> dict[str, object] | None:
        """``value`` if it is an object; reports unknown and missing keys (and carries on)."""
        if not isinstance(value, dict):
            self.report(path, f"expected an object, got {describe(value)}")
            return None
        for key in value:
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {quote(close[0])}?)" if close else ""
                self.report((*path, key), f"unknown key {quote(key)}{hint}; allowed keys: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                self.report((*path, key), "required key is missing")
        return value

    @overload
    def get(self, table: Mapping[str, object], path: KeyPath, key: str, convert: Convert[T]) -> T | None: ...
    @overload
    def get(
        self, table: Mapping[str, object], path: KeyPath, key: str, convert: Convert[T], default: D
    ) -> T | D | None: ...
    def get(
        self, table: Mapping[str, object], path: KeyPath, key: str, convert: Convert[T], default: object = None
    ) -> object:
        """Convert ``table[key]``, or return ``default`` when it is absent."""
        return convert(self, table[key], (*path, key)) if key in table else default

    def fields(self, value: object, path: KeyPath, schema: Mapping[str, Key]) -> dict[str, object] | None:
        """The converted keys present in ``value``, by model field name; ``None`` if anything is wrong."""
        before = len(self.problems)
        table = self.table(value, path, schema, [key for key, spec in schema.items() if spec.required])
        if table is None:
            return None
        out = {spec.field or key: spec.convert(self, table[key], (*path, key)) for key, spec in schema.items()
               if key in table}
        return out if len(self.problems) == before else None


def schema(
    keys: Mapping[str, Key], build: Callable[..., M], check: Callable[[File, KeyPath, M], None] | None = None
) -> Convert[M]:
    """A converter for an object with ``keys``, built by ``build(**fields)`` and then checked."""

    def convert(f: File, value: object, path: KeyPath) -> M | None:
        fields = f.fields(value, path, keys)
        if fields is None:
            return None
        result = build(**fields)
        if check is not None:
            check(f, path, result)
        return result

    return convert


# --- scalars ---------------------------------------------------------------------------------------------------


def text(f: File, value: object, path: KeyPath) -> str | None:
    """A non-empty string."""
    if not isinstance(value, str):
        f.report(path, f"expected a string, got {describe(value)}")
        return None
    if not value:
        f.report(path, "must not be empty")
        return None
    return value


def boolean(f: File, value: object, path: KeyPath) -> bool | None:
    if not isinstance(value, bool):
        f.report(path, f"expected true or false, got {describe(value)}")
        return None
    return value


def integer(low: int, high: int | None = None) -> Convert[int]:
    def convert(f: File, value: object, path: KeyPath) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool):
            f.report(path, f"expected an integer, got {describe(value)}")
            return None
        if value < low or (high is not None and value > high):
            f.report(path, f"must be {f'between {low} and {high}' if high is not None else f'at least {low}'}, "
                     f"got {value}")
            return None
        return value

    return convert


port = integer(1, 65535)


def number(unit: str, *, positive: bool = False) -> Convert[float]:
    """A finite number ≥ 0 (> 0 if ``positive``), as a float; ``unit`` is for the message ("seconds")."""

    def convert(f: File, value: object, path: KeyPath) -> float | None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            f.report(path, f"expected a number of {unit}, got {describe(value)}")
            return None
        if value < 0 or (positive and value == 0):
            f.report(path, f"must be {'greater than 0' if positive else 'at least 0'}, got {value}")
            return None
        return float(value)

    return convert


def seconds(*, positive: bool = False) -> Convert[float]:
    return number("seconds", positive=positive)


def nullable(convert: Convert[T]) -> Convert[T]:
    def convert_nullable(f: File, value: object, path: KeyPath) -> T | None:
        return None if value is None else convert(f, value, path)

    return convert_nullable


def list_of(convert: Convert[T], *, nonempty: bool = False) -> Convert[tuple[T, ...]]:
    """A list whose items all convert; ``None`` if any does not (each one is reported)."""

    def convert_list(f: File, value: object, path: KeyPath) -> tuple[T, ...] | None:
        if not isinstance(value, list):
            f.report(path, f"expected a list, got {describe(value)}")
            return None
        if nonempty and not value:
            f.report(path, "must not be empty")
            return None
        items = [convert(f, item, (*path, index)) for index, item in enumerate(value)]
        return None if any(item is None for item in items) else tuple(i for i in items if i is not None)

    return convert_list


def one_or_list(convert: Convert[T], what: str) -> Convert[tuple[T, ...]]:
    """A single string or a list of them; ``what`` names both: "a glob or a list of globs"."""

    def convert_one_or_list(f: File, value: object, path: KeyPath) -> tuple[T, ...] | None:
        if isinstance(value, str):
            item = convert(f, value, path)
            return None if item is None else (item,)
        if not isinstance(value, list):
            f.report(path, f"expected {what}, got {describe(value)}")
            return None
        return list_of(convert)(f, value, path)

    return convert_one_or_list


def choice(choices: Mapping[str, T], what: str) -> Convert[T]:
    def convert(f: File, value: object, path: KeyPath) -> T | None:
        name = text(f, value, path)
        if name is not None and name not in choices:
            f.report(path, f"unknown {what} {quote(name)}; expected one of: {', '.join(choices)}")
        return None if name is None else choices.get(name)

    return convert


def file_path(f: File, value: object, path: KeyPath) -> Path | None:
    """A path; a relative one is relative to the directory of the file that names it."""
    name = text(f, value, path)
    if name is not None and "\x00" in name:  # no file system path has one (and resolve() raises)
        f.report(path, f"a path must not contain a NUL character, got {quote(name)}")
        return None
    return None if name is None else (f.doc.path.parent / name).resolve()


def existing_file(f: File, value: object, path: KeyPath) -> Path | None:
    """A :func:`file_path` that is a file now (when the configuration is checked)."""
    resolved = file_path(f, value, path)
    if resolved is not None and not resolved.is_file():
        f.report(path, f"{'not a file' if resolved.exists() else 'file does not exist'}: {resolved}")
        return None
    return resolved


def directory(f: File, value: object, path: KeyPath) -> Path | None:
    resolved = file_path(f, value, path)
    if resolved is not None and not resolved.is_dir():
        f.report(path, f"{'not a directory' if resolved.exists() else 'directory does not exist'}: {resolved}")
        return None
    return resolved


def file_name(f: File, value: object, path: KeyPath) -> str | None:
    """A file name (not a path); ``""`` means none."""
    if value == "":
        return None
    name = text(f, value, path)
    if name is not None and ("/" in name or "\\" in name or name in (".", "..")):
        f.report(path, f"expected a file name, not a path, got {quote(name)}")
        return None
    return name


# --- addresses and names ---------------------------------------------------------------------------------------


def interface(f: File, value: object, path: KeyPath) -> str | None:
    name = text(f, value, path)
    if name is None:
        return None
    if name in INTERFACES:
        return INTERFACES[name]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        f.report(path, f'expected "loopback", "all" or an IP address, got {quote(name)}')
        return None


def upstream_host(f: File, value: object, path: KeyPath) -> str | None:
    """An IP address (IPv6 with or without brackets) or a host name: :func:`snakeway.hostnames.normalize_host`."""
    name = text(f, value, path)
    if name is None:
        return None
    canonical = hostnames.normalize_host(name)
    if canonical is None:
        f.report(path, f"expected a host name or IP address (without scheme or port), got {quote(name)}")
    return canonical


def host_pattern(f: File, value: object, path: KeyPath) -> str | None:
    """A route's host pattern: :func:`snakeway.hostnames.route_pattern`."""
    name = text(f, value, path)
    if name is None:
        return None
    try:
        return hostnames.route_pattern(name)
    except ValueError as exc:
        f.report(path, f"invalid host pattern {quote(name)}: {exc}")
        return None


def cert_name(*, ip: bool) -> Convert[str]:
    """A name a certificate is for, as :func:`snakeway.hostnames.certificate_name` has it; ``ip`` allows IPs.

    So every name accepted here can be asked of a CA and kept in the certificate store.
    """

    def convert(f: File, value: object, path: KeyPath) -> str | None:
        name = text(f, value, path)
        if name is None:
            return None
        try:
            return hostnames.certificate_name(name, ip=ip)
        except hostnames.IPAddressName:
            f.report(path, f"expected a domain name, got the IP address {quote(name)}")
        except ValueError as exc:
            f.report(path, f"invalid domain {quote(name)}: {exc}")
        return None

    return convert


def route_path(f: File, value: object, path: KeyPath) -> str | None:
    """A route's path in the form request paths are compared in (:func:`~snakeway.uri.normalize_path`).

    Starts with ``/``. Characters outside printable ASCII are percent-encoded
    as UTF-8 (a client can only send them so), then the path is normalised
    like a request's (``/%7euser`` is ``/~user``, ``/a/./b`` is ``/a/b``); the
    trailing slash is dropped (except for ``/``). The router, static files and
    the duplicate-route check all see this one form.
    """
    name = text(f, value, path)
    if name is None:
        return None
    if not name.startswith("/"):
        f.report(path, f"must start with /, got {quote(name)}")
        return None
    if _BAD_PATH_CHARS.search(name):
        f.report(path, f"must not contain a query, fragment, spaces or control characters, got {quote(name)}")
        return None
    encoded = urllib.parse.quote(name, safe=_PRINTABLE_ASCII).encode("ascii")
    try:
        normal = uri.normalize_path(encoded)
    except uri.TargetError as exc:
        f.report(path, f"no request path can match {quote(name)}: {exc.reason}")
        return None
    return normal.decode("ascii").rstrip("/") or "/"
