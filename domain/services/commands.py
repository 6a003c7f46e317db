"""Operator commands to chargers (OCPP 1.6 central-system-initiated actions).

Payloads use OCPP 1.6 JSON field names: OCPP is this domain's language. The use case
authorizes the viewer, keeps the records a command implies (a reservation), sends through
the ``ChargerGateway`` port, judges the answer, audits the command and publishes
``CommandCompleted``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from domain.availability import POINT_DOWN
from domain.command_rules import (
    HIDDEN,
    check_command,
    folded_key,
    is_heartbeat_key,
    is_secret_key,
    with_data_bounded,
    without_credentials,
)
from domain.entities import (
    DIAGNOSTICS_REQUESTED,
    FIRMWARE_AWAITING,
    FIRMWARE_REQUESTED,
    FIRMWARE_UNANSWERED,
    LIVE_RESERVATION_STATES,
    AuditAction,
    AuditEntry,
    ChargingRateUnit,
    ConfigurationKey,
    Connector,
    IdTag,
    IdTagStatus,
    LocalList,
    LocalListEntry,
    PendingStart,
    Registration,
    Reservation,
    ReservationState,
    Session,
    SessionState,
    Station,
    User,
    Vehicle,
)
from domain.errors import (
    ChargerBusy,
    ChargerCallError,
    ChargerError,
    ChargerLost,
    ChargerNotSupported,
    ChargerOffline,
    ChargerRejected,
    ChargerTimeout,
    ChargerUnclaimed,
    ChargerUnreachable,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthenticated,
    ValidationError,
)
from domain.events import CommandCompleted, StationChanged
from domain.ids import new_id
from domain.keyed_locks import KeyedLocks
from domain.outside import reaching_out
from domain.policy import SYSTEM, Viewer, live_reservations, refuse_unless_staff
from domain.ports import Change, ChargerGateway, Delete, Guard, Insert, Update
from domain.query import ALL, Eq, Filter, In, NotSub, Range, Sort, all_of, any_of
from domain.registration import admits
from domain.services.base import (
    Service,
    ServiceContext,
    books_of,
    holding_car,
    holding_card,
    keeps_requested,
    maintenance_event,
    owned_by,
    pages,
    patch,
    reservation_changed,
    reserved_for_card,
    stamp_new,
    still_in_books,
)
from domain.services.configuration import (
    REBOOT_REQUIRED,
    in_force,
    known_count,
    positive_count,
    record_change,
    record_read,
    without_secrets,
)
from domain.services.edits import retried
from domain.services.fleet import IN_GARAGE
from domain.services.pending_starts import (
    PENDING_START_WINDOW,
    holding,
    holds,
    live_pending_starts,
    settle,
    unknown_outcome,
    waiting,
)
from domain.services.stations import connector_in_range
from domain.services.withdrawal import (
    ACCEPTED,
    cards_named,
    hold_pending,
    record_local_list,
    settle_pending,
    states_of,
)
from domain.validation import (
    MAX_CONNECTOR_ID,
    Checks,
    heartbeat_interval,
    shown_text,
    stored_id_tag,
)
from domain.wire import wire_json

log = logging.getLogger("chargegraph.commands")

#: Actions a driver may send, on any station they can see.
DRIVER_ACTIONS = frozenset({"RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow",
                            "CancelReservation"})
#: Answers that mean yes. Everything else with a ``status`` is a refusal.
#: Answers that mean the charger did (or will do) what was asked. RebootRequired
#: (ChangeConfiguration): the setting is stored and applies after the next reboot.
POSITIVE = frozenset({"Accepted", "Unlocked", "Scheduled", "RebootRequired"})
COMMAND_TIMEOUT_S = 30.0
#: How many owed cancels are read at a time (``send_owed_cancels``).
OWED_PAGE = 100
#: The driver's live reservations on a station read at a time (``_held_for_driver``).
HELD_PAGE = 50
#: How many chargers ``sweep_owed_cancels`` sends to at once: each may take up to the
#: command timeout to answer, or not answer at all.
OWED_SWEEP_AT_ONCE = 4
#: How long a send's claim of an owed cancel (``Reservation.cancel_sending_since``) keeps
#: other sends of it away: past the command's timeout (``COMMAND_TIMEOUT_S``) with time
#: for a relay, so a send still waiting for its answer is never doubled; a claim left by
#: a process that died mid-send lapses after it (``_claim_cancel``).
CANCEL_CLAIM_S = 2 * int(COMMAND_TIMEOUT_S)
#: What a cancel's mark of its live reservation writes (``CommandService._cancel_marked``).
_SENDING = frozenset({"cancel_sending_since"})
#: Before any cancel was owed (``Reservation.cancel_owed_since``): the bound that makes
#: a ``Range`` of it "not null" on every store (null is never within a bound).
_EVER = datetime(1970, 1, 1, tzinfo=UTC)


def owed_cancels(now: datetime) -> Filter:
    """The reservations whose CancelReservation is owed to their charger
    (``Reservation.cancel_owed_since`` set: cancelled here while it was offline) and that
    have not expired at ``now`` (an expired one the charger frees by itself)."""
    return all_of(Eq("state", ReservationState.CANCELLED),
                  Range("cancel_owed_since", gte=_EVER), Range("expires_at", gt=now))


#: What a charger not told Accepted may not be asked: OCPP 1.6 (4.2) has the central
#: system initiate nothing while a charger is Rejected, and while it is Pending it may
#: only read or change its configuration: no remote start or stop, no reservation.
_CHARGING_ACTIONS = frozenset({"RemoteStartTransaction", "RemoteStopTransaction",
                               "ReserveNow"})
#: What authorizes a new session (a card on a plug): sent only to a station Accepted now
#: whose charger was told Accepted too (``registration.NEW_AUTHORIZATIONS``, the
#: charger's).
_AUTHORIZING_ACTIONS = frozenset({"RemoteStartTransaction", "ReserveNow"})


#: Written in an audit entry instead of a secret a command carries.


def masked(action: str, request: dict[str, Any]) -> dict[str, Any]:
    """A command's request as the audit log keeps it: without the secrets it may carry
    (the audit log is read by every operator of the station and kept for good). A
    charger's AuthorizationKey (refused anyway: ``command_rules``), the user information
    and query values of an upload or download URL (``command_rules.without_credentials``), and the
    value of any other secret key (``command_rules.is_secret_key``)."""
    out = dict(request)
    if action == "ChangeConfiguration" and is_secret_key(out.get("key")) and "value" in out:
        out["value"] = HIDDEN
    if isinstance(out.get("location"), str):
        out["location"] = without_credentials(out["location"])
    return out


def _audited(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A command's request as its audit entries keep it: ``masked``, and a
    DataTransfer's ``data`` bounded (``command_rules.with_data_bounded``)."""
    request = masked(action, wire_json(payload))
    return with_data_bounded(request) if action == "DataTransfer" else request


def masked_answer(result: dict[str, Any]) -> dict[str, Any]:
    """A charger's answer as the wire log writes it: the value of each secret key
    (``command_rules.is_secret_key``) in a GetConfiguration answer ``HIDDEN``, as
    ``masked`` hides it in a ChangeConfiguration (a charger may read its AuthorizationKey
    back). Taken for one by its ``configurationKey``: an answer does not name its
    command."""
    keys = result.get("configurationKey")
    if not isinstance(keys, list):
        return result
    shown = [{**entry, "value": HIDDEN}
             if isinstance(entry, dict) and "value" in entry and is_secret_key(entry.get("key"))
             else entry for entry in keys]
    return {**result, "configurationKey": shown}


def _named_charger(cp_id: str) -> None:
    """A command's ``cpId``: given (``REQUIRED`` when empty, as any required text). Not
    held to ``validation.cp_id``'s form: a station stored before it keeps its identity,
    and one that names none is ``NOT_FOUND``."""
    if not cp_id:
        raise ValidationError("must not be empty", field="cpId", code="REQUIRED")


def _refuse_driver_profile(action: str, payload: dict[str, Any]) -> None:
    """A profile is smart charging, which drivers may not set (SetChargingProfile is not
    theirs): through a remote start it would reach the charger all the same, at up to
    stackLevel 100, or replacing an operator's profile by its id. Refused before its
    fields are checked: whatever it says, it is not the driver's to send."""
    if action == "RemoteStartTransaction" and payload.get("chargingProfile") is not None:
        raise Forbidden("drivers may not set a charging profile", field="chargingProfile")


def _refuse_unregistered(station: Station, action: str, payload: dict[str, Any]) -> None:
    """Refuses a command the station's charger is not to be sent (OCPP 1.6, 4.2), judged
    by the registration its last boot was answered with (``Station.charger_registration``),
    which it acts on until its next; a charger that never booted (told nothing) and a
    station from before migration 60 by the station's registration. Told Rejected, it
    answers nothing, and is sent nothing. Told Pending, it may have its configuration
    read and changed, but is sent no remote start or stop and no reservation, and is not
    triggered for a message its station would refuse (``_refuse_unadmitted_trigger``).
    Told Accepted, it is sent what an Accepted one is, whatever its station was made
    since: a session it runs stopped, its plug unlocked, a reset that makes it boot and
    learn (review s25: a session left running on a station made Pending could not be
    stopped). What authorizes a new session (``_AUTHORIZING_ACTIONS``) needs both: the
    station Accepted now and its charger told so (review s25: a charger told Rejected,
    its station accepted since, was sent a RemoteStartTransaction it never answered; one
    told Pending, a remote start or stop 1.6 forbids)."""
    told = station.charger_registration or station.registration
    if station.registration is not Registration.ACCEPTED and action in _AUTHORIZING_ACTIONS:
        raise ValidationError(f"the station's registration is "
                              f"{station.registration.value.lower()}: accept it first",
                              field="cpId", code="INVALID_STATE")
    if told is Registration.ACCEPTED:
        return
    if told is Registration.REJECTED or action in _CHARGING_ACTIONS:
        raise ValidationError(_told(station, told), field="cpId", code="INVALID_STATE")
    if action == "TriggerMessage":
        _refuse_unadmitted_trigger(station, payload)


def _told(station: Station, told: Registration) -> str:
    """Why a charger told ``told`` is not sent a command."""
    if station.registration is not told:
        return (f"its charger was told {told.value.lower()} at its last boot and acts on "
                f"it until its next: wait for it to boot again")
    return f"the station's registration is {told.value.lower()}: accept it first"


def _refuse_unadmitted_trigger(station: Station, payload: dict[str, Any]) -> None:
    """A charger told Pending is not asked for a message its answer would be refused
    (``registration.admits``, by the station's registration and the one its charger was
    told): a triggered MeterValues was answered SecurityError, after the charger had
    said Accepted to the trigger. (OCPP 1.6, 4.2, lets a Pending charger send what it is
    told to; but a MeterValues carries energy and session data, which nobody accepted
    the station to report, and on arrival a triggered one cannot be told from any other:
    so it is not asked for.)"""
    requested = payload.get("requestedMessage")
    if isinstance(requested, str) and not admits(station.registration, requested,
                                                 station.charger_registration):
        raise ValidationError(f"the station's registration is pending, and it may not "
                              f"send {requested} until it is accepted: accept it first",
                              field="requestedMessage", code="INVALID_STATE")


#: The commands that change what limits a charger applies (``ProfileWatch``).
PROFILE_ACTIONS = frozenset({"SetChargingProfile", "ClearChargingProfile"})


class ProfileWatch(Protocol):
    """Told of a person's charging profile commands: the site's load management
    (``site_load.SiteLoad``) keeps its own limits at the charger, which such a command
    may replace or clear. Defined here, implemented there: commands know nothing of
    sites."""

    async def check_profile(self, station: Station, payload: dict[str, Any]) -> None:
        """Before a SetChargingProfile is sent: raises the user error of one that would
        silently replace the site's limit, or be replaced by it."""

    async def check_remote_start(self, station: Station, payload: dict[str, Any]) -> None:
        """Before a RemoteStartTransaction is sent: raises the user error of one whose
        charging profile the site cannot account for."""

    async def profile_commanded(self, outcome: CommandOutcome,
                                payload: dict[str, Any]) -> None:
        """After a Set/ClearChargingProfile was answered (or not)."""


@dataclass(slots=True)
class CommandOutcome:
    command_id: str
    action: str
    station: Station
    status: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: DomainError | None = None
    reservation: Reservation | None = None
    #: Who ``CommandCompleted`` says asked: the sender (``SYSTEM`` for what the service
    #: sends with its own authority), whoever the audit log names.
    requested_by: str | None = None
    #: When the answer (or why there is none) was recorded: what a configuration read
    #: or a firmware rollout it started is stored as of.
    answered_at: datetime | None = None
    #: When it was handed to the charger's connection: what a SendLocalList left
    #: unanswered is ordered by (``withdrawal.hold_pending``; review r26-multi4). A
    #: ChangeConfiguration's is taken before it is sent (``CommandService._send_moment``):
    #: its value in force is judged only from what was learnt before it
    #: (``record_change``).
    sent_at: datetime | None = None
    #: A SendLocalList of ``Withdrawal``'s own (a withdrawal or restoration): only its
    #: accepted entries remember what to put back (``record_local_list``).
    own_list: bool = False
    #: A CancelReservation that must end its reservation (a ``Withdrawal``'s: a card
    #: blocked, removed or expired, a user deactivated, a plug removed): one whose
    #: charger is online but could not be reached (``ChargerUnreachable``) is cancelled
    #: here and owed to the charger too, as for an offline one, sent by the instance the
    #: charger is connected to (``sweep_owed_cancels``). A person's own cancel is not:
    #: they are told to try again, the reservation theirs to keep or end.
    owe_cancel: bool = False
    #: A RemoteStartTransaction's record of itself until its StartTransaction comes
    #: (``CommandService._hold_start``).
    pending: PendingStart | None = None
    #: The live starts it replaces (its card's, or its named plug's, sent before their
    #: charger's last boot): settled once the charger accepts it, not before
    #: (``CommandService._hold_start``).
    superseded: list[PendingStart] = field(default_factory=list)
    #: Never handed to its charger: its SENT entry could not be written
    #: (``CommandService._audit_sent``; ``_undelivered``), or its charger is connected
    #: nowhere, not here and recorded offline (``CommandService._known_offline``: stage
    #: ``NOT_SENT``).
    unsent: bool = False
    #: A CancelReservation of a live reservation: the ``cancel_sending_since`` its SENT
    #: entry's write gave the reservation (``CommandService._cancel_marked``), taken
    #: away with its answer.
    cancel_marked: datetime | None = None


#: How many times a remote start is stored again when its charger booted meanwhile
#: (``CommandService._hold_start``).
BOOT_RETRIES = 3


class _Rebooted(Exception):
    """A remote start's station booted between its read and the start's insert."""

    def __init__(self, station: Station) -> None:
        super().__init__(station.cp_id)
        self.station = station


def _may_start(error: DomainError | None) -> bool:
    """Whether a remote start so answered may still be carried out by the charger:
    Accepted, no answer (``ChargerTimeout``: it may have taken it), or an answer we could
    not read (as a ReserveNow's, ``_reservation_answered``). A refusal, a CALLERROR, or a
    start never sent (offline, unclaimed, unbuildable) is a definite no."""
    return error is None or isinstance(error, ChargerTimeout) or type(error) is ChargerError


def _undelivered(outcome: CommandOutcome) -> bool:
    """Whether the command never reached its charger: its SENT entry not written
    (``unsent``), the charger offline, unclaimed or unreachable (``ChargerOffline``: the
    bridge tells a command not yet written to the socket from one written, which is
    ``ChargerLost``), kept waiting its turn (``ChargerBusy``), or not made into the
    charger's request (``ValidationError``)."""
    return outcome.unsent or isinstance(outcome.error, (ChargerOffline, ChargerBusy,
                                                        ValidationError))


def _answered(outcome: CommandOutcome) -> bool:
    """Whether the charger answered the command: Accepted, or a refusal (Rejected), not
    a CALLERROR, no answer or a command never sent."""
    return outcome.error is None or isinstance(outcome.error, ChargerRejected)


def _interval_taken(outcome: CommandOutcome, payload: dict[str, Any]) -> int | None:
    """The HeartbeatInterval a charger took (Accepted, or RebootRequired: stored for its
    next reboot), which its station's boots are answered with from now on; ``None`` for
    any other command or answer. A refusal or a CALLERROR leaves the charger's interval
    as it was, and so does no answer: whether it took the value is unknown, and the
    boot answer it gets next sets it to the one remembered before."""
    if outcome.action != "ChangeConfiguration" or not is_heartbeat_key(payload.get("key")) \
            or outcome.error is not None or outcome.status not in POSITIVE:
        return None
    return heartbeat_interval(payload["value"], "value")  # checked before it was sent


