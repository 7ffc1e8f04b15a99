"""Fixtures for the ACME tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.pebble import Pebble, free_port, run_pebble
from tests.redisserver import RedisServer, run_redis


@pytest.fixture
async def pebble(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pebble]:
    """A running Pebble with ``http_port``/``tls_port`` free for the test to answer on.

    Options go through indirect parametrization, e.g.
    ``@pytest.mark.parametrize("pebble", [{"nonce_reject": 50, "authz_reuse": 0}], indirect=True)``
    (keyword arguments of :func:`tests.pebble.run_pebble`). Fails if Pebble
    is not installed.
    """
    options: dict[str, int] = getattr(request, "param", {})
    workdir = tmp_path_factory.mktemp("pebble")
    async with run_pebble(workdir, http_port=free_port(), tls_port=free_port(), **options) as running:
        yield running


@pytest.fixture
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisServer]:
    """A running ``redis-server`` of this test's own on a free loopback port (see :mod:`tests.redisserver`)."""
    async with run_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
