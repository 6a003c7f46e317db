"""An outage as its disconnect recorded it, whatever the charger's clock and whichever
instance it reconnects to (review s23): queued reports split the offline stretch (a
fault keeps its hour as offline time), a reconnect moves nothing back over it (no idle
fee, no availability for offline time, not even with a clock reset to 1970). Real
central systems on real SQLite files, a real ``ocpp`` charge point."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ocpp.v16 import call

from domain.policy import SYSTEM
from ocpp_bridge.simulator import connected
from tests.helpers import MovedClock
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_charger_clock import offline_recorded

AVAILABILITY = """query($from: DateTime!, $to: DateTime!) {
    availability(from: $from, to: $to, groupBy: CONNECTOR) {
      cpId connectorId windowSeconds availableSeconds reportedSeconds unknownSeconds } }"""


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def report(cp, connector_id: int, status: str, at: datetime,
                 error_code: str = "NoError") -> None:
    await cp.call(call.StatusNotification(connector_id=connector_id, error_code=error_code,
                                          status=status, timestamp=iso(at)))


async def availability(central: Central, since: datetime, until: datetime
                       ) -> dict[int, dict[str, float]]:
    data = await central.gql(AVAILABILITY, {"from": iso(since), "to": iso(until)},
                             as_user="admin")
    return {r["connectorId"]: r for r in data["availability"] if r["cpId"] == "CP-1"}


async def test_a_queue_flushed_to_another_instance_leaves_the_outage_offline(
        tmp_path: Path) -> None:
    """Several instances share one store. The charger (clock right) is connected to
    instance A, leaves for 8 h, and reconnects through the load balancer to instance B,
    which never held it: B does not know its clock, so ``ChargerClocks.queued`` is
    false and the queue's first timestamp (7 h 50 min ago) is the connection's first
    (``observe``); ``rebase_intervals`` moves the connection's online intervals back
    to it over the disconnect's offline interval: the outage reads available again
    (the f7ea856 finding 1, still there whenever the reconnect lands elsewhere, or
    after a restart)."""
    path = tmp_path / "shared.db"
    a = await start_central(path)
    await seed(a)
    b = await start_central(path, ahead=timedelta(hours=8))
    b.users = a.users
    try:
        t0 = datetime.now(UTC).replace(microsecond=0)
        async with connected(a.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Available", t0)
            await report(cp, 2, "Available", t0)
        await offline_recorded(a)
        t = t0 + timedelta(hours=8)
        async with connected(b.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            ago = timedelta(hours=7, minutes=50)
            await report(cp, 1, "Available", t - ago)
            await report(cp, 1, "Faulted", t - ago + timedelta(hours=1), "GroundFailure")
            await report(cp, 1, "Available", t - ago + timedelta(hours=2))
            await report(cp, 1, "Available", t)
            await report(cp, 2, "Available", t)
            away = await availability(b, t0 + timedelta(minutes=1), t - timedelta(seconds=1))
    finally:
        await stop_central(b)
        await stop_central(a)
    assert away[2]["availableSeconds"] <= 60, away[2]
    assert away[1]["availableSeconds"] <= 3600 + 60, away[1]
    # As on the instance that knew the clock (f7ea856's own test): the outage is known
    # offline, not unknown. Here 8 h of a known disconnect read unknown.
    for row in away.values():
        assert row["unknownSeconds"] <= 60, row


async def test_a_session_queued_through_an_outage_to_another_instance_bills_no_idle_time(
        tmp_path: Path) -> None:
    """f7ea856's test_a_session_queued_through_an_outage_bills_no_idle_time_while_offline,
    with the reconnect landing on instance B (several instances behind a load balancer;
    or a restart). B does not know the clock: the queued StartTransaction is the
    connection's first timestamp, ``rebase_intervals`` moves its online intervals back to
    it, over the outage, and the queued SuspendedEV/Finishing reports fall inside online
    intervals: the car's 40 offline minutes are billed at the idle price."""
    path = tmp_path / "shared.db"
    a = await start_central(path)
    await seed(a)
    await a.services.tariffs.set_tariff(
        SYSTEM, station_id=a.stations["CP-1"].id, price_per_kwh=Decimal("0.30"),
        idle_price_per_minute=Decimal("0.60"), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=1))
    b = await start_central(path, ahead=timedelta(hours=2))
    b.users = a.users
    try:
        t0 = datetime.now(UTC).replace(microsecond=0)
        async with connected(a.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Available", t0)
        await offline_recorded(a)
        async with connected(b.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            started = await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=iso(t0 + timedelta(minutes=10))))
            tx = started.transaction_id
            await report(cp, 1, "Charging", t0 + timedelta(minutes=10))
            await report(cp, 1, "SuspendedEV", t0 + timedelta(minutes=30))
            await report(cp, 1, "Finishing", t0 + timedelta(minutes=60))
            await cp.call(call.StopTransaction(meter_stop=1_000, transaction_id=tx,
                                               timestamp=iso(t0 + timedelta(minutes=70))))
        session = await b.session(tx)
    finally:
        await stop_central(b)
        await stop_central(a)
    assert session is not None and session.end_time == t0 + timedelta(minutes=70)
    assert session.idle_seconds == 0
    assert session.cost_minor == 30  # 1 kWh at 0.30, no idle fee


