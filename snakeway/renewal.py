"""When a certificate is due for renewal: the one rule for ACME and the local CA (pure, standard library only).

A certificate is due for renewal once it has less than ``renew_within`` left, or once the CA's ACME Renewal
Information (ARI, RFC 9773) suggested window has opened, whichever comes first. The boundary counts as due: a
90-day certificate with a 30-day window is due at day 60 exactly. A window at least as long as the
certificate's lifetime makes it due at once.

What ``renew_within`` is depends on who issued the certificate: ACME certificates use
``TlsAutomation.renew_within_days``; the local CA renews its short-lived leaves with a third of their lifetime
left (:func:`snakeway.tls.internal_ca.renew_within`). Both then ask the same two functions here. This module
is a leaf so that :mod:`snakeway.tls` and :mod:`snakeway.acme` can both use it without importing each other;
:mod:`snakeway.acme.schedule` re-exports it next to the back-off rules.

All datetimes are timezone-aware; naive ones raise ``ValueError``.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def require_aware(**values: datetime | None) -> None:
    """Raise ``ValueError`` naming the first of ``values`` that is a naive datetime (``None`` is skipped)."""
    for label, value in values.items():
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{label} must be timezone-aware, got {value!r}")


def renewal_time(
    not_before: datetime,
    not_after: datetime,
    *,
    renew_within: timedelta,
    ari_window: tuple[datetime, datetime] | None = None,
) -> datetime:
    """The moment a certificate becomes due for renewal.

    ``min(not_after - renew_within, ari_window[0])``. When ``renew_within`` is
    at least the certificate's lifetime the result is at or before
    ``not_before`` (due as soon as it exists).

    Args:
        not_before: Start of validity.
        not_after: End of validity.
        renew_within: Renew when less than this is left (>= 0).
        ari_window: The ARI ``suggestedWindow`` (start, end), if the CA gave one.

    Raises:
        ValueError: a naive datetime or a negative ``renew_within``.
    """
    require_aware(not_before=not_before, not_after=not_after)
    if renew_within < timedelta(0):
        raise ValueError(f"renew_within must not be negative, got {renew_within!r}")
    due = not_after - renew_within
    if renew_within >= not_after - not_before:
        due = min(due, not_before)
    if ari_window is not None:
        require_aware(ari_start=ari_window[0], ari_end=ari_window[1])
        due = min(due, ari_window[0])
    return due


def renewal_due(
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    *,
    renew_within: timedelta,
    ari_window: tuple[datetime, datetime] | None = None,
) -> bool:
    """Whether a certificate should be renewed at ``now``.

    True when ``not_after - now <= renew_within`` (an expired certificate is
    always due), when ``renew_within`` covers the whole lifetime, or when
    ``now`` has reached the start of the ARI window. Monotone in ``now``:
    once due, due for every later ``now``.

    Raises:
        ValueError: see :func:`renewal_time`.
    """
    require_aware(now=now)
    if renew_within >= not_after - not_before:
        renewal_time(not_before, not_after, renew_within=renew_within, ari_window=ari_window)  # validate
        return True
    return now >= renewal_time(not_before, not_after, renew_within=renew_within, ari_window=ari_window)
