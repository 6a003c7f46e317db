"""The central system's own outages in its chargers' availability and utilization, end to
end: real OCPP chargers (the ``ocpp`` package's client) over websockets to a central
system on an SQLite file, crashed, stopped and restarted on that file where the
operations QA did it (scripts s2_restart, s11_crash, s5, s7)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.ports import Update
from domain.query import Eq, all_of
from domain.services.instances import RECONNECT_GRACE
from ocpp_bridge import simulator
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.server import OcppServer
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.helpers import MovedClock
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central

#: Of an hour's outage, how much may be counted to either side: the moments the test
#: itself takes (connecting, reporting) and ``last_seen``'s own granularity.
SLACK_S = 60.0

SHARES = """query($from: DateTime!, $to: DateTime!) {
  availability(from: $from, to: $to, groupBy: CONNECTOR) {
    cpId connectorId windowSeconds availableSeconds reportedSeconds unknownSeconds }
  utilization(from: $from, to: $to, groupBy: CONNECTOR) {
    cpId connectorId occupiedSeconds chargingSeconds } }"""

HISTORY = """{ station(cpId: "CP-1") { lastSeen
  connectionHistory(first: 10) { edges { node { online at serverOutage } } } } }"""


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def report(cp: SimulatedChargePoint, status: str, at: datetime) -> None:
    """Connector 1's status, stamped ``at`` on the charger's clock."""
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                          status=status, timestamp=stamp(at)))


async def start(cp: SimulatedChargePoint, at: datetime) -> int:
    answer = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG-OK",
                                                 meter_start=1000, timestamp=stamp(at)))
    assert answer.id_tag_info["status"] == "Accepted"
    return int(answer.transaction_id)


async def stop(cp: SimulatedChargePoint, transaction_id: int, at: datetime, reason: str
               ) -> None:
    await cp.call(call.StopTransaction(meter_stop=1100, timestamp=stamp(at),
                                       transaction_id=transaction_id, reason=reason))


def parsed(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def shares(central: Central, start: datetime, end: datetime
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """CP-1 connector 1's availability and utilization rows over ``start`` .. ``end``."""
    data = await central.gql(SHARES, {"from": iso(start), "to": iso(end)}, as_user="admin")
    available = next(r for r in data["availability"]
                     if (r["cpId"], r["connectorId"]) == ("CP-1", 1))
    used = next(r for r in data["utilization"] if (r["cpId"], r["connectorId"]) == ("CP-1", 1))
    return available, used


async def crash(central: Central) -> None:
    """Kills the central system as kill -9 does: nothing it would write on the way out
    (the chargers' disconnects, its lease's release) reaches the database. Its store
    goes first, so what the OCPP server's closing tries to write fails."""
    await central.store.close()
    await central.server.stop()


async def recorded(central: Central, online: bool) -> None:
    """Waits (bounded) until the server has written CP-1's (dis)connect."""
    for _ in range(250):
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        if station is not None and station.online is online:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"CP-1 was never recorded {'online' if online else 'offline'}")


async def test_a_crash_is_no_uptime_and_last_seen_stays_when_the_charger_was_heard(
        tmp_path: Path) -> None:
    """The QA's s11: a charger connects and reports Available, the server is killed, the
    charger never returns, the server restarts (here an hour later). The restart recorded
    the disconnect at its own start, so the hour of the server's outage was counted
    available, and lastSeen and the connection history read the restart time though the
    charger was last heard before the crash."""
    first = await start_central(tmp_path / "central.db")
    await seed(first)
    t0 = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        heard = (await first.store.find_one(d.Station, Eq("cp_id", "CP-1")))
        assert heard is not None and heard.last_seen is not None
        await crash(first)
    crashed = datetime.now(UTC)

    second = await start_central(tmp_path / "central.db", ahead=timedelta(hours=1))
    second.users = first.users
    try:
        available, _ = await shares(second, t0 - timedelta(minutes=1),
                                    t0 + timedelta(hours=2))
        assert available["availableSeconds"] < SLACK_S  # not the hour of the outage
        # Nor offline: nobody was listening. The hour is unknown.
        assert available["reportedSeconds"] < SLACK_S
        assert available["unknownSeconds"] > available["windowSeconds"] - SLACK_S
        data = await second.gql(HISTORY, as_user="admin")
    finally:
        await stop_central(second)
    station = data["station"]
    assert parsed(station["lastSeen"]) == heard.last_seen  # nothing heard since
    newest = station["connectionHistory"]["edges"][0]["node"]
    assert (newest["online"], newest["serverOutage"]) == (False, True)
    assert heard.last_seen <= parsed(newest["at"]) <= crashed


