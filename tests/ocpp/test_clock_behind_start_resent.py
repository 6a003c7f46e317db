"""A StartTransaction stamped 1970 and resent after its session closed (a charger
flushing its offline queue again after a reconnect) is the same transaction: the close
keeps the start the charger sent, which the resend is matched by (review s24: a close
that moved the start to its receipt opened a second session)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from ocpp.v16 import call

from domain import entities as d
from domain.query import ALL
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_a_1970_start_resent_after_its_close_is_the_same_transaction(
        central: Central) -> None:
    start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=50_000,
                                  timestamp="1970-01-01T00:00:00Z")
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        first = await cp.call(start)
        tx = first.transaction_id
        await asyncio.sleep(0.05)
        stopped_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        await cp.call(call.StopTransaction(meter_stop=60_000, transaction_id=tx,
                                           timestamp=iso(stopped_at)))
        again = await cp.call(start)  # the very same frame, resent
    sessions = await central.store.find_all(d.Session, ALL, limit=10)
    print([(s.transaction_id, s.state, s.start_time, s.end_time) for s in sessions])
    assert again.transaction_id == tx
    assert len(sessions) == 1


async def test_control_a_start_resent_after_its_close_on_a_right_clock(
        central: Central) -> None:
    """The same with a clock that is right: the resend is the same transaction."""
    stamp = datetime.now(UTC).replace(microsecond=0)
    start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=50_000,
                                  timestamp=iso(stamp))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        first = await cp.call(start)
        tx = first.transaction_id
        await cp.call(call.StopTransaction(meter_stop=60_000, transaction_id=tx,
                                           timestamp=iso(stamp + timedelta(seconds=1))))
        again = await cp.call(start)
    assert again.transaction_id == tx
    assert await central.store.count(d.Session, ALL) == 1
