"""The ``on_renewed`` hook: a program run after each certificate obtained, never in the way of renewal or serving.

Theory of operation
-------------------
``tls_automation.hooks.on_renewed = ["/path/prog", "arg", ...]`` is run (no shell, no PATH search) by the
process that obtained the certificate, once it is saved: once per issuance in the whole cluster, whichever
worker or node ordered it. :meth:`HookRunner.renewed` only starts a task in the runner's own nursery and
returns, so the renewal goes on (and the next certificate is ordered) while the hook runs; at most
:data:`HOOK_CONCURRENCY` hooks run at once, the others wait their turn.

What the hook gets (:func:`hook_environment`), like certbot's deploy hook: the server's environment plus

* ``SNAKEWAY_CERT_NAME`` (the certificate's name, its first domain), ``SNAKEWAY_CERT_DOMAINS`` (every name,
  space-separated), ``SNAKEWAY_CERT_SERIAL`` (lower-case hex), ``SNAKEWAY_CERT_NOT_AFTER`` (ISO 8601, UTC);
* ``SNAKEWAY_CERT_PATH`` (the leaf), ``SNAKEWAY_CHAIN_PATH`` (the CA's chain without the leaf),
  ``SNAKEWAY_FULLCHAIN_PATH`` (leaf first) and ``SNAKEWAY_KEY_PATH`` (mode 0600): files in a private
  directory (``SNAKEWAY_CERT_DIR``, mode 0700) written for this run and removed when the hook ends, whatever
  the store (a Redis store has no files of its own);
* with a filesystem store also ``SNAKEWAY_STORE_CERT_PATH`` and ``SNAKEWAY_STORE_KEY_PATH``: the store's
  stable paths (``<cert_dir>/<name>/cert.pem``, full chain, and ``key.pem``), which stay after the hook.

A hook that fails (a non-zero exit status, killed, still running after ``timeout_seconds``, its program
missing) is logged at error with the last lines of its stderr; it is never retried and changes nothing else.
A hook over its time is terminated (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path

import trio

from snakeway.acme.store import CertBundle, name_to_path_part
from snakeway.config.model import Hooks

logger = logging.getLogger(__name__)

# Hooks running at once (a renewal of many certificates starts no more processes than this).
HOOK_CONCURRENCY = 4
# How much of a failed hook's stderr is logged: its last lines, at most this many bytes of them.
STDERR_TAIL_LINES = 10
STDERR_TAIL_BYTES = 4096
_PEM_END = b"-----END CERTIFICATE-----"


def split_chain(fullchain_pem: bytes) -> tuple[bytes, bytes]:
    """The leaf's PEM and the rest of the chain's (leaf first in ``fullchain_pem``)."""
    end = fullchain_pem.find(_PEM_END)
    if end < 0:
        return fullchain_pem, b""
    end += len(_PEM_END)
    leaf, rest = fullchain_pem[:end].strip(), fullchain_pem[end:].strip()
    return leaf + b"\n", rest + b"\n" if rest else b""


def hook_environment(
    base: Mapping[str, str], bundle: CertBundle, files: Path, store_cert_dir: Path | None
) -> dict[str, str]:
    """The environment of the hook for ``bundle``: ``base`` plus the variables of the module docstring.

    Args:
      files: the private directory holding this run's copies (see :func:`write_files`).
      store_cert_dir: the filesystem store's ``cert_dir``; None for another store.
    """
    env = dict(base)
    env.update({
        "SNAKEWAY_CERT_NAME": bundle.name,
        "SNAKEWAY_CERT_DOMAINS": " ".join(bundle.domains),
        "SNAKEWAY_CERT_SERIAL": bundle.serial,
        "SNAKEWAY_CERT_NOT_AFTER": bundle.not_after.astimezone(UTC).isoformat(timespec="seconds"),
        "SNAKEWAY_CERT_DIR": str(files),
        "SNAKEWAY_CERT_PATH": str(files / "cert.pem"),
        "SNAKEWAY_CHAIN_PATH": str(files / "chain.pem"),
        "SNAKEWAY_FULLCHAIN_PATH": str(files / "fullchain.pem"),
        "SNAKEWAY_KEY_PATH": str(files / "privkey.pem"),
    })
    if store_cert_dir is not None:
        entry = store_cert_dir / name_to_path_part(bundle.name)
        env["SNAKEWAY_STORE_CERT_PATH"] = str(entry / "cert.pem")
        env["SNAKEWAY_STORE_KEY_PATH"] = str(entry / "key.pem")
    return env


def write_files(bundle: CertBundle) -> Path:
    """A new private directory (0700) with ``cert.pem``, ``chain.pem``, ``fullchain.pem`` and ``privkey.pem``
    (0600) of ``bundle`` (blocking)."""
    directory = Path(tempfile.mkdtemp(prefix="snakeway-hook-"))
    leaf, chain = split_chain(bundle.cert_pem)
    for name, data, mode in (("cert.pem", leaf, 0o644), ("chain.pem", chain, 0o644),
                             ("fullchain.pem", bundle.cert_pem, 0o644), ("privkey.pem", bundle.key_pem, 0o600)):
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    return directory


def tail(data: bytes) -> str:
    """The last lines of a hook's stderr, for the log (at most :data:`STDERR_TAIL_LINES` lines)."""
    text = data[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()
    lines = text.splitlines()[-STDERR_TAIL_LINES:]
    return " | ".join(lines) if lines else "(nothing on stderr)"


class HookRunner:
    """Runs ``tls_automation.hooks`` in the background (see the module docstring).

    Args:
      hooks: the configured hooks (:meth:`configure` takes reloaded ones).
      store_cert_dir: the filesystem store's ``cert_dir``, or None for another store.
    """

    def __init__(self, hooks: Hooks, *, store_cert_dir: Path | None = None) -> None:
        self.hooks = hooks
        self.store_cert_dir = store_cert_dir
        self._limiter = trio.CapacityLimiter(HOOK_CONCURRENCY)
        self._nursery: trio.Nursery | None = None

    def configure(self, hooks: Hooks) -> None:
        self.hooks = hooks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery hooks run in (started by the CertManager), until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def renewed(self, bundle: CertBundle) -> None:
        """``bundle`` was just obtained and saved: start ``on_renewed`` for it (returns at once)."""
        argv = self.hooks.on_renewed
        if not argv:
            return
        if self._nursery is None:  # not running (a test without the manager's nursery): nothing to run it in
            logger.warning("certificate for %s: on_renewed hook not run (no hook runner)", bundle.name)
            return
        self._nursery.start_soon(self.run_hook, argv, bundle, self.hooks.timeout_seconds)

    async def run_hook(self, argv: tuple[str, ...], bundle: CertBundle, timeout: float) -> bool:  # noqa: ASYNC109 - the hook's limit, not the caller's
        """Run ``argv`` for ``bundle`` and log how it ended; whether it succeeded. Never raises (but Cancelled)."""
        async with self._limiter:
            files = await trio.to_thread.run_sync(write_files, bundle)
            try:
                return await self._run(argv, bundle, files, timeout)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(shutil.rmtree, files, True)

    async def _run(self, argv: tuple[str, ...], bundle: CertBundle, files: Path, timeout: float) -> bool:  # noqa: ASYNC109
        env = hook_environment(os.environ, bundle, files, self.store_cert_dir)
        started = trio.current_time()
        errors = files / ".stderr"
        result = None
        try:
            with errors.open("wb") as stderr, trio.move_on_after(timeout):
                result = await trio.run_process(
                    list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    check=False,
                )
        except OSError as exc:  # the program is gone, or not executable any more
            logger.error("certificate for %s: on_renewed hook %s could not start: %s", bundle.name, argv[0],
                         exc.strerror or exc)
            return False
        said = tail(await trio.to_thread.run_sync(errors.read_bytes))
        took = trio.current_time() - started
        if result is None:
            logger.error("certificate for %s: on_renewed hook %s did not finish within %g s and was killed; "
                         "stderr: %s", bundle.name, argv[0], timeout, said)
            return False
        if result.returncode != 0:
            how = f"exit status {result.returncode}" if result.returncode > 0 else f"signal {-result.returncode}"
            logger.error("certificate for %s: on_renewed hook %s failed (%s) after %.2f s; stderr: %s",
                         bundle.name, argv[0], how, took, said)
            return False
        logger.info("certificate for %s: on_renewed hook %s succeeded in %.2f s", bundle.name, argv[0], took)
        return True
