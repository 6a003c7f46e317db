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

from domain import entities as d
from domain.query import Eq
from ocpp_bridge import simulator
from ocpp_bridge.simulator import connected
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
