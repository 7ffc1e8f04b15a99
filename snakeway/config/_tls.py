"""Converters for the TLS keys: ``bind.tls``, ``bind.redirect_http_to_https`` and ``server.tls_automation``.

Each object is checked on its own here. Rules that need the rest of the
configuration (who else uses a port, whether any plain listener can answer
HTTP-01 challenges) are :class:`snakeway.config.load._Loader`'s.

``bind.tls`` is not one schema but one per ``mode``: the mode is read first,
quietly, and picks the keys that are allowed. A key of another mode is reported
as not applying to this one rather than as unknown; when the mode itself is
wrong, the other keys are checked against all modes together and the mode's
converter reports the mistake.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from snakeway import hostnames
from snakeway.config import _convert as cv
from snakeway.config import model
from snakeway.config._convert import File, Key
from snakeway.config.hcl import KeyPath, quote

if TYPE_CHECKING:
    from collections.abc import Callable

REDIRECT_STATUSES = (301, 302, 307, 308)
# http:// is accepted only for a CA on this machine (a test CA such as pebble).
LOCAL_ACME_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# The shortest lease a Redis store accepts: renewed every third of it, a renewal must fit with room to spare.
MIN_LEASE_SECONDS = 3.0

_EMAIL = re.compile(r"[^@\s]+@([^@\s]+)\Z")
_MODES = {m.value: m for m in model.TlsMode}
_CHALLENGES = {
    "http-01": model.Challenge.HTTP_01,
    "http01": model.Challenge.HTTP_01,
    "tls-alpn-01": model.Challenge.TLS_ALPN_01,
    "tlsalpn01": model.Challenge.TLS_ALPN_01,
}
_KEY_TYPES = {k.value: k for k in model.KeyType}
_STORE_TYPES = {s.value: s for s in model.StoreType}


# --- bind.tls --------------------------------------------------------------------------------------------------

def _check_hsts(f: File, path: KeyPath, hsts: model.Hsts) -> None:
    """``preload`` is a request to browsers' built-in lists, which take only a year or more with subdomains."""
    if not hsts.preload:
        return
    if hsts.max_age_seconds < model.HSTS_PRELOAD_MIN_AGE:
        f.report((*path, "max_age_seconds"), f"preload needs max_age_seconds of at least "
                 f"{model.HSTS_PRELOAD_MIN_AGE} (one year), got {hsts.max_age_seconds}")
    if not hsts.include_subdomains:
        f.report((*path, "include_subdomains"), "preload needs include_subdomains = true")


_hsts = cv.schema(
    {
        "max_age_seconds": Key(cv.integer(0)),
        "include_subdomains": Key(cv.boolean),
        "preload": Key(cv.boolean),
    },
    model.Hsts,
    _check_hsts,
)
_cert_files = cv.schema(
    {"cert": Key(cv.existing_file, required=True), "key": Key(cv.existing_file, required=True)}, model.CertFiles
)
_COMMON = {
    "mode": Key(cv.choice(_MODES, "tls mode"), required=True),
    "handshake_timeout_seconds": Key(cv.seconds(positive=True)),
    "hsts": Key(_hsts),
}
_BY_MODE = {
    model.TlsMode.MANUAL: {
        **_COMMON,
        "cert": Key(cv.existing_file),
        "key": Key(cv.existing_file),
        "certs": Key(cv.list_of(_cert_files, nonempty=True)),
        "default": Key(cv.cert_name(ip=True)),
    },
    model.TlsMode.INTERNAL: {  # snakeway's own CA also certifies IP addresses
        **_COMMON,
        "domains": Key(cv.list_of(cv.cert_name(ip=True), nonempty=True), required=True),
        "default": Key(cv.cert_name(ip=True)),
    },
    model.TlsMode.ACME: {
        **_COMMON,
        "domains": Key(cv.list_of(cv.cert_name(ip=False), nonempty=True), required=True),
        "challenge": Key(cv.choice(_CHALLENGES, "challenge")),
        "key_type": Key(cv.choice(_KEY_TYPES, "key type")),
        "certificate_per_domain": Key(cv.boolean),
    },
}
# Checked against when the mode is missing or wrong: any key of any mode is allowed.
_ANY_MODE = {
    key: spec if key == "mode" else dataclasses.replace(spec, required=False)
    for keys in _BY_MODE.values()
    for key, spec in keys.items()
}


