"""Revoking a stored certificate (RFC 8555 §7.6), and marking it to be replaced at once.

``certs revoke NAME [--reason R]`` comes here, through the running server's admin API or, when no server
runs, straight from the command line (:mod:`snakeway.acme.direct`). Either way :func:`revoke_stored`:

1. under the certificate's lock (no order of it is in flight meanwhile), loads the stored certificate;
2. revokes it at the CA that issued it (``RenewalState.issued_by``; the first configured when unknown or no
   longer configured), signed with that CA's account key (a certificate the CA reports ``alreadyRevoked`` is
   taken as revoked);
3. records its serial as ``revoked_serial`` in the renewal state and drops any order in flight: from then
   on the certificate is due (:func:`snakeway.acme.decide.decide`), whoever checks it next. The running
   server orders its replacement at once; a server started later orders it at its first check.

The replacement is ordered like any new certificate, with a key of its own: a certificate key is never
reused, so a compromised key (``keyCompromise``) is never served again once the new certificate is.
Until then the revoked certificate stays served (nothing else could be).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from snakeway.acme.issuers import issuer_index
from snakeway.acme.schedule import RenewalState
from snakeway.errors import IssuanceError, SnakewayError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from snakeway.acme.account import AccountKeeper
    from snakeway.acme.coordination import Coordinator
    from snakeway.acme.store import CertBundle, CertStore

logger = logging.getLogger(__name__)

ALREADY_REVOKED = "urn:ietf:params:acme:error:alreadyRevoked"
DEFAULT_REASON = "unspecified"
# RFC 5280 §5.3.1 CRLReason codes a subscriber may give (the others are the CA's own).
REVOCATION_REASONS: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


class ActionRefused(SnakewayError):
    """An operator action cannot be done now: no certificate (or account) is stored, or an order is in flight."""


def reason_code(name: str) -> int:
    """The CRLReason code of a reason's name (``keyCompromise`` -> 1).

    Raises:
        ValueError: Not one of :data:`REVOCATION_REASONS`.
    """
    try:
        return REVOCATION_REASONS[name]
    except KeyError:
        raise ValueError(f"unknown revocation reason {name!r}; expected one of: "
                         f"{', '.join(REVOCATION_REASONS)}") from None


async def revoke_stored(
    *, name: str, reason: str, store: CertStore, accounts: Sequence[AccountKeeper], coordinator: Coordinator,
) -> CertBundle:
    """Revoke the stored certificate ``name`` and mark it for replacement (see the module docstring).

    ``accounts``: every configured CA's keeper, in the configured order; the one of the issuing CA signs.

    Returns:
        The certificate revoked.

    Raises:
        ValueError: ``reason`` is not one of :data:`REVOCATION_REASONS`.
        ActionRefused: No certificate is stored for ``name``, or its lock is held (an order in flight).
        IssuanceError: The CA refused or could not be reached.
        StoreError: The store could not be read or written.
    """
    code = reason_code(reason)
    async with coordinator.lock(name) as mine:
        if not mine:
            raise ActionRefused(f"{name} is being renewed right now; try again in a moment")
        bundle = await store.load(name)
        if bundle is None:
            raise ActionRefused(f"no certificate is stored for {name}")
        state = await store.load_state(name) or RenewalState(name=name)
        account = accounts[issuer_index([keeper.acme.directory_url for keeper in accounts], state.issued_by)]
        await account.ensure()
        try:
            await account.backend.revoke(bundle.cert_pem, code)
        except IssuanceError as exc:
            if exc.problem_type != ALREADY_REVOKED:
                raise
            logger.info("certificate for %s (serial %s): the CA says it was revoked already", name, bundle.serial)
        await store.save_state(replace(state, revoked_serial=bundle.serial))
        await store.delete_order(name)
    logger.warning("certificate for %s (serial %s) revoked (reason %s); a new certificate with a new key is to be "
                   "ordered", ", ".join(bundle.domains), bundle.serial, reason)
    return bundle
