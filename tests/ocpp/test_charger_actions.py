"""Every charger-initiated action through a real websocket, with the ``ocpp`` package's
client as the charge point, and what each does to the domain."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ocpp.routing import on
from ocpp.v16 import call
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import ALL, Eq, all_of
from ocpp_bridge.simulator import Plug, SimulatedChargePoint, SimulatorConfig, connected, now
from tests.helpers import MovedClock
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


async def test_boot_and_heartbeat(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        boot = await cp.boot()
        assert boot.status == "Accepted" and boot.interval == 60
        assert RFC3339.match(boot.current_time)
        beat = await cp.heartbeat()
        assert RFC3339.match(beat.current_time) and beat.current_time.endswith("Z")
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    assert (station.vendor, station.model, station.firmware) == ("ChargeGraph", "SimCharger 2",
                                                                 "1.4.2")
    assert station.serial == "SIM-CP-1" and station.last_seen is not None
    audit = await central.store.find_all(d.AuditEntry, Eq("entity_id", station.id))
    assert any(a.actor == "ocpp:CP-1" and a.after and a.after["vendor"] == "ChargeGraph"
               for a in audit)


async def test_any_message_keeps_last_seen_within_a_minute(central: Central) -> None:
    """A charger sending status and meter values but no Heartbeat (OCPP-J lets it) looked
    silent for as long as it charged: lastSeen moved on connect, boot and heartbeat
    only. Now any message moves it, written at most once a minute."""
    with MovedClock(central.services.ctx) as clock:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()

            async def last_seen() -> datetime:
                await asyncio.sleep(0.05)  # the group commit
                station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
                assert station is not None and station.last_seen is not None
                return station.last_seen

            booted = await last_seen()
            clock.by(timedelta(seconds=30))
            await cp.status(1, "Available")
            assert await last_seen() == booted  # within the minute: nothing written
            clock.by(timedelta(minutes=2))
            await cp.status(1, "Preparing")
            moved = await last_seen()
            assert moved - booted >= timedelta(minutes=2)


async def test_online_offline_and_connection_history(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None and station.online
    # The disconnect is processed by the server after the socket closes.
    for _ in range(50):
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        if station is not None and not station.online:
            break
        import asyncio
        await asyncio.sleep(0.02)
    assert station is not None and not station.online
    events = await central.store.find_all(d.ConnectionEvent, Eq("cp_id", "CP-1"))
    assert [e.online for e in sorted(events, key=lambda e: e.at)] == [True, False]


async def test_status_notifications_and_faults(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        await cp.status(2, "Faulted", "GroundFailure", info="RCD tripped")
        await cp.status(0, "Available")  # the charge point as a whole
    connectors = {c.connector_id: c for c in await central.store.find_all(
        d.Connector, Eq("cp_id", "CP-1"))}
    assert connectors[1].status is d.ConnectorStatus.AVAILABLE
    assert connectors[2].status is d.ConnectorStatus.FAULTED
    assert connectors[2].error_code == "GroundFailure" and connectors[2].info == "RCD tripped"
    events = await central.store.find_all(d.StatusEvent, Eq("cp_id", "CP-1"))
    assert sorted((e.connector_id, e.status.value) for e in events) == [
        (0, "Available"), (1, "Available"), (2, "Faulted")]


async def test_a_late_frame_does_not_put_old_power_over_newer(central: Central) -> None:
    def frame(tx: int, at: datetime, kw: str) -> call.MeterValues:
        return call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
            "timestamp": at.isoformat(), "sampledValue": [
                {"value": kw, "measurand": "Power.Active.Import", "unit": "kW"}]}])

    now_ = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        await cp.call(frame(tx, now_ - timedelta(seconds=10), "7.4"))
        await cp.call(frame(tx, now_ - timedelta(seconds=60), "22"))  # flushed late
        late = await central.session(tx)
        await cp.call(frame(tx, now_ - timedelta(seconds=5), "11"))
        newer = await central.session(tx)
        # A clock glitch far in our future does not freeze power for good.
        await cp.call(frame(tx, now_ + timedelta(days=365), "3.7"))  # placed at arrival
        await cp.call(frame(tx, datetime.now(UTC) + timedelta(seconds=1), "6"))
        after_glitch = await central.session(tx)
    assert late is not None and late.power_w == 7_400
    assert newer is not None and newer.power_w == 11_000
    assert after_glitch is not None and after_glitch.power_w == 6_000


async def test_a_stop_stamped_far_ahead_bills_no_more_than_the_session_lasted(
        central: Central) -> None:
    """A clock glitch at the stop (2150) would bill a per-minute price for decades: the
    session ends at "now" on its own timeline instead. A tariff corrected with the same
    validFrom prices with the correction (the version set last)."""
    from decimal import Decimal

    from domain.clock import utcnow

    since = utcnow() - timedelta(hours=1)
    company = central.users["op"].company_id
    for per_minute in ("9.99", "0.10"):  # a typo, then its correction from the same time
        await central.services.tariffs.set_tariff(
            SYSTEM, company_id=company, price_per_kwh=Decimal("0.30"), currency="EUR",
            price_per_minute=Decimal(per_minute), valid_from=since)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        started = int(cp.connectors[1].meter_wh)
        await cp.call(call.StopTransaction(meter_stop=started + 10_000, transaction_id=tx,
                                           timestamp="2150-01-01T00:00:00Z"))
    done = await central.session(tx)
    assert done is not None and done.end_time is not None
    assert done.end_time - done.start_time < timedelta(minutes=1)
    assert done.cost_minor is not None and done.cost_minor <= 300 + 10  # 10 kWh, < 1 min


async def test_charger_times_are_kept_to_the_millisecond(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        answer = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp="2026-12-04T10:00:00.000700Z"))
    session = await central.session(answer.transaction_id)
    assert session is not None
    assert session.start_time == datetime(2026, 12, 4, 10, tzinfo=UTC)


async def test_a_whole_point_outage_is_in_every_connectors_history(central: Central
                                                                      ) -> None:
    """Faulted on connector 0: none of the connectors can charge, so their state history
    (availability, fault time) says so until the point is back, whatever they report."""
    async def open_states() -> dict[int, tuple[str, str]]:
        found = await central.store.find_all(d.ConnectorInterval, all_of(
            Eq("cp_id", "CP-1"), Eq("end", None)))
        return {i.connector_id: (i.status.value, i.error_code) for i in found}

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        assert await open_states() == {1: ("Available", "NoError"),
                                       2: ("Available", "NoError")}
        await cp.status(0, "Faulted", "PowerSwitchFailure")
        assert await open_states() == {1: ("Faulted", "PowerSwitchFailure"),
                                       2: ("Faulted", "PowerSwitchFailure")}
        await cp.status(2, "Available")  # a connector's own report changes nothing yet
        assert (await open_states())[2] == ("Faulted", "PowerSwitchFailure")
        await cp.status(0, "Available")
        assert await open_states() == {1: ("Available", "NoError"),
                                       2: ("Available", "NoError")}


async def test_the_charge_points_own_status_is_its_stations(tmp_path: Path) -> None:
    """Connector 0 is the charge point as a whole: its status and error are the
    station's, announced like a connector's (with no connector record), and a state it
    repeats is announced once, and its fault reported once, as a connector's are; an
    older report arriving late does not move it back."""
    from domain.events import ConnectorStatusChanged, FaultReported
    from pubsub.memory import MemoryEventBus

    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    events = bus.subscribe(["connector_status", "fault"])
    earlier = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            for _ in range(3):
                await cp.status(0, "Faulted", "PowerSwitchFailure", info="main contactor")
            await cp.call(call.StatusNotification(connector_id=0, error_code="NoError",
                                                  status="Available", timestamp=earlier))
        [station] = await central.store.get_many(d.Station, [central.stations["CP-1"].id])
        assert station is not None and station.status is d.ConnectorStatus.FAULTED
        assert station.error_code == "PowerSwitchFailure" and station.status_at is not None
        got = []
        for _ in range(2):
            got.append(await asyncio.wait_for(anext(events), 5))
        statuses = [e for e in got if isinstance(e, ConnectorStatusChanged)]
        faults = [e for e in got if isinstance(e, FaultReported)]
        assert [(e.connector_id, e.connector_record_id, e.status) for e in statuses] == [
            (0, None, "Faulted")]
        assert [(f.connector_id, f.error_code) for f in faults] == [
            (0, "PowerSwitchFailure")]
        shown = await central.gql("""{ stations(first: 5, filter: {search: "CP-1"}) {
            nodes { cpId status errorCode statusAt } } }""", as_user="driver")
        [node] = [n for n in shown["stations"]["nodes"] if n["cpId"] == "CP-1"]
        assert (node["status"], node["errorCode"]) == ("FAULTED", "POWER_SWITCH_FAILURE")
    finally:
        await events.aclose()
        await stop_central(central)
        await bus.close()


async def test_charger_text_is_stored_without_control_characters(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.StatusNotification(
            connector_id=1, error_code="OtherError", status="Faulted",
            info="\x1b[2J\x00evil", vendor_error_code="E\x0742", timestamp=now()))
    events = await central.store.find_all(d.StatusEvent, Eq("cp_id", "CP-1"))
    assert [e.info for e in events] == ["[2Jevil"]
    assert [e.vendor_error_code for e in events] == ["E42"]  # kept, cleaned like info
    [connector] = [c for c in await central.store.find_all(d.Connector, ALL)
                   if c.connector_id == 1 and c.cp_id == "CP-1"]
    assert connector.info == "[2Jevil"
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        started = await cp.call(call.StartTransaction(
            connector_id=2, id_tag="\u202etag-ok\x07", meter_start=0, timestamp=now()))
        # Not TAG-OK's: a tag is authorized as presented, and only stored cleaned.
        assert started.id_tag_info["status"] == "Invalid"
    session = await central.session(started.transaction_id)
    assert session is not None and session.user_id is None
    assert session.id_tag == "\ufffdTAG-OK\ufffd"  # not to be read as TAG-OK's


async def test_late_status_does_not_regress_state(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Charging", timestamp=now()))
        old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Available", timestamp=old))
    connector = await central.store.find_one(d.Connector, Eq("cp_id", "CP-1"))
    assert connector is not None and connector.status is d.ConnectorStatus.CHARGING
    assert len(await central.store.find_all(d.StatusEvent, Eq("cp_id", "CP-1"))) == 2


async def test_authorize_statuses(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert await cp.authorize("tag-ok") == "Accepted"  # idTags are case-insensitive
        assert await cp.authorize("NOPE") == "Invalid"
        assert await cp.authorize("TAG-BLOCKED") == "Blocked"
        await central.services.fleet.update_id_tag(
            SYSTEM, central.tags["other"].id,
            expires_at=datetime.now(UTC) - timedelta(days=1))
        assert await cp.authorize("TAG-OTHER") == "Expired"
        await cp.start_transaction(1, "TAG-OK")
        # ConcurrentTx is a StartTransaction's answer (1.6, 7.2), not an Authorize's.
        assert await cp.authorize("TAG-OK") == "Accepted"


async def test_full_session_with_meter_values_cost_and_payment(central: Central) -> None:
    # CP-1's plug 1 as seeded (a CCS2 plug): a DC charger reports the car's SoC too.
    plugs = SimulatorConfig(plugs=(Plug("DC", 150_000), Plug("AC", 22_000)))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         config=plugs) as cp:
        await cp.boot()
        cp.connectors[1].meter_wh = 10_000
        tx, status = await cp.start_transaction(1, "TAG-OK")
        assert status == "Accepted"
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.ACTIVE
        assert session.user_id == central.users["driver"].id
        assert session.vehicle_id == central.vehicles["car"].id
        cp.connectors[1].power_w = 11_000
        await cp.meter_values(1, seconds=3600)  # one hour at 11 kW
        live = await central.session(tx)
        assert live is not None and live.energy_wh == 11_000 and live.power_w == 11_000
        await cp.stop_transaction(1)
    done = await central.session(tx)
    assert done is not None and done.state is d.SessionState.COMPLETED
    assert done.meter_stop_wh == 21_000 and done.energy_wh == 11_000
    assert done.stop_reason == "Local" and done.cost_minor == 440  # 11 kWh * 0.40 EUR
    payment = await central.store.find_one(d.Payment, Eq("session_id", done.id))
    assert payment is not None and payment.amount_minor == 440
    assert payment.status is d.PaymentStatus.PENDING and payment.currency == "EUR"
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", done.id))
    assert {s.measurand for s in samples} == {"Energy.Active.Import.Register",
                                              "Power.Active.Import", "Current.Import",
                                              "Voltage", "SoC"}
    audit = await central.store.find_all(d.AuditEntry, Eq("entity_id", done.id))
    assert sorted(a.action.value for a in audit) == ["CREATE", "UPDATE"]


async def test_transaction_started_offline_arrives_late(central: Central) -> None:
    started = datetime.now(UTC) - timedelta(hours=3)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, status = await cp.start_transaction(1, "TAG-OK",
                                                timestamp=started.isoformat())
        assert status == "Accepted"
    session = await central.session(tx)
    assert session is not None
    assert abs((session.start_time - started).total_seconds()) < 0.001


async def test_repeated_start_returns_same_transaction(central: Central) -> None:
    stamp = now()
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        first = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG-OK",
                                                    meter_start=500, timestamp=stamp))
        again = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG-OK",
                                                    meter_start=500, timestamp=stamp))
        assert again.transaction_id == first.transaction_id
        assert again.id_tag_info["status"] == "Accepted"
    assert await central.store.count(d.Session, ALL) == 1


async def test_repeated_stop_and_meter_values_are_idempotent(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        started = int(cp.connectors[1].meter_wh)
        values = [{"timestamp": now(), "sampledValue": [{"value": str(started + 1234)}]}]
        for _ in range(2):
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                           meter_value=values))
        stop = call.StopTransaction(meter_stop=started + 5_000, timestamp=now(),
                                    transaction_id=tx, reason="EVDisconnected")
        await cp.call(stop)
        first = await central.session(tx)
        response = await cp.call(stop)
        assert response.id_tag_info is None
    again = await central.session(tx)
    assert first == again
    assert first is not None and first.energy_wh == 5_000
    # The reading, once, and the stop's Transaction.End sample with the rest.
    assert await central.store.count(d.MeterSample, ALL) == 2
    assert await central.store.count(d.Payment, ALL) == 1


async def test_signed_meter_data_is_never_read_as_a_number(central: Central) -> None:
    """SignedData carries a signed blob in ``value``: made only of digits, or parsable as a
    float, it is still no reading. The frame's plain readings count; the blobs do not."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        started = int(cp.connectors[1].meter_wh)
        signed = [{"value": blob, "format": "SignedData", "context": "Sample.Periodic"}
                  for blob in ("30450221009", "30450221E0987654", "3045.0221")]
        values = [{"timestamp": now(),
                   "sampledValue": [{"value": str(started + 1500)}, *signed]}]
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                       meter_value=values))
        live = await central.session(tx)
        assert live is not None and live.energy_wh == 1_500
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", live.id))
    assert [s.value for s in samples] == [started + 1500]


