"""The CertStore contract, run against every implementation, plus FileStore's disk guarantees."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme

from snakeway.acme import filerecords, filestore
from snakeway.acme.budget import CONSERVATIVE_HOLD, Ledger, RateLimits, record_issued, spend_order, when_allowed
from snakeway.acme.filestore import FileStore
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.schedule import BACKOFF_CAP, RenewalState
from snakeway.acme.store import (
    AccountRecord,
    CertBundle,
    CertStore,
    MemoryStore,
    OrderRecord,
    StoredMeta,
    StoreError,
    check_name,
    name_to_path_part,
    open_store,
    path_part_to_name,
)
from snakeway.clock import SystemClock
from snakeway.config.model import CertStoreSettings, StoreType
from tests.redisserver import run_redis
from tests.tls.helpers import self_signed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
DIRECTORY = "https://acme.test/directory"
OTHER_DIRECTORY = "https://staging.acme.test/directory"


class FixedClock:
    def now(self) -> datetime:
        return NOW


class SteppedClock:
    """A wall clock a test moves by hand."""

    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def make_bundle(ca: trustme.CA, *domains: str, days: int = 90) -> CertBundle:
    start = NOW - timedelta(hours=1)
    leaf = ca.issue_cert(*domains, not_before=start, not_after=start + timedelta(days=days))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return CertBundle.from_pem(domains[0], tuple(domains), chain, leaf.private_key_pem.bytes())


def key_pem(ca: trustme.CA) -> bytes:
    return ca.issue_cert("key.test").private_key_pem.bytes()


@pytest.fixture(params=["memory", "file", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CertStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "file":
        yield FileStore(tmp_path / "certs", tmp_path / "acme", clock=FixedClock())
    else:
        async with run_redis(tmp_path) as server:
            yield RedisStore(server.url, encryption_key=bytes(range(32)), clock=FixedClock())


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "state" / "certs", tmp_path / "state" / "acme", clock=FixedClock())


# --- the contract ------------------------------------------------------------------------------


async def test_empty_store(store: CertStore) -> None:
    assert await store.load("a.test") is None
    assert await store.list() == []
    assert await store.load_state("a.test") is None
    assert await store.load_account(DIRECTORY) is None
    assert await store.load_order("a.test") is None
    assert await store.load_ledger(DIRECTORY) is None


async def test_save_load_round_trip(store: CertStore, ca: trustme.CA) -> None:
    bundle = make_bundle(ca, "a.test", "www.a.test")
    await store.save(bundle)
    assert await store.load("a.test") == bundle
    assert await store.list() == ["a.test"]


async def test_wildcard_name(store: CertStore, ca: trustme.CA) -> None:
    bundle = make_bundle(ca, "*.b.test", "b.test")
    await store.save(bundle)
    assert await store.load("*.b.test") == bundle
    assert await store.list() == ["*.b.test"]


async def test_list_is_sorted(store: CertStore, ca: trustme.CA) -> None:
    for name in ("c.test", "a.test", "b.test"):
        await store.save(make_bundle(ca, name))
    assert await store.list() == ["a.test", "b.test", "c.test"]


async def test_overwrite_replaces(store: CertStore, ca: trustme.CA) -> None:
    old, new = make_bundle(ca, "a.test"), make_bundle(ca, "a.test", days=30)
    await store.save(old)
    await store.save(new)
    assert await store.load("a.test") == new
    assert await store.list() == ["a.test"]


async def test_delete(store: CertStore, ca: trustme.CA) -> None:
    await store.save(make_bundle(ca, "a.test"))
    await store.save(make_bundle(ca, "b.test"))
    await store.delete("a.test")
    assert await store.load("a.test") is None
    assert await store.list() == ["b.test"]
    await store.delete("a.test")  # absent: no-op


async def test_save_fills_issuer_and_serial(store: CertStore, ca: trustme.CA) -> None:
    parsed = make_bundle(ca, "a.test")
    bare = CertBundle("a.test", ("a.test",), parsed.cert_pem, parsed.key_pem, parsed.not_before, parsed.not_after)
    await store.save(bare)
    assert await store.load("a.test") == parsed


async def test_refuses_unservable_bundles(store: CertStore, ca: trustme.CA) -> None:
    good = make_bundle(ca, "a.test")
    await store.save(good)
    other = make_bundle(ca, "a.test")
    mismatched = CertBundle("a.test", ("a.test",), good.cert_pem, other.key_pem, good.not_before, good.not_after)
    with pytest.raises(ValueError, match="does not match"):
        await store.save(mismatched)
    wrong_dates = CertBundle("a.test", ("a.test",), good.cert_pem, good.key_pem, NOW, NOW + timedelta(days=1))
    with pytest.raises(ValueError, match="dates"):
        await store.save(wrong_dates)
    assert await store.load("a.test") == good


@pytest.mark.parametrize("name", ["A.test", "../etc", "a/b", "a..test", ".a.test", "a.test.", "", "é.test", "a.*.test"])
async def test_rejects_invalid_names(store: CertStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid certificate name"):
        await store.load(name)
    with pytest.raises(ValueError, match="invalid certificate name"):
        await store.load_state(name)


async def test_state_round_trip(store: CertStore) -> None:
    state = RenewalState("a.test").failed(NOW, "rate limited", NOW + timedelta(hours=1), jitter=0.5)
    await store.save_state(state)
    assert await store.load_state("a.test") == state
    later = state.succeeded(NOW + timedelta(hours=2))
    await store.save_state(later)
    assert await store.load_state("a.test") == later
    assert await store.load_state("b.test") is None


async def test_account_per_directory(store: CertStore, ca: trustme.CA) -> None:
    first = AccountRecord(DIRECTORY, key_pem(ca), None, ("mailto:ops@a.test",))
    other = AccountRecord(OTHER_DIRECTORY, key_pem(ca), "https://staging.acme.test/acct/7")
    await store.save_account(first)
    await store.save_account(other)
    assert await store.load_account(DIRECTORY) == first
    assert await store.load_account(OTHER_DIRECTORY) == other
    registered = AccountRecord(DIRECTORY, first.key_pem, "https://acme.test/acct/1", first.contact)
    await store.save_account(registered)
    assert await store.load_account(DIRECTORY) == registered


def a_ledger() -> Ledger:
    ledger = spend_order(spend_order(Ledger(), NOW - timedelta(hours=1)), NOW)
    return record_issued(ledger, ["a.test", "www.a.test"], NOW, renewal=True)


async def test_ledger_per_directory(store: CertStore) -> None:
    first, other = a_ledger(), spend_order(Ledger(), NOW)
    await store.save_ledger(DIRECTORY, first)
    await store.save_ledger(OTHER_DIRECTORY, other)
    assert await store.load_ledger(DIRECTORY) == first
    assert await store.load_ledger(OTHER_DIRECTORY) == other
    spent = spend_order(first, NOW + timedelta(minutes=1))
    await store.save_ledger(DIRECTORY, spent)
    assert await store.load_ledger(DIRECTORY) == spent
    assert await store.load_ledger(OTHER_DIRECTORY) == other


async def test_order_save_load_delete(store: CertStore, ca: trustme.CA) -> None:
    order = OrderRecord("a.test", "https://acme.test/order/1", key_pem(ca), NOW)
    await store.save_order(order)
    assert await store.load_order("a.test") == order
    assert await store.load_order("b.test") is None
    await store.delete_order("a.test")
    assert await store.load_order("a.test") is None
    await store.delete_order("a.test")


async def test_refuses_unusable_keys(store: CertStore) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message
        await store.save_account(AccountRecord(DIRECTORY, b"not a key", None))
    with pytest.raises(ValueError):  # noqa: PT011
        await store.save_order(OrderRecord("a.test", "https://acme.test/order/1", b"not a key", NOW))
    assert await store.load_account(DIRECTORY) is None
    assert await store.load_order("a.test") is None


async def test_records_validate() -> None:
    with pytest.raises(ValueError, match="start with the name"):
        CertBundle("a.test", ("b.test",), b"", b"", NOW, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        OrderRecord("a.test", "https://acme.test/order/1", b"", datetime(2030, 1, 1))  # noqa: DTZ001


async def test_from_pem_checks_coverage(ca: trustme.CA) -> None:
    bundle = make_bundle(ca, "a.test")
    with pytest.raises(ValueError, match=re.escape("does not cover www.a.test")):
        CertBundle.from_pem("a.test", ("a.test", "www.a.test"), bundle.cert_pem, bundle.key_pem)
    with pytest.raises(ValueError, match=r"certificate 'a\.test'"):
        CertBundle.from_pem("a.test", ("a.test",), b"not a pem", bundle.key_pem)


async def test_from_pem_covers_by_subject_alt_name_only() -> None:
    """The store reads a certificate's names by the TLS rule: canonical subjectAltName entries, no common name."""
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=60)
    cn_only, cn_key = self_signed("a.test", not_before=start, not_after=end, san=False)
    with pytest.raises(ValueError, match=re.escape("certificate 'a.test' does not cover a.test")):
        CertBundle.from_pem("a.test", ("a.test",), cn_only, cn_key)
    upper, upper_key = self_signed("A.Test", "WWW.a.test", not_before=start, not_after=end)
    bundle = CertBundle.from_pem("a.test", ("a.test", "www.a.test"), upper, upper_key)
    assert (bundle.not_before, bundle.not_after) == (start, end)
    assert bundle.serial == format(12345, "x")


