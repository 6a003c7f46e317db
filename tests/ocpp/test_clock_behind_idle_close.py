"""A charger whose clock is still behind (1970, never set) is billed the same idle fee
whether its own StopTransaction or an operator's endSession closes the session: both are
priced on the charger's timeline, where its connector's intervals are (review s24: a
close that moved the start to its receipt on our clock looked for idle time there)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from ocpp.v16 import call

from domain.policy import SYSTEM
from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from tests.helpers import MovedClock
from tests.ocpp.conftest import STATION_PASSWORD, Central

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ESTIMATE = "{ sessions(first: 5) { nodes { transactionId estimatedCost { amountMinor } } } }"


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def report(cp, status: str, at: datetime) -> None:  # type: ignore[no-untyped-def]
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                          status=status, timestamp=iso(at)))


@pytest.mark.parametrize("close", ["StopTransaction", "endSession"])
async def test_a_1970_charger_idle_fee_is_the_same_however_it_closes(
        central: Central, close: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = central.services.ctx
    monkeypatch.setattr("domain.services.base.utcnow", lambda: ctx.clock())
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.30"),
        idle_price_per_minute=Decimal("0.60"), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=1))
    with MovedClock(ctx) as clock:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await report(cp, "Preparing", EPOCH)
            tx = (await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=iso(EPOCH + timedelta(seconds=1))))).transaction_id
            await report(cp, "Charging", EPOCH + timedelta(seconds=1))
            clock.at(15)
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
                {"timestamp": iso(EPOCH + timedelta(seconds=15)),
                 "sampledValue": [{"value": "1000"}]}]))
            clock.at(20)
            await report(cp, "SuspendedEV", EPOCH + timedelta(seconds=20))
            clock.at(80)
            data = await central.gql(ESTIMATE, as_user="admin")
            [estimate] = [s["estimatedCost"]["amountMinor"]
                          for s in data["sessions"]["nodes"] if s["transactionId"] == tx]
            if close == "StopTransaction":
                await cp.call(call.StopTransaction(
                    meter_stop=1_000, transaction_id=tx,
                    timestamp=iso(EPOCH + timedelta(seconds=80))))
            else:
                record = await central.session(tx)
                assert record is not None
                ended = await central.gql(
                    """mutation($id: ID!) { endSession(input: {id: $id}) { errors { code } } }""",
                    {"id": to_global_id("session", record.id)}, as_user="op")
                assert ended["endSession"]["errors"] == []
    session = await central.session(tx)
    assert session is not None
    print(close, "estimate", estimate, "cost", session.cost_minor, "idle",
          session.idle_seconds, "span", session.start_time, session.end_time)
    # SuspendedEV from 20 s to 80 s on the charger's timeline: 60 s idle at 0.60/min
    # (+ 30 for the kWh), whichever way it closes (before 4302601 both gave 90; now
    # endSession bills 79 s, the whole session since its receipt, 19 s of it Charging).
    assert session.idle_seconds is not None and 55 <= session.idle_seconds <= 65
    assert session.cost_minor is not None and session.cost_minor <= 30 + 65
