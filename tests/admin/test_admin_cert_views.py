"""The JSON of one certificate in GET /admin/certs (pure), and how a certificate is named in a URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from snakeway.acme.ari import RenewalInfo
from snakeway.acme.schedule import RenewalState
from snakeway.acme.store import CertBundle
from snakeway.admin.certs import Issued, acme_view, file_view, find

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def bundle(serial: str = "0a1b") -> CertBundle:
    return CertBundle("a.test", ("a.test", "www.a.test"), b"", b"", NOW - 10 * DAY, NOW + 80 * DAY, "CN=CA", serial)


def test_an_acme_certificate_with_an_ari_window_and_failed_attempts() -> None:
    info = RenewalInfo(NOW + 20 * DAY, NOW + 22 * DAY)
    state = RenewalState("a.test").with_ari(info, "0a1b", NOW, 0.5).failed(NOW, "the CA said no", None, 0.5)
    view = acme_view("acme:a.test", ("a.test", "www.a.test"), bundle(), state, now=NOW, renew_within=None,
                     next_check=NOW + DAY)
    assert view["ari_window"] == {"start": "2026-06-21T00:00:00+00:00", "end": "2026-06-23T00:00:00+00:00"}
    assert NOW + 20 * DAY <= datetime.fromisoformat(view["renewal_at"]) <= NOW + 22 * DAY
    assert (view["serial"], view["issuer"], view["expires_in_seconds"]) == ("0a1b", "CN=CA", 80 * 86400)
    assert (view["failures"], view["last_error"]) == (1, "the CA said no")
    assert view["next_attempt"] == state.next_attempt.isoformat(timespec="seconds")  # type: ignore[union-attr]
    assert view["next_check"] == "2026-06-02T00:00:00+00:00"


def test_an_ari_answer_about_another_certificate_is_not_shown() -> None:
    state = RenewalState("a.test").with_ari(RenewalInfo(NOW + DAY, NOW + 2 * DAY), "ffff", NOW, 0.5)
    view = acme_view("acme:a.test", ("a.test",), bundle(), state, now=NOW, renew_within=None, next_check=None)
    assert view["ari_window"] is None


def test_a_missing_acme_certificate() -> None:
    view = acme_view("acme:a.test", ("a.test",), None, None, now=NOW, renew_within=None, next_check=None)
    assert (view["state"], view["serial"], view["not_after"], view["expires_in_seconds"]) == ("missing", None, None,
                                                                                               None)


def test_file_certificates_expired_and_unreadable() -> None:
    expired = Issued(("a.test",), NOW - 10 * DAY, NOW - DAY, "01", "CN=x")
    view = file_view("manual:/a.pem", "manual", ("a.test",), expired, NOW)
    assert (view["state"], view["expires_in_seconds"]) == ("expired", -86400)
    broken = file_view("manual:/b.pem", "manual", (), None, NOW, error="not PEM")
    assert (broken["state"], broken["last_error"]) == ("unreadable", "not PEM")


def test_a_certificate_is_named_by_its_id_or_an_acme_certificates_name() -> None:
    ids = ["acme:a.test", "manual:/etc/b.pem", "internal:localhost"]
    assert find(ids, "acme:a.test") == "acme:a.test"
    assert find(ids, "a.test") == "acme:a.test"
    assert find(ids, "internal:localhost") == "internal:localhost"
    assert find(ids, "localhost") is None
    assert find(ids, "b.test") is None
