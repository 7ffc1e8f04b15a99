"""Load and validate the configuration: HCL files -> :class:`~snakeway.config.model.Config`.

Theory of operation:

- :mod:`snakeway.config.hcl` turns each file into plain values plus a map from
  key path to line. This module checks those values and builds the frozen
  model. It never stops at the first mistake: every converter reports what is
  wrong with its value and returns ``None``, its parent then returns ``None``
  too, and validation carries on with the siblings. :func:`load_config` raises
  one :class:`~snakeway.errors.ConfigError` holding every problem.
- A converter has the signature ``(file, value, key_path) -> T | None``. The
  schema of each table is a tuple of allowed keys next to its converter, so a
  new key is one entry in that tuple plus one ``get`` call.
- Cross-cutting rules (unique service and ingress names, one interface per
  port, no (host, path) routed twice on a listener) are checked as soon as the
  pieces they need are valid, so they are reported even when a sibling value
  is broken. They live on :class:`_Loader`, the state shared by all files.
"""

from __future__ import annotations

import difflib
import glob
import ipaddress
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path
from typing import TypeVar

from snakeway.config import hcl
from snakeway.config.hcl import KeyPath, format_key_path, quote
from snakeway.config.model import (
    Bind,
    ClientSettings,
    Config,
    Endpoint,
    Ingress,
    Route,
    ServerSettings,
    Service,
    StaticSite,
    Strategy,
    Upstream,
    UpstreamSettings,
)
from snakeway.errors import ConfigError, Problem

T = TypeVar("T")
Convert = Callable[["_File", object, KeyPath], T | None]

SUPPORTED_VERSION = 1
INTERFACES = {"loopback": "127.0.0.1", "all": "0.0.0.0"}
DEFAULT_INTERFACE = "all"

_ENTRY_KEYS = ("server", "include", "ingress")
_SERVER_KEYS = ("version", "pid_file", "shutdown", "upstream", "client")
_SHUTDOWN_KEYS = ("drain_seconds",)
_UPSTREAM_SETTINGS_KEYS = (
    "connection_timeout_seconds",
    "read_timeout_seconds",
    "connection_pool_size",
    "pool_idle_seconds",
    "failure_cooldown_seconds",
)
_CLIENT_KEYS = ("header_timeout_seconds", "idle_timeout_seconds", "max_header_bytes")
_INCLUDE_KEYS = ("ingresses",)
_INGRESS_KEYS = ("bind", "services", "static_files")
_BIND_KEYS = ("interface", "port")
_SERVICE_KEYS = ("name", "load_balancing_strategy", "routes", "upstreams")
_UPSTREAM_KEYS = ("endpoint", "weight")
_ENDPOINT_KEYS = ("host", "port")
_ROUTE_KEYS = ("hosts", "path")
_PROXY_ROUTE_KEYS = (*_ROUTE_KEYS, "enable_websocket", "ws_max_connections", "max_body_bytes")
_STATIC_KEYS = ("routes",)
_STATIC_ROUTE_KEYS = (*_ROUTE_KEYS, "file_dir", "index", "directory_listing")

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_BAD_PATH_CHARS = re.compile(r"[?#\s\x00-\x1f\x7f]")


def load_config(path: Path) -> Config:
    """Load the configuration whose entry file is ``path``, with its includes.

    Raises:
        ConfigError: Listing every problem found in every file, in file order
            and then line order.
    """
    loader = _Loader()
    config = loader.load(path)
    if loader.problems or config is None:
        order = {file: index for index, file in enumerate(dict.fromkeys(p.file for p in loader.problems))}
        raise ConfigError(sorted(loader.problems, key=lambda p: (order[p.file], p.line)))
    return config


