"""``check`` finds what would stop start-up, without binding: certificate files, names, paths; ports in use."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from snakeway import preflight
from snakeway.config.load import load_config
from snakeway.preflight import in_use, listening_sockets, served_names, uncovered
from snakeway.tls.certinfo import CertificateError
from tests.startup_cases import CASES, Files, line_of, make_files, port_in_use, write_config

NOW = datetime.now(UTC)

# --- the pure decisions ---------------------------------------------------------------------------------------


def test_a_pair_names_the_file_at_fault(tmp_path: Path) -> None:
    f = make_files(tmp_path)
    cert, key, other, junk = (p.read_bytes() for p in (f.cert, f.key, f.other_key, f.not_pem))
    assert served_names(cert, key, cert="a.crt", key="a.key", now=NOW) == ("a.test",)
    failures = {}
    for name, (c, k) in {"mismatch": (cert, other), "cert": (junk, key), "key": (cert, junk)}.items():
        with pytest.raises(CertificateError) as info:
            served_names(c, k, cert="a.crt", key="a.key", now=NOW)
        failures[name] = (info.value.source, info.value.reason)
    assert failures == {
        "mismatch": ("a.crt", "the private key does not match the certificate"),
        "cert": ("a.crt", "cannot read the certificate chain (not PEM: MalformedFraming)"),
        "key": ("a.key", "cannot read the private key (not PEM: MalformedFraming)"),
    }
    old = trustme.CA().issue_cert("a.test", not_before=NOW - timedelta(days=2), not_after=NOW - timedelta(days=1))
    with pytest.raises(CertificateError, match="^a.crt: the certificate expired on "):
        served_names(old.cert_chain_pems[0].bytes(), old.private_key_pem.bytes(), cert="a.crt", key="a.key", now=NOW)


def test_which_names_a_certificate_covers() -> None:
    assert not uncovered(["a.test"], "a.test")
    assert uncovered(["a.test"], "www.a.test")
    assert not uncovered(["*.a.test"], "www.a.test")
    assert uncovered(["*.a.test"], "a.test") and uncovered(["*.a.test"], "x.www.a.test")
    assert not uncovered(["*.a.test"], "*.a.test") and uncovered(["www.a.test"], "*.a.test")
    assert not uncovered([], "*")  # a catch-all route claims no name
    assert not uncovered(["::1"], "[::1]") and uncovered(["127.0.0.1"], "[::1]")


# Two listening sockets (127.0.0.1:8080, 0.0.0.0:443), one connection (not listening) on port 22.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:0016 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
"""
# ::1 port 8443, and ::ffff:127.0.0.2 port 9000 (an IPv4 address on a dual-stack socket).
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:20FB 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 0000000000000000FFFF00000200007F:2328 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_the_kernels_table_of_listening_sockets() -> None:
    assert listening_sockets(TCP) == {("127.0.0.1", 8080), ("0.0.0.0", 443)}
    assert listening_sockets(TCP6) == {("::1", 8443), ("127.0.0.2", 9000)}


def test_a_port_is_in_use_where_the_addresses_overlap() -> None:
    listening = listening_sockets(TCP)
    assert in_use(("127.0.0.1", 8080), listening) and in_use(("0.0.0.0", 8080), listening)
    assert not in_use(("127.0.0.2", 8080), listening) and not in_use(("127.0.0.1", 8081), listening)
    assert in_use(("192.0.2.1", 443), listening)  # 0.0.0.0 takes the port on every address
    assert not in_use(("127.0.0.1", 22), listening)  # a connection, not a listener


@given(st.sets(st.tuples(st.sampled_from(["127.0.0.1", "0.0.0.0", "::", "::1"]), st.integers(1, 5))),
       st.sampled_from(["127.0.0.1", "0.0.0.0", "::1"]), st.integers(1, 5))
def test_only_a_port_someone_listens_on_is_in_use(listening: set[tuple[str, int]], interface: str, port: int) -> None:
    assert in_use((interface, port), listening) <= any(bound == port for _, bound in listening)
    assert in_use((interface, port), listening | {(interface, port)})


