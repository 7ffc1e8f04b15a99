"""What ``python -m snakeway check`` finds beyond the configuration file itself, without binding a port.

Loading the configuration checks every value it can check from the files alone. Start-up then reads more:
the certificate and key files, the directories it writes, the ports it binds. ``check`` reads all of it
but the ports (binding one could take it from a server that is running) and reports:

- **errors** (``check`` exits 1), each a mistake that stops ``serve`` or makes a listener serve a
  certificate its clients refuse:

  - a manual certificate or key file that is not PEM, a key that does not match its certificate, a
    certificate that has expired or names no host (the one check every served certificate goes through:
    :func:`snakeway.tls.certinfo.validate_pair`), and an ACME ``ca_file`` that is not a PEM certificate;
  - a name a TLS listener claims that none of its certificates covers: its ``default`` and the host of each
    route on it (``*`` claims nothing). ``serve`` starts with such a mistake, but a client that asks for the
    name gets a certificate it rejects (or, for ``default``, no certificate at all);
  - a ``state_dir`` that is not a directory or cannot be written, when something needs it (internal
    certificates, a filesystem certificate store, several workers), a ``pid_file`` whose directory does not
    exist, an ``access_log`` that is a directory;

- **warnings** (the exit status stays 0): a port that something already listens on, read from the kernel's
  table of listening sockets (``/proc/net/tcp``, ``/proc/net/tcp6``); it is not an error, because it may be
  this very configuration's server, running.

The decisions are pure functions (:func:`served_names`, :func:`uncovered`, :func:`listening_sockets`,
:func:`in_use`); :func:`findings` reads the files and puts them together.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from errno import EISDIR, ENOENT
from pathlib import Path

from snakeway import hostnames
from snakeway.config import locate
from snakeway.config.model import Config, Ingress, StoreType, TlsMode
from snakeway.listeners import ListenerKey, listener_specs
from snakeway.tls.certinfo import CertificateError, load_chain, validate_pair

PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"  # the state column of a listening socket in /proc/net/tcp
_WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class Finding:
    """One thing ``check`` says: where (``FILE:LINE: key.path``, or None), what, and whether it is an error."""

    where: str | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        text = f"warning: {self.message}" if self.warning else self.message
        return f"{self.where}: {text}" if self.where else text


# --- pure decisions -------------------------------------------------------------------------------------------


def served_names(cert_pem: bytes, key_pem: bytes, *, cert: str, key: str, now: datetime) -> tuple[str, ...]:
    """The names a manual certificate and key would be served for.

    Raises:
        CertificateError: They cannot be served; ``source`` is the file at fault, ``reason`` says why.
    """
    return validate_pair(cert_pem, key_pem, now=now, source=cert, key_source=key).names


def uncovered(names: Iterable[str], claimed: str) -> bool:
    """Whether no certificate name in ``names`` covers the ``claimed`` host or route pattern.

    A route's ``*.parent`` pattern is covered by the same wildcard only; ``*`` claims nothing.
    """
    if claimed == "*":
        return False
    host = claimed[1:-1] if claimed.startswith("[") else claimed  # a route writes IPv6 in brackets
    return not any(hostnames.matches(name, host) for name in names)


def listening_sockets(table: str) -> set[tuple[str, int]]:
    """The listening ``(address, port)`` pairs of a ``/proc/net/tcp`` or ``tcp6`` table (IPv4-mapped as IPv4)."""
    found = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        # Each 32-bit word is in the host's (little-endian) order.
        packed = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
        ip = ipaddress.ip_address(packed)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        found.add((str(ip), int(port, 16)))
    return found


def in_use(wanted: ListenerKey, listening: set[tuple[str, int]]) -> bool:
    """Whether binding ``wanted`` would meet a socket already listening (same port, overlapping address)."""
    interface, port = wanted
    return any(
        bound == port and (address == interface or address in _WILDCARDS or interface in _WILDCARDS)
        for address, bound in listening
    )


# --- reading the files ----------------------------------------------------------------------------------------


def findings(config: Config, now: datetime, *, proc_net: Iterable[Path] = PROC_NET) -> list[Finding]:
    """Everything wrong with ``config`` that start-up would meet, errors first, then warnings."""
    errors, names = _certificates(config, now)
    errors += _claims(config, names)
    errors += _paths(config)
    return errors + _ports(config, proc_net)


def _certificates(config: Config, now: datetime) -> tuple[list[Finding], dict[ListenerKey, list[str] | None]]:
    """Errors in the manual certificate files and the ACME ``ca_file``; each TLS listener's certificate names
    (None for a listener with a certificate that cannot be read: what it covers is unknown)."""
    errors: list[Finding] = []
    names: dict[ListenerKey, list[str] | None] = {}
    binds = [((i.bind.interface, i.bind.port), i.bind.tls) for i in config.ingresses]
    if config.admin is not None:
        binds.append(((config.admin.interface, config.admin.port), config.admin.tls))
    for key, tls in binds:
        if tls is None:
            continue
        listener = names.setdefault(key, [])
        if tls.mode is not TlsMode.MANUAL:
            if listener is not None:
                listener.extend(tls.domains)
            continue
        for files in tls.certs:
            try:
                cert_pem, key_pem = files.cert.read_bytes(), files.key.read_bytes()
            except OSError as exc:
                errors.append(_file_error(config, Path(str(exc.filename)), exc.strerror or str(exc)))
                names[key] = None
                continue
            try:
                served = served_names(cert_pem, key_pem, cert=str(files.cert), key=str(files.key), now=now)
            except CertificateError as exc:
                errors.append(_file_error(config, Path(exc.source or files.cert), exc.reason))
                names[key] = None
                continue
            if (listener := names[key]) is not None:
                listener.extend(served)
    automation = config.server.tls_automation
    ca_file = automation.acme.ca_file if automation is not None else None
    if ca_file is not None:
        try:
            load_chain(ca_file.read_bytes(), str(ca_file))
        except CertificateError as exc:
            errors.append(_file_error(config, ca_file, exc.reason))
        except OSError as exc:
            errors.append(_file_error(config, ca_file, exc.strerror or str(exc)))
    return errors, names


def _file_error(config: Config, path: Path, why: str) -> Finding:
    return Finding(locate.file_entry(config, path), f"{path}: {why}")


def _claims(config: Config, names: dict[ListenerKey, list[str] | None]) -> list[Finding]:
    """A claimed name that none of its TLS listener's certificates covers."""
    errors = []
    for ingress in config.ingresses:
        covered = names.get((ingress.bind.interface, ingress.bind.port))
        if ingress.bind.tls is None or covered is None:
            continue
        listener = f"{ingress.bind.url_host}:{ingress.bind.port}"
        for path, name in _claimed(ingress):
            if uncovered(covered, name):
                consequence = (
                    "handshakes without a name it knows would be refused" if path[-1] == "default"
                    else "clients asking for it would refuse the certificate they get"
                )
                errors.append(Finding(
                    locate.ingress_entry(config, ingress, path),
                    f"no certificate on {listener} covers {name!r} (they cover {', '.join(covered) or 'nothing'}); "
                    + consequence,
                ))
    return errors


