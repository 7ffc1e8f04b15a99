"""Configurations with one start-up mistake each, for the ``serve`` and ``check`` tests of those mistakes."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.helpers import closed_port


@dataclass(frozen=True)
class Files:
    """A certificate for a.test with its key, another key, a file that is not PEM, a plain file."""

    cert: Path
    key: Path
    other_key: Path
    not_pem: Path
    plain: Path


def make_files(directory: Path) -> Files:
    ca = trustme.CA()
    leaf, other = ca.issue_cert("a.test"), ca.issue_cert("b.test")
    files = Files(
        directory / "a.crt", directory / "a.key", directory / "b.key", directory / "notes.txt", directory / "plain"
    )
    leaf.cert_chain_pems[0].write_to_path(files.cert)
    leaf.private_key_pem.write_to_path(files.key)
    other.private_key_pem.write_to_path(files.other_key)
    files.not_pem.write_text("not a certificate\n")
    files.plain.write_text("a file, not a directory\n")
    return files


def write_config(
    directory: Path,
    *,
    workers: int,
    port: int | None = None,
    tls: str = "",
    server: str = "",
    hosts: str = '"*"',
    included: bool = False,
) -> Path:
    """``snakeway.hcl`` in ``directory`` with one ingress ``web`` (in ``web.hcl``, included, if ``included``)."""
    main = directory / "snakeway.hcl"
    ingress = f"""bind = {{
    interface = "127.0.0.1"
    port      = {port if port is not None else closed_port()}
    {tls}
  }}
  services = [{{
    name      = "app"
    routes    = [{{ hosts = [{hosts}], path = "/" }}]
    upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = 9 }} }}]
  }}]
"""
    if included:
        (directory / "web.hcl").write_text(ingress)
    main.write_text(
        f"""server {{
  version   = 1
  workers   = {workers}
  state_dir = "{directory / 'state'}"
  shutdown  = {{ drain_seconds = 1 }}
  {server}
}}
"""
        + ('include { ingresses = "web.hcl" }\n' if included else f'ingress "web" {{\n  {ingress}}}\n')
    )
    return main


def line_of(path: Path, needle: str) -> int:
    """The number of the first line of ``path`` that contains ``needle``."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@contextmanager
def port_in_use() -> Iterator[int]:
    """A port on 127.0.0.1 that a socket listens on until the block ends."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@dataclass(frozen=True)
class Case:
    """A mistake: how to write it into a configuration, and the message that names it (without prefix)."""

    name: str
    write: Callable[[Path, Files, int], tuple[Path, str]]  # (directory, files, workers) -> (config, message)


def _key_mismatch(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    config = write_config(d, workers=workers, tls=f'tls = {{ mode = "manual", cert = "{f.cert}", key = "{f.other_key}" }}')
    where = f"{config}:{line_of(config, 'tls =')}: ingress.web.bind.tls.cert"
    return config, f"{where}: {f.cert}: the private key does not match the certificate"


def _cert_not_pem(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    config = write_config(d, workers=workers, tls=f'tls = {{ mode = "manual", cert = "{f.not_pem}", key = "{f.key}" }}')
    where = f"{config}:{line_of(config, 'tls =')}: ingress.web.bind.tls.cert"
    return config, f"{where}: {f.not_pem}: cannot read the certificate chain (not PEM: MalformedFraming)"


def _key_not_pem_included(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    config = write_config(
        d, workers=workers, tls=f'tls = {{ mode = "manual", cert = "{f.cert}", key = "{f.not_pem}" }}', included=True
    )
    web = d / "web.hcl"
    where = f"{web}:{line_of(web, 'tls =')}: bind.tls.key"
    return config, f"{where}: {f.not_pem}: cannot read the private key (not PEM: MalformedFraming)"


def _missing_cert(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    missing = d / "missing.crt"
    config = write_config(d, workers=workers, tls=f'tls = {{ mode = "manual", cert = "{missing}", key = "{f.key}" }}')
    where = f"{config}:{line_of(config, 'tls =')}: ingress.web.bind.tls.cert"
    return config, f"{where}: file does not exist: {missing}"


def _state_dir_not_a_directory(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    config = write_config(d, workers=workers, tls='tls = { mode = "internal", domains = ["localhost"] }')
    config.write_text(config.read_text().replace(str(d / "state"), str(f.plain)))
    return config, f"{config}:{line_of(config, 'state_dir =')}: server.state_dir: {f.plain}: not a directory"


def _acme_state_dir_under_a_file(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    acme = 'tls_automation = { acme = { directory_url = "https://127.0.0.1:9/dir" } }'
    tls = 'tls = { mode = "acme", domains = ["a.test"], challenge = "tls-alpn-01" }'
    config = write_config(d, workers=workers, tls=tls, server=acme)
    state = f.plain / "state"
    config.write_text(config.read_text().replace(str(d / "state"), str(state)))
    where = f"{config}:{line_of(config, 'state_dir =')}: server.state_dir"
    return config, f"{where}: {state}: {f.plain} is not a directory"


def _pid_file_without_directory(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    pid_file = d / "run" / "snakeway.pid"
    config = write_config(d, workers=workers, server=f'pid_file = "{pid_file}"')
    return config, f"{config}:{line_of(config, 'pid_file =')}: server.pid_file: {pid_file}: No such file or directory"


def _access_log_is_a_directory(d: Path, f: Files, workers: int) -> tuple[Path, str]:
    config = write_config(d, workers=workers, server=f'access_log = "{d}"')
    return config, f"{config}:{line_of(config, 'access_log =')}: server.access_log: {d}: Is a directory"


# Each fails when the configuration is applied, after it loaded (but the missing file, which loading finds).
CASES = [
    Case("key_mismatch", _key_mismatch),
    Case("cert_not_pem", _cert_not_pem),
    Case("key_not_pem_included", _key_not_pem_included),
    Case("missing_cert", _missing_cert),
    Case("state_dir_not_a_directory", _state_dir_not_a_directory),
    Case("acme_state_dir_under_a_file", _acme_state_dir_under_a_file),
    Case("pid_file_without_directory", _pid_file_without_directory),
    Case("access_log_is_a_directory", _access_log_is_a_directory),
]
