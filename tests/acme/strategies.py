"""Shared values and hypothesis strategies of the renewal timing tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from snakeway.acme.ari import RenewalInfo

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
spans = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800))
jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@st.composite
def renewal_infos(draw: st.DrawFn) -> RenewalInfo:
    """Any valid ARI answer of up to 60 days, with or without explanation URL and Retry-After."""
    start = draw(moments)
    end = start + draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=60)))
    return RenewalInfo(start, end, draw(st.none() | st.text()), draw(st.none() | moments))
