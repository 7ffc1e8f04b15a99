"""Mistakes that stop snakeway: one line each, naming the configuration entry at fault.

Every mistake that stops ``serve`` from starting is told in one line on stderr, without a traceback::

    snakeway: cannot start: web.hcl:4: bind.port: cannot listen on http://0.0.0.0:80: Address already in use
    snakeway: cannot start: /etc/snakeway/a.pem: the private key does not match the certificate

This module is the one place that turns what was raised into those lines (:func:`mistakes`). What it
recognises is an error snakeway raises on purpose (:class:`~snakeway.errors.SnakewayError`) or an ``OSError``
(a port in use, a file that cannot be written), alone or in exception groups made of nothing else (trio
gathers the errors of a nursery's tasks in groups). Anything else is a bug and keeps its traceback.

The configuration entry at fault is found from what the error carries: the listener of a
:class:`~snakeway.binder.ListenError`, the file of a :class:`~snakeway.tls.certinfo.CertificateError` or of
an ``OSError`` (a certificate, the pid file, the access log, a file under the state directory). A state
directory that cannot be used is told the way ``check`` tells it (:func:`snakeway.preflight.unwritable_dir`),
whichever file in it start-up met first. See :mod:`snakeway.config.locate`.
"""

from __future__ import annotations

from pathlib import Path

from snakeway.binder import ListenError
from snakeway.config import locate
from snakeway.config.model import Config
from snakeway.errors import ConfigError, SnakewayError
from snakeway.preflight import unwritable_dir
from snakeway.tls.certinfo import CertificateError

CANNOT_START = "snakeway: cannot start: "


def mistakes(exc: BaseException, config: Config | None) -> list[str] | None:
    """What went wrong, one line per mistake (without a prefix); None if ``exc`` is not a mistake but a bug.

    Args:
        exc: What start-up raised: an error, or an exception group of them.
        config: The configuration being started, to name the entry at fault; None if it did not load.
    """
    leaves = _leaves(exc)
    if not all(isinstance(leaf, SnakewayError | OSError) for leaf in leaves):
        return None
    lines: list[str] = []
    for leaf in leaves:
        for line in _describe(leaf, config):
            if line not in lines:  # the same mistake met by several tasks is one mistake
                lines.append(line)
    return lines


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException, config: Config | None) -> list[str]:
    if isinstance(exc, ConfigError):
        return [str(problem) for problem in exc.problems]
    if config is not None:
        if isinstance(exc, ListenError):
            return [_at(locate.listener_entry(config, *exc.key), f"cannot listen on {exc.url}: {exc.reason}")]
        if isinstance(exc, CertificateError) and exc.source is not None:
            return [_at(locate.file_entry(config, exc.source), f"{exc.source}: {exc.reason}")]
        if isinstance(exc, OSError) and exc.filename is not None:
            path, state_dir = Path(str(exc.filename)), config.server.state_dir
            if (path == state_dir or state_dir in path.parents) and (unusable := unwritable_dir(state_dir)):
                return [_at(locate.server_entry(config, "state_dir"), f"{state_dir}: {unusable}")]
            return [_at(_file_at_fault(config, path), f"{path}: {exc.strerror or exc}")]
    if isinstance(exc, OSError) and exc.strerror:
        return [f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror]
    return [str(exc) or type(exc).__name__]


def _file_at_fault(config: Config, path: Path) -> str | None:
    """The entry that names ``path``: a certificate file, the pid file, the access log, the state directory."""
    server = config.server
    if path == server.pid_file:
        return locate.server_entry(config, "pid_file")
    if isinstance(server.access_log, Path) and path == server.access_log:
        return locate.server_entry(config, "access_log")
    if path == server.state_dir or server.state_dir in path.parents:
        return locate.server_entry(config, "state_dir")
    return locate.file_entry(config, path)


def _at(where: str | None, what: str) -> str:
    return f"{where}: {what}" if where else what