def tls(*, automation: bool) -> cv.Convert[model.Tls]:
    """``bind.tls``; ``automation`` says whether ``server.tls_automation`` is there (acme needs it)."""

    def convert(f: File, value: object, path: KeyPath) -> model.Tls | None:
        table = f.table(value, path, None)
        if table is None:
            return None
        before = len(f.problems)
        written = table.get("mode")
        mode = _MODES.get(written) if isinstance(written, str) else None
        keys = _ANY_MODE if mode is None else _BY_MODE[mode]
        for key in table:
            if mode is not None and key in _ANY_MODE and key not in keys:
                f.report((*path, key), f"{quote(key)} does not apply to mode {quote(mode.value)}")
        if mode is model.TlsMode.MANUAL:
            _check_manual_shape(f, path, table)
        fields = f.fields({k: v for k, v in table.items() if k not in _ANY_MODE or k in keys}, path, keys)
        if fields is None or mode is None or len(f.problems) != before:
            return None
        result = _build(fields)
        _check(f, path, result, automation=automation)
        return result if len(f.problems) == before else None

    return convert


def _build(fields: dict[str, object]) -> model.Tls:
    """The model from converted fields (each one's type is checked by now); ``cert`` and ``key`` make one pair."""
    tls: Callable[..., model.Tls] = model.Tls
    pair: Callable[..., model.CertFiles] = model.CertFiles
    if "cert" in fields:
        fields["certs"] = (pair(fields.pop("cert"), fields.pop("key")),)
    return tls(**fields)


def _check_manual_shape(f: File, path: KeyPath, table: dict[str, object]) -> None:
    """Exactly one of: ``cert`` and ``key``, or ``certs``."""
    pair = [key for key in ("cert", "key") if key in table]
    if pair and "certs" in table:
        f.report((*path, "certs"), "use either cert and key, or certs, not both")
    elif not pair and "certs" not in table:
        f.report(path, 'mode "manual" needs cert and key, or certs')
    elif len(pair) == 1:
        f.report((*path, "key" if pair == ["cert"] else "cert"), "required key is missing (cert and key go together)")


def _check(f: File, path: KeyPath, tls: model.Tls, *, automation: bool) -> None:
    if tls.mode is model.TlsMode.INTERNAL and tls.default is not None and not _covers(tls.domains, tls.default):
        f.report((*path, "default"), f"{quote(tls.default)} is not covered by domains")
    if tls.mode is not model.TlsMode.ACME:
        return
    if not automation:
        f.report((*path, "mode"), 'mode "acme" needs server.tls_automation (ACME account and renewal settings)')
    names = len(set(tls.domains))
    if not tls.certificate_per_domain and names > model.MAX_NAMES_PER_CERTIFICATE:
        f.report((*path, "domains"), f"{names} names make one certificate, and ACME CAs issue at most "
                 f"{model.MAX_NAMES_PER_CERTIFICATE} names per certificate; split them across listeners or set "
                 "certificate_per_domain = true")
    for index, name in enumerate(tls.domains):
        if name.startswith("*."):
            f.report((*path, "domains", index), f"wildcard {quote(name)} cannot be validated with http-01 or "
                     "tls-alpn-01 (it needs dns-01); list the names instead")


def _covers(domains: tuple[str, ...], name: str) -> bool:
    """Whether a certificate for ``domains`` is valid for ``name`` (``*.parent`` covers one more label)."""
    return any(hostnames.matches(domain, name) for domain in domains)


# --- bind.redirect_http_to_https -------------------------------------------------------------------------------


def _redirect_status(f: File, value: object, path: KeyPath) -> int | None:
    status = cv.integer(0)(f, value, path)
    if status is not None and status not in REDIRECT_STATUSES:
        f.report(path, f"must be one of {', '.join(map(str, REDIRECT_STATUSES))}, got {status}")
        return None
    return status


redirect = cv.schema({"port": Key(cv.port, required=True), "status": Key(_redirect_status)}, model.Redirect)


# --- server.tls_automation -------------------------------------------------------------------------------------


