"""Reservations against what the records show of their plugs and cards (QA s26): a plug
charging a session, a reservation cancelled while its charger is offline, a card that
expires while it holds one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run

SELECTION = "status reservation { reservationId state } errors { field code message }"


def soon() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def test_a_plug_charging_a_session_is_not_reserved(central: Central) -> None:
    """QA s26: a reserveNow on a plug our records show charging was stored, sent, and
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
