"""What :class:`~snakeway.testing.FakeCA` knows about the certificates it issued: ARI answers and records.

* :class:`AriPolicy`: how the fake CA answers ``renewal_info`` (RFC 9773): a
  window computed from the certificate, a ``Retry-After``, an optional
  ``explanationURL``, or a malformed answer (no ``end``) to test fallbacks.
* :class:`Issued`: one certificate, by ARI CertID, with whether an order
  replaced it (for ``replaces`` and ``alreadyReplaced``).
* :class:`NameRecord`: what happened to one name, for assertions and the
  simulator's report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, final

from snakeway.acme.ari import RenewalInfo
from snakeway.errors import IssuanceError
from snakeway.testing._fakefaults import ACME_ERROR

# (not_before, not_after, serial) -> the suggested window (start, end).
WindowRule = Callable[[datetime, datetime, int], tuple[datetime, datetime]]

DEFAULT_ARI_RETRY_AFTER: Final = timedelta(hours=6)


def lifetime_window(not_before: datetime, not_after: datetime, serial: int) -> tuple[datetime, datetime]:
    """A window like Let's Encrypt's: from two thirds of the lifetime, for 1/45 of it (2 days of 90)."""
    del serial
    lifetime = not_after - not_before
    start = not_before + lifetime * 2 / 3
    return start, start + lifetime / 45


@final
@dataclass(frozen=True)
class AriPolicy:
    """How the fake CA answers ARI requests.

    Attributes:
        window: ``(not_before, not_after, serial) -> (start, end)``; by default
            :func:`lifetime_window`.
        retry_after: The ``Retry-After`` of each answer, from the moment it is given.
        explanation_url: The ``explanationURL`` of each answer, if any.
        malformed: Answer without ``end``: ``renewal_info`` raises
            :class:`~snakeway.errors.IssuanceError` (``malformed``), as the real backend does.

    Raises:
        ValueError: A negative ``retry_after``.
    """

    window: WindowRule = lifetime_window
    retry_after: timedelta = DEFAULT_ARI_RETRY_AFTER
    explanation_url: str | None = None
    malformed: bool = False

    def __post_init__(self) -> None:
        if self.retry_after < timedelta(0):
            raise ValueError(f"retry_after must not be negative, got {self.retry_after}")

    def answer(self, cert: Issued, now: datetime) -> RenewalInfo:
        """The answer for ``cert`` at ``now``.

        Raises:
            IssuanceError: ``malformed`` is set.
        """
        if self.malformed:
            raise IssuanceError(
                f"renewal information for {cert.cert_id} is malformed: suggestedWindow has no end",
                problem_type=ACME_ERROR + "malformed",
            )
        start, end = self.window(cert.not_before, cert.not_after, cert.serial)
        return RenewalInfo(start, end, explanation_url=self.explanation_url, retry_after=now + self.retry_after)


@final
@dataclass
class Issued:
    """A certificate the fake CA signed."""

    cert_id: str  # the ARI CertID
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: int
    replaced_by: str | None = None  # url of the order that replaced it (issued with ``replaces``)


@final
@dataclass
class NameRecord:
    """What the fake CA did for one name (counted once per order or certificate that includes it).

    Attributes:
        orders: Orders created.
        first_order: When the first of them was created.
        failed_validations: Authorizations that failed.
        issued: ``(not_before, not_after)`` of each certificate issued.
        ari_requests: ARI requests for a certificate with this name that reached the CA.
        rate_limited: New orders refused with ``rateLimited``.
    """

    orders: int = 0
    first_order: datetime | None = None
    failed_validations: int = 0
    issued: list[tuple[datetime, datetime]] = field(default_factory=list)
    ari_requests: int = 0
    rate_limited: int = 0