def _directory_url(f: File, value: object, path: KeyPath) -> str | None:
    url = cv.text(f, value, path)
    if url is None:
        return None
    try:
        parts = urlsplit(url)  # raises ValueError on unbalanced IPv6 brackets
        _ = parts.port  # raises ValueError unless the port is a number 0-65535
        scheme, host = parts.scheme, parts.hostname
    except ValueError:
        scheme, host = "", None
    if scheme == "https" and host:
        return url
    if scheme == "http" and host in LOCAL_ACME_HOSTS:
        return url
    if scheme == "http" and host:
        f.report(path, f"must be an https:// URL (http:// only for localhost, 127.0.0.1 or [::1]), got {quote(url)}")
    else:
        f.report(path, f"expected an https:// URL, got {quote(url)}")
    return None


def _email(f: File, value: object, path: KeyPath) -> str | None:
    address = cv.text(f, value, path)
    if address is None:
        return None
    if address.lower().startswith("mailto:"):
        f.report(path, f"write the address without mailto:, got {quote(address)}")
        return None
    match = _EMAIL.match(address)
    if match is None or "." not in match.group(1) or hostnames.normalize_host(match.group(1)) is None:
        f.report(path, f"expected an email address, got {quote(address)}")
        return None
    return address


def _check_store(f: File, path: KeyPath, store: model.CertStoreSettings) -> None:
    if store.cert_dir is not None and store.type is not model.StoreType.FILESYSTEM:
        f.report((*path, "cert_dir"), f'only applies with type = "filesystem", not {quote(store.type.value)}')
    if store.type is model.StoreType.REDIS:
        if store.url is None:
            f.report(path, 'type = "redis" needs url (such as "redis://127.0.0.1:6379/0")')
        return
    redis_only = {
        "url": store.url is not None,
        "key_prefix": store.key_prefix != model.CertStoreSettings.key_prefix,
        "encryption_key_file": store.encryption_key_file is not None,
        "lease_seconds": store.lease_seconds != model.CertStoreSettings.lease_seconds,
    }
    for key, written in redis_only.items():
        if written:
            f.report((*path, key), f'only applies with type = "redis", not {quote(store.type.value)}')


def _redis_url(f: File, value: object, path: KeyPath) -> str | None:
    """``redis://`` or ``rediss://`` (TLS), with a host, an optional port and an optional database number."""
    url = cv.text(f, value, path)
    if url is None:
        return None
    expected = 'expected redis://[[user]:password@]host[:port][/db] or rediss://..., got'
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        f.report(path, f"{expected} {quote(url)} (bad port)")
        return None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        f.report(path, f"{expected} {quote(url)}")
        return None
    if port == 0:
        f.report(path, f"{expected} {quote(url)} (bad port)")
        return None
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        f.report(path, f"{expected} {quote(url)} (the database is a number)")
        return None
    return url


def _key_prefix(f: File, value: object, path: KeyPath) -> str | None:
    prefix = cv.text(f, value, path)
    if prefix is not None and (any(c.isspace() for c in prefix) or not prefix.isprintable()):
        f.report(path, f"expected a prefix without spaces or control characters, got {quote(prefix)}")
        return None
    return prefix


def _encryption_key_file(f: File, value: object, path: KeyPath) -> Path | None:
    """An existing file holding 32 bytes in base64: the key that seals private keys in Redis."""
    from snakeway.acme.redisrecords import read_key_file  # the store's own reader: one definition of the format

    resolved = cv.existing_file(f, value, path)
    if resolved is None:
        return None
    try:
        read_key_file(resolved)
    except (OSError, ValueError) as exc:
        f.report(path, f"{resolved}: {exc}")
        return None
    return resolved


def _lease_seconds(f: File, value: object, path: KeyPath) -> float | None:
    """Seconds of a lock's lease: at least :data:`MIN_LEASE_SECONDS`, renewed every third of it."""
    seconds = cv.seconds(positive=True)(f, value, path)
    if seconds is not None and seconds < MIN_LEASE_SECONDS:
        f.report(path, f"must be at least {MIN_LEASE_SECONDS:g} (the lease is renewed every third of it), got {value}")
        return None
    return seconds


_rate_limits = cv.schema(
    {field.name: Key(cv.integer(1)) for field in dataclasses.fields(model.RateLimitSettings)},
    model.RateLimitSettings,
)


