"""When to try again after a failure, and what one certificate's renewal state remembers (sans-IO).

Theory of operation
-------------------
Everything here is pure: no trio, no I/O, no clock. The caller passes ``now``
(from a :class:`snakeway.clock.WallClock`) and any randomness as a ``jitter``
number in ``[0, 1)``, so every function is deterministic and tested with
hypothesis. All datetimes are timezone-aware; naive ones raise ``ValueError``.

* **Due or not** is :mod:`snakeway.acme.timing`: the lifetime rule of
  :mod:`snakeway.renewal` (shared with the local CA), led by the CA's ACME
  Renewal Information (ARI, RFC 9773) when it answers.
  :func:`parse_retry_after` is re-exported here from there.
* **Failures.** Back-off grows by a factor of ten: 1 min, 10 min, 100 min,
  then 6 h for every further failure. Up to 10 % jitter is added so that
  many sites that failed together (a CA outage) do not retry together. A
  server's ``Retry-After`` is a floor, never shortened by our back-off, and is
  kept in the state so that every worker and every restart honours it.
  Let's Encrypt allows 5 failed validations per hour per identifier, so the
  first retries stay inside that budget and the cap keeps a broken site to
  four attempts a day. Close to expiry the back-off shrinks to a tenth of the
  time the served certificate has left (never under a minute): a 160-hour
  certificate coming out of a three-day CA outage with 8 hours left is tried
  every 48 minutes, not every 6 hours.
* **Permanent failures** (:func:`is_permanent`: the CA refuses the name, CAA
  forbids it, the account may not have it, the CSR is malformed) will not go
  away by retrying: the certificate is marked as needing attention and tried
  again once a day.
* **Polling.** Stored certificates are re-checked every
  ``check_interval_seconds`` +/- 10 %.

:class:`RenewalState` records one certificate's failures, its Retry-After
floor and the CA's last ARI answer with the moment drawn in its window; its
transitions are pure and it round-trips through JSON for the store. A state
file that cannot be read is replaced by :meth:`RenewalState.conservative`, the
longest back-off, never by a fresh state that would order at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, final

from snakeway.acme.ari import RenewalInfo
from snakeway.acme.timing import RETRY_AFTER_CAP as RETRY_AFTER_CAP
from snakeway.acme.timing import ari_moment, next_ari_poll, require_jitter
from snakeway.acme.timing import parse_retry_after as parse_retry_after
from snakeway.renewal import require_aware

if TYPE_CHECKING:
    from collections.abc import Mapping

# Back-off after the n-th consecutive failure (n = 1, 2, 3), then the cap.
BACKOFF_STEPS = (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=100))
BACKOFF_CAP = timedelta(hours=6)
# Back-off after a permanent failure (see is_permanent).
PERMANENT_BACKOFF = timedelta(days=1)
# Close to expiry, the back-off is at most 1/URGENT_SHARE of the time left.
URGENT_SHARE = 10
# Largest fraction added to a back-off delay as jitter.
BACKOFF_JITTER = 0.10
# A check interval varies by this fraction either way.
CHECK_JITTER = 0.10
# Longest error message kept in a RenewalState (it is shown and persisted).
MAX_ERROR_LENGTH = 1000

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"
# Problems that retrying the same order cannot cure (RFC 8555 section 6.7).
PERMANENT_PROBLEMS = frozenset({"rejectedIdentifier", "caa", "externalAccountRequired"})


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


def next_attempt(
    now: datetime,
    failures: int,
    retry_after: datetime | None,
    *,
    jitter: float,
    permanent: bool = False,
    expires: datetime | None = None,
) -> datetime:
    """When to try again: ``max(now + backoff * (1 + 0.1 * jitter), retry_after)``.

    Args:
        now: The time of the failure.
        failures: Consecutive failures so far, this one included.
        retry_after: The server's ``Retry-After`` as a moment (see
            :func:`parse_retry_after`), or None.
        jitter: A random number in ``[0, 1)``; adds up to 10 % to the back-off.
        permanent: The failure was permanent (see :func:`is_permanent`): the
            back-off is 1 day whatever ``failures`` is.
        expires: When the certificate served now expires, if one is: the
            back-off is then at most a tenth of the time left (never under the
            first step), so a certificate close to its end is retried often
            enough to be renewed in time (a short-lived one after an outage).
            Once it has expired, the ordinary back-off applies again.

    Raises:
        ValueError: a naive datetime, negative ``failures``, ``jitter`` out of range.
    """
    require_aware(now=now, retry_after=retry_after, expires=expires)
    require_jitter(jitter)
    delay = PERMANENT_BACKOFF if permanent else backoff_delay(failures)
    if expires is not None and expires > now and not permanent:
        delay = min(delay, max((expires - now) / URGENT_SHARE, BACKOFF_STEPS[0]))
    attempt = now + delay * (1.0 + BACKOFF_JITTER * jitter)
    if retry_after is not None and retry_after > attempt:
        return retry_after
    return attempt


def next_check(now: datetime, interval_seconds: float, *, jitter: float) -> datetime:
    """When to look at the stored certificates again: ``interval`` +/- 10 %.

    Raises:
        ValueError: a naive ``now``, a non-positive interval, ``jitter`` out of range.
    """
    require_aware(now=now)
    require_jitter(jitter)
    if not interval_seconds > 0:
        raise ValueError(f"interval_seconds must be positive, got {interval_seconds!r}")
    factor = 1.0 - CHECK_JITTER + 2 * CHECK_JITTER * jitter
    return now + timedelta(seconds=interval_seconds * factor)


def is_permanent(problem_type: str | None, *, stage: str) -> bool:
    """Whether an ACME problem will come back however often the same order is retried.

    ``rejectedIdentifier``, ``caa`` and ``externalAccountRequired`` (the account needs a binding that is
    not configured) always are. ``unauthorized`` is when it answers the order or the
    finalize request (the account may not have these names), not when a challenge failed: the CA sends it
    for a wrong or unreachable challenge answer too, the everyday "DNS does not point here yet", which the
    ordinary back-off and the failed-validation budget handle. ``malformed`` is only when it answers the
    finalize request (our CSR), since elsewhere it may be a transient fault of the CA or of the way to it.

    Args:
        problem_type: The problem document's ``type``, a full URN such as
            ``urn:ietf:params:acme:error:caa`` (the bare name is accepted too),
            or None when the failure was not an ACME problem.
        stage: Which step the problem answered: ``"order"``, ``"validation"`` or ``"finalize"``.
    """
    if problem_type is None:
        return False
    name = problem_type.removeprefix(ACME_ERROR_PREFIX)
    if name == "unauthorized":
        return stage != "validation"
    return name in PERMANENT_PROBLEMS or (stage == "finalize" and name == "malformed")


# --- per-certificate state ---------------------------------------------------------------------


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


def _optional_str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def _ari_to_json(info: RenewalInfo | None) -> dict[str, object] | None:
    if info is None:
        return None
    return {
        "start": info.start.isoformat(),
        "end": info.end.isoformat(),
        "explanation_url": info.explanation_url,
        "retry_after": _iso(info.retry_after),
    }


def _ari_from_json(raw: object) -> RenewalInfo | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"ari: expected an object, got {raw!r}")
    start, end = _from_iso(raw, "start"), _from_iso(raw, "end")
    if start is None or end is None:
        raise ValueError(f"ari: start and end are required, got {raw!r}")
    return RenewalInfo(start, end, _optional_str(raw, "explanation_url"), _from_iso(raw, "retry_after"))


def _truncated(error: str) -> str:
    return error if len(error) <= MAX_ERROR_LENGTH else error[: MAX_ERROR_LENGTH - 3] + "..."


@final
@dataclass(frozen=True)
class RenewalState:
    """What we remember about renewing one certificate between attempts, shared by every worker.

    Attributes:
        name: The certificate's name (its first domain, see :mod:`snakeway.acme.store`).
        failures: Consecutive failed attempts (at ``issuer``, when several are configured); 0 after a success.
        last_error: Why the last attempt failed (truncated), or None.
        last_attempt: When the last attempt ended.
        next_attempt: Not before this moment may the next attempt start; None: any time.
        last_success: When a certificate was last obtained.
        retry_after: The CA's ``Retry-After`` floor: no order before it, not even a forced retry.
        permanent: The last failure was permanent (needs attention); the back-off is then 1 day.
        ari: The CA's last ARI answer for the certificate ``ari_serial``, or None.
        ari_serial: Serial number of the certificate ``ari`` is about.
        ari_next_poll: When to ask the CA again; None: as soon as possible (never asked).
        ari_moment: The moment drawn in ``ari``'s window, kept until the window changes.
        issuer: The directory URL of the ACME CA the next attempt goes to; None: the first configured
            (see :mod:`snakeway.acme.issuers`).
        issued_by: The directory URL of the ACME CA that issued the certificate obtained last (its ARI is
            asked); None: the first configured.
        revoked_serial: Serial of a certificate revoked by the operator (``certs revoke``): while it is the
            stored one, it is replaced as soon as the back-off allows, due or not.
    """

    name: str
    failures: int = 0
    last_error: str | None = None
    last_attempt: datetime | None = None
    next_attempt: datetime | None = None
    last_success: datetime | None = None
    retry_after: datetime | None = None
    permanent: bool = False
    ari: RenewalInfo | None = None
    ari_serial: str | None = None
    ari_next_poll: datetime | None = None
    ari_moment: datetime | None = None
    issuer: str | None = None
    issued_by: str | None = None
    revoked_serial: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int) or self.failures < 0:
            raise ValueError(f"failures must be a non-negative int, got {self.failures!r}")
        if not isinstance(self.permanent, bool):
            raise ValueError(f"permanent must be a bool, got {self.permanent!r}")
        if self.ari is not None and not isinstance(self.ari, RenewalInfo):
            raise ValueError(f"ari must be a RenewalInfo, got {self.ari!r}")
        require_aware(
            last_attempt=self.last_attempt,
            next_attempt=self.next_attempt,
            last_success=self.last_success,
            retry_after=self.retry_after,
            ari_next_poll=self.ari_next_poll,
            ari_moment=self.ari_moment,
        )

    @classmethod
    def conservative(cls, name: str, now: datetime, reason: str) -> RenewalState:
        """What an unreadable state file stands for: the longest back-off, starting at ``now``.

        A corrupt file must not reset the back-off (a site failing every
        attempt would then be retried at once, by every worker): it counts as
        failures at the cap, with the next attempt 6 hours away and
        ``last_error`` saying why.
        """
        require_aware(now=now)
        return cls(
            name=name,
            failures=len(BACKOFF_STEPS) + 1,
            last_error=_truncated(f"the renewal state file was corrupt ({reason}); waiting the longest back-off"),
            next_attempt=now + BACKOFF_CAP,
        )

    def may_attempt(self, now: datetime) -> bool:
        """Whether the back-off (and any Retry-After) has passed at ``now``."""
        return self.next_attempt is None or now >= self.next_attempt

    def failed(
        self,
        now: datetime,
        error: str,
        retry_after: datetime | None = None,
        jitter: float = 0.0,
        *,
        permanent: bool = False,
        expires: datetime | None = None,
    ) -> RenewalState:
        """The state after an attempt that ended in ``error`` at ``now``.

        Args:
            now: When the attempt failed.
            error: A human-readable reason (kept up to 1000 characters).
            retry_after: A floor for the next attempt (the server's Retry-After);
                kept in the state, as is an earlier floor still in the future.
            jitter: A random number in ``[0, 1)``, see :func:`next_attempt`.
            permanent: The failure needs attention (see :func:`is_permanent`):
                the next attempt is a day away.
            expires: When the certificate served now expires (see :func:`next_attempt`).
        """
        failures = self.failures + 1
        floor = retry_after
        if self.retry_after is not None and self.retry_after > now and (floor is None or self.retry_after > floor):
            floor = self.retry_after
        return replace(
            self,
            failures=failures,
            last_error=_truncated(error),
            last_attempt=now,
            next_attempt=next_attempt(now, failures, floor, jitter=jitter, permanent=permanent, expires=expires),
            retry_after=floor,
            permanent=permanent,
        )

    def moved_to(self, issuer: str | None, now: datetime) -> RenewalState:
        """The state after a failure made the next attempt go to another CA, ``issuer`` (None: the first).

        That CA starts afresh, at once: the failures, back-off and ``Retry-After`` kept were the previous
        CA's (see :mod:`snakeway.acme.issuers`). The last error stays, to be reported.
        """
        require_aware(now=now)
        return replace(self, issuer=issuer, failures=0, next_attempt=now, retry_after=None, permanent=False)

    def succeeded(self, now: datetime) -> RenewalState:
        """The state after a certificate was obtained at ``now``.

        Failures are cleared, and so is the ARI answer: it was about the
        previous certificate, and the new one is asked about afresh. A
        Retry-After floor still in the future stays, and so does ``issued_by``
        (the caller sets it to the CA that issued the new certificate); the next
        attempt goes to the first CA again.
        """
        require_aware(now=now)
        floor = self.retry_after if self.retry_after is not None and self.retry_after > now else None
        return RenewalState(self.name, last_attempt=now, last_success=now, retry_after=floor, issued_by=self.issued_by)

    def with_ari(self, info: RenewalInfo, serial: str, now: datetime, jitter: float) -> RenewalState:
        """The state after the CA answered ``info`` about the certificate ``serial`` at ``now``.

        The moment in the window is drawn with ``jitter`` only when the window
        (or the certificate) changed, or the kept moment is not inside it; the
        same window keeps its moment. The
        next poll is when the answer's Retry-After says (see
        :func:`snakeway.acme.timing.next_ari_poll`).

        Raises:
            ValueError: a naive ``now``, ``jitter`` out of range.
        """
        moment = self.ari_moment
        same = self.ari is not None and (self.ari.start, self.ari.end) == (info.start, info.end)
        if not same or self.ari_serial != serial or moment is None or not info.start <= moment <= info.end:
            moment = ari_moment(info, jitter)
        else:
            require_jitter(jitter)
        return replace(
            self, ari=info, ari_serial=serial, ari_next_poll=next_ari_poll(now, info.retry_after), ari_moment=moment
        )

    def ari_failed(self, now: datetime, reason: str, serial: str | None = None) -> RenewalState:
        """The state after an ARI poll at ``now`` failed or was malformed (``reason``, logged by the caller).

        The previous answer, if any, still holds; without one the lifetime rule
        does. The CA is asked again after the default 6 hours. ``serial`` is the
        certificate asked about: when it is not the one the kept answer is
        about, that answer is dropped (it was about the previous certificate).
        """
        if serial is not None and serial != self.ari_serial:
            return replace(self, ari=None, ari_serial=serial, ari_moment=None, ari_next_poll=next_ari_poll(now, None))
        return replace(self, ari_next_poll=next_ari_poll(now, None))

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict; datetimes as ISO 8601 strings."""
        return {
            "name": self.name,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_attempt": _iso(self.last_attempt),
            "next_attempt": _iso(self.next_attempt),
            "last_success": _iso(self.last_success),
            "retry_after": _iso(self.retry_after),
            "permanent": self.permanent,
            "ari": _ari_to_json(self.ari),
            "ari_serial": self.ari_serial,
            "ari_next_poll": _iso(self.ari_next_poll),
            "ari_moment": _iso(self.ari_moment),
            "issuer": self.issuer,
            "issued_by": self.issued_by,
            "revoked_serial": self.revoked_serial,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RenewalState:
        """Inverse of :meth:`to_json`; a state saved before a key existed loads with its default.

        Raises:
            ValueError: a missing or mistyped field.
        """
        name = data.get("name")
        if not isinstance(name, str):
            raise ValueError(f"name: expected a string, got {name!r}")
        failures = data.get("failures", 0)
        if isinstance(failures, bool) or not isinstance(failures, int):
            raise ValueError(f"failures: expected an int, got {failures!r}")
        permanent = data.get("permanent", False)
        if not isinstance(permanent, bool):
            raise ValueError(f"permanent: expected true or false, got {permanent!r}")
        return cls(
            name=name,
            failures=failures,
            last_error=_optional_str(data, "last_error"),
            last_attempt=_from_iso(data, "last_attempt"),
            next_attempt=_from_iso(data, "next_attempt"),
            last_success=_from_iso(data, "last_success"),
            retry_after=_from_iso(data, "retry_after"),
            permanent=permanent,
            ari=_ari_from_json(data.get("ari")),
            ari_serial=_optional_str(data, "ari_serial"),
            ari_next_poll=_from_iso(data, "ari_next_poll"),
            ari_moment=_from_iso(data, "ari_moment"),
            issuer=_optional_str(data, "issuer"),
            issued_by=_optional_str(data, "issued_by"),
            revoked_serial=_optional_str(data, "revoked_serial"),
        )
