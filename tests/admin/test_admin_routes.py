"""The admin API's dispatch: 401 before anything, then 404, 405 with Allow, and the body's 400."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.admin.routes import ROUTES, Call, Error, decide, with_body

TOKEN = b"k" * 40
TOKENS = (TOKEN,)
AUTH = b"Bearer " + TOKEN


@pytest.mark.parametrize(
    ("method", "target", "handler", "cert_id"),
    [
        (b"GET", b"/admin/health", "health", None),
        (b"GET", b"/admin/upstreams", "upstreams", None),
        (b"GET", b"/admin/stats?pretty=1", "stats", None),
        (b"GET", b"/admin/certs/", "certs", None),
        (b"POST", b"/admin/reload", "reload", None),
        (b"POST", b"/admin/certs/acme:a.test/renew", "renew", "acme:a.test"),
        (b"POST", b"/admin/certs/manual:%2Fetc%2Fa.pem/retry", "retry", "manual:/etc/a.pem"),
    ],
)
def test_each_endpoint(method: bytes, target: bytes, handler: str, cert_id: str | None) -> None:
    assert decide(method, target, AUTH, TOKENS) == Call(handler, cert_id)


@given(st.sampled_from([b"GET", b"POST", b"DELETE"]), st.binary(max_size=40).map(lambda b: b"/" + b.hex().encode()),
       st.one_of(st.none(), st.binary(max_size=50)))
def test_without_a_valid_token_everything_is_401_with_the_challenge(method: bytes, target: bytes,
                                                                     header: bytes | None) -> None:
    decision = decide(method, target, header, TOKENS)
    assert isinstance(decision, Error)
    assert decision.status == 401
    assert (b"www-authenticate", b'Bearer realm="snakeway-admin"') in decision.headers


@pytest.mark.parametrize("target", [b"/admin", b"/admin/nothing", b"/admin/certs/x", b"/admin/certs//renew",
                                    b"/admin/certs/x/renew/more", b"admin/health", b"/metrics/x"])
def test_unknown_paths_are_404(target: bytes) -> None:
    decision = decide(b"GET", target, AUTH, TOKENS)
    assert isinstance(decision, Error) and decision.status == 404


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        (b"GET", b"/admin/reload", b"POST"),
        (b"PUT", b"/admin/reload", b"POST"),
        (b"POST", b"/admin/stats", b"GET"),
        (b"DELETE", b"/admin/certs", b"GET"),
        (b"GET", b"/admin/certs/acme:a.test/renew", b"POST"),
    ],
)
def test_wrong_method_is_405_with_allow(method: bytes, target: bytes, allow: bytes) -> None:
    decision = decide(method, target, AUTH, TOKENS)
    assert isinstance(decision, Error)
    assert decision.status == 405
    assert decision.headers == ((b"allow", allow),)


def test_every_route_has_a_distinct_handler() -> None:
    assert len({r.handler for r in ROUTES}) == len(ROUTES)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'{"force": true}', "unknown key 'force'"),
        (b'{"wait_seconds": -1}', "wait_seconds must be a number from 0 to 600"),
        (b'{"wait_seconds": "5"}', "wait_seconds must be a number"),
        (b'{"wait_seconds": true}', "wait_seconds must be a number"),
    ],
)
def test_a_bad_body_is_400(body: bytes, message: str) -> None:
    call = decide(b"POST", b"/admin/certs/acme:a.test/renew", AUTH, TOKENS)
    assert isinstance(call, Call)
    decision = with_body(call, body)
    assert isinstance(decision, Error)
    assert decision.status == 400
    assert message in decision.message


def test_a_body_is_optional_and_reload_takes_no_keys() -> None:
    renew = decide(b"POST", b"/admin/certs/acme:a.test/renew", AUTH, TOKENS)
    assert isinstance(renew, Call)
    assert with_body(renew, b"") == Call("renew", "acme:a.test", {})
    assert with_body(renew, b'{"wait_seconds": 2.5}') == Call("renew", "acme:a.test", {"wait_seconds": 2.5})
    reload = decide(b"POST", b"/admin/reload", AUTH, TOKENS)
    assert isinstance(reload, Call)
    assert with_body(reload, b" {} ") == Call("reload", None, {})
    refused = with_body(reload, b'{"wait_seconds": 1}')
    assert isinstance(refused, Error) and refused.status == 400
