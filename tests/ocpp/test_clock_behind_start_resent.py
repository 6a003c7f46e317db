"""A StartTransaction resent after its session closed (a charger flushing its offline
queue again after a reconnect). Stamped by a right clock, it is the same transaction; so
stamped 1970 by a clock never set that ticks, in any boot (reviews r26-robust3,
r26-robust4). Stamped at the epoch itself (a clock stuck, ``STUCK_CLOCK_STAMPS``), it
cannot be told from the same card's next start of such a charger, its meter counting from
0 per transaction (review r26-robust2): only an open session is matched, and the replay
opens a phantom session, priced nothing when its replayed stop or the next start closes
it (docs/architecture.md)."""

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


async def test_a_1970_start_replayed_after_its_close_opens_a_phantom_priced_nothing(
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
        again = await cp.call(start)  # the very same frame, replayed
        assert again.transaction_id != tx
        following = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=60_000,
            timestamp="1970-01-01T00:00:00Z"))
    sessions = {s.transaction_id: s for s in await central.store.find_all(
        d.Session, ALL, limit=10)}
    assert set(sessions) == {tx, again.transaction_id, following.transaction_id}
    phantom = sessions[again.transaction_id]
    assert phantom.state is d.SessionState.COMPLETED and phantom.closed_without_stop
    assert not phantom.cost_minor
    assert sessions[tx].energy_wh == 10_000
    paid = {p.session_id for p in await central.store.find_all(d.Payment, ALL)}
    assert phantom.id not in paid


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


async def test_a_ticking_1970_start_replayed_after_its_close_is_the_same_transaction(
        central: Central) -> None:
    start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=50_000,
                                  timestamp="1970-01-01T00:42:00Z")
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        first = await cp.call(start)
        tx = first.transaction_id
        await cp.call(call.StopTransaction(meter_stop=60_000, transaction_id=tx,
                                           timestamp="1970-01-01T00:43:00Z"))
        again = await cp.call(start)  # the very same frame, replayed
    assert again.transaction_id == tx
    [session] = await central.store.find_all(d.Session, ALL, limit=10)
    assert session.energy_wh == 10_000
