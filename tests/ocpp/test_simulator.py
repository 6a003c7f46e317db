"""The simulator behaves as a charger does (the demo and `chargegraph simulate` show what
the product does with real ones): a remotely started session meters until it is stopped,
and a start the central system refuses is stopped at once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from ocpp.v16 import call
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import ALL, Eq, all_of
from ocpp_bridge.simulator import (
    FleetPlan,
    SimulatedChargePoint,
    SimulatorConfig,
    _cards_free,
    _open,
    _why,
    connected,
    run_station,
)
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central


def parse(stamp: str) -> datetime:
    """A charger's timestamp as the store keeps it (aware, to the millisecond)."""
    return datetime.fromisoformat(stamp)


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
        # Told Pending (a charger not told acts on what it was: Accepted, and its start
        # would be taken, told Invalid).
        assert (await cp.boot()).status == "Pending"
        assert await cp.charge(1, "TAG-OK", duration_s=60, step_s=30) == 0
        assert cp.connectors[1].transaction_id is None
    assert await sessions(central) == []


def two_stations(central: Central, **more: Any) -> FleetPlan:
    """A fleet of CP-1 and CP-OPEN (no password: it takes any) with one card, TAG-OK,
    short sessions and a fast meter."""
    return FleetPlan(url=central.url, cp_ids=["CP-1", "CP-OPEN"], password=STATION_PASSWORD,
                     id_tags=["TAG-OK"], session_every_s=(0.01, 0.02),
                     session_length_s=(0.2, 0.2), meter_interval_s=0.1, **more)


@contextlib.asynccontextmanager
async def fleet_online(central: Central, plan: FleetPlan) -> AsyncIterator[None]:
    """The plan's stations run (one plan drives them all), each online before the body."""
    stop = asyncio.Event()
    stations = [asyncio.create_task(run_station(plan, cp_id, stop)) for cp_id in plan.cp_ids]
    try:
        async def online() -> bool:
            return all(s.online for s in await central.store.find_all(d.Station, ALL))

        await until(online, attempts=400, step=0.01)
        yield
    finally:
        stop.set()
        await asyncio.gather(*stations)


async def driver_reserves_cp1(central: Central, ends: datetime) -> None:
    """The driver reserves CP-1's plug 1 until ``ends``, accepted."""
    reserved = await central.gql(
        'mutation($e: DateTime!) { reserveNow(input: {cpId: "CP-1", connectorId: 1, '
        'expiryDate: $e}) { status } }', {"e": ends.isoformat()}, as_user="driver")
    assert reserved["reserveNow"]["status"] == "ACCEPTED"


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


async def test_a_fleet_card_rests_between_its_sessions(central: Central) -> None:
    """QA s28: the demo's fleet charged a driver's card again the moment its session
    ended, so the driver signing in found it busy (`IN_USE`) nearly every time. A card
    now rests for ``rest_s`` before the fleet takes it again."""
    plan = FleetPlan(url=central.url, cp_ids=["CP-1"], password=STATION_PASSWORD,
                     id_tags=["TAG-OK"], session_every_s=(0.01, 0.02),
                     session_length_s=(0.2, 0.2), rest_s=(1.0, 1.0), meter_interval_s=0.1)
    stop = asyncio.Event()
    station = asyncio.create_task(run_station(plan, "CP-1", stop))
    try:
        async def two() -> bool:
            return len(await central.store.find_all(d.Session, ALL)) >= 2

        await until(two, attempts=400, step=0.05)
    finally:
        stop.set()
        await station
    first, second = sorted(await central.store.find_all(d.Session, ALL),
                           key=lambda s: s.start_time)
    assert first.end_time is not None
    assert second.start_time - first.end_time >= timedelta(seconds=0.9)


async def test_a_fleet_leaves_alone_a_card_its_driver_started(central: Central) -> None:
    """A driver's remote start on one of the fleet's chargers: the fleet does not start
    that card on another one meanwhile (the central system refused it as ConcurrentTx,
    a refused session in the driver's list)."""
    plan = two_stations(central)
    # Resting while the driver starts it: the fleet may take it from then on.
    plan.resting["TAG-OK"] = asyncio.get_running_loop().time() + 0.5
    async with fleet_online(central, plan):
        started = await central.gql(
            'mutation { remoteStartTransaction(input: {cpId: "CP-1", connectorId: 1, '
            'idTag: "TAG-OK"}) { status } }', as_user="driver")
        assert started["remoteStartTransaction"]["status"] == "ACCEPTED"
        await asyncio.sleep(1.5)  # the rest is over: the fleet looks for cards
    [session] = await central.store.find_all(d.Session, ALL)
    assert session.cp_id == "CP-1" and session.stop_reason == "Local"


