"""Domain events, published after the change they describe has committed.

Each event carries the station's ownership (``company_id``, ``owner_id``) as it was when
the event happened, so subscription filters decide visibility with ``Policy.sees_event``
without a store call per subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from domain.clock import utcnow


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    topic: ClassVar[str] = "event"
    station_id: str | None
    cp_id: str
    company_id: str | None = None
    owner_id: str | None = None
    #: Whether the station is on the map (Accepted), for those who see only the map's
    #: events (``Policy.sees_event``). True from versions before it was carried.
    on_map: bool = True
    at: datetime = field(default_factory=utcnow)
    #: The version of the station's ownership these fields were read with
    #: (``Station.sight``, moved on by every edit of who sees it, in its write): of two
    #: readings of one station, the higher is the newer. A live feed or the webhook
    #: dispatcher judges the event by the newer of this read and the highest it heard
    #: (``domain.services.live.SightOrder``). In a ``StationSightChanged``, the edit's
    #: own (the station as written). ``None`` for an event of no station, and from
    #: builds before it was carried: such an event goes by its own read, and what it
    #: read is never kept as heard (an older instance's edit moves no version, so
    #: nothing orders it against one). A field of its own, not ``sight``: the build
    #: before put a store-wide counter in ``StationSightChanged.sight``, which read as a
    #: version outranked every handover after it (review r26-handover3).
    version: int | None = None


@dataclass(frozen=True, kw_only=True)
class ConnectorStatusChanged(DomainEvent):
    topic: ClassVar[str] = "connector_status"
    connector_record_id: str | None
    connector_id: int
    status: str
    error_code: str = "NoError"
    info: str | None = None
    #: The charger's own code for the error; ``None`` when it sent none (and from
    #: versions before it was carried).
    vendor_error_code: str | None = None
    #: Whether the plug itself is free when the event is published, by the rule of
    #: "available now" without its station's part (``availability.connectors_free``:
    #: reports Available, holds no ACTIVE session, no live reservation holds it). Set by
    #: ``Service.publish`` for every such event; ``None`` for connector 0 and from
    #: versions before it was carried. An event with an unchanged status says that a
    #: reservation or a session turned ``free`` (whose is not told: ``plugs_held``).
    free: bool | None = None


@dataclass(frozen=True, kw_only=True)
class StationConnectionChanged(DomainEvent):
    topic: ClassVar[str] = "station_connection"
    online: bool
    #: The connection recorded (``Station.connection``): between instances, the higher
    #: number is the newer connection, whatever their clocks. ``None`` from versions
    #: before it, and for a disconnect recorded without one (start-up).
    connection: int | None = None
    #: Not a disconnect: the station was removed while its charger was offline already,
    #: told offline all the same so that live maps drop it (its ``station`` reads null),
    #: as the removal of one online is by its charger's hang-up (QA s30: told nothing,
    #: maps kept it). No charger went anywhere, so no webhook carries it
    #: (``webhook_event``) and no outage begins. False from versions before it.
    removed_offline: bool = False


@dataclass(frozen=True, kw_only=True)
class StationSightChanged(DomainEvent):
    """An edit changed who sees a station (``Policy.sees_event``): it was handed to
    another company or owner, or its registration took it off the map or onto it. For
    live maps, through ``stationConnectionChanged``, which otherwise kept a station handed
    away on the old company's map, online with its plugs available now, and a station
    that left the map on every driver's, until they queried again (QA s25). Published
    twice: ``joined`` false to those who saw it and do not now, offline (gone from
    their map, as a removed station is announced); ``joined`` true to those who see it
    now and did not, with its connection as it is (a map adds it). The ownership fields
    are the station's after the edit, ``was_*`` before it. Not a connection change: no
    charger went anywhere, so it has a topic of its own, which the services that follow
    connections (commands, site limits, webhooks, caches) do not hear, and an older
    instance cannot take for a disconnect. Live maps read both topics through one
    subscription, in one order (``LiveService.watch``), and place it by ``version``
    (the one the edit wrote, ``Station.sight``: of two edits the later has the higher)
    and ``connection`` (``domain.services.live.SightOrder``)."""

    topic: ClassVar[str] = "station_sight"
    joined: bool
    #: What the viewers it reaches are told of the connection: ``False`` to those who
    #: lost sight of it; the station's own to those who gained it, read when it is
    #: published (not by the edit: a disconnect in between was told first, then undone).
    online: bool
    was_company_id: str | None = None
    was_owner_id: str | None = None
    was_on_map: bool = True
    #: The connection ``online`` was read with (``Station.connection``): a connection
    #: event of this connection or a newer one that reached a map first is newer than
    #: the read, and its ``online`` is told instead. ``None``: never connected, and from
    #: versions before it was carried.
    connection: int | None = None
    #: The build before ``version``: which edit of the station's sight this is, a number
    #: of the whole store (``Store.next_sequence("station_sight")``), drawn between the
    #: edit's read and its write. Still drawn and sent, for instances of that build
    #: during a rolling upgrade (their live feeds order handovers by it); never read by
    #: this one: a store-wide number is no station's version.
    sight: int | None = None

    def sides(self) -> tuple[StationConnectionChanged, StationConnectionChanged]:
        """The station as seen after the edit and before it: to ask the visibility rules
        (``Policy.sees_event``) of each."""
        now = StationConnectionChanged(station_id=self.station_id, cp_id=self.cp_id,
                                       company_id=self.company_id, owner_id=self.owner_id,
                                       on_map=self.on_map, online=self.online, at=self.at)
        before = StationConnectionChanged(
            station_id=self.station_id, cp_id=self.cp_id, company_id=self.was_company_id,
            owner_id=self.was_owner_id, on_map=self.was_on_map, online=self.online,
            at=self.at)
        return now, before


@dataclass(frozen=True, kw_only=True)
class SessionChanged(DomainEvent):
    """STARTED, UPDATED (meter values, throttled per session) or ENDED."""

    topic: ClassVar[str] = "session"
    change: str
    session_id: str
    transaction_id: int
    connector_id: int
    user_id: str | None
    vehicle_id: str | None
    energy_wh: int
    power_w: float | None
    state: str
    #: The price of an ENDED session (minor units of ``currency``), for webhooks to bill
    #: from; None while it runs, and from versions before it was carried.
    cost_minor: int | None = None
    currency: str | None = None


@dataclass(frozen=True, kw_only=True)
class FaultReported(DomainEvent):
    topic: ClassVar[str] = "fault"
    connector_id: int
    error_code: str
    status: str
    info: str | None = None
    vendor_error_code: str | None = None


@dataclass(frozen=True, kw_only=True)
class MaintenanceStatusChanged(DomainEvent):
    """A charger reported the progress of a firmware update or a diagnostics upload
    (FirmwareStatusNotification, DiagnosticsStatusNotification), or accepted one
    (``Requested``): an operator rolling out firmware follows it live instead of polling
    ``Station.firmwareStatus``."""

    topic: ClassVar[str] = "maintenance"
    #: ``FIRMWARE`` or ``DIAGNOSTICS``.
    kind: str
    #: As OCPP 1.6 spells it (Downloading, Installed, Uploaded, ...), or ours
    #: ``Requested`` (``entities.FIRMWARE_REQUESTED``, ``DIAGNOSTICS_REQUESTED``): an
    #: UpdateFirmware or GetDiagnostics the charger accepted. With ``at``, what the
    #: station stores (``Station.firmware_status_at``).
    status: str
    #: The rollout (``Station.firmware_requested_at``) or upload
    #: (``diagnostics_requested_at``) the status follows; ``None`` before any was
    #: recorded, and from versions before it was carried.
    requested_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ReservationChanged(DomainEvent):
    topic: ClassVar[str] = "reservation"
    reservation_record_id: str
    reservation_id: int
    connector_id: int
    user_id: str | None
    state: str
    #: The reservation's books (``Reservation.company_id``/``station_owner_id``), beside
    #: the station's ownership now: after a hand-over its old company keeps seeing it,
    #: the new one only while it is live (``Policy.sees_event``). Both ``None`` in events
    #: of versions before them.
    books_company_id: str | None = None
    books_station_owner_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CommandCompleted(DomainEvent):
    """An operator command reached the charger (or failed to): its answer."""

    topic: ClassVar[str] = "command"
    command_id: str
    action: str
    requested_by: str
    status: str | None
    error_code: str | None = None
    result: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class ChargerCommandRelayed(DomainEvent):
    """Between instances, never to clients: a command for a charger whose websocket
    another instance may hold (``pubsub/command_relay.py``). ``origin`` is the asking
    instance; ``payload`` is JSON (times as RFC 3339 text)."""

    topic: ClassVar[str] = "charger_command"
    request_id: str
    origin: str
    action: str
    payload: dict[str, Any]
    timeout: float
    #: The station's newest connection as the asker read it (``ChargerGateway.call``'s
    #: ``newest``): a holder whose connection is older does not claim the command, which
    #: would go out on a superseded socket (review s33). ``None`` from an instance that
    #: predates it (a rolling upgrade), or a caller that read none.
    newest: int | None = None


@dataclass(frozen=True, kw_only=True)
class ChargerCommandAnswered(DomainEvent):
    """Between instances, never to clients: the instance holding the charger
    (``holder``) took a relayed command (``stage`` ``"claimed"``), then its answer
    (``"answered"``, with ``result``) or its failure (``"failed"``, with the error's
    class name, code, message and field; ``error_lost``: a ``ChargerLost``, sent as
    ``ChargerTimeout``, the name an older instance knows)."""

    topic: ClassVar[str] = "charger_command_answer"
    request_id: str
    origin: str
    holder: str
    stage: str
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_field: str | None = None
    error_lost: bool = False


@dataclass(frozen=True, kw_only=True)
class ChargerCommandConfirmed(DomainEvent):
    """Between instances, never to clients: the asking instance (``origin``), still
    waiting, tells the first instance that claimed a relayed command (``holder``) to send
    it. A holder that hears nothing in time drops the command: the asker gave up (and
    told its client so), and the charger must not act on it after all."""

    topic: ClassVar[str] = "charger_command_go"
    request_id: str
    origin: str
    holder: str


@dataclass(frozen=True, kw_only=True)
class AccessChanged(DomainEvent):
    """Never to clients: a user's rights changed (role, company, deactivation, revoked
    tokens), so every instance re-checks that user's open GraphQL sockets at once. Not
    about a station: ``station_id`` is None and ``cp_id`` empty."""

    topic: ClassVar[str] = "access"
    user_id: str


@dataclass(frozen=True, kw_only=True)
class StationRemoved(DomainEvent):
    """Never to clients: a station was removed, so the instance holding its charger's
    websocket hangs up at once instead of at the charger's next message, and live maps'
    streams forget what they kept of it (``domain.services.live.SightOrder``)."""

    topic: ClassVar[str] = "station_removed"


@dataclass(frozen=True, kw_only=True)
class StationPasswordChanged(DomainEvent):
    """Never to clients: an operator gave a station a new password, so the instance
    holding its charger's websocket closes a connection that signed in with the old one
    (``OcppServer._watch_removals``): the way to shut out a compromised charger, which
    then cannot sign in again (README, "Shutting out a charger")."""

    topic: ClassVar[str] = "station_password_changed"


@dataclass(frozen=True, kw_only=True)
class StationChanged(DomainEvent):
    """Never to clients: an operator edited a station or its connectors (registration,
    company, owner, password, ratings, …), so every instance drops what it caches of the
    station for its charger's messages (``ChargingService.follow``) instead of using a
    stale copy until the cache's expiry."""

    topic: ClassVar[str] = "station_changed"


