"""Load and validate the configuration: HCL files -> :class:`~snakeway.config.model.Config`.

Theory of operation:

- :mod:`snakeway.config.hcl` turns each file into plain values plus the line of
  every key path. This module checks those values and builds the frozen model.
- It never stops at the first mistake. A *converter* has the signature
  ``(file, value, key_path) -> T | None``: it reports what is wrong with its
  value and returns ``None``, its parent then fails too, and validation goes on
  with the siblings. :func:`load_config` raises one ``ConfigError`` with all of
  the problems.
- Most objects are declared as a schema, ``{hcl_key: Key(converter)}``, turned
  into a converter by :func:`_object`; optional keys that are absent get the
  model's default. Adding a key is one schema entry plus the model field.
- Rules that span objects (unique ingress and service names, one interface per
  port, no (host, path) routed twice on a listener) are checked by
  :class:`_Loader`, the state shared by all files, as soon as the pieces they
  need are valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import ipaddress
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from snakeway.config import hcl, model
from snakeway.config.hcl import KeyPath, describe, format_key_path, quote
from snakeway.errors import ConfigError, Problem

T = TypeVar("T")
M = TypeVar("M")
Convert = Callable[["_File", object, KeyPath], T | None]

SUPPORTED_VERSION = 1
INTERFACES = {"loopback": "127.0.0.1", "all": "0.0.0.0"}
DEFAULT_INTERFACE = "all"

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_BAD_PATH_CHARS = re.compile(r"[?#\s\x00-\x1f\x7f]")


def load_config(path: Path) -> model.Config:
    """Load the configuration whose entry file is ``path``, and the files it includes.

    Raises:
        ConfigError: Listing every problem in every file, in the order the
            files were read and then by line.
    """
    loader = _Loader()
    config = loader.load(path)
    if loader.problems or config is None:
        order = {file: index for index, file in enumerate(dict.fromkeys(p.file for p in loader.problems))}
        raise ConfigError(sorted(loader.problems, key=lambda p: (order[p.file], p.line)))
    return config


@dataclass(frozen=True)
class Key:
    """One key of an object schema: how to convert it, whether it must be there, and its model field."""

    convert: Convert[object]
    required: bool = False
    field: str = ""


class _File:
    """Validation of one file: knows its lines, reports into the shared loader."""

    def __init__(self, loader: _Loader, doc: hcl.Document) -> None:
        self.loader = loader
        self.doc = doc

    def report(self, path: KeyPath, message: str) -> None:
        self.loader.problems.append(Problem(self.doc.path, self.doc.line(path), format_key_path(path), message))

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
        for key in value if allowed is not None else ():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {quote(close[0])}?)" if close else ""
                self.report((*path, key), f"unknown key {quote(key)}{hint}; allowed keys: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                self.report((*path, key), "required key is missing")
        return value

    def get(
        self, table: Mapping[str, object], path: KeyPath, key: str, convert: Convert[T], default: T | None = None
    ) -> T | None:
        """Convert ``table[key]``, or return ``default`` when it is absent."""
        return convert(self, table[key], (*path, key)) if key in table else default

    def fields(self, value: object, path: KeyPath, schema: Mapping[str, Key]) -> dict[str, object] | None:
        """The converted keys present in ``value``, by model field name; ``None`` if anything is wrong."""
        before = len(self.loader.problems)
        table = self.table(value, path, schema, [key for key, spec in schema.items() if spec.required])
        if table is None:
            return None
        out = {spec.field or key: spec.convert(self, table[key], (*path, key)) for key, spec in schema.items()
               if key in table}
        return out if len(self.loader.problems) == before else None


def _object(
    schema: Mapping[str, Key], build: Callable[..., M], check: Callable[[_File, KeyPath, M], None] | None = None
) -> Convert[M]:
    """A converter for an object with ``schema``, built by ``build(**fields)`` and then checked."""

    def convert(f: _File, value: object, path: KeyPath) -> M | None:
        fields = f.fields(value, path, schema)
        if fields is None:
            return None
        result = build(**fields)
        if check is not None:
            check(f, path, result)
        return result

    return convert


class _Loader:
    """The state shared by all files of one configuration: problems and what has been claimed."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.ingress_names: dict[str, str] = {}
        self.service_names: dict[str, str] = {}
        self.ports: dict[int, tuple[str, str]] = {}
        self.routes: dict[tuple[str, int, str, str], str] = {}

    def read(self, path: Path) -> _File | None:
        try:
            return _File(self, hcl.load(path))
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return None

    def load(self, path: Path) -> model.Config | None:
        f = self.read(path)
        top = None if f is None else f.table(f.doc.data, (), ("server", "include", "ingress"), ["server"])
        if f is None or top is None:
            return None
        server = f.get(top, (), "server", _server)
        ingresses: list[model.Ingress | None] = []
        if "ingress" in top and (inline := f.table(top["ingress"], ("ingress",), None)) is not None:
            ingresses.extend(_ingress(f, body, ("ingress", name), name) for name, body in inline.items())
        seen = {path.resolve()}  # the entry file and each included file are read once
        for pattern in f.get(top, (), "include", _include, ()) or ():
            for included in _expand(f, pattern):
                if included.resolve() in seen:
                    continue
                seen.add(included.resolve())
                g = self.read(included)
                ingresses.append(None if g is None else _ingress(g, g.doc.data, (), included.stem))
        if server is None or None in ingresses:
            return None
        return model.Config(server=server, ingresses=tuple(i for i in ingresses if i is not None), source=path)

    def claim(self, f: _File, claimed: dict[str, str], name: str, path: KeyPath, what: str) -> None:
        if name in claimed:
            f.report(path, f"{what} {quote(name)} is already used at {claimed[name]}")
        else:
            claimed[name] = f.where(path)

    def claim_port(self, f: _File, path: KeyPath, bind: model.Bind) -> None:
        interface, where = self.ports.setdefault(bind.port, (bind.interface, f.where((*path, "port"))))
        if interface != bind.interface:
            f.report((*path, "port"), f"port {bind.port} is already bound to {interface} at {where}; "
                     "ingresses that share a port must use the same interface")

    def claim_routes(self, f: _File, path: KeyPath, bind: model.Bind, route: model.Route) -> None:
        for index, host in enumerate(route.hosts):
            key, here = (bind.interface, bind.port, host, route.path), (*path, "hosts", index)
            if key in self.routes:
                f.report(here, f"host {quote(host)} with path {quote(route.path)} is already routed on "
                         f"{bind.url_host}:{bind.port} at {self.routes[key]}")
            else:
                self.routes[key] = f.where(here)


