"""CPU time of a process tree, from ``/proc/<pid>/stat``, and what it comes to per request.

A saturated 2-core machine compresses throughput ratios: a proxy that needs
twice the CPU per request of another still gets at most the cores there
are, and the load generator takes its share of them too. CPU time per
request does not saturate, so the benchmark reports it beside each rate.

The figure for a contender is the CPU time (user + system) of every process
of its tree (a supervisor and its workers, nginx's master and workers),
sampled before and after the measured window, divided by what was done in
the window (requests, MiB or messages). A process's ``cutime``/``cstime``
count its children that exited and were reaped, so a worker that ends
between the two samples is still counted, in its parent's figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    """The fields of one ``/proc/<pid>/stat`` line the benchmark uses (CPU times in clock ticks)."""

    pid: int
    session: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        """CPU time of the process and of its reaped children, user and system."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> Stat:
    """Parse a ``/proc/<pid>/stat`` line (proc(5)).

    The command name (field 2) is in parentheses and may itself hold spaces
    and parentheses, so the fields are counted from the last ``)``.

    Raises:
      ValueError: ``text`` is not such a line.
    """
    head, paren, tail = text.rpartition(")")
    if not paren or "(" not in head:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    fields = tail.split()  # fields[0] is field 3 (state)
    if len(fields) < 15:
        raise ValueError(f"too few fields in /proc/<pid>/stat: {text[:80]!r}")
    return Stat(pid=int(head.split("(", 1)[0]), session=int(fields[3]), utime=int(fields[11]),
                stime=int(fields[12]), cutime=int(fields[13]), cstime=int(fields[14]))


def stats() -> Iterable[Stat]:
    """Every process's :class:`Stat` now."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                yield parse_stat(Path(f"/proc/{entry}/stat").read_text())
            except (OSError, ValueError):  # gone meanwhile
                continue


def session_cpu_seconds(session: int) -> float:
    """CPU seconds so far of every live process in ``session``, with their reaped children."""
    return sum(stat.ticks for stat in stats() if stat.session == session) / TICKS_PER_SECOND


def per_unit_us(before_s: float, after_s: float, units: float) -> float | None:
    """Microseconds of CPU per unit of work between two samples; None if no work was done."""
    if units <= 0:
        return None
    return max(0.0, after_s - before_s) * 1e6 / units


def cpu_text(us: float | None, unit: str) -> str:
    """How a cell shows CPU per unit: ``CPU 152 µs/req``, ``CPU 1.25 ms/MiB``; empty if unmeasured."""
    if us is None or us != us:  # None or NaN
        return ""
    if us >= 1000:
        return f"CPU {us / 1000:,.2f} ms/{unit}"
    return f"CPU {us:,.0f} µs/{unit}" if us >= 10 else f"CPU {us:.1f} µs/{unit}"
