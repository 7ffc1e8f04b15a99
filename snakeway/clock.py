"""Wall-clock time behind a seam, so tests can run months of renewals in milliseconds.

Certificate validity is *wall* time (``notAfter`` is a calendar date), while
trio's ``MockClock`` only moves *trio* time. Code that waits for a calendar
moment therefore reads the date from an injected :class:`WallClock` and turns
the distance into trio sleeps with :func:`sleep_until`. In production the clock
is :class:`SystemClock`; in tests :class:`snakeway.testing.TrioLinkedClock`
makes wall time follow trio time, so ``autojump_clock`` fast-forwards both
together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, final

import trio

# Longest single trio sleep while waiting for a wall-clock moment. Wall clocks
# jump (NTP steps, suspend/resume), so a long wait is split into naps and the
# remaining distance is re-read after each one.
MAX_NAP = 3600.0


class WallClock(Protocol):
    """A source of the current calendar time."""

    def now(self) -> datetime:
        """Return the current time as a timezone-aware UTC datetime."""
        ...


@final
@dataclass(frozen=True)
class SystemClock:
    """The operating system's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


async def sleep_until(clock: WallClock, when: datetime, *, max_nap: float = MAX_NAP) -> None:
    """Sleep until ``clock.now() >= when``.

    Sleeps in trio naps of at most ``max_nap`` seconds and re-reads the wall
    clock after each, so a clock that jumps forward (or back) is noticed
    within one nap. If ``when`` is not in the future it only checkpoints
    (trio's rule: every async function is a checkpoint).

    Args:
        clock: The wall clock to watch.
        when: A timezone-aware moment.
        max_nap: Upper bound of one ``trio.sleep``, in seconds (> 0).

    Raises:
        ValueError: ``max_nap`` is not positive.
        trio.Cancelled: as any trio sleep; nothing to clean up.
    """
    if not max_nap > 0:
        raise ValueError(f"max_nap must be positive, got {max_nap!r}")
    slept = False
    while (delay := (when - clock.now()).total_seconds()) > 0:
        await trio.sleep(min(delay, max_nap))
        slept = True
    if not slept:
        await trio.lowlevel.checkpoint()
