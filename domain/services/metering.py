"""Meter rules: what a charger's meter values are as samples, which registers can be
believed, what a frame adds to its session's live energy, and the closing sample that
makes a session's samples add up to its billed energy. Pure functions: the charging
service reads and writes the store around them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from domain import ocmf
from domain import validation as v
from domain.clock import as_utc
from domain.entities import (
    MAX_SIGNED_DATA,
    MeterAnomaly,
    MeterSample,
    Session,
    SessionState,
    SignedEncoding,
    SignedMeterValue,
    Station,
)
from domain.errors import ValidationError
from domain.ids import stable_id, stable_ids
from domain.policy import Viewer
from domain.ports import Store, Update
from domain.query import Range, Sort
from domain.services.base import charger, patch, stamp_new

log = logging.getLogger("chargegraph.charging")

ENERGY_REGISTER = "Energy.Active.Import.Register"
#: The energy imported during the interval a reading ends (the charger's sample or clock
#: interval): what a charger without a register meters by.
ENERGY_INTERVAL = "Energy.Active.Import.Interval"
#: The contexts whose interval readings add to a session: the periodic ones (no context
#: is Sample.Periodic in OCPP 1.6). A charger sending clock-aligned intervals beside them
#: covers the same energy twice, so those (and triggered ones, of an interval unknown)
#: are kept as samples only; the stop's meterStop bills what they miss.
COUNTED_INTERVALS = (None, "Sample.Periodic")
POWER = "Power.Active.Import"
SOC = "SoC"
#: The phases whose readings add up to a total (per line, to neutral or unspecified).
#: Line-to-line and neutral readings do not.
LINE_OF_PHASE = {"L1": "L1", "L2": "L2", "L3": "L3",
                 "L1-N": "L1", "L2-N": "L2", "L3-N": "L3"}


#: The most power a connector of unknown rating is believed to deliver (megawatt charging
#: tops out at 3.75 MW). A register that rose faster since the session's start is a
#: glitch (0xFFFFFFFF, a meter counting from 0 at the start and from its total after):
#: kept as a sample, but it adds nothing to the session, its energy or its bill.
MAX_BELIEVABLE_KW = 4000.0
#: Headroom over a connector's rating (meter and rating disagree a little).
RATING_HEADROOM = 1.25
#: What a session on a connector of unknown rating may add whatever the time: a truck's
#: battery. Clocks make the time rough (a coarse or reset clock, a replayed history, a
#: simulator compressing hours): only a register beyond it is judged by the time.
METER_SLACK_WH = 1_000_000
#: On a connector whose rating is known, the slack is this long at full power (a clock a
#: quarter of an hour off): a single-bit glitch of half a megawatt-hour on a 22 kW
#: connector is no reading, and a close without a stop must not bill it.
RATED_SLACK = timedelta(minutes=15)


#: Where energy registers wrap, in Wh: decimal counters (999,999.9 kWh is 10^9 Wh) and
#: binary ones (16, 24, 31 or 32 bits) of Wh, 10 Wh, 100 Wh or kWh. None below 10 MWh: no
#: meter wraps that soon, and a lower limit would take a reset for a rollover.
REGISTER_LIMITS = tuple(sorted(
    {10**n for n in range(7, 13)}
    | {2**bits * unit for bits in (16, 24, 31, 32) for unit in (1, 10, 100, 1000)
       if 2**bits * unit >= 10**7}))
#: A rollover: the register was within this share of its limit before it fell.
NEAR_LIMIT = 0.01
#: A reset: the register fell to within this share of the highest reading before.
NEAR_ZERO = 0.1
#: The anomalies a session's register count went across (``RegisterCount``): its
#: readings count on an offset since, and each step is judged. The others flag a close
#: for review and change no count.
COUNTED_ACROSS = (MeterAnomaly.ROLLOVER, MeterAnomaly.RESET)
#: What a rollover, a reset or a step of a session that had one may add beyond what the
#: connector could deliver since the reading before: this long at full power (coarse
#: clocks, a reading stamped late).
STEP_SLACK_S = 60.0


def believable_register(session: Session, wh: float, at: datetime, rated_kw: float) -> bool:
    """Whether the energy register can read ``wh`` at ``at`` in ``session`` on a connector
    rated ``rated_kw`` (``MAX_BELIEVABLE_KW``: not known): no more above its start than
    that power could deliver since, with a slack for clocks."""
    seconds = max((at - session.start_time).total_seconds(), 0.0)
    slack = METER_SLACK_WH if rated_kw >= MAX_BELIEVABLE_KW \
        else rated_kw * RATING_HEADROOM * RATED_SLACK.total_seconds() / 3.6
    return wh <= session.meter_start_wh + rated_kw * RATING_HEADROOM * seconds / 3.6 + slack


class RegisterCount:
    """A session's energy register as counted through one frame or stop: its highest
    count so far (``high``: meterStart plus the energy counted), and what a reading
    counts as across a rollover or a reset of the meter (``offset``). A reading below
    the count, stamped after the one that last moved it, is a rollover when the register
    was near one of ``REGISTER_LIMITS`` and what it passed there and read since the
    connector could deliver in the time; a reset when it restarted near 0. The count
    goes on from there (the highest reading before plus those after) and the session is
    flagged; a drop neither explains adds nothing, as before. Once a session had one, a
    reading that on the offset before it goes on from the count is the old register
    again (a meter that read 0 once), not counted twice, and each other step is judged
    by what the connector could deliver since the reading before. One per frame, and
    only for an active session. A lower reading stamped before the one that last moved
    the count is late (``late``): its share of the energy is the stored samples' to give
    up (``ChargingService._late_shares``), not the count's to add."""

    __slots__ = ("anomaly", "at", "behind", "high", "late", "offset", "prior", "rated_kw",
                 "registered", "session")

    def __init__(self, session: Session, rated_kw: float, registered: bool = False) -> None:
        self.session, self.rated_kw = session, rated_kw
        #: A register reading moved the count (before: ``registered``, as the session's
        #: samples tell, ``ChargingService._register_moved``; or here): intervals no
        #: longer count, the register having counted their energy already.
        self.registered = registered
        self.high = session.meter_start_wh + session.energy_wh
        self.offset, self.prior = session.meter_offset_wh, session.meter_prior_offset_wh
        self.at = session.meter_at
        # Only a drop counted across: a flag a close set (its late stop counted here)
        # says nothing of how the register counts.
        self.anomaly = session.meter_anomaly \
            if session.meter_anomaly in COUNTED_ACROSS else None
        #: The last reading ``added`` judged late: its register on the count, else None.
        self.behind: int | None = None
        #: The frame's late readings (``LateReading``), oldest first (``samples_of``).
        self.late: list[LateReading] = []

    def added(self, wh: int, at: datetime) -> int | None:
        """What the register reading ``wh`` at ``at`` adds to the count (0 when it is
        not above it); ``None`` for one no meter could show (``believable_register``)."""
        self.behind = None
        counted = self.counted(wh, at)
        if counted is None:
            return None
        if counted <= self.high:
            if self._late(counted, at):
                self.behind = counted
            return 0
        added, self.high, self.at = counted - self.high, counted, at
        self.registered = True
        return added

    def interval(self, wh: int, at: datetime) -> int | None:
        """What an interval reading (``wh`` delivered in the interval ending ``at``) adds
        to the count: all of it when stamped after the reading that last moved the count,
        else 0 (a resent frame, a stop's ``transactionData`` repeating the live readings,
        a late one: the stop's meterStop bills it); 0 too once a register reading moved
        the count (``registered``): the register counts that energy, and an interval
        sent a second after it in a frame of its own was counted twice (review r32-a,
        22,500 Wh live where the meter read 20,000); ``None`` for one no meter could show
        (``believable_register``, on the count it would reach)."""
        self.behind = None
        if wh <= 0 or self.registered or (self.at is not None and at <= self.at):
            return 0
        if not believable_register(self.session, self.high + wh, at, self.rated_kw):
            return None
        self.high, self.at = self.high + wh, at
        return wh

    def counted(self, wh: int, at: datetime, *, final: bool = False) -> int | None:
        """The reading on the session's count (``offset`` applied, across a rollover or
        reset it shows); ``None`` for one no meter could show. ``final``: the
        transaction's own last register (meterStop), after every reading whatever its
        timestamp."""
        counted = wh + self.offset
        if counted < self.high:
            if final or self._known_since(at):
                self._across_drop(wh, at)
                counted = wh + self.offset
        elif self.anomaly is not None and self.prior is not None \
                and wh + self.prior >= self.high:
            # On the offset before the last drop it goes on from the count: the old
            # register again, the drop a glitch (a 0 read once). Judged so whatever the
            # connector could deliver meanwhile (unrated, or readings an hour apart, the
            # old register passed for a step after a reset and was billed twice). A real
            # reset would have to deliver all the register had counted to look alike.
            self.offset, self.prior = self.prior, None
            counted = wh + self.offset
        elif self.anomaly is not None and not self._step_ok(counted - self.high, at):
            return None  # beyond what the connector could deliver since: no reading
        if not believable_register(self.session, counted, at, self.rated_kw):
            return None
        return counted

    def fields(self) -> dict[str, Any]:
        """The session's fields the count changed (mostly ``meter_at`` alone)."""
        s = self.session
        changed: dict[str, Any] = {}
        if self.at != s.meter_at:
            changed["meter_at"] = self.at
        if self.anomaly is not None and (self.offset, self.prior, self.anomaly) != (
                s.meter_offset_wh, s.meter_prior_offset_wh, s.meter_anomaly):
            changed.update(meter_offset_wh=self.offset, meter_prior_offset_wh=self.prior,
                           meter_anomaly=self.anomaly)
        return changed

    def _late(self, counted: int, at: datetime) -> bool:
        """Whether a reading at or below the count is a late one, whose energy a stored
        sample stamped after it was credited with: stamped before the reading that last
        moved the count, above meterStart. Only on a count with no rollover or reset
        (its readings all on one scale: a stored sample's register is comparable)."""
        return self.at is not None and at < self.at and self.offset == 0 \
            and self.anomaly is None and counted > self.session.meter_start_wh

    def _known_since(self, at: datetime) -> bool:
        """Whether ``at`` is after the reading that last moved the count. A session
        recorded before that time was kept, with energy counted, knows none: no drop
        in it is judged (a late frame would look like a reset)."""
        if self.at is None:
            return self.high == self.session.meter_start_wh
        return at > self.at

    def _budget_wh(self, at: datetime) -> float:
        """What the connector could deliver from the reading that last moved the count
        (the start, before any) to ``at``, with ``STEP_SLACK_S`` at full power."""
        seconds = max((at - (self.at or self.session.start_time)).total_seconds(), 0.0)
        return self.rated_kw * RATING_HEADROOM * (seconds + STEP_SLACK_S) / 3.6

    def _step_ok(self, wh: int, at: datetime) -> bool:
        return wh <= self._budget_wh(at)

    def _across_drop(self, wh: int, at: datetime) -> None:
        raw_high = self.high - self.offset  # the register's highest reading so far
        budget = self._budget_wh(at)
        for limit in REGISTER_LIMITS:
            if raw_high < limit and limit - raw_high <= limit * NEAR_LIMIT \
                    and limit - raw_high + wh <= budget:
                self._anomaly(self.offset + limit, MeterAnomaly.ROLLOVER, wh, at)
                return
        if wh <= raw_high * NEAR_ZERO and wh <= budget:
            self._anomaly(self.high, MeterAnomaly.RESET, wh, at)

    def _anomaly(self, offset: int, kind: MeterAnomaly, wh: int, at: datetime) -> None:
        log.warning("%s: transaction %s: energy register read %s Wh after %s Wh: a %s, "
                    "counted across (the session is flagged for review)",
                    self.session.cp_id, self.session.transaction_id, wh,
                    self.high - self.offset, kind.value.lower())
        self.prior, self.offset, self.anomaly, self.at = self.offset, offset, kind, at


