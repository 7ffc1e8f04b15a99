"""``python -m snakeway``: serve, check, reload, certs, trust and version."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from snakeway import __version__, control, fatal, logs
from snakeway.acme.revoke import REVOCATION_REASONS
from snakeway.config.load import load_config
from snakeway.config.model import Config
from snakeway.errors import ConfigError, SnakewayError
from snakeway.fatal import CANNOT_START
from snakeway.handoff import START_FAILED

if TYPE_CHECKING:
    from snakeway.server import Server
    from snakeway.supervisor import WorkerEnv

DEFAULT_CONFIG = "snakeway.hcl"


def config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SNAKEWAY_CONFIG") or DEFAULT_CONFIG)


def _config_option(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before the command and after it; a subcommand's default must not hide the one given before.
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help=f"configuration file (default: $SNAKEWAY_CONFIG or ./{DEFAULT_CONFIG})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snakeway", description="A reverse proxy on trio.")
    parser.add_argument("--version", action="version", version=f"snakeway {__version__}")
    _config_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the proxy in the foreground"),
        ("check", "validate the configuration and exit"),
        ("reload", "make the running server read its configuration again (admin listener, else SIGHUP)"),
        ("trust", "print the local CA's root certificate (mode = \"internal\") and how to use it"),
        ("certs", "list the ACME-managed certificates and their renewal state; also "
                  "`certs renew|revoke NAME` and `certs rollover-account-key`"),
    ):
        cmd = sub.add_parser(name, help=text)
        _config_option(cmd, top=False)
        if name == "serve":
            cmd.add_argument(
                "--debug", action="store_true", help="print the traceback of an error that stops start-up too"
            )
        if name == "certs":
            actions = cmd.add_subparsers(dest="certs_command", required=False)
            renew = actions.add_parser("renew", help="renew a certificate now, through the admin listener")
            renew.add_argument("name", metavar="NAME", help="the certificate's id or one of its names")
            _config_option(renew, top=False)
            revoke = actions.add_parser(
                "revoke", help="revoke a certificate at the CA, then order a new one (with a new key) at once")
            revoke.add_argument("name", metavar="NAME", help="the certificate's id or its name")
            revoke.add_argument("--reason", default="unspecified", choices=list(REVOCATION_REASONS),
                                help="the revocation reason (RFC 5280); default: unspecified")
            _config_option(revoke, top=False)
            rollover = actions.add_parser("rollover-account-key",
                                          help="a new key for each CA's stored ACME account (RFC 8555 7.3.5)")
            _config_option(rollover, top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = config_path(args.config)
    prefix = CANNOT_START if args.command == "serve" else ""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{prefix}{problem}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prefix}{path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.command == "check":
        return check(config, path)
    if args.command == "trust":
        return trust(config)
    if args.command == "certs":
        action = getattr(args, "certs_command", None)
        if action == "renew":
            return control.renew(config, args.name)
        if action == "revoke":
            return control.revoke(config, args.name, args.reason)
        if action == "rollover-account-key":
            return control.rollover_account_key(config)
        return certs(config)
    if args.command == "reload":
        return control.reload(config)
    workers = config.server.workers
    logs.configure(config.server.log, with_pid=workers > 1)
    if workers > 1:
        from snakeway.supervisor import Supervisor

        # Import what the workers run before forking them, so each starts with it loaded.
        importlib.import_module("snakeway.server")
        if config.server.tls_automation is not None:
            importlib.import_module("snakeway.acme.backend")

        def run_worker(worker_config: Config, env: WorkerEnv) -> int:
            return _run_server(worker_config, partial(load_config, path), env, debug=args.debug)

        return _reporting_errors(lambda: Supervisor(config, run_worker).run(), config, debug=args.debug)
    return _run_server(config, partial(load_config, path), debug=args.debug)


@dataclass
class _Progress:
    """Whether the server got as far as serving: an error before then is one that stopped start-up."""

    serving: bool = False


def _run_server(
    config: Config, loader: Callable[[], Config], worker: WorkerEnv | None = None, *, debug: bool = False
) -> int:
    progress = _Progress()

    def report(lines: list[str]) -> int:
        if progress.serving:  # it started, then failed
            return _print_lines("snakeway: ", lines)
        if worker is None:
            return _print_lines(CANNOT_START, lines)
        try:
            worker.handoff.failed([f"{CANNOT_START}{line}" for line in lines])  # the supervisor prints them, once
        except OSError:
            _print_lines(CANNOT_START, lines)
        return START_FAILED

    return _reporting_errors(
        lambda: trio.run(partial(serve, config, loader, worker, progress)) or 0, config, debug=debug, report=report
    )


def _reporting_errors(
    run: Callable[[], int],
    config: Config,
    *,
    debug: bool = False,
    report: Callable[[list[str]], int] | None = None,
) -> int:
    """``run()``; a mistake it raises (see :mod:`snakeway.fatal`) is told in one line each and gives 1.

    ``report`` tells the lines instead (a worker hands them to its supervisor) and gives the exit status.
    A bug keeps its traceback; with ``debug`` a mistake has one too, before its line.
    """
    try:
        return run()
    except BaseException as exc:
        lines = fatal.mistakes(exc, config)
        if lines is None:
            raise
        if debug:
            traceback.print_exception(exc)
        if report is not None:
            return report(lines)
        return _print_lines(CANNOT_START, lines)


def _print_lines(prefix: str, lines: list[str]) -> int:
    for line in lines:
        print(f"{prefix}{line}", file=sys.stderr)
    return 1


def check(config: Config, path: Path) -> int:
    """The configuration loaded: check what start-up would read (see :mod:`snakeway.preflight`), then say
    whether it is valid, with a warning line for each port in use and each setting the stored certificates
    change. Exit status 1 if there is an error."""
    from datetime import datetime

    from snakeway import check as checks
    from snakeway import preflight

    found = preflight.findings(config, datetime.now(UTC))
    for finding in found:
        print(finding if finding.where else f"{path}: {finding}", file=sys.stderr)
    if any(not finding.warning for finding in found):
        return 1
    for line in checks.config_warnings(config):
        print(line, file=sys.stderr)
    try:
        for line in trio.run(checks.store_warnings, config, datetime.now(UTC)):
            print(line, file=sys.stderr)
    except (SnakewayError, OSError) as exc:  # a store that cannot be read does not make the file invalid
        print(f"{path}: warning: the certificate store was not read: {exc}", file=sys.stderr)
    print(f"{path}: configuration is valid")
    return 0


def certs(config: Config) -> int:
    """Print the managed certificates, read from the store (the server need not run)."""
    from datetime import datetime

    from snakeway.acme import report

    if config.server.tls_automation is None:
        print("no certificates are managed: this configuration has no server.tls_automation", file=sys.stderr)
        return 0
    table = trio.run(report.rows, config, datetime.now(UTC))
    print(report.render(table))
    return 0


async def _exit_with_parent(shutdown: Callable[[], None]) -> None:
    """A worker whose supervisor died (even by SIGKILL) shuts down too."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing signals a parent's death; poll for it
        await trio.sleep(0.5)
    logging.getLogger("snakeway").warning("the supervisor is gone; shutting down")
    shutdown()


