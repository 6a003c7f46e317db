"""The central system's own outages in its chargers' availability and utilization, end to
end: real OCPP chargers (the ``ocpp`` package's client) over websockets to a central
system on an SQLite file, crashed, stopped and restarted on that file where the
operations QA did it (scripts s2_restart, s11_crash, s5, s7)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.query import Eq
from ocpp_bridge import simulator
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
        await report(cp, "Charging", t)
        await stop(cp, tx, t + timedelta(seconds=2), "Local")
        plug = await central.store.find_one(d.Connector, Eq("cp_id", "CP-1"))
        assert plug is not None
        assert (plug.status, plug.status_at) == (d.ConnectorStatus.FINISHING,
                                                 t + timedelta(seconds=2))


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