def _rollout(outcome: CommandOutcome, payload: dict[str, Any], now: datetime
             ) -> dict[str, Any]:
    """The firmware rollout an UpdateFirmware the charger accepted starts (its answer
    has no status: any answer but a CALLERROR is a yes), or the diagnostics upload a
    GetDiagnostics it accepted does (its answer names the file it will upload: without
    a ``fileName`` it has nothing to upload, and nothing starts), as its station records
    it; empty for any other command or outcome. The location as the audit keeps it. An
    UpdateFirmware not answered (``_may_start``: no answer in time, or one we could not
    read) may have started its rollout too: it is recorded as well, ``Unanswered``
    (``_awaiting``), and the charger's reports settle it."""
    if outcome.action == "UpdateFirmware" and not _may_start(outcome.error):
        return {}
    if outcome.action != "UpdateFirmware" and outcome.error is not None:
        return {}
    if outcome.action == "GetDiagnostics":
        name = outcome.result.get("fileName")
        return {"diagnostics_requested_at": now, "diagnostics_file_name": name} \
            if isinstance(name, str) and name else {}
    if outcome.action != "UpdateFirmware":
        return {}
    retrieve = payload.get("retrieveDate")
    return {"firmware_requested_at": now,
            "firmware_location": without_credentials(str(payload.get("location", ""))),
            "firmware_retrieve_date": retrieve if isinstance(retrieve, datetime) else None}


def _awaiting(outcome: CommandOutcome) -> str:
    """What the station reads for the rollout (or upload) ``outcome`` records
    (``_rollout``) until its charger reports on it."""
    if outcome.action != "UpdateFirmware":
        return DIAGNOSTICS_REQUESTED
    return FIRMWARE_REQUESTED if outcome.error is None else FIRMWARE_UNANSWERED


def _kind(action: str) -> str:
    """What a rollout's action reports the progress of (``MaintenanceStatusChanged``)."""
    return "FIRMWARE" if action == "UpdateFirmware" else "DIAGNOSTICS"


#: The file name a GetDiagnostics answer reads with when the charger's was made of
#: hidden characters only (escape codes, zero-width spaces): a file is coming, its name
#: cannot be shown.
UNREADABLE_FILE_NAME = "\ufffd"


#: Rounds ``_announce_requested`` reads and writes again before it gives up.
ANNOUNCE_ROUNDS = 5


def _requested(station: Station, viewer: Viewer, kind: str, rollout: dict[str, Any],
               now: datetime, status: str = FIRMWARE_REQUESTED) -> Update:
    """The station's new rollout (or upload), its status ``Requested`` from ``now`` (a
    rollout's: ``status``, ``Unanswered`` for one its charger did not answer): the
    last one's "Installed" or "Uploaded" is not the new one's. Written only onto the
    version of ``station`` it was decided on (``updated_at``, which every report's write
    moves, the one clearing ``diagnostics_previous_uploading`` too), else skipped: a
    report since is the charger's word on this request already, unless it is no news of
    it, and a flag cleared since is not set again from the older read; either way
    ``_announce_requested`` decides again on the station as stored. An upload requested
    while the one before is still under way remembers it
    (``diagnostics_previous_uploading``): its end is still to come."""
    version = ("updated_at", station.updated_at)
    if kind == "FIRMWARE":
        return patch(station, viewer, only_if=version,
                     firmware_status=status, firmware_status_at=now, **rollout)
    uploading = station.diagnostics_status == "Uploading" or (
        station.diagnostics_status == DIAGNOSTICS_REQUESTED
        and station.diagnostics_previous_uploading)
    return patch(station, viewer, only_if=version,
                 diagnostics_status=DIAGNOSTICS_REQUESTED, diagnostics_status_at=now,
                 diagnostics_previous_uploading=uploading, **rollout)


def _holds(station: Station, kind: str, rollout: dict[str, Any]) -> bool:
    """Whether ``station`` reads ``Requested`` for this rollout (or upload): only its
    answer writes that status with this request's time (``firmware_requested_at``,
    ``diagnostics_requested_at``), whatever else was written to the station since."""
    if kind == "FIRMWARE":
        return station.firmware_status in FIRMWARE_AWAITING \
            and station.firmware_requested_at == rollout["firmware_requested_at"]
    return station.diagnostics_status == DIAGNOSTICS_REQUESTED \
        and station.diagnostics_requested_at == rollout["diagnostics_requested_at"]


#: The charger's configuration keys bounding its local list (OCPP 1.6, 9.1): how many
#: tags it holds, and how many one SendLocalList may carry.
LIST_MAX_KEY = "LocalAuthListMaxLength"
SEND_MAX_KEY = "SendLocalListMaxLength"
_LIMIT_KEYS = frozenset(map(folded_key, (LIST_MAX_KEY, SEND_MAX_KEY)))
#: The charger's configuration keys bounding a charging schedule (OCPP 1.6, 9.4): how
#: many periods it takes, and in which units (``Current``, ``Power``).
MAX_PERIODS_KEY = "ChargingScheduleMaxPeriods"
ALLOWED_UNITS_KEY = "ChargingScheduleAllowedChargingRateUnit"
#: The units ``ALLOWED_UNITS_KEY`` names (OCPP 1.6: a comma-separated list).
_UNIT_NAMES = {"current": ChargingRateUnit.A, "power": ChargingRateUnit.W}


def units_named(value: str) -> frozenset[ChargingRateUnit]:
    """The units an ``ALLOWED_UNITS_KEY`` value names (words in any case, spaces
    around them ignored); empty when it names none known. The one reading of the
    setting: the schedule check here and the site's choice of unit (``site_load``)
    must agree on what a charger takes."""
    words = (w.strip().lower() for w in value.split(","))
    return frozenset(_UNIT_NAMES[w] for w in words if w in _UNIT_NAMES)


#: How many keys one GetConfiguration may name at the charger (1.6, 9.1.11).
MAX_KEYS_KEY = "GetConfigurationMaxKeys"
#: How long a charger that gave no answer to a GetConfiguration of its list limits (a
#: timeout, a CALLERROR such as InternalError) is not asked them again: each list sent
#: meanwhile waited a command timeout for it (review s26). A boot asks at once.
LIST_LIMITS_RETRY_S = 300.0
#: The share of the command timeout each wait (its turn, the answer) of the read of a list
#: limit before its change (``CommandService._read_limit_in_force``) may take. The read
#: and the change have the mutation's one budget: the change's waits are each shortened
#: by half the time the read took, so it answers within twice the timeout, as any
#: mutation (README; review r26: the read, a whole command of its own, made it three
#: times the timeout and more).
PRE_READ_SHARE = 0.1
#: How many of the tags left out of a list too long for its charger a refusal names.
NAMED_LEFT_OUT = 5


def not_the_chargers_answer(error: DomainError) -> bool:
    """Whether a command's ``error`` says nothing of how its charger answers it, by its
    type: the charger offline or unreachable, no instance holding it (nothing sent:
    ``ChargerOffline``), the command never sent (waiting behind others:
    ``ChargerBusy``), or its way to the charger gone after it may have got it
    (``ChargerLost``: the charger's socket closed, the service stopping, or the instance
    holding it not heard from; review s26: a holder killed while asked was taken for
    the charger's silence). A timeout of a connected charger, a CALLERROR or an answer
    we could not read are its own."""
    return isinstance(error, (ChargerOffline, ChargerBusy, ChargerLost))


def _in_force_unknown(known: ConfigurationKey | None, booted_at: datetime | None) -> bool:
    """Whether a kept key's value in force is not known until the charger's next boot:
    a change of it waits for that boot (``awaits_reboot``) and the value it replaced was
    not known (``value_in_force``; ``CommandService._read_limit_in_force`` failed)."""
    return known is not None and known.awaits_reboot(booted_at) \
        and known.value_in_force is None


@dataclass(frozen=True)
class ListLimits:
    """What a charger's local list takes (``CommandService.list_limits``); ``None``:
    not known (the charger does not say)."""
    #: ``LocalAuthListMaxLength``: the most tags its list holds.
    holds: int | None = None
    #: ``SendLocalListMaxLength``: the most entries one SendLocalList carries.
    per_send: int | None = None


@dataclass
class _AskedLimits:
    """What a charger answered a GetConfiguration of its list limits since its boot at
    ``booted_at`` (``CommandService.list_limits``)."""
    booted_at: datetime | None
    #: By key as named (``LIST_MAX_KEY``, ``SEND_MAX_KEY``): the count it said, ``None``
    #: when it said none (unknownKey, not a count, NotSupported).
    answers: dict[str, int | None] = field(default_factory=dict)
    #: Not asked again before this: it gave no answer (``LIST_LIMITS_RETRY_S``).
    retry_at: datetime | None = None
    #: The keys whose value in force is not known until the boot that were logged so
    #: (once per boot, not at every list: review r26).
    told_unknown: set[str] = field(default_factory=set)


