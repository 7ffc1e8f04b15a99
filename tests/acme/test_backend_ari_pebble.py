"""ClientV2Backend's ARI (RFC 9773) against Pebble behind tests/ariproxy.py, which adds ``renewalInfo``.

``renewal_info`` reads the window, ``explanationURL`` and ``Retry-After`` the CA
serves and refuses malformed answers; ``new_order(replaces=...)`` sends the
CertID only to a CA with ``renewalInfo``, and ``alreadyReplaced`` comes back as
its problem type. ARI GETs never wait behind an order in flight.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trustme

from snakeway.acme import crypto
from snakeway.acme.ari import RenewalInfo
from snakeway.acme.ari_wire import MAX_BODY
from snakeway.acme.backend import ChallengeTask, ClientV2Backend
from snakeway.config.model import Challenge, KeyType
from snakeway.errors import IssuanceError
from tests.acme.test_backend_pebble import DOMAINS, issue, new_backend, start_http01, verify_chain
from tests.ariproxy import ALREADY_REPLACED, RENEWAL_INFO_PATH, AriProxy
from tests.pebble import Pebble

START = datetime(2030, 1, 2, 4, 0, tzinfo=UTC)
END = datetime(2030, 1, 3, 4, 0, tzinfo=UTC)
ARI_TIMEOUT = 10.0  # far more than a GET on 127.0.0.1 takes; only a request stuck in a queue reaches it


@dataclass(frozen=True)
class Front:
    proxy: AriProxy
    backend: ClientV2Backend
    provision: dict[str, ChallengeTask]
    chain: bytes  # a certificate issued through the front


@asynccontextmanager
async def issued_behind_front(pebble: Pebble, nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Front]:
    """Pebble behind the ARI front, a backend with an account there, and one certificate issued through it."""
    provision = await start_http01(nursery, pebble)
    with AriProxy(pebble, tmp_path) as proxy:
        backend = await new_backend(proxy)
        try:
            chain, _, _ = await issue(backend, DOMAINS, Challenge.HTTP_01, provision)
            yield Front(proxy, backend, provision, chain.encode())
        finally:
            await backend.aclose()


async def test_renewal_info_reads_the_window_explanation_and_retry_after(
    pebble: Pebble, nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trust bundle from the environment must not replace the configured CA file for ARI either.
    other = tmp_path / "unrelated-ca.pem"
    other.write_bytes(trustme.CA().cert_pem.bytes())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    async with issued_behind_front(pebble, nursery, tmp_path) as front:
        front.proxy.set_window(START, END, retry_after=3600, explanation_url="https://ca.example.test/why")
        before = datetime.now(UTC)
        info = await front.backend.renewal_info(front.chain)
        after = datetime.now(UTC)
    assert info is not None
    assert info.retry_after is not None
    assert before + timedelta(hours=1) - timedelta(seconds=1) <= info.retry_after <= after + timedelta(hours=1)
    assert info == RenewalInfo(START, END, "https://ca.example.test/why", info.retry_after)
    cert_id = crypto.ari_cert_id(front.chain)
    assert front.proxy.ari_requests == [cert_id]
    assert ("GET", f"{RENEWAL_INFO_PATH}/{cert_id}") in front.proxy.requests  # a plain GET, not POST-as-GET


async def test_malformed_and_failed_answers_are_issuance_errors(
    pebble: Pebble, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with issued_behind_front(pebble, nursery, tmp_path) as front:
        proxy, backend = front.proxy, front.backend
        proxy.set_answer({"suggestedWindow": {"start": "2030-01-02T04:00:00Z"}})
        with pytest.raises(IssuanceError, match=r"suggestedWindow\.end is missing"):
            await backend.renewal_info(front.chain)
        proxy.set_window(END, START)
        with pytest.raises(IssuanceError, match="is not after its start"):
            await backend.renewal_info(front.chain)
        proxy.set_answer(b"<html>maintenance</html>")
        with pytest.raises(IssuanceError, match="not JSON"):
            await backend.renewal_info(front.chain)
        proxy.set_answer(b" " * (MAX_BODY + 1))
        with pytest.raises(IssuanceError, match="larger than"):
            await backend.renewal_info(front.chain)
        busy = {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"}
        proxy.set_answer(busy, status=429, retry_after=120)
        with pytest.raises(IssuanceError, match="HTTP 429: 'slow down'") as caught:
            await backend.renewal_info(front.chain)
        assert caught.value.status == 429
        assert caught.value.problem_type == "urn:ietf:params:acme:error:rateLimited"
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > datetime.now(UTC) + timedelta(seconds=100)
        proxy.set_window(START, END)  # the CA recovers: the same backend reads it again
        info = await backend.renewal_info(front.chain)
        assert info is not None and (info.start, info.end) == (START, END)
    assert len(proxy.ari_requests) == 6


async def test_renewal_order_carries_replaces_when_the_ca_offers_ari(
    pebble: Pebble, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with issued_behind_front(pebble, nursery, tmp_path) as front:
        cert_id = crypto.ari_cert_id(front.chain)
        renewed, _, _ = await issue(front.backend, DOMAINS, Challenge.HTTP_01, front.provision, replaces=cert_id)
    verify_chain(renewed, await pebble.roots(), DOMAINS)
    assert renewed.encode() != front.chain
    payloads = front.proxy.new_order_payloads
    assert "replaces" not in payloads[0]
    assert payloads[1] == {"identifiers": [{"type": "dns", "value": name} for name in DOMAINS], "replaces": cert_id}


async def test_without_renewal_info_replaces_is_not_sent(pebble: Pebble, tmp_path: Path) -> None:
    with AriProxy(pebble, tmp_path, ari=False) as proxy:
        backend = await new_backend(proxy)
        try:
            csr_pem = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS[:1])
            await backend.new_order(DOMAINS[:1], csr_pem, replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
            assert await backend.renewal_info(b"not even a certificate") is None  # no ARI: nothing asked
        finally:
            await backend.aclose()
    assert proxy.new_order_payloads == [{"identifiers": [{"type": "dns", "value": DOMAINS[0]}]}]
    assert proxy.ari_requests == []


async def test_already_replaced_is_its_problem_type_and_an_order_without_replaces_follows(
    pebble: Pebble, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with issued_behind_front(pebble, nursery, tmp_path) as front:
        cert_id = crypto.ari_cert_id(front.chain)
        front.proxy.mark_replaced(cert_id)
        csr_pem = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS)
        with pytest.raises(IssuanceError) as caught:
            await front.backend.new_order(DOMAINS, csr_pem, replaces=cert_id)
        assert caught.value.problem_type == ALREADY_REPLACED
        assert caught.value.status == 409
        order = await front.backend.new_order(DOMAINS, csr_pem)  # what the caller does next
        assert order.domains == DOMAINS
    assert [p.get("replaces") for p in front.proxy.new_order_payloads] == [None, cert_id, None]


async def test_ari_does_not_wait_behind_an_order_in_flight(
    pebble: Pebble, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with issued_behind_front(pebble, nursery, tmp_path) as front:
        front.proxy.set_window(START, END)
        gate = front.proxy.hold_new_orders()  # the CA sits on newOrder requests
        ordered = trio.Event()

        async def order() -> None:
            csr_pem = crypto.make_csr(crypto.generate_key(KeyType.ECDSA_P256), DOMAINS)
            await front.backend.new_order(DOMAINS, csr_pem)
            ordered.set()

        nursery.start_soon(order)
        try:
            with trio.fail_after(ARI_TIMEOUT):
                while not gate.arrived.is_set():  # the order holds the backend's nonce set now
                    await trio.sleep(0.01)
                info = await front.backend.renewal_info(front.chain)
            assert info is not None and info.end == END
            assert not ordered.is_set()
        finally:
            gate.release()
        with trio.fail_after(ARI_TIMEOUT):
            await ordered.wait()
