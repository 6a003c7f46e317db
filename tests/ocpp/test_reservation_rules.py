"""Reservations against what the records show of their plugs and cards (QA s25): a plug
charging a session, a reservation cancelled while its charger is offline, a card that
expires while it holds one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import Eq
from domain.services.base import patch
from ocpp_bridge.simulator import connected
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_commands import run


@pytest.fixture(params=["direct", "relayed"])
async def central(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Central]:
    """Commands sent directly, and relayed as from another instance (a charger offline
    is then one no instance claims the command for)."""
    c = await start_central(tmp_path / "central.db", relayed=request.param == "relayed")
    await seed(c)
    yield c
    await stop_central(c)


SELECTION = "status reservation { reservationId state } errors { field code message }"


def soon() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def test_a_plug_charging_a_session_is_not_reserved(central: Central) -> None:
    """QA s25: a reserveNow on a plug our records show charging was stored, sent, and
    left to the charger's Occupied (or, at a charger that takes it for the next session,
    answered ACCEPTED for a plug in use). Refused IN_USE before anything is stored or
    sent; "any" connector only once every connector charges; a free plug still is."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.start_transaction(1, "TAG-OTHER")
        busy = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon()}, SELECTION,
                         as_user="driver")
        assert busy["status"] is None and busy["reservation"] is None
        assert [(e["field"], e["code"]) for e in busy["errors"]] == [
            ("connectorId", "IN_USE")]
        assert "charging a session" in busy["errors"][0]["message"]
        assert await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1")) == []
        assert [name for name, _ in cp.received] == []

        await cp.start_transaction(2, "TAG-OK")
        anywhere = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 0,
                                                     "expiryDate": soon(),
                                                     "idTag": "TAG-OTHER"}, SELECTION)
        assert [(e["field"], e["code"]) for e in anywhere["errors"]] == [
            ("connectorId", "IN_USE")]
        assert [name for name, _ in cp.received] == []

        await cp.stop_transaction(1)
        free = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon()}, SELECTION,
                         as_user="driver")
        assert free["errors"] == [] and free["reservation"]["state"] == "ACTIVE", free


async def station_offline(central: Central, cp_id: str) -> None:
    async def offline() -> bool:
        [station] = await central.store.find_all(d.Station, Eq("cp_id", cp_id))
        return not station.online
    await until(offline)


async def test_a_reservation_cancelled_while_its_charger_is_offline(central: Central
                                                                     ) -> None:
    """QA s25: nobody could end a live reservation while its charger was offline (the
    cancel answered CHARGER_OFFLINE and left it ACTIVE): the driver was kept from
    reserving anywhere else until it expired or the charger came back. It is cancelled
    here (CANCELLED, told as CHARGER_OFFLINE: the charger has not heard), and the charger
    is sent the cancel when it connects again, once (its boot after asks again: nothing
    is owed any more)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                                 "expiryDate": soon()}, SELECTION,
                         as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
    number = held["reservation"]["reservationId"]
    await station_offline(central, "CP-1")

    cancel = await run(central, "cancelReservation", {"cpId": "CP-1",
                                                      "reservationId": number},
                       SELECTION, as_user="driver")
    assert cancel["reservation"]["state"] == "CANCELLED", cancel
    assert [e["code"] for e in cancel["errors"]] == ["CHARGER_OFFLINE"]
    assert "sent the cancel when it comes back" in cancel["errors"][0]["message"]
    [stored] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert stored.state is d.ReservationState.CANCELLED
    assert stored.cancel_owed_since is not None
    # Theirs no more: the driver may reserve again (the charger is still offline).
    again = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                              "expiryDate": soon()}, SELECTION,
                      as_user="driver")
    assert [e["code"] for e in again["errors"]] == ["CHARGER_OFFLINE"], again

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        async def delivered() -> bool:
            [now] = await central.store.find_all(d.Reservation,
                                                 Eq("reservation_id", number))
            return now.cancel_owed_since is None
        await until(delivered)
        assert back.received == [("CancelReservation", {"reservation_id": number})]
        await back.boot()
        await central.services.withdrawal.settled()
        assert back.received == [("CancelReservation", {"reservation_id": number})]
    [after] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert after.state is d.ReservationState.CANCELLED


async def test_a_cards_reservation_is_cancelled_when_the_card_expires(central: Central
                                                                      ) -> None:
    """QA s25: a card that expired holding a reservation kept it ACTIVE until its
    charger booted (or it expired): the plug held for a card that could not charge, shown
    reserved, and its driver kept from reserving elsewhere. The expiry sweep cancels it
    at the charger; another card's reservation stays."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        for connector, tag in ((1, "TAG-OK"), (2, "TAG-OTHER")):
            held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": connector,
                                                     "expiryDate": soon(), "idTag": tag},
                             SELECTION)
            assert held["reservation"]["state"] == "ACTIVE", held
        [mine] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        card = central.tags["ok"]
        [stored] = await central.store.get_many(d.IdTag, [card.id])
        assert stored is not None
        await central.store.write([patch(stored, SYSTEM, expires_at=datetime.now(UTC)
                                         - timedelta(seconds=1))], [])
        cp.received.clear()

        await central.services.withdrawal.sweep_expired()
        assert ("CancelReservation", {"reservation_id": mine.reservation_id}) \
            in cp.received
        [after] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        assert after.state is d.ReservationState.CANCELLED
        [kept] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OTHER"))
        assert kept.state is d.ReservationState.ACTIVE
