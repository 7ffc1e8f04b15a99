"""Looking up challenge answers that other processes shared: only real tokens, only a few at once."""

from __future__ import annotations

import trio
import trio.testing

from snakeway.acme.challenges import SHARED_LOOKUPS, Http01Tokens, http01_key
from snakeway.acme.coordination import LocalCoordinator

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"  # the shape of a CA's token: 43 base64url characters


class Counted(LocalCoordinator):
    """Shared answers that count reads, and can hold every read until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.release: trio.Event | None = None

    async def get_challenge(self, key: str) -> str | None:
        self.reads += 1
        if self.release is not None:
            await self.release.wait()
        return await super().get_challenge(key)


async def test_a_token_of_another_process_is_read_from_the_shared_store() -> None:
    shared = Counted()
    await shared.put_challenge(http01_key(TOKEN), f"{TOKEN}.thumbprint")
    tokens = Http01Tokens(shared)
    assert await tokens.key_authorization(TOKEN) == f"{TOKEN}.thumbprint"
    assert await tokens.key_authorization(TOKEN[:-1] + "x") is None
    assert shared.reads == 2


async def test_a_local_token_needs_no_shared_read() -> None:
    shared = Counted()
    tokens = Http01Tokens(shared)
    tokens.add(TOKEN, "answer")
    assert await tokens.key_authorization(TOKEN) == "answer"
    assert shared.reads == 0


async def test_what_cannot_be_a_token_is_not_looked_up() -> None:
    shared = Counted()
    tokens = Http01Tokens(shared)
    for path in ("short", "a" * 21, "x" * 129, "../../etc/passwd-abcdefghijklmnop", "token with spaces in it....",
                 "tok%2Fen" * 4, ""):
        assert await tokens.key_authorization(path) is None
    assert shared.reads == 0


async def test_lookups_beyond_the_limit_are_answered_not_found_at_once() -> None:
    shared = Counted()
    shared.release = trio.Event()
    await shared.put_challenge(http01_key(TOKEN), "answer")
    tokens = Http01Tokens(shared)
    answers: list[str | None] = []

    async def look() -> None:
        answers.append(await tokens.key_authorization(TOKEN))

    async with trio.open_nursery() as nursery:
        for _ in range(SHARED_LOOKUPS):
            nursery.start_soon(look)
        await trio.testing.wait_all_tasks_blocked()
        assert shared.reads == SHARED_LOOKUPS
        with trio.fail_after(1):  # answered without waiting for the reads in flight
            assert await tokens.key_authorization(TOKEN) is None
        assert shared.reads == SHARED_LOOKUPS
        shared.release.set()
    assert answers == ["answer"] * SHARED_LOOKUPS
    assert await tokens.key_authorization(TOKEN) == "answer"  # the limit is free again
