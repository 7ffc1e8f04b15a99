"""What a renewal keeps when it goes wrong: a failed order's record, an unsaved certificate, the store away.

Theory of operation
-------------------
:class:`~snakeway.acme.renewer.Renewer` carries out the decisions; this module holds what it remembers
and computes when a step fails, without I/O:

* **A failed order** becomes a :class:`Failure`: the reason, the CA's ``Retry-After``, the stage that
  failed, and whether retrying can help (a permanent failure: the CA refuses the name, CAA forbids it,
  the certificate has more names than a CA takes, the CA lacks the configured profile). Recorded in the
  renewal state, it sets the back-off (:meth:`~snakeway.acme.schedule.RenewalState.failed`);
  :func:`fall_back` then moves the next attempt to the next CA when ``issuer_fallback_after_failures``
  failures in a row (or one permanent failure) call for it (:mod:`snakeway.acme.issuers`).
* **An unsaved certificate** (:class:`Unsaved`): one issued but refused by the store. It is served from
  memory meanwhile, with the renewal state of its failed save, and the write is retried on the failure
  back-off; it is never ordered again, and dropped if another process saves a newer certificate.
* **The store away** (:class:`StoreOutage`): a check that cannot read or write the store changes nothing
  and is tried again in :data:`STORE_RETRY_SECONDS`, jittered. The worker says so once when the store
  starts failing and once when it answers again, not once per certificate per retry.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from snakeway.acme import issuers
from snakeway.acme.schedule import RenewalState, is_permanent
from snakeway.acme.store import CertBundle
from snakeway.errors import IssuanceError

logger = logging.getLogger("snakeway.acme.manager")

# When the store cannot be reached, check a certificate again after this many seconds, jittered up to half as
# much again: renewals resume within seconds of the store's return, while the retries of many certificates
# spread out rather than arriving at a recovering Redis together.
STORE_RETRY_SECONDS = 10.0
STORE_RETRY_JITTER = 0.5
# Let's Encrypt's limit of names in one certificate.
MAX_NAMES = 100


@dataclasses.dataclass(frozen=True)
class Failure:
    """One failed order, as the renewal state records it.

    Attributes:
        reason: What went wrong, for the log and the state.
        retry_after: When the CA asked to be asked again, if it did.
        stage: The step that failed (``"order"``, ``"validation"``, ``"finalize"``), None if unknown.
        permanent: Retrying at the same CA cannot help; the next attempt there is a day away.
    """

    reason: str
    retry_after: datetime | None
    stage: str | None
    permanent: bool

    @classmethod
    def of(cls, exc: Exception, domains: Sequence[str]) -> Failure:
        """The failure ``exc`` (an :class:`~snakeway.errors.IssuanceError` or a timeout) of an order for ``domains``."""
        issuance = exc if isinstance(exc, IssuanceError) else None
        problem = issuance.problem_type if issuance else None
        stage = issuance.stage if issuance else None
        permanent = is_permanent(problem, stage=stage or "order") or len(domains) > MAX_NAMES \
            or problem == issuers.PROFILE_UNAVAILABLE
        return cls(str(exc) or "issuance timed out", issuance.retry_after if issuance else None, stage, permanent)

    def recorded(self, state: RenewalState, now: datetime, jitter: float, expires: datetime | None) -> RenewalState:
        """``state`` with this failure at ``now`` counted, and its back-off set."""
        return state.failed(now, self.reason, self.retry_after, jitter, permanent=self.permanent, expires=expires)


def fall_back(state: RenewalState, current: int, ca_urls: Sequence[str], threshold: int, now: datetime) -> RenewalState:
    """``state`` moved on to the next CA, if the failure just recorded at ``ca_urls[current]`` calls for it.

    Args:
        state: The state with the failure recorded.
        current: The position of the CA that failed.
        ca_urls: The directory URLs of the CAs, in order.
        threshold: ``issuer_fallback_after_failures``.
        now: When the failure happened.
    """
    following = issuers.after_failure(current, state.failures, len(ca_urls), threshold, hopeless=state.permanent)
    if following is None:
        return state
    return state.moved_to(ca_urls[following] if following else None, now)


class Unsaved:
    """Certificates issued but refused by the store, by cert id, each with its renewal state: served, saved again."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[CertBundle, RenewalState]] = {}

    def __contains__(self, cert_id: str) -> bool:
        return cert_id in self._kept

    def get(self, cert_id: str) -> tuple[CertBundle, RenewalState] | None:
        """The unsaved certificate of ``cert_id`` and its state, or None."""
        return self._kept.get(cert_id)

    def keep(self, cert_id: str, bundle: CertBundle, state: RenewalState) -> None:
        """Remember ``bundle`` (refused by the store) and ``state`` until the next save."""
        self._kept[cert_id] = (bundle, state)

    def restate(self, cert_id: str, state: RenewalState) -> None:
        """Replace the state kept with ``cert_id``'s unsaved certificate, if there is one (an ARI answer)."""
        kept = self._kept.get(cert_id)
        if kept is not None:
            self._kept[cert_id] = (kept[0], state)

    def drop(self, cert_id: str) -> bool:
        """Forget ``cert_id``'s unsaved certificate (saved, or superseded); whether there was one."""
        return self._kept.pop(cert_id, None) is not None


class StoreOutage:
    """Whether the store is failing, said once per outage; when to try again meanwhile."""

    def __init__(self) -> None:
        self.failing = False

    def away(self, exc: Exception, now: datetime, jitter: float) -> datetime:
        """The store failed during a check at ``now``: when to check again (``jitter`` in ``[0, 1)``)."""
        if not self.failing:
            self.failing = True
            logger.warning(
                "certificate store unreachable (%s): renewals wait until it is back; checking every %g-%g s",
                exc, STORE_RETRY_SECONDS, STORE_RETRY_SECONDS * (1 + STORE_RETRY_JITTER),
            )
        return now + timedelta(seconds=STORE_RETRY_SECONDS * (1 + STORE_RETRY_JITTER * jitter))

    def back(self) -> None:
        """The store answered."""
        if self.failing:
            self.failing = False
            logger.info("certificate store reachable again: renewals resume")