class _File:
    """Validation of one file: knows its lines, reports into the shared loader."""

    def __init__(self, loader: _Loader, doc: hcl.Document) -> None:
        self.loader = loader
        self.doc = doc

    def report(self, path: KeyPath, message: str) -> None:
        self.loader.problems.append(Problem(self.doc.path, self.doc.line(path), format_key_path(path), message))

    def where(self, path: KeyPath) -> str:
        """``FILE:LINE (key.path)``: how another problem refers to this place."""
        location = f"{self.doc.path}:{self.doc.line(path)}"
        return f"{location} ({format_key_path(path)})" if path else location

    def table(
        self, value: object, path: KeyPath, allowed: Collection[str] | None, required: Collection[str] = ()
    ) -> dict[str, object] | None:
        """Check that ``value`` is an object with known keys and the required ones."""
        if not isinstance(value, dict):
            self.report(path, f"expected an object, got {_describe(value)}")
            return None
        if allowed is not None:
            for key in value:
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
        if key not in table:
            return default
        return convert(self, table[key], (*path, key))


class _Loader:
    """State shared by all files of one configuration: problems and claimed names."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.ingress_names: dict[str, str] = {}
        self.service_names: dict[str, str] = {}
        self.ports: dict[int, tuple[str, str]] = {}
        self.routes: dict[tuple[str, int, str, str], str] = {}

    def load(self, path: Path) -> Config | None:
        try:
            doc = hcl.load(path)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return None
        f = _File(self, doc)
        top = f.table(doc.data, (), _ENTRY_KEYS, required=("server",))
        if top is None:
            return None
        server = f.get(top, (), "server", _server)
        ingresses: list[Ingress | None] = []
        inline = f.get(top, (), "ingress", _inline_ingresses, ())
        ingresses.extend(inline or ())
        for pattern in f.get(top, (), "include", _include, ()) or ():
            for included in _expand(f, pattern):
                ingresses.append(self.load_ingress_file(included))
        if server is None or None in ingresses:
            return None
        return Config(server=server, ingresses=tuple(i for i in ingresses if i is not None), source=path)

    def load_ingress_file(self, path: Path) -> Ingress | None:
        try:
            doc = hcl.load(path)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return None
        return _ingress(_File(self, doc), doc.data, (), path.stem)

    def claim(self, f: _File, table: dict[str, str], name: str, path: KeyPath, what: str) -> None:
        if name in table:
            f.report(path, f"{what} {quote(name)} is already used at {table[name]}")
        else:
            table[name] = f.where(path)

    def claim_port(self, f: _File, bind: Bind, path: KeyPath) -> None:
        interface, where = self.ports.setdefault(bind.port, (bind.interface, f.where(path)))
        if interface != bind.interface:
            f.report(path, f"port {bind.port} is already bound to {interface} at {where}; "
                     "ingresses that share a port must use the same interface")

    def claim_routes(self, f: _File, bind: Bind, hosts: tuple[str, ...], route_path: str, path: KeyPath) -> None:
        for index, host in enumerate(hosts):
            key = (bind.interface, bind.port, host, route_path)
            here = (*path, "hosts", index)
            if key in self.routes:
                f.report(here, f"host {quote(host)} with path {quote(route_path)} is already routed on "
                         f"{bind.url_host}:{bind.port} at {self.routes[key]}")
            else:
                self.routes[key] = f.where(here)


# --- the entry file --------------------------------------------------------------------------------------------


def _server(f: _File, value: object, path: KeyPath) -> ServerSettings | None:
    t = f.table(value, path, _SERVER_KEYS, required=("version",))
    if t is None:
        return None
    version = f.get(t, path, "version", _version)
    pid_file = f.get(t, path, "pid_file", _nullable(_file_path))
    drain = f.get(t, path, "shutdown", _shutdown, ServerSettings.drain_seconds)
    upstream = f.get(t, path, "upstream", _upstream_settings, UpstreamSettings())
    client = f.get(t, path, "client", _client_settings, ClientSettings())
    if version is None or drain is None or upstream is None or client is None:
        return None
    return ServerSettings(version=version, pid_file=pid_file, drain_seconds=drain, upstream=upstream, client=client)


def _version(f: _File, value: object, path: KeyPath) -> int | None:
    version = _integer()(f, value, path)
    if version is not None and version != SUPPORTED_VERSION:
        f.report(path, f"unsupported version {version}; this snakeway reads version {SUPPORTED_VERSION}")
        return None
    return version


def _shutdown(f: _File, value: object, path: KeyPath) -> float | None:
    t = f.table(value, path, _SHUTDOWN_KEYS)
    return None if t is None else f.get(t, path, "drain_seconds", _seconds(), ServerSettings.drain_seconds)


def _upstream_settings(f: _File, value: object, path: KeyPath) -> UpstreamSettings | None:
    t = f.table(value, path, _UPSTREAM_SETTINGS_KEYS)
    if t is None:
        return None
    d = UpstreamSettings()
    connect = f.get(t, path, "connection_timeout_seconds", _seconds(positive=True), d.connection_timeout_seconds)
    read = f.get(t, path, "read_timeout_seconds", _seconds(positive=True), d.read_timeout_seconds)
    pool = f.get(t, path, "connection_pool_size", _integer(0), d.connection_pool_size)
    idle = f.get(t, path, "pool_idle_seconds", _seconds(), d.pool_idle_seconds)
    cooldown = f.get(t, path, "failure_cooldown_seconds", _seconds(), d.failure_cooldown_seconds)
    if connect is None or read is None or pool is None or idle is None or cooldown is None:
        return None
    return UpstreamSettings(connect, read, pool, idle, cooldown)


def _client_settings(f: _File, value: object, path: KeyPath) -> ClientSettings | None:
    t = f.table(value, path, _CLIENT_KEYS)
    if t is None:
        return None
    d = ClientSettings()
    header = f.get(t, path, "header_timeout_seconds", _seconds(positive=True), d.header_timeout_seconds)
    idle = f.get(t, path, "idle_timeout_seconds", _seconds(positive=True), d.idle_timeout_seconds)
    max_header = f.get(t, path, "max_header_bytes", _integer(1), d.max_header_bytes)
    if header is None or idle is None or max_header is None:
        return None
    return ClientSettings(header, idle, max_header)


def _include(f: _File, value: object, path: KeyPath) -> tuple[str, ...] | None:
    t = f.table(value, path, _INCLUDE_KEYS)
    return None if t is None else f.get(t, path, "ingresses", _patterns, ())


def _patterns(f: _File, value: object, path: KeyPath) -> tuple[str, ...] | None:
    """One glob or a list of them."""
    if isinstance(value, str):
        return None if _text(f, value, path) is None else (value,)
    return _list_of(_text)(f, value, path)


def _expand(f: _File, pattern: str) -> list[Path]:
    """The files ``pattern`` matches, relative to the entry file, sorted; the entry itself is skipped."""
    base = f.doc.path.parent
    matches = sorted(glob.glob(os.path.join(glob.escape(str(base)), pattern), recursive=True))
    out: list[Path] = []
    for match in matches:
        candidate = Path(match)
        if candidate.is_file() and candidate.resolve() != f.doc.path.resolve():
            out.append(candidate)
    return out


def _inline_ingresses(f: _File, value: object, path: KeyPath) -> list[Ingress | None] | None:
    t = f.table(value, path, None)
    if t is None:
        return None
    return [_ingress(f, body, (*path, name), name) for name, body in t.items()]


# --- ingresses: inline or one per included file ----------------------------------------------------------------


def _ingress(f: _File, value: object, path: KeyPath, name: str) -> Ingress | None:
    if not name:
        f.report(path, "an ingress name must not be empty")
    else:
        f.loader.claim(f, f.loader.ingress_names, name, path, "ingress name")
    t = f.table(value, path, _INGRESS_KEYS, required=("bind",))
    if t is None:
        return None
    bind = f.get(t, path, "bind", _bind)
    if bind is not None:
        f.loader.claim_port(f, bind, (*path, "bind", "port"))
    services = f.get(t, path, "services", _list_of(partial(_service, bind=bind)), ())
    static = f.get(t, path, "static_files", _list_of(partial(_static_files, bind=bind)), ())
    if bind is None or services is None or static is None or not name:
        return None
    sites = tuple(site for group in static for site in group)
    return Ingress(name=name, bind=bind, services=services, static_files=sites, source=f.doc.path)


def _bind(f: _File, value: object, path: KeyPath) -> Bind | None:
    t = f.table(value, path, _BIND_KEYS, required=("port",))
    if t is None:
        return None
    interface = f.get(t, path, "interface", _interface, INTERFACES[DEFAULT_INTERFACE])
    port = f.get(t, path, "port", _port)
    if interface is None or port is None:
        return None
    return Bind(interface=interface, port=port)


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


def _service(f: _File, value: object, path: KeyPath, *, bind: Bind | None) -> Service | None:
    t = f.table(value, path, _SERVICE_KEYS, required=("name", "routes", "upstreams"))
    if t is None:
        return None
    name = f.get(t, path, "name", _text)
    if name is not None:
        f.loader.claim(f, f.loader.service_names, name, (*path, "name"), "service name")
    strategy = f.get(t, path, "load_balancing_strategy", _strategy, Strategy.FAILOVER)
    routes = f.get(t, path, "routes", _list_of(partial(_proxy_route, bind=bind), nonempty=True))
    upstreams = f.get(t, path, "upstreams", _list_of(_upstream, nonempty=True))
    if name is None or strategy is None or routes is None or upstreams is None:
        return None
    return Service(name=name, routes=routes, upstreams=upstreams, strategy=strategy)


def _strategy(f: _File, value: object, path: KeyPath) -> Strategy | None:
    text = _text(f, value, path)
    if text is None:
        return None
    try:
        return Strategy(text)
    except ValueError:
        names = ", ".join(s.value for s in Strategy)
        f.report(path, f"unknown strategy {quote(text)}; expected one of: {names}")
        return None


def _upstream(f: _File, value: object, path: KeyPath) -> Upstream | None:
    t = f.table(value, path, _UPSTREAM_KEYS, required=("endpoint",))
    if t is None:
        return None
    endpoint = f.get(t, path, "endpoint", _endpoint)
    weight = f.get(t, path, "weight", _integer(1), 1)
    if endpoint is None or weight is None:
        return None
    return Upstream(endpoint=endpoint, weight=weight)


def _endpoint(f: _File, value: object, path: KeyPath) -> Endpoint | None:
    t = f.table(value, path, _ENDPOINT_KEYS, required=("host", "port"))
    if t is None:
        return None
    host = f.get(t, path, "host", _upstream_host)
    port = f.get(t, path, "port", _port)
    if host is None or port is None:
        return None
    return Endpoint(host=host, port=port)


def _upstream_host(f: _File, value: object, path: KeyPath) -> str | None:
    text = _text(f, value, path)
    if text is None:
        return None
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = _dns_name(text)
    if name is None:
        f.report(path, f"expected a host name or IP address (without scheme or port), got {quote(text)}")
    return name


def _route_target(
    f: _File, t: dict[str, object], path: KeyPath, bind: Bind | None
) -> tuple[tuple[str, ...], str] | None:
    """The ``hosts`` and ``path`` every route has; claims them on the listener."""
    hosts = f.get(t, path, "hosts", _list_of(_host_pattern, nonempty=True))
    route_path = f.get(t, path, "path", _route_path, "/")
    if hosts is None or route_path is None:
        return None
    if bind is not None:
        f.loader.claim_routes(f, bind, hosts, route_path, path)
    return hosts, route_path


def _proxy_route(f: _File, value: object, path: KeyPath, *, bind: Bind | None) -> Route | None:
    t = f.table(value, path, _PROXY_ROUTE_KEYS, required=("hosts",))
    if t is None:
        return None
    target = _route_target(f, t, path, bind)
    websocket = f.get(t, path, "enable_websocket", _boolean, False)
    ws_max = f.get(t, path, "ws_max_connections", _nullable(_integer(1)))
    max_body = f.get(t, path, "max_body_bytes", _nullable(_integer(0)))
    if ws_max is not None and websocket is False:
        f.report((*path, "ws_max_connections"), "only applies with enable_websocket = true")
    if target is None or websocket is None:
        return None
    return Route(target[0], target[1], enable_websocket=websocket, ws_max_connections=ws_max, max_body_bytes=max_body)


def _static_files(f: _File, value: object, path: KeyPath, *, bind: Bind | None) -> tuple[StaticSite, ...] | None:
    t = f.table(value, path, _STATIC_KEYS, required=("routes",))
    if t is None:
        return None
    return f.get(t, path, "routes", _list_of(partial(_static_route, bind=bind), nonempty=True))


def _static_route(f: _File, value: object, path: KeyPath, *, bind: Bind | None) -> StaticSite | None:
    t = f.table(value, path, _STATIC_ROUTE_KEYS, required=("hosts", "file_dir"))
    if t is None:
        return None
    target = _route_target(f, t, path, bind)
    file_dir = f.get(t, path, "file_dir", _directory)
    index = f.get(t, path, "index", _nullable(_index_name), "index.html")
    listing = f.get(t, path, "directory_listing", _boolean, False)
    if target is None or file_dir is None or listing is None:
        return None
    return StaticSite(Route(*target), file_dir=file_dir, index=index or None, directory_listing=listing)


def _directory(f: _File, value: object, path: KeyPath) -> Path | None:
    resolved = _file_path(f, value, path)
    if resolved is None:
        return None
    if not resolved.exists():
        f.report(path, f"directory does not exist: {resolved}")
        return None
    if not resolved.is_dir():
        f.report(path, f"not a directory: {resolved}")
        return None
    return resolved


def _index_name(f: _File, value: object, path: KeyPath) -> str | None:
    text = _text(f, value, path, nonempty=False)
    if text is not None and ("/" in text or "\\" in text or text in (".", "..")):
        f.report(path, f"expected a file name, not a path, got {quote(text)}")
        return None
    return text


# --- scalar converters -----------------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """How a value appears in "expected X, got Y" messages (HCL type names)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {quote(value if len(value) <= 40 else value[:37] + '...')}"
    return "list" if isinstance(value, list) else "object"


