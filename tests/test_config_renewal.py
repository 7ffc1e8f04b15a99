"""The renewal keys of the configuration: ``renew_within_days`` (optional), ``acme.max_concurrent_orders``,
``acme.rate_limits``, and the limit of names in one ACME certificate.

Problems are asserted as the user sees them: ``FILE:LINE: key.path: message``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snakeway.config.load import load_config
from snakeway.config.model import MAX_NAMES_PER_CERTIFICATE, RateLimitSettings, TlsAutomation
from tests.test_config_tls import line_of, problems, write

ACME = 'acme = { contact_email = "ops@example.com" }'
DOMAINS = 'domains = ["example.com"]'
BASE = f"""\
server {{
  version = 1
  tls_automation = {{
    {ACME}
  }}
}}
ingress "site" {{
  bind = {{
    port = 443
    tls  = {{ mode = "acme", {DOMAINS} }}
    redirect_http_to_https = {{ port = 80 }}
  }}
}}
"""


def automation(tmp_path: Path, text: str) -> TlsAutomation:
    settings = load_config(write(tmp_path, "main.hcl", text)).server.tls_automation
    assert settings is not None
    return settings


def test_defaults_are_the_lifetime_rule_four_orders_and_lets_encrypts_limits(tmp_path: Path) -> None:
    settings = automation(tmp_path, BASE)
    assert settings.renew_within_days is None
    assert settings.acme.max_concurrent_orders == 4
    assert settings.acme.rate_limits == RateLimitSettings(
        new_orders_per_3h=300,
        failed_validations_per_name_per_hour=5,
        duplicate_certificates_per_week=5,
        certificates_per_domain_per_week=50,
    )


@pytest.mark.parametrize(("written", "days"), [("20.5", 20.5), ("30", 30.0), ("null", None)])
def test_renew_within_days_is_a_number_or_unset(tmp_path: Path, written: str, days: float | None) -> None:
    settings = automation(tmp_path, BASE.replace(ACME, f"renew_within_days = {written}\n    {ACME}"))
    assert settings.renew_within_days == days


def test_max_concurrent_orders(tmp_path: Path) -> None:
    text = BASE.replace(ACME, 'acme = { contact_email = "ops@example.com", max_concurrent_orders = 12 }')
    assert automation(tmp_path, text).acme.max_concurrent_orders == 12


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("new_orders_per_3h = 20", RateLimitSettings(new_orders_per_3h=20)),
        ("failed_validations_per_name_per_hour = 1", RateLimitSettings(failed_validations_per_name_per_hour=1)),
        ("duplicate_certificates_per_week = 2", RateLimitSettings(duplicate_certificates_per_week=2)),
        ("certificates_per_domain_per_week = 1000", RateLimitSettings(certificates_per_domain_per_week=1000)),
        ("new_orders_per_3h = 7, certificates_per_domain_per_week = 9",
         RateLimitSettings(new_orders_per_3h=7, certificates_per_domain_per_week=9)),
    ],
)
def test_any_rate_limit_alone_keeps_the_others_defaults(
    tmp_path: Path, written: str, expected: RateLimitSettings
) -> None:
    text = BASE.replace(ACME, f'acme = {{ contact_email = "ops@example.com", rate_limits = {{ {written} }} }}')
    limits = automation(tmp_path, text).acme.rate_limits
    assert limits == expected
    assert limits != RateLimitSettings()


_ACME_KEYS = "server.tls_automation.acme"


@pytest.mark.parametrize(
    ("new", "needle", "key_path", "message"),
    [
        ("renew_within_days = 0", "renew", "server.tls_automation.renew_within_days", "must be greater than 0, got 0"),
        ("renew_within_days = -3", "renew", "server.tls_automation.renew_within_days",
         "must be greater than 0, got -3"),
        ("acme = { max_concurrent_orders = 0 }", "max_concurrent", f"{_ACME_KEYS}.max_concurrent_orders",
         "must be at least 1, got 0"),
        ("acme = { max_concurrent_orders = 2.5 }", "max_concurrent", f"{_ACME_KEYS}.max_concurrent_orders",
         "expected an integer, got number 2.5"),
        ("acme = { rate_limits = 300 }", "rate_limits", f"{_ACME_KEYS}.rate_limits",
         "expected an object, got number 300"),
        ("acme = { rate_limits = { new_orders_per_3h = 0 } }", "rate_limits",
         f"{_ACME_KEYS}.rate_limits.new_orders_per_3h", "must be at least 1, got 0"),
        ('acme = { rate_limits = { duplicate_certificates_per_week = "5" } }', "rate_limits",
         f"{_ACME_KEYS}.rate_limits.duplicate_certificates_per_week", 'expected an integer, got string "5"'),
        ("acme = { rate_limits = { new_orders_per_hour = 30 } }", "rate_limits",
         f"{_ACME_KEYS}.rate_limits.new_orders_per_hour",
         'unknown key "new_orders_per_hour" (did you mean "new_orders_per_3h"?); allowed keys: new_orders_per_3h, '
         "failed_validations_per_name_per_hour, duplicate_certificates_per_week, certificates_per_domain_per_week"),
    ],
)
def test_wrong_renewal_keys_name_file_line_and_key(
    tmp_path: Path, new: str, needle: str, key_path: str, message: str
) -> None:
    # Written on lines of their own, so the line reported is the key's.
    text = BASE.replace(ACME, new.replace("acme = { ", "acme = {\n      ").replace(" }", "\n    }", 1))
    path = write(tmp_path, "main.hcl", text)
    assert problems(path) == [f"{path}:{line_of(text, needle)}: {key_path}: {message}"]


def _names(count: int) -> str:
    return ", ".join(f'"n{i}.example.com"' for i in range(count))


def test_more_than_100_names_in_one_certificate_are_refused(tmp_path: Path) -> None:
    text = BASE.replace(DOMAINS, f"\n      domains = [{_names(MAX_NAMES_PER_CERTIFICATE + 1)}]\n    ")
    path = write(tmp_path, "main.hcl", text)
    assert problems(path) == [
        f"{path}:{line_of(text, 'domains =')}: ingress.site.bind.tls.domains: 101 names make one certificate, and "
        "ACME CAs issue at most 100 names per certificate; split them across listeners or set "
        "certificate_per_domain = true"
    ]


@pytest.mark.parametrize(
    "domains",
    [
        f"domains = [{_names(MAX_NAMES_PER_CERTIFICATE)}]",
        # The same name twice is one name of the certificate.
        f'domains = [{_names(MAX_NAMES_PER_CERTIFICATE)}, "n0.example.com"]',
        f"domains = [{_names(MAX_NAMES_PER_CERTIFICATE + 50)}], certificate_per_domain = true",
    ],
)
def test_up_to_100_names_per_certificate_are_accepted(tmp_path: Path, domains: str) -> None:
    config = load_config(write(tmp_path, "main.hcl", BASE.replace(DOMAINS, domains)))
    tls = config.ingresses[0].bind.tls
    assert tls is not None
    assert len(set(tls.domains)) >= MAX_NAMES_PER_CERTIFICATE
