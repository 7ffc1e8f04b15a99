"""The fake CA's books: the certificates it issued, what happened to each name, and its rate limits.

:class:`CABook` is the part of :class:`~snakeway.testing.FakeCA` that decides
without I/O: whether a new order is accepted (``replaces`` and the rate limits
of :mod:`snakeway.testing._fakelimits`), and what to record when an order is
created, a validation fails, a certificate is issued or its ARI is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from snakeway.acme import crypto
from snakeway.acme.backend import AccountInfo
from snakeway.config.model import KeyType
from snakeway.errors import IssuanceError
from snakeway.testing._fakeari import Issued, NameRecord
from snakeway.testing._fakecrypto import JWK_CURVES, thumbprint
from snakeway.testing._fakefaults import ACME_ERROR
from snakeway.testing._fakelimits import CALimits, CALimitSettings


class CABook:
    """Accounts, issued certificates by ARI CertID, per-name records, and the CA-side limits.

    Attributes:
        accounts: The accounts created, in order.
        records: One :class:`NameRecord` per name the CA has seen.
        limits: The enforced limits and their counters, or None when the CA enforces none.
        rate_limited: New orders refused with ``rateLimited``.
    """

    def __init__(self, limits: CALimitSettings | None) -> None:
        self.records: dict[str, NameRecord] = {}
        self.limits = CALimits(limits) if limits is not None else None
        self.rate_limited = 0
        self.issued: dict[str, Issued] = {}  # by ARI CertID
        self._ids_by_pem: dict[bytes, str] = {}  # leaf PEM -> ARI CertID (ARI polls send the same PEM again)
        self.accounts: list[AccountInfo] = []
        self._accounts_by_key: dict[bytes, tuple[AccountInfo, str]] = {}  # public DER -> (info, thumbprint)

    def account(self, key_pem: bytes | None, new_uri: Callable[[], str]) -> tuple[AccountInfo, str]:
        """The account of ``key_pem`` (a new P-256 key if None), registered if new, and its JWK thumbprint.

        Raises:
            ValueError: ``key_pem`` is not an ECDSA (on a JWK curve) or RSA key.
        """
        if key_pem is None:
            key_pem = crypto.generate_key(KeyType.ECDSA_P256)  # P-256: well under a millisecond
        public = crypto.load_private_key(key_pem).public_key()
        if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name not in JWK_CURVES:
            raise ValueError(f"unsupported account key curve {public.curve.name}")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        known = self._accounts_by_key.get(der)
        if known is None:
            info = AccountInfo(key_pem=key_pem, uri=new_uri())
            known = self._accounts_by_key[der] = (info, thumbprint(public))
            self.accounts.append(info)
        return AccountInfo(key_pem=key_pem, uri=known[0].uri), known[1]

    def rekey(self, uri: str, new_key_pem: bytes) -> tuple[AccountInfo, str]:
        """Move the account ``uri`` to ``new_key_pem`` (a key rollover): the old key no longer finds it."""
        public = crypto.load_private_key(new_key_pem).public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for old, (info, _) in list(self._accounts_by_key.items()):
            if info.uri == uri:
                del self._accounts_by_key[old]
        info = AccountInfo(key_pem=new_key_pem, uri=uri)
        self._accounts_by_key[der] = (info, thumbprint(public))
        return info, thumbprint(public)

    def record(self, name: str) -> NameRecord:
        record = self.records.get(name)
        if record is None:
            record = self.records[name] = NameRecord()
        return record

    def accept_order(self, account: str, names: Sequence[str], replaces: str | None, now: datetime) -> bool:
        """Check a new order; record it. Returns whether ``replaces`` makes it an ARI renewal.

        Raises:
            IssuanceError: ``replaces`` unknown (400 malformed) or already replaced
                (409 alreadyReplaced), or a limit is reached (429 rateLimited with Retry-After).
        """
        if replaces is not None:
            cert = self.issued.get(replaces)
            if cert is None:
                raise IssuanceError(f"replaces names an unknown certificate {replaces}", status=400,
                                    problem_type=ACME_ERROR + "malformed")
            if cert.replaced_by is not None:
                raise IssuanceError(f"certificate {replaces} was already replaced by order {cert.replaced_by}",
                                    status=409, problem_type=ACME_ERROR + "alreadyReplaced")
        if self.limits is not None:
            refusal = self.limits.refusal(account, names, now, ari_renewal=replaces is not None)
            if refusal is not None:
                self.rate_limited += 1
                for name in names:
                    self.record(name).rate_limited += 1
                raise IssuanceError(refusal.detail(), status=429, retry_after=refusal.retry_after,
                                    problem_type=ACME_ERROR + "rateLimited")
            self.limits.order_created(account, now)
        for name in names:
            record = self.record(name)
            record.orders += 1
            record.first_order = record.first_order or now
        return replaces is not None

    def validation_failed(self, name: str, now: datetime) -> None:
        self.record(name).failed_validations += 1
        if self.limits is not None:
            self.limits.validation_failed(name, now)

    def certificate_issued(self, chain_pem: str, names: Sequence[str], leaf: x509.Certificate, *,
                           replaces: str | None, order_url: str, now: datetime, count: bool = True) -> Issued:
        """Register a signed leaf; with ``count``, also in the records and limits (a real issuance)."""
        pem = chain_pem.encode("ascii")
        cert_id = crypto.ari_cert_id(pem)
        issued = Issued(cert_id, tuple(names), leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                        leaf.serial_number)
        self.issued[cert_id] = issued
        self._ids_by_pem[_leaf_pem(pem)] = cert_id
        if count:
            for name in names:
                self.record(name).issued.append((issued.not_before, issued.not_after))
            if self.limits is not None:
                self.limits.certificate_issued(names, now)
        if replaces is not None:
            self.issued[replaces].replaced_by = order_url
        return issued

    def lookup(self, cert_pem: bytes) -> Issued:
        """The certificate ``cert_pem`` (its first PEM block) is, known or not.

        Raises:
            ValueError: No authority key identifier (no ARI CertID).
        """
        leaf = _leaf_pem(cert_pem)
        cert_id = self._ids_by_pem.get(leaf)
        if cert_id is None:
            cert_id = self._ids_by_pem[leaf] = crypto.ari_cert_id(cert_pem)
        known = self.issued.get(cert_id)
        if known is None:  # not from this CA (or from an earlier one): take its dates as they are
            cert = x509.load_pem_x509_certificate(leaf)
            known = Issued(cert_id, _san(cert), cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)
            self.issued[cert_id] = known
        return known

    def ari_requested(self, cert: Issued) -> None:
        for name in cert.names:
            self.record(name).ari_requests += 1


def _leaf_pem(pem: bytes) -> bytes:
    end = pem.find(b"-----END CERTIFICATE-----")
    return pem if end < 0 else pem[: end + len(b"-----END CERTIFICATE-----")]


def _san(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))
