"""Transactions a charger ran offline and replays on reconnecting are judged at their own
time, not at their arrival (QA s32; README "Cards at the charger"): on both stores, with
the ``ocpp`` package as the charger, to a process that has not heard the charger before
(its clock is taken from the replayed start itself, ``ChargerClocks.replayed``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.policy import SYSTEM
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.support.mongo_backend import open_mongo_store

ENERGY = "Energy.Active.Import.Register"


@pytest.fixture(params=["sqlite", "mongo"])
async def central(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Central]:
    if request.param == "sqlite":
        c = await start_central(tmp_path / "central.db")
    else:
        async with open_mongo_store() as mongo:
            c = await start_central(tmp_path / "unused.db", store=mongo)
            await seed(c)
            yield c
            await stop_central(c)
        return
    await seed(c)
    yield c
    await stop_central(c)


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _replayed(cp: SimulatedChargePoint, connector_id: int, tag: str, start: datetime,
                    wh: tuple[int, int, int]) -> tuple[int, str]:
    """A whole transaction from the charger's offline queue: its start at ``start``, a
    reading half an hour on and its stop an hour on (``wh``: the three registers).
    Returns its transaction and the status its start was told."""
    answer = await cp.call(call.StartTransaction(connector_id=connector_id, id_tag=tag,
                                                 meter_start=wh[0], timestamp=_stamp(start)))
    tx = answer.transaction_id
    await cp.call(call.MeterValues(connector_id=connector_id, transaction_id=tx, meter_value=[
        {"timestamp": _stamp(start + timedelta(minutes=30)),
         "sampledValue": [{"value": str(wh[1]), "measurand": ENERGY, "unit": "Wh"}]}]))
    await cp.call(call.StopTransaction(meter_stop=wh[2], transaction_id=tx,
                                       timestamp=_stamp(start + timedelta(hours=1)),
                                       reason="EVDisconnected"))
    return tx, answer.id_tag_info["status"]


async def _shown(central: Central, tx: int) -> dict[str, object]:
    answer = await central.gql("""{ sessions(first: 10) { nodes { transactionId
        startRefused cost { amountMinor } } } }""", as_user="admin")
    [node] = [n for n in answer["sessions"]["nodes"] if n["transactionId"] == tx]
    return node


async def test_a_replayed_start_is_not_concurrent_with_a_session_begun_after_it(
        central: Central) -> None:
    """The card charges now on CP-1; CP-OPEN reconnects and replays a session of it from
    three hours ago, over an hour before. It was told ConcurrentTx, recorded refused and
    its 11 kWh billed nothing. Accepted, billed; the live session goes on holding the
    card (a live start of it on CP-OPEN is ConcurrentTx)."""
    now = datetime.now(UTC).replace(microsecond=0)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as live_cp:
        live = await live_cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0, timestamp=_stamp(now)))
        assert live.id_tag_info["status"] == "Accepted"
        async with connected(central.url, "CP-OPEN") as cp:
            tx, told = await _replayed(cp, 2, "TAG-OK", now - timedelta(hours=3),
                                       (50_000, 55_000, 61_000))
            assert told == "Accepted"
            busy = await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=_stamp(datetime.now(UTC))))
            assert busy.id_tag_info["status"] == "ConcurrentTx"
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert (session.start_refused, session.energy_wh, session.cost_minor) == (
        None, 11_000, 440)  # 11 kWh at 0.40 EUR
    assert await _shown(central, tx) == {"transactionId": tx, "startRefused": None,
                                         "cost": {"amountMinor": 440}}


async def test_a_replayed_start_of_a_card_blocked_since_is_told_so_and_billed(
        central: Central) -> None:
    """TAG-OTHER charged on CP-OPEN while it was offline; an admin blocked the card
    before the charger came back. Its replayed start is told Blocked (a charger still
    charging stops), and the 6 kWh delivered are billed to the card's holder: it was
    recorded refused (BLOCKED), billed nothing. A live start of the blocked card stays
    refused and unbilled."""
    await central.services.fleet.update_id_tag(SYSTEM, central.tags["other"].id,
                                               status=d.IdTagStatus.BLOCKED)
    now = datetime.now(UTC).replace(microsecond=0)
    async with connected(central.url, "CP-OPEN") as cp:
        tx, told = await _replayed(cp, 2, "TAG-OTHER", now - timedelta(minutes=90),
                                   (20_000, 23_000, 26_000))
        assert told == "Blocked"
        live = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OTHER", meter_start=0,
            timestamp=_stamp(datetime.now(UTC))))
        assert live.id_tag_info["status"] == "Blocked"
        await cp.call(call.StopTransaction(meter_stop=0, transaction_id=live.transaction_id,
                                           timestamp=_stamp(datetime.now(UTC)),
                                           reason="DeAuthorized"))
    session = await central.session(tx)
    assert session is not None and session.user_id == central.users["driver2"].id
    assert (session.start_refused, session.energy_wh, session.cost_minor) == (
        None, 6_000, 240)
    assert await _shown(central, tx) == {"transactionId": tx, "startRefused": None,
                                         "cost": {"amountMinor": 240}}
    refused = await central.session(live.transaction_id)
    assert refused is not None
    assert (refused.start_refused, refused.cost_minor) == ("Blocked", None)
