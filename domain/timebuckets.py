"""Time buckets aligned in an IANA time zone, daylight-saving days included.

The store groups timestamps by arithmetic (``domain.aggregation.ByTime``): local seconds
divided by the bucket size, with the zone's UTC offset chosen per stretch between its
transitions. This module computes those stretches, the UTC start of every bucket in a
window, and the key the store will give each bucket, so empty buckets can be filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from domain.aggregation import ByTime
from domain.errors import ValidationError

MAX_BUCKETS = 10_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONDAY_ORIGIN_S = 4 * 86_400  # 1970-01-05 was a Monday: weeks start on Mondays


class Bucket(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


#: Longer than any IANA name ("America/Argentina/ComodRivadavia" is 32).
MAX_ZONE_NAME = 64


#: Names ``available_timezones`` lists that are no place to align buckets in: the host's
#: own setting (a link to whatever the machine is set to, so it answers differently per
#: host) and IANA's placeholder for machines not configured yet (offset 0, "-00").
NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})


@cache
def known_zones() -> frozenset[str]:
    """The IANA zone names: the tzdata package's list and the host's zoneinfo tree
    without its ``right/`` (leap seconds) and ``posix/`` copies. Read once: it lists
    the tree's files."""
    return frozenset(available_timezones()) - NOT_PLACES


def zone(name: str, field: str = "timeZone") -> ZoneInfo:
    """The IANA zone ``name``. Only listed names: ``ZoneInfo`` loads any file under the
    zoneinfo tree, and "right/Europe/Berlin" counts leap seconds into its offsets."""
    if len(name) > MAX_ZONE_NAME or name not in known_zones():
        raise ValidationError(f"unknown time zone {name[:MAX_ZONE_NAME]!r}", field=field)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: a name the file system refuses (too long a path component, ...).
        raise ValidationError(f"unknown time zone {name!r}", field=field) from exc


def _offset(tz: ZoneInfo, instant: datetime) -> int:
    offset = instant.astimezone(tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def offsets(tz: ZoneInfo, start: datetime, end: datetime) -> tuple[tuple[datetime, int], ...]:
    """(instant, offset) for the start and every offset change in [start, end]."""
    found = [(start, _offset(tz, start))]
    probe = start
    while probe < end:  # transitions happen on whole hours (or half hours) in every zone
        probe = min(probe + timedelta(minutes=30), end)
        current = _offset(tz, probe)
        if current != found[-1][1]:
            # Narrow down to the minute the offset changed.
            low, high = probe - timedelta(minutes=30), probe
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if _offset(tz, middle) == current:
                    high = middle
                else:
                    low = middle
            found.append((high.replace(second=0, microsecond=0), current))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class BucketPlan:
    grouping: ByTime
    starts: tuple[datetime, ...]
    keys: tuple[int, ...]

    def start_of(self, key: int) -> datetime | None:
        try:
            return self.starts[self.keys.index(key)]
        except ValueError:
            return None


def _local_midnight(tz: ZoneInfo, day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def plan(field: str, bucket: Bucket, tz: ZoneInfo, start: datetime, end: datetime
         ) -> BucketPlan:
    """Every bucket overlapping [start, end), in order, with the grouping that yields the
    same keys in the store."""
    if end <= start:
        raise ValidationError("`to` must be after `from`", field="to", code="OUT_OF_RANGE")
    local_start = start.astimezone(tz)
    starts: list[datetime] = []
    if bucket is Bucket.HOUR:
        first = local_start.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        count = int((end - first).total_seconds() // 3600) + 1
        _check(count)
        starts = [first + timedelta(hours=i) for i in range(count) if
                  first + timedelta(hours=i) < end]
    else:
        day = local_start.date()
        if bucket is Bucket.WEEK:
            day -= timedelta(days=day.weekday())
        elif bucket is Bucket.MONTH:
            day = day.replace(day=1)
        while True:
            instant = _local_midnight(tz, day)
            if instant >= end:
                break
            starts.append(instant)
            _check(len(starts))
            if bucket is Bucket.DAY:
                day += timedelta(days=1)
            elif bucket is Bucket.WEEK:
                day += timedelta(days=7)
            else:
                day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    spans = offsets(tz, starts[0] - timedelta(days=1), end + timedelta(days=1))
    if bucket is Bucket.MONTH:
        grouping = ByTime(field, boundaries=tuple(starts))
        keys = tuple(range(len(starts)))
    else:
        if bucket is Bucket.HOUR:
            # Only the sub-hour part of the offset: local hours that repeat when the
            # clocks go back stay two separate buckets.
            spans = tuple((instant, offset % 3600) for instant, offset in spans)
        size = {Bucket.HOUR: 3600, Bucket.DAY: 86_400, Bucket.WEEK: 604_800}[bucket]
        origin = MONDAY_ORIGIN_S if bucket is Bucket.WEEK else 0
        grouping = ByTime(field, offsets=spans, size_s=size, origin_s=origin)
        keys = tuple(_key(instant, grouping) for instant in starts)
    return BucketPlan(grouping, tuple(starts), keys)


def _key(instant: datetime, grouping: ByTime) -> int:
    offset = grouping.offsets[0][1]
    for since, value in grouping.offsets:
        if instant >= since:
            offset = value
    seconds = int((instant - EPOCH).total_seconds())
    assert grouping.size_s is not None
    return (seconds + offset - grouping.origin_s) // grouping.size_s


def _check(count: int) -> None:
    if count > MAX_BUCKETS:
        raise ValidationError(f"at most {MAX_BUCKETS} buckets: use a larger bucket or a "
                              "shorter window", field="bucket", code="OUT_OF_RANGE")
