"""The supervisor's private directory, under ``state_dir``.

Theory of operation
-------------------
With several workers, the supervisor keeps files that only it and its workers
use: the configurations workers hand over (:mod:`snakeway.handoff`) and the
lock of the shared WebSocket counts (:mod:`snakeway.proxy.wscount`). Pickled
configurations are read back as code, so they live where only snakeway's
user can write, in a directory of the supervisor's own::

    <state_dir>/supervisors/                    mode 0700
    <state_dir>/supervisors/.lock               held while a supervisor makes its directory or removes stale ones
    <state_dir>/supervisors/<pid>-<random>/     mode 0700, one per running supervisor
        owner.lock                              locked (flock) as long as the supervisor or one of its workers lives

A supervisor removes its directory when it exits. One killed by SIGKILL
cannot, so each supervisor, before making its own, removes every directory
whose ``owner.lock`` nobody holds. The lock, not the pid in the name (which
is there for operators), tells a live directory from a stale one: a pid may
have been reused, and supervisors in different pid namespaces (containers
sharing a volume) can have the same pid. The workers inherit the locked
descriptor, so the directory of a killed supervisor stays while its workers
drain. A directory is made and its ``owner.lock`` locked under ``.lock``, as
stale ones are removed, so no supervisor sees another's directory before it
is locked.

Everything here is blocking file I/O, done by the supervisor before it forks.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import final

from snakeway.files import ensure_dir

logger = logging.getLogger(__name__)

DIRECTORY = "supervisors"
OWNER = "owner.lock"
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC


@final
class RunDirectory:
    """A supervisor's private directory (made by :meth:`create`).

    Resource handling:
      The directory and the descriptor that holds its lock live until :meth:`remove`;
      forked workers inherit the descriptor.
    """

    def __init__(self, path: Path, owner_fd: int) -> None:
        """Internal: use :meth:`create`."""
        self.path = path
        self._owner_fd = owner_fd

    @classmethod
    def create(cls, state_dir: Path) -> RunDirectory:
        """Make a new private directory under ``state_dir`` after removing those nobody holds.

        Raises:
          OSError: ``state_dir`` or the directory cannot be made.
        """
        parent = state_dir / DIRECTORY
        ensure_dir(parent)
        guard = os.open(parent / ".lock", _FLAGS, 0o600)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            remove_stale(parent)
            path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))  # mode 0700
            owner_fd = os.open(path / OWNER, _FLAGS, 0o600)
            fcntl.flock(owner_fd, fcntl.LOCK_EX)
        finally:
            os.close(guard)
        return cls(path, owner_fd)

    def remove(self) -> None:
        """Remove the directory and everything in it (in the supervisor, as it exits)."""
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._owner_fd)


def remove_stale(parent: Path) -> None:
    """Remove the directories in ``parent`` whose owner lock nobody holds. Call under ``parent/.lock``."""
    for entry in os.scandir(parent):
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(Path(entry.path) / OWNER, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None  # its supervisor died between making it and locking it
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # in use: a supervisor, or the workers of one that was killed
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)
        logger.info("removed %s, left by a supervisor that is gone", entry.path)
