"""The one thread boundary to the blocking ``acme`` library.

Theory of operation: ``acme.client.ClientV2`` speaks ACME (RFC 8555) with
``requests`` and ``time.sleep``; :class:`ClientV2Backend` keeps it at arm's length.

* Every blocking call runs in ``trio.to_thread.run_sync`` under one
  ``CapacityLimiter(1)`` per backend (one account): ``ClientNetwork`` keeps a
  nonce set and is not thread-safe.
* Only single-step calls are used (``new_account``, ``new_order``, ``poll``,
  ``answer_challenge``, ``ClientNetwork.post``), never the library's sleepers
  (``poll_and_finalize``, ``poll_authorizations``, ``finalize_order`` with its
  naive ``datetime.now()`` deadline). Waits happen in trio between polls:
  cancellable (:mod:`snakeway.acme.completion`, the order after its challenges).
* ``badNonce`` is retried per request (:class:`~snakeway.acme.acmelib.Network`).
* acme, josepy and requests errors become :class:`~snakeway.errors.IssuanceError`
  in the worker thread, where the failed response (status, ``Retry-After``) is at hand.
* tls-alpn-01 (RFC 8737) is unknown to acme 5.x (an ``UnrecognizedChallenge``), so
  key authorizations are computed here for every type (RFC 8555 §8.1) and the
  answer is always the empty JSON object.
* Orders are opened and fetched here, not by ``ClientV2.new_order``: its payload has
  no ``replaces`` (RFC 9773 §5), sent only when the directory offers ``renewalInfo``.
  :meth:`~ClientV2Backend.resume_order` fetches an order by URL, and ``finalize``
  starts from the status it holds, so an interrupted issuance never issues twice.
* ``profile`` goes into every newOrder; :meth:`~ClientV2Backend.offered_profiles` tells the
  :class:`~snakeway.acme.issuing.Issuer` whether the CA offers it (from the directory the
  account uses, or one fetched without an account at start-up). ``preferred_chain`` picks
  among the CA's chains at the download.
* External Account Binding (RFC 8555 §7.3.4): a new account carries the binding made
  with ``eab`` (key id, base64url MAC key); a CA that requires one refuses without.
* ARI (RFC 9773) GETs, and the directory read before any account, are unauthenticated: they
  go through a session and a ``CapacityLimiter`` of their own
  (:mod:`snakeway.acme.unsigned`), never behind an order holding the nonce set.

Only this module and its adapters in :mod:`snakeway.acme.acmelib`, :mod:`snakeway.acme.account`
(the account's own messages) and :mod:`snakeway.acme.completion` (the order after its challenges)
import ``acme`` and ``josepy``. The protocol and its records live in :mod:`snakeway.acme.protocol`
and are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar, TypeVarTuple, final

import requests
import trio
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from josepy import errors as jose_errors
from josepy.interfaces import JSONDeSerializable
from josepy.jwa import JWASignature
from josepy.jwk import JWK

from snakeway import __version__
from snakeway.acme import account, acmelib, crypto
from snakeway.acme.ari import RenewalInfo
from snakeway.acme.completion import Completion
from snakeway.acme.protocol import AccountInfo as AccountInfo
from snakeway.acme.protocol import AcmeBackend as AcmeBackend
from snakeway.acme.protocol import ChallengeTask, OrderHandle
from snakeway.acme.unsigned import UnsignedReads
from snakeway.config.model import Challenge, KeyType
from snakeway.errors import IssuanceError

__all__ = ["AccountInfo", "AcmeBackend", "ChallengeTask", "ClientV2Backend", "OrderHandle"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

USER_AGENT = f"snakeway/{__version__}"
NETWORK_TIMEOUT = 30  # seconds per HTTP request; a cancelled call waits for at most this


@final
class ClientV2Backend:
    """:class:`AcmeBackend` over ``acme.client.ClientV2`` (one account).

    Args:
        directory_url: The CA's ACME directory.
        ca_file: PEM trust root for the CA's API; ``None`` uses the system store.
        user_agent: Sent with every request.
        timeout: Seconds per HTTP request.
        counts: Calls to the CA by endpoint and outcome (``ok``, ``http_<status>`` or ``error``), incremented
            here: ``counts[endpoint][outcome]``; the admin API's figures.
        profile: The ACME profile every order asks for (``acme.profile``); None: the CA's default.
        preferred_chain: The issuer common name of the chain to keep (``acme.preferred_chain``).
        eab: External Account Binding for a new account: the key id and the base64url MAC key.

    Resource handling:
        Call :meth:`aclose` to close the HTTP sessions.

    .. warning::
       A cancelled call returns only when the HTTP request in its thread ends
       (at most ``timeout`` seconds): abandoning the thread would let the next
       call share the non-thread-safe nonce set.
    """

    def __init__(
        self,
        directory_url: str,
        *,
        ca_file: Path | None = None,
        user_agent: str = USER_AGENT,
        timeout: int = NETWORK_TIMEOUT,
        counts: dict[str, dict[str, int]] | None = None,
        profile: str | None = None,
        preferred_chain: str | None = None,
        eab: tuple[str, str] | None = None,
    ) -> None:
        self._profile = profile
        self._eab = eab
        self.counts: dict[str, dict[str, int]] = counts if counts is not None else {}
        self._directory_url = directory_url
        self._verify: str | bool = str(ca_file) if ca_file is not None else True
        self._user_agent = user_agent
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(1)
        self._client: acme_client.ClientV2 | None = None
        self._net: acmelib.Network | None = None
        self._jwk: JWK | None = None
        self._last_response: requests.Response | None = None  # of the call in progress
        self._unsigned = UnsignedReads(directory_url, user_agent=user_agent, verify=self._verify, timeout=timeout,
                                       count=self._count)
        self._completion = Completion(self._run, self._post, directory_url=directory_url,
                                      preferred_chain=preferred_chain)

    async def _run(self, endpoint: str, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """``fn(*args)`` in the worker thread, counted as a call to ``endpoint``."""
        try:
            result = await trio.to_thread.run_sync(partial(self._call, fn, *args), limiter=self._limiter)
        except IssuanceError as exc:
            self._count(endpoint, f"http_{exc.status}" if exc.status is not None else "error")
            raise
        self._count(endpoint, "ok")
        return result

    def _count(self, endpoint: str, outcome: str) -> None:
        outcomes = self.counts.setdefault(endpoint, {})
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def _call(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run ``fn`` (in the worker thread) and translate library errors."""
        self._last_response = None
        try:
            return fn(*args)
        except (acme_errors.Error, jose_errors.Error, requests.RequestException) as exc:
            raise acmelib.translate(exc, self._last_response) from exc
        finally:
            self._last_response = None

    def _remember(self, response: requests.Response, *_args: object, **_kwargs: object) -> None:
        """requests response hook: the response an error in :meth:`_call` is about."""
        self._last_response = response

    def _require(self) -> tuple[acme_client.ClientV2, acmelib.Network]:
        if self._client is None or self._net is None:
            raise RuntimeError("call ensure_account() first")
        return self._client, self._net

    def _post(self, url: str, obj: JSONDeSerializable | None) -> requests.Response:
        """A signed POST, or POST-as-GET when ``obj`` is None (in the worker thread)."""
        client, net = self._require()
        return net.post(url, obj, new_nonce_url=client.directory["newNonce"])

    async def ensure_account(self, account_key_pem: bytes | None, contact: tuple[str, ...]) -> AccountInfo:
        """Register the account for ``account_key_pem`` (new key if None), or find it.

        Agrees to the CA's terms of service; an existing account keeps its contacts.

        Raises:
            ValueError: ``account_key_pem`` is not an RSA or P-256/384/521 key.
            IssuanceError: The CA could not be reached or refused.
        """
        if account_key_pem is None:
            account_key_pem = await trio.to_thread.run_sync(crypto.generate_key, KeyType.ECDSA_P256)
        jwk, alg = acmelib.jwk_for(account_key_pem)
        uri = await self._run("newAccount", self._register, jwk, alg, contact, self._eab)
        return AccountInfo(key_pem=account_key_pem, uri=uri)

    def _register(
        self, jwk: JWK, alg: JWASignature, contact: tuple[str, ...], eab: tuple[str, str] | None = None
    ) -> str:
        net = acmelib.Network(
            key=jwk,
            alg=alg,
            verify_ssl=self._verify,  # type: ignore[arg-type]  # requests' verify= takes a CA path too
            user_agent=self._user_agent,
            timeout=self._timeout,
        )
        net.session.hooks["response"].append(self._remember)
        try:
            directory = acme_client.ClientV2.get_directory(self._directory_url, net)
            client = acme_client.ClientV2(directory, net)
            try:
                regr = client.new_account(account.registration(client, jwk, contact, eab))
            except acme_errors.ConflictError as exists:  # 200 + Location: the key has an account
                regr = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
                net.account = regr
        except BaseException:
            net.session.close()
            raise
        if self._net is not None:
            self._net.session.close()
        self._client, self._net, self._jwk = client, net, jwk
        return str(regr.uri)

    async def change_key(self, new_key_pem: bytes) -> None:
        """Roll the account key over to ``new_key_pem`` (RFC 8555 §7.3.5); later requests are signed with it.

        Raises:
            IssuanceError: The CA refused (the old key stays in use).
        """
        jwk, alg = acmelib.jwk_for(new_key_pem)
        await self._run("keyChange", self._change_key, jwk, alg)

    def _change_key(self, jwk: JWK, alg: JWASignature) -> None:
        client, net = self._require()
        assert self._jwk is not None and net.account is not None
        url = str(client.directory["keyChange"])
        self._post(url, account.key_change(client, str(net.account.uri), self._jwk, jwk, alg))
        net.key, net.alg, self._jwk = jwk, alg, jwk

    async def update_contact(self, contact: tuple[str, ...]) -> None:
        """Set the account's contacts (RFC 8555 §7.3.2)."""
        _, net = self._require()
        assert net.account is not None
        await self._run("account", self._post, str(net.account.uri), account.ContactUpdate(contact=contact))

    async def revoke(self, cert_pem: bytes, reason: int) -> None:
        """Revoke the leaf of ``cert_pem`` with the account key (RFC 8555 §7.6), for CRLReason ``reason``.

        Raises:
            IssuanceError: The CA refused (``alreadyRevoked`` for a certificate revoked before).
        """
        client, _ = self._require()
        body = account.revocation(cert_pem, reason)
        await self._run("revokeCert", self._post, str(client.directory["revokeCert"]), body)

    async def new_order(self, domains: Sequence[str], csr_pem: bytes, *, replaces: str | None = None) -> OrderHandle:
        """Open an order for the names in ``csr_pem``, which must be ``domains``.

        Args:
            replaces: The ARI CertID of the certificate this order renews
                (:func:`~snakeway.acme.crypto.ari_cert_id`); sent only when the
                directory offers ``renewalInfo``.

        Raises:
            IssuanceError: The CA refused; a CA that holds the certificate already
                replaced answers ``problem_type`` ``urn:ietf:params:acme:error:alreadyReplaced``
                (order again without ``replaces``).
        """
        names = crypto.csr_names(csr_pem)
        if set(names) != set(domains):
            raise ValueError(f"CSR names {names} differ from {tuple(domains)}")
        client, _ = self._require()
        if acmelib.directory_url(client, "renewalInfo") is None:
            replaces = None
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in names]
        payload = acmelib.NewOrder(identifiers=identifiers, replaces=replaces, profile=self._profile)
        orderr = await self._run("newOrder", self._open_order, client.directory["newOrder"], payload)
        return OrderHandle(url=str(orderr.uri), domains=tuple(domains), resource=orderr)

    async def resume_order(self, order_url: str) -> OrderHandle:
        """Fetch an existing order (POST-as-GET), e.g. one interrupted after finalize.

        The handle serves :meth:`challenges`, :meth:`wait_authorizations` and
        :meth:`finalize` like one from :meth:`new_order`: ``finalize`` of a
        ``valid`` order downloads its chain without finalizing again.

        Raises:
            IssuanceError: The CA does not know the order, or could not be reached.
        """
        self._require()
        orderr = await self._run("order", self._open_order, order_url, None)
        domains = tuple(str(identifier.value) for identifier in orderr.body.identifiers)
        return OrderHandle(url=order_url, domains=domains, resource=orderr)

    def _open_order(self, url: str, payload: acmelib.NewOrder | None) -> messages.OrderResource:
        """POST a new order (or POST-as-GET one) and fetch its pending authorizations (worker thread)."""
        response = self._post(url, payload)
        body = messages.Order.from_json(response.json())
        uri = response.headers.get("Location") if payload is not None else url
        if not uri:
            raise IssuanceError(f"the CA's new order has no Location (status {response.status_code})")
        authorizations = []
        if body.status in (messages.STATUS_PENDING, None):  # the only status with challenges left to answer
            for authz_url in body.authorizations:
                authz = messages.Authorization.from_json(self._post(authz_url, None).json())
                authorizations.append(messages.AuthorizationResource(body=authz, uri=authz_url))
        return messages.OrderResource(body=body, uri=uri, authorizations=authorizations)

    def challenges(self, order: OrderHandle, kind: Challenge) -> list[ChallengeTask]:
        """The ``kind`` challenges still to answer (already valid authorizations are skipped).

        Raises:
            IssuanceError: An authorization is not pending, or does not offer ``kind``.
        """
        if self._jwk is None:
            raise RuntimeError("call ensure_account() first")
        return acmelib.challenge_tasks(_order(order), kind, self._jwk)

    async def answer(self, task: ChallengeTask) -> None:
        """Tell the CA that ``task`` is ready to be validated (POST ``{}``)."""
        client, _ = self._require()
        response = acmelib.EmptyResponse(key_authorization=task.key_authorization)
        await self._run("challenge", client.answer_challenge, _challenge_body(task), response)

    async def wait_authorizations(self, order: OrderHandle, deadline: float) -> None:
        """Poll the order's authorizations until all are valid.

        Raises:
            IssuanceError: One became invalid (with the CA's reason), or the
                deadline passed.
        """
        client, _ = self._require()
        await self._completion.wait_authorizations(client.poll, _order(order).authorizations, deadline)

    async def finalize(self, order: OrderHandle, csr_pem: bytes, deadline: float) -> str:
        """Send the CSR, poll the order until valid, and download the chain.

        An order already ``valid`` (from :meth:`resume_order`) is only
        downloaded, and one ``processing`` only polled: the CSR goes out once.

        Returns:
            The full chain PEM (leaf first) as the CA serves it.

        Raises:
            IssuanceError: The order became invalid, or the deadline passed.
        """
        self._require()
        return await self._completion.finalize(order.url, _order(order).body, csr_pem, deadline)

    async def offered_profiles(self) -> dict[str, str] | None:
        """The profiles the CA's directory offers (``meta.profiles``), None when it lists none.

        Read from the account's directory once there is one; before, the directory is fetched
        without an account, through the ARI session and limiter (never behind an order).

        Raises:
            IssuanceError: The directory could not be fetched or read.
        """
        if self._client is not None:
            return acmelib.offered_profiles(self._client.directory)
        return await self._unsigned.offered_profiles()

    async def renewal_info(self, cert_pem: bytes) -> RenewalInfo | None:
        """The CA's renewal information for a certificate (ARI, RFC 9773), or None if it has no ARI.

        An unauthenticated GET through the ARI session and limiter: it never
        waits for an order in progress.

        Raises:
            IssuanceError: The request failed, or the answer is malformed (see
                :func:`~snakeway.acme.ari_wire.parse_renewal_info`); the
                certificate has no authority key identifier.
        """
        client, _ = self._require()
        base = acmelib.directory_url(client, "renewalInfo")
        return await self._unsigned.renewal_info(base, cert_pem) if base is not None else None

    async def aclose(self) -> None:
        """Close the HTTP sessions (waits for an order call in flight; an ARI GET in flight still completes)."""
        self._unsigned.close()
        async with self._limiter:
            if self._net is not None:
                self._net.session.close()
            self._client = self._net = None


def _order(order: OrderHandle) -> messages.OrderResource:
    return _unwrap(order.resource, messages.OrderResource)


def _challenge_body(task: ChallengeTask) -> messages.ChallengeBody:
    return _unwrap(task.body, messages.ChallengeBody)


def _unwrap(value: object, cls: type[T]) -> T:
    if not isinstance(value, cls):
        raise TypeError(f"expected {cls.__name__} from ClientV2Backend, got {type(value).__name__}")
    return value

