"""An operator's endSession on a charger whose clock is still behind (1970) keeps the
session on the charger's timeline: the connector's next StartTransaction, stamped on that
clock, still cuts the energy metered above its meterStart off the ended session
(``_lost_cut_by_start``), so none is billed twice (review s24: a close that moved the
start to its receipt on our clock skipped that cut)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ocpp.v16 import call

from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_a_1970_session_ended_by_an_operator_is_cut_at_the_next_start(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=10_000,
            timestamp=iso(EPOCH + timedelta(seconds=1))))).transaction_id
        # clock-aligned, no transactionId: the connector's active session's
        await cp.call(call.MeterValues(connector_id=1, meter_value=[
            {"timestamp": iso(EPOCH + timedelta(seconds=15)),
             "sampledValue": [{"value": "14000", "context": "Sample.Clock"}]}]))
        record = await central.session(tx)
        assert record is not None and record.energy_wh == 4_000
        ended = await central.gql(
            """mutation($id: ID!) { endSession(input: {id: $id}) { errors { code } } }""",
            {"id": to_global_id("session", record.id)}, as_user="op")
        assert ended["endSession"]["errors"] == []
        closed = await central.session(tx)
        # the next transaction, whose start waited in the charger's queue: meterStart
        # 12 000, below the 14 000 read
        nxt = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=12_000,
            timestamp=iso(EPOCH + timedelta(seconds=40))))).transaction_id
    old = await central.session(tx)
    assert closed is not None and old is not None
    print("closed span", closed.start_time, closed.end_time, "energy after next start",
          old.energy_wh, "next tx", nxt)
    assert old.energy_wh == 2_000  # cut at the next start's meterStart
