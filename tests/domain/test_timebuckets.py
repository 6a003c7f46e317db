"""Time buckets aligned in an IANA zone (``domain/timebuckets.py``)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo
from zoneinfo._zoneinfo import ZoneInfo as PyZoneInfo

import pytest

from domain.errors import ValidationError
from domain.timebuckets import (
    PROBE_S,
    Bucket,
    _key,
    _offset,
    _seconds,
    known_zones,
    offsets,
    plan,
    zone,
)
from domain.validation import EARLIEST, LATEST


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


def _scanned(tz: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """What ``offsets`` answered before session 30: the offset every half hour, each
    change narrowed down to its minute (the reference its transitions must match)."""
    def at(instant: datetime) -> int:
        return int(instant.astimezone(tz).utcoffset().total_seconds())  # type: ignore[union-attr]
    found = [(start, at(start))]
    probe = start
    while probe < end:
        probe = min(probe + timedelta(minutes=30), end)
        if (current := at(probe)) != found[-1][1]:
            low, high = probe - timedelta(minutes=30), probe
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                low, high = (low, middle) if at(middle) == current else (middle, high)
            found.append((high.replace(second=0, microsecond=0), current))
    return found


#: Zones whose changes are unusual: 30- and 45-minute offsets and DST, one-week DST and
#: Ramadan breaks, a skipped day, historic changes on odd seconds (Monrovia, 1972).
SPECIAL = ["Asia/Kathmandu", "Australia/Lord_Howe", "America/Caracas", "Asia/Gaza",
           "America/Noronha", "Africa/Monrovia", "Pacific/Apia", "Pacific/Kiritimati",
           "Africa/Casablanca", "Europe/Berlin", "America/New_York", "Asia/Tehran",
           "Antarctica/Casey", "Europe/Moscow", "Pacific/Chatham", "UTC", "Etc/GMT-14"]


def test_offsets_match_the_half_hourly_scan_in_every_kind_of_zone() -> None:
    rng = random.Random(30)
    names = [*SPECIAL, *rng.sample(sorted(known_zones()), 120)]
    windows = [(name, EARLIEST + timedelta(seconds=rng.randrange(230 * 365 * 86_400)),
                timedelta(seconds=rng.randrange(1, 100 * 86_400))) for name in names]
    # And years of the special zones' rare changes (Monrovia's in January 1972,
    # Noronha's week of 2000, Apia's skipped day in December 2011, Caracas' of 2016).
    windows += [(name, datetime(year, month, 1, tzinfo=UTC) + timedelta(
                 seconds=rng.randrange(86_400)), timedelta(days=60)) for name in SPECIAL
                for year, month in ((1972, 1), (2000, 9), (2011, 12), (2016, 4), (2026, 3))]
    for name, start, length in windows:
        tz = zone(name)
        found = offsets(tz, start, start + length)
        expected = _scanned(tz, start, start + length)
        assert [(at.replace(second=0), off) for at, off in found[1:]] == expected[1:], name
        assert found[0] == expected[0]
        for at, off in found[1:]:  # each change at the very second it takes effect
            assert _offset(tz, at - timedelta(seconds=1)) != off == _offset(tz, at), (name, at)


def test_no_zone_changes_twice_between_two_samples() -> None:
    """``offsets`` assumes a day's samples miss no change and change back: every zone's
    transitions since 1970, read from its data (the pure-Python ``zoneinfo``'s), and
    those of its rule after them."""
    closest = timedelta(days=365)
    for name in known_zones():
        data = PyZoneInfo.no_cache(name)
        changes, before = [], data._tti_before
        for at, info in zip(data._trans_utc, data._ttinfos, strict=True):
            if before is None or info.utcoff != before.utcoff:
                changes.append(at)
            before = info
        since = [at for at in changes if at >= _seconds(EARLIEST)]
        for a, b in itertools.pairwise(since):
            closest = min(closest, timedelta(seconds=b - a))
        rule = data._tz_after
        if hasattr(rule, "transitions"):  # summer time by a rule, year after year
            for year in range(2030, LATEST.year):
                begins, ends = rule.transitions(year)
                summer = timedelta(seconds=abs(ends - begins))
                closest = min(closest, summer, timedelta(days=365) - summer)
    assert closest > timedelta(seconds=PROBE_S), closest


class _Counted(ZoneInfo):
    """A zone counting how often its offset is asked for."""

    asked = 0

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        type(self).asked += 1
        return super().utcoffset(dt)


@pytest.mark.parametrize(("name", "at_most"), [
    # Three years: a fixed offset once, and a zone with summer time a sample a day and
    # a bisection of some seventeen per change, not every half hour (52,700; QA s30).
    ("UTC", 2), ("Etc/GMT-14", 2), ("Europe/Berlin", 1_100 + 6 * 20)])
def test_offsets_ask_the_zone_a_day_at_most(name: str, at_most: int) -> None:
    tz = _Counted(name)
    _Counted.asked = 0
    start = datetime(2024, 3, 21, tzinfo=UTC)
    found = offsets(tz, start, start + timedelta(days=1_098))
    assert len(found) == (7 if name == "Europe/Berlin" else 1)
    assert _Counted.asked <= at_most