def test_findings_over_a_given_table_of_sockets(tmp_path: Path) -> None:
    f = make_files(tmp_path)
    config_path = write_config(
        tmp_path, workers=1, port=8443, hosts='"a.test", "b.test"',
        tls=f'tls = {{ mode = "manual", cert = "{f.cert}", key = "{f.key}", default = "c.test" }}',
    )
    table = tmp_path / "tcp"
    table.write_text(TCP.replace("0100007F:1F90", "0100007F:20FB"))  # 127.0.0.1:8443
    found = preflight.findings(load_config(config_path), NOW, proc_net=[table, tmp_path / "no-such-table"])
    where = f"{config_path}:{line_of(config_path, 'tls =')}: ingress.web.bind"
    assert [str(finding) for finding in found] == [
        f"{where}.tls.default: no certificate on 127.0.0.1:8443 covers 'c.test' (they cover a.test); "
        "handshakes without a name it knows would be refused",
        f"{config_path}:{line_of(config_path, 'routes ')}: ingress.web.services[0].routes[0].hosts[1]: no certificate "
        "on 127.0.0.1:8443 covers 'b.test' (they cover a.test); clients asking for it would refuse the certificate "
        "they get",
        f"{config_path}:{line_of(config_path, 'port ')}: ingress.web.bind.port: warning: https://127.0.0.1:8443: "
        "something already listens on port 8443 (snakeway itself, if it is running?)",
    ]
    assert [finding.warning for finding in found] == [False, False, True]


# --- `python -m snakeway check`, a real process per mistake -----------------------------------------------------


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakeway", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def _uncovered_route(d: Path, f: Files) -> tuple[Path, str]:
    tls = f'tls = {{ mode = "manual", cert = "{f.cert}", key = "{f.key}" }}'
    config = write_config(d, workers=1, tls=tls, hosts='"*", "www.a.test"')
    return config, (
        f"{config}:{line_of(config, 'routes ')}: ingress.web.services[0].routes[0].hosts[1]: no certificate on "
        f"127.0.0.1:{load_config(config).ingresses[0].bind.port} covers 'www.a.test' (they cover a.test); "
        "clients asking for it would refuse the certificate they get"
    )


def _ca_file_not_pem(d: Path, f: Files) -> tuple[Path, str]:
    acme = (f'tls_automation = {{ acme = {{ directory_url = "https://127.0.0.1:9/dir", ca_file = "{f.not_pem}" }} '
            "}")
    config = write_config(d, workers=1, server=acme)
    return config, (f"{config}:{line_of(config, 'tls_automation')}: server.tls_automation.acme.ca_file: {f.not_pem}: "
                    "cannot read the certificate chain (not PEM: MalformedFraming)")


EXTRA = {"uncovered_route": _uncovered_route, "ca_file_not_pem": _ca_file_not_pem}
NAMES = [case.name for case in CASES] + list(EXTRA)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.CompletedProcess[str], str]]]:
    jobs = {}
    for case in CASES:
        directory = tmp_path_factory.mktemp(case.name)
        jobs[case.name] = case.write(directory, make_files(directory), 1)
    for name, write in EXTRA.items():
        directory = tmp_path_factory.mktemp(name)
        jobs[name] = write(directory, make_files(directory))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(check, config) for name, (config, _) in jobs.items()}
        yield {name: (future.result(), jobs[name][1]) for name, future in futures.items()}


@pytest.mark.parametrize("name", NAMES)
def test_check_reports_the_mistake_serve_would_stop_on(
    checked: dict[str, tuple[subprocess.CompletedProcess[str], str]], name: str
) -> None:
    result, message = checked[name]
    assert (result.returncode, result.stderr, result.stdout) == (1, f"{message}\n", "")


def test_check_warns_of_a_port_in_use_and_still_says_valid(tmp_path: Path) -> None:
    with ExitStack() as stack:
        port = stack.enter_context(port_in_use())
        config = write_config(tmp_path, workers=1, port=port)
        result = check(config)
    assert (result.returncode, result.stdout) == (0, f"{config}: configuration is valid\n")
    assert result.stderr == (
        f"{config}:{line_of(config, 'port ')}: ingress.web.bind.port: warning: http://127.0.0.1:{port}: something "
        f"already listens on port {port} (snakeway itself, if it is running?)\n"
    )


def test_an_untouched_certificate_pair_and_free_port_are_valid(tmp_path: Path) -> None:
    f = make_files(tmp_path)
    config = write_config(tmp_path, workers=2, tls=f'tls = {{ mode = "manual", cert = "{f.cert}", key = "{f.key}" }}',
                          hosts='"a.test"')
    result = check(config)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", f"{config}: configuration is valid\n")