async def test_a_session_that_charged_nothing_leaves_nothing_to_settle(central: Central
                                                                       ) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        await cp.call(call.StopTransaction(meter_stop=int(cp.connectors[1].meter_wh),
                                           timestamp=now(), transaction_id=tx))
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert (session.energy_wh, session.cost_minor) == (0, 0)  # priced: 0 EUR
    assert await central.store.count(d.Payment, ALL) == 0


async def test_a_refused_start_is_billed_nothing(central: Central) -> None:
    """A start the charger was told Blocked, Invalid or ConcurrentTx and stopped
    (DeAuthorized) was billed its session fee, with a payment (for a card of no one,
    too). It is recorded as refused and priced by no tariff."""
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.40"),
        session_fee=Decimal("0.50"), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=1))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        accepted, _ = await cp.start_transaction(1, "TAG-OK")
        refused = []
        for connector_id, tag, told in ((2, "TAG-BLOCKED", "Blocked"), (2, "NOPE", "Invalid"),
                                        (2, "TAG-OK", "ConcurrentTx")):
            tx, status = await cp.start_transaction(connector_id, tag)
            assert status == told
            await cp.stop_transaction(connector_id, "DeAuthorized")
            refused.append((tx, told))
        await cp.stop_transaction(1)
    for tx, told in refused:
        session = await central.session(tx)
        assert session is not None and session.start_refused == told
        assert session.cost_minor is None and session.state is d.SessionState.COMPLETED
    billed = await central.session(accepted)
    assert billed is not None and billed.start_refused is None and billed.cost_minor == 50
    assert await central.store.count(d.Payment, ALL) == 1
    answer = await central.gql("""{ sessions(first: 10) { nodes { transactionId
        startRefused cost { amountMinor } tariff { id } costBreakdown { gross } } } }""",
                               as_user="admin")
    shown = {n["transactionId"]: n for n in answer["sessions"]["nodes"]}
    assert [shown[tx]["startRefused"] for tx, _ in refused] == [
        "BLOCKED", "INVALID", "CONCURRENT_TX"]
    assert all(shown[tx]["tariff"] is None and shown[tx]["costBreakdown"] is None
               for tx, _ in refused)
    assert shown[accepted]["startRefused"] is None and shown[accepted]["tariff"] is not None


