"""A charger that meters by ``Energy.Active.Import.Interval`` alone, and one whose clock
was never set sending its stop's ``transactionData``, through a real websocket with the
``ocpp`` package's client as the charge point (QA s32)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ocpp.v16 import call

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central

LIVE = """{ sessions(first: 5) { nodes {
  transactionId energyKwh powerKw meterAnomaly estimatedCost { amountMinor } } } }"""
TREND = """query($f: DateTime!, $t: DateTime!) {
  energyTrend(filter: {from: $f, to: $t, cpIds: ["CP-1"]}, bucket: HOUR) {
    energyKwh } }"""


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def shown(central: Central, tx: int) -> dict[str, object]:
    nodes = (await central.gql(LIVE, as_user="op"))["sessions"]["nodes"]
    [node] = [n for n in nodes if n["transactionId"] == tx]
    return node


async def test_a_charger_metering_by_interval_shows_energy_live_and_by_the_hour(
        central: Central) -> None:
    """2 h at 10 kW in eight 2.5 kWh periodic intervals showed 0 kWh and no estimate
    until the stop, and the trend had all 20 kWh in the stop's hour."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) \
        - timedelta(hours=3)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp=iso(start)))).transaction_id
        for quarter in range(1, 9):
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
                "timestamp": iso(start + timedelta(minutes=15 * quarter)),
                "sampledValue": [
                    {"value": "2500", "measurand": "Energy.Active.Import.Interval",
                     "unit": "Wh", "context": "Sample.Periodic"},
                    {"value": "10", "measurand": "Power.Active.Import", "unit": "kW"}]}]))
        live = await shown(central, tx)
        assert (live["energyKwh"], live["powerKw"]) == (20.0, 10.0)
        assert live["estimatedCost"] == {"amountMinor": 800}  # 20 kWh at 0.40
        await cp.call(call.StopTransaction(meter_stop=20_000, transaction_id=tx,
                                           timestamp=iso(start + timedelta(hours=2))))
    billed = await central.session(tx)
    assert billed is not None and (billed.energy_wh, billed.cost_minor) == (20_000, 800)
    trend = await central.gql(TREND, {"f": iso(start),
                                      "t": iso(start + timedelta(hours=3))}, as_user="op")
    assert [b["energyKwh"] for b in trend["energyTrend"]] == [10.0, 10.0, 0.0]


async def test_a_clock_never_set_stop_with_transaction_data_raises_no_reset(
        central: Central) -> None:
    """Its Transaction.Begin reading (0 Wh, 1970) was dated at the stop's arrival, after
    the live 3000 Wh: the chart read 3000 → 0 → 4000 and the session was flagged RESET."""
    epoch = datetime(1970, 1, 1, 0, 5, tzinfo=UTC)
    register = "Energy.Active.Import.Register"
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp=iso(epoch)))).transaction_id
        for minute in (1, 2, 3):
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
                "timestamp": iso(epoch + timedelta(minutes=minute)), "sampledValue": [
                    {"value": str(1000 * minute), "measurand": register, "unit": "Wh"}]}]))
        await cp.call(call.StopTransaction(
            meter_stop=4000, transaction_id=tx, timestamp=iso(epoch + timedelta(minutes=5)),
            transaction_data=[
                {"timestamp": iso(epoch), "sampledValue": [
                    {"value": "0", "measurand": register, "unit": "Wh",
                     "context": "Transaction.Begin"}]},
                {"timestamp": iso(epoch + timedelta(minutes=5)), "sampledValue": [
                    {"value": "4000", "measurand": register, "unit": "Wh",
                     "context": "Transaction.End"}]}]))
    billed = await shown(central, tx)
    assert (billed["energyKwh"], billed["meterAnomaly"]) == (4.0, None)
    samples = await central.store.find_all(d.MeterSample, Eq("transaction_id", tx))
    by_time = [s.value for s in sorted(samples, key=lambda s: (s.at, s.value))]
    assert by_time == sorted(by_time)


async def test_an_interval_after_a_register_in_frames_of_their_own_counts_once(
        central: Central) -> None:
    """Review r32-a: a register at t in one frame and the periodic interval at t+1 s in
    another showed 22,500 Wh live where the meter read 20,000. And a charger metering by
    interval alone, its meterStop equal to its meterStart, is billed the intervals' sum
    unflagged (was flagged RESET)."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) \
        - timedelta(hours=3)

    def interval(at: datetime) -> list[dict[str, object]]:
        return [{"timestamp": iso(at), "sampledValue": [
            {"value": "2500", "measurand": "Energy.Active.Import.Interval", "unit": "Wh",
             "context": "Sample.Periodic"}]}]

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        mixed, alone = [(await cp.call(call.StartTransaction(
            connector_id=plug, id_tag=tag, meter_start=0,
            timestamp=iso(start)))).transaction_id
            for plug, tag in ((1, "TAG-OK"), (2, "TAG-OTHER"))]
        for quarter in range(1, 8):
            for tx, plug in ((mixed, 1), (alone, 2)):
                await cp.call(call.MeterValues(connector_id=plug, transaction_id=tx,
                    meter_value=interval(start + timedelta(minutes=15 * quarter))))
        end = start + timedelta(hours=2)
        await cp.call(call.MeterValues(connector_id=1, transaction_id=mixed, meter_value=[{
            "timestamp": iso(end), "sampledValue": [
                {"value": "20000", "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh"}]}]))
        await cp.call(call.MeterValues(connector_id=1, transaction_id=mixed,
                                       meter_value=interval(end + timedelta(seconds=1))))
        await cp.call(call.MeterValues(connector_id=2, transaction_id=alone,
                                       meter_value=interval(end)))
        assert (await shown(central, mixed))["energyKwh"] == 20.0
        assert (await shown(central, alone))["energyKwh"] == 20.0
        for tx in (mixed, alone):
            await cp.call(call.StopTransaction(
                meter_stop=20_000 if tx == mixed else 0, transaction_id=tx,
                timestamp=iso(end + timedelta(seconds=2))))
    for tx in (mixed, alone):
        billed = await shown(central, tx)
        assert (billed["energyKwh"], billed["meterAnomaly"]) == (20.0, None), (tx, billed)
