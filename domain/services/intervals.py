"""Connector state history (``ConnectorInterval``): contiguous intervals of what analytics
tells apart (status, error code, online), on the charger's timeline."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from domain.availability import POINT_DOWN
from domain.entities import ConnectorInterval, ConnectorStatus, Station
from domain.policy import Viewer
from domain.ports import Change, Insert, Store
from domain.query import Eq, Sort, all_of
from domain.services.base import charger, patch, stamp_new

#: The statuses OCPP 1.6 gives connector 0.
POINT_STATUSES = POINT_DOWN | {ConnectorStatus.AVAILABLE}


def effective_state(station: Station, status: ConnectorStatus, error_code: str
                    ) -> tuple[ConnectorStatus, str]:
    """A connector's state as its history records it: the charge point's own when that
    is down (Unavailable or Faulted on connector 0), else its own."""
    if station.status in POINT_DOWN:
        return cast(ConnectorStatus, station.status), station.error_code or "NoError"
    return status, error_code


def point_state(station: Station) -> tuple[ConnectorStatus | None, str]:
    """The charge point's own state (connector 0) as an interval records it beside the
    connector's: so fault reports tell the point's outage from the connector's faults."""
    return station.status, station.error_code or "NoError"


async def next_interval(store: Store, station: Station, connector_id: int,
                        status: ConnectorStatus, error_code: str, online: bool,
                        at: datetime, actor: Viewer) -> list[Change]:
    """Close the connector's open state interval at ``at`` and open the next one,
    unless nothing that analytics distinguishes changed. ``station`` is the one
    ``effective_state`` was given: its status is the charge point's during the stretch."""
    current = await store.find_one(ConnectorInterval, all_of(
        Eq("cp_id", station.cp_id), Eq("connector_id", connector_id), Eq("end", None)))
    point_status, point_error_code = point_state(station)
    changes: list[Change] = []
    if current is not None:
        if (current.status, current.error_code, current.online, current.point_status,
                current.point_error_code) == (status, error_code, online, point_status,
                                              point_error_code):
            return []
        changes.append(patch(current, actor, end=max(at, current.start)))
    changes.append(Insert(stamp_new(ConnectorInterval(
        station_id=station.id, cp_id=station.cp_id, connector_id=connector_id,
        status=status, error_code=error_code, online=online, point_status=point_status,
        point_error_code=point_error_code,
        start=max(at, current.start) if current else at), actor, at)))
    return changes


async def rebase_intervals(store: Store, station: Station, at: datetime) -> None:
    """The charger's first timestamp ``at`` came after its connection opened an
    interval for every connector at "now" on our clock (nothing better was known).
    If its clock is behind ours, each open interval that starts after ``at`` is moved
    back to it, so that the charger's reports, of any connector, fall inside the
    intervals instead of being clamped to their start. Once per charger and process:
    a few store reads, never on every message."""
    actor = charger(station.cp_id)
    changes: list[Change] = []
    for current in await store.find_all(ConnectorInterval, all_of(
            Eq("cp_id", station.cp_id), Eq("end", None)), limit=100):
        if current.start > at:
            changes += await _move_start(store, current, at, actor)
    if changes:
        await store.write(changes, [])


async def _move_start(store: Store, current: ConnectorInterval, to: datetime,
                      actor: Viewer) -> list[Change]:
    """Start the open interval ``current`` at ``to`` and end the one before it there
    too: intervals stay contiguous and never overlap. Not before the previous one's
    start, which was placed on the charger's timeline (an earlier connection's)."""
    before = await store.find_all(ConnectorInterval, all_of(
        Eq("cp_id", current.cp_id), Eq("connector_id", current.connector_id),
        Eq("end", current.start)), (Sort("start", descending=True),), limit=1)
    start = max(to, before[0].start) if before else to
    if start >= current.start:
        return []
    changes: list[Change] = [patch(current, actor, start=start)]
    if before:
        changes.append(patch(before[0], actor, end=start))
    return changes
