"""Which route a request belongs to: pure code, no I/O.

A route matches when the request's host matches one of its host patterns and
its path starts with the route's path on a ``/`` boundary. Among the matches
the longest path wins; among equal paths an exact host beats ``*.parent``,
which beats ``*``; among equal patterns the one configured first wins.

Paths are compared after dot-segments are removed (``/api/../admin`` is
``/admin``), so a path trick cannot reach a route it does not name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

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


def normalize_host(host: str) -> str:
    """Lower-case, port stripped, trailing dot dropped; IPv6 brackets kept."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.rstrip(".")


def host_matches(pattern: str, host: str) -> bool:
    """``host`` must already be normalised; ``pattern`` is lower-case ASCII."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        label, dot, parent = host.partition(".")
        return bool(label) and bool(dot) and parent == pattern[2:]
    return pattern == host


def path_matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, over the path only (no query)."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


@dataclass(frozen=True)
class Match(Generic[T]):
    route: Route
    target: T


@dataclass(frozen=True)
class _Entry(Generic[T]):
    pattern: str
    route: Route
    target: T


class Router(Generic[T]):
    """An immutable routing table from (host, path) to a target.

    Args:
      routes: ``(route, target)`` pairs in configuration order.
    """

    def __init__(self, routes: Iterable[tuple[Route, T]]) -> None:
        entries = [
            (order, _Entry(pattern, route, target))
            for order, (route, target) in enumerate(routes)
            for pattern in route.hosts
        ]
        entries.sort(key=lambda e: (-len(e[1].route.path), host_rank(e[1].pattern), e[0]))
        self._entries = tuple(entry for _, entry in entries)
        self._host_cache: dict[str, tuple[_Entry[T], ...]] = {}

    def match(self, host: str, path: str) -> Match[T] | None:
        """The best route for a request, or None (a 404)."""
        path = remove_dot_segments(path or "/")
        for entry in self._for_host(host):
            if path_matches(entry.route.path, path):
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
            name = normalize_host(host)
            entries = tuple(entry for entry in self._entries if host_matches(entry.pattern, name))
            if len(self._host_cache) >= HOST_CACHE_SIZE:
                self._host_cache.clear()
            self._host_cache[host] = entries
        return entries
