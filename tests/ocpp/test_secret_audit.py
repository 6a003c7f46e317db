"""Secret configuration values in audit entries written before the rule named their key
a secret (review s23): hidden when read (``policy.audit_snapshot``; GraphQL auditLog and
/export/audit.csv read the same images), as kept configuration is
(``configuration.is_secret``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from domain import entities as d
from domain.ports import Update
from domain.query import Eq
from domain.services.base import books_of
from ocpp_bridge.simulator import connected
from pubsub.memory import MemoryEventBus
from tests.ocpp.conftest import STATION_PASSWORD, seed, start_central, stop_central
from tests.ocpp.test_commands import run, settle

AUDIT = """{ auditLog(first: 50, filter: {entity: "station"}) {
    nodes { action after } } }"""
IMAGES = """{ auditLog(first: 50, filter: {entity: "station"}) {
    nodes { action before after } } }"""
#: A presigned rollout location as a station recorded it before QA s25.
SIGNED = "https://fw.blob.core.windows.net/fw/1.5.bin?sv=2024-01-01&sig=T0xEU0lHTkFUVVJF"


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


async def test_a_rollout_recorded_before_is_not_written_whole_into_station_updates(
        tmp_path: Path) -> None:
    """A station whose rollout was recorded before QA s25 keeps the signed URL in
    ``firmware_location`` (GraphQL hides it on read). The next updateFirmware audits the
    station's update with its before image: written now, it does not carry the old
    signature (``Record.url_fields``, review s25), nor does any entry read back."""
    central = await start_central(tmp_path / "c.db")
    try:
        await seed(central)
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None
        await central.store.write([Update(replace(
            station, firmware_location=SIGNED,
            firmware_requested_at=station.created_at))], [])
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            answer = await run(central, "updateFirmware", {
                "cpId": "CP-1", "location": "https://fw.example.com/1.6.bin",
                "retrieveDate": future}, "accepted")
            assert answer["errors"] == [], answer
            await settle()
        data: dict[str, Any] = await central.gql(IMAGES, as_user="op")
        text = repr(data)
        leaked = [(n["action"], side, n[side].get("firmware_location"))
                  for n in data["auditLog"]["nodes"] for side in ("before", "after")
                  if n[side] and "T0xEU0lHTkFUVVJF" in repr(n[side])]
        assert "T0xEU0lHTkFUVVJF" not in text, leaked
        # Not only read so: the new entries are written without it.
        stored = await central.store.find_all(d.AuditEntry, Eq("entity", "station"))
        assert [e.action for e in stored if e.action is d.AuditAction.UPDATE]
        assert not [e for e in stored if "T0xEU0lHTkFUVVJF" in repr((e.before, e.after))]
    finally:
        await stop_central(central)


async def test_an_older_station_update_entry_is_read_without_the_signature(
        tmp_path: Path) -> None:
    """The station UPDATE entry an updateFirmware wrote before QA s25 (its after image's
    firmware_location) is read without the signature, as COMMAND entries are
    (``policy.audit_snapshot``, which /export/audit.csv reads too; review s25)."""
    central = await start_central(tmp_path / "c.db")
    try:
        await seed(central)
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            answer = await run(central, "updateFirmware", {
                "cpId": "CP-1", "location": "https://fw.example.com/1.6.bin?sig=new",
                "retrieveDate": future}, "accepted")
            assert answer["errors"] == [], answer
            await settle()
        # As the same write kept it before QA s25: the location whole.
        entries = await central.store.find_all(d.AuditEntry, Eq("action", d.AuditAction.UPDATE))
        rollout = next(e for e in entries if e.after
                       and "sig=" in str(e.after.get("firmware_location")))
        assert rollout.after is not None
        await central.store.write([], [d.AuditEntry(
            entity=rollout.entity, entity_id=rollout.entity_id, action=rollout.action,
            actor=rollout.actor, created_by=rollout.created_by,
            updated_by=rollout.updated_by, company_id=rollout.company_id,
            station_owner_id=rollout.station_owner_id,
            before=rollout.before, after={**rollout.after, "firmware_location": SIGNED})])
        data: dict[str, Any] = await central.gql(IMAGES, as_user="op")
        leaked = [(n["action"], side, n[side].get("firmware_location"))
                  for n in data["auditLog"]["nodes"] for side in ("before", "after")
                  if n[side] and "T0xEU0lHTkFUVVJF" in repr(n[side])]
        assert not leaked, leaked
    finally:
        await stop_central(central)
