"""A charger's energy register that rolls over (a 32-bit or a 999,999.9 kWh counter) or is
reset mid-session, through a real websocket with the ``ocpp`` package's client as the
charge point: the session bills the energy delivered across it, flagged for review, and
never more than the connector could have delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ocpp.v16 import call

from domain import entities as d
from domain.query import ALL, Eq
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.ocpp.conftest import STATION_PASSWORD, Central

ANOMALY = "{ sessions(first: 5) { nodes { transactionId energyKwh meterAnomaly } } }"


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class Charger:
    """A charger on connector 1 (150 kW) whose frames are a minute apart on its clock,
    from ten minutes ago."""

    def __init__(self, cp: SimulatedChargePoint) -> None:
        self.cp = cp
        self.at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        self.tx = 0

    async def start(self, meter_start: int) -> None:
        answer = await self.cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=meter_start,
            timestamp=iso(self.at)))
        self.tx = answer.transaction_id

    async def reading(self, wh: int, *, at: datetime | None = None) -> None:
        if at is None:
            self.at += timedelta(minutes=1)
        await self.cp.call(call.MeterValues(connector_id=1, transaction_id=self.tx,
                                            meter_value=[{
            "timestamp": iso(at or self.at), "sampledValue": [{"value": str(wh)}]}]))

    async def stop(self, meter_stop: int) -> None:
        self.at += timedelta(minutes=1)
        await self.cp.call(call.StopTransaction(meter_stop=meter_stop, timestamp=iso(self.at),
                                                transaction_id=self.tx))


async def billed(central: Central, tx: int) -> d.Session:
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    return session


async def test_a_32_bit_register_rolling_over_mid_session_bills_across_it(
        central: Central) -> None:
    top = 2**32
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(top - 5_000)
        await charger.reading(top - 2_000)
        await charger.reading(1_500)  # wrapped past 0xFFFFFFFF
        live = await central.session(charger.tx)
        assert live is not None and live.energy_wh == 6_500
        await charger.reading(4_000)
        await charger.stop(6_000)
        data = await central.gql(ANOMALY, as_user="op")
    session = await billed(central, charger.tx)
    assert session.energy_wh == 11_000 and session.cost_minor == 440  # 11 kWh at 0.40
    assert session.meter_anomaly is d.MeterAnomaly.ROLLOVER
    [shown] = [s for s in data["sessions"]["nodes"] if s["transactionId"] == charger.tx]
    assert shown["meterAnomaly"] == "ROLLOVER"


async def test_a_decimal_register_rolling_over_between_start_and_stop_bills_across_it(
        central: Central) -> None:
    """999,999.9 kWh then 0: a charger that sends no meter values, meterStop below
    meterStart."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(999_998_000)
        charger.at += timedelta(minutes=9)
        await charger.stop(1_500)
    session = await billed(central, charger.tx)
    assert session.energy_wh == 3_500 and session.cost_minor == 140
    assert session.meter_anomaly is d.MeterAnomaly.ROLLOVER


