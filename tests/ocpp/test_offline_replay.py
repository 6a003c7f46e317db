"""Transactions a charger ran offline and replays on reconnecting are judged at their own
time, not at their arrival (QA s32; README "Cards at the charger"): on both stores, with
the ``ocpp`` package as the charger, to a process that has not heard the charger before
(its clock is taken from the replayed start itself, ``ChargerClocks.replayed``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.policy import SYSTEM
from domain.pricing import cost_breakdown
from graph.ids import to_global_id
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.helpers import MovedClock
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.conftest import central_on_each_store as central

__all__ = ["central"]  # the fixture, on each store

ENERGY = "Energy.Active.Import.Register"


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


async def test_a_status_queued_before_a_replayed_start_leaves_it_replayed(
        central: Central) -> None:
    """Review r32-a: CP-OPEN flushes its queue, a StatusNotification stamped 20 s before
    the start first. It set the charger's clock, the start was on time on it and judged
    live: told Blocked, recorded refused, 6 kWh billed nothing. The clock taken only from
    stamps from before the connection opened does not make the start live: billed."""
    await central.services.fleet.update_id_tag(SYSTEM, central.tags["other"].id,
                                               status=d.IdTagStatus.BLOCKED)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=90)
    async with connected(central.url, "CP-OPEN") as cp:
        await cp.call(call.StatusNotification(
            connector_id=2, error_code="NoError", status="Preparing",
            timestamp=_stamp(start - timedelta(seconds=20))))
        tx, told = await _replayed(cp, 2, "TAG-OTHER", start, (20_000, 23_000, 26_000))
        assert told == "Blocked"
    session = await central.session(tx)
    assert session is not None
    assert (session.start_refused, session.energy_wh, session.cost_minor) == (
        None, 6_000, 240)


async def test_a_resent_replayed_start_is_answered_as_its_first_copy(
        central: Central) -> None:
    """Review r32-a: the card charges now on CP-1; CP-OPEN replays a start of it from 3 h
    ago, told Accepted, and sends it again (the answer lost). The resend, on time on the
    clock its first copy set, was judged live: told ConcurrentTx, the session rewritten
    refused and its 11 kWh billed nothing. Answered as the first copy, billed."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=3)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as live_cp:
        live = await live_cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0, timestamp=_stamp(now)))
        assert live.id_tag_info["status"] == "Accepted"
        async with connected(central.url, "CP-OPEN") as cp:
            copies = [await cp.call(call.StartTransaction(
                connector_id=2, id_tag="TAG-OK", meter_start=50_000,
                timestamp=_stamp(start))) for _ in range(2)]
            assert [c.id_tag_info["status"] for c in copies] == ["Accepted", "Accepted"]
            tx = copies[0].transaction_id
            assert copies[1].transaction_id == tx
            await cp.call(call.StopTransaction(meter_stop=61_000, transaction_id=tx,
                                               timestamp=_stamp(start + timedelta(hours=1)),
                                               reason="EVDisconnected"))
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert (session.start_refused, session.energy_wh, session.cost_minor) == (
        None, 11_000, 440)


