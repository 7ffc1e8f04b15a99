"""The admin API's dispatch of ``certs revoke`` and ``certs rollover-account-key`` (pure: snakeway.admin.routes)."""

from __future__ import annotations

import pytest

from snakeway.admin.routes import Call, Error, decide, with_body

TOKENS = (b"k" * 40,)
AUTH = b"Bearer " + TOKENS[0]


def test_revoke_and_rollover_are_posts() -> None:
    assert decide(b"POST", b"/admin/certs/acme:a.test/revoke", AUTH, TOKENS) == Call("revoke", "acme:a.test")
    assert decide(b"POST", b"/admin/account/rollover-key", AUTH, TOKENS) == Call("rollover_key")
    refused = decide(b"GET", b"/admin/certs/a.test/revoke", AUTH, TOKENS)
    assert isinstance(refused, Error) and (refused.status, refused.headers) == (405, ((b"allow", b"POST"),))
    assert isinstance(decide(b"POST", b"/admin/certs/a.test/revoke", None, TOKENS), Error)  # 401 first


def test_revoke_takes_a_reason_and_a_wait() -> None:
    call = Call("revoke", "a.test")
    body = b'{"reason": "keyCompromise", "wait_seconds": 5}'
    assert with_body(call, body) == Call("revoke", "a.test", {"reason": "keyCompromise", "wait_seconds": 5})


@pytest.mark.parametrize(
    ("handler", "body", "message"),
    [
        ("revoke", b'{"reason": 1}', "reason must be a string"),
        ("revoke", b'{"why": "keyCompromise"}', "unknown key 'why'"),
        ("rollover_key", b'{"reason": "x"}', "allowed keys: none"),
    ],
)
def test_bodies_refused(handler: str, body: bytes, message: str) -> None:
    refused = with_body(Call(handler, "a.test" if handler == "revoke" else None), body)
    assert isinstance(refused, Error) and refused.status == 400 and message in refused.message
