"""What a :class:`~snakeway.acme.redisstore.RedisStore` writes to Redis, and how it reads it back.

Pure functions, no I/O but reading the key file: the key names under the prefix (:class:`RedisKeys`), the
encryption of private keys (:class:`Sealer`), the JSON of a certificate's metadata, and the writes a save is made
of (:class:`Write`, applied in one transaction or by a fenced script). The layout is described
in :mod:`snakeway.acme.redisstore` and docs/cluster.md.

Sealed values
-------------
With an encryption key, a private key is stored as ``b"aesgcm1:" + nonce + ciphertext``: AES-256-GCM with a
random 96-bit nonce for every write and the Redis key it is stored under as associated data, so a sealed value
copied under another key (another certificate's, say) fails to open instead of serving the wrong key. Without an
encryption key a private key is stored as its PEM. Reading accepts both: a store that was filled before a key
file was configured keeps working, and is sealed as its entries are written again.

The key file holds the 32-byte key in base64 (``openssl rand -base64 32``); surrounding whitespace is ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, final
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from snakeway.acme.entries import CorruptEntry, bundle_meta, field, meta_fields, parse_json
from snakeway.acme.store import AccountRecord, CertBundle, OrderRecord, StoredMeta, StoreError

if TYPE_CHECKING:
    from pathlib import Path

    from snakeway.acme.schedule import RenewalState

ENCRYPTION_KEY_BYTES = 32
SEALED_MARKER = b"aesgcm1:"
NONCE_BYTES = 12


def read_key_file(path: Path) -> bytes:
    """The 32-byte encryption key in ``path`` (base64, whitespace around it ignored).

    Raises:
        OSError: The file cannot be read.
        ValueError: It does not hold base64 for exactly 32 bytes; the message says what it holds.
    """
    text = path.read_bytes().strip()
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"expected {ENCRYPTION_KEY_BYTES} bytes in base64 (make one with `openssl rand -base64 32`)"
        ) from None
    if len(key) != ENCRYPTION_KEY_BYTES:
        raise ValueError(
            f"expected {ENCRYPTION_KEY_BYTES} bytes in base64, got {len(key)} bytes "
            "(make one with `openssl rand -base64 32`)"
        )
    return key


@final
class Sealer:
    """Seals and opens private keys (see "Sealed values" above); without a key it stores them in clear.

    Args:
        key: The 32-byte AES-256-GCM key, or None to store private keys in clear.
        source: Where the key came from, for error messages (the key file's path).
    """

    def __init__(self, key: bytes | None, source: str = "") -> None:
        if key is not None and len(key) != ENCRYPTION_KEY_BYTES:
            raise ValueError(f"the encryption key must be {ENCRYPTION_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key) if key is not None else None
        self._source = source or "the encryption key"

    @property
    def encrypts(self) -> bool:
        return self._aead is not None

    def seal(self, pem: bytes, where: str) -> bytes:
        """``pem`` as stored under the Redis key ``where``."""
        if self._aead is None:
            return pem
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_MARKER + nonce + self._aead.encrypt(nonce, pem, where.encode())

    def open(self, value: bytes, where: str) -> bytes:
        """The PEM stored as ``value`` under ``where``.

        Raises:
            StoreError: The value is sealed and there is no key, or not with this key: a configuration problem,
                not a damaged entry, so it is not treated as missing (which would order every certificate again).
            CorruptEntry: A sealed value too short to hold a nonce.
        """
        if not value.startswith(SEALED_MARKER):
            return value
        if self._aead is None:
            raise StoreError(f"{where} is encrypted, but no encryption_key_file is configured")
        body = value[len(SEALED_MARKER) :]
        if len(body) <= NONCE_BYTES:
            raise CorruptEntry("the encrypted private key is truncated")
        try:
            return self._aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], where.encode())
        except InvalidTag:
            raise StoreError(
                f"cannot decrypt {where} with {self._source}: wrong encryption_key_file, or a value moved there "
                "from another key"
            ) from None


@dataclass(frozen=True)
class Write:
    """One write of a transaction on the Redis key ``key`` (plain, or fenced by :mod:`snakeway.acme.redislease`).

    ``op`` is ``set`` (a string; ``args`` is its value), ``hset`` (fields into a hash; ``args`` is field, value,
    field, value...), ``hreplace`` (the same after deleting the hash), ``del`` or ``incr`` (no ``args``).
    """

    op: Literal["set", "hset", "hreplace", "del", "incr"]
    key: str
    args: tuple[bytes | str, ...] = ()


@dataclass(frozen=True)
class RedisKeys:
    """The Redis keys of everything a store keeps, under ``prefix``."""

    prefix: str

    @property
    def certs(self) -> str:
        """Hash: certificate name -> its metadata JSON (the index)."""
        return f"{self.prefix}:certs"

    def cert(self, name: str) -> str:
        """Hash: ``chain`` (full chain PEM) and ``key`` (sealed private key)."""
        return f"{self.prefix}:cert:{name}"

    def state(self, name: str) -> str:
        return f"{self.prefix}:state:{name}"

    def account(self, directory_url: str) -> str:
        return f"{self.prefix}:account:{directory_url}"

    def order(self, name: str) -> str:
        return f"{self.prefix}:order:{name}"

    def ledger(self, directory_url: str) -> str:
        return f"{self.prefix}:ledger:{directory_url}"

    def lease(self, name: str) -> str:
        """String: the owner id of whoever holds the lease ``name``, expiring with it."""
        return f"{self.prefix}:lease:{name}"

    def token(self, name: str) -> str:
        """String: the last fencing token issued for the lease ``name`` (a counter that only grows)."""
        return f"{self.prefix}:token:{name}"

    @property
    def generation(self) -> str:
        """String: a counter incremented with every certificate saved, so other processes notice cheaply."""
        return f"{self.prefix}:generation"

    @property
    def saved(self) -> str:
        """Pub/sub channel: the name of every certificate saved, published after its save."""
        return f"{self.prefix}:saved"

    def challenge(self, key: str) -> str:
        """String: the key authorization of an ACME challenge, expiring on its own."""
        return f"{self.prefix}:challenge:{key}"


def corrupt_copy(key: str) -> str:
    """Where a damaged renewal state or ledger is kept when its conservative replacement is written."""
    return f"{key}:corrupt"


def encode_meta(bundle: CertBundle, saved_at: datetime) -> bytes:
    """The index entry of ``bundle``: compact JSON (the index of 10,000 certificates is parsed at start-up)."""
    return json.dumps(bundle_meta(bundle, saved_at), separators=(",", ":")).encode()


def parse_meta(name: str, data: bytes) -> tuple[StoredMeta, str]:
    """The :class:`StoredMeta` and issuer of an index entry.

    Raises:
        CorruptEntry, ValueError: Unparsable, for another name or version, or invalid fields.
    """
    domains, not_before, not_after, issuer, serial = meta_fields(parse_json(data, "metadata"), name, "metadata")
    return StoredMeta(name, domains, not_before, not_after, serial), issuer


def parse_bundle(name: str, meta_data: bytes | None, chain: bytes | None, key_pem: bytes | None) -> CertBundle:
    """The bundle of ``name`` from its index entry, chain and (opened) key, fully validated.

    Raises:
        CorruptEntry, ValueError: A part is missing, the PEM is unusable, or the metadata disagrees with it.
    """
    if meta_data is None or chain is None or key_pem is None:
        missing = [what for what, value in (("metadata", meta_data), ("chain", chain), ("key", key_pem)) if not value]
        raise CorruptEntry(f"{', '.join(missing)} missing")
    meta, issuer = parse_meta(name, meta_data)
    bundle = CertBundle.from_pem(name, meta.domains, chain, key_pem)
    if (meta.not_before, meta.not_after, issuer, meta.serial) != (
        bundle.not_before,
        bundle.not_after,
        bundle.issuer,
        bundle.serial,
    ):
        raise CorruptEntry("the metadata disagrees with the certificate")
    return bundle


def encode_state(state: RenewalState) -> bytes:
    return json.dumps(state.to_json(), separators=(",", ":")).encode()


def redacted(url: str) -> str:
    """``url`` without its password, for messages: ``redis://:secret@h:6379/0`` -> ``redis://h:6379/0``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# --- accounts and orders: their ``meta`` JSON beside a sealed key -----------------------------------------


def account_meta(account: AccountRecord) -> dict[str, object]:
    """The ``meta`` JSON of an account's hash."""
    return {"uri": account.uri, "contact": list(account.contact)}


def parse_account(directory_url: str, meta: dict[str, object], key_pem: bytes) -> AccountRecord:
    """The account whose hash holds ``meta`` and ``key_pem``; raises :class:`CorruptEntry` for a bad one."""
    uri, contact = meta.get("uri"), meta.get("contact")
    if (uri is not None and not isinstance(uri, str)) or not isinstance(contact, list) or not all(
        isinstance(c, str) for c in contact
    ):
        raise CorruptEntry("bad uri or contact")
    return AccountRecord(directory_url=directory_url, key_pem=key_pem, uri=uri, contact=tuple(contact))


def order_meta(order: OrderRecord) -> dict[str, object]:
    """The ``meta`` JSON of an order's hash."""
    return {"order_url": order.order_url, "created": order.created.isoformat()}


def parse_order(name: str, meta: dict[str, object], key_pem: bytes) -> OrderRecord:
    """The order in flight whose hash holds ``meta`` and ``key_pem``; raises CorruptEntry or ValueError."""
    created = datetime.fromisoformat(field(meta, "created", str, "order"))
    return OrderRecord(name, field(meta, "order_url", str, "order"), key_pem, created)

