"""Reading and writing the files of one FileStore entry: checked reads, JSON, a key with the JSON that vouches for it.

Blocking; :class:`~snakeway.acme.filestore.FileStore` calls these from a worker thread. Anything unusable raises
:class:`CorruptEntry`, which the store logs and reports as a missing entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from snakeway.acme import crypto
from snakeway.errors import SnakewayError
from snakeway.files import write_atomic

if TYPE_CHECKING:
    from pathlib import Path

    from snakeway.acme.store import CertBundle

T = TypeVar("T")

KEY_MODE = 0o600
META_VERSION = 1

logger = logging.getLogger("snakeway.acme.filestore")


class CorruptEntry(SnakewayError):
    """An entry exists but is unusable; logged and treated as missing."""


def read_existing(path: Path) -> bytes:
    """Read a file of an entry that exists; a missing file means a corrupt entry."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CorruptEntry(f"{path.name} is missing") from exc


def parse_json(data: bytes, what: str) -> dict[str, object]:
    try:
        value = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CorruptEntry(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CorruptEntry(f"{what} is not a JSON object")
    return value


def dump_json(value: dict[str, object]) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def field(data: dict[str, object], key: str, kind: type[T], what: str) -> T:
    value = data.get(key)
    if not isinstance(value, kind):
        raise CorruptEntry(f"{what}: {key} should be a {kind.__name__}, got {value!r}")
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_keyed(json_path: Path, key_path: Path, meta: dict[str, object], key_pem: bytes) -> None:
    """Write a private key and the JSON that goes with it; the JSON last, as it vouches for the key."""
    crypto.load_private_key(key_pem)  # ValueError before touching the disk
    write_atomic(key_path, key_pem, KEY_MODE)
    write_atomic(json_path, dump_json({**meta, "key_sha256": sha256_hex(key_pem)}), KEY_MODE)


def load_keyed(json_path: Path, key_path: Path) -> tuple[dict[str, object], bytes]:
    """Read what :func:`save_keyed` wrote; a key that is not the one the JSON names is corrupt."""
    meta = parse_json(read_existing(json_path), json_path.name)
    key_pem = read_existing(key_path)
    if meta.get("key_sha256") != sha256_hex(key_pem):
        raise CorruptEntry(f"{key_path.name} does not belong to {json_path.name} (interrupted save?)")
    crypto.load_private_key(key_pem)
    return meta, key_pem


def remove_tree(path: Path) -> None:
    """Best-effort removal of garbage (an old or abandoned version): failure is only logged."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError:
        logger.warning("could not remove %s", path, exc_info=True)


def bundle_meta(bundle: CertBundle, saved_at: datetime) -> dict[str, object]:
    """What a store records beside a certificate, so that its index needs no PEM and a load can cross-check."""
    return {
        "version": META_VERSION,
        "name": bundle.name,
        "domains": list(bundle.domains),
        "not_before": bundle.not_before.isoformat(),
        "not_after": bundle.not_after.isoformat(),
        "issuer": bundle.issuer,
        "serial": bundle.serial,
        "saved_at": saved_at.isoformat(),
    }


def meta_fields(meta: dict[str, object], name: str, what: str) -> tuple[tuple[str, ...], datetime, datetime, str, str]:
    """``(domains, not_before, not_after, issuer, serial)`` of a :func:`bundle_meta` record that must be ``name``'s.

    Raises:
        CorruptEntry, ValueError: Another name or version, a missing or mistyped field, an unreadable date.
    """
    if meta.get("version") != META_VERSION or meta.get("name") != name:
        raise CorruptEntry(f"{what} is for {meta.get('name')!r}, version {meta.get('version')!r}")
    domains = field(meta, "domains", list, what)
    if not all(isinstance(d, str) for d in domains):
        raise CorruptEntry(f"{what}: domains should be strings")
    return (
        tuple(domains),
        datetime.fromisoformat(field(meta, "not_before", str, what)),
        datetime.fromisoformat(field(meta, "not_after", str, what)),
        field(meta, "issuer", str, what),
        field(meta, "serial", str, what),
    )