# --- scalar converters -----------------------------------------------------------------------------------------


def _text(f: _File, value: object, path: KeyPath) -> str | None:
    """A non-empty string."""
    if not isinstance(value, str):
        f.report(path, f"expected a string, got {describe(value)}")
        return None
    if not value:
        f.report(path, "must not be empty")
        return None
    return value


def _boolean(f: _File, value: object, path: KeyPath) -> bool | None:
    if not isinstance(value, bool):
        f.report(path, f"expected true or false, got {describe(value)}")
        return None
    return value


def _integer(low: int, high: int | None = None) -> Convert[int]:
    def convert(f: _File, value: object, path: KeyPath) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool):
            f.report(path, f"expected an integer, got {describe(value)}")
            return None
        if value < low or (high is not None and value > high):
            f.report(path, f"must be {f'between {low} and {high}' if high is not None else f'at least {low}'}, "
                     f"got {value}")
            return None
        return value

    return convert


_port = _integer(1, 65535)


def _seconds(*, positive: bool = False) -> Convert[float]:
    def convert(f: _File, value: object, path: KeyPath) -> float | None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            f.report(path, f"expected a number of seconds, got {describe(value)}")
            return None
        if value < 0 or (positive and value == 0):
            f.report(path, f"must be {'greater than 0' if positive else 'at least 0'}, got {value}")
            return None
        return float(value)

    return convert


def _nullable(convert: Convert[T]) -> Convert[T]:
    def nullable(f: _File, value: object, path: KeyPath) -> T | None:
        return None if value is None else convert(f, value, path)

    return nullable


def _list_of(convert: Convert[T], *, nonempty: bool = False) -> Convert[tuple[T, ...]]:
    """A list whose items all convert; ``None`` if any does not (each one is reported)."""

    def convert_list(f: _File, value: object, path: KeyPath) -> tuple[T, ...] | None:
        if not isinstance(value, list):
            f.report(path, f"expected a list, got {describe(value)}")
            return None
        if nonempty and not value:
            f.report(path, "must not be empty")
            return None
        items = [convert(f, item, (*path, index)) for index, item in enumerate(value)]
        return None if any(item is None for item in items) else tuple(i for i in items if i is not None)

    return convert_list


def _choice(choices: Mapping[str, T], what: str) -> Convert[T]:
    def convert(f: _File, value: object, path: KeyPath) -> T | None:
        text = _text(f, value, path)
        if text is not None and text not in choices:
            f.report(path, f"unknown {what} {quote(text)}; expected one of: {', '.join(choices)}")
        return None if text is None else choices.get(text)

    return convert


def _file_path(f: _File, value: object, path: KeyPath) -> Path | None:
    """A path; a relative one is relative to the directory of the file that names it."""
    text = _text(f, value, path)
    return None if text is None else (f.doc.path.parent / text).resolve()


