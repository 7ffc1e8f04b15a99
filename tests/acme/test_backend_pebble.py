"""ClientV2Backend against a real Pebble (see tests/pebble.py).

The tests answer the challenges themselves: a tiny HTTP server on Pebble's
``httpPort`` for http-01 and a TLS server with ALPN ``acme-tls/1`` on its
``tlsPort`` for tls-alpn-01. Pebble runs with ``PEBBLE_VA_NOSLEEP=1``, so one
issuance takes a fraction of a second; the timings are printed (``-s``).
"""

from __future__ import annotations

import datetime
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from cryptography import x509

from snakeway.acme import crypto
from snakeway.acme.backend import AccountInfo, AcmeBackend, ChallengeTask, ClientV2Backend, OrderHandle
from snakeway.acme.tlsalpn import ACME_TLS_ALPN, TlsAlpnChallenges
from snakeway.config.model import Challenge, KeyType
from snakeway.errors import IssuanceError
from snakeway.testing import cert_dates
from snakeway.tls.certinfo import leaf_info, load_chain
from tests.ariproxy import AriProxy
from tests.pebble import LOOPBACK, Pebble

DOMAINS = ("a.example.test", "b.example.test")
ISSUANCE_TIMEOUT = 30.0
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


# -- challenge responders -----------------------------------------------------


async def serve_http01(port: int, answers: Mapping[str, ChallengeTask], *, task_status: trio.TaskStatus[None]) -> None:
    """Answer ``GET /.well-known/acme-challenge/<token>`` from ``answers`` on 127.0.0.1:port."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < 16384:
                    chunk = await stream.receive_some()
                    if not chunk:
                        return
                    request += chunk
            parts = request.split(b"\r\n", 1)[0].split(b" ")
            path = parts[1].decode("ascii", "replace") if len(parts) == 3 else ""
            token = path.removeprefix(CHALLENGE_PREFIX) if path.startswith(CHALLENGE_PREFIX) else None
            task = answers.get(token or "")
            body = task.key_authorization if task is not None else None
            status = b"200 OK" if body is not None else b"404 Not Found"
            payload = (body or "").encode()
            head = b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            await stream.send_all(head % (status, len(payload)) + payload)

    listeners = await trio.open_tcp_listeners(port, host=LOOPBACK)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def serve_tls_alpn01(
    port: int, challenges: TlsAlpnChallenges, *, task_status: trio.TaskStatus[None]
) -> None:
    """Complete acme-tls/1 handshakes on 127.0.0.1:port with the challenge context chosen by SNI."""

    def on_sni(ssl_obj: ssl.SSLObject, name: str | None, _default: ssl.SSLContext) -> int | None:
        context = challenges.lookup(name)
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_obj.context = context
        return None

    base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    base.set_alpn_protocols([ACME_TLS_ALPN])
    base.sni_callback = on_sni

    async def handle(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, base, server_side=True)
        try:
            with trio.move_on_after(5):
                await tls.do_handshake()
                await tls.receive_some()  # until the validator hangs up
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(tls)

    listeners = await trio.open_tcp_listeners(port, host=LOOPBACK)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


# -- the issuance flow ----------------------------------------------------------


async def validate(
    backend: AcmeBackend, order: OrderHandle, kind: Challenge, provision: dict[str, ChallengeTask]
) -> list[ChallengeTask]:
    """Answer the order's challenges from ``provision`` and wait until its authorizations are valid."""
    tasks = backend.challenges(order, kind)
    for task in tasks:
        provision[task.token if kind is Challenge.HTTP_01 else task.domain] = task
    for task in tasks:
        await backend.answer(task)
    await backend.wait_authorizations(order, trio.current_time() + ISSUANCE_TIMEOUT)
    return tasks


async def issue(
    backend: AcmeBackend,
    domains: Sequence[str],
    kind: Challenge,
    provision: dict[str, ChallengeTask],
    *,
    replaces: str | None = None,
) -> tuple[str, list[ChallengeTask], float]:
    """One order from new-order to downloaded chain; returns chain, tasks and seconds."""
    started = time.perf_counter()
    key_pem = await trio.to_thread.run_sync(crypto.generate_key, KeyType.ECDSA_P256)
    csr_pem = crypto.make_csr(key_pem, domains)
    order = await backend.new_order(domains, csr_pem, replaces=replaces)
    tasks = await validate(backend, order, kind, provision)
    chain = await backend.finalize(order, csr_pem, trio.current_time() + ISSUANCE_TIMEOUT)
    return chain, tasks, time.perf_counter() - started


