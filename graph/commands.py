"""Operator commands to chargers: one mutation per OCPP 1.6 central-system action.

Each takes ``{cpId, …the action's fields in OCPP's names}`` and returns the charger's
``status`` and result data, or ``errors`` with CHARGER_OFFLINE, CHARGER_TIMEOUT,
CHARGER_REJECTED or CHARGER_ERROR (and NOT_FOUND/FORBIDDEN before anything is sent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.utils.str_converters import to_camel_case

from domain.command_rules import is_secret_key
from domain.errors import DomainError, ValidationError
from domain.services.commands import CommandOutcome
from domain.validation import Checks
from graph import command_types as t
from graph.context import GraphContext
from graph.errors import UserError, user_error, user_errors
from graph.ids import expect_id
from graph.nodes import Reservation

Info = strawberry.Info


def _status(outcome: CommandOutcome | None, enum: type[Enum]) -> Any:
    if outcome is None or outcome.status is None:
        return None
    try:
        return enum(outcome.status)
    except ValueError:
        return None


async def _send(info: Info, cp_id: str, action: str, payload: dict[str, Any],
                faults: Sequence[ValidationError] = ()
                ) -> tuple[CommandOutcome | None, list[UserError]]:
    ctx: GraphContext = info.context
    try:
        outcome = await ctx.services.commands.send(ctx.viewer, cp_id, action, payload,
                                                   faults=faults)
    except DomainError as exc:
        if exc.code == "FORBIDDEN" and ctx.viewer.anonymous:
            return None, [UserError(field=None, message="sign in first",
                                    code="UNAUTHENTICATED")]
        # Every field of the input at fault, in its order (``command_rules``).
        return None, user_errors(exc)
    return outcome, [user_error(outcome.error)] if outcome.error else []


def _payload(input: Any, *skip: str) -> tuple[str, dict[str, Any]]:
    data = t.to_ocpp(input)
    cp_id = data.pop("cpId")
    for key in skip:
        data.pop(key, None)
    return cp_id, data


#: The ``cpId`` of every command's input.
_CP_ID = ("The charger's OCPP identity (`Station.cpId`); REQUIRED when empty; NOT_FOUND "
          "when the viewer sees no such station, told only once every field of the "
          "input is valid.")
#: The ``status`` of every command's payload.
_STATUS = ("The charger's answer; a refusal also comes as CHARGER_REJECTED in `errors`. "
           "Null when it did not answer (see `errors`).")
#: Retries of an upload or download (``command_rules``: 0..100, 0..86400).
_RETRIES = "How often the charger retries, 0 to 100; left out: its own choice."
_RETRY_INTERVAL = "Seconds between its retries, 0 to 86400; left out: its own choice."


@strawberry.interface(description="What every command mutation returns.")
class CommandPayload:
    command_id: strawberry.ID | None = strawberry.field(
        description="Also in the commandCompleted subscription and the audit log.")
    errors: list[UserError] = strawberry.field(description=(
        "Why the command failed; empty when the charger did (or will do) what was asked. "
        "Refused before anything is sent: UNAUTHENTICATED, NOT_FOUND, FORBIDDEN, or an "
        "input field's error (INVALID, IN_USE, …). Sent or tried: CHARGER_OFFLINE and "
        "CHARGER_BUSY (never sent), CHARGER_TIMEOUT (no answer: it may have acted), "
        "CHARGER_REJECTED (it said no: see `status`) or CHARGER_ERROR."))


def _common(outcome: CommandOutcome | None, errors: list[UserError]) -> dict[str, Any]:
    return {"command_id": strawberry.ID(outcome.command_id) if outcome else None,
            "errors": errors}


# ------------------------------------------------------------------ inputs
@strawberry.input(description=(
    "Ask a charger to start charging (OCPP RemoteStartTransaction). Drivers, with "
    "their own card; admins and the station's operators, with any card."))
class RemoteStartTransactionInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int | None = strawberry.field(default=None, description=(
        "The connector to charge on, from 1; left out: the charger picks one (a "
        "start with a card a reservation of its holder holds one connector for is sent "
        "for that one when it can take the start, else it goes naming none). Refused "
        "(IN_USE) while it charges a session or is reserved for another card; for "
        "drivers also (INVALID_STATE; on `cpId` when left out) while it, or the charger "
        "as a whole, last reported FAULTED or UNAVAILABLE. Left out, refused the same "
        "way (on `cpId`) when no connector of the station is free. Also refused (IN_USE) "
        "while another remote start, not started yet (up to 120 s), waits on it, or left "
        "out, when every free connector is awaited so."))
    id_tag: str | None = strawberry.field(default=None, description=(
        "Drivers may leave it out: the card a reservation of theirs on the station "
        "holds the plug for, else their vehicle's card, else their first usable one not "
        "charging. Refused (IN_USE) while the card charges, or has a remote start not "
        "started yet (up to 120 s); a driver's start naming neither card nor vehicle, "
        "while a start of theirs is not started yet."))
    vehicle_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Drivers: the car of theirs to charge (NOT_FOUND if it is not theirs); the "
        "session is booked to it, with the card given or else the one linked to it (or "
        "their first usable one). Refused (IN_USE, on `idTag`) while the car charges or "
        "has a remote start not started yet, whichever card. Not for operators "
        "(INVALID): they give `idTag`."))
    charging_profile: t.ChargingProfileInput | None = strawberry.field(
        default=None, description=(
            "A TX_PROFILE limiting the transaction to be (no `transactionId`); not for "
            "drivers. Refused (IN_USE) on a station in a site, whose load management "
            "sets each transaction's limit: set one for the transaction once it runs."))


@strawberry.input(description=(
    "Ask a charger to stop a transaction (OCPP RemoteStopTransaction). Drivers, their "
    "own; admins and the station's operators, any."))
class RemoteStopTransactionInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    transaction_id: int = strawberry.field(description=(
        "The session's OCPP transactionId (`Session.transactionId`), under way on this "
        "charger."))


@strawberry.input(description="Ask a charger to restart (OCPP Reset).")
class ResetInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    type: t.ResetType = strawberry.field(  # type: ignore[valid-type]
        description="HARD or SOFT.")


@strawberry.input(description=(
    "Ask a charger to release a connector's cable lock (OCPP UnlockConnector)."))
class UnlockConnectorInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description="The connector to unlock, from 1.")


@strawberry.input(description=(
    "Take a connector (0: the charge point) out of service or back (OCPP "
    "ChangeAvailability)."))
class ChangeAvailabilityInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description="0 for the whole charge point.")
    type: t.AvailabilityType = strawberry.field(  # type: ignore[valid-type]
        description="OPERATIVE or INOPERATIVE.")


@strawberry.input(description="Set one configuration key of a charger (OCPP ChangeConfiguration).")
class ChangeConfigurationInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    key: str = strawberry.field(description=(
        "The configuration key, at most 50 characters (OCPP keys ignore case). Not "
        "`AuthorizationKey` (INVALID): set the charger's password with `updateStation`."))
    value: str = strawberry.field(description=(
        "The new value, at most 500 characters. OCPP 1.6's standard keys by their type "
        "(INVALID otherwise): integers as digits alone, 0 to 2147483647 "
        "(`LightIntensity` 0 to 100), booleans `true` or `false`, measurand lists "
        "(`MeterValuesSampledData`...) comma-separated measurand names; other keys are "
        "free text. `HeartbeatInterval`: whole seconds, 1 to 86400; once accepted, the "
        "station's boots are answered with it."))


@strawberry.input(description="Read configuration keys of a charger (OCPP GetConfiguration).")
class GetConfigurationInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    key: list[str] | None = strawberry.field(default=None, description=(
        "The keys to read; all keys if left out or empty (a command, not a filter: OCPP "
        "has a charger asked for no key in particular report every one)."))


@strawberry.input(description="Clear a charger's authorization cache (OCPP ClearCache).")
class ClearCacheInput:
    cp_id: str = strawberry.field(description=_CP_ID)


@strawberry.input(description="Ask a charger to send a message now (OCPP TriggerMessage).")
class TriggerMessageInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    requested_message: t.MessageTrigger = strawberry.field(  # type: ignore[valid-type]
        description="The message the charger is to send now.")
    connector_id: int | None = strawberry.field(default=None, description=(
        "The connector the message is about (0: the charge point), for METER_VALUES and "
        "STATUS_NOTIFICATION; left out: all of them."))


@strawberry.input(description="A vendor-specific message to a charger (OCPP DataTransfer).")
class DataTransferInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    vendor_id: str = strawberry.field(description=(
        "Whose extension the message is for (usually a reversed DNS name), at most 255 "
        "characters."))
    message_id: str | None = strawberry.field(default=None, description=(
        "Which of the vendor's messages, at most 50 characters."))
    data: str | None = strawberry.field(default=None, description=(
        "The message's content, as the vendor defines it."))


@strawberry.input(description=(
    "Hold a connector for a card (OCPP ReserveNow). Drivers, for their own card, one "
    "reservation at a time; admins and the station's operators, for any card."))
class ReserveNowInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description="0 reserves any connector.")
    expires_at: datetime | None = strawberry.field(default=None, description=(
        "When the reservation ends (`Reservation.expiresAt`): in the future, at most 24 "
        "hours ahead. Required, unless the deprecated `expiryDate` is given instead "
        "(REQUIRED without either, INVALID with both)."))
    expiry_date: datetime | None = strawberry.field(
        default=None, deprecation_reason="Use `expiresAt`, as `Reservation.expiresAt` "
                                         "reads it; not with it.",
        description="When the reservation ends, by OCPP's name.")
    id_tag: str | None = strawberry.field(
        default=None, description="Drivers may leave it out (their first usable tag).")
    parent_id_tag: str | None = strawberry.field(default=None, description=(
        "The tag's group (OCPP parentIdTag): a card of the group may use the reservation "
        "too, at chargers that allow it. Operators and admins only (a driver's is "
        "FORBIDDEN: every card of the group would take the plug held for them)."))
    vehicle_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Drivers: reserve for the tag linked to this vehicle of theirs (else their first "
        "usable one); with `idTag`, it must be theirs too (NOT_FOUND). Not for operators "
        "(INVALID): they give `idTag`."))


@strawberry.input(description="End a reservation at its charger (OCPP CancelReservation).")
class CancelReservationInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    reservation_id: int = strawberry.field(description=(
        "The OCPP reservationId (`Reservation.reservationId`) of a live reservation on "
        "this charger."))


@strawberry.input(description=(
    "Install a charging profile: power or current limits over time (OCPP "
    "SetChargingProfile)."))
class SetChargingProfileInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description=(
        "0: the charge point (a CHARGE_POINT_MAX_PROFILE, or a TX_DEFAULT_PROFILE for "
        "every connector); else the connector (a TX_PROFILE needs a transaction under "
        "way on it)."))
    cs_charging_profiles: t.ChargingProfileInput = strawberry.field(
        description="The profile to install.")


@strawberry.input(description=(
    "Remove charging profiles matching every criterion given; none given: all of them "
    "(OCPP ClearChargingProfile)."))
class ClearChargingProfileInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    id: int | None = strawberry.field(default=None, description=(
        "The profile with this `chargingProfileId`; left out, the other criteria choose "
        "(none given: every profile)."))
    connector_id: int | None = strawberry.field(default=None, description=(
        "Profiles of this connector (0: the charge point's)."))
    charging_profile_purpose: t.ChargingProfilePurposeType | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Profiles of this purpose.")
    stack_level: int | None = strawberry.field(default=None, description=(
        "Profiles at this stack level, 0 to 100."))


@strawberry.input(description=(
    "Ask a charger for the limits it plans to apply, all profiles combined (OCPP "
    "GetCompositeSchedule)."))
class GetCompositeScheduleInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    connector_id: int = strawberry.field(description=(
        "The connector (0: the charge point's expected total)."))
    duration: int = strawberry.field(description="Seconds from now the schedule covers.")
    charging_rate_unit: t.ChargingRateUnitType | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="The unit wanted; left out: the charger's choice.")


@strawberry.input(description=(
    "Ask a charger for its local authorization list's version (OCPP "
    "GetLocalListVersion)."))
class GetLocalListVersionInput:
    cp_id: str = strawberry.field(description=_CP_ID)


@strawberry.input(description=(
    "Change a charger's local authorization list: the tags it accepts or refuses "
    "without asking (OCPP SendLocalList)."))
class SendLocalListInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    list_version: int = strawberry.field(description=(
        "The list's version after this update: 1 or more when it holds tags (0 means no "
        "list)."))
    update_type: t.UpdateType = strawberry.field(  # type: ignore[valid-type]
        description="FULL or DIFFERENTIAL.")
    local_authorization_list: list[t.AuthorizationDataInput] | None = strawberry.field(
        default=None, description=(
            "The entries, each tag once: with FULL every tag with its `idTagInfo`; with "
            "DIFFERENTIAL the changes. OUT_OF_RANGE, nothing sent, when the charger "
            "takes fewer entries in one list (its `SendLocalListMaxLength`; removals "
            "count too) or a list adding tags would leave it holding more than it can "
            "(its `LocalAuthListMaxLength`), a single tag added to a full list too "
            "(updates of tags it holds and removals add none, so never are); the "
            "message names this list's tags that would not fit."))


@strawberry.input(description="Ask a charger to upload a diagnostics file (OCPP GetDiagnostics).")
class GetDiagnosticsInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    location: str = strawberry.field(description="Upload URL for the diagnostics file.")
    retries: int | None = strawberry.field(default=None, description=_RETRIES)
    retry_interval: int | None = strawberry.field(default=None, description=_RETRY_INTERVAL)
    start_time: datetime | None = strawberry.field(default=None, description=(
        "The oldest information to include; left out: the charger's choice."))
    stop_time: datetime | None = strawberry.field(default=None, description=(
        "The newest information to include, after `startTime`."))


@strawberry.input(description=(
    "Ask a charger to download and install firmware (OCPP UpdateFirmware)."))
class UpdateFirmwareInput:
    cp_id: str = strawberry.field(description=_CP_ID)
    location: str = strawberry.field(description=(
        "Where the charger downloads the firmware: an absolute ftp(s), sftp or http(s) "
        "URL, at most 2000 characters (the audit log keeps it without user information, "
        "query string values (a presigned URL's signature) nor fragment; a URL with an "
        "`@` outside its host part, or more than one, as `scheme://[hidden]`)."))
    retrieve_date: datetime = strawberry.field(description=(
        "When the charger is to download it (not before): at most a year ahead "
        "(`OUT_OF_RANGE`); a past time means at once."))
    retries: int | None = strawberry.field(default=None, description=_RETRIES)
    retry_interval: int | None = strawberry.field(default=None, description=_RETRY_INTERVAL)


# ------------------------------------------------------------------ payloads
@strawberry.type(description="The answer to `remoteStartTransaction` or `remoteStopTransaction`.")
class RemoteStartStopPayload(CommandPayload):
    status: t.RemoteStartStopStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `reset`.")
class ResetPayload(CommandPayload):
    status: t.ResetStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `unlockConnector`.")
class UnlockConnectorPayload(CommandPayload):
    status: t.UnlockStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `changeAvailability`.")
class ChangeAvailabilityPayload(CommandPayload):
    status: t.AvailabilityStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `changeConfiguration`.")
class ChangeConfigurationPayload(CommandPayload):
    status: t.ConfigurationStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `getConfiguration`.")
class GetConfigurationPayload(CommandPayload):
    configuration_key: list[t.ConfigurationKey] = strawberry.field(description=(
        "The keys the charger reported (every one, or those asked for), secret values "
        "`masked`; empty when it did not answer."))
    unknown_key: list[str] = strawberry.field(description=(
        "Keys asked for that the charger does not know."))


@strawberry.type(description="The answer to `clearCache`.")
class ClearCachePayload(CommandPayload):
    status: t.ClearCacheStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `triggerMessage`.")
class TriggerMessagePayload(CommandPayload):
    status: t.TriggerMessageStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `dataTransfer`.")
class DataTransferPayload(CommandPayload):
    status: t.DataTransferStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)
    data: str | None = strawberry.field(description=(
        "The charger's answer data, as the vendor defines it; null when it gave none."))


@strawberry.type(description="The answer to `reserveNow`.")
class ReserveNowPayload(CommandPayload):
    status: t.ReservationStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)
    reservation: Reservation | None = strawberry.field(description=(
        "The reservation made for it: ACTIVE once accepted, REJECTED when the charger "
        "refused it, PENDING while the charger's answer is unknown (it may hold the "
        "plug). Null when refused before anything was sent, and when the charger never "
        "got it (CHARGER_OFFLINE, CHARGER_BUSY): nothing is kept of it then."))


@strawberry.type(description="The answer to `cancelReservation`.")
class CancelReservationPayload(CommandPayload):
    status: t.CancelReservationStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)
    reservation: Reservation | None = strawberry.field(description=(
        "The reservation: CANCELLED once the charger answered ACCEPTED or REJECTED (it "
        "holds it no more), or at once when its charger is offline (CHARGER_OFFLINE: "
        "the charger is sent the cancel when it comes back); as it was otherwise, also "
        "when the charger is online but could not be reached (CHARGER_OFFLINE: cancel "
        "again in a moment). Null when refused before anything was sent."))


@strawberry.type(description="The answer to `setChargingProfile`.")
class SetChargingProfilePayload(CommandPayload):
    status: t.ChargingProfileStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `clearChargingProfile`.")
class ClearChargingProfilePayload(CommandPayload):
    status: t.ClearChargingProfileStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `getCompositeSchedule`.")
class GetCompositeSchedulePayload(CommandPayload):
    status: t.GetCompositeScheduleStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)
    connector_id: int | None = strawberry.field(description=(
        "The connector the schedule is for, as the charger answered."))
    schedule_start: datetime | None = strawberry.field(description=(
        "When the schedule starts, UTC; null when the charger gave none."))
    charging_schedule: t.ChargingSchedule | None = strawberry.field(description=(
        "The limits the charger plans to apply, all its profiles combined; null when it "
        "gave none."))


@strawberry.type(description="The answer to `getLocalListVersion`.")
class GetLocalListVersionPayload(CommandPayload):
    list_version: int | None = strawberry.field(
        description="-1: no local list support; 0: no list installed.")


@strawberry.type(description="The answer to `sendLocalList`.")
class SendLocalListPayload(CommandPayload):
    status: t.UpdateStatus | None = strawberry.field(  # type: ignore[valid-type]
        description=_STATUS)


@strawberry.type(description="The answer to `getDiagnostics`.")
class GetDiagnosticsPayload(CommandPayload):
    file_name: str | None = strawberry.field(description=(
        "The name of the file the charger will upload (kept as the station's "
        "`diagnosticsRequest`; U+FFFD for a name of hidden characters only); null when it "
        "has nothing to upload (or did not answer)."))


@strawberry.type(description="The answer to `updateFirmware`.")
class UpdateFirmwarePayload(CommandPayload):
    accepted: bool = strawberry.field(description="The charger acknowledged the request.")


def _reservation(info: Info, outcome: CommandOutcome | None) -> Reservation | None:
    if outcome is None or outcome.reservation is None:
        return None
    return Reservation.wrap(outcome.reservation, info.context)


def _vehicle(data: dict[str, Any]) -> list[ValidationError]:
    """The ``vehicleId`` given, as a record id in its place; one that names no vehicle is
    left out (null) and is the fault returned, told with the input's others after the
    refusals of who is asking (review s30: raised here first, an anonymous caller was
    told INVALID_ID, not UNAUTHENTICATED)."""
    checks = Checks()
    if data.get("vehicleId") is not None:
        data["vehicleId"] = checks(expect_id, str(data["vehicleId"]), "vehicle", "vehicleId")
    return checks.errors


#: The two names of an end OCPP calls ``expiryDate`` (reserveNow's, a local list card's),
#: in the inputs' order: the API's, as a reservation and a card read it, and OCPP's.
_END_NAMES = ("expiresAt", "expiryDate")


def _expiry(input: Any, data: dict[str, Any], at: str = "", *, required: bool = True
            ) -> tuple[str, list[ValidationError]]:
    """An end under OCPP's name (``expiryDate``), given as ``expiresAt``, the name the
    API reads it by (``Reservation.expiresAt``, ``IdTag.expiresAt``), or the deprecated
    ``expiryDate`` (QA s30: a client had to write one and read the other): one of them.
    ``data`` is ``input`` as OCPP's payload (``to_ocpp``), at ``at`` in the command's.
    The end is put in the place of the names in the input, so that the domain tells the
    faults of the input in its fields' order; left out, as null where it is ``required``
    (the domain's REQUIRED), else not at all. Both given is this fault, told with the
    others and after the refusals of who is asking (review s30: raised here first, it
    hid them). The name the caller used (``expiresAt`` unless only the deprecated one),
    for the errors about it, and the fault."""
    given = [name for name in _END_NAMES if name in data]
    end = data[given[0]] if given else None
    faults = [ValidationError("give expiresAt (or the deprecated expiryDate), not both",
                              field=f"{at}expiryDate")] if len(given) > 1 else []
    ordered: dict[str, Any] = {}
    for name in (to_camel_case(f.name) for f in fields(input)):
        if name in _END_NAMES:
            if given or required:
                ordered.setdefault("expiryDate", end)
        elif name in data:
            ordered[name] = data[name]
    data.clear()
    data.update(ordered)
    return (given[0] if len(given) == 1 else "expiresAt"), faults


def _card_expiries(input: SendLocalListInput, data: dict[str, Any]
                   ) -> tuple[dict[str, str], list[ValidationError]]:
    """Each card's end in a local list, as ``_expiry`` takes reserveNow's (QA s31: the
    list's ``idTagInfo`` kept OCPP's ``expiryDate`` where a card reads ``expiresAt``):
    the names given, by the path of OCPP's, and the faults."""
    names: dict[str, str] = {}
    faults: list[ValidationError] = []
    for i, (entry, sent) in enumerate(zip(input.local_authorization_list or (),
                                          data.get("localAuthorizationList", ()),
                                          strict=True)):
        if entry.id_tag_info is None:
            continue
        at = f"localAuthorizationList.{i}.idTagInfo."
        given, fault = _expiry(entry.id_tag_info, sent["idTagInfo"], at, required=False)
        names[f"{at}expiryDate"] = f"{at}{given}"
        faults += fault
    return names, faults


def _named(errors: list[UserError], names: dict[str, str]) -> list[UserError]:
    """``errors`` with the fields of ``names`` called by the names the input gave them."""
    return [replace(e, field=names[e.field]) if e.field in names else e for e in errors]


@strawberry.type
class CommandMutation:
    @strawberry.mutation(description="OCPP RemoteStartTransaction.")
    async def remote_start_transaction(self, info: Info, input: RemoteStartTransactionInput
                                       ) -> RemoteStartStopPayload:
        cp_id, data = _payload(input)
        faults = _vehicle(data)
        outcome, errors = await _send(info, cp_id, "RemoteStartTransaction", data, faults)
        return RemoteStartStopPayload(status=_status(outcome, t.RemoteStartStopStatus),
                                      **_common(outcome, errors))

    @strawberry.mutation(description="OCPP RemoteStopTransaction.")
    async def remote_stop_transaction(self, info: Info, input: RemoteStopTransactionInput
                                      ) -> RemoteStartStopPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "RemoteStopTransaction", data)
        return RemoteStartStopPayload(status=_status(outcome, t.RemoteStartStopStatus),
                                      **_common(outcome, errors))

    @strawberry.mutation(description="OCPP Reset.")
    async def reset(self, info: Info, input: ResetInput) -> ResetPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "Reset", data)
        return ResetPayload(status=_status(outcome, t.ResetStatus), **_common(outcome, errors))

    @strawberry.mutation(description="OCPP UnlockConnector.")
    async def unlock_connector(self, info: Info, input: UnlockConnectorInput
                               ) -> UnlockConnectorPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "UnlockConnector", data)
        return UnlockConnectorPayload(status=_status(outcome, t.UnlockStatus),
                                      **_common(outcome, errors))

    @strawberry.mutation(description="OCPP ChangeAvailability.")
    async def change_availability(self, info: Info, input: ChangeAvailabilityInput
                                  ) -> ChangeAvailabilityPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "ChangeAvailability", data)
        return ChangeAvailabilityPayload(status=_status(outcome, t.AvailabilityStatus),
                                         **_common(outcome, errors))

    @strawberry.mutation(description="OCPP ChangeConfiguration.")
    async def change_configuration(self, info: Info, input: ChangeConfigurationInput
                                   ) -> ChangeConfigurationPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "ChangeConfiguration", data)
        return ChangeConfigurationPayload(status=_status(outcome, t.ConfigurationStatus),
                                          **_common(outcome, errors))

    @strawberry.mutation(description="OCPP GetConfiguration.")
    async def get_configuration(self, info: Info, input: GetConfigurationInput
                                ) -> GetConfigurationPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "GetConfiguration", data)
        result = outcome.result if outcome else {}
        return GetConfigurationPayload(
            configuration_key=[
                t.ConfigurationKey(key=k["key"], readonly=bool(k["readonly"]),
                                   value=k.get("value"), masked=is_secret_key(k["key"]),
                                   read_at=outcome.answered_at if outcome else None)
                for k in result.get("configurationKey", [])
            ],
            unknown_key=list(result.get("unknownKey", [])),
            **_common(outcome, errors),
        )

    @strawberry.mutation(description="OCPP ClearCache.")
    async def clear_cache(self, info: Info, input: ClearCacheInput) -> ClearCachePayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "ClearCache", data)
        return ClearCachePayload(status=_status(outcome, t.ClearCacheStatus),
                                 **_common(outcome, errors))

    @strawberry.mutation(description="OCPP TriggerMessage.")
    async def trigger_message(self, info: Info, input: TriggerMessageInput
                              ) -> TriggerMessagePayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "TriggerMessage", data)
        return TriggerMessagePayload(status=_status(outcome, t.TriggerMessageStatus),
                                     **_common(outcome, errors))

    @strawberry.mutation(description="OCPP DataTransfer (to the charger).")
    async def data_transfer(self, info: Info, input: DataTransferInput) -> DataTransferPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "DataTransfer", data)
        return DataTransferPayload(status=_status(outcome, t.DataTransferStatus),
                                   data=outcome.result.get("data") if outcome else None,
                                   **_common(outcome, errors))

    @strawberry.mutation(description="OCPP ReserveNow. The reservationId is ours to give.")
    async def reserve_now(self, info: Info, input: ReserveNowInput) -> ReserveNowPayload:
        cp_id, data = _payload(input)
        faults = _vehicle(data)
        given, end_faults = _expiry(input, data)
        outcome, errors = await _send(info, cp_id, "ReserveNow", data, faults + end_faults)
        return ReserveNowPayload(status=_status(outcome, t.ReservationStatus),
                                 reservation=_reservation(info, outcome),
                                 **_common(outcome, _named(errors, {"expiryDate": given})))

    @strawberry.mutation(description="OCPP CancelReservation.")
    async def cancel_reservation(self, info: Info, input: CancelReservationInput
                                 ) -> CancelReservationPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "CancelReservation", data)
        return CancelReservationPayload(status=_status(outcome, t.CancelReservationStatus),
                                        reservation=_reservation(info, outcome),
                                        **_common(outcome, errors))

    @strawberry.mutation(description="OCPP SetChargingProfile.")
    async def set_charging_profile(self, info: Info, input: SetChargingProfileInput
                                   ) -> SetChargingProfilePayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "SetChargingProfile", data)
        return SetChargingProfilePayload(status=_status(outcome, t.ChargingProfileStatus),
                                         **_common(outcome, errors))

    @strawberry.mutation(description="OCPP ClearChargingProfile.")
    async def clear_charging_profile(self, info: Info, input: ClearChargingProfileInput
                                     ) -> ClearChargingProfilePayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "ClearChargingProfile", data)
        return ClearChargingProfilePayload(
            status=_status(outcome, t.ClearChargingProfileStatus), **_common(outcome, errors))

    @strawberry.mutation(description="OCPP GetCompositeSchedule.")
    async def get_composite_schedule(self, info: Info, input: GetCompositeScheduleInput
                                     ) -> GetCompositeSchedulePayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "GetCompositeSchedule", data)
        result = outcome.result if outcome else {}
        start = result.get("scheduleStart")
        schedule = result.get("chargingSchedule")
        return GetCompositeSchedulePayload(
            status=_status(outcome, t.GetCompositeScheduleStatus),
            connector_id=result.get("connectorId"),
            schedule_start=datetime.fromisoformat(start) if start else None,
            charging_schedule=t.ChargingSchedule.from_ocpp(schedule) if schedule else None,
            **_common(outcome, errors),
        )

    @strawberry.mutation(description="OCPP GetLocalListVersion.")
    async def get_local_list_version(self, info: Info, input: GetLocalListVersionInput
                                     ) -> GetLocalListVersionPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "GetLocalListVersion", data)
        version = outcome.result.get("listVersion") if outcome else None
        return GetLocalListVersionPayload(list_version=version, **_common(outcome, errors))

    @strawberry.mutation(description="OCPP SendLocalList.")
    async def send_local_list(self, info: Info, input: SendLocalListInput
                              ) -> SendLocalListPayload:
        cp_id, data = _payload(input)
        names, faults = _card_expiries(input, data)
        outcome, errors = await _send(info, cp_id, "SendLocalList", data, faults)
        return SendLocalListPayload(status=_status(outcome, t.UpdateStatus),
                                    **_common(outcome, _named(errors, names)))

    @strawberry.mutation(description="OCPP GetDiagnostics.")
    async def get_diagnostics(self, info: Info, input: GetDiagnosticsInput
                              ) -> GetDiagnosticsPayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "GetDiagnostics", data)
        return GetDiagnosticsPayload(file_name=outcome.result.get("fileName") if outcome
                                     else None, **_common(outcome, errors))

    @strawberry.mutation(description="OCPP UpdateFirmware.")
    async def update_firmware(self, info: Info, input: UpdateFirmwareInput
                              ) -> UpdateFirmwarePayload:
        cp_id, data = _payload(input)
        outcome, errors = await _send(info, cp_id, "UpdateFirmware", data)
        return UpdateFirmwarePayload(accepted=outcome is not None and not errors,
                                     **_common(outcome, errors))
