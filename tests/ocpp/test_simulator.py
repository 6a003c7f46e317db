"""The simulator behaves as a charger does (the demo and `chargegraph simulate` show what
the product does with real ones): a remotely started session meters until it is stopped,
and a start the central system refuses is stopped at once."""

from __future__ import annotations

import asyncio

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import ALL, Eq
from ocpp_bridge.simulator import FleetPlan, SimulatorConfig, connected, run_station
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central


async def sessions(central: Central) -> list[d.Session]:
    return await central.store.find_all(d.Session, Eq("cp_id", "CP-1"))


async def test_a_remotely_started_session_meters_until_it_is_stopped(
        central: Central) -> None:
    config = SimulatorConfig(meter_interval_s=0.1)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         config=config) as cp:
        await cp.report_all()
        started = await central.gql(
            'mutation { remoteStartTransaction(input: {cpId: "CP-1", connectorId: 1, '
            'idTag: "TAG-OK"}) { status } }', as_user="driver")
        assert started["remoteStartTransaction"]["status"] == "ACCEPTED"

        async def metered() -> bool:
            found = await sessions(central)
            return bool(found) and found[0].energy_wh > 0

        await until(metered)
        [session] = await sessions(central)
        await central.gql(
            f'mutation {{ remoteStopTransaction(input: {{cpId: "CP-1", '
            f'transactionId: {session.transaction_id}}}) {{ status }} }}', as_user="driver")

        async def stopped() -> bool:
            return (await sessions(central))[0].state is d.SessionState.COMPLETED

        await until(stopped)
        sent = len(cp.received)
        await asyncio.sleep(0.3)  # no meter values for a stopped transaction
        assert cp.connectors[1].transaction_id is None and len(cp.received) == sent


async def test_a_refused_start_is_stopped_at_once(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        await cp.charge(1, "TAG-BLOCKED", duration_s=60, step_s=30)
        [session] = await sessions(central)
        assert session.state is d.SessionState.COMPLETED
        assert session.stop_reason == "DeAuthorized"
        assert cp.connectors[1].transaction_id is None


async def test_a_start_answered_with_a_callerror_leaves_the_plug_free(
        central: Central) -> None:
    """A station not accepted is answered SecurityError: the simulated charger reports
    the plug Available again instead of failing its task on the missing answer."""
    await central.services.stations.update_station(
        SYSTEM, central.stations["CP-1"].id, registration=d.Registration.PENDING)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert await cp.charge(1, "TAG-OK", duration_s=60, step_s=30) == 0
        assert cp.connectors[1].transaction_id is None
    assert await sessions(central) == []


async def test_a_fleet_never_charges_one_card_twice_at_once(central: Central) -> None:
    plan = FleetPlan(url=central.url, cp_ids=["CP-1", "CP-OPEN"], password=STATION_PASSWORD,
                     id_tags=["TAG-OK"], session_every_s=(0.01, 0.02),
                     session_length_s=(0.3, 0.3), meter_interval_s=0.1)
    stop = asyncio.Event()
    # A station without a password takes any: one plan drives both.
    stations = [asyncio.create_task(run_station(plan, cp_id, stop))
                for cp_id in plan.cp_ids]
    try:
        async def several() -> bool:
            return len(await central.store.find_all(d.Session, ALL)) >= 4

        await until(several, attempts=400, step=0.05)
    finally:
        stop.set()
        await asyncio.gather(*stations)
    refused = [s for s in await central.store.find_all(d.Session, ALL)
               if s.stop_reason == "DeAuthorized"]
    assert refused == []


async def test_a_station_that_stops_ends_what_it_charges(central: Central) -> None:
    """Stopped mid-session (the demo shutting down), a simulated station sends its
    StopTransaction before it goes: left open, its card was busy with a session no
    charger had, and the restarted demo's starts with it were refused."""
    plan = FleetPlan(url=central.url, cp_ids=["CP-1"], password=STATION_PASSWORD,
                     id_tags=["TAG-OK"], session_every_s=(0.01, 0.02),
                     session_length_s=(60, 60), meter_interval_s=0.1)
    stop = asyncio.Event()
    station = asyncio.create_task(run_station(plan, "CP-1", stop))
    try:
        async def charging() -> bool:
            return len(await central.store.find_all(d.Session, ALL)) >= 1

        await until(charging, attempts=400, step=0.05)
    finally:
        stop.set()
        await station
    [session] = await central.store.find_all(d.Session, ALL)
    assert session.state is d.SessionState.COMPLETED and session.stop_reason == "Local"