async def test_a_replayed_start_of_a_card_barred_before_it_is_refused_unbilled(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-a: a card blocked before a start the offline charger took (a stolen
    card), and one whose expiry passed before it, were billed to their holder as a card
    blocked since is. Refused as a live start of them is: recorded so, billed nothing.
    The record tells when: the block is the card's last change (``updated_at``)."""
    now = datetime.now(UTC).replace(microsecond=0)
    with MovedClock(central.services.ctx) as moved:
        # Their stamps on the services' clock, moved back, as they were then.
        monkeypatch.setattr("domain.services.base.utcnow", lambda: moved.ctx.clock())
        monkeypatch.setattr("domain.services.fleet.utcnow", lambda: moved.ctx.clock())
        moved.by(-timedelta(hours=3))
        driver = central.users["driver2"].id
        stolen = await central.services.fleet.issue_id_tag(SYSTEM, tag="TAG-STOLEN",
                                                           user_id=driver)
        await central.services.fleet.issue_id_tag(
            SYSTEM, tag="TAG-LAPSED", user_id=driver,
            expires_at=now - timedelta(minutes=100))
        moved.by(-timedelta(hours=2))
        await central.services.fleet.update_id_tag(SYSTEM, stolen.id, status=d.IdTagStatus.BLOCKED)
    monkeypatch.undo()
    async with connected(central.url, "CP-OPEN") as cp:
        blocked, told_blocked = await _replayed(cp, 1, "TAG-STOLEN",
                                                now - timedelta(minutes=90),
                                                (20_000, 23_000, 26_000))
        lapsed, told_lapsed = await _replayed(cp, 2, "TAG-LAPSED",
                                              now - timedelta(minutes=80),
                                              (30_000, 33_000, 36_000))
    assert (told_blocked, told_lapsed) == ("Blocked", "Expired")
    for tx, refused in ((blocked, "Blocked"), (lapsed, "Expired")):
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.COMPLETED
        assert (session.start_refused, session.energy_wh, session.cost_minor) == (
            refused, 6_000, None)
        assert await _shown(central, tx) == {
            "transactionId": tx, "startRefused": refused.upper(), "cost": None}


async def test_a_replayed_start_of_a_card_whose_owner_was_deactivated_before_it_is_refused(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 33: a card barred only by its owner's deactivation (its own record as it
    was) was billed when the deactivation came before the replayed start, as if it came
    after. Told by the owner's record as a card's block is by the card's: a driver
    deactivated two hours ago, refused and billed nothing for a start 90 minutes ago;
    one deactivated only now, billed for theirs. A live start of the card of an owner
    deactivated is refused too, unbilled."""
    now = datetime.now(UTC).replace(microsecond=0)
    accounts = central.services.accounts
    with MovedClock(central.services.ctx) as moved:
        # Their stamps on the services' clock, moved back, as they were then.
        monkeypatch.setattr("domain.services.base.utcnow", lambda: moved.ctx.clock())
        moved.by(-timedelta(hours=3))
        gone = await accounts.create_user(SYSTEM, email="gone@example.com",
                                          password="password-123", name="gone",
                                          role=d.Role.DRIVER)
        await central.services.fleet.issue_id_tag(SYSTEM, tag="TAG-GONE", user_id=gone.id)
        moved.by(-timedelta(hours=2))
        await accounts.deactivate_user(SYSTEM, gone.id)
        await accounts.settled()
    monkeypatch.undo()
    async with connected(central.url, "CP-OPEN") as cp:
        before, told_before = await _replayed(cp, 1, "TAG-GONE", now - timedelta(minutes=90),
                                              (20_000, 23_000, 26_000))
        await accounts.deactivate_user(SYSTEM, central.users["driver2"].id)
        await accounts.settled()
        since, told_since = await _replayed(cp, 2, "TAG-OTHER", now - timedelta(minutes=80),
                                            (30_000, 36_000, 36_000))
        live = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-GONE", meter_start=26_000,
            timestamp=_stamp(datetime.now(UTC))))
        assert live.id_tag_info["status"] == "Blocked"
        await cp.call(call.StopTransaction(meter_stop=27_000,
                                           transaction_id=live.transaction_id,
                                           timestamp=_stamp(datetime.now(UTC)),
                                           reason="DeAuthorized"))
    assert (told_before, told_since) == ("Blocked", "Blocked")
    for tx, refused, cost in ((before, "Blocked", None), (since, None, 240),
                              (live.transaction_id, "Blocked", None)):
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.COMPLETED
        assert (session.start_refused, session.cost_minor) == (refused, cost)
    assert await _shown(central, before) == {"transactionId": before,
                                             "startRefused": "BLOCKED", "cost": None}


@pytest.mark.parametrize("version_then", [True, False])
async def test_a_replay_stamped_long_before_its_station_was_recorded_keeps_its_stamps(
        central: Central, version_then: bool) -> None:
    """QA s33: a station recorded today; its charger replays two transactions stamped
    40 days back (3 h and 61 h long), start and stop together, beyond the month a start
    may predate its station's record and still be believed (``MAX_QUEUED_BEFORE_RECORD``:
    taken for a clock behind ours). They kept their starts, but ended 0.024 s and 0.4 s
    later (what our clock saw), were priced by the version set today, after their start,
    and their 33 kWh in 0.024 s went unflagged. Their stops stamped as far back show a
    clock never set right between them: ended, priced and judged by their stamps, as a
    transaction queued 11 days back is; by the version in force at their start, and by
    none (unpriced) when none was. The charger shows its clock, set right, by a
    StatusNotification first; the queue carries readings between start and stop, and
    its flush is paced over minutes of our clock (review r33: a stop that came more than
    2 minutes after its start was taken for a live one and its 61 h billed 3 minutes):
    each stop is stamped long before the charger's clock reads when it arrives."""
    station = central.stations["CP-OPEN"]
    tariffs = central.services.tariffs
    now = datetime.now(UTC).replace(microsecond=0)
    then = await tariffs.set_tariff(
        SYSTEM, station_id=station.id, price_per_kwh=Decimal("0.30"),
        price_per_minute=Decimal("0.01"), currency="EUR",
        valid_from=now - timedelta(days=60)) if version_then else None
    await tariffs.set_tariff(SYSTEM, station_id=station.id, price_per_kwh=Decimal("0.50"),
                             currency="EUR", valid_from=now - timedelta(hours=1))
    began = now - timedelta(days=40)
    lasted = {2: timedelta(hours=3), 1: timedelta(hours=61)}
    txs = {}
    flushed = timedelta(0)  # how far our clock ran through the flush
    with MovedClock(central.services.ctx) as moved:
        async with connected(central.url, "CP-OPEN") as cp:
            await cp.call(call.StatusNotification(
                connector_id=0, error_code="NoError", status="Available",
                timestamp=_stamp(datetime.now(UTC))))
            for connector_id, tag, wh in ((2, "TAG-OK", 33_000), (1, "TAG-OTHER", 90_000)):
                start = await cp.call(call.StartTransaction(
                    connector_id=connector_id, id_tag=tag, meter_start=1_000,
                    timestamp=_stamp(began)))
                tx = txs[connector_id] = start.transaction_id
                for part in (1, 2, 3):  # the queue's readings, flushed a minute apart
                    flushed += timedelta(minutes=1)
                    moved.by(flushed)
                    await cp.call(call.MeterValues(
                        connector_id=connector_id, transaction_id=tx, meter_value=[{
                            "timestamp": _stamp(began + lasted[connector_id] * part / 4),
                            "sampledValue": [{"value": str(1_000 + wh * part // 4),
                                              "measurand": ENERGY, "unit": "Wh"}]}]))
                await cp.call(call.StopTransaction(
                    meter_stop=1_000 + wh, transaction_id=tx,
                    timestamp=_stamp(began + lasted[connector_id]),
                    reason="EVDisconnected"))
    answer = await central.gql("""{ sessions(first: 10) { nodes { transactionId
        startTime endTime energyKwh meterAnomaly tariff { id } cost { amountMinor } } } }""",
                               as_user="admin")
    shown = {n["transactionId"]: n for n in answer["sessions"]["nodes"]}
    for connector_id, wh in ((2, 33_000), (1, 90_000)):
        session = await central.session(txs[connector_id])
        assert session is not None and session.state is d.SessionState.COMPLETED
        assert (session.start_time, session.end_time) == (began, began + lasted[connector_id])
        assert not session.start_clock_behind
        assert (session.energy_wh, session.meter_anomaly) == (wh, None)
        node = shown[txs[connector_id]]
        assert node["meterAnomaly"] is None
        if then is None:
            assert (session.cost_minor, node["tariff"], node["cost"]) == (None, None, None)
        else:
            cost = cost_breakdown(then, wh, began, began + lasted[connector_id]).gross
            assert session.cost_minor == cost
            assert node["tariff"] == {"id": to_global_id("tariff", then.id)}


async def test_a_live_session_on_a_clock_far_behind_whose_start_came_late_is_billed(
        central: Central) -> None:
    """Review r33-a: a charger whose clock is 40 days behind (more than the month a start
    may predate its station's record) sends a start that was held back through a short
    drop, then charges live for two hours; its stop is stamped three hours after the
    start, later than our clock saw, as a queue replayed is. But the stop came hours
    after the start, not flushed with it: a live session on a clock behind, billed what
    our clock saw by the tariff in force at the start's receipt, not ended at its stamp
    and left unpriced (no version 40 days back)."""
    station = central.stations["CP-OPEN"]
    now = datetime.now(UTC).replace(microsecond=0)
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, price_per_kwh=Decimal("0.50"), currency="EUR",
        valid_from=now - timedelta(hours=1))
    began = now - timedelta(days=40)
    with MovedClock(central.services.ctx) as moved:
        async with connected(central.url, "CP-OPEN") as cp:
            start = await cp.call(call.StartTransaction(
                connector_id=2, id_tag="TAG-OK", meter_start=1_000,
                timestamp=_stamp(began)))
            moved.by(timedelta(hours=2))  # charging live since
            await cp.call(call.StopTransaction(
                meter_stop=21_000, transaction_id=start.transaction_id,
                timestamp=_stamp(began + timedelta(hours=3)), reason="EVDisconnected"))
        session = await central.session(start.transaction_id)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert session.start_clock_behind
    assert session.end_time is not None
    assert timedelta(hours=2) <= session.end_time - began \
        < timedelta(hours=2) + d.BILLED_TIME_TOLERANCE
    assert (session.energy_wh, session.cost_minor) == (20_000, 1_000)


