"""``bind_admin``: where it may be written, what it refuses, and its token file, as the user reads problems."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from snakeway import preflight
from snakeway.config.load import load_config
from snakeway.config.model import TlsMode
from snakeway.errors import ConfigError
from snakeway.listeners import Role, listener_specs
from tests.tlshelpers import write_leaf

TOKEN = "t" * 32
AUTH = 'auth = { bearer = { token_file = "tokens" } }'
INGRESS = 'ingress "web" {\n  bind = { interface = "127.0.0.1", port = 8080 }\n}\n'


def write(tmp_path: Path, main: str, files: dict[str, str] | None = None, tokens: str = TOKEN + "\n") -> Path:
    (tmp_path / "tokens").write_text(tokens)
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    path = tmp_path / "snakeway.hcl"
    path.write_text(main)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def test_in_the_entry_file_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, f"server {{ version = 1 }}\nbind_admin = {{ port = 8440, {AUTH} }}\n{INGRESS}")
    admin = load_config(path).admin
    assert admin is not None
    assert (admin.interface, admin.port, admin.tls) == ("127.0.0.1", 8440, None)
    assert admin.token_file == tmp_path / "tokens"
    assert admin.tokens == (TOKEN.encode(),)
    assert TOKEN not in repr(admin)  # never in a log line that prints the configuration
    spec = listener_specs(load_config(path))[("127.0.0.1", 8440)]
    assert (spec.role, spec.scheme) == (Role.ADMIN, "http")


def test_in_an_included_ingress_file_with_internal_tls(tmp_path: Path) -> None:
    ingress = ('bind = { interface = "127.0.0.1", port = 8080 }\n'
               f'bind_admin = {{ interface = "::1", port = 8440, tls = {{ mode = "internal", domains = ["localhost"] }},'
               f' {AUTH.replace("tokens", "../tokens")} }}\n')
    path = write(tmp_path, 'server { version = 1 }\ninclude { ingresses = "ingress.d/*.hcl" }\n',
                 {"ingress.d/web.hcl": ingress})
    admin = load_config(path).admin
    assert admin is not None and admin.tls is not None
    assert (admin.interface, admin.tls.mode, admin.tls.default) == ("::1", TlsMode.INTERNAL, "localhost")
    assert listener_specs(load_config(path))[("::1", 8440)].scheme == "https"


def test_a_second_bind_admin_names_the_first(tmp_path: Path) -> None:
    ingress = f'bind = {{ port = 8080 }}\nbind_admin = {{ port = 8441, {AUTH.replace("tokens", "../tokens")} }}\n'
    path = write(tmp_path, f'server {{ version = 1 }}\nbind_admin = {{ port = 8440, {AUTH} }}\n'
                           'include { ingresses = "ingress.d/*.hcl" }\n', {"ingress.d/web.hcl": ingress})
    assert problems(path) == [
        f"{tmp_path / 'ingress.d/web.hcl'}:2: bind_admin: the admin listener is already set at {path}:2 "
        "(bind_admin); a server has one bind_admin"
    ]


@pytest.mark.parametrize("interface", ["all", "0.0.0.0", "::"])
def test_a_wildcard_interface_is_refused(tmp_path: Path, interface: str) -> None:
    path = write(tmp_path, f'server {{ version = 1 }}\nbind_admin = {{ interface = "{interface}", port = 8440, '
                           f'{AUTH} }}\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:2: bind_admin.interface: the admin listener must not listen on every "
                              "interface")


@pytest.mark.parametrize(
    ("tokens", "why"),
    [
        ("short\n", "line 1: a token must be at least 32 bytes, this one has 5"),
        ("\n\n", "no token in the file (one per line, each at least 32 bytes)"),
    ],
)
def test_a_bad_token_file_is_an_error_naming_it(tmp_path: Path, tokens: str, why: str) -> None:
    path = write(tmp_path, f"server {{ version = 1 }}\nbind_admin = {{ port = 8440, {AUTH} }}\n", tokens=tokens)
    assert problems(path) == [f"{path}:2: bind_admin.auth.bearer.token_file: {tmp_path / 'tokens'}: {why}"]


def test_a_missing_token_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'server { version = 1 }\nbind_admin = { port = 8440, auth = { bearer = { token_file = '
                           '"nope" } } }\n')
    assert problems(path) == [f"{path}:2: bind_admin.auth.bearer.token_file: file does not exist: "
                              f"{tmp_path / 'nope'}"]


def test_auth_is_required(tmp_path: Path) -> None:
    path = write(tmp_path, "server { version = 1 }\nbind_admin = { port = 8440 }\n")
    assert problems(path) == [f"{path}:2: bind_admin.auth: required key is missing"]


def test_acme_is_not_an_admin_tls_mode(tmp_path: Path) -> None:
    path = write(tmp_path, 'server { version = 1 }\nbind_admin = { port = 8440, tls = { mode = "acme", domains = '
                           f'["a.test"] }}, {AUTH} }}\n')
    assert problems(path) == [f'{path}:2: bind_admin.tls.mode: the admin listener takes mode "manual" or '
                              '"internal", got "acme"']


def test_the_admin_port_is_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, f"server {{ version = 1 }}\nbind_admin = {{ port = 8080, {AUTH} }}\n{INGRESS}")
    assert problems(path) == [f"{path}:2: bind_admin.port: port 8080 is already bound at {path}:4 "
                              "(ingress.web.bind.port); the admin listener needs a port of its own"]


def test_without_bind_admin_there_is_no_admin_listener(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"server {{ version = 1 }}\n{INGRESS}"))
    assert config.admin is None
    assert all(spec.role is not Role.ADMIN for spec in listener_specs(config).values())


def test_check_reads_the_admin_listeners_certificate_and_port(tmp_path: Path) -> None:
    ca = trustme.CA()
    one, other = write_leaf(ca, tmp_path, "localhost"), write_leaf(ca, tmp_path, "other.test")
    path = write(tmp_path, "server { version = 1 }\n"
                           f'bind_admin = {{ port = 8440, tls = {{ mode = "manual", cert = "{one.cert}", '
                           f'key = "{other.key}" }}, {AUTH} }}\n')
    table = tmp_path / "tcp"  # the kernel's table of sockets: 127.0.0.1:8440 is listening
    table.write_text(" sl local_address rem_address st\n 0: 0100007F:20F8 00000000:0000 0A 0\n")
    found = [str(f) for f in preflight.findings(load_config(path), datetime.now(UTC), proc_net=[table])]
    assert found == [
        f"{path}:2: bind_admin.tls.cert: {one.cert}: the private key does not match the certificate",
        f"{path}:2: bind_admin.port: warning: https://127.0.0.1:8440: something already listens on "
        "port 8440 (snakeway itself, if it is running?)",
    ]
