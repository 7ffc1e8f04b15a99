"""The supervisor's private directory: made under state_dir, removed on exit or by the next supervisor."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from snakeway.rundir import DIRECTORY, OWNER, RunDirectory


def directories(state_dir: Path) -> set[Path]:
    return {path for path in (state_dir / DIRECTORY).iterdir() if path.is_dir()}


def supervisor_in_a_child(state_dir: Path) -> tuple[int, Path]:
    """A child process that makes its directory and waits to be killed: (pid, the directory)."""
    ready, done = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready)
            os.write(done, str(RunDirectory.create(state_dir).path).encode())
            os.close(done)
            signal.pause()
        finally:
            os._exit(code)
    os.close(done)
    path = Path(os.read(ready, 4096).decode())
    os.close(ready)
    return pid, path


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_made_private_under_state_dir_and_removed(tmp_path: Path) -> None:
    state = tmp_path / "state"  # need not exist yet
    private = RunDirectory.create(state)
    assert private.path.parent == state / DIRECTORY
    assert [(p.stat().st_mode & 0o777) for p in (state, private.path.parent, private.path)] == [0o700] * 3
    (private.path / "config-1-2.pickle").write_bytes(b"x")
    private.remove()
    assert directories(state) == set()


def test_a_killed_supervisors_directory_is_removed_by_the_next_one(tmp_path: Path) -> None:
    pid, left = supervisor_in_a_child(tmp_path)
    alive_pid, alive = supervisor_in_a_child(tmp_path)
    try:
        (left / "config-1-2.pickle").write_bytes(b"x")
        kill(pid)
        assert left.is_dir()
        mine = RunDirectory.create(tmp_path)
        assert directories(tmp_path) == {alive, mine.path}  # the living one's stays
        mine.remove()
    finally:
        kill(alive_pid)


def test_a_directory_stays_while_a_process_holding_its_lock_lives(tmp_path: Path) -> None:
    # A killed supervisor's workers still hold the lock they inherited: they may be draining.
    private = RunDirectory.create(tmp_path)
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    try:
        os.close(private._owner_fd)  # the supervisor is gone; its forked child holds the lock
        RunDirectory.create(tmp_path).remove()
        assert private.path.is_dir()
    finally:
        kill(pid)
    RunDirectory.create(tmp_path).remove()
    assert directories(tmp_path) == set()


def test_a_directory_without_its_lock_file_is_stale(tmp_path: Path) -> None:
    private = RunDirectory.create(tmp_path)
    (private.path / OWNER).unlink()  # as if its supervisor died before it locked it
    RunDirectory.create(tmp_path).remove()
    assert directories(tmp_path) == set()
    os.close(private._owner_fd)
