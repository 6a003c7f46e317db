"""The live map's ``free`` on connector status events (review s23): heard when a session
starts or ends on a plug, a reservation begins or stops holding one, and only when it
changes; with or without an event bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from domain.events import ConnectorStatusChanged
from domain.services.webhooks import webhook_event
from ocpp_bridge.simulator import connected
from pubsub.memory import MemoryEventBus
from tests.helpers import soon
from tests.ocpp import test_commands
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_charger_actions import ReservesWithoutSayingSo
from tests.ocpp.test_commands import run, settle
from tests.support.mongo_backend import open_mongo_store

#: Every test runs with the OCPP bridge in this process and relayed from another.
central = test_commands.central


@pytest.fixture
async def bused(tmp_path: Path) -> AsyncIterator[Central]:
    """A central with an event bus, as every server runs."""
    c = await start_central(tmp_path / "bus.db", bus=MemoryEventBus())
    await seed(c)
    yield c
    await stop_central(c)


PLUGS = """{ connectors(first: 10, filter: {cpId: "CP-1"}) { nodes { connectorId free } } }"""


def _heard(central: Central) -> list[Any]:
    got: list[Any] = []
    central.services.commands.ctx.published.append(got.append)
    return got


def _status(events: list[Any], connector_id: int) -> list[tuple[str, bool | None]]:
    return [(e.status, e.free) for e in events
            if isinstance(e, ConnectorStatusChanged) and e.connector_id == connector_id]


async def _free(central: Central, connector_id: int, as_user: str = "op") -> bool:
    nodes = (await central.gql(PLUGS, as_user=as_user))["connectors"]["nodes"]
    return next(n["free"] for n in nodes if n["connectorId"] == connector_id)


# "A plug is available now ... while it is free": the map follows `free` from events.
async def test_a_session_on_a_plug_reporting_available_is_heard_as_not_free(
        central: Central) -> None:
    """QA s20's charger: Available, then StartTransaction and no Preparing/Charging.
    The plug is taken (availableNow drops it, Connector.free is false), but the last
    event the map heard says free=true and no event follows."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        events = _heard(central)
        await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=0,
                                            timestamp=datetime.now(UTC).isoformat()))
        await settle()
        assert await _free(central, 1) is False
        assert _status(events, 1) and _status(events, 1)[-1][1] is False, (
            "the map still holds free=true for a plug with an ACTIVE session",
            _status(events, 1))


