"""Time-of-day energy prices: a tariff's price bands (days of the week, a local start and
end time, a price per kWh) in its time zone, and how a session's energy is attributed to
them from its meter readings.

A band covers ``start <= local time < end`` on each of its days; end may be 24:00 (the
end of the day). A band over midnight is two bands (22:00–24:00 and 00:00–06:00 the next
day): one rule for "which day", no band belonging to two days. Energy at a time no band
covers is at the tariff's base price. Bands are stored on the tariff as plain
documents (``Tariff.energy_bands``: ``{"days": ["MON", …], "start": "07:00", "end":
"22:00", "price_per_kwh": "0.45"}``) so both stores keep them as JSON."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from domain import validation as v
from domain.apportion import largest_remainder
from domain.clock import exact_seconds
from domain.entities import BILLED_TIME_TOLERANCE, Session, Tariff
from domain.errors import ValidationError
from domain.timebuckets import offsets, zone

#: Day names as given and stored, Monday first (``date.weekday()`` order).
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
#: Bands one tariff may have: a different price every half hour of a week is 336; more
#: is no tariff a driver can read.
MAX_BANDS = 336
#: The longest session whose energy is split by its readings: beyond it (no real
#: session lasts a month; a clock glitch does) all of it is at the start's price.
MAX_SPLIT_SPAN = timedelta(days=31)
_CLOCK = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")
_DAY_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class PriceBand:
    """``price_per_kwh`` on ``days`` (``date.weekday()`` numbers) from ``start`` to
    ``end`` (minutes after local midnight; ``end`` up to 1440)."""

    days: frozenset[int]
    start: int
    end: int
    price_per_kwh: Decimal

    def covers(self, weekday: int, minute: float) -> bool:
        return weekday in self.days and self.start <= minute < self.end

    def stored(self) -> dict[str, Any]:
        return {"days": [DAYS[d] for d in sorted(self.days)], "start": _clock(self.start),
                "end": _clock(self.end), "price_per_kwh": str(self.price_per_kwh)}

    @classmethod
    def of(cls, doc: dict[str, Any]) -> PriceBand:
        return cls(frozenset(DAYS.index(d) for d in doc["days"]), _minutes(doc["start"]),
                   _minutes(doc["end"]), Decimal(doc["price_per_kwh"]))


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def bands_of(tariff: Tariff) -> tuple[PriceBand, ...]:
    return tuple(PriceBand.of(doc) for doc in tariff.energy_bands)


# ------------------------------------------------------------------ input
@dataclass(frozen=True, slots=True)
class BandInput:
    """A band as a caller gives it (checked by ``checked_bands``)."""

    days: Sequence[str]
    start: str
    end: str
    price_per_kwh: Decimal | str


def checked_bands(given: Sequence[BandInput], time_zone: str | None, field: str = "energyBands",
                  currency: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The bands to store and the tariff's time zone, or every user error at once, as
    the other fields of an input are reported (``validation.Checks``): the time zone's,
    then each band's in input order, each naming the band's field
    (``energyBands.1.end``): an unknown day, a time that is no HH:MM, an end not after
    its start, a price out of range (``validation.price``, bounded in ``currency``'s
    minor units), two bands covering the same minute of a day (both bands are told,
    each naming the other), or bands without a time zone (a Berlin operator's 07:00
    must not silently be UTC's). More than ``MAX_BANDS`` are refused without checking
    each."""
    checks = v.Checks()
    if time_zone is not None:
        checks(zone, time_zone, "timeZone")
    elif given:
        checks.errors.append(ValidationError("price bands need the time zone their times "
                                             "are in", field="timeZone", code="REQUIRED"))
    if len(given) > MAX_BANDS:
        checks.errors.append(ValidationError(f"at most {MAX_BANDS} bands", field=field,
                                             code="TOO_MANY"))
        checks.done()
    per_band = [v.Checks() for _ in given]
    bands = [band_checks(_checked, band, f"{field}.{i}", currency)
             for i, (band, band_checks) in enumerate(zip(given, per_band, strict=True))]
    for i, band_checks in enumerate(per_band):
        band_checks(_no_overlap, bands, i, f"{field}.{i}")
        checks.errors.extend(band_checks.errors)
    checks.done()
    return [band.stored() for band in bands], time_zone


