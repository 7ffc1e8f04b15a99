"""The small JSON records of a :class:`~snakeway.acme.filestore.FileStore` under its ``data_dir``.

Renewal state, ACME accounts, orders in flight and rate-limit ledgers, one file (or a JSON file and a key) each;
layout and write discipline in :mod:`snakeway.acme.filestore`. Every function here is blocking; the store calls
them from a worker thread, under its lock.

A corrupt entry (unparsable, mistyped, for another name) is usually logged as a warning and reported missing:
the manager then simply makes it again (a new order, a new account). Two records are different, because
"missing" would mean "no back-off" and "no rate-limit spending": that is how a damaged file would let a broken
site, or every worker at once, hammer the CA. So a corrupt renewal state loads as
:meth:`RenewalState.conservative` (the longest back-off) and a corrupt ledger as
:meth:`~snakeway.acme.budget.Ledger.conservative` (nothing admitted for an hour), each logged as an error. The
damaged file is kept beside as ``<file>.corrupt`` and the conservative record written in its place, so the hold
runs from the first time the damage was seen instead of starting again at every load.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from snakeway.acme.budget import CONSERVATIVE_HOLD, Ledger
from snakeway.acme.entries import (
    KEY_MODE,
    CorruptEntry,
    dump_json,
    field,
    load_keyed,
    parse_json,
    read_existing,
    save_keyed,
    sha256_hex,
)
from snakeway.acme.schedule import BACKOFF_CAP, RenewalState
from snakeway.acme.store import AccountRecord, OrderRecord, name_to_path_part
from snakeway.files import fsync_dir, write_atomic

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

T = TypeVar("T")

logger = logging.getLogger("snakeway.acme.filestore")

CORRUPT_SUFFIX = ".corrupt"


def loaded(what: str, path: Path, parse: Callable[[], T]) -> T | None:
    """``parse()``, with a corrupt entry logged as a warning and reported as None."""
    try:
        return parse()
    except (CorruptEntry, ValueError) as exc:
        logger.warning("ignoring unusable %s in %s: %s", what, path, exc)
        return None


def _load_entry(what: str, path: Path, parse: Callable[[], T]) -> T | None:
    """None if ``path`` is absent, else :func:`loaded`."""
    if not path.exists():
        return None
    return loaded(what, path, parse)


def _load_or_hold(
    what: str,
    path: Path,
    parse: Callable[[], T],
    hold: Callable[[str], T],
    encode: Callable[[T], bytes],
    consequence: str,
) -> T | None:
    """None if ``path`` is absent, ``parse()`` if it parses, else ``hold(reason)``, kept in the damaged file's place."""
    if not path.exists():
        return None
    try:
        return parse()
    except (CorruptEntry, ValueError) as exc:
        reason = str(exc)
    record = hold(reason)
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    logger.error("%s in %s is corrupt (%s), kept as %s: %s", what, path, reason, aside.name, consequence)
    try:
        write_atomic(aside, path.read_bytes(), KEY_MODE)
    except OSError as exc:
        logger.warning("could not keep the corrupt %s as %s: %s", what, aside, exc)
    try:  # replaced in one step: a crash leaves the damaged file (and the hold), never no file
        write_atomic(path, encode(record), KEY_MODE)
    except OSError as exc:  # the hold still applies to this load; the next one sees the damage again
        logger.warning("could not replace the corrupt %s in %s: %s", what, path, exc)
    return record


# --- renewal state ---------------------------------------------------------------------------------


def _state_path(data_dir: Path, name: str) -> Path:
    return data_dir / "state" / f"{name_to_path_part(name)}.json"


def read_state(data_dir: Path, name: str, now: datetime) -> RenewalState | None:
    """The renewal state of ``name``; None if absent, :meth:`RenewalState.conservative` if corrupt (see above)."""
    path = _state_path(data_dir, name)

    def parse() -> RenewalState:
        state = RenewalState.from_json(parse_json(read_existing(path), path.name))
        if state.name != name:
            raise CorruptEntry(f"state is for {state.name!r}")
        return state

    def hold(reason: str) -> RenewalState:
        return RenewalState.conservative(name, now, reason)

    def encode(state: RenewalState) -> bytes:
        return dump_json(state.to_json())

    consequence = f"renewal of {name!r} keeps the longest back-off and waits until {now + BACKOFF_CAP}"
    return _load_or_hold(f"renewal state of {name!r}", path, parse, hold, encode, consequence)


def write_state(data_dir: Path, state: RenewalState) -> None:
    write_atomic(_state_path(data_dir, state.name), dump_json(state.to_json()), KEY_MODE)


# --- rate-limit ledgers ----------------------------------------------------------------------------