async def test_a_live_session_on_a_clock_far_behind_whose_start_was_held_by_a_drop(
        central: Central) -> None:
    """Review r33: a charger whose clock is 40 days behind shows it live (a
    StatusNotification), loses its connection for five minutes, a card starting there a
    minute in; the start is flushed on reconnecting, four minutes late, and the stop,
    stamped by that clock as it reads now, comes a minute after it (within 2 minutes of
    the start, as a queue's would). Stamped at what the charger's clock reads, it is
    live on a clock behind: billed what our clock saw by the tariff in force at the
    start's receipt, not priced by its stamps (no version 40 days back: unpriced)."""
    station = central.stations["CP-OPEN"]
    now = datetime.now(UTC).replace(microsecond=0)
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, price_per_kwh=Decimal("0.50"), currency="EUR",
        valid_from=now - timedelta(hours=1))
    behind = now - timedelta(days=40)  # the charger's clock, at our ``now``
    with MovedClock(central.services.ctx) as moved:
        async with connected(central.url, "CP-OPEN") as cp:
            await cp.call(call.StatusNotification(
                connector_id=0, error_code="NoError", status="Available",
                timestamp=_stamp(behind)))
        moved.by(timedelta(minutes=5))  # the drop; the card started a minute in
        async with connected(central.url, "CP-OPEN") as cp:
            start = await cp.call(call.StartTransaction(
                connector_id=2, id_tag="TAG-OK", meter_start=1_000,
                timestamp=_stamp(behind + timedelta(minutes=1))))
            moved.by(timedelta(minutes=6))
            await cp.call(call.StopTransaction(
                meter_stop=1_500, transaction_id=start.transaction_id,
                timestamp=_stamp(behind + timedelta(minutes=6)), reason="EVDisconnected"))
        session = await central.session(start.transaction_id)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert session.start_clock_behind
    assert (session.energy_wh, session.cost_minor) == (500, 25)