@dataclass(frozen=True, kw_only=True)
class SignInsCounted(DomainEvent):
    """Never to clients: what an instance's sign-in throttles counted (``ThrottleSharing``),
    chargers' password checks and the addresses they passed from included
    (``ChargerSignIns``), so every instance meets one limit. Each of ``counted`` is
    "throttle operation digest". Not about one station: ``station_id`` is None and
    ``cp_id`` empty (a charger's appears only inside a digest)."""

    topic: ClassVar[str] = "sign_ins_counted"
    #: The instance that counted them: it skips its own.
    origin: str
    counted: list[str]


@dataclass(frozen=True, kw_only=True)
class WebhookChanged(DomainEvent):
    """Never to clients: a webhook was created, edited (its events, its URL, enabled or
    disabled) or removed, so every instance routes its events by it at once
    (``WebhookDispatcher``): each instance delivers the events it publishes itself, and
    one that learned of the webhook only at its next read of them (every 10 s) delivered
    none of its chargers' events meanwhile (QA s26). Not about one station:
    ``station_id`` is None and ``cp_id`` empty."""

    topic: ClassVar[str] = "webhook_changed"
    webhook_id: str


#: The topics clients may subscribe to (the relay's three, ``access``,
#: ``station_removed``, ``station_password_changed``, ``station_changed``,
#: ``webhook_changed`` and ``sign_ins_counted`` are internal;
#: ``station_sight`` reaches clients as ``stationConnectionChanged``, beside its topic).
ALL_TOPICS: tuple[str, ...] = (
    ConnectorStatusChanged.topic,
    StationConnectionChanged.topic,
    SessionChanged.topic,
    FaultReported.topic,
    MaintenanceStatusChanged.topic,
    ReservationChanged.topic,
    CommandCompleted.topic,
)
@dataclass(frozen=True, kw_only=True)
class PaymentChanged(DomainEvent):
    """A payment's status or amount changed (``change`` says how): settled (CAPTURED,
    FAILED, or part of it or all REFUNDED), or, by a late StopTransaction correcting its
    session, REPRICED (a PENDING or FAILED one's amount) or VOIDED (corrected to cost
    nothing). Seen, as payments are read, in its books
    (``books_company_id``/``books_station_owner_id``) and by its driver;
    ``company_id``/``owner_id`` are not set (its station may since have changed hands,
    or gone)."""

    topic: ClassVar[str] = "payment"
    payment_record_id: str
    session_record_id: str
    user_id: str | None
    status: str
    amount_minor: int
    refunded_minor: int
    currency: str
    books_company_id: str | None = None
    books_station_owner_id: str | None = None
    #: What happened: CAPTURED, FAILED, REFUNDED (a part of it too), REPRICED or VOIDED.
    #: ``status`` alone cannot tell a FAILED payment repriced from one failing. None from
    #: versions before it was carried (which published settlements only).
    change: str | None = None


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    t.topic: t
    for t in (ConnectorStatusChanged, StationConnectionChanged, SessionChanged, FaultReported,
              MaintenanceStatusChanged, ReservationChanged, CommandCompleted, PaymentChanged,
              ChargerCommandRelayed, ChargerCommandAnswered, ChargerCommandConfirmed,
              AccessChanged, StationRemoved, StationPasswordChanged, StationChanged,
              SignInsCounted, WebhookChanged,
              StationSightChanged)
}


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """Delivered in-band to a subscriber that fell behind: ``count`` events were dropped
    right before the next one (a slow subscriber never blocks a charger).

    ``interrupted``: the feed itself broke (the event bus between instances lost its
    connection, or got it back after events went past it): an unknown number of events is
    lost, so whoever shows live state must read it again. Delivered at once, not before
    the next event, since none may come for a while: it jumps the events queued when the
    feed broke.

    Not every loss is told: an event whose publish failed on the instance that published
    it (its own link to Redis) is lost to the others with no marker, their subscriptions
    never broke. Nothing that must come out right may rest on these markers: a model of
    what was heard (``SightOrder``) orders by the stations' versions
    (``DomainEvent.version``) instead (review s26).

    ``unavailable``: told to a subscription opened while the bus between instances is out
    (``EventBus.receiving`` False), as its first item: events of other instances do not
    reach it until the bus is back, when an ``interrupted`` marker follows as for every
    other subscriber; this instance's own events still come meanwhile. Without it, a
    subscription opened in an outage looked live and heard nothing from the others
    (QA s32)."""

    count: int
    interrupted: bool = False
    unavailable: bool = False
