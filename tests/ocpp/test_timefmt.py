"""Charger timestamps (ocpp_bridge/timefmt.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ocpp_bridge.frames import FrameError
from ocpp_bridge.timefmt import parse_timestamp


@pytest.mark.parametrize(("text", "instant"), [
    # A leap second (RFC 3339 allows it; Python's datetime has none) was refused with a
    # TypeConstraintViolation: the last instant of its minute.
    ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
    ("2016-12-31t23:59:60.25z", datetime(2016, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
    ("2017-01-01T00:59:60+01:00", datetime(2016, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
    ("2016-12-31T23:59:59Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("2016-12-31T23:59:59", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),  # zoneless
])
def test_charger_times(text: str, instant: datetime) -> None:
    assert parse_timestamp(text, "timestamp", "u1") == instant


@pytest.mark.parametrize("text", ["2016-12-31T23:60:00Z", "2016-12-31T24:00:60Z",
                                  "2016-12-31T23:59:61Z", "yesterday"])
def test_what_no_clock_shows_is_refused(text: str) -> None:
    with pytest.raises(FrameError) as refused:
        parse_timestamp(text, "timestamp", "u1")
    assert refused.value.code == "TypeConstraintViolation"