async def test_from_pem_keeps_an_expired_certificate() -> None:
    """An expired stored certificate is still read (it is then due for renewal), unlike one to be served."""
    cert, key = self_signed("a.test", not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=1))
    assert CertBundle.from_pem("a.test", ("a.test",), cert, key).not_after == NOW - timedelta(days=1)


def test_name_codec() -> None:
    assert name_to_path_part("*.a.test") == "_wildcard_.a.test"
    assert path_part_to_name("_wildcard_.a.test") == "*.a.test"
    assert path_part_to_name("xn--bcher-kva.test") == "xn--bcher-kva.test"
    with pytest.raises(ValueError, match="invalid"):
        path_part_to_name("_other_.a.test")
    with pytest.raises(ValueError, match="invalid"):
        check_name("a" * 64 + ".test")


# --- FileStore on disk -------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Prove the modes do not depend on a restrictive umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
async def test_private_files_and_dirs_are_private(files: FileStore, ca: trustme.CA) -> None:
    await files.save(make_bundle(ca, "a.test"))
    await files.save_state(RenewalState("a.test"))
    await files.save_account(AccountRecord(DIRECTORY, key_pem(ca), None))
    await files.save_order(OrderRecord("a.test", "https://acme.test/order/1", key_pem(ca), NOW))
    await files.save_ledger(DIRECTORY, a_ledger())
    assert len(list(files.data_dir.glob("ledgers/*.json"))) == 1
    keys = [files.cert_dir / "a.test" / "key.pem", *files.data_dir.glob("accounts/*/account.key")]
    keys.append(files.data_dir / "orders" / "a.test.key")
    assert len(keys) == 3
    for key in keys:
        assert mode(key) == 0o600, key
    for json_file in files.data_dir.rglob("*.json"):
        assert mode(json_file) == 0o600, json_file
    dirs = [files.cert_dir.parent, files.cert_dir, files.data_dir, (files.cert_dir / "a.test").resolve()]
    dirs += [p for p in files.data_dir.rglob("*") if p.is_dir()]
    for directory in dirs:
        assert mode(directory) == 0o700, directory
    assert mode(files.cert_dir / "a.test" / "cert.pem") == 0o644


