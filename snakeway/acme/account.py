"""The ACME account's lifecycle: registered once, followed through the store, replaced when the CA lost it.

Theory of operation
-------------------
One account per CA directory is kept in the store (:class:`~snakeway.acme.store.AccountRecord`: key, URL,
contacts) and shared by every process using the store. :class:`AccountKeeper` holds it for one process and
one CA: with several CAs configured (:mod:`snakeway.acme.issuers`) each has its keeper, its backend and its
account, and nothing below ever touches another CA's account. A CA's backend carries its External Account
Binding, so an account registered again there is bound again.

* **Following the store.** Before each use (an order, an ARI poll, a revocation) the stored record is read
  again; when its key is not the one this process signs with, another process has rolled the key over or
  registered a new account, and this process takes that one up. A read per order costs nothing next to the
  order; it is what lets ``certs rollover-account-key`` act in one worker (or on another node) for all.
* **An account the CA lost** (``accountDoesNotExist``: the CA forgot it) **or deactivated** (``unauthorized``
  whose detail says so: Pebble and Boulder answer "Account has been deactivated" and "... exists but is
  deactivated") is registered again with a *new* key: a deactivated account's key can never register again
  (RFC 8555 §7.3.6). Logged once at warning; the caller then retries what failed.
* **Key rollover** (RFC 8555 §7.3.5): a new key is made, the CA is told with ``keyChange`` (an inner JWS
  signed by the new key, inside the usual one signed by the old), and the store keeps the new key.
  ``certs rollover-account-key`` rolls every configured CA's stored account (:func:`rollover_stored`).
* **Contacts** (RFC 8555 §7.3.2): when ``contact_email`` differs from what the stored account was given,
  the account is updated at start and at each reload, and the change logged.

Every step that changes the account runs under the coordinator's account lock, so among workers and nodes
one does it and the others follow the store. The signing itself is in :mod:`snakeway.acme.backend`'s worker
thread; the JWS of ``keyChange`` is built here (:func:`key_change`), with :mod:`snakeway.acme.backend` and
:mod:`snakeway.acme.acmelib` the only other place that imports ``acme`` and ``josepy``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import trio
from acme import client as acme_client
from acme import jws as acme_jws
from acme import messages
from cryptography import x509
from josepy.json_util import JSONObjectWithFields
from josepy.json_util import field as jose_field
from josepy.jwa import JWASignature
from josepy.jwk import JWK

from snakeway.acme import acmelib, crypto
from snakeway.acme.revoke import ActionRefused
from snakeway.acme.store import AccountRecord, CertStore, StoreError
from snakeway.config.model import AcmeSettings, KeyType
from snakeway.errors import IssuanceError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from snakeway.acme.coordination import Coordinator
    from snakeway.acme.protocol import AcmeBackend

logger = logging.getLogger(__name__)

# The lock name under which the ACME account is registered or changed (not a valid host name).
ACCOUNT_LOCK = "acme-account.lock"
ACCOUNT_DOES_NOT_EXIST = "urn:ietf:params:acme:error:accountDoesNotExist"
UNAUTHORIZED = "urn:ietf:params:acme:error:unauthorized"
# How long a process waits for another one holding the account lock, between looks.
LOCK_PAUSE = 0.1

def account_gone(exc: IssuanceError) -> bool:
    """Whether the CA refused because it no longer knows the account, or has deactivated it."""
    if exc.problem_type == ACCOUNT_DOES_NOT_EXIST:
        return True
    return exc.problem_type == UNAUTHORIZED and "deactivated" in str(exc).lower()


def contact_of(acme: AcmeSettings) -> tuple[str, ...]:
    """The account's contact URIs as ``contact_email`` gives them."""
    return tuple(f"mailto:{address}" for address in acme.contact_email)


# --- the CA's side, in the backend's worker thread --------------------------------------------------------------


class _KeyChange(JSONObjectWithFields):
    """The inner payload of ``keyChange`` (RFC 8555 §7.3.5)."""

    account: str = jose_field("account")
    old_key: JWK = jose_field("oldKey", decoder=JWK.from_json)


