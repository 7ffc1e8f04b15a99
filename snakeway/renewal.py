"""When a certificate is due for renewal: the one rule for ACME and the local CA (pure, standard library only).

The lifetime rule
-----------------
A certificate is renewed when a fraction of its own lifetime (``not_after - not_before``) remains, so that
the same rule fits a 90-day, a 45-day, a 6-day and a 24-hour certificate:

* by default when a third of the lifetime remains (a 90-day certificate at day 60);
* when the lifetime is shorter than 10 days, when half of it remains (a 160-hour certificate after 80 hours),
  so that a short-lived certificate survives a CA outage of several days;
* when ``renew_within`` is configured (``TlsAutomation.renew_within_days``), when that much remains, but never
  more than half of the lifetime: a 30-day ``renew_within`` on a 6-day certificate would otherwise renew it
  at every check. :func:`clamped` tells when the cap applies (``snakeway check`` warns about it).

At 10 days the default jumps from a half to a third (a 9-day certificate renews with 4.5 days left, a 10-day
one with 3.3): deliberately the same rule as certbot's.

:func:`emergency_time` is the moment past which a certificate is renewed whatever the CA's ACME Renewal
Information (ARI, RFC 9773) says: when less than a twentieth of its lifetime remains. How ARI and this rule
combine is :mod:`snakeway.acme.timing`'s business; the local CA (:mod:`snakeway.tls.internal_ca`) uses the
lifetime rule's default alone. This module is a leaf so that :mod:`snakeway.tls` and :mod:`snakeway.acme` can
both use it without importing each other.

A certificate whose ``not_after`` is not after its ``not_before`` (never valid) counts as having a lifetime of
zero: it is due at its ``not_after``. All datetimes are timezone-aware; naive ones raise ``ValueError``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Renew with 1/DEFAULT_SHARE of the lifetime left; below SHORT_LIFETIME with 1/SHORT_SHARE of it left.
DEFAULT_SHARE = 3
SHORT_SHARE = 2
SHORT_LIFETIME = timedelta(days=10)
# A configured renew_within never exceeds 1/MAX_SHARE of the lifetime.
MAX_SHARE = 2
# Less than 1/EMERGENCY_SHARE of the lifetime left: renew whatever ARI says.
EMERGENCY_SHARE = 20


def require_aware(**values: datetime | None) -> None:
    """Raise ``ValueError`` naming the first of ``values`` that is a naive datetime (``None`` is skipped)."""
    for label, value in values.items():
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{label} must be timezone-aware, got {value!r}")


def _lifetime(not_before: datetime, not_after: datetime) -> timedelta:
    require_aware(not_before=not_before, not_after=not_after)
    return max(not_after - not_before, timedelta(0))


def renew_before(not_before: datetime, not_after: datetime, renew_within: timedelta | None = None) -> timedelta:
    """How much validity left makes a certificate due (the lifetime rule, see the module docstring).

    Args:
        not_before: Start of validity.
        not_after: End of validity.
        renew_within: The configured remaining time at which to renew (``>= 0``), or None for the default:
            a third of the lifetime, half of it below 10 days.

    Returns:
        Between zero and half of the lifetime: ``renew_within`` is capped at half of it. Shares of the
        lifetime are rounded down to the microsecond, so that "half" is never more than half.

    Raises:
        ValueError: a naive datetime or a negative ``renew_within``.
    """
    lifetime = _lifetime(not_before, not_after)
    if renew_within is None:
        return lifetime // (SHORT_SHARE if lifetime < SHORT_LIFETIME else DEFAULT_SHARE)
    if renew_within < timedelta(0):
        raise ValueError(f"renew_within must not be negative, got {renew_within!r}")
    return min(renew_within, lifetime // MAX_SHARE)


def lifetime_renewal_time(not_before: datetime, not_after: datetime, renew_within: timedelta | None = None) -> datetime:
    """The moment the lifetime rule makes a certificate due: ``not_after - renew_before(...)``.

    Always inside ``[not_before, not_after]`` (for a certificate that is ever valid), and never before half
    of the lifetime has passed. Raises as :func:`renew_before`.
    """
    return not_after - renew_before(not_before, not_after, renew_within)


def clamped(renew_within: timedelta | None, not_before: datetime, not_after: datetime) -> bool:
    """Whether a configured ``renew_within`` is longer than half the certificate's lifetime (and so capped).

    None (the default rule) is never clamped. Raises ``ValueError`` on naive datetimes.
    """
    lifetime = _lifetime(not_before, not_after)
    return renew_within is not None and renew_within > lifetime // MAX_SHARE


def emergency_time(not_before: datetime, not_after: datetime) -> datetime:
    """When a certificate is renewed whatever ARI says: ``not_after - lifetime / 20``.

    Raises ``ValueError`` on naive datetimes.
    """
    return not_after - _lifetime(not_before, not_after) // EMERGENCY_SHARE