def charger_clock_ahead(monkeypatch: pytest.MonkeyPatch, ahead: timedelta) -> None:
    """The simulated chargers' clock runs ``ahead`` too: they live through the hour the
    restarted server's clock skipped (their timestamps place the state intervals)."""
    monkeypatch.setattr(simulator, "now", lambda: (datetime.now(UTC) + ahead).isoformat(
        timespec="milliseconds").replace("+00:00", "Z"))


async def test_a_clean_stop_is_unknown_time_not_the_chargers_downtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The QA's s2: a charger connected and Available, the server stopped (SIGTERM) for a
    while (here an hour) and started again, the charger connects again. The stop's
    disconnects were recorded as any, so the server's outage was the charger's known
    offline time: reportedSeconds counted it and the uptime KPI fell."""
    first = await start_central(tmp_path / "central.db")
    await seed(first)
    t0 = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        await stop_central(first)  # as SIGTERM stops it: the disconnects are written

    second = await start_central(tmp_path / "central.db", ahead=timedelta(hours=1))
    second.users = first.users
    charger_clock_ahead(monkeypatch, timedelta(hours=1))
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await cp.status(1, "Available")
            available, _ = await shares(second, t0 - timedelta(minutes=1),
                                        t0 + timedelta(hours=2))
            data = await second.gql(HISTORY, as_user="admin")
    finally:
        await stop_central(second)
    # Known: the moments before the stop and since the restart, not the hour between.
    assert available["reportedSeconds"] < SLACK_S
    assert available["unknownSeconds"] > available["windowSeconds"] - SLACK_S
    history = [e["node"] for e in data["station"]["connectionHistory"]["edges"]]
    assert [(e["online"], e["serverOutage"]) for e in history] == [
        (True, False), (False, True), (True, False)]


async def test_charging_ends_with_the_session_when_the_charger_resets_after_it(
        central: Central) -> None:
    """The QA's s5: a 2 s session stopped for a HardReset, the socket closes, the charger
    is away 8 s and reports Available when back. Nothing said the connector stopped
    charging until then: chargingSeconds read 10 of a 2 s session. The StopTransaction
    ends Charging (OCPP 1.6: the connector is Finishing)."""
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await report(cp, "Available", t - timedelta(seconds=5))
        tx = await start(cp, t)
        await report(cp, "Charging", t)
        await stop(cp, tx, t + timedelta(seconds=2), "HardReset")
    await recorded(central, False)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:  # rebooted
        await cp.boot()
        await report(cp, "Available", t + timedelta(seconds=10))
        _, used = await shares(central, t - timedelta(minutes=1), t + timedelta(minutes=1))
        data = await central.gql('{ station(cpId: "CP-1") { connectors { status } } }',
                                 as_user="admin")
    assert (used["occupiedSeconds"], used["chargingSeconds"]) == (2.0, 2.0)
    assert data["station"]["connectors"][0]["status"] == "AVAILABLE"


async def test_a_connector_is_finishing_after_its_stop_until_the_charger_says_more(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        tx = await start(cp, t)
        await cp.call(call.StatusNotification(
            connector_id=1, error_code="NoError", status="Charging", timestamp=stamp(t),
            info="11 kW", vendor_error_code="V-1"))
        await stop(cp, tx, t + timedelta(seconds=2), "Local")
        plug = await central.store.find_one(d.Connector, Eq("cp_id", "CP-1"))
        assert plug is not None
        assert (plug.status, plug.status_at) == (d.ConnectorStatus.FINISHING,
                                                 t + timedelta(seconds=2))
        # As announced, without the Charging report's text and code (review s17).
        assert (plug.info, plug.vendor_error_code) == (None, None)


async def test_an_offline_charger_is_not_charging(central: Central) -> None:
    """A charger charging drops off for an hour mid-session and comes back still
    charging: the hour counts as occupied (the session went on) but not as charging,
    since nobody could tell it was (utilization counted the last status reported)."""
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await report(cp, "Available", t - timedelta(seconds=5))
        tx = await start(cp, t)
        await report(cp, "Charging", t)
    await recorded(central, False)
    with MovedClock(central.services.ctx) as clock:
        clock.by(timedelta(hours=1))  # back an hour later, on its clock as on ours
        back = t + timedelta(hours=1)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await report(cp, "Charging", back)
            await stop(cp, tx, back + timedelta(seconds=2), "Local")
            _, used = await shares(central, t - timedelta(minutes=1), t + timedelta(hours=2))
    assert used["occupiedSeconds"] == 3602.0
    assert 2.0 <= used["chargingSeconds"] < 2.0 + SLACK_S  # not the hour away


# ------------------------------------------- chargers that do not come back after it
async def history(central: Central) -> list[d.ConnectorInterval]:
    """CP-1 connector 1's state history, oldest first (one ended where it began before
    the one that began there)."""
    found = await central.store.find_all(
        d.ConnectorInterval, all_of(Eq("cp_id", "CP-1"), Eq("connector_id", 1)), limit=100)
    return sorted(found, key=lambda i: (i.start, i.end is None, i.end or i.start))


def shape(intervals: list[d.ConnectorInterval]) -> list[tuple[bool, bool, bool]]:
    """(online, known, still open) of each interval from the stop's on (those of the
    connection before it, online and known, as one)."""
    shapes = [(i.online, i.known, i.end is None) for i in intervals]
    while shapes[1:] and shapes[1] == shapes[0] == (True, True, False):
        shapes.pop(0)
    return shapes


async def stopped_with_cp1_connected(path: Path) -> tuple[Central, datetime, datetime]:
    """A leased central system whose CP-1 reported Available, stopped cleanly (as SIGTERM
    stops it); its users, the time before the charger connected and the stop's."""
    first = await start_central(path, leases=True)
    await seed(first)
    t0 = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        await stop_central(first)
    return first, t0, datetime.now(UTC)