class LateReading(NamedTuple):
    """A late energy register reading of a frame (``RegisterCount._late``): where the
    sample that takes its share is in ``samples_of``'s list (``position``), and its
    register on the count."""

    position: int
    counted: int


def late_share(late: LateReading, next_sample: MeterSample) -> int:
    """What a late reading takes of ``next_sample``'s increment: the energy from the
    register the sample was counted from (its reading less its increment) up to the late
    one, which lies between them in time. 0 when it is not between them in register too
    (the same late reading again: its share taken already; a register that went back)
    or when the sample is a line's or an interval's, whose reading is not the total
    register."""
    delta = next_sample.delta_wh or 0
    if next_sample.phase is not None or next_sample.measurand != ENERGY_REGISTER \
            or delta <= 0:
        return 0
    reading = round(to_wh(next_sample.value, next_sample.unit))
    if not reading - delta < late.counted < reading:
        return 0
    return late.counted - (reading - delta)


def credited_readings(samples: Iterable[MeterSample]) -> dict[int, datetime]:
    """The total register readings of ``samples`` credited with an increment, each with
    the latest time it was read at. A late reading of one of them at or before that time
    is that reading again (in another unit or context: a stop's ``transactionData``
    repeating the live ones), the energy up to it credited already: it has no share to
    take (``late_share`` would find none)."""
    credited: dict[int, datetime] = {}
    for sample in samples:
        if sample.phase is None and sample.measurand == ENERGY_REGISTER \
                and (sample.delta_wh or 0) > 0:
            wh = round(to_wh(sample.value, sample.unit))
            credited[wh] = max(sample.at, credited.get(wh, sample.at))
    return credited


