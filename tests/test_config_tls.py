"""The TLS keys of the configuration: ``server.state_dir``, ``server.tls_automation``,
``bind.tls`` and ``bind.redirect_http_to_https`` (snakeway.config.load and _tls).

Problems are asserted as the user sees them: ``FILE:LINE: key.path: message``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from snakeway.config.load import HTTP01_NEEDS_PLAIN, load_config
from snakeway.config.model import (
    AcmeSettings,
    Bind,
    CertFiles,
    CertStoreSettings,
    Challenge,
    Hsts,
    KeyType,
    Redirect,
    ServerSettings,
    StoreType,
    Tls,
    TlsAutomation,
    TlsMode,
    default_state_dir,
)
from snakeway.errors import ConfigError

# A valid entry file; error cases below change one thing in it.
BASE = """\
server {
  version = 1
  tls_automation = {
    acme = { contact_email = "ops@example.com" }
  }
}
ingress "site" {
  bind = {
    port = 443
    tls  = { mode = "acme", domains = ["example.com"] }
    redirect_http_to_https = { port = 80 }
  }
}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).splitlines()


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of ``needle``: expected lines are found, not counted by hand."""
    assert needle in text, needle
    return text[: text.index(needle)].count("\n") + 1


@pytest.fixture
def pems(tmp_path: Path) -> Path:
    """``certs/{a,b}.{pem,key}`` under ``tmp_path`` (the loader only checks that they exist)."""
    for name in ("a.pem", "a.key", "b.pem", "b.key"):
        write(tmp_path, f"certs/{name}", "-----BEGIN-----\n")
    return tmp_path / "certs"


def test_full_tls_config_builds_the_exact_model(tmp_path: Path, pems: Path) -> None:
    write(tmp_path, "pebble-ca.pem", "-----BEGIN CERTIFICATE-----\n")
    main = write(
        tmp_path,
        "main.hcl",
        """\
        server {
          version   = 1
          state_dir = "state"
          tls_automation = {
            renew_within_days      = 20.5
            check_interval_seconds = 60
            acme = {
              directory_url = "https://localhost:14000/dir"
              contact_email = ["ops@example.com", "Admin@Bücher.example"]
              ca_file       = "pebble-ca.pem"
              data_dir      = "/var/lib/snakeway/acme"
            }
            cert_store = { type = "filesystem", cert_dir = "certs-out" }
          }
        }
        ingress "site" {
          bind = {
            interface = "all", port = 443
            tls = { mode = "acme", domains = ["Example.com", "www.bücher.example"], challenge = "tlsalpn01",
                    key_type = "rsa2048", handshake_timeout_seconds = 2.5 }
            redirect_http_to_https = { port = 80, status = 301 }
          }
        }
        include {
          ingresses = "sites/*.hcl"
        }
        """,
    )
    write(tmp_path, "sites/manual.hcl", 'bind = { port = 8443, tls = { mode = "manual", cert = "../certs/a.pem", '
          'key = "../certs/a.key" } }\n')
    write(tmp_path, "sites/multi.hcl", 'bind = { port = 9443, tls = { mode = "manual", default = "A.test", '
          'certs = [{ cert = "../certs/a.pem", key = "../certs/a.key" }, '
          '{ cert = "../certs/b.pem", key = "../certs/b.key" }] } }\n')
    write(tmp_path, "sites/local.hcl", 'bind = { interface = "loopback", port = 10443, tls = { mode = "internal", '
          'domains = ["localhost", "*.local.test", "127.0.0.1", "[::1]"], default = "x.local.test" } }\n')
    config = load_config(main)
    assert config.server == ServerSettings(
        state_dir=tmp_path / "state",
        tls_automation=TlsAutomation(
            renew_within_days=20.5,
            check_interval_seconds=60.0,
            acme=AcmeSettings(
                directory_url="https://localhost:14000/dir",
                contact_email=("ops@example.com", "Admin@Bücher.example"),
                ca_file=tmp_path / "pebble-ca.pem",
                data_dir=Path("/var/lib/snakeway/acme"),
            ),
            cert_store=CertStoreSettings(type=StoreType.FILESYSTEM, cert_dir=tmp_path / "certs-out"),
        ),
    )
    a, b = CertFiles(pems / "a.pem", pems / "a.key"), CertFiles(pems / "b.pem", pems / "b.key")
    assert [i.bind for i in config.ingresses] == [
        Bind(
            "0.0.0.0",
            443,
            tls=Tls(
                mode=TlsMode.ACME,
                domains=("example.com", "www.xn--bcher-kva.example"),
                challenge=Challenge.TLS_ALPN_01,
                key_type=KeyType.RSA2048,
                handshake_timeout_seconds=2.5,
            ),
            redirect=Redirect(port=80, status=301),
        ),
        Bind(
            "127.0.0.1",
            10443,
            tls=Tls(
                mode=TlsMode.INTERNAL,
                domains=("localhost", "*.local.test", "127.0.0.1", "::1"),
                default="x.local.test",
            ),
        ),
        Bind("0.0.0.0", 8443, tls=Tls(mode=TlsMode.MANUAL, certs=(a,))),
        Bind("0.0.0.0", 9443, tls=Tls(mode=TlsMode.MANUAL, certs=(a, b), default="a.test")),
    ]


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    main = write(tmp_path, "main.hcl", BASE)
    server = load_config(main).server
    assert server.state_dir == default_state_dir() == tmp_path / "xdg" / "snakeway"
    assert server.tls_automation == TlsAutomation(acme=AcmeSettings(contact_email=("ops@example.com",)))
    assert server.tls_automation.acme.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert server.tls_automation.cert_store == CertStoreSettings(StoreType.FILESYSTEM, None)
    assert load_config(main).ingresses[0].bind == Bind(
        "0.0.0.0",
        443,
        tls=Tls(TlsMode.ACME, domains=("example.com",), challenge=Challenge.HTTP_01, key_type=KeyType.ECDSA_P256,
                handshake_timeout_seconds=10.0),
        redirect=Redirect(80, status=308),
    )


def test_no_tls_automation_and_null_mean_none(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "a.hcl", "server {\n  version = 1\n}\n")).server.tls_automation is None
    text = "server {\n  version = 1\n  tls_automation = null\n}\n"
    assert load_config(write(tmp_path, "b.hcl", text)).server.tls_automation is None


def test_memory_store_and_local_http_ca(tmp_path: Path) -> None:
    text = BASE.replace(
        'acme = { contact_email = "ops@example.com" }',
        'acme = { directory_url = "http://127.0.0.1:14000/dir" }\n    cert_store = { type = "memory" }',
    )
    automation = load_config(write(tmp_path, "main.hcl", text)).server.tls_automation
    assert automation is not None
    assert automation.acme.directory_url == "http://127.0.0.1:14000/dir"
    assert automation.cert_store == CertStoreSettings(type=StoreType.MEMORY)


@pytest.mark.parametrize(
    ("written", "challenge"),
    [("http-01", Challenge.HTTP_01), ("http01", Challenge.HTTP_01), ("tls-alpn-01", Challenge.TLS_ALPN_01),
     ("tlsalpn01", Challenge.TLS_ALPN_01)],
)
def test_challenge_spellings(tmp_path: Path, written: str, challenge: Challenge) -> None:
    text = BASE.replace('domains = ["example.com"]', f'domains = ["example.com"], challenge = "{written}"')
    tls = load_config(write(tmp_path, "main.hcl", text)).ingresses[0].bind.tls
    assert tls is not None
    assert tls.challenge is challenge


_TLS = 'tls  = { mode = "acme", domains = ["example.com"] }'
_AUTOMATION = 'acme = { contact_email = "ops@example.com" }'


@pytest.mark.parametrize(
    ("old", "new", "needle", "key_path", "message"),
    [
        # server
        ("version = 1", "version = 1\n  state_dir = 5", "state_dir", "server.state_dir",
         "expected a string, got number 5"),
        ("version = 1", 'version = 1\n  state_dir = ""', "state_dir", "server.state_dir", "must not be empty"),
        (_AUTOMATION, "renew_within_days = 0", "renew", "server.tls_automation.renew_within_days",
         "must be greater than 0, got 0"),
        (_AUTOMATION, 'renew_within_days = "30d"', "renew", "server.tls_automation.renew_within_days",
         'expected a number of days, got string "30d"'),
        (_AUTOMATION, "check_interval_seconds = -1", "check_interval", "server.tls_automation.check_interval_seconds",
         "must be greater than 0, got -1"),
        (_AUTOMATION, "renew_days = 30", "renew_days", "server.tls_automation.renew_days",
         'unknown key "renew_days" (did you mean "renew_within_days"?); allowed keys: renew_within_days, '
         "check_interval_seconds, acme, cert_store, issuer_fallback_after_failures, hooks"),
        ('tls_automation = {\n    acme = { contact_email = "ops@example.com" }\n  }', "tls_automation = true",
         "tls_automation", "server.tls_automation",
         "expected an object, got bool true"),
        ('contact_email = "ops@example.com"', 'directory_url = "http://ca.example/dir"', "directory_url",
         "server.tls_automation.acme.directory_url",
         'must be an https:// URL (http:// only for localhost, 127.0.0.1 or [::1]), got "http://ca.example/dir"'),
        ('contact_email = "ops@example.com"', 'directory_url = "ca.example/dir"', "directory_url",
         "server.tls_automation.acme.directory_url", 'expected an https:// URL, got "ca.example/dir"'),
        ('contact_email = "ops@example.com"', 'directory_url = "https://ca.example:x/"', "directory_url",
         "server.tls_automation.acme.directory_url", 'expected an https:// URL, got "https://ca.example:x/"'),
        ('contact_email = "ops@example.com"', 'directory_url = "http://1[7.0.0.1:14000/dir"', "directory_url",
         "server.tls_automation.acme.directory_url", 'expected an https:// URL, got "http://1[7.0.0.1:14000/dir"'),
        ('contact_email = "ops@example.com"', 'directory_url = "https://[::1/dir"', "directory_url",
         "server.tls_automation.acme.directory_url", 'expected an https:// URL, got "https://[::1/dir"'),
        ('"ops@example.com"', '"ops"', "contact_email", "server.tls_automation.acme.contact_email",
         'expected an email address, got "ops"'),
        ('"ops@example.com"', '"ops@localhost"', "contact_email", "server.tls_automation.acme.contact_email",
         'expected an email address, got "ops@localhost"'),
        ('"ops@example.com"', '["ops@example.com", "mailto:a@example.com"]', "contact_email",
         "server.tls_automation.acme.contact_email[1]",
         'write the address without mailto:, got "mailto:a@example.com"'),
        ('"ops@example.com"', "5", "contact_email", "server.tls_automation.acme.contact_email",
         "expected an email address or a list of them, got number 5"),
        ('contact_email = "ops@example.com"', 'ca_file = "missing.pem"', "ca_file",
         "server.tls_automation.acme.ca_file", "file does not exist: {dir}/missing.pem"),
        ('contact_email = "ops@example.com"', 'ca_file = "."', "ca_file",
         "server.tls_automation.acme.ca_file", "not a file: {dir}"),
        ('contact_email = "ops@example.com"', "email = 1", "email", "server.tls_automation.acme.email",
         'unknown key "email"; allowed keys: directory_url, contact_email, ca_file, data_dir, '
         "max_concurrent_orders, rate_limits, profile, preferred_chain, eab"),
        (_AUTOMATION, 'cert_store = { type = "memory", cert_dir = "certs" }', "cert_store",
         "server.tls_automation.cert_store.cert_dir", 'only applies with type = "filesystem", not "memory"'),
        (_AUTOMATION, 'cert_store = { type = "s3" }', "cert_store", "server.tls_automation.cert_store.type",
         'unknown store type "s3"; expected one of: filesystem, memory, redis'),
        # bind.tls: shape and mode
        (_TLS, "tls = {}", "tls =", "ingress.site.bind.tls.mode", "required key is missing"),
        (_TLS, 'tls = "acme"', "tls =", "ingress.site.bind.tls", 'expected an object, got string "acme"'),
        (_TLS, 'tls = { mode = "auto", domains = ["example.com"] }', "tls =", "ingress.site.bind.tls.mode",
         'unknown tls mode "auto"; expected one of: manual, internal, acme'),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"], domain = "x" }', "tls =",
         "ingress.site.bind.tls.domain",
         'unknown key "domain" (did you mean "domains"?); allowed keys: mode, handshake_timeout_seconds, hsts, domains, '
         "challenge, key_type, certificate_per_domain"),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"], handshake_timeout_seconds = 0 }', "tls =",
         "ingress.site.bind.tls.handshake_timeout_seconds", "must be greater than 0, got 0"),
        # hsts
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"],\n  hsts = { preload = true, include_subdomains = true,\n'
         '  max_age_seconds = 86400 } }', "max_age_seconds", "ingress.site.bind.tls.hsts.max_age_seconds",
         "preload needs max_age_seconds of at least 31536000 (one year), got 86400"),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"],\n  hsts = { preload = true } }', "hsts",
         "ingress.site.bind.tls.hsts.include_subdomains", "preload needs include_subdomains = true"),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"],\n  hsts = { max_age_seconds = -1 } }', "hsts",
         "ingress.site.bind.tls.hsts.max_age_seconds", "must be at least 0, got -1"),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"],\n  hsts = { max_age = 1 } }', "hsts",
         "ingress.site.bind.tls.hsts.max_age",
         'unknown key "max_age" (did you mean "max_age_seconds"?); allowed keys: max_age_seconds, '
         "include_subdomains, preload"),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"],\n  hsts = true }', "hsts",
         "ingress.site.bind.tls.hsts", "expected an object, got bool true"),
        # acme
        (_TLS, 'tls = { mode = "acme" }', "tls =", "ingress.site.bind.tls.domains", "required key is missing"),
        (_TLS, 'tls = { mode = "acme", domains = [] }', "tls =", "ingress.site.bind.tls.domains", "must not be empty"),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com", "*.example.com"] }', "tls =",
         "ingress.site.bind.tls.domains[1]", 'wildcard "*.example.com" cannot be validated with http-01 or '
         "tls-alpn-01 (it needs dns-01); list the names instead"),
        (_TLS, 'tls = { mode = "acme", domains = ["10.0.0.1"] }', "tls =", "ingress.site.bind.tls.domains[0]",
         'expected a domain name, got the IP address "10.0.0.1"'),
        (_TLS, 'tls = { mode = "acme", domains = ["*"] }', "tls =", "ingress.site.bind.tls.domains[0]",
         'invalid domain "*": expected a host name (without port) or "*.domain"'),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com:443"] }', "tls =", "ingress.site.bind.tls.domains[0]",
         'invalid domain "example.com:443": expected a host name (without port) or "*.domain"'),
        # a name no CA issues for, and the certificate store cannot keep: refused when the file is checked
        (_TLS, 'tls = { mode = "acme", domains = ["my_host.example.com"] }', "tls =",
         "ingress.site.bind.tls.domains[0]", 'invalid domain "my_host.example.com": a certificate name has letters, '
         "digits and hyphens only: a CA refuses '_'"),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"], challenge = "dns-01" }', "tls =",
         "ingress.site.bind.tls.challenge",
         'unknown challenge "dns-01"; expected one of: http-01, http01, tls-alpn-01, tlsalpn01'),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"], key_type = "rsa4096" }', "tls =",
         "ingress.site.bind.tls.key_type", 'unknown key type "rsa4096"; expected one of: ecdsa-p256, rsa2048'),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"], cert = "a.pem" }', "tls =",
         "ingress.site.bind.tls.cert", '"cert" does not apply to mode "acme"'),
        (_TLS, 'tls = { mode = "acme", domains = ["example.com"], default = "example.com" }', "tls =",
         "ingress.site.bind.tls.default", '"default" does not apply to mode "acme"'),
        # internal
        (_TLS, 'tls = { mode = "internal" }', "tls =", "ingress.site.bind.tls.domains", "required key is missing"),
        (_TLS, 'tls = { mode = "internal", domains = ["*.a.test"], default = "a.test" }', "tls =",
         "ingress.site.bind.tls.default", '"a.test" is not covered by domains'),
        (_TLS, 'tls = { mode = "internal", domains = ["*.0.0.1"], default = "127.0.0.1" }', "tls =",
         "ingress.site.bind.tls.default", '"127.0.0.1" is not covered by domains'),
        (_TLS, 'tls = { mode = "internal", domains = ["a:b"] }', "tls =", "ingress.site.bind.tls.domains[0]",
         'invalid domain "a:b": expected a host name (without port), "*.domain" or an IP address'),
        (_TLS, 'tls = { mode = "internal", domains = ["a.test", "*.My_Host.test"] }', "tls =",
         "ingress.site.bind.tls.domains[1]", 'invalid domain "*.My_Host.test": a certificate name has letters, '
         "digits and hyphens only: a CA refuses '_'"),
        (_TLS, 'tls = { mode = "internal", domains = ["a.test"], challenge = "http-01" }', "tls =",
         "ingress.site.bind.tls.challenge", '"challenge" does not apply to mode "internal"'),
        # manual
        (_TLS, 'tls = { mode = "manual" }', "tls =", "ingress.site.bind.tls",
         'mode "manual" needs cert and key, or certs'),
        (_TLS, 'tls = { mode = "manual", cert = "certs/a.pem" }', "tls =", "ingress.site.bind.tls.key",
         "required key is missing (cert and key go together)"),
        (_TLS, 'tls = { mode = "manual", key = "certs/a.key" }', "tls =", "ingress.site.bind.tls.cert",
         "required key is missing (cert and key go together)"),
        (_TLS, 'tls = { mode = "manual", cert = "certs/a.pem", key = "certs/a.key",\n'
         '          certs = [{ cert = "certs/b.pem", key = "certs/b.key" }] }', "certs = [",
         "ingress.site.bind.tls.certs", "use either cert and key, or certs, not both"),
        (_TLS, 'tls = { mode = "manual", cert = "certs/nope.pem", key = "certs/a.key" }', "tls =",
         "ingress.site.bind.tls.cert", "file does not exist: {dir}/certs/nope.pem"),
        (_TLS, 'tls = { mode = "manual", certs = [] }', "tls =", "ingress.site.bind.tls.certs", "must not be empty"),
        (_TLS, 'tls = { mode = "manual", certs = [{ cert = "certs/a.pem" }] }', "tls =",
         "ingress.site.bind.tls.certs[0].key", "required key is missing"),
        (_TLS, 'tls = { mode = "manual", cert = "certs/a.pem", key = "certs/a.key", domains = ["a.test"] }', "tls =",
         "ingress.site.bind.tls.domains", '"domains" does not apply to mode "manual"'),
        # acme needs tls_automation
        ('  tls_automation = {\n    acme = { contact_email = "ops@example.com" }\n  }\n', "", "mode = ",
         "ingress.site.bind.tls.mode", 'mode "acme" needs server.tls_automation (ACME account and renewal settings)'),
        # redirect_http_to_https
        ("{ port = 80 }", "{ port = 80, status = 300 }", "status", "ingress.site.bind.redirect_http_to_https.status",
         "must be one of 301, 302, 307, 308, got 300"),
        ("{ port = 80 }", "{ status = 301 }", "redirect", "ingress.site.bind.redirect_http_to_https.port",
         "required key is missing"),
        ("{ port = 80 }", "{ port = 443 }", "redirect", "ingress.site.bind.redirect_http_to_https.port",
         "must differ from the bind's own port 443"),
        ("{ port = 80 }", "80", "redirect", "ingress.site.bind.redirect_http_to_https",
         "expected an object, got number 80"),
    ],
)
def test_each_problem_names_file_line_and_key(
    tmp_path: Path, pems: Path, old: str, new: str, needle: str, key_path: str, message: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    main = write(tmp_path, "main.hcl", text)
    message = message.replace("{dir}", str(tmp_path.resolve()))
    assert problems(main) == [f"{main}:{line_of(text, needle)}: {key_path}: {message}"]


def test_redirect_needs_tls(tmp_path: Path) -> None:
    text = "server {\n  version = 1\n}\n" + 'ingress "web" {\n  bind = { port = 8080, redirect_http_to_https = ' \
        "{ port = 80 } }\n}\n"
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [f"{main}:5: ingress.web.bind.redirect_http_to_https: only applies to a bind with tls"]


def test_redirect_port_used_by_a_later_bind(tmp_path: Path) -> None:
    main = write(tmp_path, "main.hcl", BASE + 'ingress "plain" {\n  bind = { port = 80 }\n}\n')
    assert problems(main) == [
        f"{main}:15: ingress.plain.bind.port: port 80 is already used by the HTTP-to-HTTPS redirect at {main}:11 "
        "(ingress.site.bind.redirect_http_to_https.port)"
    ]


def test_redirect_port_used_by_an_earlier_bind(tmp_path: Path) -> None:
    text = BASE.replace('ingress "site"', 'ingress "plain" {\n  bind = { port = 80 }\n}\ningress "site"')
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f"{main}:14: ingress.site.bind.redirect_http_to_https.port: port 80 is already bound at {main}:8 "
        "(ingress.plain.bind.port); the redirect listener needs a port of its own"
    ]


def test_redirects_share_a_port_only_from_the_same_listener(tmp_path: Path) -> None:
    # "more" shares the listener of "site" (same interface, port 443) and so its redirect; "other" and
    # "status" do not: another listener, another status.
    text = BASE + textwrap.dedent(
        """\
        ingress "more" {
          bind = { port = 443, tls = { mode = "internal", domains = ["more.test"] }
                   redirect_http_to_https = { port = 80 } }
        }
        ingress "other" {
          bind = { port = 8443, tls = { mode = "internal", domains = ["other.test"] }
                   redirect_http_to_https = { port = 80 } }
        }
        ingress "status" {
          bind = { port = 443, tls = { mode = "internal", domains = ["status.test"] }
                   redirect_http_to_https = { port = 80, status = 302 } }
        }
        """
    )
    main = write(tmp_path, "main.hcl", text)
    first = f"{main}:{line_of(text, 'redirect_http_to_https')} (ingress.site.bind.redirect_http_to_https.port)"
    clash = (f"port 80 is already used by another HTTP-to-HTTPS redirect at {first}; redirects share a port only "
             "from the same listener with the same status")
    assert problems(main) == [
        f"{main}:{line_of(text, 'other.test') + 1}: ingress.other.bind.redirect_http_to_https.port: {clash}",
        f"{main}:{line_of(text, 'status = 302')}: ingress.status.bind.redirect_http_to_https.port: {clash}",
    ]


def test_a_shared_port_is_all_tls_or_none(tmp_path: Path) -> None:
    main = write(tmp_path, "main.hcl", BASE + 'ingress "plain" {\n  bind = { port = 443 }\n}\n')
    assert problems(main) == [
        f"{main}:15: ingress.plain.bind.port: port 443 is already bound with tls at {main}:9 "
        "(ingress.site.bind.port); ingresses that share a port must all use tls or none"
    ]


def test_hsts_builds_the_model_and_its_header(tmp_path: Path) -> None:
    text = BASE.replace(
        'domains = ["example.com"] }',
        'domains = ["example.com"],\n'
        "  hsts = { max_age_seconds = 63072000, include_subdomains = true, preload = true } }",
    )
    config = load_config(write(tmp_path, "main.hcl", text))
    hsts = config.ingresses[0].bind.tls.hsts  # type: ignore[union-attr]
    assert hsts == Hsts(max_age_seconds=63072000, include_subdomains=True, preload=True)
    assert hsts.value == b"max-age=63072000; includeSubDomains; preload"
    assert Hsts(max_age_seconds=0).value == b"max-age=0"
    off = load_config(write(tmp_path, "off.hcl", BASE))
    assert off.ingresses[0].bind.tls.hsts is None  # type: ignore[union-attr]


def test_hsts_defaults_to_one_year(tmp_path: Path) -> None:
    text = BASE.replace('domains = ["example.com"] }', 'domains = ["example.com"], hsts = {} }')
    config = load_config(write(tmp_path, "main.hcl", text))
    assert config.ingresses[0].bind.tls.hsts.value == b"max-age=31536000"  # type: ignore[union-attr]


def test_a_shared_port_has_one_hsts(tmp_path: Path) -> None:
    text = BASE.replace('domains = ["example.com"] }', 'domains = ["example.com"], hsts = {} }') + (
        'ingress "more" {\n  bind = { port = 443, tls = { mode = "internal", domains = ["more.test"] } }\n}\n'
        'ingress "same" {\n  bind = { port = 443, tls = { mode = "internal", domains = ["s.test"], hsts = {} } }\n}\n'
    )
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f"{main}:{line_of(text, 'more.test')}: ingress.more.bind.tls: port 443 is already bound with other hsts "
        f"settings at {main}:9 (ingress.site.bind.port); ingresses that share a port must have the same hsts"
    ]


def test_http01_needs_a_plain_listener(tmp_path: Path) -> None:
    text = BASE.replace("    redirect_http_to_https = { port = 80 }\n", "")
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [f"{main}:10: ingress.site.bind.tls.challenge: {HTTP01_NEEDS_PLAIN}"]
    text = text.replace('domains = ["example.com"]', 'domains = ["example.com"]\n            challenge = "http01"')
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [f"{main}:11: ingress.site.bind.tls.challenge: {HTTP01_NEEDS_PLAIN}"]


def test_http01_is_satisfied_by_any_plain_bind_even_in_a_later_file(tmp_path: Path) -> None:
    text = BASE.replace("    redirect_http_to_https = { port = 80 }\n", "")
    main = write(tmp_path, "main.hcl", text + 'include {\n  ingresses = "*.d/*.hcl"\n}\n')
    write(tmp_path, "sites.d/plain.hcl", 'bind = { interface = "loopback", port = 8080 }\n')
    assert [i.name for i in load_config(main).ingresses] == ["site", "plain"]


def test_tls_alpn01_needs_no_plain_listener(tmp_path: Path) -> None:
    text = BASE.replace("    redirect_http_to_https = { port = 80 }\n", "").replace(
        'domains = ["example.com"]', 'domains = ["example.com"], challenge = "tls-alpn-01"'
    )
    assert load_config(write(tmp_path, "main.hcl", text)).ingresses[0].bind.redirect is None


def test_no_http01_complaint_while_a_bind_is_broken(tmp_path: Path) -> None:
    # The broken bind may have been the plain listener: only its own problem is reported.
    text = BASE.replace("    redirect_http_to_https = { port = 80 }\n", "")
    main = write(tmp_path, "main.hcl", text + 'ingress "plain" {\n  bind = { port = "80" }\n}\n')
    assert problems(main) == [f'{main}:14: ingress.plain.bind.port: expected an integer, got string "80"']


def test_manual_paths_are_relative_to_the_file_naming_them(tmp_path: Path, pems: Path) -> None:
    main = write(tmp_path, "main.hcl", "server {\n  version = 1\n}\ninclude {\n  ingresses = \"d/*.hcl\"\n}\n")
    write(tmp_path, "d/site.hcl", 'bind = { port = 443, tls = { mode = "manual", cert = "a.pem", key = "a.key" } }\n')
    assert problems(main) == [
        f"{tmp_path / 'd/site.hcl'}:1: bind.tls.cert: file does not exist: {tmp_path.resolve() / 'd/a.pem'}",
        f"{tmp_path / 'd/site.hcl'}:1: bind.tls.key: file does not exist: {tmp_path.resolve() / 'd/a.key'}",
    ]


def test_certificate_per_domain_asks_for_one_certificate_per_name(tmp_path: Path) -> None:
    from snakeway.acme.managed import managed_certs

    text = BASE.replace('domains = ["example.com"]', 'domains = ["example.com", "www.example.com"], '
                        'certificate_per_domain = true')
    config = load_config(write(tmp_path, "main.hcl", text))
    assert [(c.cert_id, c.domains) for c in managed_certs(config)] == [
        ("acme:example.com", ("example.com",)),
        ("acme:www.example.com", ("www.example.com",)),
    ]
    shared = load_config(write(tmp_path, "main.hcl", BASE.replace('"example.com"]', '"example.com", "www.example.com"]')))
    assert [(c.cert_id, c.domains) for c in managed_certs(shared)] == [
        ("acme:example.com", ("example.com", "www.example.com"))
    ]


def test_two_listeners_cannot_want_different_certificates_under_one_name(tmp_path: Path) -> None:
    text = BASE + textwrap.dedent(
        """\
        ingress "other" {
          bind = { port = 8443, tls = { mode = "acme", domains = ["www.example.com", "example.com"],
                                        certificate_per_domain = true } }
        }
        ingress "more" {
          bind = { port = 9443, tls = { mode = "acme", domains = ["example.com", "api.example.com"] } }
        }
        """
    )
    main = write(tmp_path, "main.hcl", text)
    first = f"{main}:{line_of(text, 'tls  =')} (ingress.site.bind.tls.domains)"
    assert problems(main) == [
        f"{main}:{line_of(text, 'port = 9443')}: ingress.more.bind.tls.domains: the certificate for "
        f"\"example.com\" is already asked for at {first} with domains ['example.com']; listeners share a "
        "certificate only with the same domains in the same order"
    ]