def _directory(f: _File, value: object, path: KeyPath) -> Path | None:
    resolved = _file_path(f, value, path)
    if resolved is not None and not resolved.is_dir():
        f.report(path, f"{'not a directory' if resolved.exists() else 'directory does not exist'}: {resolved}")
        return None
    return resolved


def _file_name(f: _File, value: object, path: KeyPath) -> str | None:
    """A file name (not a path); ``""`` means none."""
    if value == "":
        return None
    text = _text(f, value, path)
    if text is not None and ("/" in text or "\\" in text or text in (".", "..")):
        f.report(path, f"expected a file name, not a path, got {quote(text)}")
        return None
    return text


def _interface(f: _File, value: object, path: KeyPath) -> str | None:
    text = _text(f, value, path)
    if text is None:
        return None
    if text in INTERFACES:
        return INTERFACES[text]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        f.report(path, f'expected "loopback", "all" or an IP address, got {quote(text)}')
        return None


def _upstream_host(f: _File, value: object, path: KeyPath) -> str | None:
    """An IP address (IPv6 with or without brackets) or a host name, IDNA-encoded."""
    text = _text(f, value, path)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    name = _dns_name(text)
    if name is None:
        f.report(path, f"expected a host name or IP address (without scheme or port), got {quote(text)}")
    return name


def _host_pattern(f: _File, value: object, path: KeyPath) -> str | None:
    """``*``, ``*.domain``, an exact name (lower-case, IDNA-encoded) or an IP address (IPv6 in brackets)."""
    text = _text(f, value, path)
    if text is None or text == "*":
        return text
    if text.startswith("[") and text.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(text[1:-1])}]"
        except ValueError:
            pass
    wildcard = text.startswith("*.")
    name = _dns_name(text[2:] if wildcard else text)
    if name is None:
        f.report(path, f"invalid host pattern {quote(text)}: expected a host name (without port), "
                 '"*.domain" (exactly one more label) or "*"')
        return None
    return f"*.{name}" if wildcard else name


def _dns_name(text: str) -> str | None:
    """``text`` as a lower-case ASCII (IDNA) host name, or ``None`` if it is not one."""
    labels: list[str] = []
    for label in text.lower().split("."):
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                return None
        if not _LABEL.match(label):
            return None
        labels.append(label)
    name = ".".join(labels)
    return name if len(name) <= 253 else None


def _route_path(f: _File, value: object, path: KeyPath) -> str | None:
    """Starts with ``/``; the trailing slash is dropped (except for ``/``)."""
    text = _text(f, value, path)
    if text is None:
        return None
    if not text.startswith("/"):
        f.report(path, f"must start with /, got {quote(text)}")
        return None
    if _BAD_PATH_CHARS.search(text):
        f.report(path, f"must not contain a query, fragment, spaces or control characters, got {quote(text)}")
        return None
    return text.rstrip("/") or "/"


def _version(f: _File, value: object, path: KeyPath) -> int | None:
    version = _integer(0)(f, value, path)
    if version is not None and version != SUPPORTED_VERSION:
        f.report(path, f"unsupported version {version}; this snakeway reads version {SUPPORTED_VERSION}")
        return None
    return version


# --- objects, innermost first ----------------------------------------------------------------------------------

_ROUTE = {"hosts": Key(_list_of(_host_pattern, nonempty=True), required=True), "path": Key(_route_path)}
_PROXY_ROUTE = {
    **_ROUTE,
    "enable_websocket": Key(_boolean),
    "ws_max_connections": Key(_nullable(_integer(1))),
    "max_body_bytes": Key(_nullable(_integer(0))),
}
_STATIC_ROUTE = {
    **_ROUTE,
    "file_dir": Key(_directory, required=True),
    "index": Key(_nullable(_file_name)),
    "directory_listing": Key(_boolean),
}
_endpoint = _object({"host": Key(_upstream_host, True), "port": Key(_port, True)}, model.Endpoint)
_upstream = _object({"endpoint": Key(_endpoint, True), "weight": Key(_integer(1))}, model.Upstream)
_STRATEGIES = {s.value: s for s in model.Strategy}


def _proxy_route(bind: model.Bind | None) -> Convert[model.Route]:
    def check(f: _File, path: KeyPath, route: model.Route) -> None:
        if route.ws_max_connections is not None and not route.enable_websocket:
            f.report((*path, "ws_max_connections"), "only applies with enable_websocket = true")
        if bind is not None:
            f.loader.claim_routes(f, path, bind, route)

    def build(hosts: tuple[str, ...], path: str = "/", **rest: object) -> model.Route:
        return dataclasses.replace(model.Route(hosts, path), **rest)

    return _object(_PROXY_ROUTE, build, check)


