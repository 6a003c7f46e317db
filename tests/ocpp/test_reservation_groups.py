"""A reservation an operator makes for a card and its group (ReserveNow's parentIdTag,
QA s27): the charger holds the plug for the card and every card of the group named, but
the group was sent and not kept. A card of that group was refused a remote start there
("reserved for another card"), and its StartTransaction on the reservation left it
ACTIVE: the charger had ended it, and the plug stayed held for nobody (shown reserved,
other drivers refused, nothing else reservable) until its expiry, up to a day."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_commands import run


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Central]:
    """The seed, and a driver of Volt GmbH whose card is in Volt's group FLEET-1."""
    c = await start_central(tmp_path / "central.db")
    await seed(c)
    volt = c.users["op"].company_id
    c.users["fleet"] = await c.services.accounts.create_user(
        SYSTEM, email="fleet@example.com", password="password-123", name="fleet",
        role=d.Role.DRIVER, company_id=volt)
    card = await c.services.fleet.issue_id_tag(SYSTEM, tag="TAG-FLEET",
                                               user_id=c.users["fleet"].id)
    c.tags["fleet"] = await c.services.fleet.update_id_tag(SYSTEM, card.id,
                                                           parent_tag="FLEET-1")
    yield c
    await stop_central(c)


SELECTION = "status reservation { reservationId state } errors { field code message }"


async def reserved_for_the_group(central: Central) -> int:
    held = await run(central, "reserveNow", {
        "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK", "parentIdTag": "FLEET-1",
        "expiryDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, SELECTION)
    assert held["reservation"]["state"] == "ACTIVE", held
    return int(held["reservation"]["reservationId"])


async def test_a_card_of_the_group_named_takes_up_the_reservation(central: Central
                                                                  ) -> None:
    """Volt's operator reserves plug 1 for TAG-OK and the group FLEET-1. A FLEET-1 card
    starts there on the reservation, as the charger let it: the reservation is USED by
    that session, and the plug is held no more."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        number = await reserved_for_the_group(central)
        _, status = await cp.start_transaction(1, "TAG-FLEET", reservation_id=number)
        assert status == "Accepted"
    [after] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert after.state is d.ReservationState.USED, "the charger ended it; still held here"
    [session] = await central.store.find_all(d.Session, Eq("id_tag", "TAG-FLEET"))
    assert session.reservation_id == number


async def test_a_card_of_the_group_named_may_remote_start_there(central: Central) -> None:
    """The FLEET-1 driver's remote start on plug 1 is sent (the charger holds the plug
    for their group), not refused as another card's reservation; a card of no such
    group still is."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        await reserved_for_the_group(central)
        mate = await run(central, "remoteStartTransaction",
                         {"cpId": "CP-1", "connectorId": 1}, "status errors { field code }",
                         as_user="fleet")
        assert ("connectorId", "IN_USE") not in [(e["field"], e["code"])
                                                 for e in mate["errors"]], mate
        assert [p["id_tag"] for name, p in cp.received
                if name == "RemoteStartTransaction"] == ["TAG-FLEET"]
        other = await run(central, "remoteStartTransaction",
                          {"cpId": "CP-1", "connectorId": 1}, "status errors { field code }",
                          as_user="driver2")
        assert [(e["field"], e["code"]) for e in other["errors"]] == [
            ("connectorId", "IN_USE")]