def verify_chain(chain_pem: str, root_pem: bytes, domains: Sequence[str]) -> None:
    """The leaf covers ``domains`` and chains to ``root_pem`` (cryptography's RFC 5280 verifier)."""
    certs = load_chain(chain_pem.encode())
    assert set(leaf_info(chain_pem.encode()).names) == set(domains)
    root = x509.load_pem_x509_certificate(root_pem)
    store = x509.verification.Store([root])
    for domain in domains:
        verifier = x509.verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName(domain))
        built = verifier.verify(certs[0], certs[1:])
        assert built[-1] == root
    not_before, not_after = cert_dates(chain_pem.encode())
    assert not_before.tzinfo is datetime.UTC
    assert not_before <= datetime.datetime.now(datetime.UTC) < not_after


async def start_http01(nursery: trio.Nursery, pebble: Pebble) -> dict[str, ChallengeTask]:
    """Serve http-01 on Pebble's httpPort; returns the token -> task dict it answers from."""
    provision: dict[str, ChallengeTask] = {}
    await nursery.start(serve_http01, pebble.http_port, provision)
    return provision


async def new_account(ca: Pebble | AriProxy, key_pem: bytes | None = None) -> tuple[ClientV2Backend, AccountInfo]:
    """A backend with an account at ``ca`` (Pebble, or the ARI front before it); a new account unless ``key_pem``."""
    backend = ClientV2Backend(ca.directory_url, ca_file=ca.ca_file)
    account = await backend.ensure_account(key_pem, ("mailto:admin@example.test",))
    assert account.uri.startswith("https://127.0.0.1:")
    assert b"PRIVATE KEY" in account.key_pem
    return backend, account


async def new_backend(ca: Pebble | AriProxy) -> ClientV2Backend:
    backend, _ = await new_account(ca)
    return backend


# -- tests --------------------------------------------------------------------------


async def test_http01_issues_a_chain_to_pebbles_root(pebble: Pebble, nursery: trio.Nursery) -> None:
    provision = await start_http01(nursery, pebble)
    started = time.perf_counter()
    backend = await new_backend(pebble)
    account_s = time.perf_counter() - started
    try:
        chain, tasks, seconds = await issue(backend, DOMAINS, Challenge.HTTP_01, provision)
        verify_chain(chain, await pebble.roots(), DOMAINS)
        assert {t.domain for t in tasks} <= set(DOMAINS)
        for task in tasks:
            assert task.key_authorization.startswith(task.token + ".")
        assert await backend.renewal_info(chain.encode()) is None  # Pebble 2.4 has no ARI
        print(f"\nhttp-01: account {account_s:.3f} s, issuance of {len(DOMAINS)} names {seconds:.3f} s")
    finally:
        await backend.aclose()


async def test_tls_alpn01_issues_a_chain_to_pebbles_root(pebble: Pebble, nursery: trio.Nursery) -> None:
    challenges = TlsAlpnChallenges()  # snakeway.acme.tlsalpn builds the RFC 8737 certificates
    await nursery.start(serve_tls_alpn01, pebble.tls_port, challenges)
    backend = await new_backend(pebble)
    try:
        started = time.perf_counter()
        key_pem = crypto.generate_key(KeyType.RSA2048)
        csr_pem = crypto.make_csr(key_pem, DOMAINS)
        deadline = trio.current_time() + ISSUANCE_TIMEOUT
        order = await backend.new_order(DOMAINS, csr_pem)
        tasks = backend.challenges(order, Challenge.TLS_ALPN_01)
        for task in tasks:
            assert task.kind is Challenge.TLS_ALPN_01
            challenges.add(task.domain, task.key_authorization)
            await backend.answer(task)
        await backend.wait_authorizations(order, deadline)
        for task in tasks:
            challenges.remove(task.domain)
        chain = await backend.finalize(order, csr_pem, deadline)
        seconds = time.perf_counter() - started
        verify_chain(chain, await pebble.roots(), DOMAINS)
        print(f"\ntls-alpn-01: issuance of {len(DOMAINS)} names (RSA 2048 key) {seconds:.3f} s")
    finally:
        await backend.aclose()


