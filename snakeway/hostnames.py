"""Host names: what one is, its canonical form, and where each kind of name may be used. Pure, no I/O.

A leaf module (the standard library and snakeway.errors only): the configuration, the TLS layer, the certificate
store and the proxy all ask it, so a name that one of them accepts means the same thing to the others.

Theory of operation
-------------------
Three kinds of strings meet here:

* a **host**: what a client asks for (the SNI server name, a ``Host`` header). It comes from the network, so
  :func:`normalize_host` is *total*: any input whatsoever gives a canonical string or ``None``, never an
  exception. A ``Host`` value may carry a port, which :func:`host_part` strips (:func:`route_host` does both).
* a **certificate name**: what a certificate covers (an exact name, ``*.parent`` or an IP address).
  :func:`normalize_pattern` brings one from a certificate to canonical form for matching;
  :func:`certificate_name` is stricter and says what snakeway may ask a CA for, or keep in its store.
* a **route pattern**: ``*``, ``*.parent``, an exact name or an IP address (IPv6 in brackets, as a ``Host``
  header has it): :func:`route_pattern`.

Canonical form: DNS names are lower-case ASCII (IDNA A-labels, ``bücher.test`` -> ``xn--bcher-kva.test``), without
a trailing dot; IP addresses are in :mod:`ipaddress`'s compressed form, without brackets (routing keys put IPv6
back in brackets, :func:`route_host`). IDNA uses the standard library's codec (IDNA 2003), as Python clients do
when they send SNI. Normalisation is idempotent: a canonical name normalises to itself.

Labels: a host's labels are letters, digits, hyphens (not first or last) and underscores. Underscores are not
allowed in host names (RFC 952) but are seen in the wild (``my_host.example.com``), so a client may route by one,
as nginx allows. A *certificate name* has letter-digit-hyphen labels only: CAs refuse underscores in DNS names
(the CA/Browser Forum's Baseline Requirements), and the store's file names rely on it (``*.a.test`` is kept as
``_wildcard_.a.test``, which no certificate name can be).

A wildcard covers exactly one label: ``*.b.test`` covers ``a.b.test`` but neither ``b.test`` nor ``x.a.b.test``
(RFC 6125 §6.4.3), and never an IP address.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import TYPE_CHECKING

from snakeway.errors import SnakewayError

if TYPE_CHECKING:
    from collections.abc import Iterable

# Longer input is rejected before any work: a DNS name has at most 253 characters, and an SNI at most 255 bytes.
MAX_INPUT_CHARS = 1024
MAX_NAME_CHARS = 253
# Canonical forms remembered. A client sends the same few names again and again (SNI, then Host, on every
# connection), and working one out costs about 2 % of a new TLS connection; the bound keeps a client that sends
# a new name every time from growing it.
NORMALIZED_CACHE_SIZE = 4096

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"  # a host's label: LDH, and underscore
_LDH_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"  # a certificate name's label
_HOST_LABEL = re.compile(_LABEL + r"\Z")
# Strings these match are canonical already (normalisation returns them unchanged): lower-case labels, no
# trailing dot, a letter, "-" or "_" somewhere so not an IP address, and for CANONICAL_PATTERN optionally "*."
# first. Checking is ~20 times cheaper than normalising; callers on a hot path (the SNI callback, 10,000
# certificates at start-up) try it first. Both need a length check (<= MAX_NAME_CHARS) besides.
CANONICAL_HOST = re.compile(rf"(?=[0-9.]*[a-z_-]){_LABEL}(?:\.{_LABEL})*")
CANONICAL_PATTERN = re.compile(rf"(?:\*\.)?(?=[0-9.]*[a-z_-]){_LABEL}(?:\.{_LABEL})*")
_CERTIFICATE_DNS = re.compile(rf"(?:\*\.)?{_LDH_LABEL}(?:\.{_LDH_LABEL})*")
# Full stops that IDNA treats as label separators (UTS #46): ideographic, fullwidth and halfwidth.
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def normalize_host(name: object) -> str | None:
    """The canonical form of a host name or IP address, or ``None`` if it is not one.

    Total: never raises, whatever ``name`` is (``None``, ``""``, non-ASCII, invalid IDNA, NUL bytes, megabytes).
    A trailing dot is ignored; ``[::1]`` (brackets, as in a ``Host`` header) is accepted for IPv6. No port.

    Args:
        name: The untrusted name, usually a ``str`` or ``None``.

    Returns:
        Lower-case ASCII DNS name, or compressed IP address; ``None`` if ``name`` is neither.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_INPUT_CHARS:
        return None
    return _normalize(name)