def _ledger_path(data_dir: Path, directory_url: str) -> Path:
    return data_dir / "ledgers" / f"{sha256_hex(directory_url.encode())[:16]}.json"


def encode_ledger(directory_url: str, ledger: Ledger) -> bytes:
    # Compact, not indented: the standard library's fast encoder only runs without indentation.
    return json.dumps({"directory_url": directory_url, "ledger": ledger.to_json()}, separators=(",", ":")).encode()


def read_ledger(data_dir: Path, directory_url: str, now: datetime) -> Ledger | None:
    """The ledger of the account at ``directory_url``; None if absent, a conservative one if corrupt (see above)."""
    path = _ledger_path(data_dir, directory_url)

    def parse() -> Ledger:
        data = parse_json(read_existing(path), path.name)
        if data.get("directory_url") != directory_url:
            raise CorruptEntry(f"ledger is for {data.get('directory_url')!r}")
        return Ledger.from_json(field(data, "ledger", dict, path.name))

    def encode(ledger: Ledger) -> bytes:
        return encode_ledger(directory_url, ledger)

    consequence = f"no order is started before {now + CONSERVATIVE_HOLD}"
    return _load_or_hold(
        f"rate-limit ledger for {directory_url}", path, parse, lambda _: Ledger.conservative(now), encode, consequence
    )


def write_ledger(data_dir: Path, directory_url: str, ledger: Ledger) -> None:
    write_atomic(_ledger_path(data_dir, directory_url), encode_ledger(directory_url, ledger), KEY_MODE)


# --- accounts --------------------------------------------------------------------------------------


def _load_keyed_for(json_path: Path, key_path: Path, key: str, expected: str) -> tuple[dict[str, object], bytes]:
    """:func:`~snakeway.acme.entries.load_keyed`, and the JSON's ``key`` must be ``expected``."""
    meta, key_pem = load_keyed(json_path, key_path)
    if meta.get(key) != expected:
        raise CorruptEntry(f"{json_path.name} is for {meta.get(key)!r}")
    return meta, key_pem


def _account_paths(data_dir: Path, directory_url: str) -> tuple[Path, Path]:
    folder = data_dir / "accounts" / sha256_hex(directory_url.encode())[:16]
    return folder / "account.json", folder / "account.key"


def read_account(data_dir: Path, directory_url: str) -> AccountRecord | None:
    json_path, key_path = _account_paths(data_dir, directory_url)

    def parse() -> AccountRecord:
        meta, key_pem = _load_keyed_for(json_path, key_path, "directory_url", directory_url)
        uri = meta.get("uri")
        if uri is not None and not isinstance(uri, str):
            raise CorruptEntry(f"account.json: bad uri {uri!r}")
        contact = field(meta, "contact", list, "account.json")
        if not all(isinstance(c, str) for c in contact):
            raise CorruptEntry("account.json: contact should be strings")
        return AccountRecord(directory_url=directory_url, key_pem=key_pem, uri=uri, contact=tuple(contact))

    return _load_entry(f"ACME account for {directory_url}", json_path, parse)


def write_account(data_dir: Path, account: AccountRecord) -> None:
    json_path, key_path = _account_paths(data_dir, account.directory_url)
    meta: dict[str, object] = {
        "directory_url": account.directory_url,
        "uri": account.uri,
        "contact": list(account.contact),
    }
    save_keyed(json_path, key_path, meta, account.key_pem)


# --- orders in flight ------------------------------------------------------------------------------


def _order_paths(data_dir: Path, name: str) -> tuple[Path, Path]:
    base = data_dir / "orders" / name_to_path_part(name)
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".key")


def read_order(data_dir: Path, name: str) -> OrderRecord | None:
    json_path, key_path = _order_paths(data_dir, name)

    def parse() -> OrderRecord:
        meta, key_pem = _load_keyed_for(json_path, key_path, "name", name)
        created = datetime.fromisoformat(field(meta, "created", str, json_path.name))
        order_url = field(meta, "order_url", str, json_path.name)
        return OrderRecord(name=name, order_url=order_url, key_pem=key_pem, created=created)

    return _load_entry(f"order for {name!r}", json_path, parse)


def write_order(data_dir: Path, order: OrderRecord) -> None:
    json_path, key_path = _order_paths(data_dir, order.name)
    meta: dict[str, object] = {"name": order.name, "order_url": order.order_url, "created": order.created.isoformat()}
    save_keyed(json_path, key_path, meta, order.key_pem)


def remove_order(data_dir: Path, name: str) -> None:
    json_path, key_path = _order_paths(data_dir, name)
    for path in (json_path, key_path):  # the JSON first: without it the key is ignored
        path.unlink(missing_ok=True)
    if json_path.parent.exists():
        fsync_dir(json_path.parent)
