"""Secret configuration values in audit entries written before the rule named their key
a secret (review s23): hidden when read (``policy.audit_snapshot``; GraphQL auditLog and
/export/audit.csv read the same images), as kept configuration is
(``configuration.is_secret``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domain import entities as d
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
