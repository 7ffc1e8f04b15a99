"""ACME Renewal Information (ARI, RFC 9773) on the wire: parse a CA's answer, and fetch it.

Theory of operation
-------------------
A renewalInfo resource is fetched with a plain, unauthenticated ``GET
{renewalInfo}/{certID}`` (RFC 9773 §4.1), so it needs neither the account key
nor a nonce. :class:`~snakeway.acme.backend.ClientV2Backend` therefore sends
these requests through a ``requests.Session`` of their own (:func:`open_session`)
under a limiter of their own: an ARI poll never waits behind an order that
holds the account's nonce set, and an order never waits behind ARI polls.

* :func:`parse_renewal_info` is pure and total: for any JSON value it returns a
  :class:`~snakeway.acme.ari.RenewalInfo` or raises
  :class:`~snakeway.errors.IssuanceError` saying what is wrong. A missing or
  ill-typed ``suggestedWindow.start``/``end``, a timestamp that is not RFC 3339
  with an offset, and a window whose end is not after its start are all
  malformed (RFC 9773 §4.2: the client then makes its own decision). An
  ``explanationURL`` that is not a printable string is dropped (it is only ever
  logged); the window is still usable.
* Timestamps keep microsecond precision (a CA writing nanoseconds is truncated).
* :func:`fetch_renewal_info` is the blocking half, run in a worker thread: one
  GET, a body of at most ``MAX_BODY`` bytes, and every failure (network, HTTP
  status, JSON) an ``IssuanceError`` carrying the status, the ``Retry-After`` of
  a 429/503 and the problem ``type`` the CA sent.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import requests

from snakeway.acme.ari import RenewalInfo
from snakeway.acme.schedule import parse_retry_after
from snakeway.errors import IssuanceError

MAX_BODY = 64 * 1024  # a renewalInfo object is a few hundred bytes
_CHUNK = 8192

# RFC 3339 §5.6 date-time: full-date "T" full-time, with a mandatory offset ("Z" or +hh:mm).
_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<offset>[Zz]|(?P<sign>[+-])(?P<off_hour>\d{2}):(?P<off_minute>\d{2}))",
    re.ASCII,
)
_PRINTABLE_URL = re.compile(r"[\x21-\x7e]{1,2048}", re.ASCII)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 ``date-time`` as an aware UTC datetime (microsecond precision).

    Raises:
        ValueError: Not RFC 3339, no offset, an impossible date or time (a leap
            second included), or out of ``datetime``'s range once in UTC.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 timestamp with an offset")
    offset = timedelta(0)
    if match["sign"] is not None:
        offset = timedelta(hours=int(match["off_hour"]), minutes=int(match["off_minute"]))
        offset = -offset if match["sign"] == "-" else offset
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    try:
        local = datetime(
            int(match["year"]), int(match["month"]), int(match["day"]),
            int(match["hour"]), int(match["minute"]), int(match["second"]), int(fraction),
            tzinfo=timezone(offset),
        )
        return local.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 moved across midnight by the offset
        raise ValueError("timestamp out of range") from exc


def parse_renewal_info(body: object, retry_after_header: str | None, now: datetime) -> RenewalInfo:
    """The :class:`RenewalInfo` in a renewalInfo response (RFC 9773 §4.2).

    Args:
        body: The response body as decoded JSON (any JSON value).
        retry_after_header: The response's ``Retry-After`` header, if any.
        now: The current time (aware), for a ``Retry-After`` in seconds.

    Returns:
        The window in UTC, the ``explanationURL`` if it is a printable string,
        and the ``Retry-After`` moment (see
        :func:`~snakeway.acme.schedule.parse_retry_after`; None when absent or
        malformed).

    Raises:
        IssuanceError: The answer is malformed (the message says how).
        ValueError: ``now`` is naive (a caller bug, not bad input).
    """
    retry_after = parse_retry_after(retry_after_header, now)
    if not isinstance(body, dict):
        raise IssuanceError(f"malformed ARI answer: a JSON {_json_kind(body)}, not an object")
    window = body.get("suggestedWindow")
    if not isinstance(window, dict):
        raise IssuanceError("malformed ARI answer: suggestedWindow is missing or not an object")
    start = _timestamp(window, "start")
    end = _timestamp(window, "end")
    if end <= start:
        raise IssuanceError(
            f"malformed ARI answer: suggestedWindow.end ({end.isoformat()}) is not after its start"
            f" ({start.isoformat()})"
        )
    explanation = body.get("explanationURL")
    url = explanation if isinstance(explanation, str) and _PRINTABLE_URL.fullmatch(explanation) else None
    return RenewalInfo(start=start, end=end, explanation_url=url, retry_after=retry_after)


def _timestamp(window: dict[str, object], key: str) -> datetime:
    value = window.get(key)
    if value is None:
        raise IssuanceError(f"malformed ARI answer: suggestedWindow.{key} is missing")
    if not isinstance(value, str):
        raise IssuanceError(f"malformed ARI answer: suggestedWindow.{key} is a JSON {_json_kind(value)}")
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise IssuanceError(f"malformed ARI answer: suggestedWindow.{key} {_clip(value)}: {exc}") from None


def _json_kind(value: object) -> str:
    kinds = ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"), (list, "array"))
    return "null" if value is None else next((name for cls, name in kinds if isinstance(value, cls)), "object")


def _clip(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


# --- the blocking half (worker threads) ---------------------------------------------------------


def open_session(user_agent: str) -> requests.Session:
    """A session for ARI GETs only (proxies from the environment apply)."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    session.headers["Accept"] = "application/json"
    return session


def fetch_renewal_info(session: requests.Session, url: str, *, verify: str | bool, timeout: float) -> RenewalInfo:
    """GET one renewalInfo resource and parse it (blocking: run it in a worker thread).

    ``verify`` (a CA file, or ``True`` for the system store) goes with the request:
    a session's own ``verify`` loses to ``REQUESTS_CA_BUNDLE`` in requests.

    Raises:
        IssuanceError: The request failed, the CA answered an error status
            (with ``status``, ``retry_after`` on 429/503 and ``problem_type``),
            the body is too large or not JSON, or the answer is malformed.
    """
    try:
        with session.get(url, verify=verify, timeout=timeout, stream=True) as response:
            raw = _read_bounded(response)
    except requests.RequestException as exc:
        raise IssuanceError(f"ARI request {url} failed: {type(exc).__name__}: {exc}") from exc
    now = datetime.now(UTC)
    if raw is None:
        raise IssuanceError(f"ARI answer from {url} is larger than {MAX_BODY} bytes", status=response.status_code)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        body = None
        if response.ok:
            raise IssuanceError(f"ARI answer from {url} is not JSON", status=response.status_code) from None
    if not response.ok:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now) if status in (429, 503) else None
        problem = body.get("type") if isinstance(body, dict) else None
        problem_type = problem if isinstance(problem, str) else None
        detail = body.get("detail") if isinstance(body, dict) else None
        reason = f": {_clip(detail, 200)}" if isinstance(detail, str) else ""
        message = f"ARI request {url}: HTTP {status}{reason}"
        raise IssuanceError(message, status=status, retry_after=retry_after, problem_type=problem_type)
    return parse_renewal_info(body, response.headers.get("Retry-After"), now)


def _read_bounded(response: requests.Response) -> bytes | None:
    """The body, or None once it passes ``MAX_BODY`` bytes."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