def _no_overlap(bands: Sequence[PriceBand | None], i: int, field: str) -> None:
    """Band ``i`` shares no minute of a day with another valid band (one whose own
    fields failed is not compared: its times mean nothing)."""
    band = bands[i]
    if band is None:
        return
    clashes = [f"band {j} on {DAYS[min(band.days & other.days)]}"
               for j, other in enumerate(bands) if j != i and other is not None
               and band.days & other.days and band.start < other.end
               and other.start < band.end]
    if clashes:
        raise ValidationError(f"overlaps {' and '.join(clashes)}", field=field,
                              code="OVERLAP")


def _checked(band: BandInput, field: str, currency: str | None = None) -> PriceBand:
    """The band, or every one of its fields at fault (in the input's order)."""
    checks = v.Checks()
    days = checks(_days, band.days, f"{field}.days")
    start = checks(_start, band.start, f"{field}.start")
    end = checks(_time, band.end, f"{field}.end")
    if start is not None and end is not None and end <= start:
        checks.errors.append(ValidationError(
            "ends after it starts (a band over midnight is two bands)",
            field=f"{field}.end", code="OUT_OF_RANGE"))
    price = checks(v.price, band.price_per_kwh, f"{field}.pricePerKwh", currency)
    checks.done()
    return PriceBand(days, start, end, price)


def _days(given: Sequence[str], field: str) -> frozenset[int]:
    if not given:
        raise ValidationError("give the days it applies on", field=field, code="REQUIRED")
    days = set()
    for name in given:
        day = name.strip().upper()[:3] if isinstance(name, str) else ""
        if day not in DAYS or name.strip().upper() not in (day, _long(day)):
            raise ValidationError("days are MON, TUE, WED, THU, FRI, SAT, SUN",
                                  field=field, code="INVALID")
        days.add(DAYS.index(day))
    return frozenset(days)


def _start(text: str, field: str) -> int:
    start = _time(text, field)
    if start >= _DAY_MINUTES:
        raise ValidationError("starts before 24:00", field=field, code="OUT_OF_RANGE")
    return start


def _long(day: str) -> str:
    return ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY",
            "SUNDAY")[DAYS.index(day)]


def _time(text: str, field: str) -> int:
    found = _CLOCK.match(text.strip()) if isinstance(text, str) else None
    if found is None or (found.group(1) == "24" and found.group(2) != "00"):
        raise ValidationError("a local time HH:MM, 00:00 to 24:00", field=field,
                              code="INVALID")
    return int(found.group(1)) * 60 + int(found.group(2))


# ------------------------------------------------------------------ attribution
def band_at(bands: Sequence[PriceBand], tz: ZoneInfo, instant: datetime) -> int:
    """The index of the band in force at ``instant``; ``len(bands)``: the base price."""
    local = instant.astimezone(tz)
    minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    weekday = local.weekday()
    return next((i for i, band in enumerate(bands) if band.covers(weekday, minute)),
                len(bands))


def session_split(tariff: Tariff, session: Session, energy_wh: int,
                  readings: Iterable[tuple[datetime, int]], until: datetime) -> list[int]:
    """``attributed_wh`` for ``session`` up to ``until`` (its billed end, or now on its
    timeline). A session whose charger's clock is behind ours (``Session.clock_behind``)
    is split on our clock: its readings are placed by the lag its start showed (its
    receipt, ``created_at``, less its stamp), which a clock that runs steadily behind
    (minutes, or from 1970 never set) keeps, so its energy is priced by when it really
    flowed. They are placed within the span billed, from that receipt to ``until``
    placed alike: one landing outside it by up to ``BILLED_TIME_TOLERANCE`` is moved to
    its edge (network delay: the start's is in the lag, so a reading just in lands past
    an estimate's end); one further out was stamped by a clock that jumped since the
    start (set right by NTP, reset to 1970), cannot be placed, and accounts for
    nothing: its energy is at the price in force when the start came
    (``Session.priced_at``), as all of such a session's energy was before. A jump is
    not seen reading by reading: those stamped after a clock set right and still
    inside the span are placed late by the start's lag (off by at most that lag)."""
    if session.clock_behind:
        # From what the session stores, not a process's ``ChargerClocks``: its close and
        # every instance's estimate place its readings alike.
        lag = session.created_at - session.start_time
        first, last = session.created_at, until + lag
        placed = [(min(max(at + lag, first), last), wh) for at, wh in readings
                  if first - BILLED_TIME_TOLERANCE <= at + lag
                  <= last + BILLED_TIME_TOLERANCE]
        return attributed_wh(tariff, session.priced_at, energy_wh, placed, last)
    return attributed_wh(tariff, session.start_time, energy_wh, readings, until)