def key_change(
    client: acme_client.ClientV2, account_url: str, old: JWK, new: JWK, new_alg: JWASignature
) -> acme_jws.JWS:
    """The inner JWS of a key rollover: ``{account, oldKey}`` signed by the new key, with its ``jwk`` and the
    ``keyChange`` URL in the protected header, and no nonce."""
    url = str(client.directory["keyChange"])
    payload = _KeyChange(account=account_url, old_key=old.public_key()).json_dumps().encode()
    inner: acme_jws.JWS = acme_jws.JWS.sign(payload, key=new, alg=new_alg, nonce=None, url=url)
    return inner


class ContactUpdate(JSONObjectWithFields):
    """The account update that sets its contacts (RFC 8555 §7.3.2); an empty list removes them."""

    contact: tuple[str, ...] = jose_field("contact", encoder=list)


def registration(
    client: acme_client.ClientV2, jwk: JWK, contact: tuple[str, ...], eab: tuple[str, str] | None
) -> messages.NewRegistration:
    """The ``newAccount`` payload: the terms agreed, ``contact``, and the External Account Binding of ``eab``
    (key id, base64url MAC key; RFC 8555 §7.3.4) signed over ``jwk``.

    Raises:
        IssuanceError: The CA requires a binding and ``eab`` is None (decided before any request: permanent).
    """
    if client.external_account_required() and eab is None:
        raise IssuanceError("the CA requires External Account Binding: set eab = { key_id, mac_key_file }",
                            problem_type=messages.ERROR_PREFIX + "externalAccountRequired")
    binding = acmelib.account_binding(jwk, *eab, client) if eab is not None else None
    return messages.NewRegistration.from_data(contact=contact, terms_of_service_agreed=True,
                                              external_account_binding=binding)


def revocation(cert_pem: bytes, reason: int) -> messages.Revocation:
    """The ``revokeCert`` payload for the leaf of ``cert_pem`` (RFC 8555 §7.6)."""
    return messages.Revocation(certificate=x509.load_pem_x509_certificate(cert_pem), reason=reason)


# --- the process's side -------------------------------------------------------------------------------------------