def not_credited(lates: Sequence[LateReading], samples: Sequence[MeterSample],
                 stored: Iterable[MeterSample]) -> list[LateReading]:
    """The late readings of a frame (at their positions in its ``samples``) that are not
    a reading credited already, by the frame's samples or the ``stored`` ones, at or
    after their time (``credited_readings``): those needing a share."""
    credited = credited_readings([*stored, *samples])
    needing = []
    for late in lates:
        read_at = credited.get(late.counted)
        if read_at is None or read_at < samples[late.position].at:
            needing.append(late)
    return needing


def cut_at_next_start(session: Session, next_start_wh: int, own_wh: float | None
                      ) -> int | None:
    """The register ``session`` ends at when a newer start on its connector closes it
    (its StopTransaction lost) with meterStart ``next_start_wh`` below its readings: a
    register only grows, so what they counted above that meterStart is the newer
    transaction's, billed there from it (QA s21: the energy between was billed twice).
    ``None``: it ends as metered. No overlap; or a meterStart on another scale than its
    readings, where a cut would bill it nothing: at or below ``NEAR_ZERO`` of its
    highest reading (a meter counting each transaction from 0, as ``RegisterCount``
    tells a reset), or below its own meterStart (a register gone back: another meter);
    or a count across a rollover or reset, whose readings are no longer the
    register's. Nor when the older started at 0: a meter counting each transaction from
    0 (a register of a charger in service reads more), whose next meterStart, whatever
    it is, is on no scale of the older's readings. Nor below ``own_wh``, its latest
    register reading that named its transaction: that one is the older's by the
    charger's own word, and a newer meterStart below it is another meter's scale (a
    per-transaction meter that read some energy before each transaction; review s21:
    300 → 4000 Wh cut to 1200 by a next start at 1500). The readings a cut takes back
    are those sent without a transactionId (clock-aligned on the connector), which may
    have been the newer transaction's while its start waited in the charger's queue."""
    if session.meter_offset_wh or session.meter_anomaly in COUNTED_ACROSS \
            or session.meter_start_wh == 0 \
            or (own_wh is not None and next_start_wh < own_wh):
        return None
    high = session.meter_start_wh + session.energy_wh
    if not session.meter_start_wh <= next_start_wh < high \
            or next_start_wh <= high * NEAR_ZERO:
        return None
    return next_start_wh


