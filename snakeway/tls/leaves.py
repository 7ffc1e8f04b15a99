"""The local CA's leaf certificates, stored so that every worker serves the same one.

Theory of operation
-------------------
With ``server.workers`` above 1, each worker runs its own :class:`~snakeway.tls.sources.InternalIssuer`. Were
each to issue its own leaf, a client would meet a different certificate and key on every connection, depending
on which worker the kernel handed it to: certificate pinning breaks, monitoring sees several certificates per
name, and a client's session tickets are tied to one key and one worker's view. So a leaf is issued once and
kept in the state directory, next to the root::

    <state_dir>/pki/leaves/<id>.pem    the certificate (the leaf alone: the root is not sent)
    <state_dir>/pki/leaves/<id>.key    its key, mode 0600
    <state_dir>/pki/leaves/<id>.lock   locked (``flock``) while a worker checks, issues and writes

``<id>`` is a digest of the leaf's canonical names. :func:`shared_leaf` takes the lock, loads the stored leaf
and keeps it if it is usable: the key matches, it names exactly these names, this root signed it, and it is
neither expired nor due for renewal. Otherwise it issues a new leaf and writes it (key first, both atomically)
before releasing the lock. The first worker to need a leaf therefore issues it, and the others, waiting on the
lock, load it.

Renewal is the same call. Every worker schedules it at the stored leaf's renewal time, so they all wake
together: the first finds the leaf due and issues the next one, the others find that one fresh and load it.
For at most the moment between those calls, two workers serve different (both valid) leaves.

Everything here is blocking file I/O and signing: from trio, run it with ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import fcntl
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from snakeway.files import ensure_dir, write_atomic
from snakeway.renewal import lifetime_renewal_time
from snakeway.tls.certinfo import CertificateError, load_chain, validate_pair
from snakeway.tls.internal_ca import canonical_names

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime
    from pathlib import Path

    from snakeway.tls.internal_ca import LocalCA

LEAVES_DIR = "leaves"


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate (PEM, the leaf alone) and its key; ``issued`` is False when it was loaded."""

    chain_pem: bytes
    key_pem: bytes
    issued: bool


def leaf_paths(ca: LocalCA, names: Iterable[str]) -> tuple[Path, Path, Path]:
    """Where the leaf for ``names`` lives: (certificate, key, lock file)."""
    digest = hashlib.sha256("\n".join(canonical_names(names)).encode("ascii")).hexdigest()[:32]
    directory = ca.root_path.parent / LEAVES_DIR
    return directory / f"{digest}.pem", directory / f"{digest}.key", directory / f"{digest}.lock"


def shared_leaf(ca: LocalCA, names: Iterable[str], *, now: datetime) -> Leaf:
    """The stored leaf for ``names`` if it is usable at ``now``, else a new one, issued and stored.

    Blocking: waits for the lock while another process holds it, then reads, signs and writes files.

    Raises:
        ValueError: No names, or an invalid one.
        CertificateError: The root has expired.
        OSError: The directory or files cannot be created or written.
    """
    names = canonical_names(names)
    cert_path, key_path, lock_path = leaf_paths(ca, names)
    ensure_dir(cert_path.parent)
    with open(lock_path, "ab") as lock:  # closing the file releases the lock, also on error
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = _load(ca, names, cert_path, key_path, now=now)
        if stored is not None:
            return stored
        chain, key = ca.issue(names, now=now)
        write_atomic(key_path, key, 0o600)
        write_atomic(cert_path, chain, 0o600)
        return Leaf(chain, key, issued=True)


def _load(ca: LocalCA, names: tuple[str, ...], cert_path: Path, key_path: Path, *, now: datetime) -> Leaf | None:
    """The stored leaf, or None if there is none or it is not to be served any more."""
    try:
        chain, key = cert_path.read_bytes(), key_path.read_bytes()
        info = validate_pair(chain, key, now=now, source=str(cert_path))  # parses; key matches; not expired
        leaf = load_chain(chain, str(cert_path))[0]
    except (OSError, ValueError, CertificateError):
        return None  # missing, torn by a crash between the two writes, or expired: issue anew
    if info.names != names or not ca.issued(leaf):
        return None
    if now >= lifetime_renewal_time(info.not_before, info.not_after):
        return None
    return Leaf(chain, key, issued=False)
