"""Several ACME CAs: which one a certificate is ordered from, and what each must offer (pure).

Theory of operation
-------------------
``tls_automation.acme`` may list several CAs (*issuers*), tried in order, as Caddy tries Let's Encrypt
and then ZeroSSL. A certificate's renewal state remembers the issuer its next attempt goes to
(:attr:`~snakeway.acme.schedule.RenewalState.issuer`, the CA's directory URL; none: the first) and
counts its failures there:

* after ``issuer_fallback_after_failures`` failures in a row at one issuer, the next attempt goes to
  the next issuer, at once and with a back-off of its own: the failed CA's back-off and ``Retry-After``
  are about that CA, not the next one (:func:`after_failure`);
* a failure that retrying at the same CA cannot mend (a permanent one: the CA refuses the name, CAA
  forbids it; or the CA lacks the configured profile) moves on at once;
* after the last issuer, the first comes again (with the usual back-off, so a certificate every CA
  refuses is tried a few times a day);
* a certificate obtained from any issuer clears the state: its next renewal starts at the first.

Every issuer has its own account (stored under its directory URL), rate-limit ledger and order lane,
so one CA's limits never hold up orders at another. :func:`issuer_index` maps the stored directory URL
back to a position; a URL no longer configured means the first.

:func:`profile_refusal` decides whether an order may go to a CA given the profiles its directory
offers (``meta.profiles``, RFC 8555 §7.1.1 as extended by the ACME profiles draft): a profile the
CA does not offer is not silently dropped, because the certificate would then not be the one asked
for (its lifetime, its extended key usages); the order is refused for that CA, which with several
issuers means the next one.

:func:`decode_mac_key` reads an External Account Binding MAC key as CAs hand it out (base64url).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence

# The problem type of an order refused because the CA lacks the configured profile (snakeway's, not an ACME URN).
PROFILE_UNAVAILABLE = "snakeway:profileUnavailable"

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+=*")


def issuer_index(directory_urls: Sequence[str], stored: str | None) -> int:
    """The position of the issuer ``stored`` names among ``directory_urls``; 0 when None or not configured."""
    try:
        return directory_urls.index(stored) if stored is not None else 0
    except ValueError:
        return 0


def after_failure(current: int, failures: int, issuers: int, threshold: int, *, hopeless: bool = False) -> int | None:
    """Which issuer the next attempt goes to after one more failed attempt at ``current``.

    Args:
        current: Position of the issuer that just failed.
        failures: Failures in a row at ``current``, this one included.
        issuers: How many issuers are configured (at least 1).
        threshold: ``issuer_fallback_after_failures`` (at least 1).
        hopeless: Retrying at ``current`` cannot help (a permanent failure, a missing profile).

    Returns:
        The position of the next issuer (after the last one, the first), or None to stay at ``current``.
        With one issuer, always None.

    Raises:
        ValueError: an argument out of range.
    """
    if issuers < 1 or threshold < 1 or failures < 1 or not 0 <= current < issuers:
        raise ValueError(f"out of range: current={current}, failures={failures}, issuers={issuers}, "
                         f"threshold={threshold}")
    if issuers == 1 or (failures < threshold and not hopeless):
        return None
    return (current + 1) % issuers


def profile_refusal(wanted: str | None, offered: Mapping[str, str] | None) -> str | None:
    """Why no order for profile ``wanted`` may go to a CA whose directory offers ``offered``; None: it may.

    ``offered`` is the directory's ``meta.profiles`` (name to description), None when it has none.
    """
    if wanted is None or (offered is not None and wanted in offered):
        return None
    if not offered:
        return f"the CA offers no certificate profiles, and profile {wanted!r} is configured"
    return f"the CA does not offer profile {wanted!r} (it offers: {', '.join(sorted(offered))})"


def decode_mac_key(text: str) -> bytes:
    """The HMAC key of an External Account Binding, from its base64url form (padding optional).

    Raises:
        ValueError: not base64url, or empty.
    """
    text = text.strip()
    if not _BASE64URL.fullmatch(text):
        raise ValueError("expected the base64url MAC key the CA handed out (A-Z, a-z, 0-9, - and _)")
    try:
        key = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {exc}") from None
    if not key:
        raise ValueError("the MAC key is empty")
    return key
