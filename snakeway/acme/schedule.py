"""When to renew a certificate and when to try again after a failure (sans-IO).

Theory of operation
-------------------
Everything here is pure: no trio, no I/O, no clock. The caller passes ``now``
(from a :class:`snakeway.clock.WallClock`) and any randomness as a ``jitter``
number in ``[0, 1)``, so every function is deterministic and tested with
hypothesis. All datetimes are timezone-aware; naive ones raise ``ValueError``.

* **Due or not.** :func:`renewal_time` and :func:`renewal_due` are the one
  renewal rule of snakeway, shared with the local CA, so they live in the
  standard-library leaf :mod:`snakeway.renewal` and are re-exported here: a
  certificate is due once it has less than ``renew_within`` left
  (``TlsAutomation.renew_within_days``), or once the CA's ACME Renewal
  Information (ARI, RFC 9773) suggested window has opened.
* **Failures.** Back-off grows by a factor of ten: 1 min, 10 min, 100 min,
  then 6 h for every further failure. Up to 10 % jitter is added so that
  many sites that failed together (a CA outage) do not retry together. A
  server's ``Retry-After`` is a floor, never shortened by our back-off.
  Let's Encrypt allows 5 failed validations per hour per identifier, so the
  first retries stay inside that budget and the cap keeps a broken site to
  four attempts a day.
* **Polling.** Stored certificates are re-checked every
  ``check_interval_seconds`` +/- 10 %.

:class:`RenewalState` records one site's failures; its transitions are pure
and it round-trips through JSON for the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, final

from snakeway.renewal import renewal_due as renewal_due
from snakeway.renewal import renewal_time as renewal_time
from snakeway.renewal import require_aware

if TYPE_CHECKING:
    from collections.abc import Mapping

# Back-off after the n-th consecutive failure (n = 1, 2, 3), then the cap.
BACKOFF_STEPS = (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=100))
BACKOFF_CAP = timedelta(hours=6)
# Largest fraction added to a back-off delay as jitter.
BACKOFF_JITTER = 0.10
# A check interval varies by this fraction either way.
CHECK_JITTER = 0.10
# A Retry-After further away than this is treated as this (a broken or hostile
# header must not park a site for years).
RETRY_AFTER_CAP = timedelta(days=7)
# Longest error message kept in a RenewalState (it is shown and persisted).
MAX_ERROR_LENGTH = 1000


def _require_jitter(jitter: float) -> None:
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")


# --- failures ----------------------------------------------------------------------------------


def backoff_delay(failures: int) -> timedelta:
    """The pause after ``failures`` consecutive failures (0 -> no pause).

    1 -> 1 min, 2 -> 10 min, 3 -> 100 min, 4 and more -> 6 h. Non-decreasing.

    Raises:
        ValueError: ``failures`` is negative.
    """
    if failures < 0:
        raise ValueError(f"failures must not be negative, got {failures!r}")
    if failures == 0:
        return timedelta(0)
    if failures <= len(BACKOFF_STEPS):
        return BACKOFF_STEPS[failures - 1]
    return BACKOFF_CAP


def next_attempt(now: datetime, failures: int, retry_after: datetime | None, *, jitter: float) -> datetime:
    """When to try again: ``max(now + backoff * (1 + 0.1 * jitter), retry_after)``.

    Args:
        now: The time of the failure.
        failures: Consecutive failures so far, this one included.
        retry_after: The server's ``Retry-After`` as a moment (see
            :func:`parse_retry_after`), or None.
        jitter: A random number in ``[0, 1)``; adds up to 10 % to the back-off.

    Raises:
        ValueError: a naive datetime, negative ``failures``, ``jitter`` out of range.
    """
    require_aware(now=now, retry_after=retry_after)
    _require_jitter(jitter)
    attempt = now + backoff_delay(failures) * (1.0 + BACKOFF_JITTER * jitter)
    if retry_after is not None and retry_after > attempt:
        return retry_after
    return attempt


def next_check(now: datetime, interval_seconds: float, *, jitter: float) -> datetime:
    """When to look at the stored certificates again: ``interval`` +/- 10 %.

    Raises:
        ValueError: a naive ``now``, a non-positive interval, ``jitter`` out of range.
    """
    require_aware(now=now)
    _require_jitter(jitter)
    if not interval_seconds > 0:
        raise ValueError(f"interval_seconds must be positive, got {interval_seconds!r}")
    factor = 1.0 - CHECK_JITTER + 2 * CHECK_JITTER * jitter
    return now + timedelta(seconds=interval_seconds * factor)


# --- Retry-After (RFC 9110 section 10.2.3) -----------------------------------------------------

_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_MONTH = rf"(?P<month>{'|'.join(_MONTH_NAMES)})"
_DAY_NAME = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY_NAME = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF_FIXDATE = re.compile(rf"{_DAY_NAME}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT", re.ASCII)
# obsolete rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850 = re.compile(rf"{_LONG_DAY_NAME}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_TIME} GMT", re.ASCII)
# obsolete asctime-date: Sun Nov  6 08:49:37 1994
_ASCTIME = re.compile(rf"{_DAY_NAME} {_MONTH} (?P<day>[ 0-9][0-9]) {_TIME} (?P<year>[0-9]{{4}})", re.ASCII)


def _parse_http_date(value: str, now: datetime) -> datetime | None:
    for pattern in (_IMF_FIXDATE, _RFC850, _ASCTIME):
        match = pattern.fullmatch(value)
        if match is None:
            continue
        year = int(match["year"])
        if pattern is _RFC850:
            # RFC 9110 5.6.7: a two-digit year more than 50 years ahead is in the past century.
            year += now.year - now.year % 100
            if year > now.year + 50:
                year -= 100
        try:
            return datetime(
                year,
                _MONTHS[match["month"]],
                int(match["day"]),
                int(match["hour"]),
                int(match["minute"]),
                int(match["second"]),
                tzinfo=UTC,
            )
        except ValueError:  # 31 Feb, 25:00:00, year 0 ...
            return None
    return None


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """The moment a ``Retry-After`` header asks us to wait until.

    Accepts both forms of RFC 9110: ``delta-seconds`` (ASCII digits only) and
    ``HTTP-date`` (IMF-fixdate and the two obsolete forms). Total: it never
    raises for any ``value``.

    Returns:
        ``now + delay``, capped at ``now + 7 days``; None when the header is
        absent, malformed (a sign, a fraction, an unknown date format) or asks
        for no wait at all (zero, or a date not after ``now``).

    Raises:
        ValueError: ``now`` is naive (a caller bug, not bad input).
    """
    require_aware(now=now)
    if value is None:
        return None
    value = value.strip(" \t")
    cap = now + RETRY_AFTER_CAP
    if _DELTA_SECONDS.fullmatch(value):
        # Cap before any arithmetic: int() of a huge digit string is slow or refused,
        # and now + a huge delay overflows datetime.
        if len(value.lstrip("0")) > 12 or int(value) >= RETRY_AFTER_CAP.total_seconds():
            return cap
        seconds = int(value)
        return now + timedelta(seconds=seconds) if seconds > 0 else None
    when = _parse_http_date(value, now)
    if when is None or when <= now:
        return None
    return min(when, cap)


# --- per-site state ----------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(data: Mapping[str, object], key: str) -> datetime | None:
    raw = data.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError(f"{key}: expected an ISO 8601 string, got {raw!r}")
    value = datetime.fromisoformat(raw)
    if value.tzinfo is None:
        raise ValueError(f"{key}: missing time zone in {raw!r}")
    return value


@final
@dataclass(frozen=True)
class RenewalState:
    """What we remember about renewing one certificate between attempts.

    Attributes:
        name: The certificate's name (its first domain, see :mod:`snakeway.acme.store`).
        failures: Consecutive failed attempts; 0 after a success.
        last_error: Why the last attempt failed (truncated), or None.
        last_attempt: When the last attempt ended.
        next_attempt: Not before this moment may the next attempt start; None: any time.
        last_success: When a certificate was last obtained.
    """

    name: str
    failures: int = 0
    last_error: str | None = None
    last_attempt: datetime | None = None
    next_attempt: datetime | None = None
    last_success: datetime | None = None

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int) or self.failures < 0:
            raise ValueError(f"failures must be a non-negative int, got {self.failures!r}")
        require_aware(last_attempt=self.last_attempt, next_attempt=self.next_attempt, last_success=self.last_success)

    def may_attempt(self, now: datetime) -> bool:
        """Whether the back-off (and any Retry-After) has passed at ``now``."""
        return self.next_attempt is None or now >= self.next_attempt

    def failed(
        self, now: datetime, error: str, retry_after: datetime | None = None, jitter: float = 0.0
    ) -> RenewalState:
        """The state after an attempt that ended in ``error`` at ``now``.

        Args:
            now: When the attempt failed.
            error: A human-readable reason (kept up to 1000 characters).
            retry_after: A floor for the next attempt (the server's Retry-After).
            jitter: A random number in ``[0, 1)``, see :func:`next_attempt`.
        """
        failures = self.failures + 1
        if len(error) > MAX_ERROR_LENGTH:
            error = error[: MAX_ERROR_LENGTH - 3] + "..."
        return replace(
            self,
            failures=failures,
            last_error=error,
            last_attempt=now,
            next_attempt=next_attempt(now, failures, retry_after, jitter=jitter),
        )

    def succeeded(self, now: datetime) -> RenewalState:
        """The state after a certificate was obtained at ``now``."""
        require_aware(now=now)
        return replace(self, failures=0, last_error=None, last_attempt=now, next_attempt=None, last_success=now)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict; datetimes as ISO 8601 strings."""
        return {
            "name": self.name,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_attempt": _iso(self.last_attempt),
            "next_attempt": _iso(self.next_attempt),
            "last_success": _iso(self.last_success),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RenewalState:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: a missing or mistyped field.
        """
        name = data.get("name")
        if not isinstance(name, str):
            raise ValueError(f"name: expected a string, got {name!r}")
        failures = data.get("failures", 0)
        if isinstance(failures, bool) or not isinstance(failures, int):
            raise ValueError(f"failures: expected an int, got {failures!r}")
        last_error = data.get("last_error")
        if last_error is not None and not isinstance(last_error, str):
            raise ValueError(f"last_error: expected a string, got {last_error!r}")
        return cls(
            name=name,
            failures=failures,
            last_error=last_error,
            last_attempt=_from_iso(data, "last_attempt"),
            next_attempt=_from_iso(data, "next_attempt"),
            last_success=_from_iso(data, "last_success"),
        )
