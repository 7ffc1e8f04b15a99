"""Several CAs, profiles, preferred chains and External Account Binding in real snakeway processes against Pebble.

Each test runs ``python -m snakeway serve`` against one or two real Pebbles, some behind
:class:`tests.ariproxy.AriProxy` (a recording pass-through) with a change of the test's own: a directory
offering ``meta.profiles`` (Pebble 2.4 has none, and ignores a ``profile`` in newOrder), or a CA refusing
every order. It looks from outside: TLS handshakes on the served name, the process's log, the file store,
and what the CA received.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from snakeway.acme.backend import ClientV2Backend
from snakeway.errors import IssuanceError
from tests.acme.test_renewal_pebble import ISSUED, file_store, follow_log, handshake, stop, until_logged
from tests.acme.test_renewal_pebble import write_config as renewal_config
from tests.ariproxy import AriProxy
from tests.helpers import start_upstream
from tests.pebble import Pebble, free_port, run_pebble
from tests.proc import snakeway
from tests.tlshelpers import client_context

NAME = "issuers.example.test"
KEY_ID = "kid-1"
MAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"  # Debian's example, base64url
ORDERING_FROM = re.compile(rb": ordering from (\S+)$", re.MULTILINE)


class FrontedPebble(AriProxy):
    """A recording pass-through to Pebble (no ARI) whose directory offers ``profiles``, and which refuses every
    newOrder with ``400 malformed`` while ``refuse_orders`` is set (Pebble never sees those)."""

    def __init__(self, pebble: Pebble, workdir: Path, *, profiles: dict[str, str] | None = None,
                 refuse_orders: bool = False) -> None:
        super().__init__(pebble, workdir, ari=False)
        self.profiles = profiles
        self.refuse_orders = refuse_orders
        self.refused = 0

    def _directory(self, reply):  # type: ignore[no-untyped-def]  # the base class's private reply type
        reply = super()._directory(reply)
        if self.profiles is not None:
            directory = json.loads(reply.body)
            directory.setdefault("meta", {})["profiles"] = self.profiles
            reply.body = json.dumps(directory).encode()
        return reply

    def _new_order(self, path, headers, body):  # type: ignore[no-untyped-def]
        if not self.refuse_orders:
            return super()._new_order(path, headers, body)
        reply = self._already_replaced(headers)  # a problem answer carrying a fresh nonce ...
        reply.status = 400  # ... made into a plain refusal
        reply.body = json.dumps({"type": "urn:ietf:params:acme:error:malformed", "status": 400,
                                 "detail": "this CA refuses every order"}).encode()
        with self._lock:
            self.refused += 1
        return reply


def write_config(path: Path, *, acme: str, pebble: Pebble, upstream: int, extra: str = "") -> None:
    """Serve :data:`NAME` on Pebble's TLS port with ``acme`` (the text of ``tls_automation.acme``), checked
    every second."""
    renewal_config(path, directory_url="", ca_file=Path(), pebble=pebble, upstream=upstream, names=(NAME,),
                   check_interval=1, acme=acme, automation=extra)


def issuer(url: str, ca_file: Path, *rest: str) -> str:
    return "{ " + ", ".join((f'directory_url = "{url}"', f'ca_file = "{ca_file}"', *rest)) + " }"


@asynccontextmanager
async def pebble_at(tmp_path: Path, label: str, *, http_port: int | None = None, tls_port: int | None = None,
                    **options: object) -> AsyncIterator[Pebble]:
    workdir = tmp_path / label
    workdir.mkdir()
    async with run_pebble(workdir, http_port=http_port or free_port(), tls_port=tls_port or free_port(),
                          **options) as pebble:  # type: ignore[arg-type]
        yield pebble


def common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# --- profiles ------------------------------------------------------------------------------------------------


async def test_a_profile_the_ca_offers_is_asked_for(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    async with pebble_at(tmp_path, "pebble") as pebble:
        profiles = {"classic": "90 days", "shortlived": "6 days"}
        with FrontedPebble(pebble, tmp_path, profiles=profiles) as front:
            write_config(config, acme=issuer(front.directory_url, front.ca_file, 'profile = "shortlived"'),
                         pebble=pebble, upstream=upstream)
            ctx = client_context(await pebble.roots())
            async with snakeway(config) as proc:
                nursery.start_soon(follow_log, proc)
                await until_logged(proc, lambda log: ISSUED in log, timeout=30)
                leaf = await handshake(pebble.tls_port, ctx, NAME)
                await stop(proc)
            payloads = list(front.new_order_payloads)
    assert [p.get("profile") for p in payloads] == ["shortlived"]
    assert ("DNS", NAME) in [("DNS", n) for n in leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]
    assert b"profile" not in bytes(proc.log)  # nothing to say


async def test_a_profile_the_ca_lacks_is_said_once_and_nothing_is_ordered(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    async with pebble_at(tmp_path, "pebble") as pebble:
        with FrontedPebble(pebble, tmp_path) as front:  # Pebble's own directory: no meta.profiles
            write_config(config, acme=issuer(front.directory_url, front.ca_file, 'profile = "shortlived"'),
                         pebble=pebble, upstream=upstream)
            async with snakeway(config) as proc:
                nursery.start_soon(follow_log, proc)
                await until_logged(proc, lambda log: b"next attempt at" in log, timeout=30)
                await trio.sleep(2)  # checked every second meanwhile: no second attempt, no second line
                await stop(proc)
            payloads = list(front.new_order_payloads)
    log = bytes(proc.log)
    line = (f"ERROR snakeway.acme.issuing: ACME CA {front.directory_url}: the CA offers no certificate profiles, "
            "and profile 'shortlived' is configured; no certificate is ordered from it").encode()
    assert log.count(line) == 1, log.decode()
    assert b"failed (needs attention)" in log
    assert payloads == []


# --- External Account Binding ----------------------------------------------------------------------------------


async def test_a_ca_requiring_external_account_binding_issues_with_it_and_refuses_without(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    (tmp_path / "mac.key").write_text(MAC_KEY + "\n")
    async with pebble_at(tmp_path, "pebble", eab_keys={KEY_ID: MAC_KEY}) as pebble:
        without = tmp_path / "without" / "snakeway.hcl"
        without.parent.mkdir()
        write_config(without, acme=issuer(pebble.directory_url, pebble.ca_file), pebble=pebble, upstream=upstream)
        async with snakeway(without) as proc:
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: b"next attempt at" in log, timeout=30)
            await stop(proc)
        assert b"failed (needs attention) (attempt 1): the CA requires External Account Binding: set eab = " \
            b"{ key_id, mac_key_file }" in proc.log
        assert ISSUED not in proc.log

        config = tmp_path / "with" / "snakeway.hcl"
        config.parent.mkdir()
        eab = f'eab = {{ key_id = "{KEY_ID}", mac_key_file = "{tmp_path / "mac.key"}" }}'
        write_config(config, acme=issuer(pebble.directory_url, pebble.ca_file, eab), pebble=pebble,
                     upstream=upstream)
        ctx = client_context(await pebble.roots())
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: ISSUED in log, timeout=30)
            await handshake(pebble.tls_port, ctx, NAME)
            await stop(proc)
    account = await file_store(tmp_path / "with").load_account(pebble.directory_url)
    assert account is not None and account.uri is not None and account.uri.startswith(pebble.directory_url.removesuffix("/dir"))


# --- preferred chain ---------------------------------------------------------------------------------------------


async def test_the_preferred_chain_is_chosen_among_the_alternates(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    async with pebble_at(tmp_path, "pebble", alternate_roots=2) as pebble:
        roots = [x509.load_pem_x509_certificate(await pebble.root(i)) for i in range(3)]
        wanted = common_name(roots[2].subject)
        assert len({common_name(r.subject) for r in roots}) == 3
        write_config(config, acme=issuer(pebble.directory_url, pebble.ca_file, f'preferred_chain = "{wanted}"'),
                     pebble=pebble, upstream=upstream)
        async with snakeway(config) as proc:
            nursery.start_soon(follow_log, proc)
            await until_logged(proc, lambda log: ISSUED in log, timeout=30)
            # The served chain leads to the preferred root (only), not to the default one.
            await handshake(pebble.tls_port, client_context(await pebble.root(2)), NAME)
            try:
                await handshake(pebble.tls_port, client_context(await pebble.root(0)), NAME)
            except trio.BrokenResourceError:
                pass
            else:
                raise AssertionError("the default chain is served")
            await stop(proc)
    bundle = await file_store(tmp_path).load(NAME)
    assert bundle is not None
    chain = x509.load_pem_x509_certificates(bundle.cert_pem)
    assert common_name(chain[-1].issuer) == wanted


# --- several CAs -------------------------------------------------------------------------------------------------


LIFETIME = 16  # seconds: the second Pebble's certificates, renewed with half of it left


async def test_a_ca_refusing_every_order_is_fallen_back_from_and_the_renewal_starts_at_it_again(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    config = tmp_path / "snakeway.hcl"
    async with pebble_at(tmp_path, "first") as first:
        async with pebble_at(tmp_path, "second", http_port=first.http_port, tls_port=first.tls_port,
                             validity_seconds=LIFETIME) as second:
            refusing = FrontedPebble(first, tmp_path / "first", refuse_orders=True)
            with refusing:
                acme = "[\n      " + issuer(refusing.directory_url, refusing.ca_file) + ",\n      " \
                    + issuer(second.directory_url, second.ca_file) + ",\n    ]"
                write_config(config, acme=acme, pebble=first, upstream=upstream,
                             extra="issuer_fallback_after_failures = 1")
                ctx = client_context(await second.roots())
                async with snakeway(config) as proc:
                    nursery.start_soon(follow_log, proc)
                    await until_logged(proc, lambda log: log.count(ISSUED) >= 2, timeout=60)
                    await handshake(first.tls_port, ctx, NAME)  # the second CA's certificate is served
                    await stop(proc)
                refused = refusing.refused
    log = bytes(proc.log)
    tried = [m.group(1).decode() for m in ORDERING_FROM.finditer(log)]
    # Each certificate: first the first CA (which refuses), then the second (which issues).
    assert tried[:4] == [refusing.directory_url, second.directory_url] * 2, log.decode()
    assert refused >= 2
    moved = (f"1 failed attempt(s) in a row at {refusing.directory_url}; ordering from {second.directory_url} "
             "next").encode()
    assert log.count(moved) >= 2
    # Each CA has its own account in the store, under its directory URL.
    store = file_store(tmp_path)
    one, two = await store.load_account(refusing.directory_url), await store.load_account(second.directory_url)
    assert one is not None and two is not None and one.key_pem != two.key_pem


async def test_the_backend_reads_the_profiles_before_and_after_it_has_an_account(tmp_path: Path) -> None:
    async with pebble_at(tmp_path, "pebble") as pebble:
        profiles = {"classic": "90 days", "shortlived": "6 days"}
        with FrontedPebble(pebble, tmp_path, profiles=profiles) as front:
            backend = ClientV2Backend(front.directory_url, ca_file=front.ca_file)
            try:
                assert await backend.offered_profiles() == profiles  # fetched without an account
                await backend.ensure_account(None, ())
                assert await backend.offered_profiles() == profiles  # the account's directory
            finally:
                await backend.aclose()
        plain = ClientV2Backend(pebble.directory_url, ca_file=pebble.ca_file)
        try:
            assert await plain.offered_profiles() is None
        finally:
            await plain.aclose()
        away = ClientV2Backend(f"https://127.0.0.1:{free_port()}/dir", ca_file=pebble.ca_file, timeout=2)
        try:
            with pytest.raises(IssuanceError, match="the CA's directory https://127.0.0.1:.* cannot be read"):
                await away.offered_profiles()
        finally:
            await away.aclose()