async def connector_status(central: Central, cp_id: str, number: int) -> d.ConnectorStatus:
    connector = await central.store.find_one(d.Connector, all_of(
        Eq("cp_id", cp_id), Eq("connector_id", number)))
    assert connector is not None
    return connector.status


async def test_a_reservation_ends_on_the_charger_at_its_expiry(central: Central) -> None:
    """QA s28: the simulated charger held a reserved plug for ever: the demo's map showed
    it RESERVED (not free) long after the reservation expired, its charger answered every
    new reservation there Occupied and refused other cards' starts on it. As OCPP 1.6
    has it (5.13), the charger now frees the plug itself at the expiryDate."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
        reserved = await central.gql(
            'mutation($e: DateTime!) { reserveNow(input: {cpId: "CP-1", connectorId: 1, '
            'expiryDate: $e}) { status errors { code } } }', {"e": soon}, as_user="driver")
        assert reserved["reserveNow"]["status"] == "ACCEPTED", reserved

        async def held() -> bool:
            return await connector_status(central, "CP-1", 1) is d.ConnectorStatus.RESERVED

        await until(held)

        async def freed() -> bool:
            return await connector_status(central, "CP-1", 1) is d.ConnectorStatus.AVAILABLE

        await until(freed, attempts=100, step=0.05)
        assert datetime.now(UTC) >= datetime.fromisoformat(soon)
        assert cp.connectors[1].reservation_id is None
        assert cp.on_remote_start("TAG-OTHER", 1).status == "Accepted"


async def test_a_fleet_leaves_alone_a_card_its_driver_reserved_with(
        central: Central) -> None:
    """The driver is on the way to the plug they reserved: the fleet does not charge
    their card elsewhere meanwhile (a driver of the demo who reserved found their card
    charging at the next plug), and takes it again once the reservation is over."""
    plan = two_stations(central)
    plan.resting["TAG-OK"] = asyncio.get_running_loop().time() + 0.5
    async with fleet_online(central, plan):
        ends = datetime.now(UTC) + timedelta(seconds=1.5)
        await driver_reserves_cp1(central, ends)

        async def charged_again() -> bool:
            return bool(await central.store.find_all(d.Session, ALL))

        await until(charged_again, attempts=200, step=0.05)
    first = min(s.start_time for s in await central.store.find_all(d.Session, ALL))
    assert first >= ends


async def test_a_card_rests_after_its_drivers_own_session(central: Central) -> None:
    """README: "each card resting a minute or more between its sessions, so a driver
    signed in finds theirs free". Review r28-firstrun: only the fleet's own sessions were
    followed by a rest; after a session its driver started and stopped themself the fleet
    took the card at its next look (the demo's 8 stations look every ~5 s between them),
    and the driver who stopped to reserve or start elsewhere got IN_USE."""
    plan = two_stations(central, rest_s=(1.0, 1.0))
    plan.resting["TAG-OK"] = asyncio.get_running_loop().time() + 60  # the driver's turn
    async with fleet_online(central, plan):
        started = await central.gql(
            'mutation { remoteStartTransaction(input: {cpId: "CP-1", connectorId: 1, '
            'idTag: "TAG-OK"}) { status } }', as_user="driver")
        assert started["remoteStartTransaction"]["status"] == "ACCEPTED"

        async def running() -> bool:
            return any(s.transaction_id for s in await central.store.find_all(d.Session, ALL))

        await until(running, attempts=200, step=0.02)
        plan.resting.clear()  # long over by the time the driver stops (a real session)
        [session] = await central.store.find_all(d.Session, ALL)
        await central.gql(
            f'mutation {{ remoteStopTransaction(input: {{cpId: "CP-1", '
            f'transactionId: {session.transaction_id}}}) {{ status }} }}', as_user="driver")

        async def ended() -> bool:
            return all(s.end_time for s in await central.store.find_all(d.Session, ALL))

        await until(ended, attempts=200, step=0.02)
        await asyncio.sleep(0.8)
    mine, *later = sorted(await central.store.find_all(d.Session, ALL),
                          key=lambda s: s.start_time)
    assert mine.end_time is not None
    # Rested a second; without the rest the fleet takes the card within its next look
    # (0.01–0.02 s). Half the rest tells them apart even when a loaded machine stamps the
    # stop and the next start some 0.2 s closer than the rest it measured.
    early = [s for s in later if s.start_time - mine.end_time < timedelta(seconds=0.5)]
    assert early == [], [(s.cp_id, s.start_time - mine.end_time) for s in early]


async def test_a_card_rests_after_a_reservation_that_held_it(central: Central) -> None:
    """A reservation's end (here its expiry) frees the card as a session's does: it
    rests before the fleet takes it (review r28-firstrun: taken at the next look)."""
    plan = two_stations(central, rest_s=(1.0, 1.0))
    plan.resting["TAG-OK"] = asyncio.get_running_loop().time() + 60  # the driver's turn
    async with fleet_online(central, plan):
        ends = datetime.now(UTC) + timedelta(seconds=1)
        await driver_reserves_cp1(central, ends)

        async def held() -> bool:
            return "TAG-OK" in plan.chargers["CP-1"].cards_in_use()

        await until(held, attempts=200, step=0.01)
        plan.resting.clear()  # long over by the time the reservation ends

        async def charged_again() -> bool:
            return bool(await central.store.find_all(d.Session, ALL))

        await until(charged_again, attempts=200, step=0.05)
    first = min(s.start_time for s in await central.store.find_all(d.Session, ALL))
    assert first - ends >= timedelta(seconds=0.8), first - ends


async def test_a_reservation_cancelled_between_two_looks_still_rests_its_card(
        central: Central) -> None:
    """The fleet looks for cards now and then: a hold that began and ended between two
    looks (a reservation made and cancelled at once) is a hold all the same, and its
    card rests before the fleet takes it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        plan = FleetPlan(url=central.url, cp_ids=["CP-1"], id_tags=["TAG-OK"],
                         rest_s=(60.0, 60.0), chargers={"CP-1": cp})
        assert _cards_free(plan, 0.0) == ["TAG-OK"]
        soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        assert cp.on_reserve_now(1, soon, "tag-ok", 7).status == "Accepted"
        assert cp.on_cancel_reservation(7).status == "Accepted"
        assert _cards_free(plan, 1.0) == []
        assert plan.resting["TAG-OK"] == 61.0
        assert _cards_free(plan, 61.0) == ["TAG-OK"]
        await cp.stop_follow_ups()


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


@contextlib.contextmanager
def unretrieved_task_errors() -> Iterator[list[dict[str, Any]]]:
    """What the loop's exception handler got ("Task exception was never retrieved" and
    the like), once the finished tasks are collected."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        yield errors
    finally:
        gc.collect()
        loop.set_exception_handler(previous)


async def session_of(central: Central) -> d.Session | None:
    return await central.store.find_one(d.Session, Eq("cp_id", "CP-1"))


async def online(central: Central) -> bool:
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    return station is not None and station.online


def one_long_session(central: Central) -> FleetPlan:
    """CP-1 starting one long session at once, metering fast and reconnecting fast."""
    return FleetPlan(url=central.url, cp_ids=["CP-1"], password=STATION_PASSWORD,
                     id_tags=["TAG-OK"], session_every_s=(0.01, 0.02),
                     session_length_s=(600, 600), meter_interval_s=0.05,
                     reconnect_s=(0.05, 0.2))


async def test_a_station_reconnects_after_a_server_restart_and_its_transaction_goes_on(
        tmp_path: Path) -> None:
    """The server stopped (its chargers' sockets closed) and started again on its port:
    the station noticed only at its next heartbeat or session, so it never came back,
    its session stayed ACTIVE and its tasks' ConnectionClosedOK were never retrieved.
    Now it reconnects within its backoff, delivers the meter values it kept while the
    server was down, and the same transaction goes on to its StopTransaction."""
    path = tmp_path / "central.db"
    central = await start_central(path)
    await seed(central)
    port = central.server.bound_port
    plan = one_long_session(central)
    stop = asyncio.Event()
    running: Central | None = central
    with unretrieved_task_errors() as errors:
        station = asyncio.create_task(run_station(plan, "CP-1", stop))
        try:
            async def metered() -> bool:
                found = await session_of(central)
                return found is not None and found.energy_wh > 0

            await until(metered, attempts=400, step=0.025)
            before = await session_of(central)
            assert before is not None
            running = None
            await stop_central(central)
            charger = plan.chargers["CP-1"]

            async def kept() -> bool:  # the car charges on; its meter values are kept
                return len(charger.outbox) >= 2

            await until(kept, attempts=400, step=0.025)
            offline = [m.meter_value[0]["timestamp"] for m in charger.outbox
                       if isinstance(m, call.MeterValues)]
            central = await start_central(path, port=port)
            running = central

            async def resumed() -> bool:
                session = await session_of(central)
                samples = await central.store.find_all(
                    d.MeterSample, Eq("transaction_id", before.transaction_id))
                stamps = {s.at for s in samples}
                return await online(central) and session is not None \
                    and session.energy_wh > before.energy_wh \
                    and all(parse(stamp) in stamps for stamp in offline)

            await until(resumed, attempts=400, step=0.025)
            stop.set()
            await station  # the station stops its transaction as it goes
            [session] = await central.store.find_all(d.Session, ALL)
        finally:
            stop.set()
            await station
            if running is not None:
                await stop_central(running)
    assert session.transaction_id == before.transaction_id
    assert session.state is d.SessionState.COMPLETED and session.stop_reason == "Local"
    assert errors == []


async def test_a_transaction_ended_while_the_server_is_down_is_closed_once_it_is_back(
        tmp_path: Path) -> None:
    """The car left while the server was down: the charger keeps its StopTransaction and
    sends it after reconnecting, with the time and meter reading of the stop."""
    path = tmp_path / "central.db"
    central = await start_central(path)
    await seed(central)
    port = central.server.bound_port
    plan = one_long_session(central)
    stop = asyncio.Event()
    running: Central | None = central
    station = asyncio.create_task(run_station(plan, "CP-1", stop))
    try:
        async def charging() -> bool:
            # Recorded here, and its answer (the transaction id) heard by the charger:
            # the session is written before the answer goes out.
            charger = plan.chargers.get("CP-1")
            return await session_of(central) is not None and charger is not None \
                and any(c.transaction_id for c in charger.connectors.values())

        await until(charging, attempts=400, step=0.025)
        running = None
        await stop_central(central)
        charger = plan.chargers["CP-1"]
        [connector] = [i for i, c in charger.connectors.items() if c.transaction_id]
        await charger.stop_transaction(connector, "EVDisconnected")
        plan.id_tags.clear()  # the driver went home: no session starts after it
        [ended] = [m for m in charger.outbox if isinstance(m, call.StopTransaction)]
        central = await start_central(path, port=port)
        running = central

        async def closed() -> bool:
            session = await session_of(central)
            return session is not None and session.state is d.SessionState.COMPLETED

        await until(closed, attempts=400, step=0.025)
        await until(lambda: online(central), attempts=400, step=0.025)
        session = await session_of(central)
    finally:
        stop.set()
        await station
        if running is not None:
            await stop_central(running)
    assert session is not None and session.stop_reason == "EVDisconnected"
    assert session.end_time == parse(ended.timestamp)
    assert session.meter_stop_wh == ended.meter_stop
    assert charger.outbox == deque() and charger.connectors[connector].status == "Available"


async def test_the_simulator_keeps_reservations_and_site_limits(central: Central) -> None:
    """QA (s16, a driver app on the demo): the simulator started any card on a connector
    reserved for another, never named the reservation it took up (it stayed ACTIVE),
    metered 1 Wh above its meterStop (rounded, where the stop truncates), and drew its
    car's power whatever limit a site sent it."""
    config = SimulatorConfig(meter_interval_s=30, max_power_w=22_000)  # no ticks of its own
    soon = (datetime.now().astimezone() + timedelta(hours=1)).isoformat()
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         config=config) as cp:
        await cp.report_all()
        cp.connectors[1].meter_wh = 1_000.6
        reserved = await central.gql(
            'mutation($e: DateTime!) { reserveNow(input: {cpId: "CP-1", connectorId: 1, '
            'expiryDate: $e}) { reservation { reservationId } errors { code } } }',
            {"e": soon}, as_user="driver2")
        number = reserved["reserveNow"]["reservation"]["reservationId"]
        assert cp.on_remote_start("TAG-OK", 1).status == "Rejected"  # not its card
        assert cp.on_remote_start("tag-other", 1).status == "Accepted"
        await cp._start_remotely("TAG-OTHER")
        [session] = await sessions(central)
        assert (session.reservation_id, session.meter_start_wh) == (number, 1_000)
        [held] = await central.store.find_all(d.Reservation, ALL)
        assert held.state is d.ReservationState.USED
        cp.on_set_charging_profile(1, {
            "charging_profile_id": 1, "stack_level": 0,
            "transaction_id": session.transaction_id,
            "charging_profile_purpose": "TxProfile", "charging_profile_kind": "Relative",
            "charging_schedule": {"charging_rate_unit": "A", "charging_schedule_period": [
                {"start_period": 0, "limit": 10.0, "number_phases": 3}]}})
        assert cp.drawn_w(1) == 6_900.0  # 10 A on three 230 V phases
        cp.connectors[1].power_w = 22_000.0
        await cp.meter_values(1, 3600)  # an hour at the limit
        await cp.stop_transaction(1)
        # Review s16: the profile outlived its transaction, the next one drew its limit.
        assert cp.charging_profiles == {}
        cp.connectors[1].power_w = 11_000.0
        assert cp.drawn_w(1) == 11_000.0
    [session] = await sessions(central)
    assert session.energy_wh == 6_900
    registers = [m.value for m in await central.store.find_all(d.MeterSample, Eq(
        "measurand", "Energy.Active.Import.Register"))]
    assert registers == [7_900.0] == [session.meter_stop_wh]  # whole Wh, as the stop


async def test_a_refused_handshake_is_said_plainly_and_retried(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """QA (onboarding): `simulate` against a server without its stations logged a raw
    ``InvalidStatus(Response(...))`` at every retry. A station the server does not know,
    a wrong password and a wrong path are each one plain line, and retried at the
    backoff (the station may be created meanwhile)."""
    caplog.set_level(logging.WARNING, "chargegraph.simulator")
    root = central.url.removesuffix("/ocpp")
    # An unknown station and a wrong password read the same (the server answers both
    # 401: cpIds are not to be probed), the line naming both causes.
    refused = ("the server refused its credentials (HTTP 401): the station must exist "
               "(createStation, or CHARGEGRAPH_AUTO_REGISTER=true) and --password be its "
               "password; the server's log says which")
    cases = [(central.url, "SIM-0001", None, f"SIM-0001: {refused}"),
             (central.url, "CP-1", "not-the-password", f"CP-1: {refused}"),
             (f"{root}/ocpp/x/y", "CP-1", STATION_PASSWORD,
              f"CP-1: no OCPP endpoint at {root}/ocpp/x/y (HTTP 404): use "
              "ws://host:port/ocpp")]
    for url, cp_id, password, said in cases:
        caplog.clear()
        plan = FleetPlan(url=url, cp_ids=[cp_id], password=password,
                         reconnect_s=(0.01, 0.02))
        stop = asyncio.Event()
        station = asyncio.create_task(run_station(plan, cp_id, stop))

        async def retried() -> bool:
            return len(caplog.records) >= 2

        try:
            await until(retried)
        finally:
            stop.set()
            await station
        lines = [record.getMessage() for record in caplog.records]
        assert all(line.startswith(f"{said}, reconnecting in ") for line in lines), lines
        assert "Response(" not in caplog.text


async def refused_status(url: str, cp_id: str, password: str | None) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        ws = await _open(url, cp_id, password)
        await ws.close()
    return refused.value


async def test_a_locked_out_station_is_said_to_be_held_off_from_here_only(
        central: Central) -> None:
    """QA s28: `simulate --password` started before its stations exist (the README allows
    it) is refused 429 after five tries, the server's lockout of that station from that address,
    and said only "the server refused the connection (HTTP 429)". Review r28-firstrun:
    the line said the whole address was held off; the lockout is per station and address,
    and the address's other stations get in."""
    for _ in range(10):
        refused = await refused_status(central.url, "SIM-0001", STATION_PASSWORD)
        if refused.response.status_code == 429:
            break
        assert refused.response.status_code == 401
    said = _why("SIM-0001", central.url, refused)
    assert said.startswith("SIM-0001: the server locks this station out from this "
                           "address for now (HTTP 429, Retry-After "), said
    assert "too many refused attempts of it from here (a station the server does not " \
           "know, a wrong --password); other stations are not held off" in said, said
    ws = await _open(central.url, "CP-1", STATION_PASSWORD)  # as the line says
    await ws.close()


async def test_the_auto_registration_limit_is_not_said_to_be_refused_attempts(
        tmp_path: Path) -> None:
    """README: `simulate` against a server with CHARGEGRAPH_AUTO_REGISTER=true registers
    its stations as Pending; beyond CHARGEGRAPH_AUTO_REGISTER_PER_HOUR new cpIds from one
    address the server answers 429 "too many new charge points". Review r28-firstrun: the
    line blamed refused attempts and wrong passwords, none of which was so; it names the
    registration limit and the setting that raises it."""
    central = await start_central(tmp_path / "c.db", auto_register=True)
    try:
        central.services.charging.registrations.limit = 1  # stands for the 50 an hour
        first = await _open(central.url, "SIM-0001", None)
        await first.close()
        refused = await refused_status(central.url, "SIM-0002", None)
        assert refused.response.status_code == 429
        said = _why("SIM-0002", central.url, refused)
        assert "refused attempts" not in said and "password" not in said, said
        assert said.startswith("SIM-0002: the server registers no more new charge points "
                               "from this address for now (HTTP 429, Retry-After "), said
        assert "CHARGEGRAPH_AUTO_REGISTER_PER_HOUR" in said, said
    finally:
        await stop_central(central)


def test_another_servers_429_is_said_in_its_own_words() -> None:
    """A 429 from a proxy or another server: its text, not a guess at ChargeGraph's."""
    refused = InvalidStatus(Response(429, "Too Many Requests", Headers({"Retry-After": "9"}),
                                     b"slow down\n"))
    assert _why("SIM-0001", "ws://127.0.0.1:9000/ocpp", refused) == (
        "SIM-0001: the server holds the station off for now (HTTP 429, Retry-After 9 s): "
        "slow down; it tries again")


def held(cp: SimulatedChargePoint, connector: int, profile_id: int, purpose: str,
         level: int, limit_w: float, transaction_id: int | None = None) -> None:
    profile: dict[str, Any] = {
        "charging_profile_id": profile_id, "stack_level": level,
        "charging_profile_purpose": purpose, "charging_profile_kind": "Relative",
        "charging_schedule": {"charging_rate_unit": "W", "charging_schedule_period": [
            {"start_period": 0, "limit": limit_w}]}}
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    assert cp.on_set_charging_profile(connector, profile).status == "Accepted"


def test_the_simulator_composes_profiles_as_ocpp_does() -> None:
    """A site's fallback (a TxDefaultProfile on connector 0) governs a session only until
    its own TxProfile arrives, whatever their limits: the simulator drew the lowest of
    every profile it held, so a session's share above the fallback was never drawn."""
    cp = SimulatedChargePoint("SIM", cast(Any, None), SimulatorConfig(max_power_w=22_000))
    cp.connectors[1].transaction_id = 7
    cp.connectors[1].power_w = 22_000.0
    held(cp, 0, 100, "TxDefaultProfile", 90, 4_140.0)
    assert cp.drawn_w(1) == 4_140.0
    held(cp, 0, 101, "TxDefaultProfile", 5, 1_000.0)  # a lower level loses
    assert cp.drawn_w(1) == 4_140.0
    held(cp, 1, 102, "TxDefaultProfile", 90, 11_000.0)  # the connector's own wins a tie
    assert cp.drawn_w(1) == 11_000.0
    held(cp, 1, 103, "TxProfile", 10, 18_000.0, transaction_id=7)  # overrules defaults
    assert cp.drawn_w(1) == 18_000.0
    held(cp, 1, 104, "TxProfile", 20, 16_000.0, transaction_id=7)
    assert cp.drawn_w(1) == 16_000.0
    held(cp, 1, 105, "TxProfile", 30, 2_000.0, transaction_id=8)  # another transaction's
    assert cp.drawn_w(1) == 16_000.0
    held(cp, 0, 106, "ChargePointMaxProfile", 0, 12_000.0)  # caps the whole
    assert cp.drawn_w(1) == 12_000.0