async def test_a_resent_start_keeps_its_card_from_a_later_refused_one(
        central: Central) -> None:
    """QA (s26): a StartTransaction whose answer was lost, resent (as sent, or stamped
    anew) after the same card's start on the station's other connector was told
    ConcurrentTx (the driver tapped again there meanwhile), was told ConcurrentTx too,
    because of that refused later session: the charger stopped the transaction it was
    charging, recorded as refused and billed nothing. A resend is judged as its first
    copy was: only earlier transactions hold the card."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=40)

    def stamp(at: datetime) -> str:
        return at.isoformat().replace("+00:00", "Z")

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        async def started(connector_id: int, meter: int, at: datetime) -> tuple[int, str]:
            answer = await cp.call(call.StartTransaction(
                connector_id=connector_id, id_tag="TAG-OK", meter_start=meter,
                timestamp=stamp(at)))
            return answer.transaction_id, answer.id_tag_info["status"]

        first = await started(1, 5_000, start)
        assert (await started(2, 8_000, start + timedelta(seconds=10)))[1] == "ConcurrentTx"
        assert await started(1, 5_000, start) == first == (first[0], "Accepted")
        assert await started(1, 5_001, start + timedelta(seconds=30)) == first  # restamped
    charging = await central.session(first[0])
    assert charging is not None and charging.start_refused is None


async def test_a_start_refused_concurrent_tx_never_stopped_holds_no_card(
        central: Central) -> None:
    """Review r26: the card charging on connector 1 is tapped on connector 2, told
    ConcurrentTx (its session recorded refused, ACTIVE). The charger cuts the energy but
    never sends that StopTransaction (StopTransactionOnInvalidId false and the car left
    plugged, or the stop lost). Once connector 1 stops, the driver's next start was told
    ConcurrentTx, because of a session the CSMS itself had refused. A refused start holds
    no card. The charger's clock is 10 min behind ours and it boots on connecting: its
    stamps from then show its clock, so its live start is ConcurrentTx (review r32-d:
    its first stamp, from before the connection opened, made every start after it a
    replay, billed whatever it was told)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)

    def stamp(at: datetime) -> str:
        return at.isoformat().replace("+00:00", "Z")

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        async def started(connector_id: int, meter: int, at: datetime) -> tuple[int, str]:
            answer = await cp.call(call.StartTransaction(
                connector_id=connector_id, id_tag="TAG-OK", meter_start=meter,
                timestamp=stamp(at)))
            return answer.transaction_id, answer.id_tag_info["status"]

        await cp.boot()
        first, told = await started(1, 5_000, start)
        assert told == "Accepted"
        refused, told = await started(2, 8_000, start + timedelta(seconds=10))
        assert told == "ConcurrentTx"
        await cp.call(call.StopTransaction(meter_stop=6_000,
                                           timestamp=stamp(start + timedelta(seconds=50)),
                                           transaction_id=first))
        _, told = await started(1, 6_000, start + timedelta(seconds=60))
    held = await central.session(refused)
    assert held is not None and held.start_refused == "ConcurrentTx"
    assert held.state is d.SessionState.ACTIVE
    assert told == "Accepted", "a session refused ConcurrentTx held the card for good"