def _text(f: _File, value: object, path: KeyPath, *, nonempty: bool = True) -> str | None:
    if not isinstance(value, str):
        f.report(path, f"expected a string, got {_describe(value)}")
        return None
    if nonempty and not value:
        f.report(path, "must not be empty")
        return None
    return value


def _boolean(f: _File, value: object, path: KeyPath) -> bool | None:
    if not isinstance(value, bool):
        f.report(path, f"expected true or false, got {_describe(value)}")
        return None
    return value


def _integer(low: int | None = None, high: int | None = None) -> Convert[int]:
    def convert(f: _File, value: object, path: KeyPath) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool):
            f.report(path, f"expected an integer, got {_describe(value)}")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            f.report(path, f"must be {bounds}, got {value}")
            return None
        return value

    return convert


_port = _integer(1, 65535)


def _seconds(*, positive: bool = False) -> Convert[float]:
    def convert(f: _File, value: object, path: KeyPath) -> float | None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            f.report(path, f"expected a number of seconds, got {_describe(value)}")
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
    """A list whose items all convert; ``None`` if any does not (each is reported)."""

    def convert_list(f: _File, value: object, path: KeyPath) -> tuple[T, ...] | None:
        if not isinstance(value, list):
            f.report(path, f"expected a list, got {_describe(value)}")
            return None
        if nonempty and not value:
            f.report(path, "must not be empty")
            return None
        items = [convert(f, item, (*path, index)) for index, item in enumerate(value)]
        return None if any(item is None for item in items) else tuple(i for i in items if i is not None)

    return convert_list


def _file_path(f: _File, value: object, path: KeyPath) -> Path | None:
    """A path; relative ones are relative to the directory of the file that names them."""
    text = _text(f, value, path)
    return None if text is None else (f.doc.path.parent / text).resolve()


def _route_path(f: _File, value: object, path: KeyPath) -> str | None:
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


def _host_pattern(f: _File, value: object, path: KeyPath) -> str | None:
    """``*``, ``*.domain`` or an exact name; lower-case, IDNA-encoded."""
    text = _text(f, value, path)
    if text is None:
        return None
    if text == "*":
        return text
    wildcard = text.startswith("*.")
    name = _dns_name(text[2:] if wildcard else text)
    if name is None:
        f.report(path, f"invalid host pattern {quote(text)}: expected a host name (without port), "
                 '"*.domain" (exactly one more label) or "*"')
        return None
    return f"*.{name}" if wildcard else name


def _dns_name(text: str) -> str | None:
    """``text`` as a lower-case ASCII (IDNA) host name, or ``None`` if it is not one."""
    labels = text.lower().split(".")
    out: list[str] = []
    for label in labels:
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                return None
        if not _LABEL.match(label):
            return None
        out.append(label)
    name = ".".join(out)
    return name if len(name) <= 253 else None
