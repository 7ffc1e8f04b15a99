"""What the configuration asks ACME CAs for: one :class:`ManagedCert` per certificate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from snakeway.config.model import Challenge, Config, KeyType, TlsMode
from snakeway.listeners import cert_ids


@dataclass(frozen=True)
class ManagedCert:
    """One certificate the configuration asks an ACME CA for."""

    cert_id: str
    domains: tuple[str, ...]
    challenge: Challenge = Challenge.HTTP_01
    key_type: KeyType = KeyType.ECDSA_P256

    @property
    def name(self) -> str:
        return self.domains[0]


def managed_certs(config: Config) -> list[ManagedCert]:
    """Every ACME certificate of ``config``, once each (listeners may share one)."""
    found: dict[str, ManagedCert] = {}
    for ingress in config.ingresses:
        tls = ingress.bind.tls
        if tls is not None and tls.mode is TlsMode.ACME:
            groups = [(name,) for name in tls.domains] if tls.certificate_per_domain else [tls.domains]
            for cert_id, domains in zip(cert_ids(tls), groups, strict=True):
                found.setdefault(cert_id, ManagedCert(cert_id, domains, tls.challenge, tls.key_type))
    return list(found.values())


def day_text(moment: datetime) -> str:
    """A moment as the log shows dates of certificates."""
    return f"{moment:%Y-%m-%d %H:%M} UTC"
