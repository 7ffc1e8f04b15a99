"""Load and validate the configuration: HCL files -> :class:`~snakeway.config.model.Config`.

Theory of operation:

- :mod:`snakeway.config.hcl` turns each file into plain values plus the line of
  every key path. This module checks those values and builds the frozen model.
- It never stops at the first mistake. Converters (:mod:`snakeway.config._convert`)
  report what is wrong and return ``None``, their parent then fails too, and
  validation goes on with the siblings. :func:`load_config` raises one
  ``ConfigError`` with all of the problems.
- Most objects are declared as a schema, ``{hcl_key: Key(converter)}``; optional
  keys that are absent get the model's default. Adding a key is one schema
  entry plus the model field. This module holds the schema of the server and
  the ingresses; :mod:`snakeway.config._tls` that of the TLS keys.
- Rules that span objects (unique ingress and service names, one interface per
  port, TLS or not per port, redirect ports, no (host, path) routed twice on a
  listener) are checked by :class:`_Loader`, the state shared by all files, as
  soon as the pieces they need are valid. One rule needs the whole
  configuration: an ACME ``http-01`` bind needs some plain-HTTP listener, and
  that is checked when every file has been read.
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snakeway.config import _admin, _tls, hcl, model
from snakeway.config import _convert as cv
from snakeway.config._convert import File, Key
from snakeway.config.hcl import KeyPath, quote
from snakeway.errors import ConfigError, Problem

if TYPE_CHECKING:
    from collections.abc import Callable

SUPPORTED_VERSION = 1
DEFAULT_INTERFACE = "all"
HTTP01_NEEDS_PLAIN = (
    "http-01 needs a plain-HTTP listener to answer challenges: add redirect_http_to_https or a plain bind"
)


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
class _Port:
    """Who listens on a port first: a bind (TLS or not) or a redirect to ``(interface, port, status)``."""

    interface: str
    where: str
    tls: bool = False
    redirect: tuple[str, int, int] | None = None
    hsts: model.Hsts | None = None


class _Loader:
    """The state shared by all files of one configuration: problems and what has been claimed."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.ingress_names: dict[str, str] = {}
        self.service_names: dict[str, str] = {}
        self.ports: dict[int, _Port] = {}
        self.routes: dict[tuple[str, int, str, str], str] = {}
        self.automation = False  # server.tls_automation is written (valid or not)
        self.plain_listener = False  # a bind without tls, or a redirect, exists
        self.unknown_bind = False  # a bind failed to convert: the listeners are not all known
        self.http01: list[tuple[File, KeyPath]] = []
        self.acme_certs: dict[str, tuple[tuple[str, ...], str]] = {}  # store name -> (domains, where)
        self.admin: tuple[model.Admin, File, KeyPath] | None = None  # the bind_admin, and where it is
        self.admin_at: str | None = None  # where the first bind_admin is written (valid or not)

    def read(self, path: Path) -> File | None:
        try:
            return File(hcl.load(path), self.problems)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return None

    def load(self, path: Path) -> model.Config | None:
        f = self.read(path)
        top = None if f is None else f.table(f.doc.data, (), ("server", "include", "ingress", "bind_admin"), ["server"])
        if f is None or top is None:
            return None
        raw_server = top.get("server")
        self.automation = isinstance(raw_server, dict) and raw_server.get("tls_automation") is not None
        server = f.get(top, (), "server", _server)
        self.bind_admin(f, top, ())
        ingresses: list[model.Ingress | None] = []
        if "ingress" in top and (inline := f.table(top["ingress"], ("ingress",), None)) is not None:
            ingresses.extend(self.ingress(f, body, ("ingress", name), name) for name, body in inline.items())
        seen = {path.resolve()}  # the entry file and each included file are read once
        for pattern in f.get(top, (), "include", _include, ()) or ():
            for included in _expand(f, pattern):
                if included.resolve() in seen:
                    continue
                seen.add(included.resolve())
                g = self.read(included)
                ingresses.append(None if g is None else self.ingress(g, g.doc.data, (), included.stem))
        if not self.plain_listener and not self.unknown_bind:
            for g, challenge in self.http01:
                g.report(challenge, HTTP01_NEEDS_PLAIN)
        self.check_admin_port()
        if server is None or None in ingresses:
            return None
        admin = self.admin[0] if self.admin is not None else None
        return model.Config(
            server=server, ingresses=tuple(i for i in ingresses if i is not None), source=path, admin=admin
        )

    def ingress(self, f: File, value: object, path: KeyPath, name: str) -> model.Ingress | None:
        """An ``ingress "name" { }`` block, or a whole included file."""
        if not name:
            f.report(path, "the ingress name must not be empty")
        self.claim(f, self.ingress_names, name, path, "ingress name")
        t = f.table(value, path, ("bind", "services", "static_files", "bind_admin"), ["bind"])
        if t is None:
            return None
        self.bind_admin(f, t, path)
        bind = f.get(t, path, "bind", _bind(automation=self.automation))
        if bind is None:
            self.unknown_bind = True
        else:
            self.claim_listeners(f, (*path, "bind"), bind)
        services = f.get(t, path, "services", cv.list_of(_service(self, bind)), ())
        static = f.get(t, path, "static_files", cv.list_of(_static_files(self, bind)), ())
        if bind is None or services is None or static is None:
            return None
        sites = tuple(site for group in static for site in group)
        return model.Ingress(name=name, bind=bind, services=services, static_files=sites, source=f.doc.path)

    def bind_admin(self, f: File, table: dict[str, object], path: KeyPath) -> None:
        """A ``bind_admin`` in the entry file or an ingress: one per server."""
        if "bind_admin" not in table:
            return
        here = (*path, "bind_admin")
        if self.admin_at is not None:
            f.report(here, f"the admin listener is already set at {self.admin_at}; a server has one bind_admin")
            return
        self.admin_at = f.where(here)
        admin = _admin.admin(f, table["bind_admin"], here)
        if admin is not None:
            self.admin = (admin, f, here)

    def check_admin_port(self) -> None:
        """The admin listener's port is its own: no ingress nor redirect listens on it."""
        if self.admin is None:
            return
        admin, f, here = self.admin
        used = self.ports.get(admin.port)
        if used is not None:
            f.report((*here, "port"), f"port {admin.port} is already bound at {used.where}; "
                     "the admin listener needs a port of its own")

    def claim(self, f: File, claimed: dict[str, str], name: str, path: KeyPath, what: str) -> None:
        if name in claimed:
            f.report(path, f"{what} {quote(name)} is already used at {claimed[name]}")
        else:
            claimed[name] = f.where(path)

    def claim_listeners(self, f: File, path: KeyPath, bind: model.Bind) -> None:
        """The bind's port, and its redirect's: ingresses share a port only on one interface, all TLS or none."""
        tls, here = bind.tls is not None, (*path, "port")
        hsts = bind.tls.hsts if bind.tls is not None else None
        used = self.ports.setdefault(bind.port, _Port(bind.interface, f.where(here), tls=tls, hsts=hsts))
        if used.redirect is not None:
            f.report(here, f"port {bind.port} is already used by the HTTP-to-HTTPS redirect at {used.where}")
        elif used.interface != bind.interface:
            f.report(here, f"port {bind.port} is already bound to {used.interface} at {used.where}; "
                     "ingresses that share a port must use the same interface")
        elif used.tls != tls:
            f.report(here, f"port {bind.port} is already bound {'with' if used.tls else 'without'} tls at "
                     f"{used.where}; ingresses that share a port must all use tls or none")
        elif used.hsts != hsts:  # one listener, one Strict-Transport-Security header
            f.report((*path, "tls", "hsts") if hsts else (*path, "tls"),
                     f"port {bind.port} is already bound with {'no hsts' if used.hsts is None else 'other hsts'} "
                     f"settings at {used.where}; ingresses that share a port must have the same hsts")
        if bind.redirect is not None:
            self.claim_redirect(f, (*path, "redirect_http_to_https", "port"), bind, bind.redirect)
        if bind.tls is None or bind.redirect is not None:
            self.plain_listener = True
        elif bind.tls.mode is model.TlsMode.ACME and bind.tls.challenge is model.Challenge.HTTP_01:
            self.http01.append((f, (*path, "tls", "challenge")))
        if bind.tls is not None and bind.tls.mode is model.TlsMode.ACME:
            self.claim_acme(f, (*path, "tls", "domains"), bind.tls)

    def claim_acme(self, f: File, here: KeyPath, tls: model.Tls) -> None:
        """An ACME certificate is stored under its first name: two listeners naming it must want the same one."""
        groups = [(name,) for name in tls.domains] if tls.certificate_per_domain else [tls.domains]
        for domains in groups:
            wanted, where = self.acme_certs.setdefault(domains[0], (domains, f.where(here)))
            if wanted != domains:
                f.report(here, f"the certificate for {quote(domains[0])} is already asked for at {where} with "
                         f"domains {list(wanted)}; listeners share a certificate only with the same domains "
                         f"in the same order")
                return

    def claim_redirect(self, f: File, here: KeyPath, bind: model.Bind, redirect: model.Redirect) -> None:
        """A redirect port is its own listener, shared only by redirects to the same place with the same status."""
        if redirect.port == bind.port:
            f.report(here, f"must differ from the bind's own port {bind.port}")
            return
        target = (bind.interface, bind.port, redirect.status)
        used = self.ports.setdefault(redirect.port, _Port(bind.interface, f.where(here), redirect=target))
        if used.redirect is None:
            f.report(here, f"port {redirect.port} is already bound at {used.where}; "
                     "the redirect listener needs a port of its own")
        elif used.redirect != target:
            f.report(here, f"port {redirect.port} is already used by another HTTP-to-HTTPS redirect at "
                     f"{used.where}; redirects share a port only from the same listener with the same status")

    def claim_routes(self, f: File, path: KeyPath, bind: model.Bind, route: model.Route) -> None:
        for index, host in enumerate(route.hosts):
            key, here = (bind.interface, bind.port, host, route.path), (*path, "hosts", index)
            if key in self.routes:
                f.report(here, f"host {quote(host)} with path {quote(route.path)} is already routed on "
                         f"{bind.url_host}:{bind.port} at {self.routes[key]}")
            else:
                self.routes[key] = f.where(here)


