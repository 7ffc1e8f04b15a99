"""Which route a request belongs to: pure code, no I/O.

A route matches when the request's host matches one of its host patterns (both
in the form of :func:`snakeway.hostnames.route_host`: canonical, port
stripped, IPv6 in brackets; a Host that is no host name matches only ``*``) and
its path starts with the route's path on a ``/`` boundary. Among the matches
the longest path wins; among equal paths an exact host beats ``*.parent``,
which beats ``*``; among equal patterns the one configured first wins.

Paths are compared as :mod:`snakeway.uri` normalises them: the
request's path arrives normalised (``/api/%2e%2e/admin`` is ``/admin``), the
same path the upstream is sent, and a route's path was brought to that form
when the configuration was loaded (``/%7euser`` is ``/~user``, ``/café`` is
``/caf%C3%A9``), so a path trick cannot reach a route it does not name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from snakeway import hostnames
from snakeway.config.model import Route

T = TypeVar("T")

EXACT, WILDCARD, ANY = 0, 1, 2
# Host values whose candidate routes a Router remembers (see Router._for_host).
HOST_CACHE_SIZE = 1024


def host_rank(pattern: str) -> int:
    if pattern == "*":
        return ANY
    if pattern.startswith("*."):
        return WILDCARD
    return EXACT


def host_matches(pattern: str, host: str | None) -> bool:
    """Whether a route's ``pattern`` covers ``host``, a routing key (:func:`~snakeway.hostnames.route_host`).

    ``*`` covers every request, even one without a usable Host (``None``).
    """
    return pattern == "*" or (host is not None and hostnames.matches(pattern, host))


def path_matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def strip_prefix(prefix: str, path: str) -> str | None:
    """What of ``path`` follows the route prefix ``prefix``, without its leading ``/``; None if it does not match.

    ``/static`` leaves ``a/b.css`` of ``/static/a/b.css`` and ``""`` of ``/static``; ``/`` leaves ``a`` of ``/a``.
    Static files look the remainder up in their directory; a proxied route with ``strip_prefix`` sends
    ``/`` + the remainder upstream.
    """
    if prefix == "/":
        return path[1:]
    if path == prefix:
        return ""
    if path.startswith(prefix + "/"):
        return path[len(prefix) + 1 :]
    return None


@dataclass(frozen=True)
class Match(Generic[T]):
    route: Route
    target: T


@dataclass(frozen=True)
class _Entry(Generic[T]):
    pattern: str
    route: Route
    target: T
    prefix: str  # the route's path (normalised by the configuration)


class Router(Generic[T]):
    """An immutable routing table from (host, path) to a target.

    Args:
      routes: ``(route, target)`` pairs in configuration order.
    """

    def __init__(self, routes: Iterable[tuple[Route, T]]) -> None:
        entries = [
            (order, _Entry(pattern, route, target, route.path))
            for order, (route, target) in enumerate(routes)
            for pattern in route.hosts
        ]
        entries.sort(key=lambda e: (-len(e[1].prefix), host_rank(e[1].pattern), e[0]))
        self._entries = tuple(entry for _, entry in entries)
        self._host_cache: dict[str, tuple[_Entry[T], ...]] = {}

    def match(self, host: str, path: str) -> Match[T] | None:
        """The best route for a request, or None (a 404).

        ``path`` is normalised already (:func:`~snakeway.uri.normalize_path`).
        """
        for entry in self._for_host(host):
            if path_matches(entry.prefix, path):
                return Match(entry.route, entry.target)
        return None

    def _for_host(self, host: str) -> tuple[_Entry[T], ...]:
        """The entries whose host pattern matches ``host`` (as sent), in match order.

        Remembered per Host value: requests repeat a few hosts while their
        paths vary. Clients choose the value, so the memo is bounded: it is
        emptied when full, and a flood of made-up names costs only the
        filtering that an uncached lookup does anyway. A cache of derived
        data: the table itself stays immutable.
        """
        entries = self._host_cache.get(host)
        if entries is None:
            name = hostnames.route_host(host)
            entries = tuple(entry for entry in self._entries if host_matches(entry.pattern, name))
            if len(self._host_cache) >= HOST_CACHE_SIZE:
                self._host_cache.clear()
            self._host_cache[host] = entries
        return entries