async def test_meter_values_of_unknown_transactions_are_kept(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.MeterValues(connector_id=2, transaction_id=987654, meter_value=[
            {"timestamp": now(), "sampledValue": [{"value": "42.5", "unit": "kWh"}]}]))
    samples = await central.store.find_all(d.MeterSample, ALL)
    assert len(samples) == 1
    assert samples[0].session_id is None and samples[0].transaction_id == 987654
    assert samples[0].value == 42.5 and samples[0].unit == "kWh"


async def test_stop_stamped_before_its_start_ends_when_our_clock_saw_it_end(
        central: Central) -> None:
    """A stop stamped before its start (the charger's clock reset mid-session) ends the
    session at "now" on its timeline: the start plus what our clock saw pass. It ended
    at its start, billing none of its time (QA s20: 70 s at 1.00/min billed 0)."""
    for started in (datetime(2026, 3, 1, 10, tzinfo=UTC),  # a clock behind ours
                    datetime.now(UTC)):  # a live start, then the clock reset to 1970
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            tx, _ = await cp.start_transaction(1, "TAG-OK", timestamp=started.isoformat())
            await asyncio.sleep(0.2)
            await cp.call(call.StopTransaction(
                meter_stop=2_000, timestamp="1970-01-01T00:00:00Z", transaction_id=tx))
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.COMPLETED
        assert session.end_time is not None
        lasted = session.end_time - session.start_time
        assert timedelta(seconds=0.2) <= lasted < timedelta(seconds=10), lasted


