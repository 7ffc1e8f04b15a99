"""The configurations workers hand to the supervisor after a reload."""

from __future__ import annotations

import os
from pathlib import Path

from snakeway.config.load import load_config
from snakeway.config.model import Config
from snakeway.handoff import ConfigHandoff, stamp
from tests.hostile.harness import proxy_to, write_config


def config_routing(tmp_path: Path, path: str) -> Config:
    written, _ = write_config(tmp_path, proxy_to(9, path), port=8080)
    return load_config(written)


def test_the_newest_read_wins_whatever_order_they_are_published_in(tmp_path: Path) -> None:
    handoff = ConfigHandoff(tmp_path / "private")
    handoff.directory.mkdir()
    assert handoff.newest() is None
    older, newer = config_routing(tmp_path, "/old"), config_routing(tmp_path, "/new")
    read_first, read_second = stamp(), stamp()
    handoff.publish(newer, read_second)
    handoff.publish(older, read_first)  # a slower worker finishes the earlier reload last
    published = handoff.newest()
    assert published is not None
    assert (published.stamp, published.pid) == (read_second, os.getpid())
    assert handoff.load(published) == newer
    assert [p.name for p in handoff.directory.iterdir()] == [published.path.name]  # the older one is gone


def test_an_unreadable_file_is_not_a_configuration(tmp_path: Path) -> None:
    handoff = ConfigHandoff(tmp_path)
    (tmp_path / f"config-{stamp()}-1.pickle").write_bytes(b"not a pickle")
    published = handoff.newest()
    assert published is not None
    assert handoff.load(published) is None
