"""Time spans and instants cross the wire through spar.proto_time, exactly."""

from __future__ import annotations

from datetime import UTC, datetime

from spar.proto_time import as_seconds, duration, timestamp


def test_a_duration_keeps_whole_nanoseconds_and_reads_back_as_seconds() -> None:
    assert as_seconds(duration(1.25)) == 1.25
    cut = duration(2.0000000019)  # below a nanosecond is cut, not rounded
    assert (cut.seconds, cut.nanos) == (2, 1)
    assert as_seconds(duration(-0.5)) == -0.5


def test_a_timestamp_is_the_same_instant_and_a_naive_datetime_is_utc() -> None:
    t = datetime(2026, 12, 7, 12, 30, 5, 250_000, tzinfo=UTC)
    assert timestamp(t).ToDatetime(UTC) == t
    assert timestamp(t.replace(tzinfo=None)) == timestamp(t)
