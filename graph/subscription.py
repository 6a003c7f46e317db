"""Live subscriptions: the schema's Subscription type and its event types.

Events come from the domain already filtered by the viewer's visibility; here they are
narrowed by the client's filter and shaped. Each event gets fresh loaders, so a nested
field reads the data as it is now, not as the connection first saw it. The websocket
protocols and the shared fan-out live in ``graph/live_ws.py``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from graphql import GraphQLError

from domain import entities as d
from domain.clock import utcnow
from domain.errors import ValidationError
from domain.events import (
    CommandCompleted,
    ConnectorStatusChanged,
    DomainEvent,
    EventsDropped,
    FaultReported,
    MaintenanceStatusChanged,
    ReservationChanged,
    SessionChanged,
    StationConnectionChanged,
    StationSightChanged,
)
from domain.ids import is_id
from domain.ocpp16 import member
from domain.services.live_updates import SESSION_UPDATE_INTERVAL_S
from graph.command_types import (
    ChargePointErrorCode,
    DiagnosticsStatus,
    FirmwareStatus,
    shown_error_code,
)
from graph.context import GraphContext
from graph.enums import ConnectorStatus, ReservationState, SessionState
from graph.filters import BOUNDED, USE_CP_IDS, bounded, global_ids, listed_beside
from graph.ids import expect_id, shown_actor, to_global_id
from graph.loaders import Loaders
from graph.nodes import Connector, Reservation, Session, Station, User, _actor_user

Info = strawberry.Info
PUBLIC_TOPICS = frozenset({ConnectorStatusChanged.topic, StationConnectionChanged.topic})
#: How often a session's energy updates may go out, as the schema says it (QA s32: only
#: internal docs said they were throttled, and a client plotted the events as readings).
_UPDATE_EVERY = f"one every {SESSION_UPDATE_INTERVAL_S:g} s"


@strawberry.enum(description="What happened to a session.")
class SessionChange(Enum):
    STARTED = strawberry.enum_value("STARTED", description=(
        "The charger started it (StartTransaction)."))
    UPDATED = strawberry.enum_value("UPDATED", description=(
        f"New meter values: energy or power changed. At most {_UPDATE_EVERY} per "
        "session, the newest figures (readings in between are not sent; one held when the "
        "session ends is dropped, its ENDED carries the last): for every reading, read "
        "the session's `meterValues`."))
    ENDED = strawberry.enum_value("ENDED", description=(
        "It ended: its StopTransaction, or the service closed it. One the service closed "
        "without its StopTransaction (an operator's `endSession`, a lost stop: the "
        "session's `closedWithoutStop`) is corrected by that stop should the charger send "
        "it later (energy, end, reason and cost as the charger gave them), announced as "
        "another ENDED of the same session."))


def of_chargers(cp_ids: list[str] | None, station_ids: list[strawberry.ID] | None,
                cp_id: str | None = None) -> Callable[[Any], bool]:
    """Whether an event is of the chargers and stations a feed's filter lists (each list
    ``bounded``; an empty one: none) and of its deprecated one-value ``cp_id``: every
    one given must hold, as in the list filters. Checked when the feed starts."""
    cp_list = bounded(cp_ids, "filter.cpIds")
    cps = set(cp_list) if cp_list is not None else None
    station_list = global_ids(station_ids, "station", "filter.stationIds")
    stations = set(station_list) if station_list is not None else None

    def accept(event: Any) -> bool:
        return (cp_id is None or event.cp_id == cp_id) and (
            cps is None or event.cp_id in cps) and (
            stations is None or event.station_id in stations)

    return accept



@strawberry.input(description="Narrow a station feed; all the viewer may see if left out.")
class StationEventFilter:
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        f"Only events of these chargers (OCPP identities), {BOUNDED}; an empty list: "
        "none."))
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        f"Only events of these stations (global ids), {BOUNDED}; an empty list: none."))

    def accepts(self) -> Callable[[Any], bool]:
        return of_chargers(self.cp_ids, self.station_ids)


@strawberry.input(description="Narrow the session feed; all the viewer may see if left out.")
class SessionEventFilter:
    session_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Follow one session: the subscription completes after its ENDED event, and at once "
        "when it is over already (or not the viewer's). A session ended without its "
        "StopTransaction (`closedWithoutStop`: an operator's `endSession`) may be "
        "corrected by the charger's stop after that, which this subscription does not "
        "follow: read the session again, or follow its charger (`cpIds`), whose feed "
        "carries the correction's ENDED."))
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        listed_beside("Only sessions on these chargers (OCPP identities)", "cpId")))
    cp_id: str | None = strawberry.field(default=None, deprecation_reason=USE_CP_IDS,
                                         description="Only sessions on this charger (OCPP "
                                                     "identity).")
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        f"Only sessions at these stations (global ids), {BOUNDED}; an empty list: none."))
    mine: bool | None = strawberry.field(default=None,
                                         description="Only the viewer's own sessions.")

    def accepts(self) -> Callable[[Any], bool]:
        return of_chargers(self.cp_ids, self.station_ids, self.cp_id)


@strawberry.input(description="Narrow the command feed; all the viewer may see if left out.")
class CommandEventFilter:
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        listed_beside("Only commands to these chargers (OCPP identities)", "cpId")))
    cp_id: str | None = strawberry.field(default=None, deprecation_reason=USE_CP_IDS,
                                         description="Only commands to this charger (OCPP "
                                                     "identity).")
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        f"Only commands to these stations (global ids), {BOUNDED}; an empty list: none."))
    command_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Only this command's answer (the `commandId` its mutation returned)."))

    def accepts(self) -> Callable[[Any], bool]:
        return of_chargers(self.cp_ids, self.station_ids, self.cp_id)


async def _record(info: Info, entity: type[Any], node: Any, record_id: str) -> Any:
    """The event's record as it reads now, in the viewer's scope (``None`` if hidden)."""
    ctx: GraphContext = info.context
    record = await ctx.loaders.by_id(entity).load(record_id)
    return node.wrap(record, ctx) if record else None


async def _station(info: Info, station_id: str | None) -> Station | None:
    if station_id is None:
        return None
    ctx: GraphContext = info.context
    record = await ctx.loaders.by_id(d.Station).load(station_id)
    return Station.wrap(record, ctx) if record else None


_DROPPED = "Events this subscriber missed right before this one (it fell behind)."
_CP_ID = "The charger's OCPP identity."
_CONNECTOR_ID = "OCPP connector id; 0 is the charge point as a whole."
_STATION = "The station as it reads now; null if the viewer may not see it."
_STATION_ID = ("The station's global id (on every charger event, to key a map by); null "
               "for a charger with none.")


def _station_gid(station_id: str | None) -> strawberry.ID | None:
    return strawberry.ID(to_global_id("station", station_id)) if station_id else None


@strawberry.type
class _OfStation:
    """What every charger event says of its station: its global id and the record
    (``_e``: the domain event, set by each event type)."""

    _e: strawberry.Private[Any]

    @strawberry.field(description=_STATION_ID)
    def station_id(self) -> strawberry.ID | None:
        return _station_gid(self._e.station_id)

    @strawberry.field(description=_STATION)
    async def station(self, info: Info) -> Station | None:
        return await _station(info, self._e.station_id)


@strawberry.type(description=(
    "A connector's (or, for connector 0, the charge point's) reported state changed: its "
    "status, errorCode, info or vendorErrorCode (the live availability map). A report "
    "repeating the state, as chargers send after each reconnect, is none. Also, with the "
    "state unchanged, for each plug whose `free` a reservation or a session turned "
    "without a report of it, and only then: a reservation beginning or ending (connector "
    "0's: every plug of its station) whether or not the charger reports it Reserved, a "
    "session starting on a plug reported AVAILABLE, a session ending on one reported "
    "AVAILABLE already."))
class ConnectorStatusEvent(_OfStation):
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description=_CONNECTOR_ID)
    status: ConnectorStatus = strawberry.field(description=(
        "The status reported; `UNAVAILABLE` for a plug removed (`removeConnector`: no "
        "report, `connector` null from then on)."))
    error_code: ChargePointErrorCode = strawberry.field(description=(
        "OCPP ChargePointErrorCode, `NO_ERROR` when healthy."))
    info: str | None = strawberry.field(description="The charger's free-text detail.")
    vendor_error_code: str | None = strawberry.field(
        description="The charger's own code for the error (OCPP vendorErrorCode).")
    at: datetime = strawberry.field(description=(
        "When the status began, by the charger's timestamp (else its clock's now), UTC: "
        "the connector's (for connector 0 the station's) `statusAt` from now on. An event "
        "older than the `statusAt` a client holds is stale. A plug removed: when its last "
        "reported status began (its `statusAt`; never reported: when it was added), so "
        "its charger's next report, which adds it again, is not stale."))
    dropped_before: int = strawberry.field(
        description="Events this subscriber missed right before this one (it fell behind).")
    free: bool | None = strawberry.field(description=(
        "Whether the plug itself is free as of this event: as `Connector.free` (reports "
        "AVAILABLE, no session on it, no live reservation holds it; whose is not told). "
        "Available now (`availableNow`) when its station is also online and not "
        "UNAVAILABLE or FAULTED as a whole (`stationConnectionChanged`, connector 0's "
        "events). Null for connector 0, and when not known (an instance of an older "
        "version published it)."))
    _e: strawberry.Private[ConnectorStatusChanged]

    @strawberry.field(description=("The connector as it reads now; null for connector 0 "
                                   "or when the viewer may not see it."))
    async def connector(self, info: Info) -> Connector | None:
        if self._e.connector_record_id is None:
            return None
        ctx: GraphContext = info.context
        record = await ctx.loaders.by_id(d.Connector).load(self._e.connector_record_id)
        return Connector.wrap(record, ctx) if record else None


@strawberry.type(description=(
    "A charger connected or disconnected. Also, when an edit changed who sees its "
    "station: to those who no longer do (handed to another company, taken off the map), "
    "offline with `station` null, as for a station removed; to those who now do, its "
    "connection as it is (a station the map does not hold yet: read it by `stationId`)."))
class StationConnectionEvent(_OfStation):
    cp_id: str = strawberry.field(description=_CP_ID)
    online: bool = strawberry.field(description="Whether it is connected now.")
    at: datetime = strawberry.field(description=(
        "When we saw it connect or disconnect (or its sight change), UTC."))
    dropped_before: int = strawberry.field(description=_DROPPED)
    _e: strawberry.Private[StationConnectionChanged | StationSightChanged]


@strawberry.type(description="A session started, progressed (throttled) or ended.")
class SessionEvent:
    change: SessionChange = strawberry.field(description="What happened.")
    transaction_id: int = strawberry.field(description="The OCPP transactionId.")
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description=_CONNECTOR_ID)
    state: SessionState = strawberry.field(description="The session's state after it.")
    energy_kwh: float = strawberry.field(description="Energy delivered so far.")
    power_kw: float | None = strawberry.field(description=(
        "Power last metered, in kW; null when the charger reports none."))
    at: datetime = strawberry.field(description="When the session record changed, UTC.")
    dropped_before: int = strawberry.field(description=_DROPPED)
    _e: strawberry.Private[SessionChanged]

    @strawberry.field(description="The session's global id.")
    def session_id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("session", self._e.session_id))

    @strawberry.field(description="The session as it reads now; null if hidden.")
    async def session(self, info: Info) -> Session | None:
        return await _record(info, d.Session, Session, self._e.session_id)


@strawberry.type(description=(
    "A connector (or, for connector 0, the charge point) reported a fault: an error code "
    "other than NoError, or the status Faulted whatever its code."))
class FaultEvent(_OfStation):
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description=_CONNECTOR_ID)
    error_code: ChargePointErrorCode = strawberry.field(
        description="OCPP ChargePointErrorCode.")
    status: ConnectorStatus = strawberry.field(description="The status reported with it.")
    info: str | None = strawberry.field(description="The charger's free-text detail.")
    vendor_error_code: str | None = strawberry.field(description="The vendor's own code.")
    at: datetime = strawberry.field(description=(
        "When it was reported, by the charger's timestamp (else its clock's now), UTC."))
    dropped_before: int = strawberry.field(description=_DROPPED)
    _e: strawberry.Private[FaultReported]


@strawberry.enum(description="What a charger reports the progress of.")
class MaintenanceKind(Enum):
    FIRMWARE = strawberry.enum_value("FIRMWARE", description=(
        "A firmware update (FirmwareStatusNotification, or `Requested`, `Unanswered`)."))
    DIAGNOSTICS = strawberry.enum_value("DIAGNOSTICS", description=(
        "A diagnostics upload (DiagnosticsStatusNotification, or `Requested`)."))


@strawberry.type(description="A charger's progress with a firmware update or a "
                             "diagnostics upload (Firmware/DiagnosticsStatusNotification), "
                             "and an update or upload it accepted (`Requested`): what "
                             "`Station.firmwareStatus` and `diagnosticsStatus` read now.")
class MaintenanceEvent(_OfStation):
    cp_id: str = strawberry.field(description=_CP_ID)
    kind: MaintenanceKind = strawberry.field(description="Firmware update or diagnostics.")
    # The station's own enums, one field each: a GraphQL field has one type, and the two
    # statuses are two enums (review s32: a String beside the station's enums).
    firmware_status: FirmwareStatus | None = strawberry.field(description=(
        "FIRMWARE: the status as `Station.firmwareStatus` reads it now (DOWNLOADING, "
        "INSTALLED, …, `REQUESTED`: an `updateFirmware` the charger accepted, "
        "`UNANSWERED`); null for DIAGNOSTICS."))
    diagnostics_status: DiagnosticsStatus | None = strawberry.field(description=(
        "DIAGNOSTICS: the status as `Station.diagnosticsStatus` reads it now (UPLOADING, "
        "UPLOADED, UPLOAD_FAILED, IDLE, `REQUESTED`: a `getDiagnostics` the charger "
        "accepted); null for FIRMWARE."))
    status: str = strawberry.field(
        deprecation_reason="Use `firmwareStatus` or `diagnosticsStatus` (by `kind`): "
                           "the station's enums.",
        description="As OCPP 1.6 spells it: Downloading, Downloaded, Installing, "
                    "Installed, DownloadFailed, InstallationFailed; Uploading, Uploaded, "
                    "UploadFailed; Idle. Or `Requested`: an `updateFirmware` or "
                    "`getDiagnostics` the charger accepted.")
    at: datetime = strawberry.field(description=(
        "When it was reported (or the update accepted), UTC: the station's "
        "`firmwareStatusAt` or `diagnosticsStatusAt`."))
    requested_at: datetime | None = strawberry.field(description=(
        "The request the status follows: FIRMWARE, the rollout "
        "(`Station.firmwareRollout.requestedAt`); DIAGNOSTICS, the upload "
        "(`Station.diagnosticsRequest.requestedAt`). Null before any was recorded."))
    dropped_before: int = strawberry.field(description=_DROPPED)
    _e: strawberry.Private[MaintenanceStatusChanged]


@strawberry.type(description="A reservation was accepted, refused, used, cancelled or "
                               "expired.")
class ReservationEvent(_OfStation):
    reservation_id: int = strawberry.field(description="The OCPP reservationId.")
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description=_CONNECTOR_ID)
    state: ReservationState = strawberry.field(description="Its state after the change.")
    at: datetime = strawberry.field(description="When it changed, UTC.")
    dropped_before: int = strawberry.field(description=_DROPPED)
    _e: strawberry.Private[ReservationChanged]

    @strawberry.field(description="The reservation as it reads now; null if hidden.")
    async def reservation(self, info: Info) -> Reservation | None:
        return await _record(info, d.Reservation, Reservation, self._e.reservation_record_id)


@strawberry.type(description="A command reached its charger, or failed to.")
class CommandEvent:
    command_id: strawberry.ID = strawberry.field(description=(
        "The `commandId` the command's mutation returned."))
    action: str = strawberry.field(description="The OCPP action, e.g. Reset.")
    cp_id: str = strawberry.field(description=_CP_ID)
    status: str | None = strawberry.field(description="The charger's answer, OCPP spelling.")
    error_code: str | None = strawberry.field(description=(
        "Why it failed, e.g. CHARGER_OFFLINE, CHARGER_TIMEOUT or CHARGER_REJECTED; null "
        "when it did not."))
    requested_by: str = strawberry.field(description=(
        "Who asked: a user's global id (as `User.id`), `ocpp:<cpId>` or `system`."))
    at: datetime = strawberry.field(description="When it completed, UTC.")
    dropped_before: int = strawberry.field(description=_DROPPED)
    _e: strawberry.Private[CommandCompleted]

    @strawberry.field(description="Who asked for it, if the viewer may see them (a console "
                                  "names them without another request).")
    async def requested_by_user(self, info: Info) -> User | None:
        return await _actor_user(info, self._e.requested_by)  # as stored: a raw id


class LiveFeed(AsyncIterator[Any]):
    """What every subscription field returns: the topic it listens to, the client's
    filter (``accept``) and how an event becomes the field's object (``wrap``, given the
    number of events the subscriber missed right before it).

    ``graph/live_ws.py`` reads these three and fans events out itself, shaping each event
    once for all subscribers that would get the same result. Iterated, the feed is an
    ordinary per-subscriber stream (its own bus subscription, fresh loaders per event),
    which is what Strawberry's and graphql-core's own subscription machinery use; it tells
    what the sockets tell: EVENTS_UNAVAILABLE (yielded: a result, the feed goes on) and
    EVENTS_LOST (raised: the end)."""

    def __init__(self, context: GraphContext, topic: str, accept: Callable[[Any], bool],
                 wrap: Callable[[Any, int], Any], *,
                 last: Callable[[Any], bool] | None = None,
                 over: Callable[[], Awaitable[bool]] | None = None,
                 also: tuple[str, ...] = ()) -> None:
        self.context = context
        self.topic = topic
        #: Every topic the feed listens to: ``topic`` and those whose events it shapes
        #: as its own (``also``: a station's sight changing, for the connection feed).
        self.topics = (topic, *also)
        self.accept = accept
        self.wrap = wrap
        #: After an accepted event for which this is true, the subscription is complete
        #: (a single session's ENDED): the client is told so instead of waiting forever.
        self.last = last
        #: Whether there is nothing left to follow already (the session has ended, or is
        #: not the viewer's to see): then it completes at once.
        self.over = over
        self._stream: AsyncGenerator[Any, None] | None = None

    def __aiter__(self) -> LiveFeed:
        return self

    async def __anext__(self) -> Any:
        if self._stream is None:
            self._stream = self._iterate()  # subscribes at the first read, as before
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def _iterate(self) -> AsyncGenerator[Any, None]:
        ctx = self.context
        dropped = 0
        events = ctx.services.live.events(ctx.viewer, list(self.topics))
        # Subscribed before it is asked whether anything is left to follow: an end
        # published meanwhile is then in the stream, not lost.
        if self.over is not None and await self.over():
            if isinstance(events, AsyncGenerator):
                await events.aclose()
            return
        async for event in events:
            if isinstance(event, EventsDropped):
                if event.interrupted:
                    raise events_lost()
                if event.unavailable:
                    # Told as the sockets tell it (``Connection.unheard``): a result with
                    # no data and this error, the feed going on. graphql-core completes
                    # an exception the source yields as the field's error (review s33:
                    # this path said nothing, and looked live during the outage).
                    yield events_unavailable()
                    continue
                dropped += event.count
                continue
            if not self.accept(event):
                continue
            ctx.loaders = Loaders(ctx.services.reads, ctx.viewer)
            ctx.now = utcnow()
            yield self.wrap(event, dropped)
            dropped = 0
            if self.last is not None and self.last(event):
                return


def events_lost() -> GraphQLError:
    """How a subscription ends when its feed broke (``EventsDropped.interrupted``)."""
    return GraphQLError(
        "the live feed was interrupted and events were lost: read the current state and "
        "subscribe again", extensions={"code": "EVENTS_LOST"})


def events_unavailable() -> GraphQLError:
    """Told, without ending it, to a subscription that started while the other instances'
    events cannot reach this one (``EventsDropped.unavailable``)."""
    return GraphQLError(
        "events from other instances are unavailable now (the event bus between instances "
        "is out of reach): this subscription hears only this instance's events until it "
        "is back, then ends with EVENTS_LOST; read the current state and subscribe again "
        "then", extensions={"code": "EVENTS_UNAVAILABLE"})


def _feed(info: Info, topic: str, accept: Callable[[Any], bool],
          wrap: Callable[[Any, int], Any], *, last: Callable[[Any], bool] | None = None,
          over: Callable[[], Awaitable[bool]] | None = None,
          also: tuple[str, ...] = ()) -> LiveFeed:
    ctx: GraphContext = info.context
    if ctx.viewer.anonymous and (topic not in PUBLIC_TOPICS
                                 or not ctx.services.policy.public_map):
        raise GraphQLError("sign in first", extensions={"code": "UNAUTHENTICATED"})
    return LiveFeed(ctx, topic, accept, wrap, last=last, over=over, also=also)


def _status(value: str) -> Any:
    return d.ConnectorStatus(value)


def _everything(event: DomainEvent) -> bool:
    return True


def _connector_status(e: ConnectorStatusChanged, dropped: int) -> ConnectorStatusEvent:
    return ConnectorStatusEvent(cp_id=e.cp_id, connector_id=e.connector_id,
                                status=_status(e.status),
                                error_code=shown_error_code(e.error_code),
                                info=e.info, vendor_error_code=e.vendor_error_code,
                                at=e.at, dropped_before=dropped, free=e.free, _e=e)


def _station_connection(e: StationConnectionChanged | StationSightChanged, dropped: int
                        ) -> StationConnectionEvent:
    return StationConnectionEvent(cp_id=e.cp_id, online=e.online, at=e.at,
                                  dropped_before=dropped, _e=e)


def _session(e: SessionChanged, dropped: int) -> SessionEvent:
    return SessionEvent(change=SessionChange(e.change), transaction_id=e.transaction_id,
                        cp_id=e.cp_id, connector_id=e.connector_id,
                        state=d.SessionState(e.state),  # type: ignore[arg-type]
                        energy_kwh=e.energy_wh / 1000,
                        power_kw=e.power_w / 1000 if e.power_w is not None else None,
                        at=e.at, dropped_before=dropped, _e=e)


def _maintenance(e: MaintenanceStatusChanged, dropped: int) -> MaintenanceEvent:
    kind = MaintenanceKind(e.kind)
    firmware = kind is MaintenanceKind.FIRMWARE
    return MaintenanceEvent(
        cp_id=e.cp_id, kind=kind, status=e.status,
        firmware_status=member(FirmwareStatus, e.status) if firmware else None,
        diagnostics_status=None if firmware else member(DiagnosticsStatus, e.status),
        at=e.at, requested_at=e.requested_at, dropped_before=dropped, _e=e)


def _fault(e: FaultReported, dropped: int) -> FaultEvent:
    return FaultEvent(cp_id=e.cp_id, connector_id=e.connector_id,
                      error_code=shown_error_code(e.error_code),
                      status=_status(e.status), info=e.info,
                      vendor_error_code=e.vendor_error_code, at=e.at,
                      dropped_before=dropped, _e=e)


def _reservation(e: ReservationChanged, dropped: int) -> ReservationEvent:
    return ReservationEvent(reservation_id=e.reservation_id, cp_id=e.cp_id,
                            connector_id=e.connector_id,
                            state=d.ReservationState(e.state),  # type: ignore[arg-type]
                            at=e.at, dropped_before=dropped, _e=e)


def _command(e: CommandCompleted, dropped: int) -> CommandEvent:
    return CommandEvent(command_id=strawberry.ID(e.command_id), action=e.action,
                        cp_id=e.cp_id, status=e.status, error_code=e.error_code,
                        requested_by=shown_actor(e.requested_by), at=e.at,
                        dropped_before=dropped, _e=e)


@strawberry.type(description=(
    "Live events over a websocket on /graphql (graphql-transport-ws), each filtered by "
    "what the viewer may see. Signed out, only the map's feeds (connector status, "
    "station connection) and only when the public map is on."))
class Subscription:
    # The resolvers are plain functions returning a LiveFeed (an async iterator): errors
    # such as an anonymous viewer or a malformed filter id surface when the subscription
    # starts, as an `error` message, not with its first event.
    @strawberry.subscription(description="Connector status changes: the live map.")
    def connector_status_changed(self, info: Info, filter: StationEventFilter | None = None
                                 ) -> AsyncIterator[ConnectorStatusEvent]:
        accept = filter.accepts() if filter else _everything
        return _feed(info, ConnectorStatusChanged.topic, accept, _connector_status)

    @strawberry.subscription(description=(
        "Chargers going online and offline, each change at once. (The `station.offline` "
        "and `station.online` webhooks are debounced instead: offline only once the "
        "charger has stayed offline for `CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S`.)"))
    def station_connection_changed(self, info: Info,
                                   filter: StationEventFilter | None = None
                                   ) -> AsyncIterator[StationConnectionEvent]:
        accept = filter.accepts() if filter else _everything
        # A station's sight changing is told here too: a live map keys stations by it.
        return _feed(info, StationConnectionChanged.topic, accept, _station_connection,
                     also=(StationSightChanged.topic,))

    @strawberry.subscription(description=(
        "Session started / energy so far / ended. Energy updates (UPDATED) are throttled "
        f"to {_UPDATE_EVERY} per session, the newest figures only: several meter values "
        "within that time make one event, and one still held when the session ends is "
        "not sent (the ENDED carries the last figures). A client drawing a charging "
        "curve reads the session's `meterValues` (`from` the last sample it has) on an "
        "event, not the events' `energyKwh`. A session may end twice: closed without "
        "its StopTransaction (`endSession`), then corrected by the charger's stop, a "
        "second ENDED (see `SessionChange.ENDED` and `filter.sessionId`)."))
    def session_updated(self, info: Info, filter: SessionEventFilter | None = None
                        ) -> AsyncIterator[SessionEvent]:
        ctx: GraphContext = info.context
        session_id = expect_id(str(filter.session_id), "session", "filter.sessionId") \
            if filter and filter.session_id else None
        of_charger = filter.accepts() if filter else _everything
        mine = bool(filter and filter.mine)
        me = ctx.viewer.user_id

        def accept(e: SessionChanged) -> bool:
            return (session_id is None or e.session_id == session_id) and of_charger(e) \
                and (not mine or e.user_id == me)

        if session_id is None:
            return _feed(info, SessionChanged.topic, accept, _session)

        async def over() -> bool:
            session = await ctx.services.reads.get(ctx.viewer, d.Session, session_id)
            return session is None or session.state is not d.SessionState.ACTIVE

        # One session's events end with its ENDED: then the subscription is complete
        # (QA s16: an app waited on it for ever, and on a session over before it asked).
        return _feed(info, SessionChanged.topic, accept, _session,
                     last=lambda e: e.change == "ENDED", over=over)

    @strawberry.subscription(description="Firmware update and diagnostics upload progress "
                                         "of the chargers an operator runs.")
    def maintenance_status_changed(self, info: Info,
                                   filter: StationEventFilter | None = None
                                   ) -> AsyncIterator[MaintenanceEvent]:
        accept = filter.accepts() if filter else _everything
        return _feed(info, MaintenanceStatusChanged.topic, accept, _maintenance)

    @strawberry.subscription(description="Faults reported by connectors.")
    def fault_reported(self, info: Info, filter: StationEventFilter | None = None
                       ) -> AsyncIterator[FaultEvent]:
        accept = filter.accepts() if filter else _everything
        return _feed(info, FaultReported.topic, accept, _fault)

    @strawberry.subscription(description="Reservations accepted, refused, used, cancelled "
                                         "or expired: a driver's own, an operator's "
                                         "stations'.")
    def reservation_changed(self, info: Info, filter: StationEventFilter | None = None
                            ) -> AsyncIterator[ReservationEvent]:
        accept = filter.accepts() if filter else _everything
        return _feed(info, ReservationChanged.topic, accept, _reservation)

    @strawberry.subscription(description="Answers to commands sent to chargers.")
    def command_completed(self, info: Info, filter: CommandEventFilter | None = None
                          ) -> AsyncIterator[CommandEvent]:
        command_id = str(filter.command_id) if filter and filter.command_id else None
        if command_id is not None and not is_id(command_id):
            # A mistyped id would follow nothing, silently, for good (QA s17).
            raise ValidationError("expected a commandId as a command's answer gave it",
                                  field="filter.commandId", code="INVALID_ID")
        of_charger = filter.accepts() if filter else _everything

        def accept(e: CommandCompleted) -> bool:
            return of_charger(e) and (command_id is None or e.command_id == command_id)

        return _feed(info, CommandCompleted.topic, accept, _command)