# --- ingresses, innermost first --------------------------------------------------------------------------------

_ROUTE = {"hosts": Key(cv.list_of(cv.host_pattern, nonempty=True), required=True), "path": Key(cv.route_path)}
_PROXY_ROUTE = {
    **_ROUTE,
    "enable_websocket": Key(cv.boolean),
    "ws_max_connections": Key(cv.nullable(cv.integer(1))),
    "max_body_bytes": Key(cv.nullable(cv.integer(0))),
    "ws_idle_timeout_seconds": Key(cv.seconds(positive=True)),
    "strip_prefix": Key(cv.boolean),
}
_STATIC_ROUTE = {
    **_ROUTE,
    "file_dir": Key(cv.directory, required=True),
    "index": Key(cv.nullable(cv.file_name)),
    "directory_listing": Key(cv.boolean),
}
_endpoint = cv.schema({"host": Key(cv.upstream_host, True), "port": Key(cv.port, True)}, model.Endpoint)
_upstream = cv.schema({"endpoint": Key(_endpoint, True), "weight": Key(cv.integer(1))}, model.Upstream)
_STRATEGIES = {s.value: s for s in model.Strategy}


def _proxy_route(loader: _Loader, bind: model.Bind | None) -> cv.Convert[model.Route]:
    def check(f: File, path: KeyPath, route: model.Route) -> None:
        if route.ws_max_connections is not None and not route.enable_websocket:
            f.report((*path, "ws_max_connections"), "only applies with enable_websocket = true")
        if route.ws_idle_timeout_seconds != model.Route.ws_idle_timeout_seconds and not route.enable_websocket:
            f.report((*path, "ws_idle_timeout_seconds"), "only applies with enable_websocket = true")
        if bind is not None:
            loader.claim_routes(f, path, bind, route)

    return cv.schema(_PROXY_ROUTE, functools.partial(model.Route, path="/"), check)


