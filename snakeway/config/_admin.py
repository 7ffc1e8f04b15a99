"""The converter of ``bind_admin``: the admin listener, its optional TLS and the bearer tokens it accepts.

The object is checked on its own here. Whether a server has one ``bind_admin`` only, and whether its port
is its own, are :class:`snakeway.config.load._Loader`'s rules: they need the rest of the configuration.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TYPE_CHECKING

from snakeway.admin import auth
from snakeway.config import _convert as cv
from snakeway.config import _tls, model
from snakeway.config._convert import File, Key
from snakeway.config.hcl import quote

if TYPE_CHECKING:
    from snakeway.config.hcl import KeyPath

ADMIN_DEFAULT_INTERFACE = "127.0.0.1"
_ADMIN_TLS_MODES = (model.TlsMode.MANUAL.value, model.TlsMode.INTERNAL.value)
_bearer = cv.schema({"token_file": Key(cv.existing_file, required=True)}, lambda token_file: token_file)
_admin_auth = cv.schema({"bearer": Key(_bearer, required=True)}, lambda bearer: bearer)


def _admin_tls(f: File, value: object, path: KeyPath) -> model.Tls | None:
    """``bind_admin.tls``: manual or internal certificates (an ACME CA could not validate a loopback name)."""
    mode = value.get("mode") if isinstance(value, dict) else None
    if isinstance(mode, str) and mode not in _ADMIN_TLS_MODES:
        f.report((*path, "mode"), f"the admin listener takes mode \"manual\" or \"internal\", got {quote(mode)}")
        return None
    tls = _tls.tls(automation=False)(f, value, path)
    if tls is not None and tls.mode is model.TlsMode.INTERNAL and tls.default is None:
        # curl and most clients send no SNI to an IP address: answer those with the first name's certificate.
        tls = dataclasses.replace(tls, default=tls.domains[0])
    return tls


_admin_schema = cv.schema(
    {
        "interface": Key(cv.interface),
        "port": Key(cv.port, required=True),
        "tls": Key(_admin_tls),
        "auth": Key(_admin_auth, required=True, field="token_file"),
    },
    lambda port, token_file, interface=ADMIN_DEFAULT_INTERFACE, tls=None: model.Admin(
        interface, port, token_file, tls=tls
    ),
)


def admin(f: File, value: object, path: KeyPath) -> model.Admin | None:
    """``bind_admin``: never on a wildcard address; its token file is read now (and on every reload)."""
    admin = _admin_schema(f, value, path)
    if admin is None:
        return None
    if ipaddress.ip_address(admin.interface).is_unspecified:
        f.report((*path, "interface"), f"the admin listener must not listen on every interface "
                 f"({admin.interface}): name one address, such as 127.0.0.1")
        return None
    here = (*path, "auth", "bearer", "token_file")
    try:
        tokens = auth.parse_tokens(admin.token_file.read_bytes())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        f.report(here, f"{admin.token_file}: {why}")
        return None
    return dataclasses.replace(admin, tokens=tokens, source=f.doc.path, at=tuple(str(key) for key in path))
