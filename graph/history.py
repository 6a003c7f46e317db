"""Telemetry history under its parents: a session's meter samples and its latest State of
Charge (``Session.meterValues``, ``Session.socPercent``), a connector's status reports
(``Connector.statusHistory``) and a station's connections (``Station.connectionHistory``).

They are nested connections like the others (``relay.nested_connection``): with only
``first`` (or only ``last``), the rows of every parent of a page come from one batched
store call, and a session's State of Charge from one more for the page. Who sees what is
the policy's: a session's samples are seen by whoever sees the session
(``Policy.scope_under``), status and connection history by the scopes of ``status_event``
and ``connection_event`` (admins, and the operators running the station; no driver,
nobody anonymous).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from domain import entities as d
from domain.ocpp16 import Measurand, member
from domain.query import ALL, Eq, Filter, In, Sort, all_of, newest_first
from graph.command_types import Phase, ReadingContext, UnitOfMeasure
from graph.filters import window
from graph.relay import Connection, PageArgs, Wrap, nested_connection

if TYPE_CHECKING:
    from graph.context import GraphContext

strawberry.enum(Measurand, description="OCPP 1.6 Measurand: what a sampled value measures.")

#: The ``from`` argument of a history (``to`` needs no other name).
Since = Annotated[datetime | None, strawberry.argument(
    name="from", description="From this instant on (inclusive).")]
Until = Annotated[datetime | None, strawberry.argument(
    description="Before this instant (exclusive).")]

#: A session's samples oldest first: a charging curve is drawn from its start.
OLDEST_FIRST = (Sort("at"),)
#: Newest first, ``id`` descending too: each parent's rows then come out of its index
#: ``(parent, …, at, id)`` read backwards, with no sort of the ties.
NEWEST_FIRST = newest_first("at")


@strawberry.type(description="One sampled value of a session's meter (OCPP MeterValues).")
class MeterSample:
    at: datetime = strawberry.field(description="When it was measured, on the charger's "
                                                "clock.")
    measurand: Measurand | None = strawberry.field(description=(
        "What it measures (OCPP Measurand); null for a stored value OCPP 1.6 has not "
        "(none passes the OCPP server: a row written by another tool)."))
    value: float = strawberry.field(description="As the charger sent it, in `unit`.")
    unit: UnitOfMeasure | None = strawberry.field(description=(
        "OCPP UnitOfMeasure, e.g. `WH`, `KW`, `PERCENT`. Sent without one, an energy "
        "measurand's (register or interval) is `WH`, as OCPP 1.6 reads it; any other's is "
        "null (its unit unknown)."))
    phase: Phase | None = strawberry.field(description="OCPP Phase, e.g. `L1`, `L1_N`; "
                                                       "null for a total.")
    context: ReadingContext | None = strawberry.field(description=(
        "OCPP ReadingContext, e.g. `SAMPLE_PERIODIC`; null when the charger sent none "
        "(OCPP reads it as Sample.Periodic)."))
    _r: strawberry.Private[d.MeterSample]

    @classmethod
    def wrap(cls, r: d.MeterSample, ctx: GraphContext) -> MeterSample:
        return cls(at=r.at, measurand=member(Measurand, r.measurand), value=r.value,
                   unit=member(UnitOfMeasure, r.unit), phase=member(Phase, r.phase),
                   context=member(ReadingContext, r.context, ReadingContext.OTHER), _r=r)


@strawberry.type(description="A station's charger connected (online) or disconnected.")
class ConnectionEvent:
    online: bool = strawberry.field(description="Connected (true) or disconnected (false).")
    at: datetime = strawberry.field(description=(
        "When it happened, on our clock, UTC; a disconnect found after the fact (an "
        "instance that died) is dated when the connection was last known to be there."))
    server_outage: bool = strawberry.field(
        description="A disconnect the central system recorded for its own outage (it "
                    "stopped, or crashed and the disconnect was found at its restart, "
                    "dated when the charger was last known connected), not the "
                    "charger's leaving: until it connects again its state is unknown.")
    _r: strawberry.Private[d.ConnectionEvent]

    @classmethod
    def wrap(cls, r: d.ConnectionEvent, ctx: GraphContext) -> ConnectionEvent:
        return cls(online=r.online, at=r.at, server_outage=r.server_outage, _r=r)


def _measured(measurands: Sequence[Measurand] | None) -> Filter:
    # An empty list is "any of none", as in every list filter: no samples (it was
    # INVALID here alone, while `stationIds: []` listed nothing; QA s26).
    if measurands is None:
        return ALL
    return In("measurand", tuple(sorted({m.value for m in measurands})))


async def meter_values(ctx: GraphContext, session: d.Session,
                       measurands: Sequence[Measurand] | None, start: datetime | None,
                       end: datetime | None, args: PageArgs) -> Connection[MeterSample]:
    """The session's samples from ``start`` (inclusive) to ``end`` (exclusive), oldest
    first."""
    where = all_of(_measured(measurands), window("at", start, end))
    return await nested_connection(ctx, d.MeterSample, MeterSample.wrap, "session_id",
                                   session.id, where, OLDEST_FIRST, args)


async def status_history(ctx: GraphContext, connector: d.Connector, wrap: Wrap,
                         start: datetime | None, end: datetime | None, args: PageArgs
                         ) -> Connection[Any]:
    """The connector's status reports (``wrap``: as ``StatusEvent`` nodes), newest first.
    Batched by station, one store call per connector number among a page's connectors:
    a report names its station (a cpId passed to a new station starts with none) and
    connector number, not the connector's record."""
    where = all_of(Eq("connector_id", connector.connector_id), window("at", start, end))
    return await nested_connection(ctx, d.StatusEvent, wrap, "station_id",
                                   connector.station_id, where, NEWEST_FIRST, args,
                                   parent=(("connector_id", connector.connector_id),))


async def connection_history(ctx: GraphContext, station: d.Station, start: datetime | None,
                             end: datetime | None, args: PageArgs, seen: str | None = None
                             ) -> Connection[ConnectionEvent]:
    """The station's connects and disconnects, newest first (``seen`` as
    ``nested_connection``'s)."""
    return await nested_connection(ctx, d.ConnectionEvent, ConnectionEvent.wrap,
                                   "station_id", station.id, window("at", start, end) or ALL,
                                   NEWEST_FIRST, args, seen=seen)