@functools.lru_cache(maxsize=NORMALIZED_CACHE_SIZE)
def _normalize(name: str) -> str | None:
    if name.startswith("[") and name.endswith("]"):
        return _ip(name[1:-1], v6_only=True)
    ip = _ip(name)
    if ip is not None:
        return ip
    return _dns_name(name[:-1] if name.endswith(".") else name)


def host_part(value: str) -> str:
    """A ``Host`` value without its port: ``a.test:8080`` -> ``a.test``, ``[::1]:80`` -> ``[::1]``. Not normalised."""
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end != -1 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def route_host(value: str) -> str | None:
    """The key a ``Host`` value (port allowed) is routed by: canonical, with IPv6 in brackets; ``None`` if no host.

    Total. The form :func:`route_pattern` gives patterns, so :func:`matches` compares the two.
    """
    host = normalize_host(host_part(value.strip()))
    return f"[{host}]" if host is not None and ":" in host else host


def route_pattern(pattern: str) -> str:
    """The canonical form of a route's host pattern: ``*``, ``*.parent``, an exact host, or an IP address.

    An IPv6 address is written in brackets (``[::1]``), as a ``Host`` header carries it, and stays so.

    Raises:
        ValueError: ``pattern`` is none of these, or carries a port; the message says what is expected.
    """
    if pattern == "*":
        return pattern
    if pattern.startswith("*."):
        parent = normalize_host(pattern[2:])
        if parent is not None and not is_ip(parent):
            return f"*.{parent}"
    elif ":" not in pattern or pattern.startswith("["):
        host = normalize_host(pattern)
        if host is not None:
            return f"[{host}]" if ":" in host else host
    raise ValueError('expected a host name (without port), "*.domain" (exactly one more label) or "*"')


@functools.lru_cache(maxsize=NORMALIZED_CACHE_SIZE)
def normalize_pattern(pattern: str) -> str:
    """The canonical form of a name from a certificate: exact host, ``*.parent`` wildcard or IP address.

    Lenient like :func:`normalize_host` (certificates in use may name ``a_b.test``); what snakeway itself may
    ask a certificate for is :func:`certificate_name`.

    Raises:
        ValueError: ``pattern`` is none of these (the message quotes it).
    """
    if pattern.startswith("*."):
        parent = normalize_host(pattern[2:])
        if parent is None or is_ip(parent):
            raise ValueError(f"invalid wildcard name {pattern!r}: expected '*.' and a host name")
        return f"*.{parent}"
    name = normalize_host(pattern)
    if name is None:
        raise ValueError(f"invalid certificate name {pattern!r}: expected a host name, '*.parent' or an IP address")
    return name


class IPAddressName(SnakewayError, ValueError):
    """An IP address where only a domain name may be (a certificate from an ACME CA, the store)."""