def _static_route(bind: model.Bind | None) -> Convert[model.StaticSite]:
    def build(hosts: tuple[str, ...], file_dir: Path, path: str = "/", **rest: object) -> model.StaticSite:
        return dataclasses.replace(model.StaticSite(model.Route(hosts, path), file_dir), **rest)

    def check(f: _File, path: KeyPath, site: model.StaticSite) -> None:
        if bind is not None:
            f.loader.claim_routes(f, path, bind, site.route)

    return _object(_STATIC_ROUTE, build, check)


def _service(bind: model.Bind | None) -> Convert[model.Service]:
    def check_name(f: _File, value: object, path: KeyPath) -> str | None:
        name = _text(f, value, path)
        if name is not None:
            f.loader.claim(f, f.loader.service_names, name, path, "service name")
        return name

    schema = {
        "name": Key(check_name, required=True),
        "load_balancing_strategy": Key(_choice(_STRATEGIES, "strategy"), field="strategy"),
        "routes": Key(_list_of(_proxy_route(bind), nonempty=True), required=True),
        "upstreams": Key(_list_of(_upstream, nonempty=True), required=True),
    }
    return _object(schema, model.Service)


def _static_files(bind: model.Bind | None) -> Convert[tuple[model.StaticSite, ...]]:
    routes = _list_of(_static_route(bind), nonempty=True)
    return _object({"routes": Key(routes, required=True)}, lambda routes: routes)


_bind = _object(
    {"interface": Key(_interface), "port": Key(_port, required=True)},
    lambda port, interface=INTERFACES[DEFAULT_INTERFACE]: model.Bind(interface, port),
)


def _ingress(f: _File, value: object, path: KeyPath, name: str) -> model.Ingress | None:
    """An ``ingress "name" { }`` block, or a whole included file."""
    if not name:
        f.report(path, "the ingress name must not be empty")
    f.loader.claim(f, f.loader.ingress_names, name, path, "ingress name")
    t = f.table(value, path, ("bind", "services", "static_files"), ["bind"])
    if t is None:
        return None
    bind = f.get(t, path, "bind", _bind)
    if bind is not None:
        f.loader.claim_port(f, (*path, "bind"), bind)
    services = f.get(t, path, "services", _list_of(_service(bind)), ())
    static = f.get(t, path, "static_files", _list_of(_static_files(bind)), ())
    if bind is None or services is None or static is None:
        return None
    sites = tuple(site for group in static for site in group)
    return model.Ingress(name=name, bind=bind, services=services, static_files=sites, source=f.doc.path)


# --- the entry file --------------------------------------------------------------------------------------------

_UPSTREAM_SETTINGS = {
    "connection_timeout_seconds": Key(_seconds(positive=True)),
    "read_timeout_seconds": Key(_seconds(positive=True)),
    "connection_pool_size": Key(_integer(0)),
    "pool_idle_seconds": Key(_seconds()),
    "failure_cooldown_seconds": Key(_seconds()),
}
_CLIENT_SETTINGS = {
    "header_timeout_seconds": Key(_seconds(positive=True)),
    "idle_timeout_seconds": Key(_seconds(positive=True)),
    "max_header_bytes": Key(_integer(1)),
}
_shutdown = _object(
    {"drain_seconds": Key(_seconds())}, lambda drain_seconds=model.ServerSettings.drain_seconds: float(drain_seconds)
)
_server = _object(
    {
        "version": Key(_version, required=True),
        "pid_file": Key(_nullable(_file_path)),
        "shutdown": Key(_shutdown, field="drain_seconds"),
        "upstream": Key(_object(_UPSTREAM_SETTINGS, model.UpstreamSettings)),
        "client": Key(_object(_CLIENT_SETTINGS, model.ClientSettings)),
    },
    model.ServerSettings,
)


def _include(f: _File, value: object, path: KeyPath) -> tuple[str, ...] | None:
    """``include { ingresses = "glob" or ["glob", ...] }``."""
    t = f.table(value, path, ("ingresses",))
    return None if t is None else f.get(t, path, "ingresses", _patterns, ())


def _patterns(f: _File, value: object, path: KeyPath) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return None if _text(f, value, path) is None else (value,)
    if not isinstance(value, list):
        f.report(path, f"expected a glob or a list of globs, got {describe(value)}")
        return None
    return _list_of(_text)(f, value, path)


def _expand(f: _File, pattern: str) -> list[Path]:
    """The files ``pattern`` matches relative to ``f``'s directory, sorted."""
    matches = sorted(glob.glob(os.path.join(glob.escape(str(f.doc.path.parent)), pattern), recursive=True))
    return [Path(m) for m in matches if os.path.isfile(m)]
