"""Bearer tokens: the token file's rules, and the decision on each request's Authorization header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.admin.auth import MIN_TOKEN_BYTES, authorized, bearer_token, parse_tokens

GOOD = b"A" * 32
OTHER = b"0123456789abcdef0123456789abcdef-._~+/=="

_TOKEN_CHARS = st.sampled_from(list(b"ABCxyz0189-._~+/"))
tokens = st.lists(_TOKEN_CHARS, min_size=MIN_TOKEN_BYTES, max_size=80).map(bytes)


def test_one_token_per_line_blank_lines_and_surrounding_space_ignored() -> None:
    assert parse_tokens(b"\n  " + GOOD + b"  \r\n\n\t" + OTHER + b"\n") == (GOOD, OTHER)


def test_a_short_token_names_its_line_never_the_token() -> None:
    with pytest.raises(ValueError, match="line 2: a token must be at least 32 bytes, this one has 9") as caught:
        parse_tokens(GOOD + b"\nshortsecr\n")
    assert "shortsecr" not in str(caught.value)


def test_a_line_that_cannot_be_a_bearer_token_is_refused() -> None:
    with pytest.raises(ValueError, match="line 1: a token may only hold"):
        parse_tokens(b"a token with spaces in it that is long enough\n")


@pytest.mark.parametrize("data", [b"", b"\n\n", b"   \n"])
def test_a_file_without_a_token_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="no token in the file"):
        parse_tokens(data)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (b"Bearer " + GOOD, True),
        (b"bearer " + OTHER, True),
        (b"BEARER   " + GOOD, True),
        (b"Bearer " + GOOD[:-1], False),
        (b"Bearer " + GOOD + b"x", False),
        (b"Basic " + GOOD, False),
        (GOOD, False),
        (b"Bearer", False),
        (b"Bearer ", False),
        (None, False),
    ],
)
def test_authorized_only_with_a_configured_token(header: bytes | None, ok: bool) -> None:
    assert authorized(header, (GOOD, OTHER)) is ok


def test_no_token_configured_authorizes_nobody() -> None:
    assert not authorized(b"Bearer " + GOOD, ())


@given(tokens, st.lists(tokens, max_size=4))
def test_a_token_is_accepted_exactly_when_it_is_one_of_the_file(offered: bytes, configured: list[bytes]) -> None:
    parsed = parse_tokens(b"\n".join(configured)) if configured else ()
    assert authorized(b"Bearer " + offered, parsed) is (offered in configured)
    assert bearer_token(b"Bearer " + offered) == offered