async def own_start(central: Central) -> datetime:
    lease = (await central.store.get_many(d.InstanceLease, [central.server.instance_id]))[0]
    assert lease is not None
    return lease.started_at


async def test_a_charger_that_never_comes_back_is_offline_from_the_restart_after_a_grace(
        tmp_path: Path) -> None:
    """The server stops, the charger never returns, the server starts again (an hour
    later). The charger's state is unknown from the stop until the restart; once it has
    not come back within the grace (chargers reconnect with backoff), it is known offline
    from the restart on, and the uptime KPI counts its absence. Before, it stayed
    unknown for ever."""
    first, t0, stopped = await stopped_with_cp1_connected(tmp_path / "central.db")
    second = await start_central(tmp_path / "central.db", ahead=timedelta(hours=1),
                                 leases=True)
    second.users = first.users
    try:
        restarted = await own_start(second)
        await second.server.upkeep()  # within the grace: it may still come back
        assert shape(await history(second)) == [(True, True, False), (False, False, True)]
        with MovedClock(second.services.ctx) as clock:
            clock.by(RECONNECT_GRACE + timedelta(seconds=1))
            await second.server.upkeep()
            settled = await history(second)
            await second.server.upkeep()  # idempotent: nothing more to write
            assert await history(second) == settled
            now = second.services.ctx.clock()
            available, _ = await shares(second, t0 - timedelta(minutes=1), now)
    finally:
        await stop_central(second)
    assert shape(settled) == [(True, True, False), (False, False, False),
                              (False, True, True)]
    *_, unknown, offline = settled
    assert unknown.start <= stopped and unknown.end == restarted == offline.start
    assert (offline.status, offline.point_status) == (unknown.status, unknown.point_status)
    # Known: the moments before the stop and the grace and more since the restart.
    grace = RECONNECT_GRACE.total_seconds()
    assert grace <= available["reportedSeconds"] < grace + SLACK_S
    assert available["availableSeconds"] < SLACK_S
    assert available["unknownSeconds"] > 3600 - SLACK_S  # the hour the server was away


async def test_a_charger_back_within_the_grace_is_unknown_until_it_returns_and_no_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _, stopped = await stopped_with_cp1_connected(tmp_path / "central.db")
    second = await start_central(tmp_path / "central.db", ahead=timedelta(hours=1),
                                 leases=True)
    second.users = first.users
    charger_clock_ahead(monkeypatch, timedelta(hours=1))
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await recorded(second, True)
            back = await history(second)
            with MovedClock(second.services.ctx) as clock:
                clock.by(RECONNECT_GRACE + timedelta(seconds=1))
                await second.server.upkeep()
                assert await history(second) == back  # nothing written for it
    finally:
        await stop_central(second)
    assert shape(back) == [(True, True, False), (False, False, False), (True, True, True)]
    *_, unknown, online = back
    assert unknown.start <= stopped and unknown.end == online.start  # until it returned


