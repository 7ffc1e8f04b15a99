from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trustme

from snakeway.acme.report import Row, describe, render
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import CertBundle

NOW = datetime(2026, 11, 28, tzinfo=UTC)
WITHIN = timedelta(days=30)


def bundle(days_left: float) -> CertBundle:
    leaf = trustme.CA().issue_cert("a.test", not_after=NOW + timedelta(days=days_left))
    chain = b"".join(b.bytes() for b in leaf.cert_chain_pems)
    return CertBundle.from_pem("a.test", ("a.test",), chain, leaf.private_key_pem.bytes())


def test_valid_certificate_shows_its_renewal_date() -> None:
    row = describe(("a.test",), bundle(60), RenewalState("a.test"), now=NOW, renew_within=WITHIN)
    assert row.state == "valid"
    assert row.next_check == f"{NOW + timedelta(days=30):%Y-%m-%d}" + row.next_check[10:]
    assert row.last_error == "-"


def test_failing_renewal_shows_the_error_and_the_next_attempt() -> None:
    state = RenewalState("a.test").failed(NOW, "rateLimited: too many orders", NOW + timedelta(hours=1))
    row = describe(("a.test",), bundle(10), state, now=NOW, renew_within=WITHIN)
    assert row.state == "renewal failing (1 failed attempt)"
    assert row.next_check == f"{NOW + timedelta(hours=1):%Y-%m-%d %H:%M}"
    assert row.last_error == "rateLimited: too many orders"


def test_missing_and_expired() -> None:
    assert describe(("a.test",), None, None, now=NOW, renew_within=WITHIN).state == "missing"
    assert describe(("a.test",), bundle(1), None, now=NOW + timedelta(days=2), renew_within=WITHIN).state == "expired"


def test_render_aligns_columns() -> None:
    text = render([Row("a.test, www.a.test", "Pebble", "2031-01-01 00:00", "valid", "2030-12-02 00:00", "-")])
    header, line = text.splitlines()
    assert header.index("ISSUER") == line.index("Pebble")
