"""Certificates from files (``mode = "manual"``) and from the local CA (``mode = "internal"``).

Both build their contexts in worker threads, off the handshake path, and hand
ready :class:`~snakeway.tls.certmap.CertEntry` objects to the
:class:`~snakeway.tls.registry.CertRegistry`.

:func:`lazy_entry_from_files` and :func:`lazy_entry_from_pem` make entries
whose context is built on first use instead (see :mod:`snakeway.tls.certmap`):
the CertManager registers thousands of stored certificates that way at
start-up.

Internal certificates are short-lived (7 days): :class:`InternalIssuer` issues
those that are missing at start-up, before any listener opens, and then
re-issues each one when a third of its lifetime is left. It waits on the
injected wall clock, so tests run weeks of renewals on trio's MockClock.
Leaves are kept in the state directory and shared by all workers, so every
worker serves the same certificate (see :mod:`snakeway.tls.leaves`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar, TypeVarTuple

import trio

from snakeway import logs
from snakeway.clock import WallClock, sleep_until
from snakeway.config.model import Tls, TlsMode
from snakeway.listeners import cert_ids
from snakeway.renewal import lifetime_renewal_time
from snakeway.tls.certinfo import CertInfo, validate_pair
from snakeway.tls.certmap import CertEntry, LazyContext
from snakeway.tls.contexts import context_from_pem, server_context
from snakeway.tls.internal_ca import LocalCA
from snakeway.tls.leaves import shared_leaf
from snakeway.tls.registry import CertRegistry

logger = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Offload(Protocol):
    """Runs blocking ``fn(*args)`` away from the event loop and gives its result: ``trio.to_thread.run_sync``."""

    def __call__(self, fn: Callable[[*Ts], T], /, *args: *Ts) -> Awaitable[T]: ...


def _entry_from_pem(
    cert_pem: bytes, key_pem: bytes, *, now: datetime, source: str, key_source: str | None = None
) -> tuple[CertEntry, CertInfo]:
    info = validate_pair(cert_pem, key_pem, now=now, source=source, key_source=key_source)
    return CertEntry(info.names, context_from_pem(cert_pem, key_pem)), info


async def entry_from_pem(
    cert_pem: bytes,
    key_pem: bytes,
    *,
    now: datetime,
    source: str,
    key_source: str | None = None,
    offload: Offload | None = None,
) -> tuple[CertEntry, CertInfo]:
    """Validate a pair and build its context in a worker thread.

    Args:
      offload: runs the blocking work (default ``trio.to_thread.run_sync``);
        tests on MockClock pass :func:`snakeway.testing.inline`, since the
        clock would jump while a thread works.

    Raises:
      CertificateError: the pair cannot be served (see ``validate_pair``).
    """
    return await (offload or trio.to_thread.run_sync)(
        lambda: _entry_from_pem(cert_pem, key_pem, now=now, source=source, key_source=key_source)
    )


def lazy_entry_from_files(
    names: Iterable[str], cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str], *, source: str
) -> CertEntry:
    """An entry for ``names`` whose context is built on first use by ``load_cert_chain(cert_path, key_path)``.

    No file is read now. The first handshake that needs the certificate reads both files (in the SNI callback:
    two small local files) and OpenSSL checks that the key matches; a failure is logged once and the certificate
    refused from then on (see :class:`~snakeway.tls.certmap.LazyContext`). The files must stay in place until
    then: the certificate store's version directories do (see :mod:`snakeway.acme.filestore`).
    """
    build = partial(server_context, os.fspath(cert_path), os.fspath(key_path))
    return CertEntry(tuple(names), LazyContext(build, source=source))


def lazy_entry_from_pem(names: Iterable[str], cert_pem: bytes, key_pem: bytes, *, source: str) -> CertEntry:
    """Like :func:`lazy_entry_from_files`, for a chain and key held in memory (built through temporary files)."""
    return CertEntry(tuple(names), LazyContext(partial(context_from_pem, cert_pem, key_pem), source=source))


async def load_manual(tls_blocks: list[Tls], *, now: datetime) -> dict[str, CertEntry]:
    """Read, check and load every manual certificate named by ``tls_blocks``.

    Raises:
      CertificateError: a pair does not match, has expired or does not parse.
      OSError: a file cannot be read.
    """
    entries: dict[str, CertEntry] = {}
    for tls in tls_blocks:
        if tls.mode is not TlsMode.MANUAL:
            continue
        for files, cert_id in zip(tls.certs, cert_ids(tls), strict=True):
            cert_pem, key_pem = await trio.to_thread.run_sync(_read_pair, files.cert, files.key)
            entries[cert_id], _ = await entry_from_pem(
                cert_pem, key_pem, now=now, source=str(files.cert), key_source=str(files.key)
            )
    return entries


def _read_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    return cert.read_bytes(), key.read_bytes()


@dataclass(frozen=True)
class _Issued:
    domains: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: int = 0
    issuer: str = ""


def _renew_at(issued: _Issued) -> datetime:
    return lifetime_renewal_time(issued.not_before, issued.not_after)


@dataclass(frozen=True)
class InternalPlan:
    """What :meth:`InternalIssuer.prepare` obtained, applied by :meth:`InternalIssuer.commit`."""

    wanted: dict[str, tuple[str, ...]]
    ca: LocalCA | None
    entries: dict[str, CertEntry]
    issued: dict[str, _Issued]


class InternalIssuer:
    """Issues and renews the certificates of ``mode = "internal"`` blocks.

    A configuration is applied in two steps, so that a reload that fails elsewhere changes nothing:
    :meth:`prepare` issues (or loads, see :mod:`snakeway.tls.leaves`) the missing certificates without
    publishing them, and :meth:`commit` adopts them and hands their entries back for the registry.

    Args:
      registry: where renewed certificates are published.
      state_dir: holds the local CA (created on first use).
      clock: wall time, for validity and renewal.
    """

    def __init__(self, registry: CertRegistry, state_dir: Path, clock: WallClock) -> None:
        self._registry = registry
        self._state_dir = state_dir
        self._clock = clock
        self._ca: LocalCA | None = None
        self._wanted: dict[str, tuple[str, ...]] = {}
        self._issued: dict[str, _Issued] = {}
        self._changed = trio.Event()

    @property
    def ca(self) -> LocalCA | None:
        return self._ca

    async def prepare(self, tls_blocks: list[Tls]) -> InternalPlan:
        """Obtain the certificates ``tls_blocks`` want that are not issued yet; nothing is published.

        Raises:
          CertificateError, ValueError: the local CA cannot issue them.
          OSError: the CA or a leaf cannot be read or written.
        """
        wanted = {cert_ids(tls)[0]: tls.domains for tls in tls_blocks if tls.mode is TlsMode.INTERNAL}
        ca = self._ca
        if wanted and ca is None:
            ca = await trio.to_thread.run_sync(LocalCA.load_or_create, self._state_dir)
            logger.log(logs.said_once(logging.INFO), "local CA: %s (python -m snakeway trust)", ca.root_path)
        missing = {cert_id: domains for cert_id, domains in wanted.items() if cert_id not in self._issued}
        entries, issued = await self._obtain(ca, missing)
        return InternalPlan(wanted, ca, entries, issued)

    def commit(self, plan: InternalPlan) -> dict[str, CertEntry]:
        """Adopt ``plan`` and return its new entries, which the caller publishes. Cannot fail."""
        if self._ca is None:
            self._ca = plan.ca
        self._wanted = plan.wanted
        self._issued = {i: issued for i, issued in self._issued.items() if i in plan.wanted}
        self._issued.update(plan.issued)
        self._changed.set()
        return plan.entries

    async def configure(self, tls_blocks: list[Tls]) -> None:
        """Set the internal certificates wanted, issue the missing ones now and publish them."""
        self._registry.update(self.commit(await self.prepare(tls_blocks)))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew each certificate when a third of its lifetime is left. Runs until cancelled."""
        task_status.started()
        while True:
            self._changed = trio.Event()
            due_at = min((_renew_at(i) for i in self._issued.values()), default=None)
            async with trio.open_nursery() as nursery:

                async def wake_on_change() -> None:
                    await self._changed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wake_on_change)
                if due_at is not None:
                    await sleep_until(self._clock, due_at)
                    now = self._clock.now()
                    await self._issue(
                        [c for c, i in self._issued.items() if _renew_at(i) <= now]
                    )
                    nursery.cancel_scope.cancel()

    def issued(self) -> dict[str, tuple[tuple[str, ...], datetime, datetime, int, str]]:
        """Every internal certificate served now: cert id -> (names, not_before, not_after, serial, issuer)."""
        return {i: (v.domains, v.not_before, v.not_after, v.serial, v.issuer) for i, v in self._issued.items()}

    def not_after(self, cert_id: str) -> datetime | None:
        issued = self._issued.get(cert_id)
        return issued.not_after if issued else None

    async def _issue(self, ids: list[str]) -> None:
        """Renew ``ids`` and publish them (a renewal: the configuration stays)."""
        entries, issued = await self._obtain(self._ca, {cert_id: self._wanted[cert_id] for cert_id in ids})
        # A reload may have dropped some while they were renewed.
        entries = {i: entry for i, entry in entries.items() if i in self._wanted}
        self._issued.update({i: v for i, v in issued.items() if i in self._wanted})
        self._registry.update(entries)

    async def _obtain(
        self, ca: LocalCA | None, wanted: dict[str, tuple[str, ...]]
    ) -> tuple[dict[str, CertEntry], dict[str, _Issued]]:
        assert ca is not None or not wanted
        entries: dict[str, CertEntry] = {}
        issued: dict[str, _Issued] = {}
        for cert_id, domains in wanted.items():
            assert ca is not None
            now = self._clock.now()
            # Abandoned if cancelled (a shutdown): the thread may be waiting for another
            # process's lock, and what it writes under the lock is whole whenever it finishes.
            leaf = await trio.to_thread.run_sync(partial(shared_leaf, ca, domains, now=now), abandon_on_cancel=True)
            entries[cert_id], info = await entry_from_pem(
                leaf.chain_pem, leaf.key_pem, now=now, source=f"internal certificate {cert_id}"
            )
            issued[cert_id] = _Issued(domains, info.not_before, info.not_after, info.serial, info.issuer)
            logger.info(
                "internal certificate for %s %s, valid until %s", ", ".join(domains),
                "issued" if leaf.issued else "loaded", f"{info.not_after:%Y-%m-%d %H:%M} UTC",
            )
        return entries, issued
