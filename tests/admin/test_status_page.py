"""The status page's pure parts: rendering (hostile values included), session cookies, and the routing of / and /login."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from snakeway.admin import errorlog, page, routes, session

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKENS = (b"a" * 32, b"b" * 40)
HOSTILE = '<script>alert("x")</script>&"\''


def cert(**overrides: object) -> dict[str, object]:
    start = NOW - timedelta(days=30)
    base: dict[str, object] = {
        "id": "acme:site.test", "kind": "acme", "names": ["site.test", "www.site.test"], "state": "valid",
        "not_before": start.isoformat(), "not_after": (start + timedelta(days=90)).isoformat(),
        "renewal_at": (start + timedelta(days=60)).isoformat(), "last_error": None, "next_attempt": None,
        "next_check": (NOW + timedelta(hours=1)).isoformat(),
    }
    return {**base, **overrides}


UPSTREAMS = {"app": [
    {"endpoint": "127.0.0.1:9001", "healthy": True, "down_for_seconds": None, "failures": 0, "in_flight": 2},
    {"endpoint": "127.0.0.1:9002", "healthy": False, "down_for_seconds": 41.5, "failures": 3, "in_flight": 0},
]}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return parser


def test_the_page_shows_each_certificate_with_its_lifetime_bar_and_the_upstreams() -> None:
    html = page.render([cert()], UPSTREAMS, workers=2, now=NOW)
    text = " ".join(parsed(html).text)
    assert "acme:site.test" in text and "site.test, www.site.test" in text and "valid" in text
    # Issued 30 days ago for 90 days: now is a third of the way, the renewal mark at two thirds.
    assert 'class="mark now" style="left:33.33%"' in html
    assert 'class="mark renew" style="left:66.67%"' in html
    assert (NOW + timedelta(hours=1)).isoformat() in text  # when it is looked at next
    assert "127.0.0.1:9001" in text and "healthy" in text
    assert "127.0.0.1:9002" in text and "down" in text and "41.5" in text
    # Recent errors: the endpoint cooling down.
    assert "upstream 127.0.0.1:9002 of app: 3 failed connection(s); cooling down for 41.5 s" in "".join(
        parsed(html[html.index("Recent errors"):]).text)
    assert "<script" not in html and "http://" not in html and "https://" not in html  # nothing external


def test_a_failing_certificate_shows_its_next_attempt_and_its_error() -> None:
    failing = cert(state="renewal failing (2 failed attempts)", last_error="urn:acme:error:rateLimited: slow down",
                   next_attempt=(NOW + timedelta(minutes=20)).isoformat())
    html = page.render([failing], {}, workers=1, now=NOW)
    text = " ".join(parsed(html).text)
    assert "renewal failing (2 failed attempts)" in text
    assert (NOW + timedelta(minutes=20)).isoformat() in text
    assert "certificate acme:site.test: urn" in "".join(parsed(html).text) and "urn:acme:error:rateLimited: slow down" in text
    assert '<span class="down">renewal failing' in html


def test_a_certificate_not_issued_yet_has_no_bar() -> None:
    html = page.render([cert(not_before=None, not_after=None, renewal_at=None, state="missing")], {}, workers=1,
                       now=NOW)
    assert "no certificate yet" in html and 'class="bar"' not in html


def test_hostile_values_are_text_never_markup() -> None:
    hostile = cert(id=HOSTILE, names=[HOSTILE], state=HOSTILE, last_error=HOSTILE, next_attempt=HOSTILE)
    services = {HOSTILE: [{"endpoint": HOSTILE, "healthy": False, "down_for_seconds": HOSTILE, "failures": HOSTILE,
                           "in_flight": HOSTILE}]}
    html = page.render([hostile], services, workers=1, now=NOW)
    tree = parsed(html)
    assert "script" not in tree.tags
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;&#x27;" in html
    assert sum(HOSTILE in chunk for chunk in tree.text) >= 8  # shown as text wherever it was


@given(st.text(max_size=40))
def test_any_value_is_escaped(value: str) -> None:
    html = page.render([cert(id=value, last_error=value)], {value: [dict(UPSTREAMS["app"][1], endpoint=value)]},
                       workers=1, now=NOW)
    tree = parsed(html)
    assert tree.tags.count("script") == 0
    assert tree.tags.count("tr") == 4  # two headers, one certificate, one endpoint: the value added none


def test_the_login_form_posts_a_token_and_shows_an_escaped_error() -> None:
    html = page.login_form(HOSTILE)
    assert '<form method="post" action="/login">' in html and 'name="token"' in html
    assert "script" not in parsed(html).tags


def test_a_session_is_valid_for_twelve_hours_with_the_same_tokens_only() -> None:
    value = session.new_session(TOKENS, 1_000_000.0)
    assert session.valid(value, TOKENS, 1_000_000.0)
    assert session.valid(value, tuple(reversed(TOKENS)), 1_000_000.0 + 12 * 3600 - 1)  # any worker, same file
    assert not session.valid(value, TOKENS, 1_000_000.0 + 12 * 3600)
    assert not session.valid(value, TOKENS[:1], 1_000_000.0)  # a token removed: every session revoked
    assert not session.valid(value, (), 1_000_000.0)
    assert session.new_session(TOKENS, 1_000_000.0) != value  # random


def test_a_forged_or_altered_session_is_refused() -> None:
    value = session.new_session(TOKENS, 1_000_000.0)
    expiry, nonce, mac = value.split(".")
    assert not session.valid(f"{int(expiry) + 3600}.{nonce}.{mac}", TOKENS, 1_000_000.0)
    assert not session.valid(f"{expiry}.{nonce}x.{mac}", TOKENS, 1_000_000.0)
    assert not session.valid(f"{expiry}.{nonce}.{mac[:-1]}0" if mac[-1] != "0" else f"{expiry}.{nonce}.{mac[:-1]}1",
                             TOKENS, 1_000_000.0)
    for junk in ("", ".", "..", "x.y.z", "9" * 40 + ".a.b", "é.é.é"):
        assert not session.valid(junk, TOKENS, 1_000_000.0)


@given(st.text(max_size=80))
def test_no_arbitrary_cookie_is_a_session(value: str) -> None:
    assert not session.valid(value, TOKENS, 0.0)


def test_the_cookie_is_http_only_secure_and_same_site_strict_and_found_among_others() -> None:
    header = session.set_cookie("v.a.l").decode()
    assert re.fullmatch(r"snakeway_admin_session=v\.a\.l; Path=/; Max-Age=43200; HttpOnly; Secure; SameSite=Strict",
                        header)
    assert session.from_cookie_header([b"a=1; snakeway_admin_session=x.y.z; b=2"]) == "x.y.z"
    assert session.from_cookie_header([b"a=1", b"snakeway_admin_session=q"]) == "q"
    assert session.from_cookie_header([b"a=1; xsnakeway_admin_session=q"]) is None


def test_slash_needs_a_token_or_a_session_and_refused_is_the_login_form() -> None:
    bearer = b"Bearer " + TOKENS[0]
    assert routes.decide(b"GET", b"/", None, TOKENS) == routes.LOGIN_REQUIRED
    assert routes.LOGIN_REQUIRED.login_form and routes.LOGIN_REQUIRED.status == 401
    assert routes.decide(b"GET", b"/admin/certs", None, TOKENS) == routes.UNAUTHORIZED  # JSON elsewhere
    assert routes.decide(b"GET", b"/", bearer, TOKENS) == routes.Call("status")
    assert routes.decide(b"GET", b"/?x=1", None, TOKENS, session=True) == routes.Call("status")
    assert routes.decide(b"GET", b"/admin/stats", None, TOKENS, session=True) == routes.Call("stats")
    assert routes.decide(b"POST", b"/login", None, TOKENS) == routes.Call("login")  # the form posts without one
    assert routes.decide(b"GET", b"/login", None, TOKENS) == routes.UNAUTHORIZED
    refused = routes.decide(b"POST", b"/", bearer, TOKENS)
    assert isinstance(refused, routes.Error) and refused.status == 405


def test_the_token_is_read_from_the_form_and_anything_garbled_is_no_token() -> None:
    assert session.form_token(b"token=abc%2B%2F%3D&x=1") == b"abc+/="
    assert session.form_token(b"token=+abc+") == b"abc"  # white space around it, as in the token file
    for garbled in (b"", b"token", b"x=1", b"&".join([b"a=1"] * 20) + b"&token=abc", b"token=\xff", b"token=%C3%A9"):
        assert session.form_token(garbled) == b""


def test_the_ring_keeps_the_last_warnings_and_errors_only() -> None:
    ring = errorlog.RecentErrors()
    log = logging.getLogger("snakeway.test_ring")
    log.addHandler(ring)
    log.propagate = False
    try:
        log.info("not kept")
        for i in range(errorlog.KEPT + 5):
            log.warning("warning %d", i)
        log.error("%s", "x" * 1000)
        log.error("bad %d format", "not a number")
    finally:
        log.removeHandler(ring)
        log.propagate = True
    kept = ring.recent()
    assert len(kept) == errorlog.KEPT
    assert kept[0]["message"] == "warning 7" and kept[-3]["message"] == f"warning {errorlog.KEPT + 4}"
    assert kept[-2]["level"] == "error" and kept[-2]["message"] == "x" * errorlog.MAX_MESSAGE + "…"
    assert kept[-1]["message"] == "bad %d format"
    assert {r["logger"] for r in kept} == {"snakeway.test_ring"}


def test_rings_of_every_worker_merge_oldest_first_and_a_forked_copy_once() -> None:
    inherited = {"at": 1.0, "pid": 1, "level": "warning", "logger": "s", "message": "before the fork"}
    one = [inherited, {"at": 3.0, "pid": 2, "level": "error", "logger": "s", "message": "c"}]
    two = [inherited, {"at": 2.0, "pid": 3, "level": "warning", "logger": "s", "message": "b"}]
    assert [r["message"] for r in errorlog.merged([one, two])] == ["before the fork", "b", "c"]
    many = [[{"at": float(i), "pid": w, "message": str(i)} for i in range(w, 100, 2)] for w in (0, 1)]
    assert [r["message"] for r in errorlog.merged(many)] == [str(i) for i in range(100 - errorlog.KEPT, 100)]


def test_the_log_is_shown_newest_first_and_escaped() -> None:
    log = [{"at": NOW.timestamp() - 60, "pid": 11, "level": "warning", "logger": "snakeway.proxy", "message": "older"},
           {"at": NOW.timestamp(), "pid": 12, "level": "error", "logger": HOSTILE, "message": HOSTILE}]
    html = page.render([], {}, workers=2, now=NOW, log=log)
    tree = parsed(html)
    assert "script" not in tree.tags and tree.tags.count("tr") == 3
    text = "|".join(tree.text)
    assert text.index(HOSTILE) < text.index("older")
    assert "2026-03-01T12:00:00+00:00|error|12" in text and "2026-03-01T11:59:00+00:00|warning|11" in text
    assert "No warning or error" in page.render([], {}, workers=1, now=NOW, log=[])
