"""Where in the configuration files an entry of a loaded configuration is written: ``FILE:LINE: key.path``.

The loaded :class:`~snakeway.config.model.Config` keeps which file each ingress came from, not the line of
each value: lines matter only when something goes wrong, so they are found then, by reading the file again
(:func:`snakeway.config.hcl.load`) and looking the key path up in it. A file that no longer parses, or an
entry that is not written (a default), has no location: the functions here return None, and the caller says
what is wrong without one.

An ingress written inline in the entry file is ``ingress.<name>...``; one read from an included file is that
whole file, so its key paths start at ``bind``, as the configuration's own error messages name them.
"""

from __future__ import annotations

from pathlib import Path

from snakeway.config import hcl
from snakeway.config.hcl import KeyPath, format_key_path
from snakeway.config.model import Config, Ingress, TlsMode
from snakeway.errors import ConfigError

TLS = ("bind", "tls")
CA_FILE = ("server", "tls_automation", "acme", "ca_file")


def server_entry(config: Config, key: str) -> str | None:
    """``FILE:LINE: server.<key>`` if the entry file writes that setting."""
    if config.source is None:
        return None
    return _written(config.source, ("server", key))


def listener_entry(config: Config, interface: str, port: int) -> str | None:
    """Where the port of the listener on ``interface:port`` is written (a bind's, or a redirect's)."""
    for ingress in config.ingresses:
        bind = ingress.bind
        if bind.interface != interface:
            continue
        if bind.port == port:
            return ingress_entry(config, ingress, ("bind", "port"))
        if bind.redirect is not None and bind.redirect.port == port:
            return ingress_entry(config, ingress, ("bind", "redirect_http_to_https", "port"))
    admin = config.admin
    if admin is not None and admin.source is not None and (admin.interface, admin.port) == (interface, port):
        return _written(admin.source, (*admin.at, "port"))
    return None


def file_entry(config: Config, path: Path | str) -> str | None:
    """Where a certificate or key file, or the ACME CA's ``ca_file``, is named."""
    wanted = Path(path)
    for ingress in config.ingresses:
        tls = ingress.bind.tls
        if tls is None or tls.mode is not TlsMode.MANUAL:
            continue
        for index, files in enumerate(tls.certs):
            for key, named in (("cert", files.cert), ("key", files.key)):
                if named == wanted:
                    single = ingress_entry(config, ingress, (*TLS, key))
                    return single or ingress_entry(config, ingress, (*TLS, "certs", index, key))
    admin = config.admin
    if admin is not None and admin.tls is not None and admin.source is not None:
        for index, files in enumerate(admin.tls.certs):
            for key, named in (("cert", files.cert), ("key", files.key)):
                if named == wanted:
                    return _written(admin.source, (*admin.at, "tls", key)) or _written(
                        admin.source, (*admin.at, "tls", "certs", index, key))
    automation = config.server.tls_automation
    if automation is not None and automation.acme.ca_file == wanted and config.source is not None:
        return _written(config.source, CA_FILE)
    return None


def ingress_entry(config: Config, ingress: Ingress, path: KeyPath) -> str | None:
    """Where ``path`` (from the ingress's top: ``bind.port``) is written in ``ingress``."""
    if ingress.source is None:
        return None
    inline = ingress.source == config.source
    return _written(ingress.source, ("ingress", ingress.name, *path) if inline else path)


def _written(file: Path, path: KeyPath) -> str | None:
    """``FILE:LINE: key.path`` if ``path`` is written in ``file`` (read again now)."""
    try:
        doc = hcl.load(file)
    except ConfigError:
        return None
    if path not in doc.lines:
        return None
    return f"{file}:{doc.lines[path]}: {format_key_path(path)}"