class SampledValue(NamedTuple):
    """One sampled value of a meter reading, as the charger sent it. Tuples: a MeterValues
    frame makes several per message, and a frozen dataclass costs three times as much to
    build."""

    value: str
    measurand: str | None = None
    unit: str | None = None
    phase: str | None = None
    context: str | None = None
    location: str | None = None
    format: str | None = None


class MeterReading(NamedTuple):
    timestamp: datetime
    values: tuple[SampledValue, ...]
    #: The timestamp as the charger sent it, when ``believed`` placed the reading at its
    #: arrival instead: what identifies it (a resent frame is the same reading), what
    #: signed evidence keeps, and what the charger's clock is judged by.
    reported: datetime | None = None

    @property
    def sent_at(self) -> datetime:
        return self.reported or self.timestamp


def to_wh(value: float, unit: str | None) -> float:
    return value * 1000 if unit == "kWh" else value


def to_w(value: float, unit: str | None) -> float:
    return value * 1000 if unit == "kW" else value


def default_unit(measurand: str) -> str | None:
    """The unit OCPP 1.6 reads a sampled value sent without one in: Wh for an energy
    measurand (register or interval), none for the others (power has no default)."""
    return "Wh" if measurand.startswith("Energy.") else None


def reading_number(sv: SampledValue) -> float | None:
    """The number a sampled value writes; ``None`` for SignedData (a signed blob, even
    one made of digits alone, is no reading) and other text that is no number."""
    if sv.format == "SignedData":
        return None
    return v.sampled_number(sv.value, "meterValue.sampledValue.value")


def believed(readings: list[MeterReading], believable: Callable[[datetime], bool],
             now: datetime, start: datetime | None = None) -> list[MeterReading]:
    """``readings`` with any stamped beyond belief (2099: a clock glitch; ``believable``)
    placed at ``now``, their arrival, as unbelievable start, stop and status times are:
    one such sample was stored in 2099, adding its energy to that day's trends and
    pricing it by that day's time of day (QA s17). A ``Transaction.Begin`` reading is
    placed at its session's ``start`` instead (when known): at the arrival of a stop's
    ``transactionData``, after the live readings, its meterStart read as a register gone
    back to 0, a false ``RESET`` (QA s32, a clock never set). Each timestamp is checked
    first (``meterValue.timestamp``): one outside the years any instant may have is
    still refused."""
    kept = readings
    for index, reading in enumerate(readings):
        if believable(reading.timestamp):
            continue  # the frame's every reading, nearly always: checked in full later
        v.instant(as_utc(reading.timestamp), "meterValue.timestamp")
        if kept is readings:
            kept = list(readings)
        begins = bool(reading.values) \
            and all(sv.context == "Transaction.Begin" for sv in reading.values)
        kept[index] = reading._replace(
            timestamp=start if start is not None and begins else now,
            reported=reading.timestamp)
    return kept


