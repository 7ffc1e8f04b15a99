"""Choosing among the certificate chains a CA offers (``acme.preferred_chain``; pure).

A CA may serve one certificate under several chains: the default one at the order's ``certificate``
URL, the others at URLs in ``Link: <url>;rel="alternate"`` header fields of that answer (RFC 8555
§7.4.2), typically one per root the CA is cross-signed to. ``preferred_chain`` names the issuer
common name wanted, as certbot's ``--preferred-chain`` does:

1. the first chain (the default first, then the alternates in the CA's order) whose top-most
   certificate was issued by a CA with that common name;
2. otherwise the first chain in which any certificate was issued by it;
3. otherwise the default chain.

Chains are compared as they are served (leaf first; the root is usually left out).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID

# One link-value of a Link header field (RFC 8288 §3): <target> and its parameters.
_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[A-Za-z0-9!#$&+\-.^_`|~*]+\s*(?:=\s*(?:"[^"]*"|[^;,\s]*))?)*)')
_PARAM = re.compile(r'([A-Za-z0-9!#$&+\-.^_`|~*]+)\s*(?:=\s*(?:"([^"]*)"|([^;,\s]*)))?')


def alternate_links(link_fields: Sequence[str]) -> list[str]:
    """The targets of the ``rel="alternate"`` links in ``link_fields`` (each the value of one Link field
    or several joined by commas), in order; relation types are matched case-insensitively."""
    targets = []
    for value in link_fields:
        for link in _LINK.finditer(value):
            for param in _PARAM.finditer(link.group(2)):
                if param.group(1).lower() != "rel":
                    continue
                rel = param.group(2) if param.group(2) is not None else param.group(3) or ""
                if "alternate" in rel.lower().split():
                    targets.append(link.group(1))
                break  # only the first rel parameter counts (RFC 8288 §3.3)
    return targets


def issuer_names(chain_pem: bytes) -> list[str]:
    """The issuer common names of the chain's certificates, leaf first (``""`` for one without).

    Raises:
        ValueError: ``chain_pem`` holds no certificate, or one that does not parse.
    """
    return [_common_name(cert.issuer) for cert in x509.load_pem_x509_certificates(chain_pem)]


def choose_chain(chains: Sequence[Sequence[str]], preferred: str) -> int | None:
    """Which chain to serve, given each chain's :func:`issuer_names` (the default chain first).

    Returns:
        The index of the chosen chain (see the module docstring), or None when none matches
        (then the default chain is served).
    """
    for index, names in enumerate(chains):
        if names and names[-1] == preferred:
            return index
    for index, names in enumerate(chains):
        if preferred in names:
            return index
    return None


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = values[0].value if values else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def choose_served(served: Sequence[str], preferred: str) -> int | None:
    """:func:`choose_chain` over chains as served (PEM text); an unreadable chain is never chosen."""
    names: list[list[str]] = []
    for pem in served:
        try:
            names.append(issuer_names(pem.encode("ascii")))
        except ValueError:
            names.append([])
    return choose_chain(names, preferred)
