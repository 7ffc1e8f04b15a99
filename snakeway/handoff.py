"""The configuration a new worker starts with: the last one a worker applied.

The supervisor loads the configuration once, at start; reloads happen in the
workers. So that a worker started later (after one died) serves what the
others serve, a worker that applied a reload writes the configuration it
applied (frozen dataclasses, pickled) into a directory that only the
supervisor's user can enter, created by the supervisor before it forked.
The supervisor forks each new worker from the newest one there.

A file is named ``config-<stamp>-<pid>.pickle``: ``stamp`` is the
``CLOCK_MONOTONIC`` time (one clock for every process of the machine) at
which the worker began to read the configuration file, so when two
reloads finish out of order the one that read the file last still wins. A
file appears whole or not at all (written aside, then renamed). A reload
that failed publishes nothing, so a configuration that a worker rejected
(a syntax error, an unreadable certificate, a port in use) never becomes
what new workers start with.

The same directory carries how each worker's start-up ended, so that a
mistake that stops every worker is told once, by the supervisor: a worker
that is serving leaves ``started-<pid>``; one that could not start leaves
``failed-<pid>`` holding the lines that say why (see :mod:`snakeway.fatal`)
and exits with :data:`START_FAILED`.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import final

from snakeway.config.model import Config

logger = logging.getLogger(__name__)

_NAME = re.compile(r"config-(\d+)-(\d+)\.pickle")
# A worker's exit status when it could not start and said why in its ``failed-<pid>`` file (EX_CONFIG).
START_FAILED = 78


def stamp() -> int:
    """Now, on the clock that orders published configurations."""
    return time.monotonic_ns()


@dataclass(frozen=True, order=True)
class Published:
    """A configuration a worker published: when it was read, by whom, and where it is."""

    stamp: int
    pid: int
    path: Path


@final
class ConfigHandoff:
    """The directory through which workers hand applied configurations to the supervisor.

    Args:
      directory: private to the supervisor's user (mode 0700, see :mod:`snakeway.rundir`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def publish(self, config: Config, read_at: int) -> None:
        """In a worker: ``config``, read from its file at ``read_at`` (:func:`stamp`), was applied.

        Raises:
          OSError: the file cannot be written.
        """
        name = f"config-{read_at}-{os.getpid()}.pickle"
        aside = self.directory / f".{name}.part"
        aside.write_bytes(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(aside, self.directory / name)

    def newest(self) -> Published | None:
        """In the supervisor: the newest published configuration; older ones are removed."""
        found = []
        for entry in os.scandir(self.directory):
            match = _NAME.fullmatch(entry.name)
            if match:
                found.append(Published(int(match.group(1)), int(match.group(2)), Path(entry.path)))
        if not found:
            return None
        found.sort()
        for old in found[:-1]:
            old.path.unlink(missing_ok=True)
        return found[-1]

    def started(self) -> None:
        """In a worker: it is serving (every listener is open).

        Raises:
          OSError: the file cannot be written.
        """
        (self.directory / f"started-{os.getpid()}").touch()

    def failed(self, lines: list[str]) -> None:
        """In a worker: it could not start, for the reasons in ``lines``; it exits with :data:`START_FAILED` next.

        Raises:
          OSError: the file cannot be written.
        """
        name = f"failed-{os.getpid()}"
        aside = self.directory / f".{name}.part"
        aside.write_text("".join(f"{line}\n" for line in lines))
        os.replace(aside, self.directory / name)

    def has_started(self, pid: int) -> bool:
        """In the supervisor: whether worker ``pid`` said it is serving."""
        return (self.directory / f"started-{pid}").exists()

    def failure(self, pid: int) -> list[str]:
        """In the supervisor: why worker ``pid`` could not start; empty if it did not say."""
        try:
            return (self.directory / f"failed-{pid}").read_text().splitlines()
        except OSError:
            return []

    def forget(self, pid: int) -> None:
        """In the supervisor: worker ``pid`` is gone; remove what it left about its start."""
        for name in (f"started-{pid}", f"failed-{pid}"):
            (self.directory / name).unlink(missing_ok=True)

    @staticmethod
    def load(published: Published) -> Config | None:
        """The configuration in ``published``; None (logged) if it cannot be read."""
        try:
            config = pickle.loads(published.path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            logger.error("cannot read the configuration worker pid %d applied: %s", published.pid, exc)
            return None
        return config if isinstance(config, Config) else None
