"""Durable file writes: what every on-disk state in snakeway (certificates, keys, locks' notes) is written with.

All of it is blocking; callers run it in ``trio.to_thread.run_sync``. A write is either fully visible or not at
all: a temporary file created ``O_EXCL`` with its final mode (so a private key is never readable by others, not even
briefly), written, fsynced, renamed over the target, and the directory fsynced. After a crash at most a stray
``.<name>.<random>.tmp`` remains beside the target.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

DIR_MODE = 0o700
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create ``path`` and missing parents with mode 0700 (existing ones are left alone)."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, DIR_MODE)  # exactly 0700 whatever the umask
        fsync_dir(directory.parent)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``mode`` from the start, write ``data``, fsync."""
    fd = os.open(path, _OPEN_FLAGS, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Atomically make ``path`` contain ``data`` (creating its directory, 0700, if missing).

    Readers see the old content or the new, never a mix.
    """
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        write_new(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
