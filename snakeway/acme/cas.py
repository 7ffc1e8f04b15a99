"""What the renewer keeps per ACME CA when several are configured (see :mod:`snakeway.acme.issuers`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from snakeway.acme import issuers
from snakeway.acme.lanes import OrderLane
from snakeway.acme.ledger import SharedBudget

if TYPE_CHECKING:
    from collections.abc import Sequence

    from snakeway.acme.coordination import Coordinator
    from snakeway.acme.issuing import Issuer
    from snakeway.acme.schedule import RenewalState
    from snakeway.acme.store import CertStore
    from snakeway.clock import WallClock


@final
@dataclass(frozen=True)
class Ca:
    """One ACME CA: its issuer (account and backend), its order lane and its rate-limit budget.

    Attributes:
      issuer: runs orders with this CA's account (``issuer.acme`` is its configuration).
      lane: at most ``max_concurrent_orders`` orders at this CA at once.
      budget: this CA's rate-limit ledger in the store, under its directory URL.
    """

    issuer: Issuer
    lane: OrderLane
    budget: SharedBudget

    @property
    def url(self) -> str:
        """The CA's directory URL: what names it in the store and in renewal states."""
        return self.issuer.acme.directory_url


def open_cas(
    ordered: Sequence[Issuer], *, store: CertStore, coordinator: Coordinator, clock: WallClock
) -> tuple[Ca, ...]:
    """A :class:`Ca` for each issuer, in the order they are tried (at least one).

    Raises:
      ValueError: no issuer.
    """
    if not ordered:
        raise ValueError("at least one ACME CA is needed")
    return tuple(
        Ca(issuer, OrderLane(issuer.acme.max_concurrent_orders),
           SharedBudget(acme=issuer.acme, store=store, coordinator=coordinator, clock=clock))
        for issuer in ordered
    )


def ca_for(cas: Sequence[Ca], state: RenewalState) -> int:
    """The position in ``cas`` of the CA ``state``'s next attempt goes to."""
    return issuers.issuer_index([ca.url for ca in cas], state.issuer)
