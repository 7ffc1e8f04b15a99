"""Adapters over the ``acme`` and ``josepy`` libraries, for :mod:`snakeway.acme.backend` only.

Everything here runs in the backend's worker threads or is pure: the retrying
network, the ``newOrder`` payload with ``replaces``, the generic challenge answer and the
challenges' key authorizations, the account key's JWK, the translation of the libraries' errors,
and small readers of the library's objects. With
:mod:`snakeway.acme.backend`, this is the only module that imports ``acme`` and
``josepy``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime

import requests
from acme import challenges as acme_challenges
from acme import client as acme_client
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import errors as jose_errors
from josepy.b64 import b64encode
from josepy.json_util import field as jose_field
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from snakeway.acme import crypto
from snakeway.acme.protocol import ChallengeTask
from snakeway.acme.schedule import parse_retry_after
from snakeway.config.model import Challenge
from snakeway.errors import IssuanceError

logger = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,}")  # base64url, >= 128 bits (RFC 8555 §8.1)

BAD_NONCE_ROUNDS = 8  # ClientNetwork.post tries twice per round: 16 tries in all

# An order in one of these states has had its CSR: finalize only polls or downloads it.
FINALIZED = (messages.STATUS_VALID, messages.STATUS_PROCESSING, messages.STATUS_INVALID)


class Network(acme_client.ClientNetwork):
    """``ClientNetwork`` that retries ``badNonce`` until it gets through.

    The CA did not act on a request it refused for its nonce, so a retry is safe;
    the library alone retries only once.
    """

    def post(self, *args: object, **kwargs: object) -> requests.Response:
        for round_ in range(1, BAD_NONCE_ROUNDS + 1):
            try:
                return super().post(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or round_ == BAD_NONCE_ROUNDS:
                    raise
                logger.debug("badNonce twice in a row, retrying (round %d)", round_)
        raise AssertionError("unreachable")


class NewOrder(messages.NewOrder):
    """``newOrder`` payload with RFC 9773's ``replaces`` (acme 5.x's ``NewOrder`` lacks it; None is not sent)."""

    replaces: str | None = jose_field("replaces", omitempty=True)


def account_binding(jwk: JWK, key_id: str, mac_key: str, client: acme_client.ClientV2) -> dict[str, object]:
    """The ``externalAccountBinding`` of a newAccount request (RFC 8555 §7.3.4): the account key signed with
    the CA's MAC key (base64url, as the CA hands it out) under ``key_id``."""
    binding: dict[str, object] = messages.ExternalAccountBinding.from_data(
        account_public_key=jwk.public_key(), kid=key_id, hmac_key=mac_key, directory=client.directory
    )
    return binding


def offered_profiles(directory: messages.Directory) -> dict[str, str] | None:
    """The directory's ``meta.profiles`` (name to description), or None when it lists none."""
    profiles = getattr(directory.meta, "profiles", None)  # a josepy frozendict
    return {str(k): str(v) for k, v in profiles.items()} if isinstance(profiles, Mapping) else None


def fetch_directory(session: requests.Session, url: str, *, verify: str | bool, timeout: float) -> messages.Directory:
    """GET the CA's directory without an account (blocking: run it in a worker thread).

    Raises:
        requests.RequestException: The request failed or answered an error status.
        ValueError: The answer is not a JSON directory (``jose_errors.Error`` is one too).
    """
    response = session.get(url, verify=verify, timeout=timeout)
    response.raise_for_status()
    try:
        return messages.Directory.from_json(response.json())
    except jose_errors.Error as exc:
        raise ValueError(f"not an ACME directory: {exc}") from exc


class EmptyResponse(acme_challenges.KeyAuthorizationChallengeResponse):
    """Serializes to ``{}``: the answer to any key-authorization challenge (RFC 8555 §7.5.1)."""

    typ = "snakeway-generic"


def directory_url(client: acme_client.ClientV2, name: str) -> str | None:
    """The directory's ``name`` URL, or None when the CA does not offer it."""
    try:
        return str(client.directory[name])
    except KeyError:
        return None


