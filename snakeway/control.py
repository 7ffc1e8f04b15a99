"""``reload``, ``certs renew``, ``certs revoke`` and ``certs rollover-account-key``: asking a running snakeway,
as its configuration says to reach it.

With ``bind_admin`` in the configuration, the command is an HTTP(S) ``POST`` to the admin listener
(``/admin/reload``, ``/admin/certs/{id}/renew``) with ``Authorization: Bearer`` and the first token of
``token_file``; the JSON answer says what happened. Without it, ``reload`` sends ``SIGHUP`` to the pid in
``server.pid_file`` (the supervisor's, with several workers), as ``kill -HUP`` would; the log then says
whether the new configuration was applied. ``certs renew`` has no signal to fall back on (a signal cannot
name a certificate, and a reload does not renew one): without ``bind_admin`` it says so and fails.
``certs revoke`` and ``certs rollover-account-key`` do their work on the certificate store themselves when no
server answers (no ``bind_admin``, or nothing listening on it): see :mod:`snakeway.acme.direct`.

Every failure is one line on stderr, ``snakeway: <command>: <why>``, and exit status 1.

TLS to the admin listener: with ``mode = "internal"`` the certificate is checked against the local CA's root
(``<state_dir>/pki/root.pem``) and the listener's first name; with ``mode = "manual"`` it must be one of the
configured certificates, byte for byte (the admin listener is reached by its IP address, which a manual
certificate need not name).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import trio

from snakeway.config.model import Admin, Config, Tls, TlsMode
from snakeway.errors import SnakewayError

TIMEOUT_SECONDS = 180.0  # the admin listener waits up to 120 s for a reload to end, and answers then


class Unreachable(SnakewayError):
    """The running server cannot be asked: the message says why, in one line."""


class NotRunning(Unreachable):
    """Nothing listens on the admin listener's address: no server runs with this configuration."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object]


def admin_of(config: Config) -> Admin | None:
    """The configuration's ``bind_admin``, if it has one."""
    return config.admin


def url_of(admin: Admin) -> str:
    return f"{'https' if admin.tls is not None else 'http'}://{admin.url_host}:{admin.port}"


# --- the commands -----------------------------------------------------------------------------------------------


def reload(config: Config) -> int:
    """``snakeway reload``: the admin listener's ``POST /admin/reload``, else SIGHUP to the pid file's pid."""
    try:
        admin = admin_of(config)
        if admin is not None:
            answer = post(admin, "/admin/reload", config.server.state_dir)
            if answer.status == 200 and answer.body.get("applied") is True:
                print("reloaded: the new configuration is applied")
                return 0
            return _failed("reload", answer)
        pid = send_signal(config, signal.SIGHUP)
    except Unreachable as exc:
        return _say("reload", str(exc))
    print(f"sent SIGHUP to snakeway (pid {pid}); its log says whether the new configuration was applied")
    return 0


def renew(config: Config, name: str) -> int:
    """``snakeway certs renew NAME``: the admin listener's ``POST /admin/certs/{NAME}/renew``."""
    admin = admin_of(config)
    if admin is None:
        return _say(
            "certs renew",
            "needs the admin listener (bind_admin): a signal cannot name a certificate. "
            "Certificates are renewed on schedule; see `snakeway certs` for the next attempt",
        )
    try:
        answer = post(admin, f"/admin/certs/{quote(name, safe='')}/renew", config.server.state_dir)
    except Unreachable as exc:
        return _say("certs renew", str(exc))
    cert_id = answer.body.get("id", name)
    if answer.status == 200 and answer.body.get("done") is True:
        print(f"{cert_id}: renewed{_serial(answer.body)}")
        return 0
    if answer.status == 202:
        print(f"{cert_id}: renewal under way (not done yet); `snakeway certs` shows how it ends")
        return 0
    return _failed("certs renew", answer)