class CommandService(Service):
    def __init__(self, ctx: ServiceContext, gateway: ChargerGateway | None = None,
                 timeout: float = COMMAND_TIMEOUT_S) -> None:
        super().__init__(ctx)
        self.gateway = gateway
        self.timeout = timeout
        #: Told a station's id when a list its charger accepted left it holding what a
        #: card's state now says it should not (``Withdrawal.push_later``): a card
        #: blocked again while its restoration was in flight, an operator's list
        #: accepting a blocked card.
        self.on_list_wanting: Callable[[str], None] | None = None
        #: Told a station's id when its charger answered a CancelReservation sent by
        #: ``send`` (a driver's or an operator's, a removal's): it is reachable, so the
        #: cancels still owed to it go now too (``Withdrawal.owed_cancels_later``).
        self.on_cancel_answered: Callable[[str], None] | None = None
        #: Told of every Set/ClearChargingProfile sent by someone other than the service
        #: itself (the site's own limits are sent as ``SYSTEM``).
        self.profile_watch: ProfileWatch | None = None
        #: One ``send_owed_cancels`` at a time per station.
        self._owing = KeyedLocks()
        #: Each station's list limits as its charger answered a GetConfiguration of
        #: them when no value since its boot was stored (``list_limits``), with the boot
        #: they hold for (``Station.booted_at``): a charger that does not know a key was
        #: asked it at every push (QA s26).
        self._list_limits: dict[str, _AskedLimits] = {}

    async def send(self, viewer: Viewer, cp_id: str, action: str, payload: dict[str, Any],
                   *, audited_as: Viewer | None = None, own_list: bool = False,
                   owe_cancel: bool = False, timeout: float | None = None,
                   faults: Sequence[ValidationError] = ()) -> CommandOutcome:
        """Authorize, send and judge one command. Refusals before sending raise; what the
        charger (or its absence) says comes back in the outcome's ``error``.
        ``audited_as``: whose command it is in the audit log when the service sends it
        with its own authority (``SYSTEM``) as a consequence of what that person did
        (blocking a card stops its session at another company's charger, which they may
        not command). ``CommandCompleted`` still names the service: the person would
        otherwise be told which of another company's chargers it went to, and how they
        answered (attacker QA s17). ``own_list``: a SendLocalList ``Withdrawal`` sends
        (``CommandOutcome.own_list``), or its GetLocalListVersion (whose push sends what
        is wanted itself). ``owe_cancel``: a CancelReservation that ends its
        reservation even at a charger online but unreachable (``CommandOutcome.owe_cancel``).
        ``timeout``: how long each of its waits (its turn, the answer) may last, the
        service's own (``timeout``) by default. ``faults``: what the caller found wrong
        with the payload's fields before it was in OCPP's terms (``check_command``): told
        with the payload's other faults, after the refusals of who is asking (README
        Errors), and nothing is sent."""
        if viewer.anonymous:
            # No command is anyone's without signing in. Said before the station is looked
            # up: with the public map off, "no such station" would send them looking.
            raise Unauthenticated("sign in first")
        # Read, checked and recorded again from the station's read when the record's
        # write met a handover (``_new_reservation``'s books guard, CHANGED).
        asked = payload
        outcome, payload, watched = await retried(lambda: self._authorized(
            viewer, cp_id, action, asked, own_list=own_list, owe_cancel=owe_cancel,
            faults=faults))
        station = outcome.station
        outcome.requested_by = viewer.actor
        viewer = audited_as or viewer  # authorized: from here on, whose command it is
        timeout = self.timeout if timeout is None else timeout
        unread = None
        if action == "ChangeConfiguration":
            loop = asyncio.get_running_loop()
            started = loop.time()
            unread = await self._read_limit_in_force(viewer, station, payload, timeout)
            # One budget for the read and the change (``PRE_READ_SHARE``).
            timeout = max(timeout - (loop.time() - started) / 2,
                          timeout * (1 - PRE_READ_SHARE))
        await self._carry(viewer, outcome, payload, timeout)
        if action == "CancelReservation" and _answered(outcome) \
                and self.on_cancel_answered is not None:
            # Its charger's older owed cancels (cancelled here while it was offline)
            # waited for the holder's minute sweep, the plugs held at the charger
            # (session 29): a withdrawal's cancel sent them at once, this one did not.
            self.on_cancel_answered(station.id)
        if unread is not None and outcome.status == REBOOT_REQUIRED:
            await self._tell_in_force_unknown(station, str(payload["key"]), unread)
        if watched is not None:
            await watched.profile_commanded(outcome, payload)
        return outcome

    async def _authorized(self, viewer: Viewer, cp_id: str, action: str,
                          payload: dict[str, Any], *, own_list: bool, owe_cancel: bool,
                          faults: Sequence[ValidationError]
                          ) -> tuple[CommandOutcome, dict[str, Any], ProfileWatch | None]:
        """``send``'s read of the station, its checks, and the records the command
        implies (a reservation, a pending start): the outcome to carry, the payload as
        checked, and the site watching it (``ProfileWatch``). Raises the refusals."""
        if action not in DRIVER_ACTIONS:
            refuse_unless_staff(viewer, f"send {action}")
        # Drivers manage no station (``may_manage_station``): what is theirs to send is
        # known by their role before the station is read.
        if viewer.is_driver:
            _refuse_driver_profile(action, payload)
        elif payload.get("vehicleId") is not None:
            # A driver's shorthand for their own card: an operator names the card itself
            # (a driver's vehicle is not theirs to see). Left in, it reached the charger's
            # request and broke it, after a reservation was stored.
            faults = [*faults, ValidationError(
                "vehicleId is for drivers charging with their own card: give idTag",
                field="vehicleId", code="INVALID")]
        # Every field at fault is told at once, before the station is read: a station
        # missing (or not seen: the same answer) is NOT_FOUND only once all are valid
        # (README Errors; QA s31: the lookup's NOT_FOUND came first and hid them). The
        # cpId first, as every input gives it; a copy of the payload (the driver rules
        # edit it), its times judged on the service's clock.
        checks = Checks()
        checks(_named_charger, cp_id)
        payload = checks(check_command, action, payload, now=self.now(), faults=faults)
        checks.done()
        station = await self.store.find_one(
            Station, all_of(self.policy.scope(viewer, "station"), Eq("cp_id", cp_id)))
        if station is None:
            await self._refuse_stop_elsewhere(viewer, cp_id, action, payload)
            raise NotFound("no such station", field="cpId")
        manages = self.policy.may_manage_station(viewer, station)
        # A driver here sends one of ``DRIVER_ACTIONS``: the others were refused above.
        if not manages and not viewer.is_driver:
            raise Forbidden(f"you may not send {action} to this station", field="cpId")
        _refuse_unregistered(station, action, payload)
        # A remote start's card's holder, and the car its session is for: the one a
        # driver chose (``vehicleId``), else the card's car, as a tap's.
        # A start naming no connector, with a card a reservation there holds a plug
        # for: that plug (``_reserved_plug``), sent for it when it can take the start.
        holder, vehicle_id, reserved = None, None, None
        if not manages:
            vehicle_id, reserved = await self._check_driver(viewer, station, action,
                                                            payload)
            holder = viewer.user_id
        elif action == "RemoteStartTransaction":
            card = await self._check_start_tag(viewer, payload)
            holder, vehicle_id = card.user_id, card.vehicle_id
            if not payload.get("connectorId"):
                reserved = await self._reserved_plug(await self._held_for(
                    card.user_id, station, payload, [card]), card)
        elif action == "RemoteStopTransaction":
            await self._refuse_transaction_elsewhere(station, payload)
        if payload.get("connectorId"):
            await connector_in_range(self.store, station, payload["connectorId"])
        if action == "RemoteStartTransaction":
            if reserved is not None:
                await self._to_reserved_plug(viewer, station, payload, reserved)
            await self._check_plug(viewer, station, payload, driver=not manages)
            await self._refuse_pending(viewer, station, payload)
        if action == "SetChargingProfile":
            await self._check_tx_profile(station, payload)
        # Not for the site's own limits (sent as SYSTEM: its share and its fallback):
        # it picked their unit from these very keys (``allowed_units_of``) and sends
        # one period, so the check could only read the keys again, once per session
        # at every site run. People's profiles and remote starts are checked.
        site_own = action == "SetChargingProfile" and viewer.actor == SYSTEM.actor
        if action in ("SetChargingProfile", "RemoteStartTransaction") and not site_own:
            await self._check_schedule_fits(station, payload)
        if action == "SendLocalList" and not own_list:
            await self._check_list_fits(viewer, station, payload)
        # A person's command (the site's own limits go as SYSTEM) the site may need to
        # judge before it goes, and hear of after.
        person = self.profile_watch if viewer.actor != SYSTEM.actor else None
        watched = person if action in PROFILE_ACTIONS else None
        if watched is not None and action == "SetChargingProfile":
            await watched.check_profile(station, payload)
        if person is not None and action == "RemoteStartTransaction":
            await person.check_remote_start(station, payload)
        outcome = CommandOutcome(command_id=new_id(), action=action, station=station,
                                 own_list=own_list,
                                 owe_cancel=owe_cancel and action == "CancelReservation")
        if action == "ReserveNow":
            outcome.reservation = await self._new_reservation(viewer, station, payload)
        elif action == "RemoteStartTransaction":
            outcome.pending, outcome.superseded = await self._hold_start(
                viewer, station, payload, holder, vehicle_id)
        elif action == "CancelReservation":
            outcome.reservation = await self._reservation(viewer, station,
                                                          payload.get("reservationId"))
        return outcome, payload, watched

    async def _carry(self, viewer: Viewer, outcome: CommandOutcome, payload: dict[str, Any],
                     timeout: float | None = None) -> None:
        """Audits, sends and records the answer of a command authorized already; each
        of its waits lasts ``timeout`` (the service's by default)."""
        if self.gateway is not None and await self._known_offline(outcome.station):
            # Never sent: one entry saying so (stage NOT_SENT), not a SENT one the
            # charger never got followed by its CHARGER_OFFLINE (QA s33).
            outcome.error = ChargerOffline(f"{outcome.station.cp_id} is not connected",
                                           field="cpId")
            outcome.unsent = True
            await self._after(viewer, outcome, payload)
            return
        if outcome.action == "ChangeConfiguration":
            outcome.sent_at = await self._send_moment()
        if self.gateway is not None:
            await self._audit_sent(viewer, outcome, payload)
        try:
            await self._call(outcome, payload, self.timeout if timeout is None else timeout)
        except asyncio.CancelledError:
            # The request ended (the service stopping, the client gone) while the charger
            # had the command: it may have acted on it, so it is audited as unanswered
            # (a reservation stays PENDING) before the cancellation goes on.
            outcome.error = ChargerTimeout("the request ended before the charger answered")
            await asyncio.shield(self._after(viewer, outcome, payload))
            raise
        await self._after(viewer, outcome, payload)

    async def _known_offline(self, station: Station) -> bool:
        """Whether the charger is connected nowhere: not to this instance, and recorded
        offline (read now, only when not connected here: a command to a charger here
        reads nothing more; a charger connected to another instance is recorded online
        as its socket opens). A command to it is not sent: the gateway would refuse it
        (this instance) or find no instance to take it (``ChargerUnclaimed``).

        With several instances (Redis) the record may lag the connection in two
        windows, and a command that the relay would have taken to the charger is then
        answered ``CHARGER_OFFLINE``, stage ``NOT_SENT`` (nothing was sent: try again):
        after another instance's lease sweep marked offline the chargers of an instance
        whose lease lapsed (a stalled loop, a Redis outage) until that instance's
        renewal records them online again; and between another instance taking a
        charger's reconnection and its write of ``online`` true. Relaying whenever the
        bus is up would close them at the price of a SENT entry and the relay's claim
        wait for every charger truly offline (what QA s33 had removed); not done."""
        assert self.gateway is not None
        if self.gateway.is_connected(station.cp_id):
            return False
        return await self._recorded_offline(station)

    async def _recorded_offline(self, station: Station) -> bool:
        """Whether the station is recorded offline (or gone), read now."""
        [now] = await self.store.get_many(Station, [station.id])
        return now is None or not now.online

    async def _send_moment(self) -> datetime:
        """A moment later than any this service's clock gave before, taken before a
        ChangeConfiguration is sent (``CommandOutcome.sent_at``): the clock counts
        milliseconds, and a read recorded in the millisecond of the send (the change's
        own read of the key before it, ``_read_limit_in_force``) could not be told
        before it or after. Waits for the clock's next millisecond (a few at most: a
        clock that stands still, a test's, gives its moment, and what shares it is not
        before)."""
        first = self.now()
        for _ in range(10):
            await asyncio.sleep(0.001)
            if (now := self.now()) > first:
                return now
        return first

    async def _call(self, outcome: CommandOutcome, payload: dict[str, Any], timeout: float
                    ) -> None:
        if self.gateway is None:
            outcome.error = ChargerOffline("no OCPP bridge runs in this process")
            return
        if outcome.sent_at is None:  # a ChangeConfiguration's was taken before its audit
            outcome.sent_at = self.now()
        # Past here the charger may get it (written to its socket, or relayed to the
        # instance holding it): a keyed request is no longer run again by its retry.
        reaching_out(outcome.action)
        try:
            # The station's newest connection, as read for this command: no connection
            # older than it is sent on (``ChargerGateway.call``).
            result = await self.gateway.call(outcome.station.cp_id, outcome.action, payload,
                                             timeout, outcome.station.connection)
        except ChargerUnclaimed as exc:
            outcome.error = await self._unclaimed(outcome.station, exc)
            return
        except (ChargerError, ValidationError) as exc:
            # ValidationError: the request could not be made into the charger's (sent
            # nothing); an outcome like a refusal, so what the command stored (a
            # reservation) is settled and audited, not left PENDING.
            outcome.error = exc
            return
        # Whoever the answer reaches (the caller, ``commandCompleted``, webhooks) is not
        # told a secret a charger read back.
        outcome.result = without_secrets(outcome.action, result)
        name = outcome.result.get("fileName")
        if outcome.action == "GetDiagnostics" and isinstance(name, str) and name:
            # The charger's text, shown in dashboards as its vendor or model is: without
            # escape codes or line breaks (QA s27: kept and shown as sent). A name of
            # hidden characters only is still a file the charger will upload (only an
            # empty one is none): it reads as ``UNREADABLE_FILE_NAME`` (review r27: it
            # became null, "nothing to upload", and no request was recorded).
            outcome.result = {**outcome.result,
                              "fileName": shown_text(name) or UNREADABLE_FILE_NAME}
        outcome.status = result.get("status")
        if outcome.status is not None and outcome.status not in POSITIVE:
            outcome.error = ChargerRejected(f"the charger answered {outcome.status}")

    async def _unclaimed(self, station: Station, error: ChargerUnclaimed) -> ChargerError:
        """No instance took the relayed command. With the station recorded online (read
        now: it may have gone during the wait), its charger is connected to an instance
        that cannot hear the relay right now (its Redis connection is coming back), and
        "not connected" would contradict what every client is shown."""
        if await self._recorded_offline(station):
            return error
        return ChargerUnreachable(f"{station.cp_id} is connected to another instance that "
                                  "does not answer now; try again in a moment", field="cpId")

    # ------------------------------------------------------------- driver rules
    async def _check_driver(self, viewer: Viewer, station: Station, action: str,
                            payload: dict[str, Any]) -> tuple[str | None, int | None]:
        """Raises what a driver may not send; returns the car a start or reservation is
        for (the one they named, ``vehicleId``, else their card's) and, for a start
        naming no connector, the plug a reservation of theirs holds for its card
        (``_own_tag``)."""
        if action == "ReserveNow" and payload.get("parentIdTag") is not None:
            # Every card of the group named would take the plug held for them (OCPP 1.6
            # ReserveNow): groups are their operators' to name, as for cards (QA s23: a
            # driver's reservation named any group, and the charger was sent it).
            raise Forbidden("only operators and admins reserve for a card group",
                            field="parentIdTag")
        if action in ("RemoteStartTransaction", "ReserveNow"):
            return await self._own_tag(viewer, payload, station if action ==
                                       "RemoteStartTransaction" else None)
        if action == "RemoteStopTransaction":
            session = await self.store.find_one(Session, all_of(
                Eq("transaction_id", payload.get("transactionId")), Eq("cp_id", station.cp_id)))
            if session is None or session.user_id != viewer.user_id:
                raise NotFound("no such transaction", field="transactionId")
            if session.state is not SessionState.ACTIVE:
                raise ValidationError("the session has ended", field="transactionId",
                                      code="INVALID_STATE")
        return None, None

    async def _refuse_transaction_elsewhere(self, station: Station,
                                            payload: dict[str, Any]) -> None:
        """An operator's remote stop of a transaction this service knows at another
        station is a mistake the charger cannot tell: it was sent, and the operator told
        what the charger said of a number it may use for something else (QA s18). One
        this service does not know (started while the charger was offline, not yet
        reported) is still sent: the charger knows it."""
        session = await self.store.find_one(
            Session, Eq("transaction_id", payload.get("transactionId")))
        if session is not None and session.station_id != station.id:
            raise NotFound("no such transaction on this station", field="transactionId")

    async def _own_tag(self, viewer: Viewer, payload: dict[str, Any],
                       starting: Station | None) -> tuple[str | None, int | None]:
        """A driver charges with their own tag: the one given, or (none given) the one
        linked to the vehicle given (``vehicleId``), else their first usable tag; to
        start charging (``starting``: on that station) one a live reservation there holds
        the plug for before any (``_reserved_first``). The vehicle, given, must be theirs
        and kept (``NOT_FOUND``), with a tag given too: it is the car the session is
        booked to (returned; QA s23: it was ignored beside an idTag, the session booked
        to the card's car, another driver's car never checked; and a car no card is
        linked to read "no usable id tag" though the driver held one). To start
        charging the tag must not be charging already nor have a remote start pending
        (``_refuse_pending``): the charger would accept the remote start and then refuse
        its StartTransaction (ConcurrentTx), the driver left at a dead plug; nor the car
        be starting or charging, nor (naming neither card nor car) the driver be starting
        (``_refuse_driver_starting``). Returns the car the start is for (the one given,
        else the card's) and, for a start naming no connector, the plug one of their
        reservations there holds for the card (``_reserved_plug``), or ``None``."""
        vehicle_id = payload.pop("vehicleId", None)
        tag_value = payload.get("idTag")
        now = self.now()
        held: list[Reservation] = []  # starting: the driver's holding the plug there
        if vehicle_id is not None:
            vehicle = await self.store.find_one(Vehicle, all_of(
                Eq("id", vehicle_id), Eq("owner_id", viewer.user_id), IN_GARAGE))
            if vehicle is None:  # not "no usable tag": the app sent a wrong id
                raise NotFound("no such vehicle", field="vehicleId")
        if tag_value:
            tag = await self.store.find_one(IdTag, Eq("tag", str(tag_value).strip().upper()))
            if tag is None or tag.user_id != viewer.user_id:
                raise NotFound("no such id tag", field="idTag")
            status = tag.status_at(now)
            if status is not IdTagStatus.ACCEPTED:
                # The charger would refuse it anyway (Authorize); a reservation would
                # hold the connector for a card that cannot charge.
                raise ValidationError(f"this id tag is {status.value.lower()}",
                                      field="idTag", code="INVALID_STATE")
            if starting is not None:
                await self._refuse_charging(viewer, tag)
                held = await self._held_for(viewer.user_id, starting, payload, [tag])
        else:
            where = all_of(Eq("user_id", viewer.user_id), Eq("status", IdTagStatus.ACCEPTED))
            tags = [t for t in await self.store.find_all(IdTag, where, limit=20)
                    if t.status_at(now) is IdTagStatus.ACCEPTED]
            if vehicle_id is not None:
                # The car's own card first; any other of theirs charges it too.
                tags.sort(key=lambda t: t.vehicle_id != vehicle_id)
            if starting is not None:
                held = await self._held_for(viewer.user_id, starting, payload, tags)
                tags = await self._reserved_first(held, tags)
            if not tags:
                raise await self._no_usable_tag(viewer, vehicle_id, now)
            tag = tags[0]
            if starting is not None:
                # The first card that is not charging now nor starting; if all are, why
                # not.
                for candidate in tags:
                    if await self._charging_with(candidate) is None \
                            and not await self._pending_with(candidate.tag):
                        tag = candidate
                        break
                else:
                    await self._refuse_charging(viewer, tag)
        car = vehicle_id if vehicle_id is not None else tag.vehicle_id
        plug = None
        if starting is not None:
            # The car the session will be booked to, however it was chosen: the card's
            # own, named or picked, is checked as a car named is (review r3b: the car
            # charging with another card was booked a second session through its own).
            await self._refuse_driver_starting(
                viewer, car, chose=bool(tag_value) or vehicle_id is not None)
            if not payload.get("connectorId"):
                plug = await self._reserved_plug(held, tag)
        payload["idTag"] = tag.tag
        return car, plug

    async def _no_usable_tag(self, viewer: Viewer, vehicle_id: str | None,
                             now: datetime) -> ValidationError:
        """Why a driver naming no card has none to use: no card at all (REQUIRED), or
        each of theirs blocked or expired (INVALID_STATE, saying which, as naming such a
        card is told; QA s32: a driver whose only card was blocked was told to give one)."""
        held = await self.store.find_all(IdTag, Eq("user_id", viewer.user_id), limit=20)
        why = sorted({t.status_at(now).value.lower() for t in held})
        if not why:
            return ValidationError("you have no id tag: add a card to charge with",
                                   field="vehicleId" if vehicle_id else "idTag",
                                   code="REQUIRED")
        whose = "your id tag is" if len(held) == 1 else "each of your id tags is"
        return ValidationError(f"{whose} {' or '.join(why)}", field="idTag",
                               code="INVALID_STATE")

    async def _held_for(self, user_id: str | None, station: Station,
                        payload: dict[str, Any], tags: list[IdTag]) -> list[Reservation]:
        """The live reservations on ``station`` holding the start's plug (its connector
        named, or any when none is; connector 0's holds every one) that are the card
        holder's (``user_id``: the driver starting, or the holder of the card an
        operator's start names): made for a card of theirs (``Reservation.user_id``:
        ``base.made_for``), for the tag of one of ``tags`` before it was issued to them
        (no holder then: the charger holds the plug for the tag all the same; review
        r27-misc), or for the group of one of ``tags`` (its id reserved, or named beside
        the card: ``Reservation.parent_id_tag``). All of them, a page at a time (review
        r27-reserve: the station's first 10 live ones were read, unsorted, so at a site
        with more the driver's own could be missed, their start sent with another of
        their cards and refused). A reservation for another driver's card of their group
        is not theirs: their start does not go for it. Whether each holds its plug for a
        card is ``reserved_for_card``'s to say."""
        connector_id = payload.get("connectorId")
        groups = {t.parent_tag for t in tags if t.parent_tag}
        named = tuple(sorted(groups | {t.tag for t in tags}))
        parts: list[Filter] = [Eq("user_id", user_id)] if user_id is not None else []
        if named:
            parts.append(In("id_tag", named))
        if groups:
            parts.append(In("parent_id_tag", tuple(sorted(groups))))
        if not parts:
            return []
        theirs = any_of(*parts)
        where = all_of(Eq("station_id", station.id), theirs,
                       In("connector_id", (connector_id, 0)) if connector_id else None,
                       live_reservations(self.now()))
        return [r async for page in pages(self.store, Reservation, where, HELD_PAGE)
                for r in page]

    async def _reserved_first(self, held: list[Reservation], tags: list[IdTag]
                              ) -> list[IdTag]:
        """``tags`` (a driver's usable cards, in the order they would be picked), those
        one of ``held`` (``_held_for``) holds the start's plug for first: only
        such a card may start there (OCPP 1.6, 5.13; ``_refuse_reserved``). A driver who
        reserved with one of their cards and tapped start in the app naming none, or
        naming a car whose own card is another, was sent another card of theirs and
        refused "reserved for another card" at the plug held for them (QA s27). The car
        chosen stays the session's (``_own_tag``): any card of theirs charges it."""
        if not held:
            return tags
        reserved = set()
        for tag in tags:
            for reservation in held:
                if await reserved_for_card(self.store, reservation, tag.tag, tag):
                    reserved.add(tag.id)
                    break
        return sorted(tags, key=lambda t: t.id not in reserved)

    async def _reserved_plug(self, held: list[Reservation], tag: IdTag) -> int | None:
        """The connector one of ``held`` (``_held_for``) holds for ``tag`` (not connector
        0, which holds them all), for a start naming none: a charger told no connector
        may start it on any free one (OCPP 1.6), and did, the reservation left ACTIVE,
        its plug held until its expiry and the driver kept from reserving again (review
        r27-reserve). Sent for it only if it can take the start
        (``_to_reserved_plug``)."""
        for reservation in held:
            if reservation.connector_id and await reserved_for_card(
                    self.store, reservation, tag.tag, tag):
                return reservation.connector_id
        return None

    async def _to_reserved_plug(self, viewer: Viewer, station: Station,
                                payload: dict[str, Any], plug: int) -> None:
        """A start naming no connector is sent for ``plug``, the one a reservation holds
        for its card (``_reserved_plug``), when that plug can take it: the checks of a
        start naming it pass (in range, ``_check_plug``, ``_refuse_pending``). Otherwise
        it goes as it came, naming none, judged as such (the charger picks a free plug,
        or it is refused on ``cpId``): review r27-misc, the plug was named before the
        checks, so a reserved plug reporting itself Faulted (or the charger Faulted, or
        a connector-0 reservation for another card) refused the start on
        ``connectorId``, a field the caller never sent, though another plug was free.
        A refusal is never on a field the caller did not send. The trial checks the plug
        as a driver's start naming it, out of service included, for an operator's start
        too: that check chooses the plug, it refuses nothing (review r27-reserve3: an
        operator's start was sent for a reserved plug reporting itself Faulted, which a
        real charger rejects, where naming none it would take a free one). An operator
        naming the plug keeps staff's rules (``_check_plug``)."""
        trial = {**payload, "connectorId": plug}
        try:
            await connector_in_range(self.store, station, plug)
            await self._check_plug(viewer, station, trial, driver=True)
            await self._refuse_pending(viewer, station, trial)
        except DomainError:
            return
        payload["connectorId"] = plug

    async def _refuse_driver_starting(self, viewer: Viewer, vehicle_id: str | None, *,
                                      chose: bool) -> None:
        """A car charges one session at a time, whichever of its driver's cards starts
        it: a start for a car (``vehicle_id``: the one the session would be booked to,
        the car named, else the card's, named or picked) with a session holding it
        (``holding_car``: booked to it, open, its start not refused), or a remote start
        under way for it (a live ``PendingStart`` of its, by the car chosen or by its
        card's), is refused IN_USE (on ``idTag``, as a card charging
        is). A start naming neither card nor car (``chose`` false) while one of the
        driver's is under way is a double tap, refused the same way. A driver naming
        another card, or another car of theirs, starts it: a fleet driver may charge two
        cars at once (review of 1c05ebe: a double tap for one car was sent twice, with
        each of the driver's two cards, and a car charging was started again with the
        other card, two sessions ACTIVE for it; review r3b: the car was checked only
        when named, and a start naming its own card, or naming nothing, booked it a
        second session). A session whose start the CSMS refused holds the car no more
        than its card (review r26-tx2: one its charger never stopped refused the car's
        remote start for good, the card's StartTransaction being Accepted)."""
        if vehicle_id is None and chose:
            return
        if vehicle_id is not None and await self.store.find_one(Session,
                                                                holding_car(vehicle_id)):
            raise Conflict("this car is charging now", field="idTag", code="IN_USE")
        # By the expiry index: the live ones are the starts of the last two minutes. A
        # car's read by it (review s25: the driver's first 20 read, those holding nothing
        # left out after, the car's own could be behind them); a double tap's, newest
        # first (a start holding nothing was sent before its charger's last boot).
        mine = all_of(Eq("user_id", viewer.user_id), live_pending_starts(self.now()))
        theirs = await self._holding(
            await self.store.find_all(PendingStart, all_of(mine, Eq(
                "vehicle_id", vehicle_id)), limit=MAX_CONNECTOR_ID) if chose
            else await self.store.find_all(PendingStart, mine, sort=[
                Sort("created_at", descending=True)], limit=20))
        for pending in theirs:
            if not chose:
                raise await self._card_starting(viewer, pending)  # as the card's own
            if pending.vehicle_id == vehicle_id:
                [where] = await self.store.get_many(Station, [pending.station_id])
                raise Conflict(f"this car is starting a session at "
                               f"{where.name if where else pending.cp_id}: "
                               f"{waiting(pending)}", field="idTag", code="IN_USE")

    async def _check_start_tag(self, viewer: Viewer, payload: dict[str, Any]) -> IdTag:
        """An operator's (or admin's) remote start names any card (a driver of another
        network may charge here). One whose StartTransaction we would refuse (unknown
        here, blocked, expired, of a deactivated user, charging elsewhere) is refused
        now: the charger would accept the remote start and the operator be told ACCEPTED,
        then the start be refused and nothing charge."""
        if not payload.get("idTag"):
            # Only a driver's start may leave it out (their own card is taken): an
            # operator's names the card (QA s18: a KeyError, masked as internal).
            raise ValidationError("give the card to charge with", field="idTag",
                                  code="REQUIRED")
        tag = await self.store.find_one(IdTag, Eq("tag", str(payload["idTag"]).strip().upper()))
        if tag is None:
            raise NotFound("no such id tag: the charger's start would be refused",
                           field="idTag")
        await self._refuse_unusable_tag(tag, self.now())
        await self._refuse_charging(viewer, tag)
        return tag

    # ------------------------------------------------------------- the plug to start on
    async def _check_plug(self, viewer: Viewer, station: Station, payload: dict[str, Any], *,
                          driver: bool) -> None:
        """A remote start is refused before it is sent where the plug cannot take it: a
        charger that does not check answers Accepted and starts there anyway (QA s22).
        For everyone, where it would take what another customer holds: a plug charging
        another session (its StartTransaction closed that session as lost, billed
        short) or reserved for another card. Staff clear those first, each an audited
        act of its own (``remoteStopTransaction`` or ``endSession``,
        ``cancelReservation``). For drivers also a plug, or a charger as a whole, out of
        service (Faulted, Unavailable): staff may still try one whose report they doubt
        (support), and the charger refuses a real one, nobody else harmed. A start that
        names no connector lets the charger pick one of its free ones, and is refused
        where none is (``_refuse_none_free``)."""
        await self._refuse_occupied(viewer, station, payload)
        await self._refuse_reserved(station, payload)
        if driver:
            await self._refuse_out_of_service(station, payload)
        if not payload.get("connectorId"):
            await self._refuse_none_free(station, payload, driver=driver)

    async def _refuse_none_free(self, station: Station, payload: dict[str, Any], *,
                                driver: bool) -> None:
        """A start naming no connector, where every connector the station has is
        charging a session, reserved for another card, or (for drivers) out of service:
        a lenient charger started it on one anyway, and closed the session there as lost
        (QA s22 verify: a single-plug station's app leaves the connector out). A station
        whose connectors are not known yet is left to its charger."""
        plugs, taken_ids = await self._plugs_taken(station, payload)
        if not plugs:
            return
        taken = [p for p in plugs if p.connector_id in taken_ids]
        if len(taken) == len(plugs):
            raise Conflict("every connector of this station is charging another session "
                           "or reserved for another card", field="cpId", code="IN_USE")
        down = [p for p in plugs if p.status_at is not None and p.status in POINT_DOWN]
        if driver and {p.connector_id for p in [*taken, *down]} >= \
                {p.connector_id for p in plugs}:
            raise ValidationError("no connector of this station can start a session now: "
                                  "the free ones report themselves out of service",
                                  field="cpId", code="INVALID_STATE")

    async def _plugs_taken(self, station: Station, payload: dict[str, Any]
                           ) -> tuple[list[Connector], set[int]]:
        """The station's connectors (none when not known yet), and those of them charging
        a session or reserved for a card other than the start's."""
        plugs = await self.store.find_all(Connector, Eq("station_id", station.id),
                                          limit=MAX_CONNECTOR_ID)
        if not plugs:
            return [], set()
        busy = {s.connector_id for s in await self.store.find_all(Session, all_of(
            Eq("station_id", station.id), Eq("state", SessionState.ACTIVE)),
            limit=MAX_CONNECTOR_ID)}
        reservations = await self.store.find_all(Reservation, all_of(
            Eq("station_id", station.id), live_reservations(self.now())),
            limit=MAX_CONNECTOR_ID)
        card = await self.store.find_one(IdTag, Eq("tag", payload["idTag"]))
        held = {r.connector_id for r in reservations
                if not await reserved_for_card(self.store, r, payload["idTag"], card)}
        return plugs, busy | held

    async def _refuse_occupied(self, viewer: Viewer, station: Station,
                               payload: dict[str, Any]) -> None:
        """A plug holding an ACTIVE session (of any card: one of the starting card was
        refused on ``idTag`` already), whatever its last report says (a charger may
        start a transaction without reporting Charging: availability's rule). One of the
        viewer's own is named so, with the ways to end it (QA s30: a driver's stuck
        session on the plug was "another session"), as is one to staff who keep its books
        and so may end it (``end_session``)."""
        connector_id = payload.get("connectorId")
        if not connector_id:
            return
        held = await self.store.find_one(Session, all_of(
            Eq("station_id", station.id), Eq("connector_id", connector_id),
            Eq("state", SessionState.ACTIVE)))
        if held is None:
            return
        ways = (f" (transaction {held.transaction_id}): stop it with remoteStopTransaction, "
                "or, if its charger lost it, ")
        if viewer.user_id is not None and held.user_id == viewer.user_id:
            message = (f"the connector is charging your own session{ways}ask the "
                       "station's operator to end it (endSession)")
        elif self.policy.keeps_books(viewer, held):
            # Staff who may end it are told which and how (QA s33: a lost session blocked
            # the plug and the operator was told nothing to act on); a driver is not told
            # another's transaction.
            message = f"the connector is charging another session{ways}end it (endSession)"
        else:
            message = "the connector is charging another session"
        raise Conflict(message, field="connectorId", code="IN_USE")

    async def _refuse_out_of_service(self, station: Station, payload: dict[str, Any]
                                     ) -> None:
        """A charger whose connector 0 last reported Unavailable or Faulted (none of its
        connectors can charge: ``availability.POINT_DOWN``), or a plug that did. A plug
        that never reported (its stored status is the default, not a report) is not
        judged: the charger decides."""
        connector_id = payload.get("connectorId")
        field = "connectorId" if connector_id else "cpId"
        if station.status in POINT_DOWN:
            raise ValidationError(f"the charger reports itself {station.status.value.lower()}: "
                                  "none of its connectors can charge now", field=field,
                                  code="INVALID_STATE")
        if not connector_id:
            return
        plug = await self.store.find_one(Connector, all_of(
            Eq("station_id", station.id), Eq("connector_id", connector_id)))
        if plug is not None and plug.status_at is not None and plug.status in POINT_DOWN:
            raise ValidationError(f"the connector reports itself {plug.status.value.lower()}: "
                                  "it cannot charge now", field=field, code="INVALID_STATE")

    async def _refuse_reserved(self, station: Station, payload: dict[str, Any]) -> None:
        """A remote start on a connector reserved for another card (OCPP 1.6, 5.13: a
        reserved connector serves the reserved idTag or its group) is refused, a
        driver's and staff's alike: a charger that does not check would end the other
        card's reservation, one that does would refuse the start after it was answered.
        Connector 0 reserves the station's next free connector, so it holds them all (as
        ``_refuse_clash``)."""
        connector_id = payload.get("connectorId")
        where = Eq("connector_id", 0) if not connector_id \
            else In("connector_id", (connector_id, 0))
        held = await self.store.find_all(Reservation, all_of(
            Eq("station_id", station.id), where, live_reservations(self.now())), limit=10)
        if not held:
            return
        card = await self.store.find_one(IdTag, Eq("tag", payload["idTag"]))
        for reservation in held:
            if not await reserved_for_card(self.store, reservation, payload["idTag"],
                                           card):
                # On the field the start named: a start naming no connector is refused
                # on cpId, as the API says (QA s22 verify 2).
                raise Conflict("the connector is reserved for another card",
                               field="connectorId" if connector_id else "cpId",
                               code="IN_USE")

    # ------------------------------------------------------------- starts not started yet
    async def _holding(self, pending: list[PendingStart]) -> list[PendingStart]:
        """Of live ``pending``, those holding their card and plug: not sent before their
        charger's last boot (``pending_starts.holds``; review s25)."""
        if not pending:
            return pending
        ids = sorted({p.station_id for p in pending})
        stations = dict(zip(ids, await self.store.get_many(Station, ids), strict=True))
        return holding(pending, stations)

    async def _pending_with(self, tag: str, own: str | None = None) -> PendingStart | None:
        """A remote start with card ``tag`` (stored form) other than ``own`` that holds
        the card (``_holding``)."""
        found = await self.store.find_all(PendingStart, all_of(
            Eq("id_tag", stored_id_tag(tag)), live_pending_starts(self.now())),
            limit=MAX_CONNECTOR_ID)
        return next((p for p in await self._holding(found) if p.id != own), None)

    async def _refuse_pending(self, viewer: Viewer, station: Station, payload: dict[str, Any],
                              own: str | None = None) -> None:
        """A remote start the charger may still carry out (``PendingStart``: sent, its
        StartTransaction not come, within ``PENDING_START_WINDOW``) holds its card and its
        plug, as a session does (QA s23: three starts with one card, or two with two
        cards on one plug, before the first StartTransaction, were all ACCEPTED, and the
        charger then refused the later ones' StartTransaction, ConcurrentTx, or
        rejected them, the drivers left at a dead plug). Refused ``IN_USE``: a start with
        the same card (on ``idTag``, the station named only to whoever may know where the
        card starts, as ``_refuse_charging`` does), one naming the same connector (on
        ``connectorId``). A start naming no connector takes one of the station's free
        ones: one naming none is refused (on ``cpId``) when the free connectors are no
        more than the pending starts that name none; one naming a connector, when the
        other free ones are fewer than those (the charger's pick may be its).
        ``own``: the start being sent, stored already (``_hold_start``). A start sent
        before its charger's last boot holds nothing (``pending_starts.holds``)."""
        pending = await self._pending_with(payload["idTag"], own)
        if pending is not None:
            raise await self._card_starting(viewer, pending)
        here = [p for p in await self.store.find_all(PendingStart, all_of(
            Eq("station_id", station.id), live_pending_starts(self.now())),
            limit=MAX_CONNECTOR_ID) if p.id != own and holds(p, station)]
        if not here:
            return
        connector_id = payload.get("connectorId")
        if connector_id and any(p.connector_id == connector_id for p in here):
            raise Conflict("a remote start is pending on this connector: its car is "
                           "expected there", field="connectorId", code="IN_USE")
        anywhere = sum(1 for p in here if not p.connector_id)
        if connector_id and not anywhere:
            return
        plugs, taken = await self._plugs_taken(station, payload)
        if not plugs:
            return  # not known yet: left to the charger, as ``_refuse_none_free`` does
        free = {p.connector_id for p in plugs} - taken \
            - {p.connector_id for p in here if p.connector_id}
        if connector_id and len(free - {connector_id}) < anywhere:
            raise Conflict("a remote start is pending on this station, and this connector "
                           "is the one free for it", field="connectorId", code="IN_USE")
        if not connector_id and len(free) <= anywhere:
            raise Conflict("every connector of this station is charging another session, "
                           "reserved for another card or awaiting a remote start",
                           field="cpId", code="IN_USE")

    async def _card_starting(self, viewer: Viewer, pending: PendingStart) -> Conflict:
        """The refusal of a start with a card that has ``pending`` under way, naming its
        station only to whoever may know where the card starts: its holder, who asked,
        the station's operators and admins (as ``_refuse_charging`` names a session's
        to whoever sees the session)."""
        [where] = await self.store.get_many(Station, [pending.station_id])
        told = viewer.is_admin or viewer.actor == pending.created_by or (
            viewer.user_id is not None and viewer.user_id == pending.user_id) or (
            where is not None and self.policy.may_manage_station(viewer, where))
        if not told:
            return Conflict("this card is starting a session at another station now",
                            field="idTag", code="IN_USE")
        return Conflict(f"this card is starting a session at "
                        f"{where.name if where else pending.cp_id}: {waiting(pending)}",
                        field="idTag", code="IN_USE")

    async def _hold_start(self, viewer: Viewer, station: Station, payload: dict[str, Any],
                          holder: str | None, vehicle_id: str | None
                          ) -> tuple[PendingStart, list[PendingStart]]:
        """``_hold_start_in`` the boot ``station`` is in: a boot stored since it was read
        (the charger reconnecting as the driver taps start, on another instance) fails
        the insert's guard, and the start is stored again in the boot read anew, a few
        times (review s26: recorded in the boot before, it held nothing from the moment
        it was stored, and the driver's double tap was sent too)."""
        for _ in range(BOOT_RETRIES):
            try:
                return await self._hold_start_in(viewer, station, payload, holder,
                                                 vehicle_id)
            except _Rebooted as rebooted:
                station = rebooted.station
        raise Conflict("the charger is restarting: try again", field="cpId",
                       code="IN_USE")

    async def _hold_start_in(self, viewer: Viewer, station: Station,
                             payload: dict[str, Any], holder: str | None,
                             vehicle_id: str | None
                             ) -> tuple[PendingStart, list[PendingStart]]:
        """Stores the remote start about to be sent (``PendingStart``), until its
        StartTransaction or its window's end. Two sent at once (two requests, two
        instances) must not both pass ``_refuse_pending``: the insert is guarded by no
        other live pending start with its card or on its named connector (on SQLite,
        of two at once exactly one is stored; on MongoDB at least one is refused, maybe
        both: "Several instances on one store"), then the checks run again beside it
        (for the free connectors a start naming none takes); a start refused either
        way is not sent.

        A start with the same card, or on the same named connector, sent before its
        charger's last boot (which no longer holds them: ``pending_starts.holds``) is
        superseded: returned with this one, and settled only once the charger accepts
        this one (``_after``), so this start's StartTransaction takes this start's car.
        Not in this one's insert (review s25): a charger that did not restart still
        holds the older start and refuses this one (or never gets it), and the older
        one's StartTransaction then found nothing and lost the car chosen. Until the
        answer both are live; a StartTransaction takes this one (``started_by``: the
        newest sent since the last boot that the charger did not refuse), since the
        charger's StartTransaction may come before its Accepted is handled (review s26:
        relayed from another instance, it took the older start and its car).

        The start records the boot it is sent in (``station_booted_at``); the insert is
        guarded on the station still being in it (``_Rebooted`` when not)."""
        now = self.now()
        tag = stored_id_tag(payload["idTag"])
        connector_id = payload.get("connectorId") or None
        pending = stamp_new(PendingStart(
            station_id=station.id, cp_id=station.cp_id, connector_id=connector_id,
            id_tag=tag, user_id=holder, vehicle_id=vehicle_id,
            expires_at=now + PENDING_START_WINDOW, station_booted_at=station.booted_at),
            viewer)
        superseded = await self._superseded(station, tag, connector_id, now)
        others = all_of(live_pending_starts(now), NotSub("id", PendingStart.kind, In(
            "id", (pending.id, *(p.id for p in superseded)))))
        guards = [Guard(PendingStart, all_of(others, Eq("id_tag", tag)), exists=False),
                  Guard(Station, all_of(Eq("id", station.id),
                                        Eq("booted_at", station.booted_at)))]
        if connector_id:
            guards.append(Guard(PendingStart, all_of(
                others, Eq("station_id", station.id), Eq("connector_id", connector_id)),
                exists=False))
        try:
            # Unaudited: the command's own entries (SENT, ANSWERED) say what was asked.
            await self.commit(viewer, [], unaudited=[Insert(pending)], guards=guards)
        except Conflict:
            [now_station] = await self.store.get_many(Station, [station.id])
            if now_station is not None and now_station.booted_at != station.booted_at:
                raise _Rebooted(now_station) from None
            # Another start won: refused as that one's (or, if it is gone already, as
            # a clash to try again).
            await self._refuse_pending(viewer, station, payload)
            raise Conflict("another remote start was sent at the same moment: try again",
                           field="idTag", code="IN_USE") from None
        try:
            await self._refuse_pending(viewer, station, payload, own=pending.id)
        except Conflict:
            await self.commit(viewer, [], unaudited=[Delete(pending)])
            raise
        return pending, superseded

    async def _superseded(self, station: Station, tag: str, connector_id: int | None,
                          now: datetime) -> list[PendingStart]:
        """The live starts a new one with card ``tag`` on ``station``'s ``connector_id``
        supersedes: with that card, or on that named connector, and holding nothing
        any more (sent before their charger's last boot)."""
        found = await self.store.find_all(PendingStart, all_of(
            Eq("id_tag", tag), live_pending_starts(now)), limit=MAX_CONNECTOR_ID)
        if connector_id:
            found += await self.store.find_all(PendingStart, all_of(
                Eq("station_id", station.id), Eq("connector_id", connector_id),
                live_pending_starts(now)), limit=MAX_CONNECTOR_ID)
        unique = list({p.id: p for p in found}.values())
        kept = {p.id for p in await self._holding(unique)}
        return [p for p in unique if p.id not in kept]

    async def forget_pending_starts(self, limit: int = 500) -> int:
        """Deletes pending starts past their window (they hold nothing: every check
        ignores them); returns how many. Run by the housekeeping beside the reservations'
        sweep: by the expiry index, a few at a time."""
        due = await self.store.find_all(PendingStart, Range(
            "expires_at", lte=self.now()), limit=limit)
        if not due:
            return 0
        try:
            await self.commit(SYSTEM, [], unaudited=[Delete(p) for p in due])
        except (NotFound, Conflict):
            return 0  # another instance's sweep took some first: the next round's
        return len(due)

    async def _sees(self, viewer: Viewer, session: Session) -> bool:
        found = await self.store.get_many(Session, [session.id],
                                          self.policy.scope(viewer, "session"))
        return found[0] is not None

    async def _charging_with(self, tag: IdTag) -> Session | None:
        """The session holding the card (``holding_card``): one whose start the CSMS
        refused holds nothing, the charger's StartTransaction would be Accepted."""
        return await self.store.find_one(Session, holding_card(tag.tag))

    async def _refuse_charging(self, viewer: Viewer, tag: IdTag) -> None:
        session = await self._charging_with(tag)
        if session is None:
            return
        if session.user_id != tag.user_id:
            # Its tag is in use by a session that was not this card's (a tag of no card
            # then, at any company's charger): where is not this card's holder's to know.
            raise Conflict("this card's tag is in use by a session in progress",
                           field="idTag", code="IN_USE")
        if not await self._sees(viewer, session):
            # Where a person charges is theirs and their charging station's operators'
            # to know: another company's operator starting with the card (any card may
            # charge anywhere) must not learn it (QA s23: they could follow a driver
            # across a competitor's network by the station this named).
            raise Conflict("this card is charging at another station now",
                           field="idTag", code="IN_USE")
        [where] = await self.store.get_many(Station, [session.station_id])
        raise Conflict(f"this card is charging at {where.name if where else session.cp_id}",
                       field="idTag", code="IN_USE")

    async def _refuse_stop_elsewhere(self, viewer: Viewer, cp_id: str, action: str,
                                     payload: dict[str, Any]) -> None:
        """An operator stopping a transaction in their books on a station their company
        no longer runs (it was handed over mid-session) is told who may, rather than "no
        such station": the station's operators now stop what charges on it (it is their
        hardware), and the session's books stay with them (``endSession``). Only said
        about a session the viewer sees already, so nothing is revealed."""
        transaction_id = payload.get("transactionId")
        if action != "RemoteStopTransaction" or not viewer.is_operator \
                or isinstance(transaction_id, bool) or not isinstance(transaction_id, int):
            return
        session = await self.store.find_one(Session, all_of(
            self.policy.scope(viewer, "session"), Eq("cp_id", cp_id),
            Eq("transaction_id", transaction_id), Eq("state", SessionState.ACTIVE)))
        if session is not None:
            raise Forbidden("another company runs this station now: its operators stop "
                            "the transaction at the charger; endSession closes it in "
                            "your books", field="cpId")

    # ------------------------------------------------------------- smart charging
    async def list_limits(self, station: Station, *, audited_as: Viewer | None = None
                          ) -> ListLimits:
        """How many tags ``station``'s charger holds in its local list and takes in one
        SendLocalList (``LocalAuthListMaxLength``, ``SendLocalListMaxLength``): as its
        stored configuration knows the values in force since its last boot
        (``known_count``), else as a GetConfiguration of those not known answers
        (recorded in the configuration too). Both keys go in one request, each alone to
        a charger whose ``GetConfigurationMaxKeys`` is known to be 1, and each alone
        again after any CALLERROR to the two (review s26: a charger taking one key per
        request refused the two, and the CALLERROR, kept for the boot, left withdrawals
        sized at ``DEFAULT_SEND_MAX`` and answered Failed). An answer for a key (a value,
        unknownKey, a NotSupported to it alone: it cannot say) is kept until the charger
        boots again (QA s26: one that did not know the key was asked at every push); no
        answer from the connected charger (a timeout, another CALLERROR such as
        InternalError) for ``LIST_LIMITS_RETRY_S`` only, so a charger not answering does
        not hold every list sent meanwhile for a command timeout (review s26); a charger
        offline or unreachable is asked at the next list (``_ask_limits``). A
        ChangeConfiguration it took is stored, so followed at once if Accepted, from its
        next boot if RebootRequired (``configuration.in_force``; the value read before
        the change until then, ``_read_limit_in_force``). One whose value before was not
        known leaves the limit not known until the boot (``_in_force_unknown``): not
        asked (the charger may give the value set), not checked, and logged once per
        boot (``_AskedLimits.told_unknown``)."""
        keys = (LIST_MAX_KEY, SEND_MAX_KEY, MAX_KEYS_KEY)
        stored = {k.folded_key: k for k in await self.store.find_all(ConfigurationKey, all_of(
            Eq("station_id", station.id), In("folded_key", tuple(map(folded_key, keys)))),
            limit=len(keys))}
        known = {key: known_count(stored.get(folded_key(key)), station.booted_at)
                 for key in (LIST_MAX_KEY, SEND_MAX_KEY)}
        # Changed RebootRequired with the value it replaced not known: the one in force
        # is not known until the boot, and not asked (the charger may give the value
        # set; review s26), so lists are not judged by it meanwhile.
        unknown = [key for key in (LIST_MAX_KEY, SEND_MAX_KEY)
                   if _in_force_unknown(stored.get(folded_key(key)), station.booted_at)]
        memo = self._list_limits.get(station.id)
        if memo is None or memo.booted_at != station.booted_at:
            memo = _AskedLimits(station.booted_at)
        for key in unknown:
            if key not in memo.told_unknown:  # once per boot, not at every list
                memo.told_unknown.add(key)
                self._list_limits[station.id] = memo
                log.warning("%s: its %s in force is not known until its next boot "
                            "(changed RebootRequired, the value before not known): lists "
                            "sent to it are not checked against it", station.cp_id, key)
        ask = [key for key, value in known.items()
               if value is None and key not in memo.answers and key not in unknown]
        if ask and (memo.retry_at is None or self.now() >= memo.retry_at):
            memo.retry_at = None
            # A value read before the boot still says how the charger is likely to answer.
            most_keys = positive_count(getattr(stored.get(folded_key(MAX_KEYS_KEY)),
                                               "value", None))
            alone = most_keys == 1 and len(ask) > 1
            for batch in [[key] for key in ask] if alone else [ask]:
                if not await self._ask_limits(station, batch, memo, audited_as):
                    break
            self._list_limits[station.id] = memo
        said = {key: None if key in unknown else known[key] or memo.answers.get(key)
                for key in known}
        return ListLimits(said[LIST_MAX_KEY], said[SEND_MAX_KEY])

    async def _read_limit_in_force(self, viewer: Viewer, station: Station,
                                   payload: dict[str, Any], timeout: float) -> str | None:
        """Before a ChangeConfiguration of a list limit (``LIST_MAX_KEY``,
        ``SEND_MAX_KEY``) whose value since the charger's boot is not known, reads it
        (a GetConfiguration of that key, recorded): answered RebootRequired, the change
        keeps the value it replaces as the one in force until the boot
        (``value_in_force``), and that must be known then. Asked after the change, many
        chargers give the value set (review s26: a limit lowered 5 -> 2 RebootRequired,
        never read since the boot, was taken as 2 at once and a list of 4 the charger
        still took was refused). The read has ``PRE_READ_SHARE`` of ``timeout`` for
        each of its waits: its time comes off the change's, within the mutation's one
        budget (README: twice the timeout; review r26). Not read while a change of it
        waits for the boot (a read would give the value set, not the one in force), nor
        while the charger is known not to answer a GetConfiguration of its limits
        (``_AskedLimits.retry_at``; review r26: each change waited a timeout for it).
        Returns why the value in force is not known (``None``: it is, or the key is no
        limit): answered RebootRequired, the limit in force is then not known until the
        boot (``list_limits`` does not judge lists by it meanwhile;
        ``_tell_in_force_unknown``)."""
        key = payload.get("key")
        if not isinstance(key, str) or folded_key(key) not in _LIMIT_KEYS:
            return None
        stored = await self.store.find_one(ConfigurationKey, all_of(
            Eq("station_id", station.id), Eq("folded_key", folded_key(key))))
        if stored is not None and stored.awaits_reboot(station.booted_at):
            return None if stored.value_in_force is not None else \
                "not read: a change of it waits for the boot, the value before not known"
        if stored is not None and in_force(stored, station.booted_at) is not None:
            return None
        memo = self._list_limits.get(station.id)
        if memo is not None and memo.booted_at == station.booted_at \
                and memo.retry_at is not None and self.now() < memo.retry_at:
            return "not read: the charger did not answer a GetConfiguration of it lately"
        try:
            outcome = await self.send(SYSTEM, station.cp_id, "GetConfiguration",
                                      {"key": [key]}, audited_as=viewer,
                                      timeout=timeout * PRE_READ_SHARE)
        except DomainError as exc:  # the station went meanwhile: the change says so
            return f"not read: {exc.message}"
        if outcome.error is not None:
            return f"not read: {outcome.error.message}"
        given = [k for k in outcome.result.get("configurationKey") or ()
                 if isinstance(k, dict) and folded_key(str(k.get("key"))) == folded_key(key)
                 and k.get("value") is not None]
        return None if given else "the charger did not give it when read"

    async def _tell_in_force_unknown(self, station: Station, key: str, why: str) -> None:
        """Logs a change of list limit ``key`` answered RebootRequired whose value before
        was not known (``why``, ``_read_limit_in_force``), if it still is not as
        recorded: the limit in force is not known until the charger's next boot."""
        [now] = await self.store.get_many(Station, [station.id])
        stored = await self.store.find_one(ConfigurationKey, all_of(
            Eq("station_id", station.id), Eq("folded_key", folded_key(key))))
        if _in_force_unknown(stored, (now or station).booted_at):
            log.warning("%s: %s changed RebootRequired, the value before not known (%s): "
                        "the one in force is not known until the charger's next boot, and "
                        "local lists are not checked against it", station.cp_id, key, why)

    async def _ask_limits(self, station: Station, keys: list[str], memo: _AskedLimits,
                          audited_as: Viewer | None) -> bool:
        """Asks the charger ``keys`` in one GetConfiguration, keeping its answers in
        ``memo`` (``list_limits``): a value, or none (unknownKey, not a count; a
        NotSupported to one key: it does not give it). Any CALLERROR to several keys,
        NotSupported too (review s26: a charger refusing the two with NotImplemented
        was taken to have no limits until its boot), asks each alone. ``False`` when it
        gave no answer: a timeout or a CALLERROR from the charger is not asked again
        before ``LIST_LIMITS_RETRY_S``; a charger offline, unreachable or busy with
        other commands (it was not asked, or went while asked) is, at the next list."""
        try:
            outcome = await self.send(SYSTEM, station.cp_id, "GetConfiguration",
                                      {"key": keys}, audited_as=audited_as)
        except DomainError:  # the station went meanwhile: the next send says so
            return False
        error = outcome.error
        if isinstance(error, ChargerCallError) and len(keys) > 1:
            # It answered, refusing the request: it may take fewer keys in one
            # (GetConfigurationMaxKeys), so each alone.
            for key in keys:
                if not await self._ask_limits(station, [key], memo, audited_as):
                    return False
            return True
        if error is None or isinstance(error, ChargerNotSupported):
            answered = {folded_key(str(k.get("key"))): positive_count(k.get("value"))
                        for k in outcome.result.get("configurationKey") or ()
                        if isinstance(k, dict)}
            for key in keys:  # not among them: unknownKey, or no GetConfiguration at all
                memo.answers[key] = answered.get(folded_key(key))
            return True
        if not_the_chargers_answer(error):
            return False  # asked again at the next list
        memo.retry_at = self.now() + timedelta(seconds=LIST_LIMITS_RETRY_S)
        return False

    async def _check_list_fits(self, viewer: Viewer, station: Station,
                               payload: dict[str, Any]) -> None:
        """A SendLocalList (an operator's) the charger can take (``list_limits``): at
        most its ``SendLocalListMaxLength`` entries, whatever they are (removals too:
        review s26, 3 removals to a charger taking 2 were sent and answered Failed), and
        a list it holds at most its ``LocalAuthListMaxLength`` tags of (a Full list's
        entries; a Differential's applied to the list as recorded). A charger answers
        Failed to one that does not fit (1.6, 5.15), and the operator was told FAILED
        with no reason (QA s26): refused before sending (``OUT_OF_RANGE``), saying how
        many fit and which of the list's own tags would not (never one the charger holds
        already: another company's, after a handover). A Differential of one tag is
        judged too (review s26: one card added to a full list was sent and answered
        Failed); a single entry always fits one message, and a Full list of one, or a
        Differential of one removal, always fits the list, so those ask nothing. A
        Differential adding no tag (updates of tags held, removals) never grows the list
        and is not refused for ``LocalAuthListMaxLength``; one adding a tag is, whenever
        the list after it would hold more than that, also when it removes others from a
        list already over it (review s26: one removal and one addition passed on a list
        over its limit, answered Failed). A limit the charger does not say is not
        checked."""
        entries = [e for e in payload.get("localAuthorizationList") or ()
                   if isinstance(e, dict)]
        full = payload.get("updateType") == "Full"
        recorded = None if full else await self._refuse_stale_version(station, payload)
        await self._refuse_withdrawn_cards(viewer, entries)
        removals = not full and all(e.get("idTagInfo") is None for e in entries)
        if len(entries) <= 1 and (full or removals):
            return  # fits one message (at least 1 entry), and the list (grows nothing)
        limits = await self.list_limits(station, audited_as=viewer)
        field_name = "localAuthorizationList"
        if limits.per_send is not None and len(entries) > limits.per_send:
            raise ValidationError(
                f"this charger takes at most {limits.per_send} entries in one list (its "
                f"{SEND_MAX_KEY}), not {len(entries)}: send the first {limits.per_send} "
                f"(a FULL list) and the rest in DIFFERENTIAL lists of at most "
                f"{limits.per_send}, each a version above the last",
                field=field_name, code="OUT_OF_RANGE")
        if limits.holds is None or removals:
            return  # removals never grow the list
        after = await self._list_after(station, payload, entries, recorded)
        if after is None:
            return
        tags, held, kept = after
        if len(tags) <= limits.holds or len(tags) == kept:
            return  # fits, or adds no tag (updates of tags it holds, removals)
        # Those added come after the tags it keeps (``_list_after``): the list's own,
        # never a tag the charger held before.
        left_out = tags[max(limits.holds, kept):]
        named = ", ".join(left_out[:NAMED_LEFT_OUT])
        more = f" and {len(left_out) - NAMED_LEFT_OUT} more" \
            if len(left_out) > NAMED_LEFT_OUT else ""
        if full:
            fit = f"the first {limits.holds} fit"
            advice = f"Send at most {limits.holds}"
        else:
            room = max(0, limits.holds - kept)
            gone = f", {held - kept} of them removed by this list" if kept < held else ""
            fit = f"it holds {held} already{gone}, room for {room} more"
            advice = "Remove tags from it first, or send a FULL list"
        raise ValidationError(
            f"this charger's list holds at most {limits.holds} tags (its {LIST_MAX_KEY}); "
            f"this one would leave it holding {len(tags)}: {fit}, {len(left_out)} of "
            f"this list's would not ({named}{more}). {advice}",
            field=field_name, code="OUT_OF_RANGE")

    async def _refuse_stale_version(self, station: Station, payload: dict[str, Any]
                                    ) -> LocalList | None:
        """A Differential list at or below the version the charger last accepted
        (``LocalList.version``, ``Station.localListVersion``): OCPP 1.6 has the charger
        ignore or refuse it (QA s33: v1 after a Full v1 was sent). Withdrawals raise the
        version on their own, so an operator's "last + 1" may be stale: the message
        names the version now. Not known (nothing recorded): not judged. Answers the list
        as recorded (``_list_after``'s)."""
        [recorded] = await self.store.get_many(LocalList, [station.id])
        if recorded is None or int(payload.get("listVersion") or 0) > recorded.version:
            return recorded
        raise ValidationError(
            f"this charger's list is at version {recorded.version} (the last it accepted, "
            f"withdrawals of blocked cards included): a DIFFERENTIAL list needs a version "
            f"above it, such as {recorded.version + 1}", field="listVersion",
            code="OUT_OF_RANGE")

    async def _refuse_withdrawn_cards(self, viewer: Viewer,
                                      entries: list[dict[str, Any]]) -> None:
        """An operator's list giving a card of ours Accepted that we would not accept
        (blocked, expired, its holder deactivated: ``withdrawal.states_of``): its
        withdrawal would follow at once (QA s33: sent, answered ACCEPTED, then withdrawn
        within a second). Refused, as a remote start with such a card is
        (``INVALID_STATE``), every such entry at once; operators do not override it: the
        card's status is changed on the card. A tag of no card here (another network's,
        or a removed card's, whose tag is free again) is the operator's to list.

        Only cards the operator may see (the ``id_tag`` scope: their company's people's)
        are judged: judging any card told them the status of any card in the product,
        many per list (review r33-d). A card they may not see is sent as they list it,
        as a tag of no card here is, and left to the product's own withdrawal."""
        accepted = [(i, str(e.get("idTag")).upper()) for i, e in enumerate(entries)
                    if isinstance(e.get("idTagInfo"), dict)
                    and e["idTagInfo"].get("status") == ACCEPTED]
        if not accepted:
            return
        named = await cards_named(self.store, sorted({tag for _, tag in accepted}),
                                  self.policy.scope(viewer, "id_tag"))
        states = await states_of(self.store, list(named.values()), self.now())
        checks = Checks()
        checks.errors.extend(ValidationError(
            f"card {tag} is {states[named[tag].id].lower()} here: the charger would be "
            f"told to accept a card it is then told to refuse; list it as "
            f"{states[named[tag].id].upper()}, or change the card's status first",
            field=f"localAuthorizationList.{i}.idTagInfo.status", code="INVALID_STATE")
            for i, tag in accepted
            if tag in named and states.get(named[tag].id, ACCEPTED) != ACCEPTED)
        checks.done()

    async def _list_after(self, station: Station, payload: dict[str, Any],
                          entries: list[dict[str, Any]], recorded: LocalList | None
                          ) -> tuple[list[str], int, int] | None:
        """The tags the station's list would hold after ``payload``, in the order they
        would be taken (those it keeps first, then those the list adds, in its order),
        how many it holds before, and how many of those it keeps: a Full list's (0
        before: it replaces them); a Differential applied to the list as recorded
        (``LocalListEntry``), ``None`` when nothing is recorded of it (``recorded``, as
        ``_refuse_stale_version`` read it: not known)."""
        given = [str(e.get("idTag")).upper() for e in entries]
        if payload.get("updateType") == "Full":
            return list(dict.fromkeys(given)), 0, 0
        if recorded is None:
            return None
        held = [e.tag for e in await self.store.find_all(
            LocalListEntry, Eq("station_id", station.id), [Sort("tag")],
            limit=max(1, await self.store.count(LocalListEntry,
                                                Eq("station_id", station.id))))]
        removed = {tag for tag, e in zip(given, entries, strict=True)
                   if e.get("idTagInfo") is None}
        kept = [tag for tag in held if tag not in removed]
        known = set(held)
        added = [tag for tag in dict.fromkeys(given) if tag not in removed and tag not in known]
        return kept + added, len(held), len(kept)

    async def _check_schedule_fits(self, station: Station, payload: dict[str, Any]) -> None:
        """A charging profile's schedule the charger takes, as far as its stored
        configuration knows since its last boot (``in_force``; a ``getConfiguration`` or
        the site's own read of it): at most its ``ChargingScheduleMaxPeriods`` periods
        (``TOO_MANY``) and a ``chargingRateUnit`` its
        ``ChargingScheduleAllowedChargingRateUnit`` names (``UNSUPPORTED``). A charger
        answers Rejected to one it cannot take, and the operator was told
        CHARGER_REJECTED with no reason (QA s27). Not asked when not known: the charger
        judges it then."""
        key = "csChargingProfiles" if "csChargingProfiles" in payload else "chargingProfile"
        profile = payload.get(key)
        schedule = profile.get("chargingSchedule") if isinstance(profile, dict) else None
        if not isinstance(schedule, dict):
            return
        keys = (MAX_PERIODS_KEY, ALLOWED_UNITS_KEY)
        stored = {k.folded_key: in_force(k, station.booted_at) for k in await self.store.find_all(
            ConfigurationKey, all_of(Eq("station_id", station.id),
                                     In("folded_key", tuple(map(folded_key, keys)))),
            limit=len(keys))}
        where = f"{key}.chargingSchedule"
        most = positive_count(stored.get(folded_key(MAX_PERIODS_KEY)))
        periods = schedule.get("chargingSchedulePeriod") or ()
        if most is not None and len(periods) > most:
            raise ValidationError(
                f"this charger takes at most {most} periods in a schedule (its "
                f"{MAX_PERIODS_KEY}), not {len(periods)}",
                field=f"{where}.chargingSchedulePeriod", code="TOO_MANY")
        allowed = stored.get(folded_key(ALLOWED_UNITS_KEY))
        unit = schedule.get("chargingRateUnit")
        if allowed is not None and unit in tuple(ChargingRateUnit):
            units = units_named(allowed)
            # A value naming neither says nothing the charger can be held to.
            if units and ChargingRateUnit(unit) not in units:
                other = "A" if unit == "W" else "W"
                raise ValidationError(
                    f"this charger takes limits in {other} only (its {ALLOWED_UNITS_KEY} "
                    f"is {allowed.strip()}), not {unit}",
                    field=f"{where}.chargingRateUnit", code="UNSUPPORTED")

    async def _check_tx_profile(self, station: Station, payload: dict[str, Any]) -> None:
        """OCPP 1.6 (3.13.4): a TxProfile limits a transaction under way on its
        connector, the one it names if it names one. A charger refuses it otherwise
        (or, read its own way, applies it to the next transaction)."""
        profile = payload.get("csChargingProfiles")
        if not isinstance(profile, dict) or profile.get("chargingProfilePurpose") != "TxProfile":
            return
        connector_id = payload.get("connectorId")
        transaction_id = profile.get("transactionId")
        if transaction_id is not None:
            named = await self.store.find_one(Session, all_of(
                Eq("cp_id", station.cp_id), Eq("station_id", station.id),
                Eq("transaction_id", transaction_id)))
            if named is None:
                raise NotFound("no such transaction on this station",
                               field="csChargingProfiles.transactionId")
            if named.connector_id != connector_id:
                raise ValidationError(f"transaction {transaction_id} is on connector "
                                      f"{named.connector_id}",
                                      field="csChargingProfiles.transactionId",
                                      code="INVALID")
            if named.state is not SessionState.ACTIVE:
                raise ValidationError("the transaction has ended",
                                      field="csChargingProfiles.transactionId",
                                      code="INVALID_STATE")
            return
        active = await self.store.find_one(Session, all_of(
            Eq("cp_id", station.cp_id), Eq("connector_id", connector_id),
            Eq("station_id", station.id), Eq("state", SessionState.ACTIVE)))
        if active is None:
            raise ValidationError("no transaction under way on this connector: a TxProfile "
                                  "is for one (a TxDefaultProfile is for those to come)",
                                  field="connectorId", code="INVALID_STATE")

    # ------------------------------------------------------------- reservations
    async def _new_reservation(self, viewer: Viewer, station: Station, payload: dict[str, Any]
                               ) -> Reservation:
        if viewer.is_admin or viewer.is_operator:
            tag_value = payload.get("idTag")
            if not tag_value:
                raise ValidationError("give the id tag to reserve for", field="idTag",
                                      code="REQUIRED")
        # In the future and at most a day ahead: judged with the other fields
        # (``command_rules``).
        expiry = payload["expiryDate"]
        now = self.now()
        connector_id = int(payload.get("connectorId", 0))
        await self._refuse_clash(viewer, station, connector_id, now)
        await self._refuse_charging_plug(station, connector_id)
        tag = await self.store.find_one(IdTag, Eq("tag", str(payload["idTag"]).upper()))
        if tag is not None:
            # A charger holds the plug for whatever tag it is given: not for a card that
            # may not charge (blocked, expired) or one of a deactivated user. (A tag we do
            # not know may still be in the charger's local list.)
            await self._refuse_unusable_tag(tag, now)
        # In the books of whoever runs the station now: they stay there after a hand-over.
        company_id, station_owner_id = books_of(station)
        reservation = stamp_new(Reservation(
            reservation_id=await self.store.next_sequence("reservation"),
            station_id=station.id, cp_id=station.cp_id, connector_id=connector_id,
            id_tag=str(payload["idTag"]).upper(), expires_at=expiry,
            parent_id_tag=str(payload["parentIdTag"]).upper()
            if payload.get("parentIdTag") else None,
            user_id=tag.user_id if tag else None, company_id=company_id,
            station_owner_id=station_owner_id), viewer)
        payload["reservationId"] = reservation.reservation_id
        # Which of its plugs were free before it: the map hears of those it takes only.
        were_free = await self.plugs_free(station.id, connector_id)
        # Only while the station is in the books it was read in (``still_in_books``), as
        # a session's start and a price are: a handover landing between ``send``'s read
        # and this write booked the reservation to the company that had left the
        # station, told its webhooks and feeds of it, and let its operator reserve a
        # charger they no longer ran (QA s27). Refused (CHANGED), ``send`` reads the
        # station again: the former company's operator no longer sees it (NOT_FOUND), a
        # driver's reservation is the new company's.
        await self.commit(viewer, [(Insert(reservation), None)],
                          guards=[still_in_books(station)])
        try:
            # Checked again with ours stored: two requests (here or on another instance)
            # can both pass the first check, but of two stored clashing reservations each
            # request sees at least the other's, so at most one is kept (or, in a dead
            # heat, neither: the caller may retry).
            await self._refuse_clash(viewer, station, connector_id, now, own=reservation.id)
        except Conflict:
            await self.commit(viewer, [(Delete(reservation), reservation)])
            raise
        # It holds its plug from now, answered or not: the live map hears of it.
        await self.plugs_held(owned_by(station), connector_id, were_free)
        return reservation

    async def _refuse_charging_plug(self, station: Station, connector_id: int) -> None:
        """A reservation of a plug our records show charging a session (ACTIVE, whatever
        its last report says, as ``_refuse_occupied`` judges a remote start's), or of
        "any" connector (0) on a station whose every known connector is: refused
        ``IN_USE`` before anything is stored or sent. It was sent and left to the
        charger's Occupied, or, at a charger that takes it (some hold a reservation for
        the plug's next session), the driver was told ACCEPTED for a plug in use, held
        for them nowhere else. A session whose stop was lost keeps its plug refused until
        staff end it (``endSession``) or the charger's reboot closes it, as for a remote
        start; a session starting after this check is the charger's to refuse with
        Occupied (the reservation is REJECTED)."""
        charging = {s.connector_id for s in await self.store.find_all(Session, all_of(
            Eq("station_id", station.id), Eq("state", SessionState.ACTIVE)),
            limit=MAX_CONNECTOR_ID)}
        if not charging:
            return
        if connector_id:
            if connector_id in charging:
                raise Conflict("the connector is charging a session: reserve another one, "
                               "or this one once the session has ended",
                               field="connectorId", code="IN_USE")
            return
        plugs = {p.connector_id for p in await self.store.find_all(
            Connector, Eq("station_id", station.id), limit=MAX_CONNECTOR_ID)}
        if plugs and plugs <= charging:
            raise Conflict("every connector of this station is charging a session: "
                           "nothing is free to reserve", field="connectorId",
                           code="IN_USE")

    async def _refuse_unusable_tag(self, tag: IdTag, now: datetime) -> None:
        status = tag.status_at(now)
        if status is not IdTagStatus.ACCEPTED:
            raise ValidationError(f"this id tag is {status.value.lower()}", field="idTag",
                                  code="INVALID_STATE")
        [owner] = await self.store.get_many(User, [tag.user_id])
        if owner is None or not owner.active:
            raise ValidationError("this id tag's user is deactivated", field="idTag",
                                  code="INVALID_STATE")

    async def ask_to_boot(self, station: Station) -> None:
        """Asks the charger of a station just accepted to boot again (TriggerMessage
        BootNotification, as the system), so it learns now. Nothing is sent to one not
        connected: it boots on connecting."""
        await self._trigger(station, "BootNotification", "accepted, was not asked to "
                            "boot again")

    async def ask_for_status(self, station: Station) -> None:
        """Asks the charger of ``station`` for every connector's status (TriggerMessage
        StatusNotification, no connectorId, as the system): one connecting with sessions
        a restore brought back open (``ChargingService.on_restored_connect``) reports
        none by itself, and a free connector's report is what closes them."""
        await self._trigger(station, "StatusNotification", "was not asked for its status")

    async def _trigger(self, station: Station, requested: str, failed: str) -> None:
        """Sends TriggerMessage ``requested`` (as the system) to the charger of
        ``station``, as it is stored now, when it is connected and may be sent it; an
        error is logged (``failed``), not raised: what asked stands regardless."""
        [now] = await self.store.get_many(Station, [station.id])
        if now is None or not now.online or now.registration is not Registration.ACCEPTED:
            return
        if now.charger_registration is Registration.REJECTED:
            # OCPP 1.6 (4.2): a charger told Rejected answers nothing, and is sent
            # nothing (``_refuse_unregistered``); it boots again within its boot
            # interval (at most ``charging.RETRY_BOOT_S``) and is told Accepted then.
            return
        outcome = await self.send(SYSTEM, now.cp_id, "TriggerMessage",
                                  {"requestedMessage": requested})
        if outcome.error is not None:
            log.info("charger %s %s: %s", now.cp_id, failed, outcome.error.message)

    async def _refuse_clash(self, viewer: Viewer, station: Station, connector_id: int,
                            now: datetime, own: str | None = None) -> None:
        """Raises the Conflict of a reservation other than ``own`` that this one would
        overlap, or (for a driver) of one the driver holds already."""
        live = live_reservations(now)

        async def other(where: Filter) -> bool:
            found = await self.store.find_all(Reservation, all_of(where, live), limit=2)
            return any(r.id != own for r in found)

        # One reservation per connector at a time; connector 0 (any connector) holds
        # the station's first free one, so it overlaps with everything on the station.
        if await other(all_of(Eq("station_id", station.id), ALL if connector_id == 0
                              else In("connector_id", (connector_id, 0)))):
            raise Conflict("the connector is reserved already", field="connectorId",
                           code="IN_USE")
        if viewer.is_driver and await other(all_of(Eq("user_id", viewer.user_id),
                                                   Eq("created_by", viewer.actor))):
            # One at a time: a driver holding connectors on many stations keeps everyone
            # else from charging there. Only those they made: one an operator made for
            # their card (any company's, on its own charger) is that operator's doing,
            # and must not keep them from reserving (QA s23).
            raise Conflict("you hold a reservation already: cancel it first",
                           code="LIMIT_REACHED")

    async def _reservation(self, viewer: Viewer, station: Station, reservation_id: Any
                           ) -> Reservation:
        reservation = await self.store.find_one(Reservation, all_of(
            self.policy.scope(viewer, "reservation"), Eq("station_id", station.id),
            Eq("reservation_id", reservation_id)))
        if reservation is None:
            raise NotFound("no such reservation", field="reservationId")
        state = reservation.state_at(self.now())
        if state not in LIVE_RESERVATION_STATES:
            raise ValidationError(f"the reservation is {state.value.lower()}"
                                  if state is not ReservationState.EXPIRED
                                  else "the reservation has expired",
                                  field="reservationId", code="INVALID_STATE")
        return reservation

    async def send_owed_cancels(self, station_id: str) -> None:
        """Sends the station's charger, come back (connected, or its boot accepted), the
        CancelReservation of each reservation cancelled while it was offline
        (``Reservation.cancel_owed_since``) and not expired yet (an expired one the
        charger frees by itself), as the service, audited. An
        answer (Accepted, or Rejected: not held) settles it; none, or a CALLERROR, leaves
        it owed for the charger's next return or the next ``sweep_owed_cancels``. One
        run at a time per station in this process: the connection and the boot that
        follows it both ask. The owed ones are read as such (``owed_cancels``), a page
        at a time (review s25: the station's 100 first cancelled ones were read and the
        owed kept of them, so a busy station's ordinary cancels hid an owed one). Each
        sent only if its claim wins (``_claim_cancel``): one another send has on its way
        is left to it."""
        async with self._owing.one_at_a_time(station_id):
            [station] = await self.store.get_many(Station, [station_id])
            # Sent nothing (OCPP 1.6, 4.2) if told Rejected at its last boot: what it
            # acts on (``_refuse_unregistered``), not what its station was made since.
            if station is None or (station.charger_registration or station.registration
                                   ) is Registration.REJECTED:
                return
            async for owed in pages(self.store, Reservation, all_of(
                    Eq("station_id", station_id), owed_cancels(self.now())), OWED_PAGE):
                for reservation in owed:
                    claimed = await self._claim_cancel(reservation)
                    if claimed is None:
                        continue  # another send has it on its way
                    outcome = CommandOutcome(command_id=new_id(),
                                             action="CancelReservation", station=station,
                                             reservation=claimed,
                                             requested_by=SYSTEM.actor)
                    await self._carry(SYSTEM, outcome, {
                        "reservationId": reservation.reservation_id})
                    if outcome.error is not None:
                        log.info("%s: the cancel of reservation %d owed since it was "
                                 "offline was not delivered: %s", station.cp_id,
                                 reservation.reservation_id, outcome.error.message)
                        await self._release_cancel(claimed)

    async def _claim_cancel(self, reservation: Reservation) -> Reservation | None:
        """Claims the send of ``reservation``'s owed cancel (``Reservation.
        cancel_sending_since``: now), unless another send claimed it within
        ``CANCEL_CLAIM_S`` (by either clock) and has not let it go: the reservation as
        claimed, else None (left to that send). Guarded on the claim as read, so of two
        sends reading it at once one claims it. Every send of an owed cancel claims it,
        whoever asked: a withdrawal's relayed through another instance, the holder's
        sweep (``sweep_owed_cancels``), its expiry sweep's, the charger's return (review
        r28-leftan: the holder's sweeps sent every cancel owed at their stations, one
        another instance was relaying that moment too, and the charger's answer to the
        second was Rejected, recorded as a failed cancel). One process's sends to a
        station never overlap (``_owing``), so a claim read is another process's or one
        let go, or left by a process that died mid-send: that one lapses."""
        now, since = self.now(), reservation.cancel_sending_since
        if since is not None and abs(now - since) < timedelta(seconds=CANCEL_CLAIM_S):
            return None
        claim = patch(reservation, SYSTEM, only_if=("cancel_sending_since", since),
                      required=True, cancel_sending_since=now)
        try:
            await self.store.write([claim], [])
        except Conflict:
            return None  # another send claimed it first
        return cast(Reservation, claim.record)

    async def _release_cancel(self, claimed: Reservation) -> None:
        """Lets go of a send's claim (``_claim_cancel``) once its cancel was not
        delivered (no answer, the charger gone): the next send (the charger's return,
        the holder's sweep) need not wait for it to lapse. Best effort: it lapses."""
        try:
            await self.store.write([patch(
                claimed, SYSTEM, only_if=("cancel_sending_since",
                                          claimed.cancel_sending_since),
                cancel_sending_since=None)], [])
        except Exception:
            log.exception("%s: the claim of reservation %d's cancel was not let go (it "
                          "lapses in %d s)", claimed.cp_id, claimed.reservation_id,
                          CANCEL_CLAIM_S)

    async def cancel_owed(self, reservations: list[Reservation], actor: Viewer = SYSTEM
                          ) -> list[Reservation]:
        """Cancels ``reservations`` (read live) here, the CancelReservation owed to each
        one's charger (``Reservation.cancel_owed_since``): sent by the instance holding
        it (``send_owed_cancels``, at once by the caller where that is this one, else
        within a minute by its ``sweep_owed_cancels``, or when the charger comes back;
        a withdrawal's caller sends it at once through the relay: ``Withdrawal``'s
        ``_cancel_held``).
        For what every instance does at once (the card-expiry sweep): each is cancelled
        once, guarded on its state (another instance's write first, or the charger's
        StartTransaction, leaves it as they made it), audited and announced by the
        instance whose write landed (review s26: every instance sent its charger the
        cancel, the second answered Rejected and recorded as a failed cancel). Returns
        those this call cancelled (its write landed)."""
        if not reservations:
            return []
        cancelled: list[Reservation] = []
        stations = {st.id: st for st in await self.store.get_many(
            Station, sorted({r.station_id for r in reservations})) if st is not None}
        for reservation in reservations:
            move = patch(reservation, actor, only_if=("state", reservation.state),
                         required=True, state=ReservationState.CANCELLED,
                         cancel_owed_since=self.now())
            try:
                await self.commit(actor, [(move, reservation)])
            except Conflict:
                continue  # cancelled by another instance, or used, meanwhile
            cancelled.append(cast(Reservation, move.record))
            await self.publish(reservation_changed(
                cast(Reservation, move.record), stations.get(reservation.station_id)))
        return cancelled

    async def sweep_owed_cancels(self) -> int:
        """Sends the owed cancels (``send_owed_cancels``) of every station that has one
        and whose charger is connected to this instance (``ChargerGateway.is_connected``),
        as the housekeeping does on every instance (``OWED_CANCEL_SWEEP_S``); returns how
        many stations it sent to. The backstop of the sends at connection and boot: a
        cancel found its charger offline and wrote its owed mark just after the charger
        came back (no boot: a network blip), whose connection's send had found nothing
        owed yet (review s25: the charger, online, held the plug until the expiry while
        our records showed it free); and a withdrawal's cancel that could not reach an
        online charger (``Withdrawal.cancel_reservations``).

        Each instance sends to its own chargers only, directly: every charger is sent
        each owed cancel once, by the one instance that holds it, whether or not the
        bus between instances works (review s25: every instance sent every station's
        through the relay, so each charger got one per instance). Up to
        ``OWED_SWEEP_AT_ONCE`` chargers at a time, so one that does not answer (each
        cancel waits up to the command timeout) holds up no other (review s25: one
        station at a time, a silent charger stalled the sweep)."""
        gateway = self.gateway
        if gateway is None:
            return 0
        stations: set[str] = set()
        async for owed in pages(self.store, Reservation, owed_cancels(self.now()),
                                OWED_PAGE):
            stations.update(r.station_id for r in owed)
        here = [s.id for s in await self.store.get_many(Station, sorted(stations))
                if s is not None and gateway.is_connected(s.cp_id)]
        room = asyncio.Semaphore(OWED_SWEEP_AT_ONCE)

        async def send(station_id: str) -> None:
            async with room:
                try:
                    await self.send_owed_cancels(station_id)
                except Exception:  # one station's failure is no other's
                    log.exception("the owed cancels of station %s were not sent",
                                  station_id)

        await asyncio.gather(*(send(station_id) for station_id in here))
        return len(here)

    async def expire_reservations(self, limit: int = 500) -> int:
        """Stores EXPIRED on live reservations past their expiry (the charger frees the
        connector by itself) and announces each; returns how many. Several instances may
        sweep at once: each reservation moves once, and only its mover announces it."""
        now = self.now()
        due = await self.store.find_all(Reservation, all_of(
            In("state", LIVE_RESERVATION_STATES),
            Range("expires_at", lte=now)), limit=limit)
        stations = {st.id: st for st in await self.store.get_many(
            Station, list({r.station_id for r in due})) if st is not None}
        expired = 0
        for reservation in due:
            move = patch(reservation, SYSTEM, only_if=("state", reservation.state),
                         required=True, state=ReservationState.EXPIRED)  # with its stamps
            updated = cast(Reservation, move.record)
            try:
                await self.commit(SYSTEM, [(move, reservation)])
            except Conflict:
                continue  # another instance, or the charger's StartTransaction, was first
            expired += 1
            await self.publish(reservation_changed(
                updated, stations.get(reservation.station_id)))
        return expired

    # ------------------------------------------------------------- what chargers took
    async def _announce_requested(self, viewer: Viewer, kind: str, sent: Station,
                                  wrote: Any, rollout: dict[str, Any], answered_at: datetime,
                                  status: str = FIRMWARE_REQUESTED) -> None:
        """After a rollout (or upload) was recorded: announced as ``Requested`` once that
        status is what the station holds for it (``_holds``: a write that came after it,
        a connector-0 StatusNotification say, does not make it any less ours). It did
        not land if the station was written since it was read before sending
        (``sent``). Without a report since (another write moved the station, or one
        cleared ``diagnostics_previous_uploading``), ``Requested`` is decided again on
        the station as stored. With one (the charger's notification raced the answer
        here), that report stands and the rollout is recorded beside it, onto the
        station's version read (another report since: read and decided again), unless
        it is no news of the request (``keeps_requested``: a firmware Idle before the
        download is due, the end of the upload before): then ``Requested`` is written
        over it, as it would have been had it come first. ``status``: what a rollout
        reads (``_awaiting``: ``Unanswered`` for one its charger did not answer)."""
        first = requested = cast(Station, wrote)
        field = "firmware_status" if kind == "FIRMWARE" else "diagnostics_status"
        asked = "firmware_requested_at" if kind == "FIRMWARE" else "diagnostics_requested_at"
        rounds = 0
        while not await self.landed([requested]):
            rounds += 1
            if rounds > ANNOUNCE_ROUNDS:
                # Other writes (a charger's connector-0 reports) kept landing between
                # each read and write (review s23: the loop had no end, and the command
                # never answered): the charger's next report says where it stands.
                log.warning("%s: the %s request could not be recorded: the station "
                            "kept changing", sent.cp_id, kind.lower())
                return
            [current] = await self.store.get_many(Station, [requested.id])
            if current is None:
                return
            if _holds(current, kind, rollout):
                requested = current  # ours landed; a write since moved the stamps only
                break
            reported = getattr(current, field)
            if getattr(current, f"{field}_at") == getattr(sent, f"{field}_at"):
                # No report since sending: decided again on what is stored now, so a
                # flag a late end cleared meanwhile is not set again from ``sent``.
                again = _requested(current, viewer, kind, rollout, answered_at, status)
            elif reported is not None and keeps_requested(first, kind, reported,
                                                          self.now()):
                again = _requested(current, viewer, kind, rollout, self.now(), status)
            else:
                # The report stands; the request is recorded beside it, unless a newer
                # request was recorded meanwhile (review s23: this older answer wrote
                # its location over the newer one's, which the charger acts on).
                if getattr(current, asked) != getattr(sent, asked):
                    return
                # Only onto the version read, like ``Requested``: guarded on the
                # request time alone it landed on a report written since, its stamps
                # older than that report's and its entry's images of the station
                # before it (review r2: the audit chain broke, ``updated_at`` went
                # back). Read and decided again when another write came between.
                beside = patch(current, viewer, **rollout,
                               only_if=("updated_at", current.updated_at))
                await self.commit(viewer, [(beside, current)])
                if await self.landed([beside.record]):
                    return
                continue
            await self.commit(viewer, [(again, current)])
            requested = cast(Station, again.record)
        if kind == "FIRMWARE":
            await self.publish(maintenance_event(requested, kind, status,
                                                 cast(datetime, requested.firmware_status_at)))
        else:
            await self.publish(maintenance_event(
                requested, kind, DIAGNOSTICS_REQUESTED,
                cast(datetime, requested.diagnostics_status_at)))

    async def _record_configuration(self, viewer: Viewer, outcome: CommandOutcome,
                                    payload: dict[str, Any], now: datetime) -> None:
        """Keeps what a GetConfiguration answer or a ChangeConfiguration the charger
        took says of its configuration (``services.configuration``), before the answer
        is announced. Best effort: the charger's answer stands whatever the store says,
        and the next read records it."""
        if outcome.error is not None or outcome.action not in (
                "GetConfiguration", "ChangeConfiguration"):
            return
        try:
            if outcome.action == "GetConfiguration":
                await record_read(self.store, outcome.station, outcome.result, viewer, now,
                                  whole=not payload.get("key"))
            else:
                await record_change(self.store, outcome.station, str(payload["key"]),
                                    str(payload["value"]), outcome.status or "", viewer, now,
                                    sent_at=outcome.sent_at)
        except DomainError as exc:
            log.warning("%s: the configuration the charger answered %s with was not "
                        "recorded: %s", outcome.station.cp_id, outcome.action, exc.message)

    # ------------------------------------------------------------- bookkeeping
    async def _audit_sent(self, viewer: Viewer, outcome: CommandOutcome,
                          payload: dict[str, Any]) -> None:
        """The audit entry written before the charger may act on the command: a process
        killed while the charger held it left no trace of who started the session it then
        began (QA s17); the answer is a second entry, ``stage`` ANSWERED. When it cannot
        be written, nothing is sent, and what the command stored (a PENDING reservation, a
        pending start) is settled as not sent rather than left holding the plug (review
        s17)."""
        marked_at = self.now()
        marked = self._cancel_marked(outcome, marked_at)
        try:
            await self.commit(viewer, [], extra_audit=[
                self._audit_entry(viewer, outcome, payload, "SENT")], unaudited=marked)
            if marked:
                outcome.cancel_marked = marked_at
        except BaseException as exc:
            if outcome.reservation is not None or outcome.pending is not None:
                # Not sent, so a definite no (the reservation removed), not an
                # unanswered one.
                outcome.unsent = True
                outcome.error = exc if isinstance(exc, DomainError) \
                    else ChargerOffline(f"{outcome.action} was not sent")
                try:
                    await asyncio.shield(self._after(viewer, outcome, payload))
                except Exception:
                    # The store that refused the entry likely refuses this too: the
                    # reservation (or start) then holds its plug until it expires; say so.
                    if outcome.reservation is not None:
                        log.exception("%s: reservation %s was not sent and could not be "
                                      "removed: it stays PENDING until it "
                                      "expires at %s", outcome.station.cp_id,
                                      outcome.reservation.id,
                                      outcome.reservation.expires_at)
                    elif outcome.pending is not None:
                        log.exception("%s: a remote start was not sent and could not be "
                                      "forgotten: it holds card %s until %s",
                                      outcome.station.cp_id, outcome.pending.id_tag,
                                      outcome.pending.expires_at)
            raise

    @staticmethod
    def _cancel_marked(outcome: CommandOutcome, at: datetime) -> list[Update]:
        """A live reservation's cancel, marked on it as being sent
        (``cancel_sending_since``: ``at``) in its SENT entry's write, until its answer is
        recorded (``_cancel_unmarked``): the charger reports the plug Available as it
        answers, and that report is left to the reservation's end to announce while the
        mark is there (``ChargingService._left_to_reservation_end``, on whichever
        instance the charger is connected to; review r32-e: held back whenever a
        reservation was live, a charger that dropped one on its own left the map
        showing it RESERVED). An owed cancel's reservation is cancelled already and
        claimed as it is sent (``_claim_cancel``). The field alone, unstamped: nobody's
        change of the reservation (its answer's update is told landed by its stamps,
        ``landed``)."""
        reservation = outcome.reservation
        if outcome.action != "CancelReservation" or reservation is None \
                or reservation.state not in LIVE_RESERVATION_STATES:
            return []
        return [Update(replace(reservation, cancel_sending_since=at),
                       _SENDING, only_if=("state", reservation.state))]

    @staticmethod
    def _cancel_unmarked(outcome: CommandOutcome) -> list[Update]:
        """``_cancel_marked``'s mark taken away, only if still its own."""
        if outcome.cancel_marked is None or outcome.reservation is None:
            return []
        return [Update(replace(outcome.reservation, cancel_sending_since=None),
                       _SENDING, only_if=("cancel_sending_since", outcome.cancel_marked))]

    @staticmethod
    def _audit_entry(viewer: Viewer, outcome: CommandOutcome, payload: dict[str, Any],
                     stage: str) -> AuditEntry:
        """The audit log's record of a command: ``SENT`` before the charger has it,
        ``ANSWERED`` with its answer (or why there is none)."""
        company_id, station_owner_id = books_of(outcome.station)  # the books it is in
        # A DataTransfer's answer carries the charger's own data, what support asks the
        # entry for (QA s33: only its status was kept); bounded as the request's.
        answer = {"answer": with_data_bounded(outcome.result)} \
            if stage == "ANSWERED" and outcome.action == "DataTransfer" \
            and outcome.result else {}
        return AuditEntry(
            entity="station", entity_id=outcome.station.id, action=AuditAction.COMMAND,
            command=outcome.action, command_id=outcome.command_id, actor=viewer.actor,
            created_by=viewer.actor,
            updated_by=viewer.actor,
            company_id=company_id, station_owner_id=station_owner_id,
            # A driver's own command (a remote start or stop, a reservation or its
            # cancel: all a driver may send) is about them, so they read it, by its
            # ``commandId`` too (review r33-d: the entries were no driver's, and a
            # driver's lookup was always empty). Its images hold what they sent and were
            # answered, nothing else of the charger.
            holder_id=viewer.user_id if viewer.is_driver else None,
            after={"command": outcome.action, "commandId": outcome.command_id,
                   "stage": stage, "request": _audited(outcome.action, payload),
                   "status": outcome.status,
                   "error": outcome.error.code if outcome.error else None, **answer},
        )

    async def _cancel_unreached(self, outcome: CommandOutcome) -> None:
        """A CancelReservation that did not reach its charger (``ChargerOffline``) while
        the station is recorded online (read now) was not kept from an offline charger:
        the charger is connected (here, its socket's close not recorded yet, or to
        another instance), and the relay could not carry the command (Redis out of
        reach, this instance stopping). The reservation is not cancelled here
        (``ChargerUnreachable``: no cancel is owed, the driver tries again), as for
        an unclaimed relay. Review s25: it was cancelled here and the cancel owed "for
        the charger's return", which a charger that never left does not make: it held
        the plug until the expiry while our records showed it free. A withdrawal's
        (``owe_cancel``) is cancelled here and owed all the same: the instance holding
        the charger sends it (``sweep_owed_cancels``), over no bus."""
        error = outcome.error
        if outcome.action != "CancelReservation" or outcome.reservation is None \
                or not isinstance(error, ChargerOffline):
            return
        if not isinstance(error, ChargerUnreachable):
            [now] = await self.store.get_many(Station, [outcome.station.id])
            if now is None or not now.online:
                return
        reason = error.message.rstrip(".")
        if outcome.owe_cancel:
            outcome.error = ChargerUnreachable(
                f"{outcome.station.cp_id} could not be reached ({reason}): the "
                "reservation is cancelled here, and the cancel is sent by the instance "
                "the charger is connected to within a minute", field=error.field or "cpId")
        elif not isinstance(error, ChargerUnreachable):
            outcome.error = ChargerUnreachable(
                f"{outcome.station.cp_id} could not be reached ({reason}): the reservation "
                "is not cancelled; try again in a moment", field=error.field or "cpId")

    async def _interval_remembered(self, viewer: Viewer, station: Station,
                                   interval: int | None) -> list[tuple[Change, Any]]:
        """The HeartbeatInterval the charger took (``_interval_taken``) as its station's,
        written onto the station as stored now and only onto that version (``required``:
        a write between this read and the commit runs ``_after``'s write again,
        ``retried``). Not onto the copy read when the command was sent: the round trip
        takes up to the command timeout, and an edit or a charger's report landing
        meanwhile was audited as undone by this update, its before and after images
        that older copy (QA s28 audit2: a rename during a ChangeConfiguration read in
        the audit log as renamed back). Nothing when the station is gone or has it."""
        if interval is None:
            return []
        [now] = await self.store.get_many(Station, [station.id])
        if now is None or now.heartbeat_interval == interval:
            return []
        return [(patch(now, viewer, only_if=("updated_at", now.updated_at), required=True,
                       heartbeat_interval=interval), now)]

    async def _reservation_answered(self, viewer: Viewer, outcome: CommandOutcome
                                    ) -> list[tuple[Change, Any]]:
        """The change a ReserveNow's or CancelReservation's answer makes to its
        reservation, as the reservation is now (read again: a cancel sent while the
        ReserveNow was unanswered finds it ACTIVE, which that answer made it; QA s21),
        written only onto that state (``required``: another write between this read and
        the commit runs it again, ``retried``; review s21: the cancel's guard failed
        silently and left it ACTIVE)."""
        sent = outcome.reservation
        if sent is None:
            return []
        [stored] = await self.store.get_many(Reservation, [sent.id])
        reservation = stored or sent
        answered = _answered(outcome)
        if sent.state is ReservationState.CANCELLED:
            # A cancel owed to the charger (``send_owed_cancels``): done once it answered
            # (Accepted, or Rejected: it holds no such reservation any more).
            if not answered or reservation.cancel_owed_since is None:
                return []
            return [(patch(reservation, viewer, required=True,
                           only_if=("cancel_owed_since", reservation.cancel_owed_since),
                           cancel_owed_since=None), reservation)]
        owed: datetime | None = None
        if outcome.action == "ReserveNow" and _undelivered(outcome):
            # Never delivered: nothing stays of it, as of a remote start (README Errors:
            # nothing is written while an error is reported; QA s31: it stayed REJECTED,
            # in the driver's reservations, though the charger never heard of it). Its
            # row was written before the send for what a reservation sent needs (the
            # clash check beside it, the charger's StartTransaction naming it before its
            # answer is handled, a timeout leaving it PENDING): removed, audited, in the
            # commit of the command's ANSWERED entry, which tells why. Only as it was
            # sent: a removal or a cancel that ended it meanwhile keeps its end.
            if stored is None or stored.state is not sent.state:
                return []
            return [(Delete(stored, only_if=("state", stored.state)), stored)]
        if outcome.action == "ReserveNow":
            error = outcome.error
            # No answer, or one we could not read: the charger may hold it. It stays
            # PENDING (holding the connector until it expires; it can be cancelled)
            # rather than be called REJECTED while the charger keeps the plug. A
            # CALLERROR (say NotSupported) is a definite no, like Rejected: REJECTED is
            # the charger's own no (one never delivered is removed, above).
            uncertain = isinstance(error, ChargerTimeout) or type(error) is ChargerError
            state = ReservationState.ACTIVE if error is None \
                else reservation.state if uncertain else ReservationState.REJECTED
        else:
            # Done, or the charger's word that it holds no such reservation (Rejected:
            # "not found"): either way it is over. A CALLERROR ("InternalError: try
            # again") says nothing about the reservation, and without an answer the
            # charger may still hold it: both leave it as it was.
            # A charger offline (the cancel never reached it, or its socket closed under
            # it) holds the plug until it hears of the cancel: it is cancelled here, for
            # the driver and the map, and the cancel is owed to the charger, sent when it
            # comes back (``send_owed_cancels``; QA s25: nothing but the expiry or the
            # charger's return ended it, the driver kept from reserving elsewhere). Only
            # a charger recorded offline: one online that could not be reached is
            # ``ChargerUnreachable`` (``_cancel_unreached``), its reservation left live,
            # unless the cancel must end it (``owe_cancel``, a withdrawal's): owed then
            # too, the instance holding the charger sends it (``sweep_owed_cancels``).
            # So is a cancel whose way to the charger went after it may have reached it
            # (``ChargerLost``: its socket closed, the holding instance gone): the
            # operator asked to cancel, and a cancel sent again is harmless
            # (CancelReservation is idempotent on the charger). Review s32: since s31
            # told it from "never sent" it left the reservation live, no cancel owed.
            offline = isinstance(outcome.error, ChargerOffline) and (
                outcome.owe_cancel or not isinstance(outcome.error, ChargerUnreachable))
            owe = offline or isinstance(outcome.error, ChargerLost)
            state = ReservationState.CANCELLED if answered or owe else reservation.state
            owed = (outcome.answered_at or self.now()) if owe else None
        # Only from the state it was sent in (ReserveNow: PENDING) or, for a cancel, from
        # a live one: a charger that used the reservation meanwhile (StartTransaction:
        # USED), or a removal that cancelled it, is not overwritten by this answer.
        sent_in = (sent.state,) if outcome.action == "ReserveNow" else LIVE_RESERVATION_STATES
        if state is reservation.state or reservation.state not in sent_in:
            return []
        more = {"cancel_owed_since": owed} if owed is not None else {}
        update = patch(reservation, viewer, only_if=("state", reservation.state),
                       required=True, state=state, **more)
        return [(update, reservation)]

    async def _after(self, viewer: Viewer, outcome: CommandOutcome, payload: dict[str, Any]
                     ) -> None:
        station = outcome.station
        await self._cancel_unreached(outcome)
        # A command never sent (kept from a charger known offline, ``_carry``; its SENT
        # entry not written, ``_audit_sent``) has this one entry, saying so.
        stage = "NOT_SENT" if outcome.unsent else "ANSWERED"
        audit = self._audit_entry(viewer, outcome, payload, stage)
        interval = _interval_taken(outcome, payload)
        answered_at = outcome.answered_at = self.now()
        rollout = _rollout(outcome, payload, answered_at)
        # The rollout is decided on the station as read when the command was sent
        # (``_requested``: skipped when a report came since); the interval is written
        # onto the station as it stands (``_interval_remembered``).
        remembered = [(_requested(station, viewer, _kind(outcome.action), rollout,
                                  answered_at, _awaiting(outcome)), station)] \
            if rollout else []

        # A remote start the charger refused (or never got) holds its card and plug no
        # longer; one accepted, or unanswered (it may have taken it), holds them until
        # its StartTransaction or its window's end. One accepted replaces the starts it
        # superseded (``_hold_start``): the charger took it, so it carries them out no
        # more; refused or unanswered, they stay live for their StartTransaction. One
        # unanswered (or unreadable) is marked so, for what its hold says (QA s33).
        pending = outcome.pending
        freed: list[Change] = []
        if pending is not None:
            if not _may_start(outcome.error):
                freed.append(settle(pending, viewer, answered_at))
            elif outcome.error is not None:
                freed.append(unknown_outcome(pending, viewer))
            else:
                freed += [settle(p, viewer, answered_at) for p in outcome.superseded]

        #: The station's own changes as committed: the interval's is read on each try.
        station_changes: list[tuple[Change, Any]] = list(remembered)

        async def write(reservation: bool = True) -> list[tuple[Change, Any]]:
            changes = await self._reservation_answered(viewer, outcome) if reservation \
                else []
            taken = await self._interval_remembered(viewer, station, interval)
            await self.commit(viewer, [*changes, *taken, *remembered], extra_audit=[audit],
                              unaudited=[*freed, *self._cancel_unmarked(outcome)])
            station_changes[:] = [*taken, *remembered]
            return changes

        try:
            changes = await retried(write)
        except Conflict:
            # The reservation changed under each of three tries (a charger using it and
            # a removal racing the answer): it is left as those made it, and the
            # answer is still recorded.
            log.warning("%s: the answer to %s found what it changes changing under it "
                        "three times; left as it is", station.cp_id, outcome.action)
            changes = await retried(lambda: write(reservation=False))
        if station_changes:
            # Every instance drops its cached copy: the one holding the charger answers
            # its next boot from it, and its firmware and diagnostics reports name the
            # new rollout or upload.
            await self.publish(StationChanged(**owned_by(station)))
        if rollout:
            await self._announce_requested(viewer, _kind(outcome.action), station,
                                           remembered[-1][0].record, rollout, answered_at,
                                           _awaiting(outcome))
        if outcome.action == "SendLocalList" and outcome.error is None:
            # What the charger's list holds now: a blocked card is withdrawn from the
            # lists that accept it (``Withdrawal``).
            wanting = await record_local_list(self.store, station, payload, viewer,
                                              ours=outcome.own_list, now=self.now())
            if wanting and self.on_list_wanting is not None:
                self.on_list_wanting(station.id)
        elif outcome.action == "SendLocalList" and (
                isinstance(outcome.error, ChargerTimeout)
                or type(outcome.error) is ChargerError):
            # Sent and not answered (or an answer we could not read): the charger may
            # hold it. Pending until its version tells (review s26).
            await hold_pending(self.store, station, payload, viewer, ours=outcome.own_list,
                               sent_at=outcome.sent_at or answered_at)
        elif outcome.action == "GetLocalListVersion" and outcome.error is None \
                and isinstance(outcome.result.get("listVersion"), int):
            # The charger's version settles a list it did not answer (``hold_pending``),
            # whoever asked, before anything is judged against the record.
            wanting = await settle_pending(self.store, station,
                                           outcome.result["listVersion"], viewer,
                                           now=self.now())
            # Asked by a push (``own_list``), which sends what is wanted next itself: a
            # push of its own would follow each (a charger answering the version and
            # never a list would be sent lists without end).
            if wanting and not outcome.own_list and self.on_list_wanting is not None:
                self.on_list_wanting(station.id)
        await self._record_configuration(viewer, outcome, payload, answered_at)
        if changes and isinstance(changes[0][0], Delete):
            # A reservation never delivered, removed: nobody was told of it but the live
            # map, whose plugs it held (``_new_reservation``).
            gone = cast(Reservation, changes[0][0].record)
            outcome.reservation = None
            await self.plugs_held(owned_by(station), gone.connector_id)
        elif changes:
            wrote = cast(Reservation, changes[0][0].record)
            landed = await self.landed([wrote])
            for now in landed:  # announced if its guard held and its state moved (an
                # owed cancel delivered changes nothing anyone is told of)
                if outcome.reservation is None or now.state is not outcome.reservation.state:
                    await self.publish(reservation_changed(now, station))
            # What the client is shown: as written, or as someone else left it meanwhile.
            [current] = landed or await self.store.get_many(Reservation, [wrote.id])
            outcome.reservation = current or outcome.reservation
            error = outcome.error
            # A cancel is owed only for a charger offline or lost
            # (``_reservation_answered``): that error, reworded.
            if landed and wrote.cancel_owed_since is not None and error is not None \
                    and not isinstance(error, ChargerUnreachable):  # says so already
                # Its own cause kept, of the same kind: a ChargerLost is also a graceful
                # stop's, a relay's, a supersession's, not only a connection's going
                # (review r32-b: each was told "CP's connection went").
                outcome.error = type(error)(
                    f"{error.message.rstrip('.')}: the reservation is cancelled here, and "
                    "its charger, which holds the connector until it hears of it, is sent "
                    "the cancel once it is connected", field=error.field, code=error.code)
        await self.publish(CommandCompleted(
            **owned_by(station), command_id=outcome.command_id, action=outcome.action,
            requested_by=outcome.requested_by or viewer.actor, status=outcome.status,
            error_code=outcome.error.code if outcome.error else None,
            result=wire_json(outcome.result)))