def jwk_for(key_pem: bytes) -> tuple[JWK, JWASignature]:
    """The account key's JWK and signature algorithm (RSA, or ECDSA P-256/384/521).

    Raises:
        ValueError: Another key type or curve.
    """
    key = crypto.load_private_key(key_pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
        if key.curve.name not in algs:
            raise ValueError(f"unsupported account key curve {key.curve.name}")
        return JWKEC(key=key), algs[key.curve.name]
    return JWKRSA(key=key), RS256


def authz_failure(authzr: messages.AuthorizationResource) -> str:
    """Why an authorization is not valid, with the CA's reason per challenge."""
    authz = authzr.body
    errors = [f"{c.chall.to_partial_json().get('type')}: {c.error}" for c in authz.challenges if c.error]
    reason = "; ".join(errors) if errors else "no reason given"
    return f"authorization for {authz.identifier.value} is {authz.status.name}: {reason}"


def problem_of(response: requests.Response) -> messages.Error | None:
    """The RFC 7807 problem an error response carries, if any."""
    try:
        body = response.json()
        return messages.Error.from_json(body) if isinstance(body, dict) else None
    except (ValueError, jose_errors.Error):  # not JSON, or not a problem document
        return None


def retry_after_seconds(response: requests.Response) -> float | None:
    """The response's ``Retry-After`` as seconds from now, or None."""
    now = datetime.now(UTC)
    when = parse_retry_after(response.headers.get("Retry-After"), now)
    return None if when is None else max(0.0, (when - now).total_seconds())


def translate(exc: Exception, last: requests.Response | None) -> IssuanceError:
    """The :class:`~snakeway.errors.IssuanceError` for a library error (in the worker thread); ``last`` is the
    response the call received last (the CA's error answer when the library raised without one)."""
    response = exc.response if isinstance(exc, requests.RequestException) else None
    if response is None and last is not None and not last.ok:
        response = last  # the CA's error answer (not an earlier success)
    status = response.status_code if response is not None else None
    retry_after = None
    if response is not None and status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
    problem = exc if isinstance(exc, messages.Error) else None
    if problem is None and response is not None and not response.ok:
        problem = problem_of(response)  # acme raises a bare ConflictError for any 409
    problem_type = problem.typ if problem is not None else None
    reason = problem if problem is not None else exc
    message = f"{type(exc).__name__}: {reason}" if str(reason) else type(exc).__name__
    return IssuanceError(message, status=status, retry_after=retry_after, problem_type=problem_type)


def challenge_tasks(order: messages.OrderResource, kind: Challenge, jwk: JWK) -> list[ChallengeTask]:
    """The ``kind`` challenges of ``order`` still to answer, with their key authorizations for the account key
    ``jwk`` (RFC 8555 §8.1; computed here for every type, tls-alpn-01 included); valid authorizations are
    skipped.

    Raises:
        IssuanceError: An authorization is not pending, or does not offer ``kind``, or a token is malformed.
    """
    thumbprint = b64encode(jwk.public_key().thumbprint()).decode("ascii")
    tasks = []
    for authzr in order.authorizations:
        authz = authzr.body
        domain = authz.identifier.value
        if authz.status == messages.STATUS_VALID:
            continue
        if authz.status != messages.STATUS_PENDING:
            raise IssuanceError(f"authorization for {domain} is {authz.status.name}")
        for challb in authz.challenges:
            jobj = challb.chall.to_partial_json()
            if jobj.get("type") != kind.value:
                continue
            token = jobj.get("token")
            if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
                raise IssuanceError(f"{kind.value} challenge for {domain} has a malformed token")
            tasks.append(
                ChallengeTask(
                    domain=domain, kind=kind, token=token,
                    key_authorization=f"{token}.{thumbprint}", url=challb.uri, body=challb,
                )
            )
            break
        else:
            raise IssuanceError(f"the CA offers no {kind.value} challenge for {domain}")
    return tasks
