"""A TxProfile given in a RemoteStartTransaction governs the transaction that start began
only (OCPP 1.6 5.11): the same card's next, local, session on that connector within the
pending-start window is not held as overridden by it (review s24: it was, and the site
stopped limiting it)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain import entities as d
from domain.ids import new_id
from domain.policy import Policy
from domain.ports import Insert
from domain.services import ServiceContext, Services
from store.sqlite import SqliteStore
from tests.helpers import FastHasher
from tests.support.history import Clock

T = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def command(station_id: str, at: datetime) -> d.AuditEntry:
    return d.AuditEntry(
        entity="station", entity_id=station_id, action=d.AuditAction.COMMAND,
        command="RemoteStartTransaction", actor="user:op", created_by="user:op",
        updated_by="user:op", at=at,
        after={"command": "RemoteStartTransaction", "commandId": "c1", "stage": "ANSWERED",
               "status": "Accepted", "error": None,
               "request": {"connectorId": 1, "idTag": "TAG-1", "chargingProfile": {
                   "chargingProfileId": 5, "stackLevel": 100,
                   "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                   "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                       {"startPeriod": 0, "limit": 22000}]}}}})


def session(station_id: str, tx: int, created: datetime, state: d.SessionState
            ) -> d.Session:
    return d.Session(transaction_id=tx, station_id=station_id, cp_id="CP-1", connector_id=1,
                     id_tag="TAG-1", start_time=created, meter_start_wh=0, state=state,
                     created_at=created)


async def test_remote_start_profile_is_not_the_next_sessions(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "r6.db"))
    await store.start()
    try:
        clock = Clock()
        clock.now = T + timedelta(seconds=90)
        services = Services(ServiceContext(store=store, policy=Policy(),
                                           hasher=FastHasher(), clock=clock))
        station = new_id()
        first = session(station, 1, T + timedelta(seconds=5), d.SessionState.COMPLETED)
        # The first session ended at T+30 s; the same card starts again, locally (no
        # remote start, no profile), on the same connector at T+60 s.
        second = session(station, 2, T + timedelta(seconds=60), d.SessionState.ACTIVE)
        await store.write([Insert(command(station, T)), Insert(first), Insert(second)], [])
        services.site_load._levels["CP-1"] = (90, None)  # the charger's site level
        assert await services.site_load._overridden(first) is True  # the one it started
        assert await services.site_load._overridden(second) is False, \
            "a later session of the same card is taken as under the remote start's profile"
    finally:
        await store.close()
