"""The CA's unauthenticated GETs (ARI and the directory before any account): a session and limiter of their own.

:class:`~snakeway.acme.backend.ClientV2Backend` signs orders under a ``CapacityLimiter(1)``, because the
account's nonce set is not thread-safe. Two reads need neither the account key nor a nonce: ARI's
``GET {renewalInfo}/{certID}`` (RFC 9773 §4.1) and, at start-up, the directory (its ``meta.profiles``).
:class:`UnsignedReads` sends them through a ``requests.Session`` and a ``CapacityLimiter`` of their own, so
an ARI poll never waits behind an order, nor an order behind ARI polls. The blocking halves are
:func:`snakeway.acme.ari_wire.fetch_renewal_info` and :func:`snakeway.acme.acmelib.fetch_directory`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import requests
import trio

from snakeway.acme import acmelib, ari_wire, crypto
from snakeway.acme.ari import RenewalInfo
from snakeway.errors import IssuanceError
from snakeway.tls.certinfo import CertificateError

ARI_CONCURRENCY = 4  # unauthenticated GETs in flight at once per backend


class UnsignedReads:
    """The unauthenticated reads of one CA.

    Args:
        directory_url: The CA's ACME directory.
        user_agent, verify, timeout: as the backend's requests.
        count: ``count(endpoint, outcome)``: the backend's tally of calls to the CA.

    Resource handling:
        Call :meth:`close` to close the session.
    """

    def __init__(
        self, directory_url: str, *, user_agent: str, verify: str | bool, timeout: float,
        count: Callable[[str, str], None],
    ) -> None:
        self.directory_url = directory_url
        self._verify = verify
        self._timeout = timeout
        self._count = count
        self._limiter = trio.CapacityLimiter(ARI_CONCURRENCY)
        self._session = ari_wire.open_session(user_agent)

    async def offered_profiles(self) -> dict[str, str] | None:
        """The directory's ``meta.profiles``, fetched without an account; None when it lists none.

        Raises:
            IssuanceError: The directory could not be fetched or read.
        """
        fetch = partial(acmelib.fetch_directory, self._session, self.directory_url, verify=self._verify,
                        timeout=self._timeout)
        try:
            directory = await trio.to_thread.run_sync(fetch, limiter=self._limiter)
        except (requests.RequestException, ValueError) as exc:
            raise IssuanceError(f"the CA's directory {self.directory_url} cannot be read: {exc}") from exc
        return acmelib.offered_profiles(directory)

    async def renewal_info(self, base: str, cert_pem: bytes) -> RenewalInfo:
        """The CA's renewal information for a certificate, from its ``renewalInfo`` URL ``base``.

        Raises:
            IssuanceError: The request failed, or the answer is malformed (see
                :func:`~snakeway.acme.ari_wire.parse_renewal_info`); the certificate has no authority
                key identifier.
        """
        try:
            cert_id = crypto.ari_cert_id(cert_pem)
        except (ValueError, CertificateError) as exc:
            raise IssuanceError(f"no ARI CertID: {exc}") from exc
        url = f"{base.rstrip('/')}/{cert_id}"
        fetch = partial(ari_wire.fetch_renewal_info, self._session, url, verify=self._verify, timeout=self._timeout)
        try:
            info = await trio.to_thread.run_sync(fetch, limiter=self._limiter)
        except IssuanceError as exc:
            self._count("renewalInfo", f"http_{exc.status}" if exc.status is not None else "error")
            raise
        self._count("renewalInfo", "ok")
        return info

    def close(self) -> None:
        """Close the session (a GET in flight still completes)."""
        self._session.close()