async def test_a_clock_reset_during_an_outage_leaves_the_outage_offline(
        central: Central) -> None:
    """The charger's clock is known (right). It loses power for 8 h, its clock resets
    (1970, as a charger without a backed-up RTC does), it reconnects and reports both
    connectors Available stamped 1970. A 1970 stamp is not "queued" (more than
    ``MAX_QUEUED_BEFORE_RECORD`` before), so ``observe`` says it is the connection's
    first and ``rebase_intervals`` moves the connection's online intervals back
    towards 1970: ``_move_start`` stops at the interval before (the disconnect's
    offline one) and takes it over, observed when it began: the whole outage reads
    online and available."""
    with MovedClock(central.services.ctx) as clock:
        t0 = clock.t0
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Available", t0)
            await report(cp, 2, "Available", t0)
        await offline_recorded(central)
        later = timedelta(hours=8)
        clock.by(later)
        t = t0 + later
        reset = datetime(1970, 1, 1, 0, 5, tzinfo=UTC)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Available", reset)
            await report(cp, 2, "Available", reset)
            clock.by(later + timedelta(seconds=5))
            away = await availability(central, t0 + timedelta(minutes=1),
                                      t - timedelta(seconds=1))
    for row in away.values():
        assert row["availableSeconds"] <= 60, row


FAULTS = """query($from: DateTime!, $to: DateTime!) {
    faultReports(from: $from, to: $to) { groups {
      cpId connectorId errorCode count totalDurationSeconds offlineSeconds open } } }"""


async def test_a_fault_the_charger_queued_through_an_outage_keeps_its_hour(
        central: Central) -> None:
    """Same process, clock right and known (the case f7ea856 fixed). The charger is away
    8 h; its queue says connector 1 was Faulted (GroundFailure) for one hour in the
    middle, then Available; it reports Available now. Fault reports count a fault's
    time from the state intervals, offline too ("a fault stays open, and its time
    counts, while its station is offline"; ``offlineSeconds``). Since f7ea856 queued
    reports take effect at the connection's opening: the Faulted interval is
    zero-length there and the fault's hour is gone (count 1, 0 s). e4bd937 and
    7d4e1f2 kept it (3600 s, though online)."""
    with MovedClock(central.services.ctx) as clock:
        t0 = clock.t0
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Available", t0)
            await report(cp, 2, "Available", t0)
        await offline_recorded(central)
        later = timedelta(hours=8)
        clock.by(later)
        t = t0 + later
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await report(cp, 1, "Faulted", t - timedelta(hours=6, minutes=50),
                         "GroundFailure")
            await report(cp, 1, "Available", t - timedelta(hours=5, minutes=50))
            await report(cp, 1, "Available", t)
            await report(cp, 2, "Available", t)
            clock.by(later + timedelta(seconds=5))
            data = await central.gql(FAULTS, {"from": iso(t0), "to": iso(t + timedelta(
                minutes=1))}, as_user="admin")
    groups = [g for g in data["faultReports"]["groups"] if g["errorCode"] == "GROUND_FAILURE"]
    assert len(groups) == 1 and groups[0]["count"] == 1
    assert abs(groups[0]["totalDurationSeconds"] - 3600) <= 60, groups[0]