def _static_route(loader: _Loader, bind: model.Bind | None) -> cv.Convert[model.StaticSite]:
    def build(hosts: tuple[str, ...], path: str = "/", **rest: object) -> model.StaticSite:
        site: Callable[..., model.StaticSite] = model.StaticSite  # the schema has checked each field
        return site(route=model.Route(hosts, path), **rest)

    def check(f: File, path: KeyPath, site: model.StaticSite) -> None:
        if bind is not None:
            loader.claim_routes(f, path, bind, site.route)

    return cv.schema(_STATIC_ROUTE, build, check)


def _service(loader: _Loader, bind: model.Bind | None) -> cv.Convert[model.Service]:
    def check_name(f: File, value: object, path: KeyPath) -> str | None:
        name = cv.text(f, value, path)
        if name is not None:
            loader.claim(f, loader.service_names, name, path, "service name")
        return name

    keys = {
        "name": Key(check_name, required=True),
        "load_balancing_strategy": Key(cv.choice(_STRATEGIES, "strategy"), field="strategy"),
        "routes": Key(cv.list_of(_proxy_route(loader, bind), nonempty=True), required=True),
        "upstreams": Key(cv.list_of(_upstream, nonempty=True), required=True),
    }
    return cv.schema(keys, model.Service)


def _static_files(loader: _Loader, bind: model.Bind | None) -> cv.Convert[tuple[model.StaticSite, ...]]:
    routes = cv.list_of(_static_route(loader, bind), nonempty=True)
    return cv.schema({"routes": Key(routes, required=True)}, lambda routes: routes)


