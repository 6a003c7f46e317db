"""Reservations racing a station's handover to another company (QA s27): a ReserveNow
that read the station before the handover and stored its reservation after it was booked
in the books of the company that had left the station, told to its webhooks and live
feeds, and (made by that company's operator) sent to a charger they no longer run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.events import ReservationChanged
from domain.policy import SYSTEM, Viewer
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_commands import run


@pytest.fixture(params=["direct", "relayed"])
async def central(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Central]:
    c = await start_central(tmp_path / "central.db", relayed=request.param == "relayed")
    await seed(c)
    yield c
    await stop_central(c)


SELECTION = "status reservation { reservationId state } errors { field code message }"
LIST = "{ reservations { nodes { reservationId state } } }"


def soon() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def handover_during_reserve(central: Central) -> None:
    """Hands CP-1 to Other AG (an admin, as on another instance) the first time a
    ReserveNow has read the station and checked its plug, before it stores anything."""
    commands = central.services.commands
    check, done = commands._refuse_charging_plug, False
    other = central.users["op_other"].company_id

    async def hooked(*a: Any, **kw: Any) -> None:
        nonlocal done
        await check(*a, **kw)
        if not done:
            done = True
            await central.services.stations.update_station(
                SYSTEM, central.stations["CP-1"].id, company_id=other)

    commands._refuse_charging_plug = hooked  # type: ignore[method-assign]


async def test_a_drivers_reservation_racing_a_handover_is_the_new_companys(
        central: Central) -> None:
    """A driver reserves CP-1 (Volt's) as an admin hands it to Other AG. The reservation
    holds a plug of Other AG's station: it is in Other AG's books, Other AG's operator
    sees it and is told of it, and Volt's operator, who no longer runs the station, is
    neither shown it nor told of it (its event carried Volt's ownership)."""
    heard: list[ReservationChanged] = []
    central.services.ctx.published.append(
        lambda e: heard.append(e) if isinstance(e, ReservationChanged) else None)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        handover_during_reserve(central)
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon()}, SELECTION,
                         as_user="driver")
        assert held["errors"] == [] and held["reservation"]["state"] == "ACTIVE", held
    other = central.users["op_other"].company_id
    [stored] = await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1"))
    assert (stored.company_id, stored.station_owner_id) == (other, None), \
        "booked to the company that had left the station"
    volt = await central.gql(LIST, as_user="op")
    assert volt["reservations"]["nodes"] == [], "shown to the company that left"
    theirs = await central.gql(LIST, as_user="op_other")
    assert [n["reservationId"] for n in theirs["reservations"]["nodes"]] == [
        stored.reservation_id]
    assert heard and all(e.company_id == other and e.books_company_id == other
                         for e in heard), [(e.company_id, e.books_company_id)
                                           for e in heard]
    policy = central.services.ctx.policy
    assert not any(policy.sees_event(Viewer.of(central.users["op"]), e) for e in heard)


async def test_an_operators_reservation_racing_a_handover_away_is_refused(
        central: Central) -> None:
    """Volt's operator reserves CP-1 for a driver's card as an admin hands it to Other
    AG: they no longer run the station (NOT_FOUND, as any station they do not see), and
    nothing is stored or sent to the charger on their word."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        handover_during_reserve(central)
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon(), "idTag": "TAG-OK"},
                         SELECTION, as_user="op")
        assert held["reservation"] is None, held
        assert [(e["field"], e["code"]) for e in held["errors"]] == [("cpId", "NOT_FOUND")]
        assert [name for name, _ in cp.received] == []
    assert await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1")) == []