def sound(readings: list[MeterReading], cp_id: str, transaction_id: int
          ) -> list[MeterReading]:
    """A stop's ``transactionData`` without the readings and sampled values that cannot
    be read (``readable``). Refusing the whole StopTransaction over a temperature of
    "NaN" left the session ACTIVE and its driver's card blocked once the charger gave up
    retrying (QA s17); a stop is kept even when none of it is left."""
    kept, dropped = readable(readings)
    if dropped:
        log.warning("%s: %s sampled value(s) in the transactionData of transaction %s were "
                    "not readable and are left out; the stop is kept", cp_id, len(dropped),
                    transaction_id)
    return kept


class Unreadable(NamedTuple):
    """A sampled value ``readable`` left out, and why (for a reading stamped outside
    the years any instant may have, each of its values, with that error)."""

    value: SampledValue
    error: ValidationError


def readable(readings: list[MeterReading]
             ) -> tuple[list[MeterReading], list[Unreadable]]:
    """``readings`` without those stamped outside the years any instant may have and the
    sampled values no meter writes (NaN, beyond ±10^12, padded, ``1_000``): what a
    charger's frame is kept with, and what was left out. A reading left with no value is
    left out too. SignedData and other text that is no number are readable (kept out of
    the numbers without an error)."""
    kept: list[MeterReading] = []
    dropped: list[Unreadable] = []
    for reading in readings:
        late = _unreadable_time(reading)
        if late is not None:
            dropped += [Unreadable(sv, late) for sv in reading.values]
            continue
        values: list[SampledValue] = []
        for sv in reading.values:
            error = _unreadable(sv)
            if error is None:
                values.append(sv)
            else:
                dropped.append(Unreadable(sv, error))
        if len(values) == len(reading.values):
            kept.append(reading)
        elif values:
            kept.append(reading._replace(values=tuple(values)))
    return kept, dropped


def _unreadable_time(reading: MeterReading) -> ValidationError | None:
    try:
        v.instant(as_utc(reading.timestamp), "meterValue.timestamp")
    except ValidationError as error:
        return error
    except (ValueError, OverflowError):  # beyond what a datetime holds in UTC
        return ValidationError(f"must be within {v.EARLIEST.year}..{v.LATEST.year - 1}",
                               field="meterValue.timestamp", code="OUT_OF_RANGE")
    return None


def _unreadable(sv: SampledValue) -> ValidationError | None:
    try:
        reading_number(sv)
    except ValidationError as error:
        return error
    return None


#: How many (charger, reason) pairs ``UnreadableValues`` remembers having logged; past
#: it, it starts over (a line again for each), so the set cannot grow without bound.
TOLD_LIMIT = 10_000


class UnreadableValues:
    """MeterValues frames kept without what cannot be read (``readable``), each reason
    logged once per charger, not at every frame (a temperature probe reading "NaN" every
    ten seconds). A frame refused for one temperature of "NaN" lost the energy register
    beside it (QA s20). A frame of which nothing is left is refused with its first
    error, as before: nothing of it could be stored."""

    def __init__(self) -> None:
        self._told: set[tuple[str, str]] = set()

    def kept(self, cp_id: str, readings: list[MeterReading]) -> list[MeterReading]:
        kept, dropped = readable(readings)
        if not dropped:
            return readings
        if not kept:
            raise dropped[0].error
        for value, error in dropped:
            reason = f"{error.field} {error.message}"
            if (cp_id, reason) in self._told:
                continue
            if len(self._told) >= TOLD_LIMIT:
                self._told.clear()
            self._told.add((cp_id, reason))
            log.warning("%s: a MeterValues sampled value (%s %.40r): %s: left out, the "
                        "rest of the frame kept; not logged again for this charger and "
                        "reason", cp_id, value.measurand or ENERGY_REGISTER, value.value,
                        reason)
        return kept


def added_wh(samples: list[MeterSample]) -> int:
    """The Wh a batch of samples adds to its session."""
    return sum(s.delta_wh for s in samples if s.delta_wh)


def register_count(session: Session | None, rated_kw: float, registered: bool = False
                   ) -> RegisterCount | None:
    """The count a frame's register readings add to: an active session's, else none
    (``registered``: ``RegisterCount.registered``)."""
    if session is None or session.state is not SessionState.ACTIVE:
        return None
    return RegisterCount(session, rated_kw, registered)