@pytest.mark.parametrize("pebble", [{"nonce_reject": 50, "authz_reuse": 0}], indirect=True)
async def test_survives_bad_nonces_and_answers_every_authorization(pebble: Pebble, nursery: trio.Nursery) -> None:
    provision = await start_http01(nursery, pebble)
    root = await pebble.roots()
    times = []
    for _ in range(3):
        # A new account each round: Pebble reuses a valid authorization of the same
        # account about 1 time in 100 even at authz_reuse=0, and here every one must
        # be pending, so that every challenge is answered under bad nonces.
        backend = await new_backend(pebble)
        try:
            chain, tasks, seconds = await issue(backend, DOMAINS, Challenge.HTTP_01, provision)
        finally:
            await backend.aclose()
        assert sorted(t.domain for t in tasks) == sorted(DOMAINS)
        verify_chain(chain, root, DOMAINS)
        times.append(seconds)
    print("\nnonce_reject=50 authz_reuse=0: " + ", ".join(f"{t:.3f} s" for t in times))


@pytest.mark.parametrize("pebble", [{"authz_reuse": 100}], indirect=True)
async def test_reused_authorizations_need_no_challenge(pebble: Pebble, nursery: trio.Nursery) -> None:
    provision = await start_http01(nursery, pebble)
    backend = await new_backend(pebble)
    try:
        _, first, _ = await issue(backend, DOMAINS, Challenge.HTTP_01, provision)
        assert len(first) == len(DOMAINS)
        chain, second, seconds = await issue(backend, DOMAINS, Challenge.HTTP_01, provision)
        assert second == []
        verify_chain(chain, await pebble.roots(), DOMAINS)
        print(f"\nreused authorizations: issuance {seconds:.3f} s")
    finally:
        await backend.aclose()


async def test_existing_account_is_found_by_its_key(pebble: Pebble) -> None:
    first = ClientV2Backend(pebble.directory_url, ca_file=pebble.ca_file)
    second = ClientV2Backend(pebble.directory_url, ca_file=pebble.ca_file)
    try:
        account = await first.ensure_account(None, ())
        again = await second.ensure_account(account.key_pem, ())
        assert again == account
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize("pebble", [{"authz_reuse": 0}], indirect=True)
async def test_failed_validation_is_an_issuance_error(pebble: Pebble, nursery: trio.Nursery) -> None:
    await nursery.start(serve_http01, pebble.http_port, {})  # knows no token: 404
    backend = await new_backend(pebble)
    try:
        csr_pem = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS[:1])
        order = await backend.new_order(DOMAINS[:1], csr_pem)
        (task,) = backend.challenges(order, Challenge.HTTP_01)
        await backend.answer(task)
        with pytest.raises(IssuanceError, match=r"a\.example\.test is invalid.*unauthorized"):
            await backend.wait_authorizations(order, trio.current_time() + ISSUANCE_TIMEOUT)
        # Pebble answers the finalize with 403 orderNotReady; polling finds the order invalid
        with pytest.raises(IssuanceError, match="is invalid") as caught:
            await backend.finalize(order, csr_pem, trio.current_time() + ISSUANCE_TIMEOUT)
        assert caught.value.problem_type == "urn:ietf:params:acme:error:unauthorized"
    finally:
        await backend.aclose()


async def test_untrusted_ca_is_an_issuance_error(pebble: Pebble) -> None:
    backend = ClientV2Backend(pebble.directory_url)  # system trust store: Pebble's API cert fails
    with pytest.raises(IssuanceError, match="SSL"):
        await backend.ensure_account(None, ())
    await backend.aclose()


# -- resuming an order ------------------------------------------------------------------------------


def posts_after(proxy: AriProxy, mark: int) -> list[str]:
    """The paths POSTed through ``proxy`` since its ``mark``-th request."""
    return [path for method, path in proxy.requests[mark:] if method == "POST"]


async def open_validated_order(backend: ClientV2Backend, provision: dict[str, ChallengeTask]) -> tuple[OrderHandle, bytes]:
    csr_pem = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS)
    order = await backend.new_order(DOMAINS, csr_pem)
    await validate(backend, order, Challenge.HTTP_01, provision)
    return order, csr_pem