async def test_a_plug_reported_available_before_its_stop_is_heard_free_after_it(
        central: Central) -> None:
    """The charger reports Available (cable out) before its StopTransaction arrives:
    the Available event reads free=false (the session is still ACTIVE), and the stop
    publishes nothing more (the connector was reported after the stop's time), so the
    map shows the plug taken for good while availableNow lists it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        await cp.status(1, "Charging")
        stopped_at = datetime.now(UTC).isoformat()
        events = _heard(central)
        await cp.status(1, "Available")
        await cp.call(call.StopTransaction(meter_stop=1000, timestamp=stopped_at,
                                           transaction_id=tx, reason="EVDisconnected"))
        await settle()
        assert await _free(central, 1) is True  # Connector.free, as the filter reads it
        assert _status(events, 1)[-1] == ("Available", True), _status(events, 1)


async def test_one_reservation_is_one_webhook_per_plug_it_takes(bused: Central) -> None:
    """A reservation accepted by a charger that reports no Reserved: the plug is taken
    once, but connector.status_changed is delivered twice with the same payload (once
    stored PENDING, once ACTIVE), every receiver told twice."""
    async with connected(bused.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=ReservesWithoutSayingSo) as cp:
        await cp.report_all()
        events = _heard(bused)
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        reserved = await run(bused, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OTHER", "expiryDate": expiry})
        assert reserved["status"] == "ACCEPTED", reserved
        await settle()
        hooks = [(e.connector_id, e.status, e.free, e.at) for e in events
                 if webhook_event(e) is not None and isinstance(e, ConnectorStatusChanged)]
        assert len(hooks) == len(set(hooks)), hooks


async def test_a_reservation_refused_on_a_busy_plug_says_nothing_to_the_map(
        bused: Central) -> None:
    """Another driver's reservation attempt on a plug that is charging (the charger
    answers Occupied): `free` is false before, during and after, yet the public feed
    carries two events for that plug, status unchanged, which by the docs say "a
    reservation began or stopped holding the plug": anyone on the map learns of
    another's reservation attempt, beyond what `free` says."""
    async with connected(bused.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        await cp.start_transaction(2, "TAG-OK")
        await cp.status(2, "Charging")
        await settle()
        events = _heard(bused)
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        await run(bused, "reserveNow", {
            "cpId": "CP-1", "connectorId": 2, "idTag": "TAG-OTHER", "expiryDate": expiry})
        await settle()
        public = [(e.status, e.free) for e in events
                  if isinstance(e, ConnectorStatusChanged) and e.on_map]
        assert public == [], public


async def test_a_reservation_is_heard_ending_without_an_event_bus(central: Central) -> None:
    """Service.publish returns when ctx.bus is None before ``plugs_held``: a process
    without a bus (tests, CLI) publishes the PENDING follow-up (CommandService calls
    plugs_held itself) but none for ACTIVE/CANCELLED/REJECTED/USED/EXPIRED: a
    cancelled reservation is never heard as freeing its plug by local listeners
    (webhooks)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=ReservesWithoutSayingSo) as cp:
        await cp.report_all()
        events = _heard(central)
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        reserved = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OTHER", "expiryDate": expiry},
            "status reservation { reservationId }")
        await run(central, "cancelReservation", {
            "cpId": "CP-1", "reservationId": reserved["reservation"]["reservationId"]})
        await settle()
        assert _status(events, 1)[-1:] == [("Available", True)], _status(events, 1)


@pytest.fixture(params=["sqlite", "mongo"])
async def on_both(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Central]:
    """``bused`` on each store."""
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_mongo_store()) \
            if request.param == "mongo" else None
        c = await start_central(tmp_path / "both.db", bus=MemoryEventBus(), store=store)
        stack.push_async_callback(stop_central, c)
        await seed(c)
        yield c


async def test_a_plug_freed_by_its_charger_is_held_back_only_for_a_cancel_sent(
        on_both: Central) -> None:
    """Review r32-e: a Reserved plug its charger reports Available while the reservation
    is live here is left for the reservation's end only while a cancel of it is being
    sent (its mark, ``cancel_sending_since``): the charger's answer to the cancel comes
    with its report. One it drops on its own (a reboot) is heard at once, AVAILABLE
    and not free; on both stores."""
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with connected(on_both.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        events = _heard(on_both)
        numbers: dict[int, int] = {}
        for plug in (1, 2):
            reserved = await run(on_both, "reserveNow", {
                "cpId": "CP-1", "connectorId": plug, "idTag": "TAG-OTHER",
                "expiryDate": expiry}, "status reservation { reservationId }")
            assert reserved["status"] == "ACCEPTED", reserved
            numbers[plug] = reserved["reservation"]["reservationId"]
            await soon(lambda: "Reserved" in dict(_status(events, plug)))  # noqa: B023 (awaited here)
        await cp.status(1, "Available")  # dropped unasked: the reply came with it
        assert _status(events, 1)[-1] == ("Available", False)
        before = len(_status(events, 2))
        cancelled = await run(on_both, "cancelReservation", {
            "cpId": "CP-1", "reservationId": numbers[2]})
        assert cancelled["status"] == "ACCEPTED", cancelled
        await soon(lambda: ("Available", True) in _status(events, 2)[before:])
        await settle()
        assert ("Available", False) not in _status(events, 2)[before:], _status(events, 2)
