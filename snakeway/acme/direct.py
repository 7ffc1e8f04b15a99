"""``certs revoke`` and ``certs rollover-account-key`` without a running server: straight on the store.

:mod:`snakeway.control` comes here when no server answers on ``bind_admin`` (or the configuration has none).
The work is the running server's own (:func:`snakeway.acme.revoke.revoke_stored`,
:meth:`snakeway.acme.account.AccountKeeper.rollover`), under the same locks of the same store, so a server
sharing the store meanwhile is not raced: it replaces a certificate revoked here at its next check, and signs
with a key rolled over here from its next request to the CA.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from snakeway.acme.account import AccountKeeper
from snakeway.acme.backend import ClientV2Backend
from snakeway.acme.coordination import Coordinator
from snakeway.acme.revoke import ActionRefused, revoke_stored
from snakeway.acme.store import AccountRecord, CertBundle, CertStore, open_store
from snakeway.config.model import Config

T = TypeVar("T")


@dataclass(frozen=True)
class _Session:
    store: CertStore
    backend: ClientV2Backend
    coordinator: Coordinator
    account: AccountKeeper


@asynccontextmanager
async def _session(config: Config) -> AsyncIterator[_Session]:
    from snakeway.build import coordinator

    automation = config.server.tls_automation
    if automation is None:
        raise ActionRefused("this configuration has no server.tls_automation: there is no ACME account")
    acme = automation.acme
    store = open_store(automation.cert_store, acme.data_dir, config.server.state_dir)
    coord = coordinator(config, store)
    backend = ClientV2Backend(acme.directory_url, ca_file=acme.ca_file)
    try:
        yield _Session(store, backend, coord, AccountKeeper(acme=acme, store=store, backend=backend,
                                                           coordinator=coord))
    finally:
        await backend.aclose()


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
        name=name, reason=reason, store=s.store, account=s.account, backend=s.backend, coordinator=s.coordinator,
    ))


async def rollover_account_key(config: Config) -> AccountRecord:
    """Roll the stored account's key over at the CA and store the new key.

    Raises:
      ActionRefused: no account is stored yet (nothing to roll over).
      IssuanceError, StoreError: see :meth:`~snakeway.acme.account.AccountKeeper.rollover`.
    """

    async def work(session: _Session) -> AccountRecord:
        if await session.store.load_account(session.account.acme.directory_url) is None:
            raise ActionRefused("no ACME account is stored yet: snakeway registers one with its first order")
        return await session.account.rollover()

    return await _with_session(config, work)
