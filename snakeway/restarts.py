"""When the supervisor starts a new worker after one died, and when it gives up (sans-IO).

Theory of operation
-------------------
Everything here is pure: the supervisor passes how long the dead worker ran and
how it ended, and keeps the :class:`Streak` this returns in the worker's slot.

* **Back-off.** A worker that dies within :data:`QUICK_EXIT_SECONDS` of its
  start, whatever the cause, extends its slot's streak of quick deaths; the
  n-th in a row waits ``0.5 s * 2**(n-1)`` (0.5 s, 1 s, 2 s...), at most
  :data:`MAX_RESTART_DELAY`, before the next worker starts. So a worker that
  the OOM killer takes at every start costs one fork every few seconds, not an
  endless fork loop. A worker that ran longer ends the streak: its replacement
  starts at once.
* **Giving up.** A worker that *failed* (it exited, or crashed on a signal such
  as SIGSEGV or SIGABRT) soon after start :data:`QUICK_EXITS_TO_GIVE_UP` times in
  a row means it cannot run (a crash at every start): the supervisor stops. (A
  worker that could not start because of a mistake, a port in use or a
  certificate that cannot be read, stops the supervisor at once without
  coming here: see :mod:`snakeway.supervisor`.) A worker killed by SIGKILL, SIGTERM,
  SIGINT or SIGHUP (an operator's ``kill``, the OOM killer) did not fail by
  itself: it is backed off like any other quick death but never counts towards
  giving up (nor breaks a run of failures).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

# A worker that dies this soon after it started died "at start".
QUICK_EXIT_SECONDS = 2.0
# This many failures at start in a row stop the supervisor.
QUICK_EXITS_TO_GIVE_UP = 3
# The delay after the first quick death in a row; it doubles with each further one, up to the cap.
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 10.0
# Deaths that come from outside (an operator's kill, the OOM killer), not from the worker failing.
KILLED = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


@dataclass(frozen=True)
class Streak:
    """A worker slot's recent deaths at start, in a row: all of them, and the failures among them."""

    deaths: int = 0
    failures: int = 0


def killed(code: int) -> bool:
    """Whether an exit code (as ``os.waitstatus_to_exitcode`` gives it) is a death from outside."""
    return code < 0 and -code in KILLED


def restart_delay(deaths: int) -> float:
    """Seconds to wait before starting a worker after ``deaths`` quick deaths in a row (0: at once)."""
    if deaths <= 0:
        return 0.0
    # Past the cap the exponent no longer matters; bounding it keeps the float finite.
    return min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2.0 ** min(deaths - 1, 64))


def after_death(streak: Streak, *, lived: float, code: int) -> tuple[Streak, float | None]:
    """A slot's streak once its worker died after ``lived`` seconds with exit ``code``, and when to restart.

    Returns:
      The new streak, and the delay in seconds before the next worker starts, or None to give up.
    """
    if lived >= QUICK_EXIT_SECONDS:
        return Streak(), 0.0
    after = Streak(streak.deaths + 1, streak.failures + (0 if killed(code) else 1))
    if after.failures >= QUICK_EXITS_TO_GIVE_UP:
        return after, None
    return after, restart_delay(after.deaths)
