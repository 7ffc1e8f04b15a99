"""The SNI callback over a CertMap, through real in-memory handshakes (trustme CA)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

from snakeway.tls import sources
from snakeway.tls.certmap import CertMap, CertMapHolder
from snakeway.tls.contexts import server_context
from snakeway.tls.sni import SniChoice, listener_context, make_sni_callback, recording_choice
from tests.tls.helpers import Site, client_context, handshake, make_site

if TYPE_CHECKING:
    from collections.abc import Callable

    import trustme


@pytest.fixture(scope="module")
def sites(ca: trustme.CA) -> dict[str, Site]:
    return {
        "a": make_site(ca, "a.test"),
        "b": make_site(ca, "b.test", "www.b.test"),
        "wild": make_site(ca, "*.w.test"),
        "idn": make_site(ca, "bücher.test"),
        "default": make_site(ca, "default.test"),
    }


def holder_for(sites: dict[str, Site], *, default: str | None = "default.test") -> CertMapHolder:
    entries = [(site.names, site.context) for site in sites.values()]
    return CertMapHolder(CertMap.build(entries, default=default))


@pytest.mark.parametrize(
    ("sni", "expected"),
    [
        ("a.test", "a"),
        ("b.test", "b"),
        ("www.b.test", "b"),
        ("x.w.test", "wild"),
        ("bücher.test", "idn"),  # sent as its A-label, xn--bcher-kva.test
        ("default.test", "default"),
    ],
)
async def test_serves_the_certificate_for_the_sni(
    ca: trustme.CA, sites: dict[str, Site], sni: str, expected: str
) -> None:
    outcome = await handshake(listener_context(holder_for(sites)), client_context(ca), sni)
    assert outcome.ok, outcome.client_error
    assert outcome.peer_serial == sites[expected].serial
    assert outcome.info is not None
    assert outcome.info.alpn == "http/1.1"


async def test_idna_sni_is_recorded_as_its_a_label(ca: trustme.CA, sites: dict[str, Site]) -> None:
    outcome = await handshake(listener_context(holder_for(sites)), client_context(ca), "Bücher.test")
    assert outcome.info is not None
    assert outcome.info.sni == "xn--bcher-kva.test"
    assert outcome.info.cert_names == ("xn--bcher-kva.test",)


@pytest.mark.parametrize("sni", [None, "unknown.test", "x.y.w.test", "w.test"])
async def test_default_certificate_without_sni_or_for_unknown_names(
    ca: trustme.CA, sites: dict[str, Site], sni: str | None
) -> None:
    client_ctx = client_context(ca, check_hostname=False)  # the default cert does not cover these names
    outcome = await handshake(listener_context(holder_for(sites)), client_ctx, sni)
    assert outcome.ok, outcome.client_error
    assert outcome.peer_serial == sites["default"].serial
    assert outcome.info is not None
    assert outcome.info.sni == sni
    assert outcome.info.cert_names == ("default.test",)


async def test_default_given_as_a_bare_context(ca: trustme.CA, sites: dict[str, Site]) -> None:
    extra = make_site(ca, "fallback.test")
    certs = CertMap.build([(sites["a"].names, sites["a"].context)], default=extra.context)
    outcome = await handshake(listener_context(CertMapHolder(certs)), client_context(ca, check_hostname=False), None)
    assert outcome.peer_serial == extra.serial
    assert outcome.info is not None
    assert outcome.info.cert_names is None  # unknown


@pytest.mark.parametrize("sni", [None, "unknown.test"])
async def test_unrecognized_name_alert_without_a_default(
    ca: trustme.CA, sites: dict[str, Site], sni: str | None
) -> None:
    base = listener_context(holder_for(sites, default=None))
    outcome = await handshake(base, client_context(ca, check_hostname=False), sni)
    assert outcome.server is None
    error = outcome.client_ssl_error
    assert error is not None, outcome.client_error
    assert error.reason == "TLSV1_UNRECOGNIZED_NAME"


async def test_empty_map_refuses_everything(ca: trustme.CA) -> None:
    outcome = await handshake(listener_context(CertMapHolder()), client_context(ca), "a.test")
    error = outcome.client_ssl_error
    assert error is not None
    assert error.reason == "TLSV1_UNRECOGNIZED_NAME"


async def test_broken_holder_aborts_with_internal_error(ca: trustme.CA) -> None:
    class Broken:
        @property
        def current(self) -> CertMap:
            raise RuntimeError("boom")

    outcome = await handshake(listener_context(Broken()), client_context(ca), "a.test")
    error = outcome.client_ssl_error
    assert error is not None
    assert error.reason == "TLSV1_ALERT_INTERNAL_ERROR"


async def test_base_context_that_is_the_default_is_left_alone(ca: trustme.CA, sites: dict[str, Site]) -> None:
    # A listener whose base context *is* the default certificate's context (plain trio.SSLListener style).
    base = make_site(ca, "default.test")
    holder = CertMapHolder(CertMap.build([(sites["a"].names, sites["a"].context)], default=base.context))
    base.context.sni_callback = make_sni_callback(holder)
    try:
        outcome = await handshake(base.context, client_context(ca, check_hostname=False), "nope.test")
        assert outcome.peer_serial == base.serial
        outcome = await handshake(base.context, client_context(ca), "a.test")
        assert outcome.peer_serial == sites["a"].serial
    finally:
        base.context.sni_callback = None


async def test_publish_changes_the_certificate_for_new_handshakes(ca: trustme.CA, sites: dict[str, Site]) -> None:
    holder = holder_for(sites)
    base = listener_context(holder)
    renewed = make_site(ca, "a.test")
    assert (await handshake(base, client_context(ca), "a.test")).peer_serial == sites["a"].serial
    holder.publish(holder.current.with_entries([(renewed.names, renewed.context)]))
    assert (await handshake(base, client_context(ca), "a.test")).peer_serial == renewed.serial
    assert (await handshake(base, client_context(ca), "b.test")).peer_serial == sites["b"].serial


class SwappingHolder:
    """A holder that publishes ``new`` right after the ``swap_at``-th handshake has read the map."""

    def __init__(self, holder: CertMapHolder, new: CertMap, swap_at: int, on_swap: Callable[[], None]) -> None:
        self.holder, self.new, self.swap_at, self.on_swap = holder, new, swap_at, on_swap
        self.reads = 0

    @property
    def current(self) -> CertMap:
        certs = self.holder.current
        self.reads += 1
        if self.reads == self.swap_at:
            self.holder.publish(self.new)
            self.on_swap()
        return certs


async def test_swap_during_a_burst_of_concurrent_handshakes(ca: trustme.CA) -> None:
    old, new = make_site(ca, "a.test"), make_site(ca, "a.test")
    serials: list[int | None] = []
    failures: list[BaseException | None] = []
    completed_at_swap: list[int] = []
    holder = CertMapHolder(CertMap.build([(old.names, old.context)]))
    swapping = SwappingHolder(
        holder,
        CertMap.build([(new.names, new.context)]),
        swap_at=100,
        on_swap=lambda: completed_at_swap.append(len(serials)),
    )
    base = listener_context(swapping)
    client_ctx = client_context(ca)

    async def one() -> None:
        outcome = await handshake(base, client_ctx, "a.test")
        if not outcome.ok:
            failures.append(outcome.client_error)
        serials.append(outcome.peer_serial)

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one)

    assert failures == []
    assert len(serials) == 200
    assert set(serials) == {old.serial, new.serial}
    assert serials.count(old.serial) == 100
    # The swap happened while handshakes that had read the old map were still in flight.
    assert len(completed_at_swap) == 1
    assert completed_at_swap[0] < 100


async def test_flip_flopping_publisher_never_breaks_a_handshake(ca: trustme.CA) -> None:
    old, new = make_site(ca, "a.test"), make_site(ca, "a.test")
    maps = [CertMap.build([(site.names, site.context)]) for site in (old, new)]
    holder = CertMapHolder(maps[0])
    base = listener_context(holder)
    client_ctx = client_context(ca)
    outcomes: list[bool] = []
    serials: set[int | None] = set()

    async def one() -> None:
        outcome = await handshake(base, client_ctx, "a.test")
        outcomes.append(outcome.ok)
        serials.add(outcome.peer_serial)

    async def flip() -> None:
        flips = 0
        while True:
            flips += 1
            holder.publish(maps[flips % 2])
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as outer:
        outer.start_soon(flip)
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one)
        outer.cancel_scope.cancel()

    assert outcomes == [True] * 200
    assert serials <= {old.serial, new.serial}


# --- totality --------------------------------------------------------------------------------------------------

NAMES = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet=st.sampled_from("aB.-*_\x00ü。xn"), max_size=40),
    st.text(min_size=250, max_size=5000),
    st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10}){0,3}\.?", fullmatch=True),
)


@pytest.fixture(scope="module")
def callback_setup(sites: dict[str, Site]) -> tuple[ssl.SSLContext, CertMapHolder]:
    return server_context(), holder_for(sites, default=None)


@given(name=NAMES)
def test_callback_is_total(callback_setup: tuple[ssl.SSLContext, CertMapHolder], name: str | None) -> None:
    base, holder = callback_setup
    callback = make_sni_callback(holder)
    ssl_obj = base.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    with recording_choice() as choice:
        result = callback(ssl_obj, name, base)
    assert result in (None, ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME)
    assert choice.called
    if result is None:
        assert ssl_obj.context is holder.current.lookup(name)
        assert choice.cert_names
    else:
        assert choice.alert == result
        assert ssl_obj.context is base


def test_callback_without_recording_still_works(sites: dict[str, Site]) -> None:
    base = server_context()
    callback = make_sni_callback(holder_for(sites))
    ssl_obj = base.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    assert callback(ssl_obj, "a.test", base) is None
    assert ssl_obj.context is sites["a"].context


def test_recording_choice_is_scoped() -> None:
    with recording_choice() as outer:
        with recording_choice() as inner:
            assert inner is not outer
        assert isinstance(outer, SniChoice)


# --- lazy entries: built on the first handshake, from files -------------------------------------------------


def write_pair(folder: Path, site: Site) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(site.chain_pem)
    (folder / "key.pem").write_bytes(site.key_pem)
    return folder / "cert.pem", folder / "key.pem"


async def test_lazy_entry_is_built_by_the_first_handshake_then_reused(
    ca: trustme.CA, sites: dict[str, Site], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    real = sources.server_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(str(args[0]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sources, "server_context", counting)
    site = make_site(ca, "lazy.test")
    cert, key = write_pair(tmp_path / "lazy", site)
    entry = sources.lazy_entry_from_files(site.names, cert, key, source="lazy.test")
    holder = CertMapHolder(CertMap.build([entry, (sites["a"].names, sites["a"].context)]))
    base = listener_context(holder)
    assert built == []
    for _ in range(3):
        outcome = await handshake(base, client_context(ca), "lazy.test")
        assert outcome.ok, outcome.client_error
        assert outcome.peer_serial == site.serial
        assert outcome.info is not None
        assert outcome.info.cert_names == ("lazy.test",)
    assert built == [str(cert)]
    # The files may go now: the context holds the certificate.
    cert.unlink()
    key.unlink()
    assert (await handshake(base, client_context(ca), "lazy.test")).ok


@pytest.mark.parametrize("damage", ["missing-key", "mismatched-key", "garbage-cert"])
async def test_lazy_entry_with_broken_files_is_refused_quietly_and_logged_once(
    ca: trustme.CA, sites: dict[str, Site], tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    site = make_site(ca, "broken.test")
    cert, key = write_pair(tmp_path / "broken", site)
    if damage == "missing-key":
        key.unlink()
    elif damage == "mismatched-key":
        key.write_bytes(sites["a"].key_pem)
    else:
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    entry = sources.lazy_entry_from_files(site.names, cert, key, source="for broken.test")
    base = listener_context(CertMapHolder(CertMap.build([entry, (sites["a"].names, sites["a"].context)])))
    with caplog.at_level(logging.DEBUG, logger="snakeway.tls"):
        for _ in range(3):
            outcome = await handshake(base, client_context(ca), "broken.test")
            assert outcome.server is None
            error = outcome.client_ssl_error
            assert error is not None, outcome.client_error
            assert error.reason == "TLSV1_ALERT_INTERNAL_ERROR"
        assert (await handshake(base, client_context(ca), "a.test")).ok  # the others are served
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "broken.test" in warnings[0]
    assert "SNI callback failed" not in caplog.text  # refused by design, not by an exception
    assert entry.lazy is not None
    assert entry.lazy.error is not None


async def test_lazy_entry_from_pem_uses_temporary_files(ca: trustme.CA) -> None:
    site = make_site(ca, "mem.test")
    entry = sources.lazy_entry_from_pem(site.names, site.chain_pem, site.key_pem, source="mem.test")
    base = listener_context(CertMapHolder(CertMap.build([entry])))
    assert entry.built is None
    outcome = await handshake(base, client_context(ca), "mem.test")
    assert outcome.ok, outcome.client_error
    assert outcome.peer_serial == site.serial
    assert entry.built is not None