def _claimed(ingress: Ingress) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each name the ingress claims on its TLS listener, with its key path in the ingress."""
    tls = ingress.bind.tls
    if tls is not None and tls.mode is TlsMode.MANUAL and tls.default is not None:
        yield ("bind", "tls", "default"), tls.default
    for s, service in enumerate(ingress.services):
        for r, route in enumerate(service.routes):
            for h, host in enumerate(route.hosts):
                yield ("services", s, "routes", r, "hosts", h), host
    # The loader makes each static_files block a run of sites; their key paths are not kept, so name the hosts.
    for site in ingress.static_files:
        for host in site.route.hosts:
            yield ("static_files",), host


def _paths(config: Config) -> list[Finding]:
    """The directories and files start-up writes: the state directory, the pid file, the access log."""
    server = config.server
    errors = []
    if why := state_dir_problem(config):
        errors.append(Finding(locate.server_entry(config, "state_dir"), f"{server.state_dir}: {why}"))
    # Said as start-up says it when it meets them (the error of the system call).
    if server.pid_file is not None and not server.pid_file.parent.is_dir():
        errors.append(Finding(locate.server_entry(config, "pid_file"), f"{server.pid_file}: {os.strerror(ENOENT)}"))
    log = server.access_log
    if isinstance(log, Path) and log.is_dir():
        errors.append(Finding(locate.server_entry(config, "access_log"), f"{log}: {os.strerror(EISDIR)}"))
    return errors


def state_dir_problem(config: Config) -> str | None:
    """Why ``state_dir`` cannot be used, if something needs it: internal certificates, a filesystem certificate
    store, several workers (their private directory); None if it can be, or nothing needs it."""
    server = config.server
    automation = server.tls_automation
    needed = (
        server.workers > 1
        or any(i.bind.tls is not None and i.bind.tls.mode is TlsMode.INTERNAL for i in config.ingresses)
        or (config.admin is not None and config.admin.internal_tls)
        or (automation is not None and automation.cert_store.type is StoreType.FILESYSTEM)
    )
    return unwritable_dir(server.state_dir) if needed else None


def unwritable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be (made and) written as a directory; None if it can."""
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                return "not a directory" if existing == path else f"{existing} is not a directory"
            if not os.access(existing, os.W_OK | os.X_OK):
                return "cannot be written" if existing == path else f"cannot be made in {existing}"
            return None
    return None


def _ports(config: Config, proc_net: Iterable[Path]) -> list[Finding]:
    listening: set[tuple[str, int]] = set()
    for table in proc_net:
        try:
            listening |= listening_sockets(table.read_text())
        except OSError:
            continue  # no such table here (no IPv6, not Linux): nothing to warn about
    warnings = []
    for key, spec in listener_specs(config).items():
        if in_use(key, listening):
            warnings.append(Finding(
                locate.listener_entry(config, *key),
                f"{spec.url()}: something already listens on port {key[1]} (snakeway itself, if it is running?)",
                warning=True,
            ))
    return warnings
