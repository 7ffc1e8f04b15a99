"""Open WebSockets per route, counted across every worker of one supervisor.

``ws_max_connections`` is a limit for the server, not for each worker. With
several workers the counts live in an anonymous shared memory map that the
supervisor creates before forking, so every worker sees the same table.
Only routes with a limit are counted; a route without one never touches it.

Theory of operation: the table has :data:`ENTRIES` entries, each a 16-byte
digest of a route's key (what the route matches, so a reload keeps the
count) followed by one 32-bit count per worker. A route's entry is found by
open addressing from its digest's hash; an entry whose counts are all zero
may be given to another route, but its digest stays until then, so the
probe for a route further along the chain never stops early (a probe stops
only at an entry never used). Each worker changes only its own column, and
every read-modify-write happens under an ``fcntl`` record lock on a file in
the supervisor's private directory. Such a lock belongs to the process, so a
worker killed while holding it (even by SIGKILL) releases it; a semaphore in
the shared memory would stay taken. The supervisor knows which worker died
and zeroes that worker's column (:meth:`SharedWebSocketCounts.give_back`)
before starting its replacement, so a dead worker's slots come back.

The critical sections are a few dozen memory operations without any
``await``; taking the lock is a blocking system call that returns at once
unless another worker is inside its own critical section.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import final

logger = logging.getLogger(__name__)

ENTRIES = 1024
DIGEST_SIZE = 16
_NEVER_USED = bytes(DIGEST_SIZE)


def digest(key: tuple[str, ...]) -> bytes:
    """The table's name for a route key (never all zero bytes, which marks an unused entry)."""
    value = hashlib.blake2b("\0".join(key).encode(), digest_size=DIGEST_SIZE).digest()
    return value if value != _NEVER_USED else b"\1" + value[1:]


@final
class SharedWebSocketCounts:
    """A table of open WebSockets per route, shared by the processes forked after it was made.

    Args:
      workers: how many columns (one per worker slot of the supervisor).
      lock_path: a file for the lock; created (mode 0600) if missing.
      entries: how many different routes can have open WebSockets at once.

    Resource handling:
      The memory map and the lock file's descriptor live until :meth:`close` (the supervisor
      keeps them as long as it runs); forked workers inherit both. Call :meth:`join` in each
      worker before counting.
    """

    def __init__(self, workers: int, lock_path: Path, entries: int = ENTRIES) -> None:
        self._workers = workers
        self._entries = entries
        self._size = DIGEST_SIZE + 4 * workers
        self._counts = struct.Struct(f"={workers}i")
        self._map = mmap.mmap(-1, entries * self._size)  # anonymous and MAP_SHARED: survives fork()
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._column = 0

    def close(self) -> None:
        """Unmap the table and close the lock file (in the process that is done with them)."""
        self._map.close()
        os.close(self._lock_fd)

    def join(self, worker: int) -> None:
        """In a worker: count this process's WebSockets in column ``worker``."""
        assert 0 <= worker < self._workers
        self._column = worker

    def acquire(self, key: tuple[str, ...], limit: int) -> int | None:
        """Count one more WebSocket for ``key`` unless ``limit`` are open already.

        Only routes with a limit are counted here (see
        :class:`~snakeway.proxy.websocket.WebSocketSlots`).

        Returns:
          The entry to pass to :meth:`release`, or None when the route is full (or, past
          :data:`ENTRIES` different routes with open WebSockets, the table is).
        """
        name = digest(key)
        with self._locked():
            index = self._find(name)
            if index is None:
                logger.warning("WebSocket table full: %d routes have open WebSockets", self._entries)
                return None
            offset = index * self._size
            counts = list(self._counts.unpack_from(self._map, offset + DIGEST_SIZE))
            if sum(counts) >= limit:
                return None
            self._map[offset : offset + DIGEST_SIZE] = name
            counts[self._column] += 1
            self._counts.pack_into(self._map, offset + DIGEST_SIZE, *counts)
        return index

    def release(self, index: int) -> None:
        """Count one WebSocket fewer on the entry :meth:`acquire` returned."""
        position = index * self._size + DIGEST_SIZE + 4 * self._column
        with self._locked():
            (count,) = struct.unpack_from("=i", self._map, position)
            struct.pack_into("=i", self._map, position, max(0, count - 1))

    def total(self, key: tuple[str, ...]) -> int:
        """WebSockets open on ``key``'s route across every worker (what :meth:`acquire` checks against the limit)."""
        name = digest(key)
        with self._locked():
            index = self._find(name)
            if index is None or self._map[index * self._size : index * self._size + DIGEST_SIZE] != name:
                return 0
            return sum(self._counts.unpack_from(self._map, index * self._size + DIGEST_SIZE))

    def give_back(self, worker: int) -> None:
        """In the supervisor, once worker ``worker`` has died: its WebSockets are gone."""
        zero = bytes(4)
        with self._locked():
            for index in range(self._entries):
                position = index * self._size + DIGEST_SIZE + 4 * worker
                self._map[position : position + 4] = zero

    def _find(self, name: bytes) -> int | None:
        """The entry holding ``name``, else the first one free for it; None if none is. Call locked."""
        start = int.from_bytes(name[:8], "little") % self._entries
        free = None
        for step in range(self._entries):
            index = (start + step) % self._entries
            offset = index * self._size
            held = self._map[offset : offset + DIGEST_SIZE]
            if held == name:
                return index
            if held == _NEVER_USED:
                return index if free is None else free
            if free is None and not any(self._counts.unpack_from(self._map, offset + DIGEST_SIZE)):
                free = index
        return free

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)
