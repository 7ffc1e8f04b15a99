"""What to do next for one ACME certificate (sans-IO): wait, ask the CA's ARI, save again, or order.

Theory of operation
-------------------
:func:`decide` is the one place that turns what is known about a certificate into the next step. The
CertManager's shells gather the facts (the stored certificate, its :class:`RenewalState`, whether a new
certificate is waiting to be saved, the clock), call :func:`decide`, and carry the answer out; they call it
again, under the certificate's lock and with the state read anew, before they order, so two workers never
act on a stale view.

The rules, in order:

1. **A certificate waits to be saved** (the store refused the write after issuance): save it again once
   the back-off allows. Never a new order: the CA already issued it.
2. **The stored certificate covers the names:** when the CA offers ARI and the answer on file is not for
   this certificate or is due for a new poll, ask ARI first. Otherwise its renewal moment
   (:func:`snakeway.acme.timing.renewal_moment`: the lifetime rule, or the moment drawn inside the ARI
   window, never later than the emergency time) decides: before it, wait (until the moment, the next ARI
   poll or the periodic check, whichever comes first).
3. **Due, missing, revoked (``state.revoked_serial``) or not covering the names:** a CA's ``Retry-After`` is
   a floor nobody shortens, a forced check (``retry_now``, SIGHUP) included. Otherwise, unless forced, the
   failure back-off must have passed. Then: order, with an urgency for the order lane (missing or expired
   first, then the nearest renewal moment).

A forced renewal (``renew``, from the admin API) skips rule 2: it orders a certificate that is not due,
as rule 3 says (never before a ``Retry-After``, back-off skipped).

The rate-limit budget is consulted by the shell at the moment it spends from it (under the budget lock,
:mod:`snakeway.acme.budget`), since that is the only moment its answer holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import final

from snakeway.acme import timing
from snakeway.acme.schedule import RenewalState


@final
@dataclass(frozen=True)
class Stored:
    """What the store holds for a certificate (or the certificate waiting to be saved).

    Attributes:
        not_before, not_after: its validity.
        serial: the leaf's serial (ARI answers are per certificate).
        covers: whether it was obtained for every name now configured.
    """

    not_before: datetime
    not_after: datetime
    serial: str
    covers: bool


@final
@dataclass(frozen=True)
class Wait:
    """Nothing to do before ``until``."""

    until: datetime
    why: str


@final
@dataclass(frozen=True)
class PollAri:
    """Ask the CA's renewal information for the stored certificate now."""


@final
@dataclass(frozen=True)
class SaveAgain:
    """Try again to save the certificate that was issued but could not be stored."""


@final
@dataclass(frozen=True)
class Order:
    """Order a certificate now.

    Attributes:
        urgency: the order lane's sort key (lower first).
        renewal: whether it replaces a certificate that covers the names (for ``replaces`` and the budget).
    """

    urgency: tuple[object, ...]
    renewal: bool


Action = Wait | PollAri | SaveAgain | Order

# Why a certificate waits, when its shell cares: healthy and not due yet; held by the CA's Retry-After.
NOT_DUE = "not due"
CA_ASKED = "the CA asked to wait"


def decide(
    *,
    now: datetime,
    state: RenewalState,
    stored: Stored | None,
    renew_within: timedelta | None,
    ari: bool,
    periodic: datetime,
    forced: bool = False,
    unsaved: bool = False,
    renew: bool = False,
) -> Action:
    """The next step for one certificate (see the module docstring).

    Args:
        now: The current wall time (aware).
        state: Its renewal state from the store.
        stored: The stored certificate (or the one waiting to be saved), None if there is none.
        renew_within: ``tls_automation.renew_within_days`` as a duration, None for the lifetime rule.
        ari: Whether the CA offers ARI.
        periodic: The next periodic check: no wait lasts longer.
        forced: A "retry now" (SIGHUP): skips the failure back-off, never a CA's Retry-After.
        unsaved: ``stored`` was issued but is not in the store yet.
        renew: A forced renewal (the admin API): order now, due or not; as ``forced``, never before a CA's
            ``Retry-After``.
    """
    if unsaved:
        if not forced and not state.may_attempt(now):
            assert state.next_attempt is not None
            return Wait(state.next_attempt, "saving the new certificate failed; trying again then")
        return SaveAgain()
    moment: datetime | None = None
    forced = forced or renew
    revoked = stored is not None and stored.serial == state.revoked_serial
    if stored is not None and stored.covers and not renew and not revoked:
        mine = state.ari_serial == stored.serial  # the ARI fields are about this certificate
        if ari and (not mine or state.ari_next_poll is None or now >= state.ari_next_poll):
            return PollAri()
        answer = state.ari if mine else None
        moment = timing.renewal_moment(
            stored.not_before, stored.not_after, renew_within=renew_within,
            ari=answer, ari_moment=state.ari_moment if answer is not None else None,
        )
        if now < moment:
            until = min(moment, periodic)
            if ari and state.ari_next_poll is not None:
                until = min(until, state.ari_next_poll)
            return Wait(until, NOT_DUE)
    if state.retry_after is not None and now < state.retry_after:
        return Wait(state.retry_after, CA_ASKED)
    if not forced and not state.may_attempt(now):
        assert state.next_attempt is not None
        return Wait(state.next_attempt, "backing off after a failure")
    not_after = stored.not_after if stored is not None and stored.covers else None
    return Order(timing.urgency(now, not_after, moment or now), renewal=stored is not None and stored.covers)
