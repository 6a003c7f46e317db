"""What a charger's status reports announce, end to end: real chargers over the websocket,
the events published on the bus and the webhooks delivered to a receiver (QA ops s4,
s7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from chargegraph.webhooks import WebhookDispatcher
from domain import entities as d
from domain.clock import utcnow
from domain.events import (
    ConnectorStatusChanged,
    DomainEvent,
    FaultReported,
    StationConnectionChanged,
)
from domain.policy import Viewer
from domain.query import Eq, all_of
from ocpp_bridge.simulator import SimulatedChargePoint, connected, now
from pubsub.memory import EventStream, MemoryEventBus
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.webhooks.receiver import Receiver

STATUS_HOOK = "connector.status_changed"
FAULT_HOOK = "fault.reported"
ONLINE_HOOK = "station.online"


@dataclass
class Watched:
    """A central system, what it published (read up to a mark) and what its operator's
    webhook of status, fault and coming-online events delivered."""

    central: Central
    stream: EventStream
    receiver: Receiver
    events: list[DomainEvent] = field(default_factory=list)

    def published(self, kind: type[DomainEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def delivered(self, kind: str) -> list[dict[str, Any]]:
        return [r.json["data"] for r in self.receiver.of_type(kind)]

    async def mark(self, cp: SimulatedChargePoint, connector_id: int, status: str) -> None:
        """Reports a change of ``connector_id`` (one no test reports otherwise) and waits
        until it was published and delivered: everything before it was too, since the
        bus and each webhook's deliveries keep their order."""
        await cp.status(connector_id, status)
        while True:
            event = await asyncio.wait_for(anext(self.stream), 5)
            assert isinstance(event, DomainEvent)
            self.events.append(event)
            if isinstance(event, ConnectorStatusChanged) \
                    and (event.connector_id, event.status) == (connector_id, status):
                break

        async def delivered() -> bool:
            return any((data["connectorId"], data["status"]) == (connector_id, status)
                       for data in self.delivered(STATUS_HOOK))
        await until(delivered)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    receiver = await Receiver().start()
    dispatcher = WebhookDispatcher(central.services, allow_private=True, backoff=(0.01,))
    await dispatcher.start()
    central.services.webhooks.allow_private = True
    await central.services.webhooks.create_webhook(
        Viewer.of(central.users["op"]), url=receiver.url,
        events=[STATUS_HOOK, FAULT_HOOK, ONLINE_HOOK])
    stream = bus.subscribe(["connector_status", "fault", "station_connection"])
    try:
        yield Watched(central, stream, receiver)
    finally:
        await stream.aclose()
        await dispatcher.close()
        await receiver.close()
        await stop_central(central)
        await bus.close()


async def report(cp: SimulatedChargePoint, connector_id: int, status: str,
                 error_code: str = "NoError", **extra: str) -> None:
    """A StatusNotification with what the simulator's ``status`` does not send
    (``vendor_error_code``)."""
    await cp.call(call.StatusNotification(connector_id=connector_id, status=status,
                                          error_code=error_code, timestamp=now(), **extra))