def certificate_name(name: str, *, ip: bool = True) -> str:
    """The canonical form of a name snakeway may get a certificate for, or keep one under in its store.

    A DNS name of letters, digits and hyphens (IDNA A-labels after normalisation) or ``*.`` and one, and with
    ``ip`` an IP address. Whatever this returns with ``ip=False`` the store accepts as a name.

    Raises:
        IPAddressName: ``name`` is an IP address and ``ip`` is false.
        ValueError: ``name`` is not a certificate name; the message says what is expected (``my_host.a.test``:
            no underscore), without quoting ``name``.
    """
    try:
        canonical = normalize_pattern(name)
    except ValueError:
        expected = ', "*.domain" or an IP address' if ip else ' or "*.domain"'
        raise ValueError(f"expected a host name (without port){expected}") from None
    if is_ip(canonical):
        if ip:
            return canonical
        raise IPAddressName("expected a domain name, not an IP address")
    if not _CERTIFICATE_DNS.fullmatch(canonical):
        raise ValueError("a certificate name has letters, digits and hyphens only: a CA refuses '_'")
    if len(canonical) > MAX_NAME_CHARS:
        raise ValueError(f"a certificate name has at most {MAX_NAME_CHARS} characters")
    return canonical


def is_ip(name: str) -> bool:
    """Whether the canonical ``name`` is an IP address (which wildcards never cover); ``[::1]`` counts."""
    return ":" in name or _ip(name) is not None


def wildcard_for(host: str) -> str | None:
    """The one wildcard pattern that covers the canonical ``host`` (``a.b.test`` -> ``*.b.test``), if any."""
    if is_ip(host):
        return None
    _first, dot, parent = host.partition(".")
    return f"*.{parent}" if dot and parent else None


def matches(pattern: str, host: str) -> bool:
    """Whether the canonical ``pattern`` covers the canonical ``host`` (exact, or a one-label wildcard)."""
    return pattern == host or (pattern.startswith("*.") and wildcard_for(host) == pattern)


def covers(patterns: Iterable[str], host: object) -> bool:
    """Whether any of the certificate names ``patterns`` covers ``host``.

    Total in ``host`` (an untrusted ``Host`` header value *without* its port): a host that does not normalise is
    covered by nothing. Patterns that do not normalise are ignored.
    """
    canonical = normalize_host(host)
    if canonical is None:
        return False
    for pattern in patterns:
        try:
            if matches(normalize_pattern(pattern), canonical):
                return True
        except ValueError:
            continue
    return False


# --- the Host header's grammar -----------------------------------------------------------------------------------

# RFC 3986 section 3.2.2: uri-host [ ":" port ], where uri-host is an IP-literal
# (IPv6 or IPvFuture, in brackets) or a reg-name (which covers IPv4 addresses).
# _AUTHORITY_NAME is the usual case, a reg-name without escapes: one pattern with the
# escapes as an alternative costs twice as much on every request. The port
# is at most 5 digits here, and at most 65535 (checked on its value).
_AUTHORITY_NAME = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=]*(?::([0-9]{0,5}))?")
_AUTHORITY = re.compile(
    rb"(?:\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
    rb"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
    rb"(?::([0-9]{0,5}))?"
)
MAX_PORT = 65535


def valid_authority(value: bytes) -> bool:
    """Whether ``value`` is ``uri-host [":" port]``, as a Host header or an absolute-form authority must be.

    The grammar only, checked on every request: no userinfo (``user@``), no spaces, no path: ``x y`` and
    ``evil@x`` are not hosts. The port is a number up to 65535 (at most 5 digits: ``00080`` is 80), or
    empty (``a.test:``, which RFC 3986 allows: the scheme's default port). Whether the host is a name
    snakeway can route by is :func:`route_host`'s question.
    """
    match = _AUTHORITY_NAME.fullmatch(value) or _AUTHORITY.fullmatch(value)
    if match is None:
        return False
    port = match.group(1)
    return port is None or len(port) < 5 or int(port) <= MAX_PORT


def _ip(text: str, *, v6_only: bool = False) -> str | None:
    try:
        address = ipaddress.IPv6Address(text) if v6_only else ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(address)


def _dns_name(text: str) -> str | None:
    labels: list[str] = []
    for label in text.translate(_IDNA_DOTS).split("."):
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:  # includes invalid code points, over-long and empty labels
                return None
        label = label.lower()
        if not _HOST_LABEL.match(label):
            return None
        labels.append(label)
    name = ".".join(labels)
    return name if len(name) <= MAX_NAME_CHARS else None
