"""The station change a command's answer makes (a HeartbeatInterval the charger took) is
audited with the station as it stands when the answer is written: the command's round
trip may take seconds, and a write to the station meanwhile (an operator's edit, a
charger's firmware report) is neither undone in the audit log nor skipped in its chain
(QA s28 audit2)."""

from __future__ import annotations

from typing import Any

import pytest

from domain import entities as d
from domain.policy import Viewer
from domain.query import Eq, all_of
from domain.services.commands import CommandService
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run


async def test_a_heartbeat_interval_taken_is_audited_on_the_station_as_it_stands(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    op = Viewer.of(central.users["op"])
    original = CommandService._after

    async def renamed_meanwhile(self: CommandService, viewer: Viewer, outcome: Any,
                                payload: dict[str, Any]) -> None:
        # The operator renames the station while the charger's answer is on its way.
        if outcome.action == "ChangeConfiguration":
            await central.services.stations.update_station(
                op, outcome.station.id, name="Hall 2")
        await original(self, viewer, outcome, payload)

    monkeypatch.setattr(CommandService, "_after", renamed_meanwhile)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        answer = await run(central, "changeConfiguration",
                           {"cpId": "CP-1", "key": "HeartbeatInterval", "value": "120"})
        assert answer["status"] == "ACCEPTED"
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    assert (station.name, station.heartbeat_interval) == ("Hall 2", 120)
    entries = sorted(await central.store.find_all(d.AuditEntry, all_of(
        Eq("entity", "station"), Eq("entity_id", station.id),
        Eq("action", d.AuditAction.UPDATE))), key=lambda e: e.at)
    rename, interval = entries[-2:]
    assert rename.after is not None and rename.after["name"] == "Hall 2"
    assert interval.after is not None and interval.before is not None
    assert interval.after["heartbeat_interval"] == 120
    # The answer's entry begins where the rename left the station, and its after
    # image is the station as stored, renamed: not the copy read when it was sent.
    assert interval.before == rename.after
    assert interval.after["name"] == "Hall 2"
    assert interval.after["updated_at"] == rename.after["updated_at"] or \
        interval.after["updated_at"] > rename.after["updated_at"]

