"""Operator commands to chargers: one mutation per OCPP 1.6 central-system action.

Each takes ``{cpId, …the action's fields in OCPP's names}`` and returns the charger's
``status`` and result data, or ``errors`` with CHARGER_OFFLINE, CHARGER_TIMEOUT,
CHARGER_REJECTED or CHARGER_ERROR (and NOT_FOUND/FORBIDDEN before anything is sent).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from domain.command_rules import is_secret_key
from domain.errors import DomainError
from domain.services.commands import CommandOutcome
from graph import command_types as t
from graph.context import GraphContext
from graph.errors import UserError, user_error
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


async def _send(info: Info, cp_id: str, action: str, payload: dict[str, Any]
                ) -> tuple[CommandOutcome | None, list[UserError]]:
    ctx: GraphContext = info.context
    try:
        outcome = await ctx.services.commands.send(ctx.viewer, cp_id, action, payload)
    except DomainError as exc:
        if exc.code == "FORBIDDEN" and ctx.viewer.anonymous:
            return None, [UserError(field=None, message="sign in first",
                                    code="UNAUTHENTICATED")]
        return None, [user_error(exc)]
    return outcome, [user_error(outcome.error)] if outcome.error else []


def _payload(input: Any, *skip: str) -> tuple[str, dict[str, Any]]:
    data = t.to_ocpp(input)
    cp_id = data.pop("cpId")
    for key in skip:
        data.pop(key, None)
    return cp_id, data


@strawberry.interface(description="What every command mutation returns.")
class CommandPayload:
    command_id: strawberry.ID | None = strawberry.field(
        description="Also in the commandCompleted subscription and the audit log.")
    errors: list[UserError]


def _common(outcome: CommandOutcome | None, errors: list[UserError]) -> dict[str, Any]:
    return {"command_id": strawberry.ID(outcome.command_id) if outcome else None,
            "errors": errors}


# ------------------------------------------------------------------ inputs
@strawberry.input
class RemoteStartTransactionInput:
    cp_id: str
    connector_id: int | None = None
    id_tag: str | None = strawberry.field(
        default=None, description="Drivers may leave it out: their vehicle's or first tag.")
    vehicle_id: strawberry.ID | None = strawberry.field(
        default=None, description="Drivers: charge with the tag linked to this vehicle.")
    charging_profile: t.ChargingProfileInput | None = None


@strawberry.input
class RemoteStopTransactionInput:
    cp_id: str
    transaction_id: int


@strawberry.input
class ResetInput:
    cp_id: str
    type: t.ResetType  # type: ignore[valid-type]


@strawberry.input
class UnlockConnectorInput:
    cp_id: str
    connector_id: int


@strawberry.input
class ChangeAvailabilityInput:
    cp_id: str
    connector_id: int = strawberry.field(description="0 for the whole charge point.")
    type: t.AvailabilityType  # type: ignore[valid-type]


@strawberry.input
class ChangeConfigurationInput:
    cp_id: str
    key: str
    value: str


@strawberry.input
class GetConfigurationInput:
    cp_id: str
    key: list[str] | None = strawberry.field(default=None, description="All keys if left out.")


@strawberry.input
class ClearCacheInput:
    cp_id: str


@strawberry.input
class TriggerMessageInput:
    cp_id: str
    requested_message: t.MessageTrigger  # type: ignore[valid-type]
    connector_id: int | None = None


@strawberry.input
class DataTransferInput:
    cp_id: str
    vendor_id: str
    message_id: str | None = None
    data: str | None = None


@strawberry.input
class ReserveNowInput:
    cp_id: str
    connector_id: int = strawberry.field(description="0 reserves any connector.")
    expiry_date: datetime
    id_tag: str | None = strawberry.field(
        default=None, description="Drivers may leave it out (their first usable tag).")
    parent_id_tag: str | None = None
    vehicle_id: strawberry.ID | None = None


@strawberry.input
class CancelReservationInput:
    cp_id: str
    reservation_id: int


@strawberry.input
class SetChargingProfileInput:
    cp_id: str
    connector_id: int
    cs_charging_profiles: t.ChargingProfileInput


@strawberry.input
class ClearChargingProfileInput:
    cp_id: str
    id: int | None = None
    connector_id: int | None = None
    charging_profile_purpose: t.ChargingProfilePurposeType | None = None  # type: ignore[valid-type]
    stack_level: int | None = None


@strawberry.input
class GetCompositeScheduleInput:
    cp_id: str
    connector_id: int
    duration: int
    charging_rate_unit: t.ChargingRateUnitType | None = None  # type: ignore[valid-type]


@strawberry.input
class GetLocalListVersionInput:
    cp_id: str


@strawberry.input
class SendLocalListInput:
    cp_id: str
    list_version: int
    update_type: t.UpdateType  # type: ignore[valid-type]
    local_authorization_list: list[t.AuthorizationDataInput] | None = None


@strawberry.input
class GetDiagnosticsInput:
    cp_id: str
    location: str = strawberry.field(description="Upload URL for the diagnostics file.")
    retries: int | None = None
    retry_interval: int | None = None
    start_time: datetime | None = None
    stop_time: datetime | None = None


@strawberry.input
class UpdateFirmwareInput:
    cp_id: str
    location: str
    retrieve_date: datetime
    retries: int | None = None
    retry_interval: int | None = None


# ------------------------------------------------------------------ payloads
@strawberry.type
class RemoteStartStopPayload(CommandPayload):
    status: t.RemoteStartStopStatus | None  # type: ignore[valid-type]


@strawberry.type
class ResetPayload(CommandPayload):
    status: t.ResetStatus | None  # type: ignore[valid-type]


@strawberry.type
class UnlockConnectorPayload(CommandPayload):
    status: t.UnlockStatus | None  # type: ignore[valid-type]


@strawberry.type
class ChangeAvailabilityPayload(CommandPayload):
    status: t.AvailabilityStatus | None  # type: ignore[valid-type]


@strawberry.type
class ChangeConfigurationPayload(CommandPayload):
    status: t.ConfigurationStatus | None  # type: ignore[valid-type]


@strawberry.type
class GetConfigurationPayload(CommandPayload):
    configuration_key: list[t.ConfigurationKey]
    unknown_key: list[str]


@strawberry.type
class ClearCachePayload(CommandPayload):
    status: t.ClearCacheStatus | None  # type: ignore[valid-type]


@strawberry.type
class TriggerMessagePayload(CommandPayload):
    status: t.TriggerMessageStatus | None  # type: ignore[valid-type]


@strawberry.type
class DataTransferPayload(CommandPayload):
    status: t.DataTransferStatus | None  # type: ignore[valid-type]
    data: str | None


@strawberry.type
class ReserveNowPayload(CommandPayload):
    status: t.ReservationStatus | None  # type: ignore[valid-type]
    reservation: Reservation | None


@strawberry.type
class CancelReservationPayload(CommandPayload):
    status: t.CancelReservationStatus | None  # type: ignore[valid-type]
    reservation: Reservation | None


@strawberry.type
class SetChargingProfilePayload(CommandPayload):
    status: t.ChargingProfileStatus | None  # type: ignore[valid-type]


@strawberry.type
class ClearChargingProfilePayload(CommandPayload):
    status: t.ClearChargingProfileStatus | None  # type: ignore[valid-type]


@strawberry.type
class GetCompositeSchedulePayload(CommandPayload):
    status: t.GetCompositeScheduleStatus | None  # type: ignore[valid-type]
    connector_id: int | None
    schedule_start: datetime | None
    charging_schedule: t.ChargingSchedule | None


@strawberry.type
class GetLocalListVersionPayload(CommandPayload):
    list_version: int | None = strawberry.field(
        description="-1: no local list support; 0: no list installed.")


@strawberry.type
class SendLocalListPayload(CommandPayload):
    status: t.UpdateStatus | None  # type: ignore[valid-type]


@strawberry.type
class GetDiagnosticsPayload(CommandPayload):
    file_name: str | None


@strawberry.type
class UpdateFirmwarePayload(CommandPayload):
    accepted: bool = strawberry.field(description="The charger acknowledged the request.")


def _reservation(info: Info, outcome: CommandOutcome | None) -> Reservation | None:
    if outcome is None or outcome.reservation is None:
        return None
    return Reservation.wrap(outcome.reservation, info.context)


def _vehicle(data: dict[str, Any]) -> None:
    if data.get("vehicleId") is not None:
        data["vehicleId"] = expect_id(str(data["vehicleId"]), "vehicle", "vehicleId")


@strawberry.type
class CommandMutation:
    @strawberry.mutation(description="OCPP RemoteStartTransaction.")
    async def remote_start_transaction(self, info: Info, input: RemoteStartTransactionInput
                                       ) -> RemoteStartStopPayload:
        cp_id, data = _payload(input)
        try:
            _vehicle(data)
        except DomainError as exc:
            return RemoteStartStopPayload(status=None, **_common(None, [user_error(exc)]))
        outcome, errors = await _send(info, cp_id, "RemoteStartTransaction", data)
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
        try:
            _vehicle(data)
        except DomainError as exc:
            return ReserveNowPayload(status=None, reservation=None,
                                     **_common(None, [user_error(exc)]))
        outcome, errors = await _send(info, cp_id, "ReserveNow", data)
        return ReserveNowPayload(status=_status(outcome, t.ReservationStatus),
                                 reservation=_reservation(info, outcome),
                                 **_common(outcome, errors))

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
        outcome, errors = await _send(info, cp_id, "SendLocalList", data)
        return SendLocalListPayload(status=_status(outcome, t.UpdateStatus),
                                    **_common(outcome, errors))

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
