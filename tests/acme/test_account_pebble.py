"""The ACME account's lifecycle against a real Pebble, through real snakeway processes: a key rolled over from
the command line, an account deactivated behind snakeway's back, a contact changed by a reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from acme import client as acme_client
from acme import messages

from snakeway.acme import acmelib
from snakeway.acme.store import AccountRecord
from tests.acme.adminpebble import issued_with_admin
from tests.acme.test_renewal_pebble import ISSUED, file_store, pebble_at, until_logged
from tests.admin.test_admin_cli import cli
from tests.pebble import Pebble

NAME = "account.example.test"


def _signed(pebble: Pebble, key_pem: bytes, uri: str, action: str) -> messages.RegistrationResource:
    """As the account ``uri`` signing with ``key_pem``: fetch it (``"get"``) or deactivate it (blocking)."""
    jwk, alg = acmelib.jwk_for(key_pem)
    regr = messages.RegistrationResource(uri=uri, body=messages.Registration())
    net = acmelib.Network(key=jwk, alg=alg, account=regr, verify_ssl=str(pebble.ca_file))  # type: ignore[arg-type]
    try:
        ca = acme_client.ClientV2(acme_client.ClientV2.get_directory(pebble.directory_url, net), net)
        if action == "deactivate":
            return ca.deactivate_registration(regr)
        return ca.query_registration(regr)
    finally:
        net.session.close()


async def as_account(pebble: Pebble, key_pem: bytes, uri: str, action: str = "get") -> messages.RegistrationResource:
    return await trio.to_thread.run_sync(_signed, pebble, key_pem, uri, action)


async def stored_account(tmp_path: Path, pebble: Pebble) -> AccountRecord:
    record = await file_store(tmp_path).load_account(pebble.directory_url)
    assert record is not None and record.uri is not None
    return record


async def test_rollover_account_key_from_the_command_line_against_a_running_server(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with pebble_at(tmp_path) as pebble, issued_with_admin(nursery, tmp_path, pebble, (NAME,)) as (
        config, _, proc,
    ):
        before = await stored_account(tmp_path, pebble)

        status, said = await cli("certs", "rollover-account-key", "--config", str(config))
        assert status == 0, said

        after = await stored_account(tmp_path, pebble)
        assert after.uri == before.uri and after.key_pem != before.key_pem
        assert after.contact == before.contact
        assert before.uri is not None
        with pytest.raises(messages.Error) as refused:  # the CA no longer takes the old key for the account
            await as_account(pebble, before.key_pem, before.uri)
        assert refused.value.code in ("malformed", "unauthorized", "accountDoesNotExist")
        assert (await as_account(pebble, after.key_pem, before.uri)).body.status == "valid"
        for _ in range(2):  # orders signed with the new key, by whichever worker takes the request
            status, said = await cli("certs", "renew", NAME, "--config", str(config))
            assert status == 0, said
        assert proc.log.count(ISSUED) == 3, proc.log.decode()[-3000:]
        assert (await stored_account(tmp_path, pebble)).uri == before.uri  # the same account throughout


async def test_a_deactivated_account_is_registered_again_with_a_new_key(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with pebble_at(tmp_path) as pebble, issued_with_admin(nursery, tmp_path, pebble, (NAME,)) as (
        config, _, proc,
    ):
        lost = await stored_account(tmp_path, pebble)
        assert lost.uri is not None
        assert (await as_account(pebble, lost.key_pem, lost.uri, "deactivate")).body.status == "deactivated"

        status, said = await cli("certs", "renew", NAME, "--config", str(config))
        assert status == 0, said
        fresh = await stored_account(tmp_path, pebble)
        assert fresh.uri != lost.uri and fresh.key_pem != lost.key_pem
        assert fresh.uri is not None
        assert (await as_account(pebble, fresh.key_pem, fresh.uri)).body.status == "valid"
        assert proc.log.count(ISSUED) == 2
        assert proc.log.count(b"registered a new account") == 1, proc.log.decode()[-3000:]
        assert b"WARNING" in next(line for line in proc.log.splitlines() if b"registered a new account" in line)


async def test_a_changed_contact_email_updates_the_account_at_reload(nursery: trio.Nursery, tmp_path: Path) -> None:
    contact = "      contact_email = \"first@example.org\"\n      ca_file "
    async with pebble_at(tmp_path) as pebble, issued_with_admin(
        nursery, tmp_path, pebble, (NAME,), edit=lambda text: text.replace("      ca_file ", contact, 1),
    ) as (config, _, proc):
        account = await stored_account(tmp_path, pebble)
        assert account.uri is not None
        assert (await as_account(pebble, account.key_pem, account.uri)).body.contact == ("mailto:first@example.org",)

        config.write_text(config.read_text().replace("first@example.org", "second@example.org"))
        status, said = await cli("reload", "--config", str(config))
        assert status == 0, said
        await until_logged(proc, lambda log: b"contact updated" in log, timeout=20)

        assert (await as_account(pebble, account.key_pem, account.uri)).body.contact == (
            "mailto:second@example.org",)
        assert (await stored_account(tmp_path, pebble)).contact == ("mailto:second@example.org",)
        await trio.sleep(0.5)  # the other worker's reload has ended too: it found the account up to date
        assert proc.log.count(b"contact updated") == 1
