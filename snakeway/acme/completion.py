"""An order's life after its challenges are answered: authorizations polled, CSR sent, chain downloaded.

Theory of operation: :class:`Completion` is the part of
:class:`~snakeway.acme.backend.ClientV2Backend` that takes an order from "challenges answered" to
"certificate in hand". It makes its requests through the backend (its worker thread, limiter and
call counts, and its signed POSTs), so it holds no session of its own.

* Only single-step requests are made, never the library's sleepers: waits happen in trio between
  polls (:data:`POLL_FIRST` doubling to :data:`POLL_MAX`, or the CA's ``Retry-After``), and none
  goes past the issuance's deadline, so every wait is cancellable and follows trio's clock.
* :meth:`~Completion.finalize` starts from the status the order holds: a ``valid`` order is only
  downloaded, a ``processing`` one only polled, so an interrupted issuance never issues twice. A CA
  that answers the CSR with ``orderNotReady`` (its authorizations not yet seen valid) is polled until
  the order is ``ready``, then sent the CSR again.
* ``preferred_chain`` makes the download fetch the alternate chains too (``Link: rel="alternate"``)
  and keep the one :func:`~snakeway.acme.chains.choose_served` picks; none matching keeps the default.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar, TypeVarTuple, final

import requests
import trio
from acme import messages
from cryptography import x509
from josepy.interfaces import JSONDeSerializable

from snakeway.acme import acmelib, chains
from snakeway.errors import IssuanceError

logger = logging.getLogger("snakeway.acme.backend")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

POLL_FIRST = 0.01  # doubling: a CA that validates at once is seen at once, a slow one costs a few polls more
POLL_MAX = 3.0

# A signed POST to a URL, or POST-as-GET with None (in the worker thread).
Post = Callable[[str, JSONDeSerializable | None], requests.Response]
# One authorization fetched again, with the response it came in (in the worker thread).
PollAuthorization = Callable[
    [messages.AuthorizationResource], tuple[messages.AuthorizationResource, requests.Response]
]


class Runner(Protocol):
    """Runs a blocking call in the backend's worker thread, counted as a call to ``endpoint``."""

    def __call__(self, endpoint: str, fn: Callable[[*Ts], T], *args: *Ts) -> Awaitable[T]: ...


@final
class Completion:
    """Polls an order's authorizations, finalizes it and downloads its chain, through a backend.

    Args:
        run: The backend's way into its worker thread.
        post: The backend's signed POST.
        directory_url: The CA's directory (named in the log).
        preferred_chain: The issuer common name of the chain to keep; None: the CA's default.
    """

    def __init__(self, run: Runner, post: Post, *, directory_url: str, preferred_chain: str | None) -> None:
        self._run = run
        self._post = post
        self._directory_url = directory_url
        self._preferred_chain = preferred_chain

    async def wait_authorizations(
        self, poll: PollAuthorization, authorizations: Sequence[messages.AuthorizationResource], deadline: float
    ) -> None:
        """Poll ``authorizations`` with ``poll`` until all are valid (an invalid one or the deadline raises)."""
        pending = list(authorizations)
        delay = POLL_FIRST
        while True:
            still: list[messages.AuthorizationResource] = []
            hint: float | None = None
            for authzr in pending:
                fresh, response = await self._run("authorization", poll, authzr)
                status = fresh.body.status
                if status == messages.STATUS_VALID:
                    continue
                if status != messages.STATUS_PENDING:
                    raise IssuanceError(acmelib.authz_failure(fresh))
                still.append(fresh)
                hint = acmelib.retry_after_seconds(response) if hint is None else hint
            if not still:
                return
            pending = still
            await _nap(deadline, hint if hint is not None else delay, "authorizations")
            delay = min(delay * 2, POLL_MAX)

    async def finalize(self, order_url: str, body: messages.Order, csr_pem: bytes, deadline: float) -> str:
        """The chain of the order at ``order_url``, last seen as ``body``: the CSR sent if it is not yet."""
        request = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr_pem))
        finalize_url = body.finalize
        hint: float | None = None
        if body.status not in acmelib.FINALIZED:  # pending (as new_order saw it) or ready: send the CSR
            try:
                body, hint = await self._run("finalize", self._order_step, finalize_url, request)
            except IssuanceError as exc:
                if exc.problem_type != messages.ERROR_PREFIX + "orderNotReady":
                    raise
                body, hint = await self._run("order", self._order_step, order_url, None)
        delay = POLL_FIRST
        while True:
            if body.status == messages.STATUS_VALID and body.certificate is not None:
                return await self._run("certificate", self._download, body.certificate)
            if body.status == messages.STATUS_INVALID:
                error = body.error
                detail = f": {error}" if error is not None else ""
                problem = error.typ if error is not None else None
                raise IssuanceError(f"order {order_url} is invalid{detail}", problem_type=problem)
            await _nap(deadline, hint if hint is not None else delay, "the order")
            delay = min(delay * 2, POLL_MAX)
            body, hint = await self._run("order", self._order_step, order_url, None)
            if body.status == messages.STATUS_READY:  # we polled after orderNotReady
                body, hint = await self._run("finalize", self._order_step, finalize_url, request)

    def _download(self, url: str) -> str:
        """The chain at ``url`` or, with ``preferred_chain``, the alternate it picks (in the worker thread)."""
        response = self._post(url, None)
        if self._preferred_chain is None:
            return str(response.text)
        served = [str(response.text)]
        for link in chains.alternate_links([response.headers.get("Link", "")]):
            served.append(str(self._post(link, None).text))
        chosen = chains.choose_served(served, self._preferred_chain)
        if chosen is None:
            logger.warning("ACME CA %s: none of its %d chains is issued by %r; keeping its default chain",
                           self._directory_url, len(served), self._preferred_chain)
            return served[0]
        return served[chosen]

    def _order_step(self, url: str, obj: JSONDeSerializable | None) -> tuple[messages.Order, float | None]:
        """POST to an order URL (in the worker thread): the order and the Retry-After seconds."""
        response = self._post(url, obj)
        return messages.Order.from_json(response.json()), acmelib.retry_after_seconds(response)


async def _nap(deadline: float, delay: float, what: str) -> None:
    """Sleep ``delay`` (but not past ``deadline``); raise if the deadline has passed."""
    remaining = deadline - trio.current_time()
    if remaining <= 0:
        raise IssuanceError(f"timed out waiting for {what}")
    await trio.sleep(min(delay, remaining))