async def test_layout_and_meta(files: FileStore, ca: trustme.CA) -> None:
    bundle = make_bundle(ca, "*.a.test", "a.test")
    await files.save(bundle)
    entry = files.cert_dir / "_wildcard_.a.test"
    assert entry.is_symlink()
    assert (entry / "cert.pem").read_bytes() == bundle.cert_pem
    assert (entry / "key.pem").read_bytes() == bundle.key_pem
    meta = (entry / "meta.json").read_text()
    for fragment in ('"saved_at": "2030-05-01T12:00:00+00:00"', f'"serial": "{bundle.serial}"', '"*.a.test"'):
        assert fragment in meta


async def test_persists_across_instances(files: FileStore, ca: trustme.CA) -> None:
    bundle = make_bundle(ca, "a.test")
    state = RenewalState("a.test").succeeded(NOW)
    account = AccountRecord(DIRECTORY, key_pem(ca), "https://acme.test/acct/1", ("mailto:a@a.test",))
    order = OrderRecord("a.test", "https://acme.test/order/1", key_pem(ca), NOW)
    await files.save(bundle)
    await files.save_state(state)
    await files.save_account(account)
    await files.save_order(order)
    await files.save_ledger(DIRECTORY, a_ledger())
    again = FileStore(files.cert_dir, files.data_dir)
    assert await again.list() == ["a.test"]
    assert await again.load("a.test") == bundle
    assert await again.load_state("a.test") == state
    assert await again.load_account(DIRECTORY) == account
    assert await again.load_order("a.test") == order
    assert await again.load_ledger(DIRECTORY) == a_ledger()


