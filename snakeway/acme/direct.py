"""``certs revoke`` and ``certs rollover-account-key`` without a running server: straight on the store.

:mod:`snakeway.control` comes here when no server answers on ``bind_admin`` (or the configuration has none).
The work is the running server's own (:func:`snakeway.acme.revoke.revoke_stored`,
:func:`snakeway.acme.account.rollover_stored`), under the same locks of the same store, with one client and
one account per configured CA as the server has, so a server sharing the store meanwhile is not raced: it
replaces a certificate revoked here at its next check, and signs with a key rolled over here from its next
request to the CA.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from snakeway.acme.account import AccountKeeper, rollover_stored
from snakeway.acme.coordination import Coordinator
from snakeway.acme.revoke import ActionRefused, revoke_stored
from snakeway.acme.store import AccountRecord, CertBundle, CertStore, open_store
from snakeway.config.model import Config

T = TypeVar("T")


@dataclass(frozen=True)
class _Session:
    store: CertStore
    coordinator: Coordinator
    accounts: tuple[AccountKeeper, ...]  # one per configured CA, in order


@asynccontextmanager
async def _session(config: Config) -> AsyncIterator[_Session]:
    from snakeway.build import acme_backend, coordinator

    automation = config.server.tls_automation
    if automation is None:
        raise ActionRefused("this configuration has no server.tls_automation: there is no ACME account")
    store = open_store(automation.cert_store, automation.acme.data_dir, config.server.state_dir)
    coord = coordinator(config, store)
    async with AsyncExitStack() as stack:
        accounts = []
        for acme in automation.issuers:
            backend = acme_backend(acme, None)
            stack.push_async_callback(backend.aclose)
            accounts.append(AccountKeeper(acme=acme, store=store, backend=backend, coordinator=coord))
        yield _Session(store, coord, tuple(accounts))


async def _with_session(config: Config, work: Callable[[_Session], Awaitable[T]]) -> T:
    async with _session(config) as session:
        return await work(session)


async def revoke(config: Config, name: str, reason: str) -> CertBundle:
    """Revoke the stored certificate ``name`` (an id ``acme:<name>`` too) and mark it for replacement.

    Raises:
      ValueError, ActionRefused, IssuanceError, StoreError: see :func:`~snakeway.acme.revoke.revoke_stored`.
    """
    name = name.removeprefix("acme:")
    return await _with_session(config, lambda s: revoke_stored(
        name=name, reason=reason, store=s.store, accounts=s.accounts, coordinator=s.coordinator,
    ))


async def rollover_account_key(config: Config) -> list[AccountRecord]:
    """Roll over the key of every configured CA's stored account and store the new keys.

    Raises:
      ActionRefused: no account is stored yet (nothing to roll over).
      IssuanceError, StoreError: see :meth:`~snakeway.acme.account.AccountKeeper.rollover`.
    """
    return await _with_session(config, lambda s: rollover_stored(s.accounts))