def attributed_wh(tariff: Tariff, start: datetime, energy_wh: int,
                  readings: Iterable[tuple[datetime, int]],
                  until: datetime | None = None) -> list[int]:
    """The session's ``energy_wh`` split by price: one entry per band of the tariff,
    then the base price's. ``readings`` are its energy register readings (time, Wh
    added since the previous reading, the first since ``start``), in any order: each
    reading's Wh are spread evenly over the time since the previous one and split where
    a band begins or ends. Energy no reading accounts for (none sent, or fewer Wh than
    billed) is at the price in force at the start. Whole Wh, adding up to ``energy_wh``
    exactly (largest remainder), so the split is stored and priced again alike.
    Readings stamped after ``until`` (a clock glitch: 2199) account for nothing, and a
    span longer than ``MAX_SPLIT_SPAN`` is not split: the band edges are enumerated day
    by day, and one reading stamped 2199 held the event loop for seconds."""
    bands = bands_of(tariff)
    tz = zone(tariff.time_zone or "UTC")
    exact = [Decimal(0)] * (len(bands) + 1)
    # Readings of one instant summed (a clock-aligned and a periodic reading, or the
    # stop's repeat of the last one): the Wh of each is spread from the previous
    # instant, not priced at a point because its 0-Wh twin sorted first (QA s17).
    per_instant: dict[datetime, int] = defaultdict(int)
    for at, wh in readings:
        if until is None or at <= until:
            per_instant[at] += wh
    ordered = sorted(per_instant.items())
    if ordered and ordered[-1][0] - start > MAX_SPLIT_SPAN:
        ordered = []
    # Every instant a band may begin or end over the whole session, found once: a
    # session has thousands of readings, a week of them a few dozen edges.
    cuts = sorted(set(_edges(bands, tz, start, ordered[-1][0]))) if ordered else []
    previous = start
    for at, wh in ordered:
        if wh > 0:
            inside = cuts[bisect_right(cuts, previous):bisect_left(cuts, at)]
            for index, share in _spread(bands, tz, previous, at, Decimal(wh), inside):
                exact[index] += share
        previous = max(previous, at)
    total = max(energy_wh, 0)
    metered = sum(exact, Decimal(0))
    if metered > total:  # readings above the billed energy: the billed energy, so split
        exact = [part * total / metered for part in exact]
    else:
        exact[band_at(bands, tz, start)] += total - metered
    return largest_remainder(exact, total)


def _spread(bands: Sequence[PriceBand], tz: ZoneInfo, since: datetime, until: datetime,
            wh: Decimal, cuts: Sequence[datetime]) -> list[tuple[int, Decimal]]:
    """``wh`` spread evenly over ``since`` .. ``until``, cut at ``cuts`` (the instants in
    between where a band may begin or end: its edges on each local day, local midnight,
    the zone's offset changes), each piece priced by the band at its middle."""
    if until <= since:
        return [(band_at(bands, tz, until), wh)]
    points = [since, *cuts, until]
    span = exact_seconds(until - since)
    return [(band_at(bands, tz, a + (b - a) / 2), wh * exact_seconds(b - a) / span)
            for a, b in pairwise(points)]


def _edges(bands: Sequence[PriceBand], tz: ZoneInfo, since: datetime, until: datetime
           ) -> Iterable[datetime]:
    minutes = {0, *(b.start for b in bands), *(b.end % _DAY_MINUTES for b in bands)}
    day: date = since.astimezone(tz).date()
    last = until.astimezone(tz).date()
    while day <= last:
        for minute in minutes:
            local = datetime.combine(day, time(minute // 60, minute % 60), tz)
            # And, when the clock is put back, the second time it shows it. In UTC: in
            # their own zone two times differing only by fold compare equal.
            yield local.astimezone(UTC)
            yield local.replace(fold=1).astimezone(UTC)
        day += timedelta(days=1)
    yield from (at.astimezone(UTC) for at, _ in offsets(tz, since, until))

