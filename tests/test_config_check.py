"""``check``'s warning about ``renew_within_days`` clamped to half a stored certificate's lifetime (snakeway.check)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st

from snakeway import cli
from snakeway.acme.filestore import FileStore
from snakeway.acme.store import CertBundle, MemoryStore, StoredMeta, StoreError
from snakeway.check import Clamped, clamp_message, clamped_renewal, lifetime_text, store_warnings
from snakeway.config.model import AcmeSettings, Bind, Config, Ingress, ServerSettings, Tls, TlsAutomation, TlsMode

START = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_160_hour_certificate_with_30_days_is_renewed_with_80_hours_left() -> None:
    clamped = clamped_renewal("a.test", START, START + timedelta(hours=160), 30)
    assert clamped == Clamped("a.test", timedelta(hours=160), START + timedelta(hours=80))
    assert clamp_message(clamped, 30) == (
        "warning: renew_within_days = 30 is more than half the lifetime of the stored certificate 'a.test' "
        "(160 hours); it will be renewed with half its lifetime left, at 2026-12-04 08:00 UTC"
    )


def test_a_90_day_certificate_with_30_days_is_not_clamped() -> None:
    assert clamped_renewal("a.test", START, START + timedelta(days=90), 30) is None


def test_exactly_half_is_not_clamped_and_a_little_more_is() -> None:
    assert clamped_renewal("a.test", START, START + timedelta(days=60), 30) is None
    clamped = clamped_renewal("a.test", START, START + timedelta(days=60), 30.5)
    assert clamped is not None
    assert clamped.renew_at == START + timedelta(days=30)
    assert lifetime_text(clamped.lifetime) == "60 days"


def test_the_lifetime_rule_is_never_clamped() -> None:
    assert clamped_renewal("a.test", START, START + timedelta(hours=1), None) is None


@given(
    lifetime=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=800)),
    days=st.floats(min_value=0.001, max_value=1000),
)
def test_clamped_exactly_when_more_than_half_and_then_renewed_at_half(lifetime: timedelta, days: float) -> None:
    clamped = clamped_renewal("a.test", START, START + lifetime, days)
    assert (clamped is not None) == (timedelta(days=days) > lifetime / 2)
    if clamped is not None:
        assert clamped.renew_at == START + lifetime - lifetime / 2
        # Later than what renew_within_days alone asks for: that is the point of the clamp.
        assert clamped.renew_at > START + lifetime - timedelta(days=days)


def _bundle(name: str, not_before: datetime, hours: float) -> CertBundle:
    leaf = trustme.CA().issue_cert(name, not_before=not_before, not_after=not_before + timedelta(hours=hours))
    chain = b"".join(b.bytes() for b in leaf.cert_chain_pems)
    return CertBundle.from_pem(name, (name,), chain, leaf.private_key_pem.bytes())


def _config(days: float | None, *names: str) -> Config:
    tls = Tls(mode=TlsMode.ACME, domains=names, certificate_per_domain=True)
    automation = TlsAutomation(renew_within_days=days, acme=AcmeSettings(directory_url="https://ca.test/dir"))
    return Config(
        server=ServerSettings(tls_automation=automation),
        ingresses=(Ingress("site", Bind("127.0.0.1", 443, tls=tls)),),
    )


def test_warnings_name_the_stored_unexpired_certificates_that_are_clamped() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store = MemoryStore()
    names = ("short.test", "long.test", "expired.test", "absent.test")

    async def run(days: float | None) -> list[str]:
        await store.save(_bundle("short.test", now - timedelta(hours=10), 160))
        await store.save(_bundle("long.test", now - timedelta(days=10), 90 * 24))
        # Expired: renewed at once whatever the settings, so nothing to warn about.
        await store.save(_bundle("expired.test", now - timedelta(hours=200), 160))
        return await store_warnings(_config(days, *names), now, store)

    short_at = now - timedelta(hours=10) + timedelta(hours=80)
    assert trio.run(run, 30) == [
        "warning: renew_within_days = 30 is more than half the lifetime of the stored certificate 'short.test' "
        f"(160 hours); it will be renewed with half its lifetime left, at {short_at:%Y-%m-%d %H:%M} UTC"
    ]
    assert [line.split("'")[1] for line in trio.run(run, 50)] == ["short.test", "long.test"]
    assert trio.run(run, 3) == []
    assert trio.run(run, None) == []


def test_check_says_valid_and_warns_when_the_store_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "snakeway.hcl"
    config.write_text(
        f'server {{\n  version = 1\n  state_dir = "{tmp_path / "state"}"\n'
        '  tls_automation = { renew_within_days = 30 }\n}\n'
        'ingress "site" {\n  bind = { port = 443, tls = { mode = "acme", domains = ["a.test"] },\n'
        "    redirect_http_to_https = { port = 80 } }\n}\n"
    )

    async def unreadable(self: FileStore, names: object = None) -> dict[str, StoredMeta]:
        raise StoreError("cannot index certificates in /state/certs: Input/output error")

    monkeypatch.setattr(FileStore, "index", unreadable)
    assert cli.main(["check", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{config}: configuration is valid\n"
    assert err == (
        f"{config}: warning: the certificate store was not read: "
        "cannot index certificates in /state/certs: Input/output error\n"
    )