def trust(config: Config) -> int:
    """Create the local CA if needed, print where its root certificate is and how to use it (stderr)."""
    from snakeway.tls.internal_ca import LocalCA

    ca = LocalCA.load_or_create(config.server.state_dir)
    print(ca.root_path)
    commands = curl_commands(config, ca.root_path)
    if not commands:
        print('No listener of this configuration has tls mode = "internal" yet; add the root to your trust store '
              "to trust the certificates snakeway's local CA issues.", file=sys.stderr)
        return 0
    print("Add this certificate to your trust store to trust snakeway's internal certificates, or give it to "
          "your client:", file=sys.stderr)
    for command in commands:
        print(f"  {command}", file=sys.stderr)
    return 0


def curl_commands(config: Config, root: Path) -> list[str]:
    """A curl command for each listener with internal certificates: its first name, its real port and address."""
    import ipaddress

    from snakeway.config.model import TlsMode

    commands = []
    for ingress in config.ingresses:
        bind, tls = ingress.bind, ingress.bind.tls
        if tls is None or tls.mode is not TlsMode.INTERNAL or not tls.domains:
            continue
        name = tls.default or tls.domains[0]
        address = ipaddress.ip_address(bind.interface)
        if address.is_unspecified:  # listening everywhere: this machine's loopback reaches it
            address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        try:
            is_ip = ipaddress.ip_address(name) is not None
        except ValueError:
            is_ip = False
        host = f"[{name}]" if is_ip and ":" in name else name
        url = f"https://{host}:{bind.port}/"
        if is_ip or (name == "localhost" and address.is_loopback):
            commands.append(f"curl --cacert {root} {url}")
        else:  # the name may not resolve to the listener's address: tell curl where it is
            where = f"[{address}]" if address.version == 6 else str(address)
            commands.append(f"curl --cacert {root} --resolve {name}:{bind.port}:{where} {url}")
    return commands


async def serve(
    config: Config, loader: Callable[[], Config], worker: WorkerEnv | None = None, progress: _Progress | None = None
) -> None:
    from snakeway.server import Server

    if worker is None:
        server = Server(config, loader)
    else:
        from snakeway.admin.share import SharedFigures

        figures = SharedFigures(worker.run_dir, worker.number) if worker.run_dir is not None else None
        server = Server(
            config, loader, worker=True, handoff=worker.handoff, ws_counts=worker.ws_counts, figures=figures
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_signals)
        if worker is not None:
            nursery.start_soon(_exit_with_parent, server.shutdown)
        nursery.start_soon(_note_serving, server, worker, progress)
        await server.serve()
        nursery.cancel_scope.cancel()


async def _note_serving(server: Server, worker: WorkerEnv | None, progress: _Progress | None) -> None:
    """Once ``server`` serves: note it in ``progress``, and tell the supervisor (see :mod:`snakeway.handoff`)."""
    await server.wait_serving()
    if progress is not None:
        progress.serving = True
    if worker is not None:
        try:
            await trio.to_thread.run_sync(worker.handoff.started)
        except OSError as exc:
            logging.getLogger("snakeway").warning("cannot tell the supervisor this worker started: %s", exc)
