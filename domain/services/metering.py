"""Meter rules: what a charger's meter values are as samples, which registers can be
believed, what a frame adds to its session's live energy, and the closing sample that
makes a session's samples add up to its billed energy. Pure functions: the charging
service reads and writes the store around them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from domain import validation as v
from domain.clock import as_utc
from domain.entities import MeterSample, Session, SessionState, Station
from domain.ids import stable_id, stable_ids
from domain.policy import Viewer
from domain.ports import Store, Update
from domain.query import Range, Sort
from domain.services.base import charger, patch, stamp_new

ENERGY_REGISTER = "Energy.Active.Import.Register"
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


def believable_register(session: Session, wh: float, at: datetime, rated_kw: float) -> bool:
    """Whether the energy register can read ``wh`` at ``at`` in ``session`` on a connector
    rated ``rated_kw`` (``MAX_BELIEVABLE_KW``: not known): no more above its start than
    that power could deliver since, with a slack for clocks."""
    seconds = max((at - session.start_time).total_seconds(), 0.0)
    slack = METER_SLACK_WH if rated_kw >= MAX_BELIEVABLE_KW \
        else rated_kw * RATING_HEADROOM * RATED_SLACK.total_seconds() / 3.6
    return wh <= session.meter_start_wh + rated_kw * RATING_HEADROOM * seconds / 3.6 + slack


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


def to_wh(value: float, unit: str | None) -> float:
    return value * 1000 if unit == "kWh" else value


def to_w(value: float, unit: str | None) -> float:
    return value * 1000 if unit == "kW" else value


def reading_number(sv: SampledValue) -> float | None:
    """The number a sampled value writes; ``None`` for SignedData (a signed blob, even
    one made of digits alone, is no reading) and other text that is no number."""
    if sv.format == "SignedData":
        return None
    return v.sampled_number(sv.value, "meterValue.sampledValue.value")


def added_wh(samples: list[MeterSample]) -> int:
    """The Wh a batch of samples adds to its session."""
    return sum(s.delta_wh for s in samples if s.delta_wh)


def samples_of(station: Station, connector_id: int, transaction_id: int | None,
               session: Session | None, readings: list[MeterReading],
               rated_kw: float = MAX_BELIEVABLE_KW) -> list[MeterSample]:
    """Every numeric sample; for an active session's total energy register (or, from a
    charger that meters per phase only, the sum of its lines') also the Wh it adds to
    the session (``delta_wh``), counted from the highest register so far
    (``meter_start_wh + energy_wh``), so energy per period is a plain sum in the store.
    A reading at or below it (late, or a register that went back) adds nothing; nor
    does one no meter could show: above what the connector (``rated_kw``) could have
    delivered since the start, both on the charger's clock (one running ahead of ours
    still meters live)."""
    samples: list[MeterSample] = []
    actor = charger(station.cp_id)
    running = None
    if session is not None and session.state is SessionState.ACTIVE:
        running = session.meter_start_wh + session.energy_wh
    session_id = session.id if session else None
    for reading in sorted(readings, key=lambda r: r.timestamp):
        at = v.instant(as_utc(reading.timestamp), "meterValue.timestamp")
        sample_id = stable_ids(at, station.cp_id, connector_id, transaction_id,
                               at.isoformat())
        total_seen = False
        lines: dict[str, tuple[float, int]] = {}  # line → (its register in Wh, its sample)
        for sv in reading.values:
            value = reading_number(sv)
            if value is None:
                continue  # SignedData and other non-numeric formats: not a number
            measurand = sv.measurand or ENERGY_REGISTER
            delta_wh = None
            if running is not None and measurand == ENERGY_REGISTER \
                    and sv.location in (None, "Outlet"):
                assert session is not None
                if sv.phase is None:
                    total_seen = True
                    wh = round(to_wh(value, sv.unit))
                    if believable_register(session, wh, at, rated_kw):
                        delta_wh = max(wh - running, 0)
                        running = max(running, wh)
                elif sv.phase in LINE_OF_PHASE:
                    lines.setdefault(LINE_OF_PHASE[sv.phase],
                                     (to_wh(value, sv.unit), len(samples)))
            # Stamped here rather than by stamp_new: the defaults would each read the
            # clock only to be overwritten (three samples per frame add up).
            samples.append(MeterSample(
                # The value is part of the key: a repeated frame writes nothing new,
                # but a second reading stamped the same second (clock-aligned and
                # periodic samples together) is a sample of its own, as its delta is.
                id=sample_id(measurand, sv.phase, sv.location, sv.context, sv.unit,
                             value),
                created_at=at, updated_at=at, created_by=actor.actor,
                updated_by=actor.actor,
                session_id=session_id, cp_id=station.cp_id,
                connector_id=connector_id, at=at, measurand=measurand, value=value,
                unit=sv.unit or ("Wh" if measurand == ENERGY_REGISTER else None),
                phase=sv.phase, context=sv.context, transaction_id=transaction_id,
                delta_wh=delta_wh, station_id=station.id,
            ))
        if lines and not total_seen and running is not None:
            # A charger that meters per phase only: its total register is the sum of
            # its lines' (without it, the session metered nothing live and all its
            # energy landed at the stop). The increment goes on the reading's last
            # line sample, so energy per period stays a plain sum of increments.
            assert session is not None
            wh = round(sum(line_wh for line_wh, _ in lines.values()))
            if believable_register(session, wh, at, rated_kw) and wh > running:
                last = max(index for _, index in lines.values())
                samples[last] = replace(samples[last], delta_wh=wh - running)
                running = wh
    return samples


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
               actor: Viewer, believable: Callable[[datetime], bool]) -> Update | None:
    """Live energy grows by what the frame's samples add (``added``, their
    ``delta_wh``): never from the newest reading alone, which a late or lower one would
    take back, and always equal to the sum of the session's increments. Power from
    the newest total active power (``reading_power``), State of Charge as
    ``final_soc`` takes it, each unless the one shown is newer (a believable
    time: one stamped in our future by a glitching clock must not freeze it). ``None``
    when nothing changed."""
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
