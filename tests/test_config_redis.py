"""``tls_automation.cert_store = { type = "redis", ... }``: loading, mistakes, ``check``'s warning, open_store."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from snakeway import build, cli
from snakeway.acme.rediscoord import RedisCoordinator
from snakeway.acme.redisstore import RedisStore
from snakeway.acme.store import StoreError, open_store
from snakeway.config.load import load_config
from snakeway.config.model import CertStoreSettings, StoreType
from tests.test_config_tls import line_of, problems, write

TEMPLATE = """\
server {{
  version   = 1
  workers   = {workers}
  state_dir = "{state}"
  tls_automation = {{
    acme = {{ contact_email = "ops@example.com" }}
    cert_store = {store}
  }}
}}
ingress "site" {{
  bind = {{
    port = 443
    tls  = {{ mode = "acme", domains = ["example.com"] }}
    redirect_http_to_https = {{ port = 80 }}
  }}
}}
"""


def config_text(tmp_path: Path, store: str, workers: int = 1) -> str:
    return TEMPLATE.format(store=store, workers=workers, state=tmp_path / "state")


def key_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "store.key"
    path.write_bytes(content)
    return path


def test_redis_store_loads_with_every_key(tmp_path: Path) -> None:
    key = key_file(tmp_path, base64.b64encode(bytes(range(32))) + b"\n")
    store = (f'{{ type = "redis", url = "rediss://:s3cret@cache.internal:6380/2", key_prefix = "edge",'
             f' encryption_key_file = "{key}" }}')
    config = load_config(write(tmp_path, "main.hcl", config_text(tmp_path, store)))
    assert config.server.tls_automation is not None
    assert config.server.tls_automation.cert_store == CertStoreSettings(
        type=StoreType.REDIS, url="rediss://:s3cret@cache.internal:6380/2", key_prefix="edge", encryption_key_file=key
    )


def test_redis_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "main.hcl", config_text(tmp_path, '{ type = "redis", url = "redis://h" }')))
    assert config.server.tls_automation is not None
    store = config.server.tls_automation.cert_store
    assert (store.url, store.key_prefix, store.encryption_key_file) == ("redis://h", "snakeway", None)
    assert store.lease_seconds == 30
    coordinator = build.coordinator(config)
    assert isinstance(coordinator, RedisCoordinator) and coordinator.lease_ttl == 30


def test_lease_seconds_is_the_coordinators_lease(tmp_path: Path) -> None:
    store = '{ type = "redis", url = "redis://h", lease_seconds = 3 }'
    config = load_config(write(tmp_path, "main.hcl", config_text(tmp_path, store)))
    assert config.server.tls_automation is not None
    assert config.server.tls_automation.cert_store.lease_seconds == 3
    coordinator = build.coordinator(config)
    assert isinstance(coordinator, RedisCoordinator) and coordinator.lease_ttl == 3


@pytest.mark.parametrize(
    ("store", "key", "message"),
    [
        ('{ type = "redis" }', "cert_store", 'type = "redis" needs url (such as "redis://127.0.0.1:6379/0")'),
        ('{ type = "redis", url = "http://127.0.0.1:6379" }', "cert_store.url",
         'expected redis://[[user]:password@]host[:port][/db] or rediss://..., got "http://127.0.0.1:6379"'),
        ('{ type = "redis", url = "redis://" }', "cert_store.url",
         'expected redis://[[user]:password@]host[:port][/db] or rediss://..., got "redis://"'),
        ('{ type = "redis", url = "redis://h:99999/0" }', "cert_store.url",
         'expected redis://[[user]:password@]host[:port][/db] or rediss://..., got "redis://h:99999/0" (bad port)'),
        ('{ type = "redis", url = "redis://h:6379/zero" }', "cert_store.url",
         'expected redis://[[user]:password@]host[:port][/db] or rediss://..., got "redis://h:6379/zero" '
         "(the database is a number)"),
        ('{ type = "redis", url = "redis://h", key_prefix = "a b" }', "cert_store.key_prefix",
         'expected a prefix without spaces or control characters, got "a b"'),
        ('{ type = "redis", url = "redis://h", encryption_key_file = "missing.key" }',
         "cert_store.encryption_key_file", "file does not exist: {dir}/missing.key"),
        ('{ type = "redis", url = "redis://h", prefix = "x" }', "cert_store.prefix",
         'unknown key "prefix" (did you mean "key_prefix"?); allowed keys: type, cert_dir, url, key_prefix, '
         "encryption_key_file, lease_seconds"),
        ('{ type = "redis", url = "redis://h", lease_seconds = 2.5 }', "cert_store.lease_seconds",
         "must be at least 3 (the lease is renewed every third of it), got 2.5"),
        ('{ type = "redis", url = "redis://h", lease_seconds = 0 }', "cert_store.lease_seconds",
         "must be greater than 0, got 0"),
        ('{ type = "redis", url = "redis://h", lease_seconds = -30 }', "cert_store.lease_seconds",
         "must be greater than 0, got -30"),
        ('{ type = "redis", url = "redis://h", lease_seconds = "30s" }', "cert_store.lease_seconds",
         'expected a number of seconds, got string "30s"'),
        ('{ type = "filesystem", lease_seconds = 10 }', "cert_store.lease_seconds",
         'only applies with type = "redis", not "filesystem"'),
        ('{ type = "filesystem", url = "redis://h" }', "cert_store.url",
         'only applies with type = "redis", not "filesystem"'),
        ('{ type = "memory", key_prefix = "x" }', "cert_store.key_prefix",
         'only applies with type = "redis", not "memory"'),
    ],
)
def test_each_mistake_names_file_line_and_key(tmp_path: Path, store: str, key: str, message: str) -> None:
    text = config_text(tmp_path, store)
    main = write(tmp_path, "main.hcl", text)
    expected = message.replace("{dir}", str(tmp_path.resolve()))
    assert problems(main) == [f"{main}:{line_of(text, 'cert_store')}: server.tls_automation.{key}: {expected}"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (bytes(range(32)), "expected 32 bytes in base64 (make one with `openssl rand -base64 32`)"),
        (base64.b64encode(bytes(16)), "expected 32 bytes in base64, got 16 bytes"),
        (b"", "expected 32 bytes in base64, got 0 bytes"),
    ],
)
def test_a_key_file_without_a_key_is_refused(tmp_path: Path, content: bytes, says: str) -> None:
    key = key_file(tmp_path, content)
    text = config_text(tmp_path, f'{{ type = "redis", url = "redis://h", encryption_key_file = "{key}" }}')
    main = write(tmp_path, "main.hcl", text)
    [problem] = problems(main)
    assert problem.startswith(f"{main}:{line_of(text, 'cert_store')}: server.tls_automation.cert_store."
                              f"encryption_key_file: {key}: {says}")


def test_several_workers_over_redis_coordinate_through_it(tmp_path: Path) -> None:
    store = '{ type = "redis", url = "redis://cache.internal:6380/2", key_prefix = "edge" }'
    main = write(tmp_path, "main.hcl", config_text(tmp_path, store, workers=4))
    config = load_config(main)  # accepted: no longer refused
    assert config.server.workers == 4
    coordinator = build.coordinator(config)
    assert isinstance(coordinator, RedisCoordinator)
    assert (coordinator.url, coordinator.keys.prefix) == ("redis://cache.internal:6380/2", "edge")
    assert build.is_shared(coordinator)  # the store watch and shared challenges are on


def test_check_warns_without_a_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = config_text(tmp_path, '{ type = "redis", url = "redis://127.0.0.1:1/0" }')
    main = write(tmp_path, "main.hcl", text)
    assert cli.main(["check", "--config", str(main)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{main}: configuration is valid\n"
    assert err == (
        f"{main}:{line_of(text, 'cert_store')}: server.tls_automation.cert_store: warning: no encryption_key_file: "
        "private keys are stored in Redis in clear (make a key with `openssl rand -base64 32`)\n"
    )


def test_check_is_quiet_with_a_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = key_file(tmp_path, base64.b64encode(bytes(32)))
    main = write(tmp_path, "main.hcl", config_text(
        tmp_path, f'{{ type = "redis", url = "redis://127.0.0.1:1/0", encryption_key_file = "{key}" }}'))
    assert cli.main(["check", "--config", str(main)]) == 0
    assert capsys.readouterr() == (f"{main}: configuration is valid\n", "")


def test_open_store_builds_a_redis_store(tmp_path: Path) -> None:
    key = key_file(tmp_path, base64.b64encode(bytes(range(32))))
    settings = CertStoreSettings(StoreType.REDIS, url="redis://127.0.0.1:1/0", key_prefix="edge",
                                 encryption_key_file=key)
    store = open_store(settings, None, tmp_path)
    assert isinstance(store, RedisStore)
    assert (store.url, store.keys.certs) == ("redis://127.0.0.1:1/0", "edge:certs")
    key.write_bytes(b"gone")
    with pytest.raises(StoreError, match=f"encryption_key_file {key}: expected 32 bytes in base64"):
        open_store(settings, None, tmp_path)
