"""Certificate facts that tests assert on, read with snakeway's own parser."""

from __future__ import annotations

from datetime import datetime

from snakeway.tls.certinfo import leaf_info


def cert_dates(cert_pem: bytes) -> tuple[datetime, datetime]:
    """``(not_before, not_after)`` of the first certificate, as aware UTC datetimes.

    Raises:
        CertificateError: ``cert_pem`` holds no readable certificate.
    """
    info = leaf_info(cert_pem)
    return info.not_before, info.not_after