async def test_a_meter_reset_mid_session_bills_before_it_plus_after_it(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(50_000)
        await charger.reading(52_000)
        await charger.reading(300)  # the meter restarted from 0 (replaced, reset)
        await charger.reading(1_300)
        # A frame flushed late, stamped before the reset, is history, not another reset.
        await charger.reading(51_000, at=charger.at - timedelta(minutes=2, seconds=30))
        live = await central.session(charger.tx)
        assert live is not None and live.energy_wh == 3_300
        await charger.stop(2_000)
    session = await billed(central, charger.tx)
    assert session.energy_wh == 4_000 and session.cost_minor == 160
    assert session.meter_anomaly is d.MeterAnomaly.RESET
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", session.id))
    assert sum(s.delta_wh or 0 for s in samples) == 4_000  # the trends add up to the bill


async def test_a_zero_read_once_is_no_reset_and_bills_nothing_twice(central: Central) -> None:
    """A meter that reads 0 once (a bus error) and goes on from where it was: the energy
    before the 0 is not billed again."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(50_000)
        await charger.reading(52_000)
        await charger.reading(0)
        await charger.reading(53_000)
        await charger.stop(54_000)
    session = await billed(central, charger.tx)
    assert session.energy_wh == 4_000


async def test_a_zero_read_once_bills_nothing_twice_whatever_the_connector_could_deliver(
        central: Central) -> None:
    """The same on a connector of no known rating (the budget of a step is then huge),
    and on a rated one whose meter values come an hour apart: the old register going on
    was taken for a step after a reset, billing the whole register again."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.StatusNotification(connector_id=3, error_code="NoError",
                                              status="Available"))  # not on record

        async def reading(connector_id: int, tx: int, wh: int, at: datetime) -> None:
            await cp.call(call.MeterValues(connector_id=connector_id, transaction_id=tx,
                                           meter_value=[{"timestamp": iso(at),
                                                         "sampledValue": [{"value": str(wh)}]}]))

        at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        unrated = (await cp.call(call.StartTransaction(
            connector_id=3, id_tag="TAG-OK", meter_start=50_000, timestamp=iso(at)))
                   ).transaction_id
        for minutes, wh in ((1, 52_000), (2, 0), (3, 53_000)):
            await reading(3, unrated, wh, at + timedelta(minutes=minutes))
        await cp.call(call.StopTransaction(meter_stop=54_000, transaction_id=unrated,
                                           timestamp=iso(at + timedelta(minutes=4))))
        rated = (await cp.call(call.StartTransaction(
            connector_id=2, id_tag="TAG-OTHER", meter_start=0, timestamp=iso(at)))
                 ).transaction_id
        for minutes, wh in ((60, 11_000), (61, 0), (121, 22_000)):
            await reading(2, rated, wh, at + timedelta(minutes=minutes))
        await cp.call(call.StopTransaction(meter_stop=22_000, transaction_id=rated,
                                           timestamp=iso(at + timedelta(minutes=122))))
    assert (await billed(central, unrated)).energy_wh == 4_000
    assert (await billed(central, rated)).energy_wh == 22_000


async def test_a_drop_no_rollover_or_reset_explains_still_bills_nothing_more(
        central: Central) -> None:
    """Lower, but neither near a register's limit nor near 0: a glitch, as before. And a
    rollover the connector could not have delivered in the time is none."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(50_000)
        await charger.stop(40_000)
        glitch = await billed(central, charger.tx)
        charger = Charger(cp)
        await charger.start(2**32 - 500_000)  # 500 kWh below the limit: not in a minute
        await charger.reading(2**32 - 400_000)  # …and no more in the next
        await charger.stop(20_000)
    # Below meterStart: the stop is not believed, and the session is flagged (QA s17).
    assert (glitch.energy_wh, glitch.meter_anomaly) == (0, d.MeterAnomaly.IMPLAUSIBLE_STOP)
    far = await billed(central, charger.tx)
    assert far.energy_wh == 0 and far.meter_anomaly is d.MeterAnomaly.IMPLAUSIBLE_STOP


async def test_a_stop_below_its_start_bills_what_was_metered_flagged(
        central: Central) -> None:
    """QA (s17): meterStop below meterStart with no rollover or reset to explain it
    billed 0 and dropped the 2 kWh the readings had metered, with nothing for an
    operator to see. It bills what was metered, flagged; a stop above the start but
    below a reading still decides the energy (the reading may be the glitch), flagged
    for review (QA s20, verify: a stop 1 Wh above its start billed nothing after
    readings of 1.2 kWh, and nothing showed it)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(50_000)
        await charger.reading(52_000)
        await charger.stop(49_000)
        below_start = charger.tx
        charger = Charger(cp)
        await charger.start(60_000)
        await charger.reading(62_000)
        await charger.stop(61_000)
        data = await central.gql(ANOMALY, as_user="op")
    session = await billed(central, below_start)
    assert session.energy_wh == 2_000 and session.cost_minor == 80  # 2 kWh at 0.40
    assert session.meter_anomaly is d.MeterAnomaly.IMPLAUSIBLE_STOP
    shown = {s["transactionId"]: s["meterAnomaly"] for s in data["sessions"]["nodes"]}
    assert shown[below_start] == "IMPLAUSIBLE_STOP"
    trusted = await billed(central, charger.tx)
    assert (trusted.energy_wh, trusted.meter_anomaly) == (
        1_000, d.MeterAnomaly.STOP_BELOW_READINGS)
    assert shown[charger.tx] == "STOP_BELOW_READINGS"


