"""The server log: ``server.log = { format, level }``, on stderr.

``text`` is the classic ``logging`` line (``2026-12-05 09:34:39,330 INFO [824] snakeway: listening on ...``,
the ``[pid]`` with several workers); ``json`` is one JSON object per line with the keys ``time`` (UTC, ISO 8601
with milliseconds), ``level``, ``logger``, ``pid``, ``worker`` (a worker's number, from 0, in a worker of
several) and ``message`` (plus ``traceback`` when there is one). A message that spans lines stays one line in
JSON. The access log (:mod:`snakeway.proxy.accesslog`) writes its lines itself, in the same format, with the
same ``time``, ``pid`` and ``worker``.

With several workers, what concerns the whole server is said once, by the supervisor (a signal it
forwards to every worker, the local CA's path); a worker writes its own acknowledgement of it at
``debug`` level only (:func:`said_once`).

``level`` is what the server log keeps (``debug``, ``info``, ``warning``, ``error``); access lines are not
filtered by it (``server.access_log = "off"`` turns them off). A reload applies a changed ``server.log``.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from snakeway.config.model import LogFormat, LogSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_FORMAT_WITH_PID = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

_handler: logging.Handler | None = None
_worker: int | None = None


def utc_stamp(seconds: float) -> str:
    """``seconds`` (``time.time()``) as ``2026-12-05T09:34:39.330Z``."""
    whole = int(seconds)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{int((seconds - whole) * 1000):03d}Z"


def worker() -> int | None:
    """This process's worker number when it is one of several workers, else None."""
    return _worker


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": utc_stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if _worker is not None:
            entry["worker"] = _worker
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def formatter(settings: LogSettings, *, with_pid: bool) -> logging.Formatter:
    if settings.format is LogFormat.JSON:
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT_WITH_PID if with_pid else TEXT_FORMAT)


def configure(settings: LogSettings, *, with_pid: bool) -> None:
    """Send the log to stderr in ``settings``' format and level (the process's start)."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(formatter(settings, with_pid=with_pid))
    root.addHandler(_handler)
    root.setLevel(settings.level)


def reconfigure(settings: LogSettings, *, with_pid: bool) -> None:
    """Apply ``settings`` again (a reload), when :func:`configure` set the log up (not in a test's server)."""
    if _handler is not None:
        _handler.setFormatter(formatter(settings, with_pid=with_pid))
        logging.getLogger().setLevel(settings.level)


def said_once(level: int) -> int:
    """The level of a line that every worker would write alike (a signal forwarded to each, the local CA's
    path): ``debug`` in a worker of several, whose supervisor writes it once; else ``level``."""
    return logging.DEBUG if _worker is not None else level


def in_worker(number: int) -> None:
    """This process is worker ``number`` (called once forked): its JSON lines say so."""
    global _worker
    _worker = number
