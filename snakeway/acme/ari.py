"""ACME Renewal Information (ARI, RFC 9773): what a CA said about when to renew one certificate.

:class:`RenewalInfo` is the CA's answer for one certificate, as every backend returns it and as the
store keeps it with the certificate's renewal state. What to *do* with it (the random moment inside the
window, when to ask again) is decided in :mod:`snakeway.acme.timing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import final

from snakeway.renewal import require_aware


@final
@dataclass(frozen=True)
class RenewalInfo:
    """One ARI answer.

    Attributes:
        start: Start of the suggested renewal window (aware UTC).
        end: End of the suggested window (aware UTC), after ``start``.
        explanation_url: The CA's ``explanationURL`` (logged when given), or None.
        retry_after: When the CA asked to be asked again (its ``Retry-After``), or None.
    """

    start: datetime
    end: datetime
    explanation_url: str | None = None
    retry_after: datetime | None = None

    def __post_init__(self) -> None:
        require_aware(start=self.start, end=self.end, retry_after=self.retry_after)
        if self.end <= self.start:
            raise ValueError(f"ARI window ends ({self.end}) before it starts ({self.start})")