async def test_a_stop_that_did_not_move_bills_what_was_metered(central: Central) -> None:
    """QA (s20): meterStop equal to meterStart, though the meter values read 1 kWh more
    and the stop's own Transaction.End 1.2 kWh more, billed 0 (no payment, no flag) and
    took back the increments the readings had added. A stop that did not move while its
    transaction metered is a register not read at the stop: billed what was metered,
    the stop's own readings included, flagged. (A stop that moved still decides.)"""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=3_000_000,
            timestamp=iso(start)))).transaction_id
        for seconds, wh in ((30, 3_000_500), (60, 3_001_000)):
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
                "timestamp": iso(start + timedelta(seconds=seconds)),
                "sampledValue": [{"value": str(wh),
                                  "measurand": "Energy.Active.Import.Register"}]}]))
        end = start + timedelta(seconds=90)
        await cp.call(call.StopTransaction(
            meter_stop=3_000_000, timestamp=iso(end), transaction_id=tx,
            transaction_data=[
                {"timestamp": iso(start), "sampledValue": [{
                    "value": "3000000", "context": "Transaction.Begin",
                    "measurand": "Energy.Active.Import.Register"}]},
                {"timestamp": iso(end), "sampledValue": [{
                    "value": "3001200", "context": "Transaction.End",
                    "measurand": "Energy.Active.Import.Register"}]}]))
    session = await billed(central, tx)
    assert (session.energy_wh, session.cost_minor) == (1_200, 48)  # 1.2 kWh at 0.40
    assert session.meter_anomaly is d.MeterAnomaly.IMPLAUSIBLE_STOP
    payment = await central.store.find_one(d.Payment, Eq("session_id", session.id))
    assert payment is not None and payment.amount_minor == 48
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", session.id))
    assert sum(s.delta_wh or 0 for s in samples) == 1_200  # the trends add up to the bill


async def test_a_stop_below_its_readings_is_flagged_only_beyond_rounding(
        central: Central) -> None:
    """STOP_BELOW_READINGS (QA s20, verify) changes no bill and marks a believed stop
    more than 500 Wh below the transaction's own readings (whole-kWh readings are up to
    500 Wh off), a late stop correcting a close made without it too; a stop within that,
    and a session whose register was reset (its own flag kept), are not marked."""
    from domain.policy import SYSTEM

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        within = Charger(cp)
        await within.start(10_000)
        await within.reading(13_000)  # "13" kWh rounded from 12.55
        await within.stop(12_550)
        corrected = Charger(cp)
        await corrected.start(20_000)
        await corrected.reading(21_200)
        session = await central.session(corrected.tx)
        assert session is not None
        await central.services.charging.end_session(SYSTEM, session.id)
        await corrected.stop(20_001)
        reset = Charger(cp)
        await reset.start(30_000)
        await reset.reading(31_000)
        await reset.reading(1_500)  # the meter restarted near 0
        await reset.stop(900)  # 600 Wh below, on the reset's own flag
    assert [(s.energy_wh, s.meter_anomaly) for s in [
        await billed(central, within.tx), await billed(central, corrected.tx)]] == [
        (2_550, None), (1, d.MeterAnomaly.STOP_BELOW_READINGS)]
    assert (await billed(central, reset.tx)).meter_anomaly is d.MeterAnomaly.RESET