async def test_lost_stop_is_closed_by_next_start(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        first, _ = await cp.start_transaction(1, "TAG-OK")
        cp.connectors[1].transaction_id = None  # the charger lost it (power cut)
        second, _ = await cp.start_transaction(1, "TAG-OTHER")
    old = await central.session(first)
    assert old is not None and old.state is d.SessionState.COMPLETED
    assert old.stop_reason == "Other"
    new = await central.session(second)
    assert new is not None and new.state is d.SessionState.ACTIVE


async def test_data_transfer_diagnostics_and_firmware_status(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        answer = await cp.call(call.DataTransfer(vendor_id="Acme", message_id="x", data="y"))
        assert answer.status == "UnknownVendorId"
        await cp.call(call.DiagnosticsStatusNotification(status="Uploaded"))
        await cp.call(call.FirmwareStatusNotification(status="Installing"))
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    assert station.diagnostics_status == "Uploaded" and station.firmware_status == "Installing"


async def test_a_charger_on_another_clock_keeps_a_consistent_timeline(central: Central
                                                                      ) -> None:
    """A charger whose clock is months behind ours (or a test replaying history): its
    connector state intervals follow its own timestamps, and a disconnect lands after its
    last report on that timeline instead of months later."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Available",
                                              timestamp="2026-03-01T10:00:00Z"))
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Charging",
                                              timestamp="2026-03-01T11:00:00Z"))
    for _ in range(50):
        intervals = await central.store.find_all(d.ConnectorInterval,
                                                 Eq("connector_id", 1), limit=20)
        if any(not i.online for i in intervals):
            break
        import asyncio
        await asyncio.sleep(0.02)
    ordered = sorted(intervals, key=lambda i: (i.start, i.end is None))
    march = datetime(2026, 3, 1, tzinfo=UTC)
    assert all(i.start >= march and i.start < march + timedelta(days=1) for i in ordered)
    available = next(i for i in ordered if i.status is d.ConnectorStatus.AVAILABLE
                     and i.online and i.end is not None and i.end > i.start)
    assert available.end is not None
    assert (available.start.hour, available.end.hour) == (10, 11)
    offline = [i for i in ordered if not i.online]
    assert offline and offline[-1].end is None and offline[-1].start.hour == 11


async def test_an_operator_edit_reaches_a_connected_charger_at_once(central: Central) -> None:
    """The hot path caches stations; an edit through the services drops the entry, so
    the charger's next message sees it (not half a minute later)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert (await cp.boot()).status == "Accepted"  # the station is cached now
        station = central.stations["CP-1"]
        await central.services.stations.update_station(
            SYSTEM, station.id, registration=d.Registration.REJECTED)
        assert (await cp.boot()).status == "Rejected"


async def test_contact_moves_last_seen_not_the_stations_updated_at(central: Central) -> None:
    """QA s20: every heartbeat (and boot, and message a minute) stamped the station's
    ``updatedAt``, shown to the public map and drivers, who are not shown ``lastSeen``:
    it told them each charger's rhythm of contact, and sorted the map by it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.call(call.Heartbeat())
        first = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        await asyncio.sleep(0.01)
        await cp.call(call.Heartbeat())
        await cp.boot()
        later = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert first is not None and later is not None and first.last_seen is not None
    assert later.last_seen is not None and later.last_seen > first.last_seen
    assert (later.updated_at, later.updated_by) == (first.updated_at, first.updated_by)


FREE_NOW = """{
  stations(first: 10, filter: {availableNow: true}) { nodes { cpId } }
  free: connectors(first: 10, filter: {status: AVAILABLE, cpId: "CP-1"}) {
    nodes { connectorId } }
  all: connectors(first: 10, filter: {cpId: "CP-1"}) { nodes { connectorId status } }
}"""


async def test_a_plug_charging_without_saying_so_is_not_listed_free(central: Central) -> None:
    """A charger that reported Available, then started a transaction and sent meter
    values without reporting Preparing or Charging, was listed as free by
    ``availableNow`` and ``status: AVAILABLE`` (QA s20). Its ACTIVE session makes it
    occupied; ``Connector.status`` still reads what the charger last reported."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Available", timestamp=now()))
        answer = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=100, timestamp=now()))
        await cp.call(call.MeterValues(connector_id=1, transaction_id=answer.transaction_id,
                                       meter_value=[{"timestamp": now(),
                                                     "sampledValue": [{"value": "300"}]}]))
        listed = await central.gql(FREE_NOW, as_user="driver")
        assert listed["stations"]["nodes"] == []  # connector 2 never reported
        assert listed["free"]["nodes"] == []
        assert {"connectorId": 1, "status": "AVAILABLE"} in listed["all"]["nodes"]
        await cp.call(call.StopTransaction(transaction_id=answer.transaction_id,
                                           meter_stop=400, timestamp=now()))
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Available", timestamp=now()))
        listed = await central.gql(FREE_NOW, as_user="driver")
        assert listed["stations"]["nodes"] == [{"cpId": "CP-1"}]
        assert listed["free"]["nodes"] == [{"connectorId": 1}]


