"""When to renew an ACME certificate and when to ask the CA about it again (sans-IO).

Theory of operation
-------------------
Everything here is pure: no trio, no I/O, no clock. The caller passes ``now`` and any randomness as a
``jitter`` number in ``[0, 1)``, so every function is deterministic and tested with hypothesis. All datetimes
are timezone-aware; naive ones raise ``ValueError``.

* **The lifetime rule** (:mod:`snakeway.renewal`): without ARI, a certificate is renewed when a third of
  its lifetime remains, half below 10 days, or the configured ``renew_within`` capped at half.
* **ARI** (ACME Renewal Information, RFC 9773): when the CA answers, its suggested window governs, later
  as well as earlier than the lifetime rule. The moment is drawn uniformly at random inside the window
  (:func:`ari_moment`, RFC 9773 section 4.2) once per window and remembered in the certificate's
  :class:`~snakeway.acme.schedule.RenewalState`, so that every worker and every restart agrees on it and
  thousands of certificates given the same window do not renew together. A window already over is a moment
  in the past: renew now.
* **Emergency.** Once less than a twentieth of the lifetime remains the certificate is renewed whatever
  the window says (:func:`snakeway.renewal.emergency_time`): a CA that suggests a window past expiry, or
  one that keeps moving it, cannot let a certificate run out.
* **Polling ARI.** Asked once when a certificate is issued or first loaded, then when the answer's
  ``Retry-After`` says (:func:`next_ari_poll`): 6 hours when the CA gives none or the answer failed,
  otherwise between one minute and one day, the limits RFC 9773 section 4.3 suggests a client sets on a
  CA's ``Retry-After`` (a misconfigured CA can neither make us poll every second nor stop polling).
* **Order queue.** :func:`urgency` is the sort key of orders waiting for their CA: certificates missing or
  expired first, then the nearest renewal moment.
* **Retry-After** headers (RFC 9110 section 10.2.3) become moments in :func:`parse_retry_after`, capped
  at 7 days.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from snakeway.renewal import emergency_time, lifetime_renewal_time, require_aware

if TYPE_CHECKING:
    from snakeway.acme.ari import RenewalInfo

# When the CA's ARI answer has no Retry-After, or the poll failed: ask again after this.
ARI_DEFAULT_POLL = timedelta(hours=6)
# A CA's ARI Retry-After is kept within these bounds (RFC 9773 section 4.3).
ARI_MIN_POLL = timedelta(minutes=1)
ARI_MAX_POLL = timedelta(days=1)
# A Retry-After further away than this is treated as this (a broken or hostile
# header must not park a site for years).
RETRY_AFTER_CAP = timedelta(days=7)


def require_jitter(jitter: float) -> None:
    """Raise ``ValueError`` unless ``0 <= jitter < 1``."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")


# --- the renewal moment ------------------------------------------------------------------------


def ari_moment(info: RenewalInfo, jitter: float) -> datetime:
    """A moment drawn uniformly inside the ARI window: ``start + (end - start) * jitter``.

    Raises:
        ValueError: ``jitter`` out of ``[0, 1)``.
    """
    require_jitter(jitter)
    return info.start + (info.end - info.start) * jitter


def renewal_moment(
    not_before: datetime,
    not_after: datetime,
    *,
    renew_within: timedelta | None,
    ari: RenewalInfo | None = None,
    ari_moment: datetime | None = None,
) -> datetime:
    """When a certificate is due: the ARI moment (capped by the emergency time), else the lifetime rule.

    Args:
        not_before: Start of validity.
        not_after: End of validity.
        renew_within: The configured ``renew_within`` (None: the default rule); used only without ARI.
        ari: The CA's current answer for this certificate, or None (no ARI, or no usable answer).
        ari_moment: The moment drawn in ``ari``'s window (see :func:`ari_moment`); one outside the window is
            brought to its nearest edge, and None means the window's start.

    Returns:
        Without ``ari``: :func:`snakeway.renewal.lifetime_renewal_time`, inside ``[not_before, not_after]``.
        With it: ``min(moment, emergency_time)``, which may be before ``not_before`` when the CA asks for
        renewal at once.

    Raises:
        ValueError: a naive datetime or a negative ``renew_within``.
    """
    if ari is None:
        return lifetime_renewal_time(not_before, not_after, renew_within)
    require_aware(ari_moment=ari_moment)
    moment = ari.start if ari_moment is None else min(max(ari_moment, ari.start), ari.end)
    return min(moment, emergency_time(not_before, not_after))


def next_ari_poll(now: datetime, retry_after: datetime | None) -> datetime:
    """When to ask the CA for a certificate's renewal information again.

    Args:
        now: When the answer (or the failure) came.
        retry_after: The answer's ``Retry-After`` as a moment, or None.

    Returns:
        ``now + 6 h`` without ``retry_after``; otherwise ``retry_after`` brought inside
        ``[now + 1 min, now + 1 day]``.

    Raises:
        ValueError: a naive datetime.
    """
    require_aware(now=now, retry_after=retry_after)
    if retry_after is None:
        return now + ARI_DEFAULT_POLL
    return min(max(retry_after, now + ARI_MIN_POLL), now + ARI_MAX_POLL)


class Urgency(NamedTuple):
    """Sort key of an order waiting for its CA: smaller is more urgent.

    Attributes:
        rank: 0 for a certificate missing or expired, 1 for one still valid.
        moment: Its renewal moment (for a missing one, when it was wanted).
    """

    rank: int
    moment: datetime


def urgency(now: datetime, not_after: datetime | None, moment: datetime) -> Urgency:
    """The order queue's sort key: missing (``not_after`` None) or expired first, then the nearest ``moment``.

    Raises:
        ValueError: a naive datetime.
    """
    require_aware(now=now, not_after=not_after, moment=moment)
    return Urgency(0 if not_after is None or not_after <= now else 1, moment)


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
