"""A mistake that stops start-up is one line on stderr, exit status 1, no traceback, with one worker or several."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio

from snakeway import fatal
from snakeway.binder import ListenError
from snakeway.config import locate
from snakeway.config.load import load_config
from snakeway.listeners import listener_specs
from snakeway.tls.certinfo import CertificateError
from tests.proc import snakeway
from tests.startup_cases import CASES, line_of, make_files, port_in_use, write_config

PREFIX = "snakeway: cannot start: "
WORKERS = (1, 2)


def serve(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakeway", "serve", *extra, "--config", str(config)],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
    )


# Every run is a real `serve` that exits on its own; they run a few at a time, once for the whole module.
RUNS = [(name, workers, False) for name in [case.name for case in CASES] + ["port_in_use"] for workers in WORKERS]
RUNS += [("key_mismatch", workers, True) for workers in WORKERS]

Outcome = tuple[subprocess.CompletedProcess[str], str]  # the run, and the message expected


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, int, bool], Outcome]]:
    cases = {case.name: case for case in CASES}
    with ExitStack() as stack:
        jobs = {}
        for name, workers, debug in RUNS:
            directory = tmp_path_factory.mktemp(f"{name}-{workers}")
            if name == "port_in_use":
                port = stack.enter_context(port_in_use())
                config = write_config(directory, workers=workers, port=port)
                where = f"{config}:{line_of(config, 'port ')}: ingress.web.bind.port"
                message = f"{where}: cannot listen on http://127.0.0.1:{port}: Address already in use"
            else:
                config, message = cases[name].write(directory, make_files(directory), workers)
            jobs[(name, workers, debug)] = (config, message, ("--debug",) if debug else ())
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {key: pool.submit(serve, config, *extra) for key, (config, _, extra) in jobs.items()}
            yield {key: (future.result(), jobs[key][1]) for key, future in futures.items()}


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("name", [case.name for case in CASES] + ["port_in_use"])
def test_a_start_up_mistake_is_one_line_and_exit_status_1(
    outcomes: dict[tuple[str, int, bool], Outcome], name: str, workers: int
) -> None:
    result, message = outcomes[(name, workers, False)]
    assert (result.returncode, result.stderr, result.stdout) == (1, f"{PREFIX}{message}\n", "")


@pytest.mark.parametrize("workers", WORKERS)
def test_debug_adds_the_traceback(outcomes: dict[tuple[str, int, bool], Outcome], workers: int) -> None:
    result, message = outcomes[("key_mismatch", workers, True)]
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == f"{PREFIX}{message}"
    assert lines.count(f"{PREFIX}{message}") == 1  # however many workers printed a traceback


async def test_a_new_worker_that_cannot_start_stops_snakeway_instead_of_being_restarted(tmp_path: Path) -> None:
    files = make_files(tmp_path)
    tls = f'tls = {{ mode = "manual", cert = "{files.cert}", key = "{files.key}" }}'
    # At debug level: a worker's acknowledgement of the SIGTERM its supervisor sends is a debug line.
    config = write_config(tmp_path, workers=2, tls=tls, server='log = { level = "debug" }')
    async with snakeway(config, ready=b"2 workers serving") as proc:
        pid = int(proc.log.split(b"listening on")[0].rsplit(b"[", 1)[1].split(b"]")[0])
        files.key.write_bytes(files.other_key.read_bytes())  # the next worker reads a key that does not match
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(15):
            await proc.drain_log()
            assert await proc.process.wait() == 1
    log = proc.log.decode()
    where = f"{config}:{line_of(config, 'tls =')}: ingress.web.bind.tls.cert"
    assert log.count(PREFIX) == 1
    assert f"{PREFIX}{where}: {files.cert}: the private key does not match the certificate\n" in log
    assert log.count("starting a new one") == 1  # after the SIGKILL; the worker that could not start is not
    assert log.count("SIGTERM: shutting down") == 1  # the other worker was serving: it stopped gracefully
    assert "Traceback" not in log


# --- the lines, from the errors -------------------------------------------------------------------------------


def test_errors_of_several_tasks_are_one_line_per_mistake(tmp_path: Path) -> None:
    files = make_files(tmp_path)
    with port_in_use() as port:
        config_path = write_config(tmp_path, workers=1, port=port)
    config = load_config(config_path)
    (spec,) = listener_specs(config).values()
    bind = ListenError(98, spec, "Address already in use")
    bad = CertificateError.about(str(files.cert), "the private key does not match the certificate")
    group = BaseExceptionGroup("tasks", [bind, ExceptionGroup("inner", [bad, bind])])
    assert fatal.mistakes(group, config) == [
        f"{config_path}:{line_of(config_path, 'port ')}: ingress.web.bind.port: "
        f"cannot listen on http://127.0.0.1:{port}: Address already in use",
        f"{files.cert}: the private key does not match the certificate",  # a file the configuration does not name
    ]


def test_a_bug_is_not_a_mistake_and_keeps_its_traceback() -> None:
    assert fatal.mistakes(ExceptionGroup("tasks", [OSError(2, "gone"), KeyError("x")]), None) is None
    assert fatal.mistakes(OSError(2, "No such file or directory", "/x"), None) == ["/x: No such file or directory"]


def test_the_entry_of_a_file_in_a_list_of_certificates_and_of_a_default(tmp_path: Path) -> None:
    files = make_files(tmp_path)
    tls = (f'tls = {{ mode = "manual", certs = [{{ cert = "{files.cert}", key = "{files.key}" }},\n'
           f'      {{ cert = "{files.cert}", key = "{files.other_key}" }}] }}')
    config_path = write_config(tmp_path, workers=1, tls=tls)
    config = load_config(config_path)
    assert locate.file_entry(config, files.other_key) == (
        f"{config_path}:{line_of(config_path, str(files.other_key))}: ingress.web.bind.tls.certs[1].key"
    )
    assert locate.file_entry(config, tmp_path / "elsewhere.pem") is None
    assert locate.server_entry(config, "pid_file") is None  # not written: the default is at fault, not an entry
    assert locate.server_entry(config, "workers") == f"{config_path}:{line_of(config_path, 'workers ')}: server.workers"
