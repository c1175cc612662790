"""Seconds and datetimes as the contracts carry them: protobuf ``Duration`` and
``Timestamp``.

spar keeps a time span as float seconds and a point in time as a ``datetime``; the wire
messages hold ``google.protobuf.Duration`` and ``Timestamp``. These are the conversions,
written once. A span travels in whole nanoseconds (a float of seconds is truncated to
them) and reads back as float seconds of those nanoseconds.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def duration(seconds: float) -> Duration:
    """``seconds`` as a Duration (truncated to whole nanoseconds)."""
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def as_seconds(d: Duration) -> float:
    """A Duration as float seconds."""
    nanos: int = d.ToNanoseconds()
    return nanos / 1e9


def timestamp(t: datetime) -> Timestamp:
    """A datetime as a Timestamp (a datetime without a zone is taken as UTC)."""
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts
