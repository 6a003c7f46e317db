"""The charger's clock: connector state and intervals follow its timestamps, a clock that is
behind ours keeps every connector's history, and a glitch into the future poisons
nothing."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.entities import BILLED_TIME_TOLERANCE
from domain.policy import SYSTEM
from domain.pricing import cost_breakdown
from domain.query import Eq
from domain.services.base import patch
from graph.ids import to_global_id
from ocpp_bridge.simulator import SimulatedChargePoint, connected, now
from tests.helpers import MovedClock
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central

GLITCH = "2150-01-01T00:00:00Z"
CONNECTORS = '{ station(cpId: "CP-1") { connectors { connectorId status } } }'


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def report(cp: SimulatedChargePoint, connector_id: int, status: str,
                 timestamp: str) -> None:
    await cp.call(call.StatusNotification(connector_id=connector_id, error_code="NoError",
                                          status=status, timestamp=timestamp))


async def statuses(central: Central) -> dict[int, str]:
    data = await central.gql(CONNECTORS, as_user="admin")
    return {c["connectorId"]: c["status"] for c in data["station"]["connectors"]}


async def intervals(central: Central, connector_id: int) -> list[d.ConnectorInterval]:
    found = await central.store.find_all(d.ConnectorInterval, Eq("cp_id", "CP-1"), limit=100)
    return sorted((i for i in found if i.connector_id == connector_id),
                  key=lambda i: (i.start, i.end is None, i.end))


async def offline_recorded(central: Central) -> None:
    """Waits (bounded) until the server has written the charger's disconnect."""
    for _ in range(250):
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        if station is not None and not station.online:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the disconnect was never recorded")


def assert_contiguous(rows: list[d.ConnectorInterval]) -> None:
    """One open interval, last; each closed one ends where the next starts."""
    assert rows and rows[-1].end is None and all(r.end is not None for r in rows[:-1])
    for earlier, later in itertools.pairwise(rows):
        assert earlier.end is not None and earlier.start <= earlier.end == later.start


async def test_a_status_stamped_far_in_the_future_does_not_freeze_the_connector(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await report(cp, 2, "Available", now())
        await report(cp, 2, "Preparing", GLITCH)  # the charger's clock glitched once
        assert (await statuses(central))[2] == "PREPARING"  # still the newest report
        await report(cp, 2, "Available", now())  # and is right again (NTP)
        assert (await statuses(central))[2] == "AVAILABLE"
    await offline_recorded(central)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await report(cp, 2, "Charging", now())
        assert (await statuses(central))[2] == "CHARGING"
    await offline_recorded(central)
    # Every interval, (dis)connects included, is on a sane timeline, not in 2150.
    horizon = datetime.now(UTC) + timedelta(minutes=5)
    rows = await intervals(central, 2)
    assert_contiguous(rows)
    assert all(r.start <= horizon and (r.end is None or r.end <= horizon) for r in rows)
    assert (rows[-1].status, rows[-1].online) == (d.ConnectorStatus.CHARGING, False)
    assert central.services.charging.clocks.charger_now("CP-1") <= horizon
    # The history keeps the report as the charger stamped it.
    events = await central.store.find_all(d.StatusEvent, Eq("cp_id", "CP-1"))
    assert [e.at.year for e in events if e.status is d.ConnectorStatus.PREPARING] == [2150]


async def test_a_state_stamped_in_our_future_yields_to_the_next_report(
        central: Central) -> None:
    """A connector frozen by a glitch stored before glitches were recognized is freed by
    the next report."""
    connector = await central.store.find_one(d.Connector, Eq("cp_id", "CP-1"))
    assert connector is not None
    await central.store.write([patch(connector, SYSTEM, status=d.ConnectorStatus.PREPARING,
                                     status_at=datetime(2150, 1, 1, tzinfo=UTC))], [])
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await report(cp, connector.connector_id, "Available", now())
        assert (await statuses(central))[connector.connector_id] == "AVAILABLE"


def first_message(kind: str, at: datetime) -> Any:
    """The charger's first timestamped message after connecting, on connector 1."""
    if kind == "StatusNotification":
        return call.StatusNotification(connector_id=1, error_code="NoError",
                                       status="Available", timestamp=iso(at))
    if kind == "MeterValues":
        return call.MeterValues(connector_id=1, meter_value=[
            {"timestamp": iso(at), "sampledValue": [{"value": "1000"}]}])
    return call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=0,
                                 timestamp=iso(at))


@pytest.mark.parametrize("kind", ["StatusNotification", "MeterValues", "StartTransaction"])
async def test_a_clock_behind_ours_keeps_every_connectors_history(central: Central,
                                                                 kind: str) -> None:
    """Connecting opens an interval for every connector on our clock; the charger's
    first timestamp, an hour behind, moves all of them onto its timeline, so the reports
    of connector 2 count, not only those of the connector that carried it."""
    t = datetime.now(UTC).replace(microsecond=0)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.call(first_message(kind, t - timedelta(minutes=60)))
        await report(cp, 2, "Available", iso(t - timedelta(minutes=60)))
        await report(cp, 2, "Charging", iso(t - timedelta(minutes=50)))
        await report(cp, 2, "Available", iso(t - timedelta(minutes=40)))
        # Up to the charger's newest timestamp: its timeline, replayed here in an
        # instant, reached no further, and an open interval lasts only as long as our
        # clock has seen since (``analytics.TIMES``).
        window = {"from": iso(t - timedelta(minutes=70)), "to": iso(t - timedelta(minutes=40))}
        data = await central.gql(
            """query($from: DateTime!, $to: DateTime!) {
                 u: utilization(from: $from, to: $to, groupBy: CONNECTOR) {
                   cpId connectorId chargingSeconds }
                 a: availability(from: $from, to: $to, groupBy: CONNECTOR) {
                   cpId connectorId availableSeconds } }""", window, as_user="admin")
    charging = {r["connectorId"]: r["chargingSeconds"] for r in data["u"]
                if r["cpId"] == "CP-1"}
    available = {r["connectorId"]: r["availableSeconds"] for r in data["a"]
                 if r["cpId"] == "CP-1"}
    assert charging[2] == 600 and available[2] == 1200
    await offline_recorded(central)
    for connector_id in (1, 2):
        rows = await intervals(central, connector_id)
        assert_contiguous(rows)
        assert rows[0].start == t - timedelta(minutes=60)  # moved, not clamped


async def test_the_move_stops_at_the_interval_before(tmp_path: Path) -> None:
    """The intervals of a connection opened on our clock move back to the charger's first
    timestamp, but not past the interval before them (written by an earlier process on
    the charger's timeline, whose clock was set back further meanwhile): that one ends
    where they start, nothing overlaps."""
    t = datetime.now(UTC).replace(microsecond=0)
    central = await start_central(tmp_path / "restarted.db")
    await seed(central)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await report(cp, 1, "Available", iso(t - timedelta(minutes=90)))
    await offline_recorded(central)
    await stop_central(central)
    central = await start_central(tmp_path / "restarted.db")
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await report(cp, 2, "Available", iso(t - timedelta(minutes=200)))
        await offline_recorded(central)
        for connector_id in (1, 2):
            rows = await intervals(central, connector_id)
            assert_contiguous(rows)
            assert rows[0].start == t - timedelta(minutes=90)
    finally:
        await stop_central(central)


async def _per_minute_tariff(central: Central) -> d.Tariff:
    """A station tariff with a price per minute, in force for years: the session's start,
    wherever the charger's clock puts it, is priced by it."""
    return await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.30"),
        price_per_minute=Decimal("0.10"), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=10 * 365))


def _register(tx: int, at: datetime, wh: int) -> call.MeterValues:
    return call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
        {"timestamp": iso(at), "sampledValue": [{"value": str(wh)}]}])


ESTIMATE = "{ sessions(first: 5) { nodes { transactionId estimatedCost { amountMinor } } } }"


@pytest.mark.parametrize("close", ["StopTransaction", "endSession"])
@pytest.mark.parametrize("behind", [timedelta(hours=6), timedelta(days=3 * 365)])
async def test_a_clock_corrected_mid_session_bills_the_time_our_clock_saw(
        central: Central, behind: timedelta, close: str) -> None:
    """A charger whose clock is hours or years behind ours at StartTransaction, then set
    right by NTP mid-session: its stop is stamped by the corrected clock, so by its own
    timestamps the session lasted ``behind`` (years of a per-minute price); an operator's
    endSession ended it at our "now", as far from its start. The billed duration (and the
    running estimate) is never more than our clock saw between the start's receipt and
    the close, beyond a small tolerance. Years behind: a start long before its station
    was registered. Hours behind: a start stamped after its connection opened (here 7
    hours ago) that still came hours late."""
    tariff = await _per_minute_tariff(central)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.Heartbeat())  # connected (recorded)
        central.services.charging.clocks.connected(
            "CP-1", datetime.now(UTC) - timedelta(hours=7))
        wrong = datetime.now(UTC).replace(microsecond=0) - behind
        received = datetime.now(UTC)
        started = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1_000, timestamp=iso(wrong)))
        tx = started.transaction_id
        await cp.call(_register(tx, wrong + timedelta(seconds=1), 3_000))
        right = datetime.now(UTC)  # NTP set the charger's clock right
        await cp.call(_register(tx, right, 6_000))
        data = await central.gql(ESTIMATE, as_user="admin")
        [estimate] = [s["estimatedCost"]["amountMinor"] for s in data["sessions"]["nodes"]
                      if s["transactionId"] == tx]
        if close == "StopTransaction":
            await cp.call(call.StopTransaction(meter_stop=11_000, timestamp=iso(right),
                                               transaction_id=tx))
        else:
            record = await central.session(tx)
            assert record is not None
            ended = await central.gql(
                """mutation($id: ID!) { endSession(input: {id: $id}) { errors { code } } }""",
                {"id": to_global_id("session", record.id)}, as_user="op")
            assert ended["endSession"]["errors"] == []
        observed = datetime.now(UTC) - received
    session = await central.session(tx)
    assert session is not None and session.end_time is not None
    billed = session.end_time - session.start_time
    assert timedelta(0) <= billed <= observed + BILLED_TIME_TOLERANCE
    energy = 10_000 if close == "StopTransaction" else 5_000
    assert session.energy_wh == energy
    most = cost_breakdown(tariff, energy, session.start_time,
                          session.start_time + observed + BILLED_TIME_TOLERANCE).gross
    assert session.cost_minor is not None and 0 < session.cost_minor <= most
    assert 0 < estimate <= most


async def test_a_transaction_queued_offline_is_billed_as_long_as_it_lasted(
        central: Central) -> None:
    """A charger that was offline sends its queued transaction, start and stop, on
    reconnecting: by our clock it lasted a moment, by its timestamps two hours, which is
    what it lasted. It is billed so (the clock rule is for clocks shown to be behind)."""
    tariff = await _per_minute_tariff(central)
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        started = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1_000, timestamp=iso(began)))
        tx = started.transaction_id
        await cp.call(call.StopTransaction(meter_stop=11_000, transaction_id=tx,
                                           timestamp=iso(began + timedelta(hours=2))))
    session = await central.session(tx)
    assert session is not None and not session.start_clock_behind
    assert session.end_time == began + timedelta(hours=2)
    assert session.cost_minor == cost_breakdown(tariff, 10_000, began,
                                                began + timedelta(hours=2)).gross


async def test_a_start_stamped_1970_is_priced_by_the_tariff_in_force_when_it_came(
        central: Central) -> None:
    """A charger whose clock was never set stamps its start 1970: no tariff was in force
    then, and ten kWh were delivered for free over a 56-year session."""
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.30"),
        price_per_minute=Decimal("0.10"), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=1))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        started = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=50_000,
            timestamp="1970-01-01T00:05:00Z"))
        tx = started.transaction_id
        await cp.call(call.StopTransaction(meter_stop=60_000, transaction_id=tx,
                                           timestamp=iso(datetime.now(UTC))))
    session = await central.session(tx)
    assert session is not None and session.start_clock_behind
    assert session.end_time is not None
    assert session.end_time - session.start_time <= BILLED_TIME_TOLERANCE
    # 10 kWh at 0.30 (+19 % tax none here) and at most a couple of minutes.
    assert session.cost_minor is not None and 300 <= session.cost_minor <= 330


async def test_a_queue_flushed_on_reconnecting_keeps_its_idle_time(central: Central) -> None:
    """A charger that was connected before (since the service started) goes offline,
    charges, and flushes the whole session on reconnecting. Its status reports were
    clamped to the reconnect (the charger's timeline was placed once per process, not per
    connection): the car's idle minutes were lost, and billed only by a charger seen for
    the first time."""
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.30"),
        idle_price_per_minute=Decimal("0.60"), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=1))
    with MovedClock(central.services.ctx) as clock:
        t0 = clock.t0
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await report(cp, 1, "Available", iso(t0))
            clock.at(2)
        await offline_recorded(central)
        clock.at(75)
        await _flush_a_session(central, t0)


async def _flush_a_session(central: Central, t0: datetime) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await report(cp, 1, "Preparing", iso(t0 + timedelta(seconds=10)))
        started = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp=iso(t0 + timedelta(seconds=10))))
        tx = started.transaction_id
        await report(cp, 1, "Charging", iso(t0 + timedelta(seconds=10)))
        await cp.call(_register(tx, t0 + timedelta(seconds=15), 1_000))
        await report(cp, 1, "SuspendedEV", iso(t0 + timedelta(seconds=20)))
        await report(cp, 1, "Finishing", iso(t0 + timedelta(seconds=60)))
        await cp.call(call.StopTransaction(meter_stop=1_000, transaction_id=tx,
                                           timestamp=iso(t0 + timedelta(seconds=65))))
    session = await central.session(tx)
    assert session is not None and session.idle_seconds == 45
    assert session.cost_minor == 30 + 45  # 1 kWh at 0.30, 45 s idle at 0.60 a minute


@pytest.mark.parametrize("close", ["StopTransaction", "endSession"])
async def test_a_clock_behind_shown_by_live_readings_prices_and_bills_on_ours(
        central: Central, close: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A charger ten minutes behind ours, connected a moment ago: its start alone cannot
    be told from one flushed late, but its readings arriving as they are stamped (the same
    lag) can. It was priced by the tariff in force ten minutes ago (none yet: a new
    station's first session was free), and endSession billed the ten minutes too."""
    ctx = central.services.ctx
    # Update stamps on the service's clock too, as they are when it is the real one.
    monkeypatch.setattr("domain.services.base.utcnow", lambda: ctx.clock())
    behind = timedelta(minutes=10)
    with MovedClock(ctx) as clock:
        t0 = clock.t0
        await central.services.tariffs.set_tariff(
            SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.30"),
            price_per_minute=Decimal("0.60"), currency="EUR",
            valid_from=t0 - timedelta(seconds=5))
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await report(cp, 1, "Preparing", iso(t0 - behind))
            tx = (await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=iso(t0 - behind + timedelta(seconds=1))))).transaction_id
            clock.at(13)
            await cp.call(_register(tx, t0 - behind + timedelta(seconds=13), 1_000))
            estimate = await central.gql(ESTIMATE, as_user="admin")
            [cents] = [s["estimatedCost"]["amountMinor"]
                       for s in estimate["sessions"]["nodes"] if s["transactionId"] == tx]
            assert cents is not None and cents <= 30 + 60  # not ten minutes of time
            clock.at(20)
            if close == "StopTransaction":
                await cp.call(call.StopTransaction(
                    meter_stop=1_000, transaction_id=tx,
                    timestamp=iso(t0 - behind + timedelta(seconds=20))))
            else:
                record = await central.session(tx)
                assert record is not None
                ended = await central.gql(
                    """mutation($id: ID!) { endSession(input: {id: $id}) { errors { code } } }""",
                    {"id": to_global_id("session", record.id)}, as_user="op")
                assert ended["endSession"]["errors"] == []
    session = await central.session(tx)
    assert session is not None and session.start_clock_behind
    assert session.end_time is not None
    assert session.end_time - session.start_time <= timedelta(seconds=20) + BILLED_TIME_TOLERANCE
    # 1 kWh at 0.30 and at most a couple of minutes at 0.60: priced, and not 10 minutes.
    assert session.cost_minor is not None and 30 <= session.cost_minor <= 30 + 140


AVAILABILITY = """query($from: DateTime!, $to: DateTime!) {
    availability(from: $from, to: $to, groupBy: CONNECTOR) {
      cpId connectorId windowSeconds availableSeconds reportedSeconds unknownSeconds } }"""


async def availability(central: Central, since: datetime, until: datetime | None = None
                       ) -> dict[int, dict[str, float]]:
    """CP-1's availability per connector from ``since`` to ``until`` (by default to now:
    a window ending in the future is counted up to now)."""
    window = {"from": iso(since),
              "to": iso(until or datetime.now(UTC) + timedelta(days=1))}
    data = await central.gql(AVAILABILITY, window, as_user="admin")
    return {r["connectorId"]: r for r in data["availability"] if r["cpId"] == "CP-1"}


async def _flush_old_reports_then_the_current_one(cp: SimulatedChargePoint,
                                                  t: datetime, ago: timedelta) -> None:
    """Connector 1's status history queued ``ago`` before ``t`` (Available, an hour
    Faulted, Available again), flushed, then its state now: the same, stamped ``t``."""
    await report(cp, 1, "Available", iso(t - ago))
    await cp.call(call.StatusNotification(connector_id=1, error_code="GroundFailure",
                                          status="Faulted",
                                          timestamp=iso(t - ago + timedelta(hours=1))))
    await report(cp, 1, "Available", iso(t - ago + timedelta(hours=2)))
    await report(cp, 1, "Available", iso(t))


def assert_known_throughout(rows: dict[int, dict[str, float]], faulted: float) -> None:
    """Every connector's state known over the whole window (up to now, but for the
    moment the charger's current report took to arrive), connector 1 usable but for its
    ``faulted`` seconds."""
    for row in rows.values():
        assert row["unknownSeconds"] == pytest.approx(0, abs=2)
        assert row["reportedSeconds"] == pytest.approx(row["windowSeconds"], abs=2)
    assert rows[1]["availableSeconds"] == pytest.approx(
        rows[1]["windowSeconds"] - faulted, abs=2)


async def test_a_queue_flushed_on_reconnecting_leaves_the_outage_offline(
        central: Central) -> None:
    """A charger whose clock this process knows (right, from its connection before) is
    away 8 h, reconnects, flushes what it queued, then reports its current state (the
    same). Taken for its clock, the flush put it hours behind, and availability read the
    time since the queue unknown (QA CP-Q1, review of 7d4e1f2). Then the queued first
    timestamp (``ChargerClocks.queued``) moved the connection's online intervals back
    to it, over the outage, observed there: connector 2, which no queued report names,
    read 28199 s of the 8 h away available (review of e4bd937). Queued reports move
    nothing: the outage stays offline as the disconnect recorded it, their changes take
    effect at the connection's opening, and the state reported now counts from now."""
    with MovedClock(central.services.ctx) as clock:
        t0 = clock.t0
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Available", iso(t0))
            await report(cp, 2, "Available", iso(t0))
        await offline_recorded(central)
        later = timedelta(hours=8)
        clock.by(later)
        t = t0 + later
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            queued = later - timedelta(minutes=10)
            await _flush_old_reports_then_the_current_one(cp, t, queued)
            await report(cp, 2, "Available", iso(t))
            assert (await statuses(central))[1] == "AVAILABLE"
            clock.by(later + timedelta(seconds=5))  # 5 s after the current report
            # The outage, from a minute after it began to a second before the reconnect:
            # known (offline), and not a second of it available.
            away = await availability(central, t0 + timedelta(minutes=1),
                                      t - timedelta(seconds=1))
            for row in away.values():
                assert row["availableSeconds"] == 0, row
                assert row["unknownSeconds"] == pytest.approx(0, abs=2), row
            assert_known_throughout(await availability(central, t), faulted=0)
            # The queue did not set its clock back: ours is still its now.
            assert abs(central.services.charging.clocks.charger_now("CP-1")
                       - (t + timedelta(seconds=5))) < timedelta(seconds=2)
    # Its history keeps the queued reports as stamped.
    events = await central.store.find_all(d.StatusEvent, Eq("cp_id", "CP-1"))
    assert [e.at for e in events if e.status is d.ConnectorStatus.FAULTED] == [
        t - queued + timedelta(hours=1)]


async def test_a_session_queued_through_an_outage_bills_no_idle_time_while_offline(
        central: Central) -> None:
    """A charger whose clock this process knows goes away for two hours, charges a car
    meanwhile and flushes the session on reconnecting: 40 minutes of it the car sat
    there (SuspendedEV, then Finishing). Idle time is time idle while the station was
    online (``intervals.idle_within``): the queued first timestamp moved the
    connection's online intervals back over the outage, and the 40 offline minutes
    were billed at the idle price (review of e4bd937)."""
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.30"),
        idle_price_per_minute=Decimal("0.60"), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=1))
    with MovedClock(central.services.ctx) as clock:
        t0 = clock.t0
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await report(cp, 1, "Available", iso(t0))
            clock.at(2)
        await offline_recorded(central)
        clock.at(2 * 3600)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            started = await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=iso(t0 + timedelta(minutes=10))))
            tx = started.transaction_id
            await report(cp, 1, "Charging", iso(t0 + timedelta(minutes=10)))
            await report(cp, 1, "SuspendedEV", iso(t0 + timedelta(minutes=30)))
            await report(cp, 1, "Finishing", iso(t0 + timedelta(minutes=60)))
            await cp.call(call.StopTransaction(meter_stop=1_000, transaction_id=tx,
                                               timestamp=iso(t0 + timedelta(minutes=70))))
    session = await central.session(tx)
    assert session is not None and session.end_time == t0 + timedelta(minutes=70)
    assert session.idle_seconds == 0
    assert session.cost_minor == 30  # 1 kWh at 0.30, no idle fee


async def test_a_clock_set_back_while_another_process_knew_it_counts_from_its_reconnect(
        tmp_path: Path) -> None:
    """A process placed a charger's history on its clock, 90 minutes behind ours; ours
    restarts, and meanwhile the charger's clock is set back 110 minutes more. It
    reconnects and reports both connectors Available (200 minutes behind): the
    connection's intervals move back only as far as the interval before (placed by the
    old clock, 110 minutes after the first timestamp), and were observed when the
    charger's clock would read that, 110 minutes in our future: a minute later they
    counted 0.001 s, the state it reports now read unknown (review of e4bd937). So did
    the offline interval its disconnect opened there. No ``observed_at`` is after our
    now."""
    t = datetime.now(UTC).replace(microsecond=0)
    central = await start_central(tmp_path / "restarted.db")
    await seed(central)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await report(cp, 1, "Available", iso(t - timedelta(minutes=90)))
        await report(cp, 2, "Available", iso(t - timedelta(minutes=90)))
    await offline_recorded(central)
    await stop_central(central)
    users = central.users
    central = await start_central(tmp_path / "restarted.db")
    central.users = users  # the same database
    try:
        with MovedClock(central.services.ctx) as clock:
            async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
                await report(cp, 1, "Available", iso(t - timedelta(minutes=200)))
                await report(cp, 2, "Available", iso(t - timedelta(minutes=200)))
                clock.by(timedelta(seconds=60))
                since = t - timedelta(minutes=91)
                for row in (await availability(central, since)).values():
                    assert row["availableSeconds"] >= 55, row  # the minute since
            await offline_recorded(central)
            clock.by(timedelta(seconds=120))
            # Offline for the minute since its disconnect: known, not available. (The
            # minute online before it ends where it began, on the old clock: a timeline
            # cannot run back.)
            for row in (await availability(central, since)).values():
                assert row["reportedSeconds"] - row["availableSeconds"] >= 55, row
            ours = central.services.ctx.clock()
            for connector_id in (1, 2):
                assert all(i.observed_at is None or i.observed_at <= ours
                           for i in await intervals(central, connector_id))
    finally:
        await stop_central(central)


async def test_a_clock_behind_set_right_at_a_reboot_adds_nothing_to_open_intervals(
        central: Central) -> None:
    """A charger really 3 h behind ours reports Available, and 10 minutes later reboots
    with its clock set right (NTP); its current reports repeat the state. Its open
    intervals were observed again by the new clock (7d4e1f2's correction), 3 h earlier
    than the truth: 11459 s available for a station created 11 minutes before (review
    of 7d4e1f2; QA s20's finding again). A clock moving forward corrects nothing after
    the fact."""
    behind = timedelta(hours=3)
    with MovedClock(central.services.ctx) as clock:
        t0 = clock.t0
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Available", iso(t0 - behind))
            await report(cp, 2, "Available", iso(t0 - behind))
            clock.at(600)
        await offline_recorded(central)
        clock.at(601)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()  # its clock is set right from here on
            await report(cp, 1, "Available", iso(t0 + timedelta(seconds=601)))
            await report(cp, 2, "Available", iso(t0 + timedelta(seconds=601)))
            clock.at(660)
            rows = await availability(central, t0 - timedelta(hours=4))
    # Connected for at most the 11 minutes since t0 (the station was created just
    # before): nothing can be available for longer.
    for row in rows.values():
        assert row["availableSeconds"] <= 660 + 60, row


async def test_a_queue_flushed_first_to_this_process_counts_no_more_than_it_showed(
        central: Central) -> None:
    """Known limit: a charger this process never heard from flushes a queue, eight days
    old, then reports its current state (the same as its last queued one). Its clock is
    taken from the queue, and the current report, no change, sets nothing right: the
    time since the queue reads unknown (QA CP-Q1). A clock 8 days behind ours would
    send the same, and counting the days since (7d4e1f2) showed days available for a
    station created a minute before (QA s20): what is counted stays within the time
    this process has seen. A restart of ours before the flush is the same case."""
    t = datetime.now(UTC)
    ago = timedelta(days=8, hours=3)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await _flush_old_reports_then_the_current_one(cp, t, ago)
        assert (await statuses(central))[1] == "AVAILABLE"
        rows = await availability(central, t - ago)
    # Connector 1: the hour between its queued reports (placed by their stamps), and no
    # more than our clock saw since; connector 2, not reported, only the latter.
    seen = (datetime.now(UTC) - t).total_seconds() + 60
    assert rows[1]["availableSeconds"] <= 3600 + seen, rows[1]
    assert rows[2]["availableSeconds"] <= seen, rows[2]


