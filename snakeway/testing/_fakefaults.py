"""Scripted faults for :class:`~snakeway.testing.FakeCA`: the steps it has, and :class:`PlannedFailure`.

A :class:`PlannedFailure` names a step (or "the next request") and the answer
the CA gives there; :meth:`PlannedFailure.error` turns it into the
:class:`~snakeway.errors.IssuanceError` the real backend would raise, with the
HTTP status, ``Retry-After`` and RFC 7807 problem type it would carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, final

from snakeway.errors import IssuanceError

ACME_ERROR: Final = "urn:ietf:params:acme:error:"

STEPS: Final = (
    "ensure_account",
    "new_order",
    "resume_order",
    "challenges",
    "answer",
    "wait_authorizations",
    "finalize",
    "renewal_info",
    "offered_profiles",
    "change_key",
    "update_contact",
    "revoke",
)
# The steps that send a request in the real backend: the ones an outage or a
# step-less planned failure can hit.
REQUEST_STEPS: Final = tuple(step for step in STEPS if step != "challenges")

_DEFAULT_PROBLEMS: Final = {
    429: ACME_ERROR + "rateLimited",
    500: ACME_ERROR + "serverInternal",
    400: ACME_ERROR + "malformed",
    403: ACME_ERROR + "unauthorized",
}


@final
@dataclass(frozen=True)
class PlannedFailure:
    """One scripted failure: the next call of ``step`` raises :class:`~snakeway.errors.IssuanceError`.

    Attributes:
        step: A name from :data:`STEPS`, or ``None`` for whichever request step
            comes next (never ``challenges``, which sends no request).
        status: The HTTP status the CA answers with; ``None`` for a network
            error without an answer ("connection reset by peer").
        retry_after: ``Retry-After`` as an aware datetime, or a ``timedelta`` from
            the clock's ``now()`` when the failure fires. Only for 429 and 503,
            the statuses for which the real backend reads the header.
        problem_type: The RFC 7807 type; ``None`` picks the usual one for
            ``status`` (429 rateLimited, 500 serverInternal, ...), if any.
        detail: The error message; a default names the status and the step.

    Raises:
        ValueError: On an unknown step, a status outside 400-599, a naive
            ``retry_after``, or ``retry_after`` with a status other than 429/503.
    """

    step: str | None = None
    status: int | None = 503
    retry_after: datetime | timedelta | None = None
    problem_type: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.step is not None and self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}; expected one of {', '.join(STEPS)} or None")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"a failure status must be 400-599 or None, got {self.status}")
        if self.retry_after is not None:
            if self.status not in (429, 503):
                raise ValueError(f"retry_after needs status 429 or 503 (the backend ignores it on {self.status})")
            if isinstance(self.retry_after, datetime) and self.retry_after.tzinfo is None:
                raise ValueError("retry_after must be timezone-aware")

    def matches(self, step: str) -> bool:
        return self.step == step or (self.step is None and step in REQUEST_STEPS)

    def error(self, step: str, now: datetime) -> IssuanceError:
        retry_after = self.retry_after
        if isinstance(retry_after, timedelta):
            retry_after = now + retry_after
        if retry_after is not None:
            retry_after = retry_after.astimezone(UTC)
        if self.status is None:
            message = self.detail or f"connection reset by peer ({step})"
            return IssuanceError(message)
        problem = self.problem_type or _DEFAULT_PROBLEMS.get(self.status)
        message = self.detail or f"HTTP {self.status} from the fake CA ({step})"
        return IssuanceError(message, status=self.status, retry_after=retry_after, problem_type=problem)