def meters_intervals(readings: Iterable[MeterReading]) -> bool:
    """Whether ``readings`` have an interval energy reading that counts
    (``RegisterCount.interval`` needs to know whether a register moved the count
    before)."""
    return any(counted_interval(sv) for r in readings for sv in r.values)


def counted_interval(sv: SampledValue) -> bool:
    """Whether ``sv`` is an interval energy reading that counts where a reading has no
    register (``samples_of``): the outlet's, periodic (``COUNTED_INTERVALS``), the total
    or a line's."""
    return sv.measurand == ENERGY_INTERVAL and sv.location in (None, "Outlet") \
        and sv.context in COUNTED_INTERVALS and (sv.phase is None or sv.phase in LINE_OF_PHASE)


def samples_of(station: Station, connector_id: int, transaction_id: int | None,
               session: Session | None, readings: list[MeterReading],
               count: RegisterCount | None = None) -> list[MeterSample]:
    """Every numeric sample; for an active session's total energy register (or, from a
    charger that meters per phase only, the sum of its lines'; from one with no register
    in the reading, its periodic interval readings: ``RegisterCount.interval``) also the
    Wh it adds to the session (``delta_wh``) through its ``count`` (``register_count``):
    counted from
    the highest register so far (``meter_start_wh + energy_wh``), so energy per period
    is a plain sum in the store. A reading at or below it (late, or a register that went
    back) adds nothing (a late one is noted in ``count.late``, for the stored samples to
    give it its share), unless the meter rolled over or was reset (``RegisterCount``);
    nor does one no meter could show: above what the connector could have delivered
    since the start, both on the charger's clock (one running ahead of ours still
    meters live)."""
    samples: list[MeterSample] = []
    actor = charger(station.cp_id)
    session_id = session.id if session else None
    for reading in sorted(readings, key=lambda r: r.timestamp):
        at = v.instant(as_utc(reading.timestamp), "meterValue.timestamp")
        # Keyed by the time sent: a resent frame's reading placed at its (new) arrival
        # is still the same reading, written once (review s17).
        sent = at if reading.reported is None else as_utc(reading.reported)
        sample_id = stable_ids(sent, station.cp_id, connector_id, transaction_id,
                               sent.isoformat())
        # Placed on the session's timeline, never before its start: a charger whose clock
        # was reset mid-session (1970) put the energy of one of today's sessions into
        # 1970's trends (QA s18). Its count still goes by the charger's own time.
        placed = at if session is None or at >= session.start_time else session.start_time
        total_seen = False
        lines: dict[str, tuple[float, int]] = {}  # line → (its register in Wh, its sample)
        # Its interval readings likewise, the total's under None: counted only when the
        # reading has no register (one beside them is what counts, the same energy).
        intervals: dict[str | None, tuple[float, int]] = {}
        for sv in reading.values:
            value = reading_number(sv)
            if value is None:
                continue  # SignedData and other non-numeric formats: not a number
            measurand = sv.measurand or ENERGY_REGISTER
            delta_wh = None
            if count is not None and measurand == ENERGY_REGISTER \
                    and sv.location in (None, "Outlet"):
                if sv.phase is None:
                    total_seen = True
                    delta_wh = count.added(round(to_wh(value, sv.unit)), at)
                    if count.behind is not None:
                        count.late.append(LateReading(len(samples), count.behind))
                elif sv.phase in LINE_OF_PHASE:
                    lines.setdefault(LINE_OF_PHASE[sv.phase],
                                     (to_wh(value, sv.unit), len(samples)))
            elif count is not None and counted_interval(sv):
                intervals.setdefault(LINE_OF_PHASE.get(sv.phase or ""),
                                     (to_wh(value, sv.unit), len(samples)))
            # Stamped here rather than by stamp_new: the defaults would each read the
            # clock only to be overwritten (three samples per frame add up).
            samples.append(MeterSample(
                # The value is part of the key: a repeated frame writes nothing new,
                # but a second reading stamped the same second (clock-aligned and
                # periodic samples together) is a sample of its own, as its delta is.
                id=sample_id(measurand, sv.phase, sv.location, sv.context, sv.unit,
                             value),
                created_at=placed, updated_at=placed, created_by=actor.actor,
                updated_by=actor.actor,
                session_id=session_id, cp_id=station.cp_id,
                connector_id=connector_id, at=placed, measurand=measurand, value=value,
                unit=sv.unit or default_unit(measurand),
                phase=sv.phase, context=sv.context, transaction_id=transaction_id,
                delta_wh=delta_wh, station_id=station.id,
            ))
        if lines and not total_seen and count is not None:
            # A charger that meters per phase only: its total register is the sum of
            # its lines' (without it, the session metered nothing live and all its
            # energy landed at the stop). The increment goes on the reading's last
            # line sample, so energy per period stays a plain sum of increments.
            line_wh, last = line_total(lines)
            added = count.added(round(line_wh), at)
            if added:
                samples[last] = replace(samples[last], delta_wh=added)
            elif count.behind is not None:
                count.late.append(LateReading(last, count.behind))
        elif intervals and not total_seen and count is not None:
            # A charger with no register (QA s32: its sessions showed 0 kWh live and all
            # their energy in the stop's hour): the reading's interval, its total or
            # the sum of its lines', as a register's increment would be.
            interval_wh, last = intervals[None] if None in intervals \
                else line_total(intervals)
            added = count.interval(round(interval_wh), at)
            if added:
                samples[last] = replace(samples[last], delta_wh=added)
    return samples


