"""Parsing a CA's ARI answer (pure, with hypothesis): every JSON value gives a RenewalInfo or an IssuanceError."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from snakeway.acme.ari import RenewalInfo
from snakeway.acme.ari_wire import parse_renewal_info, parse_rfc3339
from snakeway.errors import IssuanceError

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def answer(start: object, end: object, **extra: object) -> dict[str, object]:
    return {"suggestedWindow": {"start": start, "end": end}, **extra}


def test_the_rfc_example_is_read_with_its_explanation_and_retry_after() -> None:
    body = json.loads(
        '{"suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-03T04:00:00Z"},'
        ' "explanationURL": "https://acme.example.com/docs/ari"}'
    )
    info = parse_renewal_info(body, "21600", NOW)
    assert info == RenewalInfo(
        start=datetime(2025, 1, 2, 4, tzinfo=UTC),
        end=datetime(2025, 1, 3, 4, tzinfo=UTC),
        explanation_url="https://acme.example.com/docs/ari",
        retry_after=NOW + timedelta(hours=6),
    )
    assert info.start.tzinfo is UTC and info.end.tzinfo is UTC


def test_retry_after_as_an_http_date_and_absent() -> None:
    body = answer("2025-01-02T04:00:00Z", "2025-01-03T04:00:00Z")
    assert parse_renewal_info(body, "Wed, 01 May 2030 13:00:00 GMT", NOW).retry_after == NOW + timedelta(hours=1)
    assert parse_renewal_info(body, None, NOW).retry_after is None
    assert parse_renewal_info(body, "soon", NOW).retry_after is None  # malformed: the caller's default applies
    assert parse_renewal_info(body, None, NOW).explanation_url is None


def test_offsets_and_nanoseconds_are_read_as_the_same_instant() -> None:
    info = parse_renewal_info(answer("2025-01-02T06:30:00.123456789+02:30", "2025-01-02t23:59:59-05:00"), None, NOW)
    assert info.start == datetime(2025, 1, 2, 4, 0, 0, 123456, tzinfo=UTC)
    assert info.end == datetime(2025, 1, 3, 4, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "a JSON array, not an object"),
        ("window", "a JSON string, not an object"),
        (None, "a JSON null, not an object"),
        ({}, "suggestedWindow is missing"),
        ({"suggestedWindow": ["2025-01-02T04:00:00Z"]}, "suggestedWindow is missing or not an object"),
        ({"suggestedWindow": {"start": "2025-01-02T04:00:00Z"}}, r"suggestedWindow\.end is missing"),
        (answer(None, "2025-01-02T04:00:00Z"), r"suggestedWindow\.start is missing"),
        (answer(1735790400, "2025-01-02T04:00:00Z"), r"suggestedWindow\.start is a JSON number"),
        (answer("2025-01-02T04:00:00Z", True), r"suggestedWindow\.end is a JSON boolean"),
        (answer("2025-01-02T04:00:00", "2025-01-03T04:00:00Z"), r"start '2025-01-02T04:00:00': not an RFC 3339"),
        (answer("2025-01-02", "2025-01-03T04:00:00Z"), "not an RFC 3339"),
        (answer("2025-02-30T04:00:00Z", "2025-03-03T04:00:00Z"), r"start '2025-02-30T04:00:00Z'"),
        (answer("2025-01-02T04:00:00Z", "2025-01-02T04:00:00Z"), r"end \(2025-01-02T04:00:00\+00:00\) is not after"),
        (answer("2025-01-03T04:00:00Z", "2025-01-02T04:00:00Z"), "is not after its start"),
        (answer("0001-01-01T00:00:00+01:00", "2025-01-02T04:00:00Z"), "out of range"),
    ],
)
def test_malformed_answers_say_what_is_wrong(body: object, message: str) -> None:
    with pytest.raises(IssuanceError, match=message) as caught:
        parse_renewal_info(body, "60", NOW)
    assert caught.value.status is None and caught.value.problem_type is None


@pytest.mark.parametrize("url", [42, "", "https://a.example/\nforged log line", "x" * 3000, ["https://a.example/"]])
def test_an_unusable_explanation_url_is_dropped_and_the_window_kept(url: object) -> None:
    info = parse_renewal_info(answer("2025-01-02T04:00:00Z", "2025-01-03T04:00:00Z", explanationURL=url), None, NOW)
    assert info.explanation_url is None
    assert info.end - info.start == timedelta(days=1)


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_renewal_info(answer("2025-01-02T04:00:00Z", "2025-01-03T04:00:00Z"), None, datetime(2030, 1, 1))  # noqa: DTZ001


# --- properties ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
timestamp_like = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z"
)
instants = st.datetimes(
    min_value=datetime(1000, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(9000, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
window_values = json_values | timestamp_like | instants.map(datetime.isoformat)
near_answers = st.builds(
    lambda start, end, extra: {"suggestedWindow": {"start": start, "end": end}, **extra},
    window_values,
    window_values,
    st.dictionaries(st.sampled_from(["explanationURL", "suggestedWindow2"]), json_values, max_size=1),
)


@pytest.mark.fuzz
@given(body=json_values | near_answers, header=st.none() | st.text(max_size=40))
@example(body=answer("9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59Z"), header=None)
@example(body=answer("2025-12-31T23:59:60Z", "2026-01-01T00:00:00Z"), header="99999999999999999999")
def test_any_json_gives_a_window_or_an_issuance_error(body: object, header: str | None) -> None:
    try:
        info = parse_renewal_info(body, header, NOW)
    except IssuanceError as exc:
        assert str(exc).startswith("malformed ARI answer: ")
        return
    assert info.start.tzinfo is UTC and info.end.tzinfo is UTC
    assert info.start < info.end
    assert info.retry_after is None or info.retry_after > NOW


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m))


lengths = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=365 * 100))


@given(start=instants, length=lengths, offset=offsets, z=st.booleans())
def test_any_window_written_in_rfc_3339_reads_back_exactly(
    start: datetime, length: timedelta, offset: timedelta, z: bool
) -> None:
    end = start + length

    def write(moment: datetime) -> str:
        if z and not offset:
            return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return moment.astimezone(timezone(offset)).isoformat()

    info = parse_renewal_info(answer(write(start), write(end)), None, NOW)
    assert (info.start, info.end) == (start, end)
    assert parse_rfc3339(write(start)) == start
