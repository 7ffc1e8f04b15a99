"""Wall time that follows trio time, so ``MockClock`` fast-forwards calendar dates too.

Certificate validity is wall time, which trio's ``MockClock`` does not move;
code under test reads it from an injected :class:`~snakeway.clock.WallClock`
(see :mod:`snakeway.clock`). :class:`TrioLinkedClock` is that clock for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import final

import trio


@final
@dataclass(frozen=True)
class TrioLinkedClock:
    """Wall time that follows trio time: ``epoch + trio.current_time()`` seconds.

    Meant for tests under ``trio.testing.MockClock`` (whose time starts at 0).
    :meth:`now` must be called inside ``trio.run``.

    Raises:
        ValueError: ``epoch`` is naive.
    """

    epoch: datetime

    def __post_init__(self) -> None:
        if self.epoch.tzinfo is None:
            raise ValueError("TrioLinkedClock needs a timezone-aware epoch")

    def now(self) -> datetime:
        return (self.epoch + timedelta(seconds=trio.current_time())).astimezone(UTC)
