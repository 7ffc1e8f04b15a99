"""An ``offload`` for tests on ``MockClock``: blocking work runs in the calling task.

Code that does CPU-bound work (keys, TLS contexts) takes an ``offload``
callable, ``trio.to_thread.run_sync`` by default. Under an autojump
``MockClock`` a worker thread lets the clock jump while it works, so tests pass
:func:`inline` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


async def inline(fn: Callable[..., T], *args: object) -> T:
    """An ``offload`` that runs in the calling task (tests on MockClock)."""
    await trio.lowlevel.checkpoint()
    return fn(*args)