async def test_a_charger_whose_clock_was_never_set_charges_today(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """QA s26: a charger with its clock unset (1970) starts, meters and stops a session.
    It was dated 1970: the session list put it last, its 5 kWh and its count went into
    1970's energy trend while its 2.00 EUR was in today's revenue (today read 0 kWh
    earning 2.00). Its stamps are no time: the session, its readings and its stop are
    dated on their arrival, its start flagged (``start_clock_behind``), and a resend
    of the start still finds it (``reported_start``)."""
    epoch = "1970-01-01T00:00:05Z"
    begun = datetime.now(UTC)
    start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=1000,
                                  timestamp=epoch)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.StatusNotification(connector_id=1, status="Preparing",
                                              error_code="NoError",
                                              timestamp="1970-01-01T00:00:00Z"))
        tx = (await cp.call(start)).transaction_id
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
            "timestamp": "1970-01-01T00:00:08Z", "sampledValue": [{
                "value": "3000", "measurand": "Energy.Active.Import.Register",
                "unit": "Wh"}]}]))
        assert (await cp.call(start)).transaction_id == tx  # its answer lost: resent
        await cp.call(call.StopTransaction(meter_stop=6000, transaction_id=tx,
                                           timestamp="1970-01-01T00:00:10Z"))
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert session.start_time >= begun and session.end_time is not None \
        and session.end_time >= session.start_time
    assert session.start_clock_behind and session.reported_start == datetime(
        1970, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert session.energy_wh == 5000 and session.cost_minor == 200
    samples = await central.store.find_all(d.MeterSample, Eq("transaction_id", tx))
    assert samples and min(s.at for s in samples) >= begun
    assert await central.store.count(d.Session, Eq("cp_id", "CP-1")) == 1
    day = begun.replace(hour=0, minute=0, second=0, microsecond=0)
    data = await central.gql(
        """query($f: DateTime!, $t: DateTime!) {
             energyTrend(filter: {from: $f, to: $t}, bucket: DAY) {
               energyKwh sessions revenue } }""",
        {"f": day.isoformat(), "t": (day + timedelta(days=1)).isoformat()}, as_user="op")
    assert data["energyTrend"] == [{"energyKwh": 5.0, "sessions": 1, "revenue": "2.00"}]
    assert "its clock is not set" in caplog.text


async def test_a_new_start_repeating_a_never_set_stamp_is_a_new_transaction(
        central: Central) -> None:
    """Review s26: a charger whose clock reads the epoch itself at every start starts a
    session that delivers nothing (0 Wh), stops it, and the driver taps again: same card,
    same meterStart, same 1970 stamp. Matched by that stamp in any state and at any age,
    the new start was told the closed session's id, no session opened and the 8 kWh that
    followed were billed nowhere. A resend is a copy of a start whose answer was lost:
    a session still open recorded moments ago, or one closed since whose meter moved (a
    new start reads the meter where the stop left it), is its first copy."""
    epoch = "1970-01-01T00:00:00Z"
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=1000,
                                      timestamp=epoch)
        first = (await cp.call(start)).transaction_id
        await cp.call(call.StopTransaction(meter_stop=1000, transaction_id=first,
                                           timestamp=epoch, reason="EVDisconnected"))
        old = await central.session(first)
        assert old is not None and old.state is d.SessionState.COMPLETED
        second = (await cp.call(start)).transaction_id
        await cp.call(call.StopTransaction(meter_stop=9000, transaction_id=second,
                                           timestamp=epoch))
    assert second != first
    sessions = await central.store.find_all(d.Session, Eq("cp_id", "CP-1"))
    assert sum(s.energy_wh or 0 for s in sessions) == 8000, [
        (s.transaction_id, s.state, s.energy_wh) for s in sessions]


async def test_a_resend_of_a_never_set_start_recorded_before_migration_65_is_matched(
        central: Central) -> None:
    """Review s26: a session opened before migration 65 by a 1970-stamped start kept that
    stamp as its ``start_time``, ``reported_start`` null. Its charger, the answer lost
    across the upgrade, resends the start: it was looked up by ``reported_start`` only,
    and a second session opened (the first closed as lost). Such a row is matched by its
    ``start_time``."""
    epoch = "1970-01-01T00:00:05Z"
    start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=1000,
                                  timestamp=epoch)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        first = (await cp.call(start)).transaction_id
    session = await central.session(first)
    assert session is not None
    # As the code before migration 65 wrote it: start_time the charger's stamp.
    await central.store.write([patch(session, SYSTEM, reported_start=None,
                                     start_time=datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC))],
                              [])
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        again = (await cp.call(start)).transaction_id
    assert again == first
    assert await central.store.count(d.Session, Eq("cp_id", "CP-1")) == 1