class AccountKeeper:
    """The account one process signs with, kept in step with the store (see the module docstring).

    Args:
      acme: ``tls_automation.acme`` (directory and contacts; :meth:`configure` takes new contacts).
      store: where the account record lives.
      backend: the CA; signs with the account :meth:`ensure` last gave it.
      coordinator: the account lock between processes.
    """

    def __init__(self, *, acme: AcmeSettings, store: CertStore, backend: AcmeBackend, coordinator: Coordinator) -> None:
        self.acme = acme
        self.store = store
        self.backend = backend
        self.coordinator = coordinator
        self._lock = trio.Lock()  # one task of this process changes the account at a time
        self._key_pem: bytes | None = None  # the key the backend signs with; None: not set up yet

    def configure(self, acme: AcmeSettings) -> None:
        """Take the contacts of a reloaded ``tls_automation.acme`` (:meth:`sync_contact` applies them); the CA
        stays the one this process started with (its backend talks to that one)."""
        self.acme = replace(self.acme, contact_email=acme.contact_email)

    async def ensure(self) -> None:
        """Have the backend sign with the stored account (registering one if the store has none).

        Raises:
            IssuanceError: The CA could not be reached or refused (an account it lost is replaced first).
            StoreError: The store could not be read or written.
        """
        if await self._current():
            return
        async with self._lock, self._account_lock():
            if not await self._current():  # another task of this process may have just set it up
                await self._ensure_locked()

    async def _current(self) -> bool:
        """Whether the backend signs with the stored account's key (one store read)."""
        record = await self.store.load_account(self.acme.directory_url)
        return record is not None and record.key_pem == self._key_pem

    async def _ensure_locked(self) -> AccountRecord:
        record = await self.store.load_account(self.acme.directory_url)
        try:
            info = await self.backend.ensure_account(record.key_pem if record else None, contact_of(self.acme))
        except IssuanceError as exc:
            if record is None or not account_gone(exc):
                raise
            return await self._register_new(record, str(exc))
        self._key_pem = info.key_pem
        if record is None or record.uri != info.uri:
            record = AccountRecord(self.acme.directory_url, info.key_pem, info.uri, contact_of(self.acme))
            await self.store.save_account(record)
        return record

    async def replace_gone(self, exc: IssuanceError) -> None:
        """After ``exc`` (:func:`account_gone`): register a new account, unless another process already has.

        Raises:
            IssuanceError: Registering failed.
        """
        failed_key = self._key_pem
        async with self._lock, self._account_lock():
            record = await self.store.load_account(self.acme.directory_url)
            if record is not None and record.key_pem != failed_key:  # replaced or rolled over meanwhile
                await self._ensure_locked()
                return
            await self._register_new(record, str(exc))

    async def _register_new(self, lost: AccountRecord | None, why: str) -> AccountRecord:
        contact = contact_of(self.acme)
        info = await self.backend.ensure_account(None, contact)
        record = AccountRecord(self.acme.directory_url, info.key_pem, info.uri, contact)
        await self.store.save_account(record)
        self._key_pem = info.key_pem
        logger.warning("ACME account %s at %s is unusable (%s); registered a new account %s with a new key",
                       lost.uri if lost is not None else "(none)", self.acme.directory_url, why, info.uri)
        return record

    async def rollover(self) -> AccountRecord:
        """Roll the account key over (RFC 8555 §7.3.5) and store the new key; returns the new record.

        Raises:
            IssuanceError: The CA refused or could not be reached (the old key stays).
            StoreError: The CA took the new key but the store could not keep it.
        """
        async with self._lock, self._account_lock():
            record = await self._ensure_locked()
            new_key: bytes = await trio.to_thread.run_sync(crypto.generate_key, KeyType.ECDSA_P256)
            await self.backend.change_key(new_key)
            self._key_pem = new_key
            rolled = replace(record, key_pem=new_key)
            try:
                await self.store.save_account(rolled)
            except StoreError as exc:
                logger.error("ACME account %s: the CA took a new key, but the store could not keep it (%s); "
                             "the stored key is refused now: delete the account from the store to register anew",
                             record.uri, exc)
                raise StoreError(f"the CA took the new account key, but the store could not keep it: {exc}") \
                    from exc
            logger.info("ACME account %s: key rolled over; the new key is stored", record.uri)
            return rolled

    async def sync_contact(self) -> bool:
        """Update the stored account's contacts at the CA when ``contact_email`` changed; whether it did.

        An account not registered yet is left alone (its registration carries the contacts). When another
        process holds the account lock, it is left to that one (it reads the same configuration).

        Raises:
            IssuanceError: The CA refused or could not be reached.
        """
        contact = contact_of(self.acme)
        record = await self.store.load_account(self.acme.directory_url)
        if record is None or tuple(record.contact) == contact:
            return False
        async with self._lock, self.coordinator.lock(ACCOUNT_LOCK) as mine:
            if not mine:
                return False
            record = await self._ensure_locked()
            if tuple(record.contact) == contact:
                return False
            await self.backend.update_contact(contact)
            await self.store.save_account(replace(record, contact=contact))
            logger.info("ACME account %s: contact updated from %s to %s", record.uri,
                        ", ".join(record.contact) or "none", ", ".join(contact) or "none")
            return True

    @contextlib.asynccontextmanager
    async def _account_lock(self) -> AsyncIterator[None]:
        """The coordinator's account lock, waited for (its ``lock`` does not block: look again in a moment)."""
        while True:
            async with self.coordinator.lock(ACCOUNT_LOCK) as mine:
                if mine:
                    yield
                    return
            await trio.sleep(LOCK_PAUSE)


async def rollover_stored(keepers: Sequence[AccountKeeper]) -> list[AccountRecord]:
    """Roll over the key of every CA's account that is stored, in the configured order; the new records.

    A CA without a stored account is skipped: its first order registers one with a fresh key anyway. The
    first CA that fails stops the rollover there (the ones before keep their new keys; running the command
    again rolls every account once more).

    Raises:
        ActionRefused: No CA has an account stored yet.
        IssuanceError, StoreError: see :meth:`AccountKeeper.rollover`.
    """
    stored = [keeper for keeper in keepers if await keeper.store.load_account(keeper.acme.directory_url) is not None]
    if not stored:
        raise ActionRefused("no ACME account is stored yet: snakeway registers one with its first order")
    return [await keeper.rollover() for keeper in stored]