def _bind(*, automation: bool) -> cv.Convert[model.Bind]:
    def build(
        port: int,
        interface: str = cv.INTERFACES[DEFAULT_INTERFACE],
        tls: model.Tls | None = None,
        redirect: model.Redirect | None = None,
    ) -> model.Bind:
        return model.Bind(interface, port, tls=tls, redirect=redirect)

    def check(f: File, path: KeyPath, bind: model.Bind) -> None:
        if bind.redirect is not None and bind.tls is None:
            f.report((*path, "redirect_http_to_https"), "only applies to a bind with tls")

    keys = {
        "interface": Key(cv.interface),
        "port": Key(cv.port, required=True),
        "tls": Key(_tls.tls(automation=automation)),
        "redirect_http_to_https": Key(_tls.redirect, field="redirect"),
    }
    return cv.schema(keys, build, check)


# --- the entry file --------------------------------------------------------------------------------------------


def _version(f: File, value: object, path: KeyPath) -> int | None:
    version = cv.integer(0)(f, value, path)
    if version is not None and version != SUPPORTED_VERSION:
        f.report(path, f"unsupported version {version}; this snakeway reads version {SUPPORTED_VERSION}")
        return None
    return version


_UPSTREAM_SETTINGS = {
    "connection_timeout_seconds": Key(cv.seconds(positive=True)),
    "read_timeout_seconds": Key(cv.seconds(positive=True)),
    "connection_pool_size": Key(cv.integer(0)),
    "pool_idle_seconds": Key(cv.seconds()),
    "failure_cooldown_seconds": Key(cv.seconds()),
}
_CLIENT_SETTINGS = {
    "header_timeout_seconds": Key(cv.seconds(positive=True)),
    "idle_timeout_seconds": Key(cv.seconds(positive=True)),
    "max_header_bytes": Key(cv.integer(1)),
    "send_timeout_seconds": Key(cv.seconds(positive=True)),
    "body_timeout_seconds": Key(cv.seconds(positive=True)),
    "buffer_request_body_bytes": Key(cv.integer(0)),
    "max_header_count": Key(cv.integer(1)),
    "underscores_in_headers": Key(cv.boolean),
}


def _access_log(f: File, value: object, path: KeyPath) -> str | Path | None:
    """``"stderr"``, ``"off"``, or a file in a directory that exists (``./off`` for a file named off)."""
    name = cv.text(f, value, path)
    if name is None or name in ("stderr", "off"):
        return name
    resolved = cv.file_path(f, value, path)
    if resolved is not None and not resolved.parent.is_dir():
        where = quote(str(resolved.parent))
        f.report(path, f"directory {where} does not exist (expected \"stderr\", \"off\" or a file)")
        return None
    return resolved


_log = cv.schema(
    {
        "format": Key(cv.choice({f.value: f for f in model.LogFormat}, "log format")),
        "level": Key(cv.choice(model.LOG_LEVELS, "log level")),
    },
    model.LogSettings,
)


_shutdown = cv.schema(
    {"drain_seconds": Key(cv.seconds())}, lambda drain_seconds=model.ServerSettings.drain_seconds: float(drain_seconds)
)


_server = cv.schema(
    {
        "version": Key(_version, required=True),
        "pid_file": Key(cv.nullable(cv.file_path)),
        "state_dir": Key(cv.file_path),
        "shutdown": Key(_shutdown, field="drain_seconds"),
        "upstream": Key(cv.schema(_UPSTREAM_SETTINGS, model.UpstreamSettings)),
        "client": Key(cv.schema(_CLIENT_SETTINGS, model.ClientSettings)),
        "tls_automation": Key(cv.nullable(_tls.tls_automation)),
        "workers": Key(cv.integer(1, 256)),
        "access_log": Key(_access_log),
        "log": Key(_log),
        "via": Key(cv.boolean),
    },
    model.ServerSettings,
)


def _include(f: File, value: object, path: KeyPath) -> tuple[str, ...] | None:
    """``include { ingresses = "glob" or ["glob", ...] }``."""
    t = f.table(value, path, ("ingresses",))
    return None if t is None else f.get(t, path, "ingresses", cv.one_or_list(cv.text, "a glob or a list of globs"), ())


def _expand(f: File, pattern: str) -> list[Path]:
    """The files ``pattern`` matches relative to ``f``'s directory, sorted."""
    matches = sorted(glob.glob(os.path.join(glob.escape(str(f.doc.path.parent)), pattern), recursive=True))
    return [Path(m) for m in matches if os.path.isfile(m)]