def writes_meet(central: Central, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The store's next two writes each wait for the other to arrive: two instances
    that both read the same open interval before either writes."""
    real = central.store.write
    waiting: list[object] = []
    met = asyncio.Event()

    async def write(changes: Any, audit: Any, *guards: Any) -> None:
        waiting.append(changes)
        if len(waiting) == 2:
            met.set()
            monkeypatch.setattr(central.store, "write", real)
        await asyncio.wait_for(met.wait(), 5)
        await real(changes, audit, *guards)
    monkeypatch.setattr(central.store, "write", write)
    return met


async def test_with_another_instance_up_all_along_the_charger_is_offline_from_the_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Instance A stops, B serves throughout: the charger could have connected to B at
    once, so once it has not within the grace it is offline from A's stop on, and the
    two instances settling it at the same moment write it once."""
    a = await start_central(tmp_path / "central.db", leases=True)
    await seed(a)
    b = OcppServer(a.services.charging, OcppGateway(), "127.0.0.1", 0, response_timeout=5,
                   instances=a.services.instances, lease_seconds=3600)
    await b.start()
    try:
        async with connected(a.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await cp.status(1, "Available")
            await a.server.stop()  # A alone stops: its disconnect is the outage's
        c = OcppServer(a.services.charging, OcppGateway(), "127.0.0.1", 0,
                       response_timeout=5, instances=a.services.instances,
                       lease_seconds=3600)
        c.instance_id = "instance-c"
        await a.services.instances.renew(c.instance_id, "c", timedelta(hours=1))
        with MovedClock(a.services.ctx) as clock:
            clock.by(RECONNECT_GRACE + timedelta(seconds=1))
            both_read = writes_meet(a, monkeypatch)
            settled = await asyncio.gather(
                a.services.instances.settle_outages(b.instance_id),
                a.services.instances.settle_outages(c.instance_id))
            assert both_read.is_set()
            intervals = await history(a)
    finally:
        await b.stop()
        await stop_central(a)
    assert sorted(settled) == [[], ["CP-1"]]  # one of the two wrote it
    assert shape(intervals) == [(True, True, False), (False, False, False),
                                (False, True, True)]
    *_, unknown, offline = intervals
    assert unknown.end == unknown.start == offline.start


async def test_a_charger_connecting_as_it_is_settled_is_written_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The charger comes back just as its unknown stretch is settled (on another
    instance, say): its connection read the unknown interval as the open one, and the
    settling wrote before it. The connection reads again and ends the offline interval;
    before, it ended the unknown one over the settling and left the offline one open
    beside its own."""
    await stopped_with_cp1_connected(tmp_path / "central.db")
    second = await start_central(tmp_path / "central.db", ahead=timedelta(hours=1),
                                 leases=True)
    real = second.store.write

    async def settled_first(changes: Any, audit: Any, *guards: Any) -> None:
        if any(isinstance(c, Update) and isinstance(c.record, d.Station) and c.record.online
               for c in changes):
            monkeypatch.setattr(second.store, "write", real)
            assert await second.services.instances.settle_outages(
                second.server.instance_id) == ["CP-1"]
        await real(changes, audit)
    try:
        with MovedClock(second.services.ctx) as clock:
            clock.by(RECONNECT_GRACE + timedelta(seconds=1))
            monkeypatch.setattr(second.store, "write", settled_first)
            async with connected(second.url, "CP-1", password=STATION_PASSWORD):
                await recorded(second, True)
                back = await history(second)
    finally:
        await stop_central(second)
    assert shape(back) == [(True, True, False), (False, False, False),
                           (False, True, False), (True, True, True)]
    assert all(before.end == after.start for before, after in itertools.pairwise(back))


async def test_after_a_crash_a_charger_that_never_comes_back_is_offline_from_the_restart(
        tmp_path: Path) -> None:
    """The crashed process's lease is still stored, unexpired (an hour's), when the
    restarted one settles: it was last renewed before the charger was last heard, so it
    shows nobody up since, and the unknown time runs to the restart, not to the
    crash."""
    first = await start_central(tmp_path / "central.db", leases=True)
    await seed(first)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        await crash(first)
    second = await start_central(tmp_path / "central.db", ahead=timedelta(minutes=30),
                                 leases=True)
    try:
        with MovedClock(second.services.ctx) as clock:
            clock.by(RECONNECT_GRACE + timedelta(seconds=1))
            await second.server.upkeep()
            settled = await history(second)
            crashed_lease = await second.store.get_many(d.InstanceLease,
                                                        [first.server.instance_id])
            assert crashed_lease[0] is not None
        restarted = await own_start(second)
    finally:
        await stop_central(second)
    assert shape(settled) == [(True, True, False), (False, False, False),
                              (False, True, True)]
    *_, unknown, offline = settled
    assert unknown.end == restarted == offline.start
    assert restarted - unknown.start > timedelta(minutes=29)


async def test_the_stop_of_a_transaction_unknown_here_is_logged(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """Ops QA s23: after a restore from an older backup, a charger's stop of a
    transaction started since was answered and forgotten without a word."""
    caplog.set_level(logging.WARNING, logger="chargegraph")
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        answer = await cp.call(call.StopTransaction(
            meter_stop=40_000, timestamp=stamp(datetime.now(UTC)), transaction_id=987_654,
            id_tag="TAG-OK"))
        assert answer.id_tag_info["status"] == "Accepted"  # the charger's queue moves on
    assert await central.store.find_all(d.Session, Eq("transaction_id", 987_654)) == []
    [line] = [r.getMessage() for r in caplog.records if "987654" in r.getMessage()]
    assert "unknown here" in line and "meterStop 40000 Wh" in line, line