def _mac_key_file(f: File, value: object, path: KeyPath) -> Path | None:
    """An existing file holding the base64url MAC key of an External Account Binding."""
    from snakeway.acme.issuers import decode_mac_key  # the backend's own reader: one definition of the format

    resolved = cv.existing_file(f, value, path)
    if resolved is None:
        return None
    try:
        decode_mac_key(resolved.read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        f.report(path, f"{resolved}: {exc}")
        return None
    return resolved


_eab = cv.schema(
    {"key_id": Key(cv.text, required=True), "mac_key_file": Key(_mac_key_file, required=True)},
    model.ExternalAccountBinding,
)
_acme = cv.schema(
    {
        "directory_url": Key(_directory_url),
        "contact_email": Key(cv.one_or_list(_email, "an email address or a list of them")),
        "ca_file": Key(cv.existing_file),
        "data_dir": Key(cv.file_path),
        "max_concurrent_orders": Key(cv.integer(1)),
        "rate_limits": Key(_rate_limits),
        "profile": Key(cv.text),
        "preferred_chain": Key(cv.text),
        "eab": Key(_eab),
    },
    model.AcmeSettings,
)


def _issuers(f: File, value: object, path: KeyPath) -> tuple[model.AcmeSettings, ...] | None:
    """``acme``: one CA (an object), or several tried in order (a non-empty list of objects)."""
    if not isinstance(value, list):
        one = _acme(f, value, path)
        return None if one is None else (one,)
    issuers = cv.list_of(_acme, nonempty=True)(f, value, path)
    if issuers is None:
        return None
    seen: dict[str, int] = {}
    for index, issuer in enumerate(issuers):
        if index and issuer.data_dir is not None:
            f.report((*path, index, "data_dir"), "only the first issuer has data_dir (it holds every issuer's "
                     "account, each under its directory URL)")
        first = seen.setdefault(issuer.directory_url, index)
        if first != index:
            f.report((*path, index, "directory_url"), f"{quote(issuer.directory_url)} is issuer {first} already "
                     "(one account and one rate-limit budget per CA)")
    return issuers


def _automation(**fields: object) -> model.TlsAutomation:
    """The model from converted fields; the first issuer is ``acme``, the others ``fallback_acme``."""
    build: Callable[..., model.TlsAutomation] = model.TlsAutomation
    issuers = fields.pop("acme", None)
    if isinstance(issuers, tuple) and issuers:
        fields["acme"], fields["fallback_acme"] = issuers[0], issuers[1:]
    return build(**fields)


_cert_store = cv.schema(
    {
        "type": Key(cv.choice(_STORE_TYPES, "store type")),
        "cert_dir": Key(cv.file_path),
        "url": Key(_redis_url),
        "key_prefix": Key(_key_prefix),
        "encryption_key_file": Key(_encryption_key_file),
        "lease_seconds": Key(_lease_seconds),
    },
    model.CertStoreSettings,
    _check_store,
)


def _program(f: File, value: object, path: KeyPath) -> str | None:
    """An absolute path to an executable file (a hook's program: run without a shell or a PATH search)."""
    name = cv.text(f, value, path)
    if name is None:
        return None
    program = Path(name)
    if not program.is_absolute():
        f.report(path, f"expected the program's absolute path, got {quote(name)}")
    elif not program.is_file():
        f.report(path, f"{'not a file' if program.exists() else 'program does not exist'}: {name}")
    elif not os.access(program, os.X_OK):
        f.report(path, f"program is not executable: {name}")
    else:
        return name
    return None


def _command(f: File, value: object, path: KeyPath) -> tuple[str, ...] | None:
    """``["/path/prog", "arg", ...]``: a program (see :func:`_program`) and its arguments."""
    items = cv.list_of(cv.text, nonempty=True)(f, value, path)
    if items is None:
        return None
    return items if _program(f, items[0], (*path, 0)) is not None else None


_hooks = cv.schema(
    {
        "on_renewed": Key(_command),
        "timeout_seconds": Key(cv.seconds(positive=True)),
    },
    model.Hooks,
)


tls_automation = cv.schema(
    {
        "renew_within_days": Key(cv.nullable(cv.number("days", positive=True))),
        "check_interval_seconds": Key(cv.seconds(positive=True)),
        "acme": Key(_issuers),
        "cert_store": Key(_cert_store),
        "issuer_fallback_after_failures": Key(cv.integer(1)),
        "hooks": Key(_hooks),
    },
    _automation,
)
