"""Host names as the TLS layer compares them: normalisation and wildcard matching.

Pure and synchronous. Two kinds of strings meet here:

* a **host**: what a client asks for (the SNI server name, a ``Host`` header). It comes from the network, so
  :func:`normalize_host` is *total*: any input whatsoever gives a canonical string or ``None``, never an exception.
* a **pattern**: what a certificate covers (an exact name, ``*.parent`` or an IP address). Patterns come from
  configuration and certificates, so :func:`normalize_pattern` raises :class:`ValueError` on nonsense.

Canonical form: DNS names are lower-case ASCII (IDNA A-labels, e.g. ``bücher.test`` -> ``xn--bcher-kva.test``),
without a trailing dot; IP addresses are in :mod:`ipaddress`'s compressed form, without brackets. IDNA uses the
standard library's codec (IDNA 2003), as the configuration loader does and as Python clients do when they send SNI.

A wildcard covers exactly one label: ``*.b.test`` covers ``a.b.test`` but neither ``b.test`` nor ``x.a.b.test``
(RFC 6125 §6.4.3), and never an IP address.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

# Longer input is rejected before any work: a DNS name has at most 253 characters, and an SNI at most 255 bytes.
MAX_INPUT_CHARS = 1024
MAX_NAME_CHARS = 253

# Letters, digits, hyphen (not first or last) and underscore (seen in the wild, harmless to compare).
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
# Canonical forms remembered, per function. A client sends the same few names again and again
# (SNI, then Host, on every connection), and working one out costs about 2 % of a new TLS
# connection; the bound keeps a client that sends a new name every time from growing it.
NORMALIZED_CACHE_SIZE = 4096
# Full stops that IDNA treats as label separators (UTS #46): ideographic, fullwidth and halfwidth.
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def normalize_host(name: object) -> str | None:
    """The canonical form of a host name or IP address, or ``None`` if it is not one.

    Total: never raises, whatever ``name`` is (``None``, ``""``, non-ASCII, invalid IDNA, NUL bytes, megabytes).
    A trailing dot is ignored; ``[::1]`` (brackets, as in a ``Host`` header) is accepted for IPv6.

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


@functools.lru_cache(maxsize=NORMALIZED_CACHE_SIZE)
def normalize_pattern(pattern: str) -> str:
    """The canonical form of a certificate name: exact host, ``*.parent`` wildcard or IP address.

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


def is_ip(name: str) -> bool:
    """Whether the canonical ``name`` is an IP address (which wildcards never cover)."""
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
        if not _LABEL.match(label):
            return None
        labels.append(label)
    name = ".".join(labels)
    return name if len(name) <= MAX_NAME_CHARS else None
