"""The fake CA's orders, their validation, and the shape of one request: latency, faults, one at a time.

:class:`Order` and :class:`Authorization` are the server-side state of an order
(:class:`~snakeway.testing.FakeCA` hands them out inside an
:class:`~snakeway.acme.backend.OrderHandle`). :class:`RequestGate` is what every
request to the fake CA goes through before the CA acts on it, after the CA's
outage check (``unreachable``: "connection refused" at once), in this order:

1. with ``serial``, every request but ARI waits its turn: the real backend
   sends them one at a time through its single nonce-holding session;
2. the latency, ``delay`` seconds of trio time, bounded by the call's deadline
   when it has one;
3. a random fault: with probability ``fault_rate`` (drawn from a seeded
   ``random.Random``), HTTP 503 or 500 with no ``Retry-After``.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from snakeway.acme.backend import ChallengeTask, OrderHandle
from snakeway.config.model import Challenge
from snakeway.errors import IssuanceError
from snakeway.testing._fakefaults import ACME_ERROR

_FAULTS = ((503, "serverInternal"), (500, "serverInternal"))


@dataclass
class Authorization:
    domain: str
    status: str = "pending"  # pending -> valid | invalid
    tasks: dict[Challenge, ChallengeTask] = field(default_factory=dict)
    error: str | None = None
    problem: str | None = None  # the problem type of a failed validation


@dataclass
class Order:
    url: str
    account_uri: str
    domains: tuple[str, ...]
    authorizations: list[Authorization]
    replaces: str | None = None  # an accepted ARI CertID
    status: str = "pending"  # pending -> ready -> valid, or invalid
    error: str | None = None
    chain_pem: str | None = None

    def tasks(self, kind: Challenge, thumbprint: str, new_url: Callable[[], str]) -> list[ChallengeTask]:
        """The ``kind`` challenges still to answer, made on first asking (valid authorizations skipped).

        Raises:
            IssuanceError: An authorization is invalid.
        """
        tasks = []
        for authz in self.authorizations:
            if authz.status == "valid":
                continue
            if authz.status != "pending":
                raise IssuanceError(f"authorization for {authz.domain} is {authz.status}")
            task = authz.tasks.get(kind)
            if task is None:
                token = secrets.token_urlsafe(32)
                task = authz.tasks[kind] = ChallengeTask(
                    domain=authz.domain, kind=kind, token=token,
                    key_authorization=f"{token}.{thumbprint}", url=new_url(), body=self,
                )
            tasks.append(task)
        return tasks


def unwrap(order: OrderHandle) -> Order:
    if not isinstance(order.resource, Order):
        raise TypeError(f"expected an order from FakeCA, got {type(order.resource).__name__}")
    return order.resource


class RequestGate:
    """Turn, latency and random faults of one request (see the module docstring)."""

    def __init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.faults = 0  # random faults answered
        self._turn = trio.Lock()

    async def enter(self, delay: float, fault_rate: float, *, serial: bool, deadline: float | None, what: str) -> None:
        """One request up to the CA's decision (after the outage check, which is the CA's).

        Raises:
            IssuanceError: The deadline passed, or a random fault.
        """
        if serial:
            async with self._turn:
                await _work(delay, deadline, what)
        else:
            await _work(delay, deadline, what)
        if fault_rate and self.rng.random() < fault_rate:
            self.faults += 1
            status, problem = self.rng.choice(_FAULTS)
            raise IssuanceError(f"HTTP {status} from the fake CA (random fault)", status=status,
                                problem_type=ACME_ERROR + problem)


async def _work(delay: float, deadline: float | None, what: str) -> None:
    if deadline is None:
        await trio.sleep(delay)
    else:
        await work_until(deadline, delay, what)


async def work_until(deadline: float, delay: float, what: str) -> None:
    """Spend ``delay`` seconds of CA work, or raise at ``deadline`` if that comes first."""
    remaining = deadline - trio.current_time()
    if remaining <= 0:
        await trio.lowlevel.checkpoint()
        raise IssuanceError(f"timed out waiting for {what}")
    if delay > remaining:
        await trio.sleep(remaining)
        raise IssuanceError(f"timed out waiting for {what}")
    await trio.sleep(delay)


async def validate(
    authz: Authorization,
    answered: set[str],
    validator: Callable[[ChallengeTask], Awaitable[bool]] | None,
    deadline: float,
    *,
    never_valid: str | None,
) -> bool:
    """Validate a pending authorization's answered challenge; returns True when it failed.

    ``never_valid`` is the problem type of a name that never validates (None: check it with
    ``validator``, or accept it without one). A failure sets the authorization invalid with
    its error and problem type; an unanswered challenge leaves it pending.

    Raises:
        IssuanceError: ``validator`` did not answer by ``deadline``.
    """
    tasks = [task for task in authz.tasks.values() if task.url in answered]
    if not tasks:
        authz.status, authz.error = "pending", "no challenge was answered"
        return False
    task = tasks[0]
    ok, problem = True, ACME_ERROR + "unauthorized"
    error = f"{task.kind.value}: the validator rejected the answer ({problem})"
    if never_valid is not None:
        ok, problem = False, never_valid
        error = f"{task.kind.value}: the answer never validates for this name ({problem})"
    elif validator is not None:
        with trio.move_on_at(deadline) as scope:
            try:
                ok = await validator(task)
            except (OSError, trio.BrokenResourceError) as exc:
                ok, problem = False, ACME_ERROR + "connection"
                error = f"{task.kind.value}: {exc!r} ({problem})"
        if scope.cancelled_caught:
            raise IssuanceError("timed out waiting for authorizations")
    if ok:
        authz.status = "valid"
        return False
    authz.status, authz.error, authz.problem = "invalid", error, problem
    return True