def _edit_meta(version: Path, key: str, value: object) -> None:
    meta = json.loads((version / "meta.json").read_text())
    meta[key] = value
    (version / "meta.json").write_text(json.dumps(meta))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d, other: _truncate(d / "cert.pem"), "a.test"),
        (lambda d, other: (d / "meta.json").write_bytes(b"{not json"), "not valid JSON"),
        (lambda d, other: (d / "meta.json").write_bytes(b"[]"), "not a JSON object"),
        (lambda d, other: (d / "key.pem").write_bytes(other.key_pem), "does not match"),
        (lambda d, other: (d / "key.pem").unlink(), "key.pem is missing"),
        (lambda d, other: (d / "cert.pem").write_bytes(other.cert_pem), "does not match"),
    ],
    ids=["truncated-cert", "garbage-meta", "meta-not-object", "mismatched-key", "missing-key", "swapped-cert"],
)
async def test_corrupt_entry_is_never_served(
    files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    await files.save(make_bundle(ca, "a.test"))
    await files.save(make_bundle(ca, "b.test"))
    assert callable(damage)
    damage((files.cert_dir / "a.test").resolve(), make_bundle(ca, "a.test"))
    with caplog.at_level(logging.WARNING, logger="snakeway.acme.filestore"):
        assert await files.load("a.test") is None
        assert await files.list() == ["b.test"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("a.test" in w and reason in w for w in warnings)


async def test_meta_disagreeing_with_cert_is_corrupt(
    files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    await files.save(make_bundle(ca, "a.test"))
    meta = files.cert_dir / "a.test" / "meta.json"
    meta.write_text(meta.read_text().replace('"serial": "', '"serial": "ff'))
    assert await files.load("a.test") is None
    assert "disagrees" in caplog.text


async def test_dangling_link_and_stray_entries(
    files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    await files.save(make_bundle(ca, "b.test"))
    os.symlink(".a.test@gone", files.cert_dir / "a.test")
    (files.cert_dir / "README").write_text("hello")
    assert await files.load("a.test") is None
    assert await files.list() == ["b.test"]
    assert "dangling" in caplog.text
    assert "README: not a certificate name" in caplog.text


async def test_crash_leftovers_are_ignored_and_collected(
    files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = make_bundle(ca, "a.test")
    await files.save(bundle)
    # A version directory abandoned mid-write, and one in the "<name>.tmp-xxxx" style.
    for leftover in (files.cert_dir / ".a.test@deadbeef", files.cert_dir / "a.test.tmp-1234"):
        leftover.mkdir()
        (leftover / "cert.pem").write_bytes(bundle.cert_pem[:40])
    (files.cert_dir / ".a.test@link-deadbeef").symlink_to(".a.test@deadbeef")
    assert await files.load("a.test") == bundle
    assert await files.list() == ["a.test"]
    await files.save(make_bundle(ca, "a.test"))
    hidden = sorted(p.name for p in files.cert_dir.iterdir() if p.name.startswith(".a.test@"))
    assert hidden == [os.readlink(files.cert_dir / "a.test")]


async def test_failed_save_keeps_previous_version(
    files: FileStore, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_bundle(ca, "a.test")
    await files.save(old)
    real_write_new = filestore.write_new

    def disk_full_at_meta(path: Path, data: bytes, file_mode: int) -> None:
        if path.name == "meta.json":
            raise OSError(28, "No space left on device")
        real_write_new(path, data, file_mode)

    monkeypatch.setattr(filestore, "write_new", disk_full_at_meta)
    with pytest.raises(StoreError, match="No space left"):
        await files.save(make_bundle(ca, "a.test", days=30))
    assert await files.load("a.test") == old
    assert [p.name for p in files.cert_dir.iterdir() if p.name.startswith(".")] == [
        os.readlink(files.cert_dir / "a.test")
    ]


async def test_plain_directory_entry_is_replaced(files: FileStore, ca: trustme.CA) -> None:
    files.cert_dir.mkdir(parents=True)
    (files.cert_dir / "a.test").mkdir()
    new = make_bundle(ca, "a.test")
    await files.save(new)
    assert await files.load("a.test") == new
    await files.delete("a.test")
    assert list(files.cert_dir.iterdir()) == []


async def test_interrupted_account_save_is_detected(
    files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    await files.save_account(AccountRecord(DIRECTORY, key_pem(ca), "https://acme.test/acct/1"))
    (key_file,) = files.data_dir.glob("accounts/*/account.key")
    key_file.write_bytes(key_pem(ca))  # the new key landed, its JSON did not
    assert await files.load_account(DIRECTORY) is None
    assert "interrupted save" in caplog.text


async def test_corrupt_order_is_missing(files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture) -> None:
    await files.save_order(OrderRecord("a.test", "https://acme.test/order/1", key_pem(ca), NOW))
    (files.data_dir / "orders" / "a.test.key").write_bytes(key_pem(ca))
    assert await files.load_order("a.test") is None
    assert "order for 'a.test'" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_text('{"name": "a.test", "failures": -1}'),
        lambda path: path.write_bytes(b"{not json"),
        lambda path: path.write_text('{"name": "b.test"}'),
        lambda path: path.write_text('{"name": "a.test", "next_attempt": "tomorrow"}'),
        lambda path: _truncate(path),
    ],
    ids=["bad-field", "not-json", "other-name", "bad-date", "truncated"],
)
async def test_corrupt_state_keeps_the_longest_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    """A damaged state file must not reset the back-off: it loads as the longest one, and says so."""
    clock = SteppedClock()
    files = FileStore(tmp_path / "certs", tmp_path / "acme", clock=clock)
    # A site in back-off, honouring the CA's Retry-After two days away.
    await files.save_state(RenewalState("a.test").failed(NOW, "rateLimited", NOW + timedelta(days=2)))
    path = files.data_dir / "state" / "a.test.json"
    assert callable(damage)
    damage(path)
    damaged = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="snakeway.acme.filestore"):
        state = await files.load_state("a.test")
    assert state is not None
    assert (state.name, state.failures, state.next_attempt) == ("a.test", 4, NOW + BACKOFF_CAP)
    assert state.last_error is not None
    assert "corrupt" in state.last_error
    assert not state.may_attempt(NOW + BACKOFF_CAP - timedelta(seconds=1))
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "renewal state of 'a.test'" in error.getMessage()
    assert "longest back-off" in error.getMessage()
    # The hold runs from when the damage was first seen, not from every load; the damaged file is kept.
    clock.at = NOW + timedelta(hours=1)
    assert await files.load_state("a.test") == state
    assert (path.parent / "a.test.json.corrupt").read_bytes() == damaged
    # The next save replaces it as usual.
    await files.save_state(state.succeeded(NOW + timedelta(hours=7)))
    assert await files.load_state("a.test") == state.succeeded(NOW + timedelta(hours=7))


def test_conservative_state_is_the_cap_of_the_back_off() -> None:
    state = RenewalState.conservative("a.test", NOW, "not valid JSON")
    assert state.next_attempt == NOW + BACKOFF_CAP
    # One more failure keeps the cap: the back-off cannot shrink from here.
    assert state.failed(NOW, "again").next_attempt == NOW + BACKOFF_CAP
    assert state.last_error is not None
    assert "not valid JSON" in state.last_error


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"directory_url": "https://other.test/directory", "ledger": {"version": 1}}',
        b'{"directory_url": "https://acme.test/directory", "ledger": {"version": 1, "orders": ["soon"]}}',
        b'{"directory_url": "https://acme.test/directory", "ledger": {"version": 99}}',
        b'{"directory_url": "https://acme.test/directory"}',
    ],
    ids=["not-json", "not-object", "other-directory", "bad-moment", "unknown-version", "no-ledger"],
)
async def test_corrupt_ledger_admits_nothing_for_an_hour(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    """A damaged ledger must not reset the budget (every worker would order at once): it holds everything an hour."""
    clock = SteppedClock()
    files = FileStore(tmp_path / "certs", tmp_path / "acme", clock=clock)
    await files.save_ledger(DIRECTORY, a_ledger())
    (path,) = files.data_dir.glob("ledgers/*.json")
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="snakeway.acme.filestore"):
        ledger = await files.load_ledger(DIRECTORY)
    assert ledger == Ledger.conservative(NOW)
    for names, renewal in ((["a.test"], True), (["new.test"], False)):
        assert when_allowed(ledger, RateLimits(), names, NOW, renewal=renewal) == NOW + CONSERVATIVE_HOLD
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"rate-limit ledger for {DIRECTORY}" in error.getMessage()
    assert "no order is started before" in error.getMessage()
    clock.at = NOW + timedelta(minutes=30)
    assert await files.load_ledger(DIRECTORY) == Ledger.conservative(NOW)  # not renewed at every load
    assert path.with_name(path.name + ".corrupt").read_bytes() == content
    assert await files.load_ledger(OTHER_DIRECTORY) is None


async def test_corrupt_record_that_cannot_be_replaced_still_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = FileStore(tmp_path / "certs", tmp_path / "acme", clock=FixedClock())
    await files.save_ledger(DIRECTORY, a_ledger())
    (path,) = files.data_dir.glob("ledgers/*.json")
    path.write_bytes(b"{not json")

    def disk_full(path: Path, data: bytes, file_mode: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(filerecords, "write_atomic", disk_full)
    assert await files.load_ledger(DIRECTORY) == Ledger.conservative(NOW)
    assert "could not replace the corrupt rate-limit ledger" in caplog.text
    assert path.read_bytes() == b"{not json"


async def test_unreadable_entry_raises_store_error(
    files: FileStore, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    await files.save(make_bundle(ca, "a.test"))
    real_read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if path.name == "key.pem":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 0 does not stop root
    with pytest.raises(StoreError, match=r"load certificate 'a\.test': .*Permission denied"):
        await files.load("a.test")


# --- open_store --------------------------------------------------------------------------------


def test_open_store_memory(tmp_path: Path) -> None:
    assert isinstance(open_store(CertStoreSettings(type=StoreType.MEMORY), None, tmp_path), MemoryStore)
    assert list(tmp_path.iterdir()) == []


def test_open_store_filesystem_defaults(tmp_path: Path) -> None:
    store = open_store(CertStoreSettings(), None, tmp_path)
    assert isinstance(store, FileStore)
    assert (store.cert_dir, store.data_dir) == (tmp_path / "certs", tmp_path / "acme")
    assert list(tmp_path.iterdir()) == []  # no I/O until first use


def test_open_store_filesystem_explicit(tmp_path: Path) -> None:
    store = open_store(CertStoreSettings(cert_dir=tmp_path / "c"), tmp_path / "d", tmp_path / "s")
    assert isinstance(store, FileStore)
    assert (store.cert_dir, store.data_dir) == (tmp_path / "c", tmp_path / "d")


def test_system_clock_is_default(tmp_path: Path) -> None:
    assert isinstance(FileStore(tmp_path, tmp_path)._clock, SystemClock)


# --- the index (CertIndex, both stores) ---------------------------------------------------------


async def test_index_lists_metadata_without_pem(store: CertStore, ca: trustme.CA) -> None:
    index = getattr(store, "index", None)
    assert index is not None
    assert await index() == {}
    bundles = [make_bundle(ca, "a.test", "www.a.test"), make_bundle(ca, "*.b.test", "b.test"), make_bundle(ca, "c.test")]
    for bundle in bundles:
        await store.save(bundle)
    found = await index()
    assert sorted(found) == ["*.b.test", "a.test", "c.test"]
    for bundle in bundles:
        meta = found[bundle.name]
        assert (meta.name, meta.domains, meta.not_before, meta.not_after, meta.serial) == (
            bundle.name, bundle.domains, bundle.not_before, bundle.not_after, bundle.serial,
        )
        assert StoredMeta.of(bundle) == replace(meta, cert_path=None, key_path=None)
    assert sorted(await index(["c.test", "absent.test", "*.b.test"])) == ["*.b.test", "c.test"]
    with pytest.raises(ValueError, match="invalid certificate name"):
        await index(["../etc"])


async def test_index_paths_are_the_current_version(files: FileStore, ca: trustme.CA) -> None:
    old, new = make_bundle(ca, "a.test"), make_bundle(ca, "a.test", days=30)
    await files.save(old)
    await files.save(new)
    meta = (await files.index())["a.test"]
    assert meta.serial == new.serial
    assert meta.cert_path is not None
    assert meta.key_path is not None
    cert_path, key_path = Path(meta.cert_path), Path(meta.key_path)
    assert cert_path.read_bytes() == new.cert_pem
    assert key_path.read_bytes() == new.key_pem
    # The resolved version directory, not the symlink: both files are of one version whatever a save does next.
    assert cert_path.parent == key_path.parent == (files.cert_dir / "a.test").resolve()
    assert cert_path.parent.name.startswith(".a.test@")


async def test_index_reads_plain_directory_entries(files: FileStore, ca: trustme.CA) -> None:
    await files.save(make_bundle(ca, "a.test"))
    version = (files.cert_dir / "a.test").resolve()
    (files.cert_dir / "a.test").unlink()
    version.rename(files.cert_dir / "a.test")  # placed by hand (or by a tool) as a plain directory
    meta = (await files.index())["a.test"]
    assert meta.cert_path == str(files.cert_dir / "a.test" / "cert.pem")
    assert await files.load("a.test") is not None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "meta.json").write_bytes(b"{not json"), "not valid JSON"),
        (lambda d: (d / "meta.json").write_bytes(b"[]"), "not a JSON object"),
        (lambda d: (d / "meta.json").unlink(), "meta.json is missing"),
        (lambda d: (d / "key.pem").unlink(), "key.pem is missing"),
        (lambda d: (d / "cert.pem").unlink(), "cert.pem is missing"),
        (lambda d: _edit_meta(d, "name", "b.test"), "meta.json is for 'b.test'"),
        (lambda d: _edit_meta(d, "domains", "a.test"), "domains should be a list"),
        (lambda d: _edit_meta(d, "domains", ["www.a.test"]), "must start with the name"),
        (lambda d: _edit_meta(d, "not_after", "2030-13-01"), "a.test"),
        (lambda d: _edit_meta(d, "not_after", "2030-08-01T00:00:00"), "timezone-aware"),
    ],
    ids=["garbage-meta", "meta-not-object", "missing-meta", "missing-key", "missing-cert", "other-name",
         "domains-not-list", "domains-without-name", "bad-date", "naive-date"],
)
async def test_index_skips_corrupt_entries_like_load(
    files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    await files.save(make_bundle(ca, "a.test"))
    await files.save(make_bundle(ca, "b.test"))
    assert callable(damage)
    damage((files.cert_dir / "a.test").resolve())
    with caplog.at_level(logging.WARNING, logger="snakeway.acme.filestore"):
        assert sorted(await files.index()) == ["b.test"]
        assert sorted(await files.index(["a.test", "b.test"])) == ["b.test"]
        assert await files.load("a.test") is None  # load agrees
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("a.test" in w and reason in w for w in warnings[:2]), warnings


async def test_index_skips_dangling_links_and_stray_entries(
    files: FileStore, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    await files.save(make_bundle(ca, "b.test"))
    os.symlink(".a.test@gone", files.cert_dir / "a.test")
    (files.cert_dir / "README").write_text("hello")
    assert sorted(await files.index()) == ["b.test"]
    assert "dangling" in caplog.text
    assert "README: not a certificate name" in caplog.text


async def test_index_trusts_the_metadata_for_what_only_pem_parsing_shows(files: FileStore, ca: trustme.CA) -> None:
    # A key that does not match its certificate is listed (no PEM is parsed); building the context refuses it
    # (tests/tls/test_sni.py) and load, which the manager's checks use, does not return it.
    await files.save(make_bundle(ca, "a.test"))
    ((files.cert_dir / "a.test").resolve() / "key.pem").write_bytes(key_pem(ca))
    assert sorted(await files.index()) == ["a.test"]
    assert await files.load("a.test") is None


async def test_index_of_an_empty_or_absent_directory(tmp_path: Path) -> None:
    assert await FileStore(tmp_path / "nowhere", tmp_path / "acme").index() == {}
