"""What :mod:`snakeway.acme.manager` needs from an ACME CA, and the records it passes.

:class:`AcmeBackend` is implemented by :class:`snakeway.acme.backend.ClientV2Backend` (a real CA) and by
:class:`snakeway.testing.FakeCA` (the simulated one), method for method. Both re-export these names from
:mod:`snakeway.acme.backend`, where callers import them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, final

from snakeway.acme.ari import RenewalInfo
from snakeway.config.model import Challenge


@final
@dataclass(frozen=True)
class AccountInfo:
    """An ACME account: store both, so the next start finds the same account."""

    key_pem: bytes
    uri: str


@final
@dataclass(frozen=True)
class OrderHandle:
    """An open order. ``url`` identifies it (keep it to resume the order); the rest is the backend's business."""

    url: str
    domains: tuple[str, ...]
    resource: object = field(repr=False, compare=False)


@final
@dataclass(frozen=True)
class ChallengeTask:
    """One challenge to satisfy before :meth:`AcmeBackend.answer`.

    http-01: serve ``key_authorization`` at ``/.well-known/acme-challenge/<token>``
    for ``domain``. tls-alpn-01: serve, for SNI ``domain`` and ALPN
    ``acme-tls/1``, a certificate for ``domain`` whose acmeIdentifier extension
    holds ``sha256(key_authorization)`` (RFC 8737 §3).
    """

    domain: str
    kind: Challenge
    token: str
    key_authorization: str
    url: str
    body: object = field(repr=False, compare=False)


class AcmeBackend(Protocol):
    """What :mod:`snakeway.acme.manager` needs from an ACME CA (``FakeCA`` in tests).

    Deadlines are absolute ``trio.current_time()`` values. Every failure is an
    :class:`~snakeway.errors.IssuanceError`; ACME problem types are full URNs
    (``urn:ietf:params:acme:error:rateLimited``).

    * ``new_order(..., replaces=cert_id)``: the order renews the certificate with
      that ARI CertID (:func:`snakeway.acme.crypto.ari_cert_id`); sent only to a CA
      offering ARI. ``alreadyReplaced`` means: order again without it.
    * ``resume_order(url)``: the order at ``url``, e.g. one interrupted after
      finalize; ``finalize`` of a ``valid`` order only downloads its chain, of a
      ``processing`` one only polls.
    * ``change_key(pem)`` rolls the account key over (later calls sign with it), ``update_contact`` sets the
      account's contacts, ``revoke(cert_pem, reason)`` revokes with the account key (a CRLReason code).
    * ``renewal_info(cert_pem)``: the CA's ARI answer, None when it offers no ARI;
      a malformed answer is an ``IssuanceError``. Never waits behind an order.
    * ``offered_profiles()``: the directory's ``meta.profiles`` (name to description), None
      when it lists none; works before ``ensure_account``. Never waits behind an order.
    """

    async def ensure_account(self, account_key_pem: bytes | None, contact: tuple[str, ...]) -> AccountInfo: ...
    async def new_order(
        self, domains: Sequence[str], csr_pem: bytes, *, replaces: str | None = None
    ) -> OrderHandle: ...
    async def resume_order(self, order_url: str) -> OrderHandle: ...
    def challenges(self, order: OrderHandle, kind: Challenge) -> list[ChallengeTask]: ...
    async def answer(self, task: ChallengeTask) -> None: ...
    async def wait_authorizations(self, order: OrderHandle, deadline: float) -> None: ...
    async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str: ...
    async def renewal_info(self, cert_pem: bytes) -> RenewalInfo | None: ...
    async def offered_profiles(self) -> dict[str, str] | None: ...
    async def change_key(self, new_key_pem: bytes) -> None: ...
    async def update_contact(self, contact: tuple[str, ...]) -> None: ...
    async def revoke(self, cert_pem: bytes, reason: int) -> None: ...
    async def aclose(self) -> None: ...