async def test_a_reset_that_reads_like_the_old_register_bills_the_lower_count_flagged(
        central: Central) -> None:
    """A per-transaction meter reset at 2 kWh reading 2.6 kWh a minute later reads as the
    old register going on (2 kWh → 2.6 kWh) as well as a reset: the lower count is billed
    and the session stays flagged for an operator, never the whole register twice."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(0)
        await charger.reading(2_000)
        await charger.reading(100)
        await charger.reading(2_600)
        await charger.stop(5_100)
    session = await billed(central, charger.tx)
    assert session.energy_wh == 5_100 and session.meter_anomaly is d.MeterAnomaly.RESET


async def test_a_stop_whose_meter_stop_is_no_register_closes_the_session(
        central: Central) -> None:
    """QA (s26): a StopTransaction whose meterStop no register can read (-1, sent by
    firmware whose meter did not answer at the stop; or beyond any meter, 2^70) was
    refused whole (PropertyConstraintViolation): the session stayed ACTIVE, unbilled,
    its driver's card ConcurrentTx everywhere, once the charger gave up resending it.
    The stop is taken as one below its start is: billed what was metered, flagged, no
    meterStop recorded; the card is free."""
    sessions = []
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        for meter_stop in (-1, 2**70):
            charger = Charger(cp)
            await charger.start(50_000)
            await charger.reading(52_000)
            await charger.stop(meter_stop)
            sessions.append(charger.tx)
        assert await cp.authorize("TAG-OK") == "Accepted"
        data = await central.gql(ANOMALY, as_user="op")
    shown = {s["transactionId"]: s["meterAnomaly"] for s in data["sessions"]["nodes"]}
    for tx in sessions:
        session = await billed(central, tx)
        assert (session.energy_wh, session.cost_minor, session.meter_stop_wh) == (
            2_000, 80, None)  # 2 kWh at 0.40
        assert session.stop_reason == "Local"
        assert session.meter_anomaly is d.MeterAnomaly.IMPLAUSIBLE_STOP
        assert shown[tx] == "IMPLAUSIBLE_STOP"
        samples = await central.store.find_all(d.MeterSample, Eq("session_id", session.id))
        assert sum(s.delta_wh or 0 for s in samples) == 2_000


async def test_a_resent_minus_one_stop_of_reason_other_changes_nothing(
        central: Central) -> None:
    """Review r26: a StopTransaction with meterStop -1 and OCPP reason Other (a Reason
    any charger may give) is recorded with meterStopWh null and stopReason Other, which
    was read as the CSMS's own close without a stop: its resend (the answer lost) was
    taken for a correction of that close, the session written again. Whether the CSMS
    closed it without a stop is recorded instead (``closedWithoutStop``)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(50_000)
        await charger.reading(52_000)
        at = charger.at + timedelta(minutes=1)
        data = [{"timestamp": iso(at), "sampledValue": [
            {"value": "52500", "context": "Transaction.End"}]}]

        async def stop() -> None:
            await cp.call(call.StopTransaction(
                meter_stop=-1, timestamp=iso(at), transaction_id=charger.tx,
                reason="Other", transaction_data=data))

        await stop()
        first = await billed(central, charger.tx)
        samples = await central.store.count(d.MeterSample, Eq("session_id", first.id))
        await stop()  # the same frame, resent
        shown = await central.gql(
            "{ sessions(first: 5) { nodes { stopReason closedWithoutStop } } }",
            as_user="op")
    again = await billed(central, charger.tx)
    assert again.meter_anomaly is d.MeterAnomaly.IMPLAUSIBLE_STOP
    assert (again.energy_wh, again.cost_minor) == (first.energy_wh, first.cost_minor)
    assert again.updated_at == first.updated_at, "a repeated stop must change nothing"
    assert await central.store.count(d.MeterSample, Eq("session_id", first.id)) == samples
    assert await central.store.count(d.Payment, ALL) == 1
    assert shown["sessions"]["nodes"] == [{"stopReason": "OTHER",
                                           "closedWithoutStop": False}]