class ReservesWithoutSayingSo(SimulatedChargePoint):
    """Accepts a ReserveNow and holds the plug for its card, but reports no Reserved
    status for it (QA s23's charger: many report it late, some never)."""

    @on(Action.reserve_now)
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str,
                       reservation_id: int, parent_id_tag: str | None = None
                       ) -> result.ReserveNow:
        state = self.connectors[connector_id]
        state.reservation_id, state.reserved_for = reservation_id, (id_tag.upper(),)
        return result.ReserveNow(status="Accepted")  # type: ignore[arg-type]


RESERVE = """mutation($input: ReserveNowInput!) { reserveNow(input: $input) {
    status reservation { reservationId state } errors { code } } }"""
START = """mutation($input: RemoteStartTransactionInput!) { remoteStartTransaction(
    input: $input) { status errors { field code } } }"""
CANCEL = """mutation($input: CancelReservationInput!) { cancelReservation(input: $input) {
    status errors { code } } }"""


async def test_a_plug_reserved_for_another_card_is_not_listed_free(
        central: Central) -> None:
    """QA s23: with an ACTIVE reservation for another card on connector 1, which its
    charger still reported Available, ``availableNow`` and ``status: AVAILABLE`` listed
    it free, and a remote start there with another card was refused as reserved. The
    filters now agree with that refusal; cancelled, the plug is free again."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=ReservesWithoutSayingSo) as cp:
        for connector_id in (1, 2):
            await cp.call(call.StatusNotification(connector_id=connector_id,
                                                  error_code="NoError", status="Available",
                                                  timestamp=now()))
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        reserved = (await central.gql(RESERVE, {"input": {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OTHER", "expiryDate": expiry}},
            as_user="op"))["reserveNow"]
        assert reserved["reservation"]["state"] == "ACTIVE", reserved
        listed = await central.gql(FREE_NOW, as_user="driver")
        assert listed["free"]["nodes"] == [{"connectorId": 2}]
        assert listed["stations"]["nodes"] == [{"cpId": "CP-1"}]  # connector 2 is free
        assert {"connectorId": 1, "status": "AVAILABLE"} in listed["all"]["nodes"]
        refused = (await central.gql(START, {"input": {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK"}},
            as_user="op"))["remoteStartTransaction"]
        assert refused["errors"] == [{"field": "connectorId", "code": "IN_USE"}]

        cancelled = (await central.gql(CANCEL, {"input": {
            "cpId": "CP-1", "reservationId": reserved["reservation"]["reservationId"]}},
            as_user="op"))["cancelReservation"]
        assert cancelled == {"status": "ACCEPTED", "errors": []}
        listed = await central.gql(FREE_NOW, as_user="driver")
        assert listed["free"]["nodes"] == [{"connectorId": 1}, {"connectorId": 2}]
