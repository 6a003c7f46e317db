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


def _offset_at(tz: ZoneInfo, seconds: int) -> int:
    return _offset(tz, EPOCH + timedelta(seconds=seconds))


#: How far apart ``offsets`` samples a zone's offset. Since 1970 (``validation.EARLIEST``)
#: no IANA zone changed its offset twice within a week (the closest: 167 hours, Brazil's
#: one-week summer time of 2000 and Gaza's Ramadan breaks), so a change and the change
#: back never both fall between two samples a day apart: two samples with the same
#: offset have no change between them (``test_timebuckets`` checks every zone).
PROBE_S = 86_400


def offsets(tz: ZoneInfo, start: datetime, end: datetime) -> tuple[tuple[datetime, int], ...]:
    """(instant, offset) for the start and every offset change in (start, end], each
    at the second it takes effect (a zone's transitions are on whole seconds): a sample
    a day (``PROBE_S``), bisected where two differ. It sampled every half hour, 426 ms
    of the event loop for three years even in UTC, on every bucketed query (QA s30)."""
    found = [(start, _offset(tz, start))]
    if tz.utcoffset(None) is not None:
        return tuple(found)  # a fixed offset (UTC, Etc/GMT+5): ``ZoneInfo`` tells it so
    low, before, last = _seconds(start), found[0][1], _seconds(end)
    while low < last:
        high = min(low + PROBE_S, last)
        after = _offset_at(tz, high)
        _changes(tz, low, before, high, after, found)
        low, before = high, after
    return tuple(found)


def _changes(tz: ZoneInfo, low: int, before: int, high: int, after: int,
             found: list[tuple[datetime, int]]) -> None:
    """Append the offset changes in (``low``, ``high``] (epoch seconds, ``before`` and
    ``after`` the offsets there): none where the two are the same (``PROBE_S``), else
    those of each half, down to the second a change takes effect."""
    if before == after:
        return
    if high - low == 1:
        found.append((EPOCH + timedelta(seconds=high), after))
        return
    middle = (low + high) // 2
    at_middle = _offset_at(tz, middle)
    _changes(tz, low, before, middle, at_middle, found)
    _changes(tz, middle, at_middle, high, after, found)


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


def plan(field: str, bucket: Bucket, tz: ZoneInfo, start: datetime, end: datetime,
         closed_right: bool = False) -> BucketPlan:
    """Every bucket overlapping [start, end), in order, with the grouping that yields the
    same keys in the store; ``closed_right``: its buckets are (start, end]
    (``ByTime.closed_right``), with the same starts and keys."""
    if end <= start:
        raise ValidationError("`to` must be after `from`", field="to", code="OUT_OF_RANGE")
    if bucket is Bucket.HOUR:
        return _hours(field, tz, start, end, closed_right)
    day = start.astimezone(tz).date()
    if bucket is Bucket.WEEK:
        day -= timedelta(days=day.weekday())
    elif bucket is Bucket.MONTH:
        day = day.replace(day=1)
    starts: list[datetime] = []
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
    if bucket is Bucket.MONTH:
        return BucketPlan(ByTime(field, boundaries=tuple(starts), closed_right=closed_right),
                          tuple(starts), tuple(range(len(starts))))
    spans = offsets(tz, starts[0] - timedelta(days=1), end + timedelta(days=1))
    size = {Bucket.DAY: 86_400, Bucket.WEEK: 604_800}[bucket]
    origin = MONDAY_ORIGIN_S if bucket is Bucket.WEEK else 0
    grouping = ByTime(field, offsets=spans, size_s=size, origin_s=origin,
                      closed_right=closed_right)
    return BucketPlan(grouping, tuple(starts), tuple(_key(s, grouping) for s in starts))


def _hours(field: str, tz: ZoneInfo, start: datetime, end: datetime, closed_right: bool
           ) -> BucketPlan:
    """Local hours: a bucket from each whole local hour, and from each offset change,
    to the next of either. Where the clocks move by half an hour (Lord Howe, Caracas in
    2016) the local hour around the change is a half-hour bucket; a repeated hour is
    two buckets."""
    grouping = ByTime(field, size_s=3600, offsets=_hour_offsets(
        offsets(tz, start - timedelta(days=1), end + timedelta(days=1))),
        closed_right=closed_right)
    spans = grouping.offsets
    span = max(i for i, (since, _) in enumerate(spans) if since <= start)  # [0]: a day before
    at = _seconds(start)
    at -= (at + spans[span][1]) % 3600  # back to the local hour's start ...
    if span > 0:
        at = max(at, _seconds(spans[span][0]))  # ... or the change it began with
    starts: list[datetime] = []
    while (instant := EPOCH + timedelta(seconds=at)) < end:
        starts.append(instant)
        _check(len(starts))
        at += 3600 - (at + spans[span][1]) % 3600  # the next whole local hour ...
        if span + 1 < len(spans) and _seconds(spans[span + 1][0]) <= at:
            span += 1  # ... or the next change, if that comes first
            at = _seconds(spans[span][0])
    return BucketPlan(grouping, tuple(starts), tuple(_key(s, grouping) for s in starts))


def _hour_offsets(spans: tuple[tuple[datetime, int], ...]) -> tuple[tuple[datetime, int], ...]:
    """What the store adds to the UTC seconds before dividing by an hour, per stretch.

    The zone's offset within the hour (``offset % 3600``): its whole hours would move
    the keys of a repeated local hour onto those of the hour before, while keys in UTC
    hours keep it two buckets. Where the offset changes by a part of an hour, the first
    local hour after the change would get the key of the last one before it (Lord Howe
    at +10:30 → +11:00: 01:00 → 02:00 and 02:30 → 03:00 both the UTC hour from 15:00),
    so that stretch's keys move on by whole hours until they follow the ones before."""
    result: list[tuple[datetime, int]] = []
    for since, offset in spans:
        shift = offset % 3600
        if result:
            last_before = (_seconds(since) - 1 + result[-1][1]) // 3600
            while (_seconds(since) + shift) // 3600 <= last_before:
                shift += 3600
        result.append((since, shift))
    return tuple(result)


def _seconds(instant: datetime) -> int:
    """Whole seconds since the epoch, floored (as the stores floor)."""
    return (instant - EPOCH) // timedelta(seconds=1)


def _key(instant: datetime, grouping: ByTime) -> int:
    """The key of the bucket starting at ``instant``: the one the store gives the instants
    after it, closed on the right or not (``ByTime.closed_right``)."""
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