async def test_a_repeated_state_is_announced_once(watched: Watched) -> None:
    """QA ops s7/s4: five identical Available reports were five connectorStatusChanged
    events and five webhook deliveries, and a flapping charger (reconnecting, reporting
    Available again each time) dozens. Only a change of status, errorCode, info or
    vendorErrorCode is announced; the first report after a reconnect repeating the
    stored state is none (the station's coming online is, on its own). Every report is
    still kept as history."""
    url = watched.central.url
    async with connected(url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        for _ in range(5):
            await report(cp, 1, "Available")
        await watched.mark(cp, 2, "Preparing")
    for _ in range(3):  # reconnects, the state unchanged
        async with connected(url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            for _ in range(3):
                await report(cp, 1, "Available")
    async with connected(url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await report(cp, 1, "Available")
        await report(cp, 1, "Available", info="cable locked")
        for _ in range(2):
            await report(cp, 1, "Available", info="cable locked", vendor_error_code="V-1")
        await watched.mark(cp, 2, "Available")

    changes = [(e.connector_id, e.status, e.info, e.vendor_error_code)
               for e in watched.published(ConnectorStatusChanged)]
    assert changes == [(1, "Available", None, None), (2, "Preparing", None, None),
                       (1, "Available", "cable locked", None),
                       (1, "Available", "cable locked", "V-1"),
                       (2, "Available", None, None)]
    assert [(h["connectorId"], h["status"], h["info"], h["vendorErrorCode"])
            for h in watched.delivered(STATUS_HOOK)] == changes
    # Every connection's coming online is announced and delivered all the same.
    assert [e.online for e in watched.published(StationConnectionChanged)
            if e.online] == [True] * 5
    assert len(watched.delivered(ONLINE_HOOK)) == 5
    history = await watched.central.store.find_all(
        d.StatusEvent, all_of(Eq("cp_id", "CP-1"), Eq("connector_id", 1)))
    assert len(history) > 3  # kept, though three of them were announced
    [plug] = await watched.central.store.find_all(
        d.Connector, all_of(Eq("cp_id", "CP-1"), Eq("connector_id", 1)))
    assert (plug.info, plug.vendor_error_code) == ("cable locked", "V-1")


FAULTS = """query($from: DateTime!, $to: DateTime!) {
  faultReports(from: $from, to: $to, filter: {cpIds: ["CP-1"]}) {
    groups { connectorId errorCode count open }
    events(first: 20) { nodes { connectorId status errorCode vendorErrorCode info } } } }"""


async def test_a_faulted_report_without_an_error_code_is_a_fault(watched: Watched) -> None:
    """QA ops s7: a connector reported Faulted with errorCode NoError (the cause in
    vendorErrorCode "E-017" and info "contactor welded") was down for availability but
    in no fault report, no ``faultReported`` event and no ``fault.reported`` webhook.
    A Faulted status is a fault whatever its errorCode: announced once (a repeat is the
    same fault; a new vendor code is a new one), a group of errorCode NoError whose
    events carry the charger's code and text, open until the connector recovers. An
    errorCode with another status is a fault, as before; the charge point's Faulted
    (connector 0) too."""
    central = watched.central
    window = {"from": (utcnow() - timedelta(minutes=1)).isoformat(),
              "to": (utcnow() + timedelta(hours=1)).isoformat()}
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        welded = {"vendor_error_code": "E-017", "info": "contactor welded"}
        for _ in range(2):
            await report(cp, 1, "Faulted", **welded)
        await report(cp, 2, "Available", "WeakSignal")
        await report(cp, 0, "Faulted", vendor_error_code="P-3")
        await watched.mark(cp, 2, "Preparing")
        faults = [(f.connector_id, f.status, f.error_code, f.vendor_error_code, f.info)
                  for f in watched.published(FaultReported)]
        assert faults == [(1, "Faulted", "NoError", "E-017", "contactor welded"),
                          (2, "Available", "WeakSignal", None, None),
                          (0, "Faulted", "NoError", "P-3", None)]

        async def all_delivered() -> bool:
            return len(watched.delivered(FAULT_HOOK)) == 3
        await until(all_delivered)
        assert [(h["connectorId"], h["errorCode"], h["vendorErrorCode"])
                for h in watched.delivered(FAULT_HOOK)] == [
            (1, "NoError", "E-017"), (2, "WeakSignal", None), (0, "NoError", "P-3")]

        shown = (await central.gql(FAULTS, window, as_user="op"))["faultReports"]
        groups = {(g["connectorId"], g["errorCode"]): (g["count"], g["open"])
                  for g in shown["groups"]}
        assert groups == {(0, "NO_ERROR"): (1, True), (1, "NO_ERROR"): (2, True),
                          (2, "WEAK_SIGNAL"): (1, False)}  # the mark cleared it
        assert {(e["connectorId"], e["status"], e["vendorErrorCode"], e["info"])
                for e in shown["events"]["nodes"]} == {
            (1, "FAULTED", "E-017", "contactor welded"), (2, "AVAILABLE", None, None),
            (0, "FAULTED", "P-3", None)}

        await report(cp, 1, "Faulted", vendor_error_code="E-018")  # another fault
        await report(cp, 0, "Available")
        await report(cp, 1, "Available")
        await watched.mark(cp, 2, "Finishing")
    assert [(f.connector_id, f.vendor_error_code)
            for f in watched.published(FaultReported)][3:] == [(1, "E-018")]
    shown = (await central.gql(FAULTS, window, as_user="op"))["faultReports"]
    groups = {(g["connectorId"], g["errorCode"]): (g["count"], g["open"])
              for g in shown["groups"]}
    assert groups == {(0, "NO_ERROR"): (1, False), (1, "NO_ERROR"): (3, False),
                      (2, "WEAK_SIGNAL"): (1, False)}