def revoke(config: Config, name: str, reason: str) -> int:
    """``snakeway certs revoke NAME [--reason R]``: revoke the certificate, then order a new one at once.

    Through the admin listener's ``POST /admin/certs/{NAME}/revoke`` when a server answers there; with no
    ``bind_admin``, or nothing listening on it, straight on the store (the next start, or the check of a
    server sharing the store, orders the replacement).
    """
    admin = admin_of(config)
    if admin is not None:
        body = json.dumps({"reason": reason}).encode()
        try:
            answer = post(admin, f"/admin/certs/{quote(name, safe='')}/revoke", config.server.state_dir, body)
        except NotRunning:
            pass  # no server: do it on the store
        except Unreachable as exc:
            return _say("certs revoke", str(exc))
        else:
            if answer.status not in (200, 202):
                return _failed("certs revoke", answer)
            revoked = answer.body.get("revoked")
            serial = revoked.get("serial") if isinstance(revoked, dict) else None
            cert_id = answer.body.get("id", name)
            print(f"{cert_id}: revoked serial {serial} ({reason})")
            if answer.status == 200:
                print(f"{cert_id}: replaced{_serial(answer.body)}")
            else:
                print(f"{cert_id}: replacement under way (not done yet); `snakeway certs` shows how it ends")
            return 0
    return _directly("certs revoke", lambda: _revoke_directly(config, name, reason))


def _revoke_directly(config: Config, name: str, reason: str) -> None:
    from snakeway.acme import direct

    bundle = trio.run(direct.revoke, config, name, reason)
    print(f"{bundle.name}: revoked serial {bundle.serial} ({reason}); no server answered, so a new certificate "
          "is ordered when snakeway starts (or at the next check of a server sharing the store)")


def rollover_account_key(config: Config) -> int:
    """``snakeway certs rollover-account-key``: a new ACME account key (RFC 8555 §7.3.5), stored for every worker.

    Through the admin listener's ``POST /admin/account/rollover-key`` when a server answers there, else on
    the store directly.
    """
    admin = admin_of(config)
    if admin is not None:
        try:
            answer = post(admin, "/admin/account/rollover-key", config.server.state_dir)
        except NotRunning:
            pass
        except Unreachable as exc:
            return _say("certs rollover-account-key", str(exc))
        else:
            if answer.status != 200:
                return _failed("certs rollover-account-key", answer)
            accounts = answer.body.get("accounts")
            for rolled in accounts if isinstance(accounts, list) else ():
                if isinstance(rolled, dict):
                    print(f"account {rolled.get('account')} at {rolled.get('directory_url')}: key rolled over")
            return 0
    return _directly("certs rollover-account-key", lambda: _rollover_directly(config))


def _rollover_directly(config: Config) -> None:
    from snakeway.acme import direct

    for record in trio.run(direct.rollover_account_key, config):
        print(f"account {record.uri} at {record.directory_url}: key rolled over (no server answered: done on "
              "the store)")


def _directly(command: str, work: Callable[[], None]) -> int:
    """``work()`` on the store, its failure one line."""
    try:
        work()
    except (SnakewayError, ValueError, OSError) as exc:
        return _say(command, str(exc))
    return 0


def _serial(body: dict[str, object]) -> str:
    certificate = body.get("certificate")
    serial = certificate.get("serial") if isinstance(certificate, dict) else None
    return f", serial {serial}" if serial else ""


def _failed(command: str, answer: Answer) -> int:
    why = answer.body.get("error")
    return _say(command, f"{why}" if why else f"the admin listener answered {answer.status}")


def _say(command: str, why: str) -> int:
    print(f"snakeway: {command}: {why}", file=sys.stderr)
    return 1


# --- the signal ---------------------------------------------------------------------------------------------------


