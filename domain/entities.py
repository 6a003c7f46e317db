"""The entities of the domain model (DESIGN.md section 2).

Plain dataclasses: the stores map their fields one to one (field names are the storage
names), the services enforce the invariants. Nested values are flattened (a station's
location is ``lat``/``lon``/``address``) so every backend stores and filters them alike.
Times are timezone-aware UTC; energy is integer Wh; money is integer minor units, prices
are ``Decimal``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from domain.clock import utcnow
from domain.command_rules import without_credentials
from domain.ids import new_id
from domain.wire import rfc3339


class Role(StrEnum):
    DRIVER = "DRIVER"
    OPERATOR = "OPERATOR"
    ADMIN = "ADMIN"


class IdTagStatus(StrEnum):
    """OCPP 1.6 AuthorizationStatus values a stored tag can hold."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"


class Registration(StrEnum):
    """OCPP 1.6 RegistrationStatus a station gets on BootNotification."""

    ACCEPTED = "Accepted"
    PENDING = "Pending"
    REJECTED = "Rejected"


class ConnectorStatus(StrEnum):
    """OCPP 1.6 ChargePointStatus."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EVSE = "SuspendedEVSE"
    SUSPENDED_EV = "SuspendedEV"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class ConnectorType(StrEnum):
    TYPE2 = "Type2"
    CCS2 = "CCS2"
    CCS1 = "CCS1"
    CHADEMO = "CHAdeMO"
    TYPE1 = "Type1"
    NACS = "NACS"
    SCHUKO = "Schuko"
    OTHER = "Other"


class PowerType(StrEnum):
    AC = "AC"
    DC = "DC"


#: The current a plug standard delivers. NACS carries both (a Supercharger, a wall box)
#: and "Other" is anything: those match no power-type tariff, only one for their
#: standard or one for all plugs.
POWER_OF_PLUG: dict[ConnectorType, PowerType] = {
    ConnectorType.TYPE1: PowerType.AC, ConnectorType.TYPE2: PowerType.AC,
    ConnectorType.SCHUKO: PowerType.AC, ConnectorType.CCS1: PowerType.DC,
    ConnectorType.CCS2: PowerType.DC, ConnectorType.CHADEMO: PowerType.DC,
}


class SessionState(StrEnum):
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"


class MeterAnomaly(StrEnum):
    """What a session's energy register did that its energy is counted across, for an
    operator to review: it rolled over at its limit (a 32-bit or a 999,999.9 kWh
    counter), or restarted near 0 (a meter reset or replaced); or the transaction's final
    register (meterStop) could not be believed (below meterStart, more than the
    connector could deliver, or meterStart itself though its readings moved), so the
    session was billed what its readings metered; or it was believed though the
    transaction's own readings went higher (``STOP_BELOW_READINGS``: billed by it); or,
    closed as lost by a newer start on its connector, that start's meterStart lay below
    its readings (``NEXT_START_BELOW_READINGS``: billed up to that meterStart, the
    energy above it being the newer session's); or it is a replay of an earlier session
    of a clock never set, closed by its stop (``REPLAYED``: priced nothing,
    ``ChargingService._replayed``)."""

    ROLLOVER = "ROLLOVER"
    RESET = "RESET"
    IMPLAUSIBLE_STOP = "IMPLAUSIBLE_STOP"
    STOP_BELOW_READINGS = "STOP_BELOW_READINGS"
    NEXT_START_BELOW_READINGS = "NEXT_START_BELOW_READINGS"
    REPLAYED = "REPLAYED"


class SignedEncoding(StrEnum):
    """The format of a signed meter value's text: OCMF (Open Charge Metering Format, the
    German calibration law's common format: ``OCMF|{payload}|{signature}``), or another
    vendor's, kept as sent."""

    OCMF = "OCMF"
    UNKNOWN = "UNKNOWN"


class ReservationState(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    USED = "USED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


#: A reservation that holds (or may hold) its plug: the charger has it, or may have it.
LIVE_RESERVATION_STATES = (ReservationState.PENDING, ReservationState.ACTIVE)


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    CAPTURED = "CAPTURED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    #: Nothing to collect: its session's close was corrected to cost nothing (a late
    #: StopTransaction), as a session free from the start opens no payment. Final.
    VOIDED = "VOIDED"


class AuditAction(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    #: An operator command sent to a charger (who reset which charger, and its answer).
    COMMAND = "COMMAND"
    #: A person's account erased (``Erasure``): names no personal data, nor do the
    #: entries about them once it has run.
    ERASE = "ERASE"
    #: A copy of a person's data downloaded (``PersonalDataService``: ``/export/me.json``,
    #: ``/export/users/{id}.json``): who took whose, and when; it names nothing else.
    EXPORT = "EXPORT"


SYSTEM_ACTOR = "system"


@dataclass(kw_only=True)
class Record:
    """Fields every stored entity carries: identity and the four audit fields."""

    kind: ClassVar[str] = "record"
    #: Fields never copied into audit snapshots: secrets, and personal data in entries no
    #: erasure finds by their person (``RefreshFamily.user_agent``).
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    #: (secret field, marker): an update's audit image says ``marker: true`` when the
    #: secret changed (``audit_after``), so a password reset shows without the secret.
    secret_markers: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Fields holding an upload or download URL a charger was given: copied into audit
    #: snapshots, and read from older ones, without its credentials
    #: (``command_rules.without_credentials``; ``snapshot``, ``without_url_credentials``).
    url_fields: ClassVar[frozenset[str]] = frozenset()

    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    created_by: str = SYSTEM_ACTOR
    updated_by: str = SYSTEM_ACTOR


@dataclass(kw_only=True)
class Company(Record):
    kind: ClassVar[str] = "company"
    name: str
    #: What NAME order sorts by (``validation.name_key``: "ärztehaus"), written with the
    #: name by ``services.base`` (``stamp_new``, ``patch``); never given by a client nor shown.
    name_key: str = ""
    #: What the name is one with another by (``validation.name_identity``: "bäckerei x"),
    #: unique in the store (``ports.UNIQUE_RULES``), written with the name as
    #: ``name_key`` is. ``None`` is under no rule: a company whose name was another's
    #: this way before the rule (left without one by the stores' migrations, until it
    #: is renamed), or a record written to a store directly (tests).
    name_identity: str | None = None


@dataclass(kw_only=True)
class User(Record):
    kind: ClassVar[str] = "user"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password_hash", "token_epoch"})
    secret_markers: ClassVar[tuple[tuple[str, str], ...]] = (
        ("password_hash", "password_changed"), ("token_epoch", "tokens_revoked"))
    email: str
    name: str
    #: What NAME order sorts by (``validation.name_key``: "ärztehaus"), written with the
    #: name by ``services.base`` (``stamp_new``, ``patch``); never given by a client nor shown.
    name_key: str = ""
    role: Role
    company_id: str | None = None
    password_hash: str = ""
    active: bool = True
    #: Tokens carry the epoch they were issued in; raising it (a password change, a
    #: deactivation) revokes every token issued before.
    token_epoch: int = 0
    #: When the account was erased (``Erasure``, the right to erasure): its personal
    #: fields anonymised, deactivated for good; its id stays on the sessions, payments
    #: and refunds kept for the operators' books. ``None``: not erased.
    erased_at: datetime | None = None


@dataclass(kw_only=True)
class Vehicle(Record):
    kind: ClassVar[str] = "vehicle"
    owner_id: str
    #: As entered (``validation.license_plate``), for display: "B-MI 2024".
    license_plate: str
    #: Its letters and digits (``validation.plate_key``): "BMI2024". Unique per owner,
    #: and what a search by plate compares, so "bmi 2024" finds "B-MI 2024".
    plate_key: str
    make: str | None = None
    model: str | None = None
    battery_kwh: float | None = None
    #: When its owner removed it from their garage (``FleetService.remove_vehicle``);
    #: ``None`` while kept. A removed car stays as the car its sessions, payments and
    #: refunds were charged for (history reads it, QA s22), but no list of cars, card
    #: link or remote start offers it, and its plate is free again for its owner (the
    #: unique rule holds over kept cars only, ``ports.PARTIAL_UNIQUE_RULES``).
    removed_at: datetime | None = None


@dataclass(kw_only=True)
class IdTag(Record):
    kind: ClassVar[str] = "id_tag"
    tag: str
    user_id: str
    vehicle_id: str | None = None
    status: IdTagStatus = IdTagStatus.ACCEPTED
    expires_at: datetime | None = None
    parent_tag: str | None = None
    #: Who blocked it (while BLOCKED): its owner (a lost card) or their operator or an
    #: admin, whose block the owner may not get round (``fleet.blocked_by_others``).
    blocked_by: str | None = None
    #: Who set ``expires_at`` (written whenever it changes; ``None`` with no expiry): its
    #: owner, a date they chose that bars nothing once passed, or their operator or an
    #: admin, whose passed date the owner may not get round, as an EXPIRED mark
    #: (``fleet.staff_expiry_passed``). Cards stored before (SQLite migration 80) take
    #: their creator, or their last writer when their owner created them.
    expiry_set_by: str | None = None

    def status_at(self, now: datetime) -> IdTagStatus:
        """Its status as a charger should be told it at ``now``: EXPIRED once past its
        expiry, whatever is stored. The one rule for OCPP Authorize and for commands."""
        if self.status is IdTagStatus.ACCEPTED and self.expires_at is not None \
                and self.expires_at <= now:
            return IdTagStatus.EXPIRED
        return self.status

    def charger_status(self, owner: User | None, now: datetime) -> IdTagStatus:
        """What a charger is told of it at ``now`` (``ChargingService.authorize``):
        BLOCKED while its owner is deactivated or gone, whatever is stored; else
        ``status_at``."""
        if owner is None or not owner.active:
            return IdTagStatus.BLOCKED
        return self.status_at(now)


@dataclass(kw_only=True)
class Station(Record):
    kind: ClassVar[str] = "station"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"auth_password_hash"})
    secret_markers: ClassVar[tuple[tuple[str, str], ...]] = (
        ("auth_password_hash", "password_changed"),)
    #: A rollout recorded before QA s25 keeps its presigned URL's signature here: every
    #: update of the station wrote it again into its audit images (review s25).
    url_fields: ClassVar[frozenset[str]] = frozenset({"firmware_location"})
    cp_id: str
    name: str
    #: What NAME order sorts by (``validation.name_key``: "ärztehaus"), written with the
    #: name by ``services.base`` (``stamp_new``, ``patch``); never given by a client nor shown.
    name_key: str = ""
    #: Its cpId without regard to case (``validation.cp_id_key``), written with it by
    #: ``services.base``: OCPP 1.6 has a charge point's identity case-insensitive
    #: (CiString), so a charger connecting as ``cp-001`` is station ``CP-001``'s, and no
    #: two stations are created one whatever the case. Not unique in the store: stations
    #: stored before (SQLite migration 78) may share it; see
    #: ``ChargerConnections.station``.
    cp_id_key: str = ""
    owner_id: str | None = None
    company_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    registration: Registration = Registration.ACCEPTED
    online: bool = False
    last_seen: datetime | None = None
    auth_password_hash: str | None = None
    firmware_status: str | None = None
    diagnostics_status: str | None = None
    #: The central-system instance holding the charger's websocket (its ``InstanceLease``
    #: id) while ``online``: when that instance dies, another one records the disconnect.
    connected_instance: str | None = None
    #: Which connection of its charger was recorded last (online, or since closed): a
    #: number the store draws per connection (``Store.next_sequence("connection")``), so
    #: of two connections the newer is the higher whatever the instances' clocks say. A
    #: disconnect is recorded only for this connection; ``None`` before any was.
    connection: int | None = None
    #: When its charger last booted (BootNotification), on our clock: a session recorded
    #: before it and still open on a connector then reported Available lost its stop.
    booted_at: datetime | None = None
    #: The registration its charger acts on (``domain.registration``): the one its last
    #: BootNotification was answered with, which OCPP 1.6 (4.2) has it keep until its
    #: next boot; or, when ``registration`` was changed after a boot answered before
    #: this was kept, the registration it was changed from. ``None``: ``registration``'s
    #: (a charger that never booted was told nothing; stations from before SQLite
    #: migration 60, until their next boot, but those with a session open then whose
    #: charger booted, taken as told Accepted: migration 60 and MongoDB's
    #: ``charger_registrations`` step set it).
    charger_registration: Registration | None = None
    #: The charge point as a whole, from its StatusNotifications for connector 0
    #: (Available, Unavailable or Faulted); ``None`` until it sent one.
    status: ConnectorStatus | None = None
    error_code: str | None = None
    #: The charger's free-text detail and its own code for the error with it (null when
    #: it sent none, and before they were kept: SQLite migration 31).
    info: str | None = None
    vendor_error_code: str | None = None
    status_at: datetime | None = None
    #: The heartbeat interval (seconds) its charger was last set to by a ChangeConfiguration
    #: of ``HeartbeatInterval`` it accepted (or an operator's ``updateStation``): its
    #: boots are answered with it (``ChargingService.boot_interval``), else a boot's answer
    #: would set the charger back to the global one. ``None``: the global one.
    heartbeat_interval: int | None = None
    #: The site (grid connection) it charges behind, whose power its sessions share
    #: (``domain.load_sharing``); ``None``: no site limit applies.
    site_id: str | None = None
    #: When ``firmware_status`` and ``diagnostics_status`` were set (the charger's
    #: notification, or ``FIRMWARE_REQUESTED``/``DIAGNOSTICS_REQUESTED`` from an
    #: accepted UpdateFirmware/GetDiagnostics), on our clock: "Installed" alone does not
    #: say which rollout, today's or last year's.
    #: ``None`` for statuses stored before the time was kept (SQLite migration 38).
    firmware_status_at: datetime | None = None
    diagnostics_status_at: datetime | None = None
    #: The last firmware rollout its charger accepted (UpdateFirmware): when, where from
    #: (the URL without its user information nor query values, as the audit keeps it)
    #: and when the charger was to fetch it. Statuses after ``firmware_requested_at`` are
    #: its.
    firmware_requested_at: datetime | None = None
    firmware_location: str | None = None
    firmware_retrieve_date: datetime | None = None
    #: The last diagnostics upload its charger accepted (GetDiagnostics answered with a
    #: ``fileName``): when, and the file it said it would upload. Diagnostics statuses
    #: after ``diagnostics_requested_at`` are its (SQLite migration 51).
    diagnostics_requested_at: datetime | None = None
    diagnostics_file_name: str | None = None
    #: While ``diagnostics_status`` is ``DIAGNOSTICS_REQUESTED``: the upload before it was
    #: still under way (its last word Uploading) when this one was accepted, so the
    #: Uploaded or UploadFailed that comes first is that upload's end, not this one's
    #: (a DiagnosticsStatusNotification names no file; ``base.keeps_requested``).
    diagnostics_previous_uploading: bool = False
    #: Its charger reported more configuration keys than are kept of a station
    #: (``services.configuration.MAX_KEYS``): its ``ConfigurationKey`` records are the
    #: first of them by folded key. Cleared by a read of every key that all fit
    #: (SQLite migration 42; ``False`` on stations stored before).
    configuration_truncated: bool = False
    #: The fallback its site last sent its charger (kW; ``site_load``: a TxDefaultProfile
    #: its new sessions draw until their share arrives), written before it is sent:
    #: the charger may hold it. Cleared once the charger, its station behind no site
    #: any more, has had it removed. ``None``: it holds none of ours (SQLite
    #: migration 48).
    site_fallback_kw: float | None = None
    #: The version of who sees it (``Policy.sees_event``: its company, its owner, whether
    #: it is on the map): every edit changing that adds one, in the edit's write, which
    #: holds only on the version of the station it read (``StationService.update_station``).
    #: Every event of the station carries the number of the station it read
    #: (``DomainEvent.version``): of two readings of its ownership the higher number is the
    #: newer, whatever the instances heard or lost (``domain.services.live.SightOrder``).
    #: 0: never changed (and stations from before SQLite migration 68; MongoDB reads a
    #: missing one as 0).
    sight: int = 0


#: ``Station.firmware_status`` from an UpdateFirmware its charger accepted until the
#: charger reports on it: ours, not one of OCPP 1.6's FirmwareStatus values, so the last
#: rollout's "Installed" is not read as the new one's.
FIRMWARE_REQUESTED = "Requested"
#: ``Station.firmware_status`` from an UpdateFirmware its charger did not answer (in
#: time, or readably): sent, so the charger may have started the rollout, which its next
#: FirmwareStatusNotification settles (QA s28: nothing was recorded, and the station
#: showed no rollout while its charger downloaded one). Ours too.
FIRMWARE_UNANSWERED = "Unanswered"
#: The statuses a rollout recorded by us reads until its charger reports on it.
FIRMWARE_AWAITING = frozenset({FIRMWARE_REQUESTED, FIRMWARE_UNANSWERED})
#: ``Station.diagnostics_status`` from a GetDiagnostics its charger accepted (its answer
#: named a file) until the charger reports on it: ours too, so the last upload's
#: "Uploaded" is not read as the new one's.
DIAGNOSTICS_REQUESTED = "Requested"


class ChargingRateUnit(StrEnum):
    """The unit of a charging schedule's limits (OCPP 1.6 ChargingRateUnitType)."""

    W = "W"
    A = "A"


class LimitAnswer(StrEnum):
    """What became of the last site limit sent to a session's charger: its answer to
    SetChargingProfile, or why none came. Only ``ACCEPTED`` is under control."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    NOT_SUPPORTED = "NotSupported"
    TIMEOUT = "Timeout"
    OFFLINE = "Offline"
    ERROR = "Error"
    #: A higher limit being sent now (by this or another instance): held at it until
    #: the charger answers.
    PENDING = "Pending"
    #: A person's own TxProfile above the site's stack level governs the session (a
    #: deliberate override): the site holds its connector's rating for it and does not
    #: ask it again until that is cleared or the transaction ends.
    OVERRIDDEN = "Overridden"


#: The least current IEC 61851 lets an AC charger offer a car, per phase. A site's
#: per-session minimum is at least this on every phase (``min_session_kw``): a share
#: below it is one a charger cannot charge at (it stalls, or ignores the limit).
MIN_CURRENT_A = 6.0
DEFAULT_VOLTAGE = 230.0
DEFAULT_PHASES = 3


def min_session_kw(voltage: float, phases: int) -> float:
    """6 A on each of ``phases`` at ``voltage``: 4.14 kW on three 230 V phases."""
    return MIN_CURRENT_A * voltage * phases / 1000


@dataclass(kw_only=True)
class Site(Record):
    """Chargers behind one grid connection: the sessions charging on its stations never
    draw more than ``max_power_kw`` together (``domain.load_sharing``). Each is told its
    share in ``unit``; for amperes converted with ``voltage`` and ``phases``."""

    kind: ClassVar[str] = "site"
    name: str
    company_id: str
    max_power_kw: float
    min_power_kw: float = field(default_factory=lambda: min_session_kw(DEFAULT_VOLTAGE,
                                                                       DEFAULT_PHASES))
    unit: ChargingRateUnit = ChargingRateUnit.W
    voltage: float = DEFAULT_VOLTAGE
    phases: int = DEFAULT_PHASES


@dataclass(kw_only=True)
class SiteAllocation(Record):
    """One active session's share of its site's power, and what its charger answered to
    the last limit sent. Its id is its session's (one per session). Control state written
    by the service, not audited itself: every limit sent is audited as the COMMAND it
    is."""

    kind: ClassVar[str] = "site_allocation"
    site_id: str
    #: The site's company: who reads it (``Policy``), as the site.
    company_id: str
    session_id: str
    station_id: str
    cp_id: str
    connector_id: int
    transaction_id: int
    #: The share last sent, kW (0: paused, the site cannot give it its minimum).
    power_kw: float
    #: The most its charger may draw now, as far as its answers tell (kW): the share it
    #: accepted last; across a refusal, what it had before (its connector's rating
    #: before any was accepted, the site's limit for a rating not known); across a
    #: limit sent and not answered, the higher of the two. What the site holds for it
    #: while it is not under control (``site_load``).
    bound_kw: float
    #: The limit as sent, in ``unit``, and when; ``None`` before it was sent.
    limit: float | None = None
    unit: ChargingRateUnit = ChargingRateUnit.W
    limit_sent_at: datetime | None = None
    answer: LimitAnswer | None = None


@dataclass(kw_only=True)
class Connector(Record):
    kind: ClassVar[str] = "connector"
    station_id: str
    cp_id: str
    connector_id: int
    status: ConnectorStatus = ConnectorStatus.UNAVAILABLE
    error_code: str = "NoError"
    info: str | None = None
    #: The charger's own code for the error (StatusNotification.vendorErrorCode); null
    #: when it sent none, and before it was kept (SQLite migration 31).
    vendor_error_code: str | None = None
    status_at: datetime | None = None
    type: ConnectorType = ConnectorType.TYPE2
    max_kw: float | None = None
    #: The phases it charges on (1 to 3): what a site's limit in amperes is converted
    #: with for it (``load_sharing.limit_in_unit``) and tells it (``numberPhases``);
    #: ``None``: its site's ``phases`` (SQLite migration 54).
    phases: int | None = None


#: The highest transactionId and reservationId this service issues (store sequences
#: counting from 1): OCPP 1.6's "integer", as chargers implement it, and GraphQL's Int,
#: which shows them, are 32-bit signed. An id a charger sends outside 1..this is none we
#: issued: unknown without a lookup (``issued_id``), and never handed to a store, whose
#: integers end at 2**63 (SQLite's and BSON's: such a lookup failed, and the charger
#: retried the InternalError it was answered with, its queue blocked behind it).
MAX_ISSUED_ID = 2**31 - 1


def issued_id(value: int) -> bool:
    """Whether ``value``, a transactionId or reservationId a charger sent, can be one we
    issued (``MAX_ISSUED_ID``)."""
    return 1 <= value <= MAX_ISSUED_ID


#: How much longer than our clock saw, between the receipt of its start and its close, a
#: session whose charger's clock was behind ours at its start (``start_clock_behind``) may
#: last by its charger's timestamps and be billed so: network delay, a start queued for a
#: moment. Beyond it the clock jumped (set right by NTP mid-session) and the session is
#: billed the time our clock saw. Also how late a start may arrive over an open connection
#: before its timestamp is taken for a clock behind ours.
BILLED_TIME_TOLERANCE = timedelta(minutes=2)
#: The shortest span of a session's readings on its charger's clock that, matched by
#: their arrivals on ours, shows them live (``Session.clock_behind``), and how far the two
#: spans may differ (network delay, a reading held a moment), or a tenth of the span.
LIVE_SPAN = timedelta(seconds=10)
LIVE_SLACK = timedelta(seconds=5)


@dataclass(kw_only=True)
class Session(Record):
    kind: ClassVar[str] = "session"
    transaction_id: int
    station_id: str
    cp_id: str
    connector_id: int
    id_tag: str
    start_time: datetime
    meter_start_wh: int
    user_id: str | None = None
    vehicle_id: str | None = None
    end_time: datetime | None = None
    meter_stop_wh: int | None = None
    energy_wh: int = 0
    power_w: float | None = None
    #: The charger's time of the reading ``power_w`` comes from.
    power_at: datetime | None = None
    #: The vehicle's latest State of Charge (percent) the charger reported, and the
    #: charger's time of that reading: kept with the live energy, so a page of sessions
    #: shows it without reading their samples.
    soc_percent: float | None = None
    soc_at: datetime | None = None
    #: The count of the session's energy register across a rollover or reset of it
    #: (``metering.RegisterCount``): a reading counts as itself plus ``meter_offset_wh``
    #: (``meter_prior_offset_wh`` before the last one, should the drop prove a glitch);
    #: ``meter_at``, the charger's time of the reading that last moved the count (a
    #: lower one stamped before it is late, not a reset); ``meter_anomaly``, what it did.
    meter_offset_wh: int = 0
    meter_prior_offset_wh: int | None = None
    meter_at: datetime | None = None
    meter_anomaly: MeterAnomaly | None = None
    #: When (our clock) a MeterValues first named it after its charger's latest boot,
    #: for a session recorded before that boot (written once per boot, not per frame): its
    #: charger still has the transaction, and the reboot's check does not close it as
    #: lost (``ChargingService._close_lost_at_reboot``). Null otherwise.
    named_at: datetime | None = None
    #: Its charger's first boot (our clock) since it was recorded, or since a MeterValues
    #: last named it (``named_at``: its charger still had it after the boot before);
    #: written at each boot (``ChargingService._boot_since_sessions``). Where it ended
    #: when its stop was lost (``lost_end``), whichever later boot's check closes it
    #: (QA s33: closed at the last boot, the time between boots billed). Null: no boot
    #: since, or recorded before SQLite migration 87 (the boot its check is for).
    first_boot_at: datetime | None = None
    #: When (our clock) ``chargegraph restore`` put back a backup in which this session
    #: was open: its charger may have ended it since the backup was taken, its
    #: StopTransaction gone with the database replaced, and it never comes again. Such a
    #: session is closed as lost once its connector is reported free (Available or
    #: Preparing) unless a MeterValues named it since (``named_at``: its charger still
    #: has it); see ``ChargingService._close_open_at_restore``. Null otherwise.
    open_at_restore: datetime | None = None
    #: Its charger's clock was behind ours when it started (``ChargerClocks.behind_at``):
    #: its start predates its station's record, or came long after its timestamp over a
    #: connection open since before it. Such a session is billed no longer than our
    #: clock saw (``billed_end``); any other is billed by its charger's timestamps, a
    #: transaction queued offline and sent later included. A close by a stop stamped as
    #: long before its station's record as its start, and more than
    #: ``BILLED_TIME_TOLERANCE`` before its charger's clock as tracked when it arrived,
    #: clears it: a queue replayed (``charger_clocks.ticked_through``).
    start_clock_behind: bool = False
    #: The timestamp its StartTransaction carried when that was no time at all (before
    #: ``charger_clocks.NEVER_SET_BEFORE``: a clock never set, 1970 or 2000) and the
    #: session was dated on the start's arrival instead (``start_clock_behind`` set too):
    #: what a resend of that start repeats. ``_StartIdentity.matches`` takes a start
    #: stamped so for the session of the same connector, card, stamp and meterStart,
    #: ACTIVE or closed by its own stop, recorded in any boot of its charger (a ticking
    #: clock restarted at a boot repeats a stamp only if as many seconds passed); for a
    #: stuck stamp (``charging.STUCK_CLOCK_STAMPS``: exactly 1970-01-01T00:00:00Z or
    #: 2000-01-01T00:00:00Z, repeated at every start) only the one still ACTIVE and
    #: recorded since the charger's last boot. Null otherwise.
    reported_start: datetime | None = None
    #: For a session with a ``reported_start``: the timestamp its StopTransaction carried,
    #: as sent (migration 71). A replayed queue's phantom whose stop repeats an earlier
    #: session's stamp, meterStart, meterStop and this is a duplicate, priced nothing
    #: (``ChargingService._replayed``). Null otherwise, and for sessions closed before it.
    reported_end: datetime | None = None
    #: What its charger was told of the card at the start when not Accepted (Blocked,
    #: Expired, Invalid, ConcurrentTx): a start refused, which the charger stops
    #: (DeAuthorized) or, configured so, lets run. Priced by no tariff: not billed.
    start_refused: str | None = None
    stop_reason: str | None = None
    #: Closed by the CSMS without its StopTransaction (``charging.closed_without_stop``):
    #: as lost (a newer start on its connector, its charger's reboot) or by an
    #: operator's ``endSession``; its stop, should it come after all, corrects the close.
    #: Recorded, not read from a null meterStop and the reason ``Other``: a charger's own
    #: stop with meterStop -1 and reason ``Other`` is written so too, and its resend was
    #: taken for a correction (written, audited and announced again, review r26).
    closed_without_stop: bool = False
    state: SessionState = SessionState.ACTIVE
    reservation_id: int | None = None
    cost_minor: int | None = None
    currency: str | None = None
    #: Whose books this is, from its station when it happened: the station's company, or
    #: for a station of no company its owner (``base.books_of``). Operators keep
    #: their books when a station is removed or changes hands.
    company_id: str | None = None
    station_owner_id: str | None = None
    #: Seconds its connector sat idle (the car done, ``intervals.IDLE_STATUSES``) between
    #: its start and end, measured at its close when its tariff bills idle time (else
    #: null): what its idle fee was billed for, so its receipt is the same computation
    #: later whatever status reports arrive after the close.
    idle_seconds: int | None = None
    #: Its energy split by price at its close when its tariff has time-of-day bands
    #: (``tariff_bands.attributed_wh``: Wh per band, then at the base price), else null:
    #: what its energy line was billed for, as ``idle_seconds`` is for its idle fee.
    band_energy_wh: list[int] | None = None
    #: The standard of the plug it was started on (its connector's type then; null for
    #: sessions before it was kept and for a plug not on record): what it is priced by.
    connector_type: ConnectorType | None = None

    @property
    def start_as_reported(self) -> datetime:
        """Its start as its StartTransaction stamped it: ``reported_start`` for a clock
        never set (the session dated on arrival), else ``start_time``."""
        return self.start_time if self.reported_start is None else self.reported_start

    @property
    def end_as_reported(self) -> datetime | None:
        """Its end as its StopTransaction stamped it (``reported_end``, else
        ``end_time``)."""
        return self.end_time if self.reported_end is None else self.reported_end

    def now_on_timeline(self, ours: datetime) -> datetime:
        """"Now" (``ours``, our clock's) on the session's timeline. Its start is on the
        charger's clock, which may run ahead of ours: the start plus the time our clock
        saw pass since the session was recorded (``created_at``, ours), or our clock if
        later. One odd timestamp the charger sent since cannot move the end (and the
        price) anywhere. Where an operator's ``endSession`` ends it, and what its running
        cost is estimated up to."""
        return max(ours, self.start_time + max(ours - self.created_at, timedelta(0)))

    @property
    def billable(self) -> bool:
        """Whether a tariff prices it: not when its start was refused (the driver was
        told no; a session fee for it was charged for nothing)."""
        return self.start_refused is None

    @property
    def clock_behind(self) -> bool:
        """Whether its charger's clock is behind ours by more than
        ``BILLED_TIME_TOLERANCE``: known at its start (``start_clock_behind``), or, while
        it is active, shown by its readings arriving live: its last reading's charger
        time (the latest of ``meter_at``, ``power_at`` and ``soc_at``) is as far from its
        start on the charger's clock as its arrival (``updated_at``) from the start's
        (``created_at``) on ours, both lagging by the same amount. A queue flushed on
        reconnecting arrives all at once, the charger's span far longer than ours: not
        this. A close keeps what this says (``start_clock_behind``), so its receipt is
        priced alike later. Every reading's time counts, not only the register's: a car
        full for its last minutes moves no count, while its power readings move
        ``updated_at``, and the lag read from the count alone was lost before the stop
        (review s24: its bands then priced all of it at the start's)."""
        if self.start_clock_behind:
            return True
        read = [at for at in (self.meter_at, self.power_at, self.soc_at) if at is not None]
        if self.state is not SessionState.ACTIVE or not read:
            return False
        lag = self.created_at - self.start_time
        theirs = max(read) - self.start_time
        ours = self.updated_at - self.created_at
        return lag > BILLED_TIME_TOLERANCE and theirs >= LIVE_SPAN \
            and abs(theirs - ours) <= max(LIVE_SLACK, theirs / 10)

    @property
    def priced_at(self) -> datetime:
        """The instant whose tariff prices it: its start, or when we received its start if
        its charger's clock was behind ours then (a start stamped 1970 found no tariff in
        force and charged nothing); never after we received it (a charger's clock a few
        minutes ahead priced its session by a version set after the start had come, QA
        s21: 3.00 EUR billed 50.00)."""
        return self.created_at if self.clock_behind \
            else min(self.start_time, self.created_at)

    def billed_end(self, end: datetime, ours: datetime) -> datetime:
        """The end a bill runs to when the session closes at ``end`` on its timeline and
        at ``ours`` on our clock: never before its start, and, when its charger's clock
        was behind ours at the start (``start_clock_behind``), never more than our clock
        saw since its start's receipt (``created_at``) plus ``BILLED_TIME_TOLERANCE``.
        Both ends are the charger's timestamps, so a clock set right mid-session (years
        behind at the start) would bill years. Only then: a transaction the charger
        queued offline and sent later, start and stop together, lasted what its
        timestamps say, which our clock never saw."""
        observed = max(ours - self.created_at, timedelta(0))
        if self.clock_behind \
                and end - self.start_time > observed + BILLED_TIME_TOLERANCE:
            return self.start_time + observed
        return max(end, self.start_time)


@dataclass(kw_only=True)
class MeterSample(Record):
    kind: ClassVar[str] = "meter_sample"
    session_id: str | None
    cp_id: str
    connector_id: int
    at: datetime
    measurand: str
    value: float
    unit: str | None = None
    phase: str | None = None
    context: str | None = None
    transaction_id: int | None = None
    #: For energy register samples of a session: the Wh added since the session's previous
    #: reading (materialized at ingest so energy per hour/day is a plain SUM in the store).
    delta_wh: int | None = None
    #: The station that metered it: a cpId may be given to a new station after the old one
    #: was removed, and that station's operators must not see the old one's samples.
    #: ``None`` for samples stored before it was recorded.
    station_id: str | None = None


@dataclass(kw_only=True)
class SignedMeterValue(Record):
    """A sampled value a charger sent signed (``format: SignedData``: OCMF under the German
    calibration law, other vendors' formats): the record a CPO must hand the customer,
    kept as sent beside the session's numeric samples (it is no number itself). ``data``
    is the text as sent, its first ``MAX_SIGNED_DATA`` characters (``truncated`` when it
    was longer, ``data_length`` its full length), ``encoding`` detected from it."""

    kind: ClassVar[str] = "signed_meter_value"
    session_id: str | None
    station_id: str
    cp_id: str
    connector_id: int
    transaction_id: int | None = None
    at: datetime
    measurand: str
    context: str | None = None
    location: str | None = None
    phase: str | None = None
    encoding: SignedEncoding
    data: str
    data_length: int
    truncated: bool = False


#: The most characters of a signed meter value kept. An OCMF record of a session's begin
#: and end is under 2,000; other vendors' formats carry a public key or XML, a few
#: thousand more, base64 a third more again. Longer text is stored cut and flagged,
#: not refused: a charger refused a StopTransaction retries it forever, and the session
#: and its numeric samples would never close.
MAX_SIGNED_DATA = 16_384


@dataclass(kw_only=True)
class StatusEvent(Record):
    kind: ClassVar[str] = "status_event"
    station_id: str
    cp_id: str
    connector_id: int
    status: ConnectorStatus
    error_code: str = "NoError"
    info: str | None = None
    #: The charger's own code for the error (StatusNotification.vendorErrorCode), as
    #: reported; null when it sent none (and in history stored before it was kept).
    vendor_error_code: str | None = None
    at: datetime = field(default_factory=utcnow)
    #: Whose books the report went to, from its station when it arrived (``base.
    #: books_of``), as a session's do: its company, or for a station of no company its
    #: owner. A company keeps the history of a station it handed over, and the new one
    #: reads only its own (``Policy``'s ``status_event`` scope; SQLite migration 76).
    company_id: str | None = None
    station_owner_id: str | None = None


@dataclass(kw_only=True)
class ConnectorInterval(Record):
    """A stretch of time a connector spent in one state: its status and error code, and
    whether its station was online. ``end`` is null for the current one. Maintained on
    every status change and (dis)connect, so utilization, availability and fault durations
    are sums of overlaps computed in the store.

    ``status`` and ``error_code`` are the charge point's own while it is down (connector 0
    Unavailable or Faulted: no plug can charge), else the connector's. ``point_status``
    and ``point_error_code`` are the charge point's state during the stretch, so a fault
    report tells the point's outage (connector 0) from the connector's own faults; null
    in history recorded before they were (SQLite migration 20).

    ``known`` is false for the stretch after a disconnect the central system recorded for
    its own outage (``ConnectionEvent.server_outage``: it stopped, or crashed and the
    disconnect was found later), until the charger's next connection: nobody was
    listening, so nothing can be said of the connector then, not even that its charger
    was away. Analytics count it as unknown time, neither usable nor offline.

    ``observed_at`` is the instant on our clock (the service's) at which its charger's
    clock read ``start``: the two clocks' offset, kept on the record because analytics
    may run on another instance than the one holding the charger
    (``ChargerClocks`` is in-process). An open interval lasts, on its charger's timeline,
    until its start plus the time our clock has seen pass since ``observed_at``
    (``OverlapSeconds.since``). Null in history recorded before it was kept (SQLite
    migration 46), for the stretches the central system places on our own clock
    (``intervals.known_offline``), and where nothing told the offset: such an open
    interval lasts until our "now", as all did before.

    ``company_id``/``station_owner_id``: whose books the stretch is in (``base.books_of``),
    as a status report's are. The next interval takes those of the one before it; a
    handover ends every open one of its station at its charger's "now" (by
    ``observed_at``) and opens the same state in the new books (``intervals.
    handed_over``), so time is the books' by its arrival on our side, whatever the
    charger's clock says (SQLite migration 76)."""

    kind: ClassVar[str] = "connector_interval"
    station_id: str
    cp_id: str
    connector_id: int
    status: ConnectorStatus
    error_code: str = "NoError"
    online: bool = True
    point_status: ConnectorStatus | None = None
    point_error_code: str | None = None
    start: datetime
    end: datetime | None = None
    known: bool = True
    observed_at: datetime | None = None
    company_id: str | None = None
    station_owner_id: str | None = None


@dataclass(kw_only=True)
class ConnectionEvent(Record):
    """A charger's websocket connected or disconnected: the station's online history.
    ``server_outage``: a disconnect the central system recorded for its own outage (it
    stopped and closed the socket itself, or crashed and the disconnect was found later),
    not the charger's leaving. ``company_id``/``station_owner_id``: whose books it went
    to, its station's as the connect or disconnect was written (``base.books_of``), as
    a status report's are: the company that handed a station over keeps its connection
    history, the new one reads its own (SQLite migration 76)."""

    kind: ClassVar[str] = "connection_event"
    station_id: str
    cp_id: str
    online: bool
    at: datetime = field(default_factory=utcnow)
    server_outage: bool = False
    company_id: str | None = None
    station_owner_id: str | None = None


@dataclass(kw_only=True)
class InstanceLease(Record):
    """A running central-system instance, renewed while it lives (the record id is the
    instance's id). Stations it holds (``Station.connected_instance``) outlive a crash only
    until the lease expires: then another instance records them offline."""

    kind: ClassVar[str] = "instance_lease"
    host: str
    started_at: datetime
    expires_at: datetime
    #: False for an instance that serves no chargers (GraphQL only): it holds a lease for
    #: the webhook deliveries it stores (``PendingDelivery.instance_id``), and is no
    #: sign that chargers could connect (``InstanceService.others_alive``,
    #: ``settle_outages``). Older rows: true.
    serves_chargers: bool = True


@dataclass(kw_only=True)
class LocalList(Record):
    """What a station's local authorization list is, as far as the chargers' answers
    tell: the version of the last SendLocalList it accepted. Its id is its station's (one
    per station). Control state written by the service, not audited itself: each
    SendLocalList is audited as the COMMAND it is."""

    kind: ClassVar[str] = "local_list"
    station_id: str
    cp_id: str
    #: ``listVersion`` of the last list (Full or Differential) the charger accepted.
    version: int = 0
    #: The SendLocalLists (ours or operators') sent and not answered (a timeout, the
    #: connection lost after sending it), in the order sent (``sentAt``), the last 8
    #: (``withdrawal.MAX_PENDING``) weighing at most ``withdrawal.PENDING_BYTES``
    #: together (one record within MongoDB's 16 MiB): the charger may hold any of
    #: them. Each as sent
    #: (``listVersion``, ``updateType``, ``localAuthorizationList``; OCPP JSON), with
    #: ``ours`` (``Withdrawal.push``'s), ``sentAt`` (rfc3339) and an ``id``. Settled
    #: when the charger's version is learnt (``withdrawal.settle_pending``): walked in
    #: the order sent, a Differential above the version reached so far and at most the
    #: charger's, and a Full list at exactly it (the last sent so), are recorded as
    #: accepted; the rest are dropped (``withdrawal._taken``). Review s26: left
    #: unrecorded, a withdrawal was judged against a list the charger no longer held;
    #: review r26-multi3: one kept alone, and taken at any version at or below the
    #: charger's; review r26-multi4: a Differential the charger refused recorded.
    #: Written guarded on the value read. ``None``: nothing unanswered.
    pending: list[dict[str, Any]] | None = None


@dataclass(kw_only=True)
class LocalListEntry(Record):
    """One id tag of a station's local authorization list: what the charger holds for it
    (``status``, OCPP AuthorizationStatus spelling), as an accepted SendLocalList put it
    there, and what the service wants it to hold instead and has not had accepted yet
    (``wanted``: a card blocked, expired or removed since, or usable again after a
    withdrawal; sent again when the charger is back). One per (station, tag)."""

    kind: ClassVar[str] = "local_list_entry"
    station_id: str
    cp_id: str
    tag: str
    status: str
    wanted: str | None = None
    #: The card (``IdTag`` id) the tag named when the list holding it was accepted, if
    #: any. A tag string is nobody's: a card issued with it later (by anyone, of any
    #: company) is not what the list's sender put there, so a withdrawal acts only on
    #: the entries of the withdrawn card's id (``Withdrawal``), never on the tag's.
    card_id: str | None = None
    #: What a card usable again puts back, while the charger holds ``status`` because a
    #: withdrawal of ours had it accept so: ``"Accepted"`` (the list, as recorded, held
    #: the card Accepted: whether or not the withdrawal followed the version recorded,
    #: review s26), ``"Removed"`` (the record did not hold the tag: the withdrawal added
    #: it, and it is taken out again); ``None``: what the charger holds is the list
    #: sender's own. The record is kept right about unanswered lists by
    #: ``LocalList.pending``.
    restore: str | None = None
    #: The holder (``User`` id) of the card ``card_id`` names, as recorded with it: a
    #: card removed and issued again to the same person (found again, say) is put back
    #: where its removal was withdrawn (``withdrawal.reissue_marks``; QA s26), never for
    #: another person issued the tag. ``None``: no card, or recorded before it was kept.
    holder_id: str | None = None


@dataclass(kw_only=True)
class ConfigurationKey(Record):
    """One configuration key of a station's charger as last known, so an operator sees
    it while the charger is offline: from every GetConfiguration answer (``read_at``,
    with its ``readonly`` flag) and every ChangeConfiguration the charger took
    (``changed_at``: Accepted, or RebootRequired). One per (station, key), found by the
    key without regard to case (``folded_key``: OCPP keys are CiStrings). A secret key's
    value is never kept (``secret``; ``command_rules.is_secret_key``). Control state
    written by the service, not audited itself: each command is audited as the COMMAND
    it is."""

    kind: ClassVar[str] = "configuration_key"
    station_id: str
    cp_id: str
    #: As the charger (or, for a key first known from a change, the operator) spells it.
    key: str
    #: ``key`` lower-cased, written with it (``services.base``): what makes it one key.
    folded_key: str = ""
    #: ``None``: the charger gave none, or the key is ``secret``.
    value: str | None = None
    readonly: bool = False
    #: Its value is withheld (a password): never stored, never shown.
    secret: bool = False
    #: When a GetConfiguration answer last gave it; ``None``: known only from a change.
    read_at: datetime | None = None
    #: When the charger last took a ChangeConfiguration of it; ``None``: never since
    #: it was read.
    changed_at: datetime | None = None
    #: That change was answered RebootRequired: the value applies from the next boot.
    #: Until then a read of another value (the one still in force) does not replace it
    #: (``services.configuration``).
    reboot_required: bool = False
    #: While that change waits for the boot (``awaits_reboot``), the value it replaced
    #: if it was known since the charger's boot and before the change was sent (read
    #: or changed before it, ``configuration._value_before``): the one in force until
    #: then (what ``services.configuration.known_count`` gives). ``None``: not known,
    #: or secret; not known, it stays so until the boot (a read after the send may give
    #: the value set: the list limits are read before a change for that,
    #: ``CommandService``).
    value_in_force: str | None = None

    def awaits_reboot(self, booted_at: datetime | None) -> bool:
        """Whether its value waits for a reboot: the last change was answered
        RebootRequired and the charger has not booted since (``Station.booted_at``)."""
        return self.reboot_required and self.changed_at is not None and (
            booted_at is None or booted_at < self.changed_at)


@dataclass(kw_only=True)
class Reservation(Record):
    kind: ClassVar[str] = "reservation"
    reservation_id: int
    station_id: str
    cp_id: str
    connector_id: int
    id_tag: str
    expires_at: datetime
    user_id: str | None = None
    #: The group its charger was told it serves too (ReserveNow's parentIdTag, an
    #: operator's or admin's: ``CommandService._check_driver``), upper case; ``None``:
    #: the card's own group only (``base.reserved_for_card``). Kept so that a card of
    #: that group, which the charger lets start on it, takes it up here too (QA s27).
    parent_id_tag: str | None = None
    state: ReservationState = ReservationState.PENDING
    #: Whose books this is, from its station when it was made: the station's company, or
    #: for a station of no company its owner (``base.books_of``), as sessions record
    #: theirs. A station handed to another company leaves its reservations (drivers'
    #: cards and ids) with the old one; the new one sees only those still live, whose
    #: plugs it now runs (``Policy``'s reservation scope).
    company_id: str | None = None
    station_owner_id: str | None = None
    #: When it was cancelled here while its charger was offline (CANCELLED, the
    #: CancelReservation not delivered): the charger still holds the plug for it, and is
    #: sent the cancel when it comes back, before it expires (``CommandService.
    #: send_owed_cancels``); ``None`` once the charger answered it, or for any other.
    cancel_owed_since: datetime | None = None
    #: When a send of that owed cancel claimed it (our clock): another send leaves it to
    #: that one for ``CANCEL_CLAIM_S`` (a withdrawal's relayed from another instance and
    #: the holder's sweep sent the charger the same cancel twice, review r28-leftan);
    #: ``None`` when no send has it, or one let it go undelivered
    #: (``CommandService._claim_cancel``). On a live reservation: a cancel of it is being
    #: sent, until its answer is recorded (``CommandService._cancel_marked``), which holds
    #: its charger's Available back for the reservation's end to announce
    #: (``ChargingService._left_to_reservation_end``).
    cancel_sending_since: datetime | None = None

    def state_at(self, now: datetime) -> ReservationState:
        """EXPIRED once a live (PENDING or ACTIVE) reservation is past its expiry, before
        the sweep (``CommandService.expire_reservations``) has stored it."""
        if self.state in LIVE_RESERVATION_STATES \
                and self.expires_at <= now:
            return ReservationState.EXPIRED
        return self.state


@dataclass(kw_only=True)
class PendingStart(Record):
    """A remote start the service sent (or is sending) whose StartTransaction has not come
    yet: the charger may have taken it, and will start it within its ConnectionTimeOut
    (``expires_at``). Stored just before the RemoteStartTransaction is sent, settled
    (``settled_at``) when its StartTransaction arrives or the charger reports it given
    up (``ChargingService``), or the charger answers no (``CommandService``); one
    settled or past ``expires_at`` holds nothing, and is swept after its expiry. In the
    store, not in memory: the command may be sent from one instance and its
    StartTransaction arrive on another. ``created_by``: who asked, ``created_at``:
    when."""

    kind: ClassVar[str] = "pending_start"
    station_id: str
    cp_id: str
    #: The connector the start named; ``None``: the charger picks a free one.
    connector_id: int | None = None
    id_tag: str
    #: The card's holder, and the car the start is for (the driver's ``vehicleId``,
    #: else the card's car; ``None`` for neither): the session's while it is still the
    #: holder's and kept when the StartTransaction comes.
    user_id: str | None = None
    vehicle_id: str | None = None
    expires_at: datetime
    #: When its StartTransaction came, or the charger said no: marked, not deleted, so a
    #: second settling (a StartTransaction's copy on another socket, an answer after the
    #: StartTransaction) finds nothing to do rather than a record gone.
    settled_at: datetime | None = None
    #: Its station's ``booted_at`` as read when it was sent: the boot its charger was in
    #: then. It holds its card and plug while the station's is the same
    #: (``pending_starts.holds``), compared as a value, not against ``created_at``: two
    #: instances' clocks differ (review s25). ``None``: stored before SQLite migration 62
    #: (MongoDB: missing), or sent to a station never booted; judged by ``created_at``.
    station_booted_at: datetime | None = None
    #: Its charger's answer did not tell whether it took the start: none came in time
    #: (``ChargerTimeout``) or one we could not read (``ChargerError``). It holds its card
    #: and plug all the same (the charger may have acted), and whoever it holds them from
    #: is told the outcome is unknown, not that its car is awaited (QA s33). SQLite
    #: migration 87 (older rows false; MongoDB: back-filled so).
    outcome_unknown: bool = False


@dataclass(kw_only=True)
class Tariff(Record):
    """A price list. Exactly one of ``company_id``/``station_id`` is set; a station's tariff
    wins over its company's."""

    kind: ClassVar[str] = "tariff"
    company_id: str | None = None
    station_id: str | None = None
    price_per_kwh: Decimal
    currency: str
    price_per_minute: Decimal = Decimal("0")
    session_fee: Decimal = Decimal("0")
    tax_rate: Decimal = Decimal("0")
    #: When this price list takes effect; a session is priced by the tariff in force at its start.
    valid_from: datetime = field(default_factory=utcnow)
    #: Idle fee: per minute a session's connector sits occupied but not charging because
    #: the car is done (``intervals.IDLE_STATUSES``), beyond the first
    #: ``idle_grace_minutes`` of such time, at most ``idle_fee_cap`` (net) per session.
    idle_price_per_minute: Decimal = Decimal("0")
    idle_grace_minutes: int = 0
    idle_fee_cap: Decimal | None = None
    #: Time-of-day energy prices (``tariff_bands``): ``{"days", "start", "end",
    #: "price_per_kwh"}`` documents in ``time_zone``'s local time; energy at a time no
    #: band covers is at ``price_per_kwh``. ``time_zone`` is an IANA name, set with bands.
    energy_bands: list[dict[str, Any]] = field(default_factory=list)
    time_zone: str | None = None
    #: What it prices, at most one set: the sessions on plugs of one standard, or of one
    #: power type (``POWER_OF_PLUG``); neither, all of them. Of an owner's versions in
    #: force, the most specific that fits the session's plug prices it
    #: (``tariffs.scopes_for``).
    connector_type: ConnectorType | None = None
    power_type: PowerType | None = None
    #: When it ends: where the version that replaced it begins (``set_tariff``), or when
    #: it was removed (``TariffService.remove_tariff``, which gives the version it
    #: replaced its end back); sessions started before keep it. None: in force (or set
    #: for later), with no later version of its scope.
    valid_until: datetime | None = None

    def removed_by(self, at: datetime) -> bool:
        """Whether it ended (replaced or removed) at or before ``at``: it prices no
        session started then."""
        return self.valid_until is not None and self.valid_until <= at

    @property
    def bills_idle(self) -> bool:
        """Whether idle time costs anything: only then is it measured at a close (one
        store read of the connector's state history)."""
        return self.idle_price_per_minute > 0 and self.idle_fee_cap != 0


@dataclass(kw_only=True)
class Payment(Record):
    kind: ClassVar[str] = "payment"
    session_id: str
    station_id: str
    user_id: str | None
    #: Its session's charger, connector and vehicle, copied when it is opened: revenue is
    #: what the payments billed (``AnalyticsService``), filtered and grouped as refunds
    #: are, by fields of its own. ``None`` only in MongoDB documents written before.
    cp_id: str | None = None
    connector_id: int | None = None
    vehicle_id: str | None = None
    #: What was asked of the driver: its session's cost when it closed, repriced by a
    #: correction only while not collected, PENDING or FAILED (``payments.repriced``); 0
    #: once VOIDED. Reports book
    #: it as billed on ``created_at`` (the invoice date).
    amount_minor: int
    currency: str
    status: PaymentStatus = PaymentStatus.PENDING
    provider: str = "manual"
    provider_ref: str | None = None
    #: Paid back so far, in minor units: refunds may be partial (a disputed part of a
    #: session); the payment is REFUNDED once it reaches ``amount_minor``.
    refunded_minor: int = 0
    #: Being paid back: the refunds claimed and not settled yet, in minor units. A refund
    #: reserves its amount here (``refund_claims``) before the provider is asked, so what
    #: is left to refund is ``amount_minor - refunded_minor - refunding_minor`` on every
    #: instance; its settlement moves it to ``refunded_minor``, a refusal releases it.
    refunding_minor: int = 0
    #: The claims ``refunding_minor`` sums, oldest first: ``{"key", "amount_minor",
    #: "at", "by"}`` each; ``key`` is the refund's own idempotency key at the provider
    #: (and its ``Refund`` record's id once settled), ``at`` when it was claimed (ISO
    #: 8601), ``by`` who asked. ``None``: none pending (``PaymentService.refund``; one a
    #: crash left is settled by ``settle_stale_refunds``).
    refund_claims: list[dict[str, Any]] | None = None
    #: Whose books this is, from its station when it happened: the station's company, or
    #: for a station of no company its owner (``base.books_of``). Operators keep
    #: their books when a station is removed or changes hands.
    company_id: str | None = None
    station_owner_id: str | None = None


@dataclass(kw_only=True)
class Refund(Record):
    """Money paid back of a payment, and when: one per refund (a payment refunded in
    parts has several, adding up to its ``refunded_minor``). Reports book a refund in
    the period it was made, not the session's (``AnalyticsService``), so it carries
    what they filter and group by: its session's station, charger, connector, driver and
    vehicle, and the payment's books and currency."""

    kind: ClassVar[str] = "refund"
    payment_id: str
    session_id: str
    station_id: str
    cp_id: str
    connector_id: int
    user_id: str | None
    vehicle_id: str | None = None
    amount_minor: int
    currency: str
    at: datetime
    #: The payment provider that paid it back (``PaymentProvider.name``), and its
    #: reference there: the payment's are its capture's. Refunds recorded before this was
    #: kept show their payment's provider (migration 84).
    provider: str = "manual"
    provider_ref: str | None = None
    #: The payment's books: who ran the station when the session happened, who pays back.
    company_id: str | None = None
    station_owner_id: str | None = None


@dataclass(kw_only=True)
class AuditEntry(Record):
    """Append-only: one per change, written in the same store operation as the change."""

    kind: ClassVar[str] = "audit_entry"
    entity: str
    entity_id: str
    action: AuditAction
    actor: str
    at: datetime = field(default_factory=utcnow)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    #: A ``COMMAND`` entry's command (``after["command"]``, SQLite migration 56): a column
    #: of its own, so a station's commands of a few kinds are found in the store query
    #: (``SiteLoad._overridden``: a person's profile commands, which the site's own
    #: traffic to the station must not push out of what is read); ``None`` for others.
    command: str | None = None
    #: A ``COMMAND`` entry's command id (``after["commandId"]``, SQLite migration 88),
    #: the ``commandId`` a command's mutation answers: a column of its own, so
    #: ``auditLog(filter: {commandId})`` finds its entries through an index (QA s33: a
    #: mutation's outcome could not be looked up by it); ``None`` for others.
    command_id: str | None = None
    #: Whose books the entry was written in (``base.Service._whose``), as sessions record
    #: theirs: for what happens at a station (its record, commands to its charger, its
    #: connectors, tariffs and reservations) the station's company then, or for a station
    #: of no company its owner (``base.books_of``); for a company's people and what they
    #: hold (a user, their cards and vehicles) the person's company then; a session's,
    #: payment's or reservation's own books; a site's, webhook's or company-wide tariff's
    #: company. Operators read these entries by their books, not by who runs the station
    #: or employs the person now: a company a station is handed to or a person moves to
    #: must not learn the old one's history (drivers' cards in commands, emails), and the
    #: old one keeps it, removals included. ``None`` where the record is no one's.
    company_id: str | None = None
    station_owner_id: str | None = None
    #: The person the changed record belonged to then (a user themself, a card's holder,
    #: a vehicle's owner, a session's, reservation's, payment's or refund's driver), so
    #: that they read what happened to what is theirs, its removal included, whoever
    #: acted; ``None`` for records of no person (stations, tariffs, commands).
    holder_id: str | None = None


class WebhookEvent(StrEnum):
    """What an outgoing webhook may ask for (``Webhook.events``): the type its deliveries
    carry."""

    SESSION_STARTED = "session.started"
    SESSION_ENDED = "session.ended"
    CONNECTOR_STATUS_CHANGED = "connector.status_changed"
    FAULT_REPORTED = "fault.reported"
    FIRMWARE_STATUS = "station.firmware_status"
    DIAGNOSTICS_STATUS = "station.diagnostics_status"
    STATION_ONLINE = "station.online"
    STATION_OFFLINE = "station.offline"
    RESERVATION_CHANGED = "reservation.changed"
    COMMAND_COMPLETED = "command.completed"
    PAYMENT_CAPTURED = "payment.captured"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_REFUNDED = "payment.refunded"
    #: A late StopTransaction corrected the session to cost nothing: its uncollected
    #: (PENDING or FAILED) payment asks nothing any more and is never to be collected.
    PAYMENT_VOIDED = "payment.voided"
    #: A late StopTransaction corrected the session's cost: its uncollected (PENDING or
    #: FAILED) payment now asks ``amountMinor``, which a collection must use.
    PAYMENT_REPRICED = "payment.repriced"


@dataclass(kw_only=True)
class Webhook(Record):
    """An outgoing webhook: events its owner may see are POSTed to ``url``, signed with
    ``secret``. An admin's sees everything (``company_id`` None); an operator's belongs to
    their company and gets what that company may see (``Policy.webhook_viewer``, decided
    at delivery time). The delivery health fields are written by the instance that
    delivers, unaudited, as telemetry is."""

    kind: ClassVar[str] = "webhook"
    #: The signing secret is needed in clear to compute each delivery's HMAC, so it is
    #: stored, but never copied into audit snapshots and shown once, at creation.
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret"})
    url: str
    events: list[str]
    secret: str
    owner_id: str
    company_id: str | None = None
    description: str | None = None
    active: bool = True
    #: Why it stopped (auto-disabled after failed deliveries); cleared when re-enabled.
    disabled_reason: str | None = None
    #: The last attempt's HTTP status (None: no answer) and error, whatever the outcome.
    last_status: int | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    #: Deliveries (each up to its tries) failed in a row; success resets it.
    consecutive_failures: int = 0
    #: Events dropped because its queue was full (the receiver was too slow).
    dropped_events: int = 0


class NoticeState(StrEnum):
    """Where an ``OfflineNotice`` is: its offline webhook waits out the grace (PENDING),
    was delivered (ANNOUNCED: the reconnection's ``station.online`` is delivered too), was
    found due with its charger already back (RETURNED: the connection that ended it
    decides, as it would have from PENDING; the looks for due ones skip it), or it is
    settled (CLOSED: nothing more is delivered for it)."""

    PENDING = "PENDING"
    ANNOUNCED = "ANNOUNCED"
    RETURNED = "RETURNED"
    CLOSED = "CLOSED"


@dataclass(kw_only=True)
class OfflineNotice(Record):
    """One outage of a charger as outgoing webhooks see it: ``station.offline`` is
    delivered only once the charger stayed offline for the grace
    (``CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S``), and the ``station.online`` ending it only
    if that was. Stored, not kept in memory, so any instance decides it (the charger may
    come back to another one; the instance that saw it go may restart meanwhile): each
    move of ``state`` is a compare-and-set, which one instance wins. Control state
    written by the service, not audited."""

    kind: ClassVar[str] = "offline_notice"
    station_id: str
    cp_id: str
    #: The connection that closed (``Station.connection``): the outage lasts while the
    #: station stays offline with it. ``None`` for a station that never had a number.
    connection: int | None = None
    #: When the charger went offline: what the delivered webhook is dated.
    offline_at: datetime
    state: NoticeState = NoticeState.PENDING
    #: When its ``station.offline`` was announced, and the station's ownership then (the
    #: event's ``company_id``/``owner_id``, which decided whose webhooks got it): the
    #: ``station.online`` goes with the same, to whoever heard of the outage, also after
    #: the station was handed to another company meanwhile. ``None`` until announced,
    #: and for a notice announced before they were kept (SQLite migration 43): its online
    #: goes with the station's ownership at the connection, as it did then.
    announced_at: datetime | None = None
    company_id: str | None = None
    owner_id: str | None = None
    #: RETURNED: the station's connection when the look found its charger back. The
    #: connections up to it decide the outage (one of them ended it; its settling may be
    #: on its way), a later one closes it without a word: the one that ended it was
    #: settled before the notice was stored, or lost with its instance.
    returned_connection: int | None = None


@dataclass(kw_only=True)
class PendingDelivery(Record):
    """A webhook delivery not yet delivered nor given up: stored when it is queued (a
    batch at a time, ``WebhookDispatcher``), its tries and next try's time written as
    they change, deleted once it is over. ``instance_id`` is the instance delivering it;
    a graceful stop hands it over (``None``), and an instance whose lease expired (a
    crash) leaves it to be taken over. Another instance claims such deliveries (a
    guarded write, which one instance wins) and resumes them. Exactly what the receiver
    would have got: the body already built (its event id, and the signature computed
    over it), the delivery id it is posted with, the tries made and when the next is
    due. Control state written by the service, not audited."""

    kind: ClassVar[str] = "pending_delivery"
    webhook_id: str
    #: ``X-ChargeGraph-Delivery``: the same on every try, before and after the handover.
    delivery_id: str
    #: The webhook type (``X-ChargeGraph-Event``).
    event_type: str
    #: The JSON posted, as built when the delivery began (UTF-8 text, byte for byte).
    body: str
    #: The event as instances carry it between them (``pubsub/codec.py``): who may see
    #: it is decided again before each try, on its ownership snapshot, as for any other.
    event: str
    #: POSTs made so far (0: it was still queued); the next is due at ``due_at``.
    tries_made: int = 0
    due_at: datetime
    #: When it was queued: claimed and resumed in this order (``id`` breaking ties), so
    #: a webhook's deliveries keep their order.
    queued_at: datetime
    #: The instance delivering it (its ``InstanceLease`` id); ``None``: handed over at a
    #: graceful stop (and every delivery stored before migration 72), for any instance.
    #: One whose instance's lease has expired is any instance's to take over too.
    instance_id: str | None = None


@dataclass(kw_only=True)
class DeliveryClaim(Record):
    """One instance taking one webhook's handed-over deliveries (``PendingDelivery``),
    held while it deletes them: its ``id`` is the webhook's, so the insert that takes it
    is one document on MongoDB as in SQLite, and a second instance's fails on the id.
    With it held, no other instance takes any of that webhook's, however the deletes
    that follow are written (on MongoDB a batch others may see half-done): one claim
    takes a webhook's in order, all of them. Deleted when the claim ends; one left by an
    instance that died claiming is broken once older than ``CLAIM_STALE``. Control
    state written by the service, not audited."""

    kind: ClassVar[str] = "delivery_claim"
    #: Which claim holds it (a fresh id per claim): only its own release deletes it.
    claimant: str
    claimed_at: datetime


@dataclass(kw_only=True)
class RefreshFamily(Record):
    """One signed-in device: the chain of refresh tokens a sign-in starts, each rotation
    handing on to the next. Revoking it (sign-out, or a rotated token presented again)
    ends every token of the chain at once. Valid only while its user's ``token_epoch`` is
    still the one it was started in: a password change or a deactivation ends it too."""

    kind: ClassVar[str] = "refresh_family"
    #: Its audit entries (a device signed out) are of no one's books (``Service._whose``:
    #: admins' alone), so an erasure, which scrubs the entries about its person, never
    #: finds them: the user agent stays out of their images as the epoch does (review
    #: r33: an erased person's user agents stayed there next to their user id).
    secret_fields: ClassVar[frozenset[str]] = frozenset({"token_epoch", "user_agent"})
    user_id: str
    token_epoch: int
    #: The newest token's expiry: a family past it can be deleted.
    expires_at: datetime
    last_refreshed_at: datetime | None = None
    revoked_at: datetime | None = None
    #: The ``User-Agent`` it last signed in or refreshed with (``device_agent``), for its
    #: person to tell their devices apart; null when none was sent, and for families
    #: started before it was kept (schema 90).
    user_agent: str | None = None


@dataclass(kw_only=True)
class RefreshToken(Record):
    """One refresh token of a family, stored by the SHA-256 of the token (never the token
    itself). ``used_at`` is set when it was rotated; one presented again after that was
    stolen (or leaked) and revokes its family. Kept until it expires, so such a reuse is
    still recognised."""

    kind: ClassVar[str] = "refresh_token"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"token_hash"})
    family_id: str
    user_id: str
    token_hash: str
    expires_at: datetime
    used_at: datetime | None = None


class IdempotencyState(StrEnum):
    """Where the request an ``IdempotencyKey`` was sent with stands."""

    #: Claimed by the request running it: another with the key is told to wait.
    RUNNING = "RUNNING"
    #: Answered: another with the key and the same request gets ``response`` again.
    DONE = "DONE"


@dataclass(kw_only=True)
class IdempotencyKey(Record):
    """A client's ``Idempotency-Key`` for one mutation request of one user
    (``domain.services.idempotency``). Its id is derived from the user and the key
    (``idempotency.key_id``), so the first request's insert is the claim every other
    instance's fails on. Control state the service writes, not audited; no read shows it
    (``policy.CREDENTIAL_KINDS``)."""

    kind: ClassVar[str] = "idempotency_key"
    user_id: str
    #: The key as the client sent it (not secret: chosen to be unique, not unguessable).
    key: str
    #: HMAC-SHA256 of the operation and its variables, keyed by the service's secret (the
    #: variables may hold a password: ``graph.http``): the same key with anything else
    #: is a reuse, refused.
    fingerprint: str
    state: IdempotencyState
    #: Which claim wrote it (a fresh id per request): only that request answers it.
    claimant: str
    #: What the user could do when the request ran (``idempotency.access_of``: role and
    #: company): a retry by them once it changed (demoted, moved to another company) is
    #: refused its answer, which may hold what they may no longer see (a webhook's secret).
    access: str
    #: Until when a RUNNING claim holds: one left by an instance that died mid-request
    #: lapses then, and a retry runs the mutation. Once DONE, when its answer was written
    #: (the service's clock; the claim held until then): a replay reads erasures up to
    #: it (``IdempotencyService._erased_while_kept``).
    lease_until: datetime
    #: The JSON body answered (DONE).
    response: str | None = None
    #: Forgotten from then on (24 hours after the first request).
    expires_at: datetime


@dataclass(kw_only=True)
class KnownChargerAddress(Record):
    """An address a station's charger passed the password check from
    (``ChargerSignIns.passed_from``), kept so an instance starting later knows it too
    (``ChargingService.load_known_addresses``): after a rolling restart a charger moved to
    another instance under a scan was answered 503 there, its address known only in the
    memory of instances gone (review s31). Its id is derived from ``pair``, so one row per
    pair; written at most once a day per pair (``charger_sign_ins.RETOLD_AFTER``), deleted
    ``KNOWN_FOR`` after it last passed (the sweep) or with its station. Control state the
    service writes, not audited; no read shows it (``policy.CREDENTIAL_KINDS``)."""

    kind: ClassVar[str] = "known_charger_address"
    station_id: str
    #: The (cpId, address) pair as ``KnownAddresses`` keeps and shares it: a digest keyed
    #: with a key derived from the JWT secret (every instance's, a lone one's too), not
    #: the address itself.
    pair: str
    passed_at: datetime


@dataclass(kw_only=True)
class FreedIdTag(Record):
    """A card number freed (``removeIdTag``, an erasure), held back from drivers for
    ``freed_tags.HELD_FOR``: the physical card may still be presented at chargers, and a
    driver issuing its number would have its sessions booked to them, seeing where and
    when it is used and paying for it (QA s32). One per freeing; swept once past the
    hold-back. Keyed by a digest of the tag, not the tag. Control state the service
    writes, not audited; no read shows it (``policy.CREDENTIAL_KINDS``)."""

    kind: ClassVar[str] = "freed_id_tag"
    #: The tag as stored, digested with the deployment's key (``freed_tags.digest``).
    tag_digest: str
    #: Whose card it was: they may have it again at once (a lost card found).
    holder_id: str
    #: Their company then: its operators may issue it again at once.
    company_id: str | None = None
    freed_at: datetime


ENTITY_TYPES: tuple[type[Record], ...] = (
    Company,
    User,
    Vehicle,
    IdTag,
    Station,
    Connector,
    Session,
    MeterSample,
    SignedMeterValue,
    StatusEvent,
    ConnectionEvent,
    ConnectorInterval,
    Reservation,
    PendingStart,
    Tariff,
    Payment,
    Refund,
    AuditEntry,
    InstanceLease,
    LocalList,
    LocalListEntry,
    ConfigurationKey,
    Webhook,
    OfflineNotice,
    PendingDelivery,
    DeliveryClaim,
    RefreshFamily,
    RefreshToken,
    Site,
    SiteAllocation,
    IdempotencyKey,
    KnownChargerAddress,
    FreedIdTag,
)
ENTITY_BY_KIND: dict[str, type[Record]] = {t.kind: t for t in ENTITY_TYPES}

E = TypeVar("E", bound=Record)


def snapshot(record: Record) -> dict[str, Any]:
    """A JSON-friendly copy of a record for audit before/after images (secrets left out,
    URLs without their credentials: ``Record.url_fields``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in record.secret_fields:
            continue
        value = getattr(record, f.name)
        if f.name in record.url_fields and isinstance(value, str):
            value = without_credentials(value)
        elif isinstance(value, datetime):
            value = rfc3339(value)  # as the API writes every instant (QA s17)
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, StrEnum):
            value = value.value
        out[f.name] = value
    return out


def without_url_credentials(kind: str, image: dict[str, Any] | None
                            ) -> dict[str, Any] | None:
    """An audit image of a ``kind`` record as it is read: its ``url_fields`` without
    their credentials, for images written before ``snapshot`` hid them (a station's
    rollout location, presigned, in every station UPDATE entry: review s25)."""
    record_type = ENTITY_BY_KIND.get(kind)
    if image is None or record_type is None:
        return image
    shown = {name: without_credentials(image[name]) for name in record_type.url_fields
             if isinstance(image.get(name), str)}
    if all(shown[name] == image[name] for name in shown):
        return image
    return {**image, **shown}


def audit_after(before: Record | None, after: Record) -> dict[str, Any]:
    """The after image of a change: ``snapshot(after)`` and, for an update, a marker for
    each secret that changed (``Record.secret_markers``). Without it a password reset
    left an entry whose images differed only in ``updated_at``."""
    image = snapshot(after)
    if before is not None:
        for name, marker in after.secret_markers:
            if getattr(before, name) != getattr(after, name):
                image[marker] = True
    return image
