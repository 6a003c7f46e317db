"""Remote starts and the car they book (review s23): a car charges one session at a time
whichever card starts it; a repeated Preparing or a brief fault does not end a start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.policy import Viewer
from domain.query import ALL, Eq, all_of
from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from tests.ocpp import test_commands
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import (
    START,
    _starts_sent,
    holding_starts,
    run,
    settle,
    started_for_a_second_car,
)

#: Every test runs with the OCPP bridge in this process and relayed from another.
central = test_commands.central


async def _active_for(central: Central, vehicle_id: str) -> list[d.Session]:
    return await central.store.find_all(d.Session, all_of(
        Eq("vehicle_id", vehicle_id), Eq("state", d.SessionState.ACTIVE)))


# F1: "a car charges one session at a time, whichever of its driver's cards starts it".
# TAG-OK is linked to the car (conftest). The car charges with TAG-TWO (vehicleId
# given); then a start with TAG-OK (named) or naming nothing (TAG-OK is picked: the
# first card not charging nor starting) is sent and its session booked to the same car.
@pytest.mark.parametrize("second_start", [{"idTag": "TAG-OK"}, {}],
                         ids=["card-named", "neither-named"])
async def test_a_car_charging_is_not_booked_again_through_its_own_card(
        central: Central, second_start: dict[str, Any]) -> None:
    await central.services.fleet.issue_id_tag(Viewer.of(central.users["driver"]),
                                              tag="TAG-TWO")
    car_id = central.vehicles["car"].id
    car = to_global_id("vehicle", car_id)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        first = await run(central, START, {"cpId": "CP-1", "connectorId": 1,
                                           "idTag": "TAG-TWO", "vehicleId": car},
                          as_user="driver")
        assert first["status"] == "ACCEPTED", first
        await cp.starts_answered()
        await settle()
        assert len(await _active_for(central, car_id)) == 1
        second = await run(central, START, {"cpId": "CP-1", "connectorId": 2,
                                            **second_start}, as_user="driver")
        await cp.starts_answered()
        await settle()
        active = await _active_for(central, car_id)
        assert len(active) == 1, (second, [(s.connector_id, s.id_tag) for s in active])


async def test_a_car_starting_is_not_started_again_through_its_own_card(
        central: Central) -> None:
    """The car's remote start is under way with TAG-TWO (vehicleId given); the driver
    then names TAG-OK, the car's own card: a second start for the same car is sent and
    stored for that car (two PendingStarts for one car)."""
    await central.services.fleet.issue_id_tag(Viewer.of(central.users["driver"]),
                                              tag="TAG-TWO")
    car_id = central.vehicles["car"].id
    car = to_global_id("vehicle", car_id)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp, \
            connected(central.url, "CP-OPEN") as other:
        holding_starts(cp), holding_starts(other)
        await cp.report_all()
        await other.report_all()
        first = await run(central, START, {"cpId": "CP-1", "connectorId": 1,
                                           "idTag": "TAG-TWO", "vehicleId": car},
                          as_user="driver")
        assert first["status"] == "ACCEPTED", first
        second = await run(central, START, {"cpId": "CP-OPEN", "connectorId": 1,
                                            "idTag": "TAG-OK"}, as_user="driver")
        pending = await central.store.find_all(d.PendingStart, ALL)
        for_car = [p for p in pending if p.vehicle_id == car_id]
        assert len(for_car) == 1 and _starts_sent(other) == [], (
            second, [(p.cp_id, p.id_tag, p.vehicle_id) for p in pending])


# F2: documented "a Preparing left from before the start (the car plugged in first)
# settles nothing" (architecture.md, pending_starts.abandoned). preparing_since is the
# connector's updated_at, which any later write moves: a charger repeating Preparing
# (after a reconnect, every few minutes) makes that old Preparing look taken for the start.
async def test_a_preparing_from_before_the_start_repeated_settles_nothing(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        holding_starts(cp)
        await cp.report_all()
        await cp.status(1, "Preparing")  # the car plugged in first
        started = await run(central, START, {"cpId": "CP-1", "connectorId": 1},
                            as_user="driver")
        assert started["status"] == "ACCEPTED", started
        await cp.status(1, "Preparing")  # the charger repeats its state
        await cp.status(1, "Available")
        [pending] = await central.store.find_all(d.PendingStart, ALL)
        assert pending.settled_at is None, "settled by a Preparing from before the start"


# F2 + F3: a start the charger still carries out after a transient Faulted (the plug
# recovers within its ConnectionTimeOut) is settled as given up; its StartTransaction
# then loses the car the driver chose.
async def test_a_transient_fault_does_not_lose_the_chosen_car(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        second = await started_for_a_second_car(central, cp)
        await cp.status(1, "Preparing")
        await cp.status(1, "Faulted", "GroundFailure")
        await cp.status(1, "Preparing", "NoError")
        await cp.start_transaction(1, "TAG-OK")
        [session] = await central.store.find_all(d.Session, Eq("state",
                                                                d.SessionState.ACTIVE))
        assert session.vehicle_id == second.id, "booked to the card's car"


async def test_a_session_whose_start_was_refused_does_not_hold_the_car(
        central: Central) -> None:
    """Review r26-tx2: a session whose start was refused holds no card (``holding_card``),
    but the remote start's car check still counted it: one refused ConcurrentTx, booked to
    the card's car and never stopped by its charger (it cuts the energy), had the driver's
    remote start refused "this car is charging now" for good, and the car could not be
    removed. It holds the car no more than the card (``holding_car``)."""
    start = datetime.now(UTC).replace(microsecond=0)

    def stamp(at: datetime) -> str:
        return at.isoformat().replace("+00:00", "Z")

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()

        async def started(connector_id: int, meter: int, at: datetime) -> tuple[int, str]:
            answer = await cp.call(call.StartTransaction(
                connector_id=connector_id, id_tag="TAG-OK", meter_start=meter,
                timestamp=stamp(at)))
            return answer.transaction_id, answer.id_tag_info["status"]

        first, told = await started(1, 5_000, start)
        assert told == "Accepted"
        refused, told = await started(2, 8_000, start + timedelta(seconds=1))
        assert told == "ConcurrentTx"  # the charger cuts the energy, never stops it
        await cp.call(call.StopTransaction(meter_stop=6_000,
                                           timestamp=stamp(start + timedelta(seconds=2)),
                                           transaction_id=first))
        await cp.status(1, "Available")
        held = await central.session(refused)
        assert held is not None and held.start_refused == "ConcurrentTx"
        assert held.state is d.SessionState.ACTIVE
        assert held.vehicle_id == central.vehicles["car"].id
        started_ = await run(central, "remoteStartTransaction",
                             {"cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK"},
                             as_user="driver")
        assert started_["errors"] == [], started_
        # Nor does it keep the car from being taken out of the garage.
        await central.services.fleet.remove_vehicle(
            Viewer.of(central.users["driver"]), central.vehicles["car"].id)
