"""Several ACME CAs and their per-CA keys in the configuration: ``tls_automation.acme`` as a list,
``issuer_fallback_after_failures``, ``acme.profile``, ``acme.preferred_chain`` and ``acme.eab``
(snakeway.config._tls). Problems are asserted as the user sees them: ``FILE:LINE: key.path: message``."""

from __future__ import annotations

from pathlib import Path

import pytest

from snakeway.config.load import load_config
from snakeway.config.model import AcmeSettings, ExternalAccountBinding, TlsAutomation
from tests.test_config_tls import line_of, problems, write

MAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"  # base64url, as ZeroSSL hands it out

BASE = """\
server {
  version = 1
  tls_automation = {
    ACME
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

TWO = """acme = [
      { directory_url = "https://acme-v02.api.letsencrypt.org/directory", profile = "shortlived" },
      { directory_url = "https://acme.zerossl.com/v2/DV90", preferred_chain = "USERTrust RSA Certification Authority",
        eab = { key_id = "kid-1", mac_key_file = "zerossl.key" } },
    ]
    issuer_fallback_after_failures = 2"""


def automation_of(tmp_path: Path, acme: str) -> TlsAutomation:
    automation = load_config(write(tmp_path, "main.hcl", BASE.replace("ACME", acme))).server.tls_automation
    assert automation is not None
    return automation


def test_a_list_of_cas_is_tried_in_order_with_their_own_keys(tmp_path: Path) -> None:
    write(tmp_path, "zerossl.key", MAC_KEY + "\n")
    automation = automation_of(tmp_path, TWO)
    first = AcmeSettings(directory_url="https://acme-v02.api.letsencrypt.org/directory", profile="shortlived")
    second = AcmeSettings(
        directory_url="https://acme.zerossl.com/v2/DV90", preferred_chain="USERTrust RSA Certification Authority",
        eab=ExternalAccountBinding("kid-1", tmp_path.resolve() / "zerossl.key"),
    )
    assert automation == TlsAutomation(acme=first, fallback_acme=(second,), issuer_fallback_after_failures=2)
    assert automation.issuers == (first, second)


def test_one_ca_keeps_working_and_falls_back_after_three_by_default(tmp_path: Path) -> None:
    automation = automation_of(tmp_path, 'acme = { contact_email = "ops@example.com" }')
    assert automation.issuers == (AcmeSettings(contact_email=("ops@example.com",)),)
    assert automation.issuer_fallback_after_failures == 3
    # A list of one is the same.
    assert automation_of(tmp_path, 'acme = [{ contact_email = "ops@example.com" }]') == automation


@pytest.mark.parametrize(
    ("acme", "needle", "key_path", "message"),
    [
        ("acme = []", "acme", "server.tls_automation.acme", "must not be empty"),
        ('acme = [{ directory_url = "https://a.test/dir" }, { data_dir = "acme2" }]', "data_dir",
         "server.tls_automation.acme[1].data_dir",
         "only the first issuer has data_dir (it holds every issuer's account, each under its directory URL)"),
        ('acme = [{ directory_url = "https://a.test/dir" }, { directory_url = "https://a.test/dir" }]',
         "acme", "server.tls_automation.acme[1].directory_url",
         '"https://a.test/dir" is issuer 0 already (one account and one rate-limit budget per CA)'),
        ('acme = [{ directory_url = "https://a.test/dir" }, 5]', "acme", "server.tls_automation.acme[1]",
         "expected an object, got number 5"),
        ("acme = {}\n    issuer_fallback_after_failures = 0", "issuer_fallback",
         "server.tls_automation.issuer_fallback_after_failures", "must be at least 1, got 0"),
        ('acme = { profile = "" }', "profile", "server.tls_automation.acme.profile", "must not be empty"),
        ("acme = { preferred_chain = 3 }", "preferred_chain", "server.tls_automation.acme.preferred_chain",
         "expected a string, got number 3"),
        ('acme = {\n      eab = { key_id = "kid-1" }\n    }', "eab", "server.tls_automation.acme.eab.mac_key_file",
         "required key is missing"),
        ('acme = {\n      eab = { key_id = "kid-1", mac_key_file = "missing.key" }\n    }', "eab",
         "server.tls_automation.acme.eab.mac_key_file", "file does not exist: {dir}/missing.key"),
        ('acme = {\n      eab = { key_id = "kid-1", mac_key_file = "bad.key" }\n    }', "eab",
         "server.tls_automation.acme.eab.mac_key_file",
         "{dir}/bad.key: expected the base64url MAC key the CA handed out (A-Z, a-z, 0-9, - and _)"),
        ('acme = {\n      eab = { key_id = "", mac_key_file = "zerossl.key" }\n    }', "eab",
         "server.tls_automation.acme.eab.key_id", "must not be empty"),
        ('acme = {\n      eab = { kid = "kid-1", mac_key_file = "zerossl.key" }\n    }', "eab",
         "server.tls_automation.acme.eab.kid", 'unknown key "kid" (did you mean "key_id"?); allowed keys: key_id, mac_key_file'),
    ],
)
def test_each_problem_names_file_line_and_key(tmp_path: Path, acme: str, needle: str, key_path: str,
                                              message: str) -> None:
    write(tmp_path, "zerossl.key", MAC_KEY)
    write(tmp_path, "bad.key", "c2VjcmV0+/==\n")  # standard base64, not base64url
    text = BASE.replace("ACME", acme)
    main = write(tmp_path, "main.hcl", text)
    message = message.replace("{dir}", str(tmp_path.resolve()))
    found = problems(main)
    assert f"{main}:{line_of(text, needle)}: {key_path}: {message}" in found, found
