"""Secret configuration values in audit entries written before the rule named their key
a secret (review s23): hidden when read (``policy.audit_snapshot``; GraphQL auditLog and
/export/audit.csv read the same images), as kept configuration is
(``configuration.is_secret``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from domain import entities as d
from domain.ports import Update
from domain.query import Eq
from domain.services.base import books_of
from pubsub.memory import MemoryEventBus
from tests.ocpp.conftest import seed, start_central, stop_central

AUDIT = """{ auditLog(first: 50, filter: {entity: "station"}) {
    nodes { action after } } }"""


async def test_an_older_audit_entry_of_a_vendor_secret_is_read_hidden(
        tmp_path: Path) -> None:
    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    try:
        await seed(central)
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None
        company_id, owner_id = books_of(station)
        # As 0b9b2a6 (before 973f7da) audited a changeConfiguration of MqttPwd: the
        # value in clear (MqttPwd was no secret then).
        entry = d.AuditEntry(
            entity="station", entity_id=station.id, action=d.AuditAction.COMMAND,
            actor="user:op", created_by="user:op", updated_by="user:op",
            company_id=company_id, station_owner_id=owner_id,
            after={"command": "ChangeConfiguration", "commandId": "c1", "stage": "SENT",
                   "request": {"key": "MqttPwd", "value": "mqtt-s3cret"},
                   "status": None, "error": None})
        await central.store.write([], [entry])
        data: dict[str, Any] = await central.gql(AUDIT, as_user="op")
        [after] = [n["after"] for n in data["auditLog"]["nodes"] if n["action"] == "COMMAND"]
        assert after["request"] == {"key": "MqttPwd", "value": "[hidden]"}
    finally:
        await stop_central(central)
        await bus.close()


async def test_an_older_audit_entry_of_a_presigned_location_is_read_hidden(
        tmp_path: Path) -> None:
    """QA s25: a getDiagnostics or updateFirmware location signed in its query string was
    audited whole before its query values were hidden; such entries, and the station's
    rollout recorded then, are read without it. A location hidden already reads as it
    is (``ftp://[hidden]@host``, which ``urlsplit`` refused as an IPv6 host)."""
    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    try:
        await seed(central)
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None
        company_id, owner_id = books_of(station)
        signed = "https://fw.blob.core.windows.net/fw/1.6.bin?sv=2024-01-01&sig=c2lnbmF0dXJl"
        entries = [d.AuditEntry(
            entity="station", entity_id=station.id, action=d.AuditAction.COMMAND,
            actor="user:op", created_by="user:op", updated_by="user:op",
            company_id=company_id, station_owner_id=owner_id,
            after={"command": command, "commandId": f"c{i}", "stage": "SENT",
                   "request": {"location": location}, "status": None, "error": None})
            for i, (command, location) in enumerate((
                ("UpdateFirmware", signed),
                ("GetDiagnostics", "ftp://[hidden]@diag.example.com/up")))]
        await central.store.write([], entries)
        rolled = replace(station, firmware_location=signed,
                         firmware_requested_at=station.created_at)
        await central.store.write([Update(rolled)], [])
        data: dict[str, Any] = await central.gql(AUDIT, as_user="op")
        locations = sorted(n["after"]["request"]["location"]
                           for n in data["auditLog"]["nodes"] if n["action"] == "COMMAND")
        assert locations == ["ftp://[hidden]@diag.example.com/up",
                             "https://fw.blob.core.windows.net/fw/1.6.bin"
                             "?sv=[hidden]&sig=[hidden]"]
        rollout = await central.gql('{ stations(first: 5) { nodes { cpId '
                                    'firmwareRollout { location } } } }', as_user="op")
        [shown] = [n["firmwareRollout"]["location"] for n in rollout["stations"]["nodes"]
                   if n["cpId"] == "CP-1"]
        assert "c2lnbmF0dXJl" not in shown
    finally:
        await stop_central(central)
        await bus.close()