def line_total(lines: dict[Any, tuple[float, int]]) -> tuple[float, int]:
    """The sum of a reading's line readings (line → its Wh, its sample's position) and
    the position of the last of their samples, which takes the increment."""
    return sum(wh for wh, _ in lines.values()), max(index for _, index in lines.values())


SIGNED_DATA = "SignedData"


def signed_encoding(data: str) -> SignedEncoding:
    """OCMF when the text begins as an OCMF record does (``OCMF|``), else unknown."""
    return SignedEncoding.OCMF if data.startswith(ocmf.PREFIX) else SignedEncoding.UNKNOWN


def signed_values_of(station: Station, connector_id: int, transaction_id: int | None,
                     session: Session | None, readings: Sequence[MeterReading]
                     ) -> list[SignedMeterValue]:
    """Every SignedData sampled value of ``readings`` as a record of its own, linked to
    ``session`` as the frame's numeric samples are (``samples_of``; unlinked without
    one). Its id is stable over the whole text as sent, so a repeated frame writes
    nothing new. Text beyond ``MAX_SIGNED_DATA`` is kept cut and flagged."""
    found: list[SignedMeterValue] = []
    actor = charger(station.cp_id).actor
    for reading in readings:
        signed = [sv for sv in reading.values if sv.format == SIGNED_DATA]
        if not signed:
            continue
        # Evidence as sent: the charger's own timestamp, even one beyond belief.
        at = v.instant(as_utc(reading.sent_at), "meterValue.timestamp")
        signed_id = stable_ids(at, station.cp_id, connector_id, transaction_id,
                               at.isoformat(), SIGNED_DATA)
        for sv in signed:
            measurand = sv.measurand or ENERGY_REGISTER
            found.append(SignedMeterValue(
                id=signed_id(measurand, sv.phase, sv.location, sv.context, sv.value),
                created_at=at, updated_at=at, created_by=actor, updated_by=actor,
                session_id=session.id if session else None, station_id=station.id,
                cp_id=station.cp_id, connector_id=connector_id,
                transaction_id=transaction_id, at=at, measurand=measurand,
                context=sv.context, location=sv.location, phase=sv.phase,
                encoding=signed_encoding(sv.value), data=sv.value[:MAX_SIGNED_DATA],
                data_length=len(sv.value), truncated=len(sv.value) > MAX_SIGNED_DATA))
    if any(s.truncated for s in found):
        log.warning("%s: a signed meter value longer than %s characters was kept cut",
                    station.cp_id, MAX_SIGNED_DATA)
    return found


def closing_sample(station: Station, session: Session, samples: list[MeterSample],
                   stored_wh: int, energy: int, meter_stop: int, end: datetime
                   ) -> MeterSample | None:
    """A Transaction.End register sample at the stop time with what the session's
    samples still miss of its ``energy``: the rest up to meterStop (the whole energy,
    for a charger that sent no meter values at all), or, when readings went above
    meterStop by more than ``ChargingService._settled_samples`` could take back, a
    negative amount taking the rest of the excess back. ``stored_wh``: what the session's stored
    samples add up to."""
    rest = energy - stored_wh - added_wh(samples)
    if rest == 0:
        return None
    sample = MeterSample(
        id=stable_id(end, station.cp_id, session.connector_id, session.transaction_id,
                     end.isoformat(), ENERGY_REGISTER, None, None, "Transaction.End",
                     "Wh"),
        session_id=session.id, cp_id=station.cp_id, connector_id=session.connector_id,
        at=end, measurand=ENERGY_REGISTER, value=float(meter_stop), unit="Wh",
        context="Transaction.End", transaction_id=session.transaction_id,
        delta_wh=rest, station_id=station.id)
    return stamp_new(sample, charger(station.cp_id), end)