# Counts the POSTs the backend makes: Pebble rejects no nonce here (a badNonce retry would count twice).
@pytest.mark.parametrize("pebble", [{"nonce_reject": 0}], indirect=True)
async def test_resumed_valid_order_is_downloaded_not_finalized_again(
    pebble: Pebble, nursery: trio.Nursery, tmp_path: Path
) -> None:
    provision = await start_http01(nursery, pebble)
    with AriProxy(pebble, tmp_path, ari=False) as proxy:
        backend, account = await new_account(proxy)
        try:
            order, csr_pem = await open_validated_order(backend, provision)
            mark = len(proxy.requests)
            chain = await backend.finalize(order, csr_pem, trio.current_time() + ISSUANCE_TIMEOUT)
            finalize_path = posts_after(proxy, mark)[0]
        finally:
            await backend.aclose()
        restarted, _ = await new_account(proxy, account.key_pem)  # as after a crash after finalize
        try:
            mark = len(proxy.requests)
            resumed = await restarted.resume_order(order.url)
            assert resumed.url == order.url
            assert sorted(resumed.domains) == sorted(DOMAINS)
            assert restarted.challenges(resumed, Challenge.HTTP_01) == []
            await restarted.wait_authorizations(resumed, trio.current_time() + ISSUANCE_TIMEOUT)
            again = await restarted.finalize(resumed, csr_pem, trio.current_time() + ISSUANCE_TIMEOUT)
        finally:
            await restarted.aclose()
    assert again == chain  # the same certificate: no second issuance
    verify_chain(again, await pebble.roots(), DOMAINS)
    resumed_posts = posts_after(proxy, mark)
    assert finalize_path not in resumed_posts
    assert resumed_posts.count(urlsplit(order.url).path) == 1  # one look at the order, then the download


# Counts the POSTs the backend makes: Pebble rejects no nonce here (a badNonce retry would count twice).
@pytest.mark.parametrize("pebble", [{"nonce_reject": 0}], indirect=True)
async def test_resumed_processing_order_is_polled_until_valid(
    pebble: Pebble, nursery: trio.Nursery, tmp_path: Path
) -> None:
    provision = await start_http01(nursery, pebble)
    with AriProxy(pebble, tmp_path, ari=False) as proxy:
        backend = await new_backend(proxy)
        try:
            order, csr_pem = await open_validated_order(backend, provision)
            chain = await backend.finalize(order, csr_pem, trio.current_time() + ISSUANCE_TIMEOUT)
            proxy.report_processing(2)  # the next two looks at the order say "processing"
            mark = len(proxy.requests)
            resumed = await backend.resume_order(order.url)
            again = await backend.finalize(resumed, csr_pem, trio.current_time() + ISSUANCE_TIMEOUT)
        finally:
            await backend.aclose()
    assert again == chain
    order_path = urlsplit(order.url).path
    posts = posts_after(proxy, mark)
    assert posts.count(order_path) == 3  # processing (resume), processing (poll), valid (poll)
    assert len(posts) == 4  # ... and the certificate: the CSR was not sent again


@pytest.mark.parametrize("pebble", [{"authz_reuse": 0}], indirect=True)
async def test_resumed_pending_order_is_validated_and_finalized(pebble: Pebble, nursery: trio.Nursery) -> None:
    provision = await start_http01(nursery, pebble)
    first, account = await new_account(pebble)
    try:
        csr_pem = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS)
        order = await first.new_order(DOMAINS, csr_pem)
    finally:
        await first.aclose()
    backend, _ = await new_account(pebble, account.key_pem)
    try:
        resumed = await backend.resume_order(order.url)
        tasks = await validate(backend, resumed, Challenge.HTTP_01, provision)
        assert sorted(t.domain for t in tasks) == sorted(DOMAINS)
        chain = await backend.finalize(resumed, csr_pem, trio.current_time() + ISSUANCE_TIMEOUT)
        verify_chain(chain, await pebble.roots(), DOMAINS)
        with pytest.raises(IssuanceError) as caught:
            await backend.resume_order(order.url.rsplit("/", 1)[0] + "/no-such-order")
        assert caught.value.status == 404
    finally:
        await backend.aclose()