def send_signal(config: Config, signum: signal.Signals) -> int:
    """Send ``signum`` to the pid in ``server.pid_file``; returns that pid.

    Raises:
      Unreachable: no ``pid_file`` (and no ``bind_admin``), or none that names a running process.
    """
    pid_file = config.server.pid_file
    if pid_file is None:
        raise Unreachable("the configuration has neither bind_admin nor server.pid_file: nothing says how to "
                          "reach the running server (send SIGHUP to its process yourself)")
    try:
        text = pid_file.read_text().strip()
    except OSError as exc:
        raise Unreachable(f"{pid_file}: {exc.strerror or exc} (is snakeway running?)") from None
    if not text.isdigit() or int(text) <= 1:
        raise Unreachable(f"{pid_file}: not a process id: {text[:40]!r}")
    pid = int(text)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise Unreachable(f"{pid_file}: no process {pid} (snakeway is not running; the file was left over)") from None
    except PermissionError:
        raise Unreachable(f"{pid_file}: not allowed to signal process {pid} (run as its user)") from None
    return pid


# --- the admin listener -------------------------------------------------------------------------------------------


def token(admin: Admin) -> str:
    """The first token of ``token_file`` (one per line)."""
    try:
        lines = admin.token_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreachable(f"cannot read the admin token: {admin.token_file}: {getattr(exc, 'strerror', exc)}") \
            from None
    for line in lines:
        if line.strip():
            return line.strip()
    raise Unreachable(f"{admin.token_file} holds no token")


def post(admin: Admin, path: str, state_dir: Path, body: bytes = b"{}") -> Answer:
    """``POST path`` to the admin listener with the bearer token and a JSON ``body``; its status and JSON body.

    Raises:
      NotRunning: nothing listens there (connection refused).
      Unreachable: the listener cannot be reached otherwise, or did not answer JSON.
    """
    url = url_of(admin)
    conn = _connection(admin, state_dir)
    try:
        headers = {"Authorization": f"Bearer {token(admin)}", "Content-Type": "application/json"}
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except ssl.SSLError as exc:
        raise Unreachable(f"{url}: TLS: {exc.reason or exc}") from None
    except ConnectionRefusedError as exc:
        raise NotRunning(f"cannot reach the admin listener at {url}: {exc.strerror or exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"cannot reach the admin listener at {url}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    finally:
        conn.close()
    try:
        answer = json.loads(data) if data else {}
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Unreachable(f"{url}{path} answered {response.status} without a JSON object")
    return Answer(response.status, answer)


def _connection(admin: Admin, state_dir: Path) -> http.client.HTTPConnection:
    if admin.tls is None:
        return http.client.HTTPConnection(admin.interface, admin.port, timeout=TIMEOUT_SECONDS)
    return _PinnedHTTPS(admin.interface, admin.port, admin.tls, state_dir)


class _PinnedHTTPS(http.client.HTTPConnection):
    """HTTPS to the admin listener, checked as the module's docstring says."""

    def __init__(self, host: str, port: int, tls: Tls, state_dir: Path) -> None:
        super().__init__(host, port, timeout=TIMEOUT_SECONDS)
        self._tls = tls
        self._state_dir = state_dir

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self._tls.mode is TlsMode.INTERNAL:
            from snakeway.tls.internal_ca import PKI_DIR

            ctx.load_verify_locations(cafile=str(self._state_dir / PKI_DIR / "root.pem"))
            name = self._tls.default or self._tls.domains[0]
            self.sock = ctx.wrap_socket(raw, server_hostname=name)
            return
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # checked below: the very certificate configured
        sock = ctx.wrap_socket(raw)
        self.sock = sock
        presented = sock.getpeercert(binary_form=True)
        if presented not in _configured_leaves(self._tls):
            raise ssl.SSLError("the admin listener's certificate is none of bind_admin.tls's certificates")


def _configured_leaves(tls: Tls) -> list[bytes]:
    leaves = []
    for files in tls.certs:
        try:
            pem = files.cert.read_text()
        except OSError:
            continue
        leaves.append(ssl.PEM_cert_to_DER_cert(pem[: pem.find("-----END CERTIFICATE-----") + 25]))
    return leaves