def reading_power(reading: MeterReading) -> float | None:
    """The reading's total active power in W: its total, else (a charger that meters per
    phase only) the sum of its lines'; ``None`` when it has neither."""
    lines: dict[str, float] = {}
    for sv in reading.values:
        if sv.measurand != POWER or sv.location not in (None, "Outlet"):
            continue
        value = reading_number(sv)
        if value is None:
            continue
        if sv.phase is None:
            return to_w(value, sv.unit)
        if sv.phase in LINE_OF_PHASE:
            lines.setdefault(LINE_OF_PHASE[sv.phase], to_w(value, sv.unit))
    return sum(lines.values()) if lines else None


def reading_soc(reading: MeterReading) -> float | None:
    """The vehicle's State of Charge in the reading (percent), ``None`` without one or
    with one no battery can show."""
    for sv in reading.values:
        if sv.measurand == SOC and sv.phase is None:
            value = reading_number(sv)
            if value is not None and 0 <= value <= 100:
                return value
    return None


def final_soc(session: Session, readings: Sequence[MeterReading],
              believable: Callable[[datetime], bool]) -> dict[str, Any]:
    """The State of Charge fields ``readings`` set (``soc_percent``, ``soc_at``): the
    newest reading of it, unless the one shown is newer (a believable time: one stamped
    in our future by a glitching clock must not freeze it); nothing without one. For
    live meter values and a stop's own readings (its transactionData) alike."""
    soc_at = session.soc_at if session.soc_at is not None and believable(session.soc_at) \
        else None
    found: dict[str, Any] = {}
    for reading in readings:
        value = reading_soc(reading)
        if value is not None and (soc_at is None or reading.timestamp >= soc_at):
            soc_at = reading.timestamp
            found = {"soc_percent": value, "soc_at": as_utc(reading.timestamp)}
    return found


def live_patch(session: Session, readings: list[MeterReading], added: int,
               actor: Viewer, believable: Callable[[datetime], bool],
               count: RegisterCount | None = None, *,
               named_at: datetime | None = None) -> Update | None:
    """Live energy grows by what the frame's samples add (``added``, their
    ``delta_wh``): never from the newest reading alone, which a late or lower one would
    take back, and always equal to the sum of the session's increments; with it the
    register's count (``count``: when its reading last moved it, a rollover or reset).
    Power from
    the newest total active power (``reading_power``), State of Charge as
    ``final_soc`` takes it, each unless the one shown is newer (a believable
    time: one stamped in our future by a glitching clock must not freeze it).
    ``named_at``: the frame named the session first since its charger's boot
    (``Session.named_at``). ``None`` when nothing changed."""
    power_at = session.power_at
    if power_at is not None and not believable(power_at):
        power_at = None
    power = None
    for reading in readings:
        value = reading_power(reading)
        # Only a reading newer than the power shown: a frame flushed late (after an
        # outage) must not put an old value over the current one.
        if value is not None and (power_at is None or reading.timestamp >= power_at):
            power_at, power = reading.timestamp, value
    updates: dict[str, Any] = final_soc(session, readings, believable)
    if added:
        updates["energy_wh"] = session.energy_wh + added
    if count is not None:
        updates.update(count.fields())  # the register's count moved (or rolled over)
    if named_at is not None:
        updates["named_at"] = named_at
    if power is not None:
        updates["power_w"] = power
        updates["power_at"] = as_utc(power_at) if power_at is not None else None
    if not updates or all(getattr(session, k) == val for k, val in updates.items()):
        return None
    # Only onto a session still ACTIVE in the store: this one may be a cached copy,
    # and another instance may have ended it (endSession) since. Required: the
    # frame's samples, written with it, must not add Wh to a session closed without
    # them (``meter_values`` writes them again, adding nothing).
    return patch(session, actor, only_if=("state", SessionState.ACTIVE), required=True,
                 **updates)


#: Energy register readings per session time-of-day prices read (a day at one every
#: 10 s); the energy of any after them is at the price in force at the start.
MAX_BAND_READINGS = 10_000


async def register_readings(store: Store, session_ids: Sequence[str]
                            ) -> dict[str, list[MeterSample]]:
    """The energy register samples of each session (those with an increment), oldest
    first, at most ``MAX_BAND_READINGS`` each: one store call, from the (session, at)
    index. What time-of-day prices attribute a session's energy by."""
    return await store.find_grouped(MeterSample, "session_id", list(session_ids),
                                    Range("delta_wh", gte=0), (Sort("at"),),
                                    MAX_BAND_READINGS)
