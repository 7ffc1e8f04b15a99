"""Recent warnings and errors of the server log, for the status page: a small ring per worker, merged.

:data:`RING` is a :class:`logging.Handler` at ``WARNING`` on the root logger of a worker that has an admin
API (:func:`install`, idempotent). It keeps the last :data:`KEPT` records as small JSON-able dicts; each
worker's ring travels in its figures snapshot (:mod:`.share`), and :func:`merged` puts every worker's
together, newest last. Records below ``WARNING`` never reach it (the logger checks the level before calling
a handler), so the access log and info lines cost nothing here.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

KEPT = 20  # records per worker, and shown on the page
MAX_MESSAGE = 300  # characters of a message kept


class RecentErrors(logging.Handler):
    """The last :data:`KEPT` records at ``WARNING`` or above, as dicts."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[dict[str, Any]] = deque(maxlen=KEPT)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep the format
            message = str(record.msg)
        self.records.append({
            "at": record.created, "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
            "message": message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…",
        })

    def recent(self) -> list[dict[str, Any]]:
        return list(self.records)


RING = RecentErrors()


def install() -> None:
    """Keep this process's warnings and errors in :data:`RING` (once, however often it is called)."""
    root = logging.getLogger()
    if RING not in root.handlers:
        root.addHandler(RING)


def merged(rings: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every worker's records together, oldest first, the last :data:`KEPT` of them.

    A record two rings hold alike (a process's, inherited by the workers it forked) is shown once.
    """
    unique = {(r.get("at"), r.get("pid"), r.get("message")): r for ring in rings for r in ring}
    return sorted(unique.values(), key=lambda r: float(r.get("at") or 0))[-KEPT:]
