"""Time buckets aligned in an IANA zone (``domain/timebuckets.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import ValidationError
from domain.timebuckets import Bucket, _key, plan, zone


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/Argentina/ComodRivadavia",
                                  "Australia/Lord_Howe", "Etc/GMT+5"])
def test_iana_zone_names_are_accepted(name: str) -> None:
    assert zone(name).key == name


@pytest.mark.parametrize("name", [
    # Loadable files of the host's zoneinfo tree that are no IANA zone: the leap-second
    # and POSIX copies, the factory placeholder, the host's own setting (whatever it is).
    "right/Europe/Berlin", "posix/Europe/Berlin", "Factory", "localtime", "posixrules",
    "Mars/Olympus", "europe/berlin", "../zoneinfo/UTC", "Europe/Berlin/", "", "x" * 65])
def test_other_names_are_an_unknown_zone(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        zone(name, "timeZone")
    assert (err.value.field, err.value.code) == ("timeZone", "INVALID")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (zone, window in UTC, the hour buckets' starts as local wall-clock times)
HOURS_ACROSS_A_CHANGE = [
    # Lord Howe moves from +10:30 to +11:00 at 02:00 local (15:30 UTC): its local hour 2
    # is the half hour 02:30 → 03:00.
    ("Australia/Lord_Howe", "2026-10-03T13:30Z", "2026-10-03T18:00Z",
     ["00:00+10:30", "01:00+10:30", "02:30+11:00", "03:00+11:00", "04:00+11:00"]),
    # ... and back at 02:00 local (15:00 UTC) to 01:30: 01:30 → 02:00 comes twice, the
    # second time as a half-hour bucket of its own, as a repeated autumn hour is.
    ("Australia/Lord_Howe", "2026-04-04T13:00Z", "2026-04-04T17:00Z",
     ["00:00+11:00", "01:00+11:00", "01:30+10:30", "02:00+10:30", "03:00+10:30"]),
    # Caracas from -04:30 to -04:00 at 02:30 local (07:00 UTC): hour 2 is half an hour.
    ("America/Caracas", "2016-05-01T05:30Z", "2016-05-01T09:00Z",
     ["01:00-04:30", "02:00-04:30", "03:00-04:00", "04:00-04:00"]),
    # Whole-hour changes as before: Berlin's spring gap and autumn repeat.
    ("Europe/Berlin", "2026-03-28T23:00Z", "2026-03-29T03:00Z",
     ["00:00+01:00", "01:00+01:00", "03:00+02:00", "04:00+02:00"]),
    ("Europe/Berlin", "2026-10-24T23:00Z", "2026-10-25T03:00Z",
     ["01:00+02:00", "02:00+02:00", "02:00+01:00", "03:00+01:00"]),
]


@pytest.mark.parametrize(("name", "start", "end", "local"), HOURS_ACROSS_A_CHANGE)
def test_hour_buckets_are_the_local_hours(name: str, start: str, end: str,
                                          local: list[str]) -> None:
    tz = zone(name)
    hours = plan("at", Bucket.HOUR, tz, _at(start), _at(end))
    labels = [s.astimezone(tz).isoformat() for s in hours.starts]
    assert [label[11:16] + label[-6:] for label in labels] == local
    assert len(set(hours.keys)) == len(hours.keys)
    # Every minute of the window gets the key of the bucket it lies in, by the same
    # arithmetic the stores compute (``ByTime``): nothing is dropped or merged.
    minute = _at(start)
    while minute < _at(end):
        containing = max(s for s in hours.starts if s <= minute)
        assert hours.start_of(_key(minute, hours.grouping)) == containing, minute
        minute += timedelta(minutes=1)
