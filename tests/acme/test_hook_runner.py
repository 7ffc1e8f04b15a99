"""The ``on_renewed`` hook runner with real processes (real time): the environment and files it gives, and
how a hook that hangs, fails or is missing ends. The whole path through snakeway is in test_hook_pebble.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trustme

from snakeway.acme.hooks import HookRunner, hook_environment, split_chain, tail
from snakeway.acme.store import CertBundle
from snakeway.config.model import Hooks


@pytest.fixture(scope="module")
def bundle() -> CertBundle:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    start = datetime.now(UTC) - timedelta(hours=1)
    leaf = intermediate.issue_cert("a.test", "b.test", not_before=start, not_after=start + timedelta(days=90))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return CertBundle.from_pem("a.test", ("a.test", "b.test"), chain, leaf.private_key_pem.bytes())


def test_split_chain_gives_the_leaf_and_the_rest(bundle: CertBundle) -> None:
    leaf, chain = split_chain(bundle.cert_pem)
    assert leaf.count(b"BEGIN CERTIFICATE") == 1 and chain.count(b"BEGIN CERTIFICATE") == 1
    assert leaf + chain == bundle.cert_pem
    assert split_chain(leaf) == (leaf, b"")


def test_environment_names_the_certificate_and_its_files(bundle: CertBundle, tmp_path: Path) -> None:
    env = hook_environment({"PATH": "/bin"}, bundle, tmp_path / "run", tmp_path / "certs")
    assert env["PATH"] == "/bin"
    assert (env["SNAKEWAY_CERT_NAME"], env["SNAKEWAY_CERT_DOMAINS"]) == ("a.test", "a.test b.test")
    assert env["SNAKEWAY_CERT_SERIAL"] == bundle.serial
    assert env["SNAKEWAY_KEY_PATH"] == str(tmp_path / "run" / "privkey.pem")
    assert env["SNAKEWAY_STORE_CERT_PATH"] == str(tmp_path / "certs" / "a.test" / "cert.pem")
    without_files = hook_environment({}, bundle, tmp_path / "run", None)  # a Redis store: copies only
    assert "SNAKEWAY_STORE_CERT_PATH" not in without_files and "SNAKEWAY_CERT_PATH" in without_files


def test_tail_keeps_the_last_lines() -> None:
    assert tail(b"".join(f"line {i}\n".encode() for i in range(50))).split(" | ")[0] == "line 40"
    assert tail(b"") == "(nothing on stderr)"


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook.sh"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_a_hook_over_its_time_is_killed_and_logged(
    bundle: CertBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = script(tmp_path, "echo started >&2\nexec sleep 30")
    runner = HookRunner(Hooks())
    with trio.fail_after(10):
        assert await runner.run_hook((hook,), bundle, 0.5) is False
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "did not finish within 0.5 s and was killed" in message and "started" in message


async def test_a_missing_program_is_logged(bundle: CertBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = HookRunner(Hooks())
    assert await runner.run_hook((str(tmp_path / "gone"),), bundle, 5) is False
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "could not start" in message and "gone" in message


async def test_hooks_run_in_the_background_and_leave_no_files(
    bundle: CertBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, go = tmp_path / "seen", tmp_path / "go"
    hook = script(tmp_path, f'while [ ! -e {go} ]; do sleep 0.02; done\n'
                            f'echo "$SNAKEWAY_CERT_DIR" > {out}; cat "$SNAKEWAY_KEY_PATH" >> {out}')
    runner = HookRunner(Hooks(on_renewed=(hook,), timeout_seconds=10))
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        runner.renewed(bundle)  # returns while the hook waits for "go": it never waits for the hook
        await trio.sleep(0.2)
        assert not out.exists()
        go.touch()
        with trio.fail_after(10):
            while not any("succeeded" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    directory, key = out.read_text().split("\n", 1)
    assert key.encode() == bundle.key_pem
    assert not Path(directory).exists()
