"""GraphQL shapes of OCPP 1.6 commands: enums, nested inputs mirroring the OCPP schema,
and result types."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from domain import ocpp16

# Registered as GraphQL enums; the names below are the classes themselves.
for _enum in (
    ocpp16.ResetType,
    ocpp16.ResetStatus,
    ocpp16.UnlockStatus,
    ocpp16.AvailabilityType,
    ocpp16.AvailabilityStatus,
    ocpp16.ConfigurationStatus,
    ocpp16.ClearCacheStatus,
    ocpp16.MessageTrigger,
    ocpp16.TriggerMessageStatus,
    ocpp16.DataTransferStatus,
    ocpp16.ReservationStatus,
    ocpp16.CancelReservationStatus,
    ocpp16.ChargingProfileStatus,
    ocpp16.ClearChargingProfileStatus,
    ocpp16.GetCompositeScheduleStatus,
    ocpp16.UpdateType,
    ocpp16.UpdateStatus,
    ocpp16.ChargingProfilePurposeType,
    ocpp16.ChargingProfileKindType,
    ocpp16.RecurrencyKind,
    ocpp16.ChargingRateUnitType,
    ocpp16.RemoteStartStopStatus,
    ocpp16.AuthorizationStatus,
):
    strawberry.enum(_enum)

ResetType = ocpp16.ResetType
ResetStatus = ocpp16.ResetStatus
UnlockStatus = ocpp16.UnlockStatus
AvailabilityType = ocpp16.AvailabilityType
AvailabilityStatus = ocpp16.AvailabilityStatus
ConfigurationStatus = ocpp16.ConfigurationStatus
ClearCacheStatus = ocpp16.ClearCacheStatus
MessageTrigger = ocpp16.MessageTrigger
TriggerMessageStatus = ocpp16.TriggerMessageStatus
DataTransferStatus = ocpp16.DataTransferStatus
ReservationStatus = ocpp16.ReservationStatus
CancelReservationStatus = ocpp16.CancelReservationStatus
ChargingProfileStatus = ocpp16.ChargingProfileStatus
ClearChargingProfileStatus = ocpp16.ClearChargingProfileStatus
GetCompositeScheduleStatus = ocpp16.GetCompositeScheduleStatus
UpdateType = ocpp16.UpdateType
UpdateStatus = ocpp16.UpdateStatus
ChargingProfilePurposeType = ocpp16.ChargingProfilePurposeType
ChargingProfileKindType = ocpp16.ChargingProfileKindType
RecurrencyKind = ocpp16.RecurrencyKind
ChargingRateUnitType = ocpp16.ChargingRateUnitType
RemoteStartStopStatus = ocpp16.RemoteStartStopStatus
AuthorizationStatus = ocpp16.AuthorizationStatus


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def to_ocpp(value: Any) -> Any:
    """A strawberry input (tree) as an OCPP payload: camelCase keys, enum values, fields
    left out or null dropped."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None or item is strawberry.UNSET:
                continue
            out[_camel(f.name)] = to_ocpp(item)
        return out
    if isinstance(value, list):
        return [to_ocpp(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


# ------------------------------------------------------------------ smart charging inputs
@strawberry.input(description="OCPP ChargingSchedulePeriod.")
class ChargingSchedulePeriodInput:
    start_period: int = strawberry.field(description="Seconds from the schedule's start.")
    limit: float = strawberry.field(description="In the schedule's unit (W or A), 0.1 steps.")
    number_phases: int | None = None


@strawberry.input(description="OCPP ChargingSchedule.")
class ChargingScheduleInput:
    charging_rate_unit: ChargingRateUnitType  # type: ignore[valid-type]
    charging_schedule_period: list[ChargingSchedulePeriodInput]
    duration: int | None = None
    start_schedule: datetime | None = None
    min_charging_rate: float | None = None


@strawberry.input(description="OCPP csChargingProfiles / chargingProfile.")
class ChargingProfileInput:
    charging_profile_id: int
    stack_level: int
    charging_profile_purpose: ChargingProfilePurposeType  # type: ignore[valid-type]
    charging_profile_kind: ChargingProfileKindType  # type: ignore[valid-type]
    charging_schedule: ChargingScheduleInput
    transaction_id: int | None = None
    recurrency_kind: RecurrencyKind | None = None  # type: ignore[valid-type]
    valid_from: datetime | None = None
    valid_to: datetime | None = None


# ------------------------------------------------------------------ local list inputs
@strawberry.input(description="OCPP IdTagInfo for a local authorization list entry.")
class IdTagInfoInput:
    status: AuthorizationStatus  # type: ignore[valid-type]
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None


@strawberry.input(description="OCPP AuthorizationData.")
class AuthorizationDataInput:
    id_tag: str
    id_tag_info: IdTagInfoInput | None = strawberry.field(
        default=None, description="Leave out to remove the tag (differential updates)."
    )


# ------------------------------------------------------------------ results
@strawberry.type(description=(
    "One configuration key of a charger: as it answered `getConfiguration`, or as "
    "`Station.configuration` keeps it from its answers (shown while it is offline)."))
class ConfigurationKey:
    key: str = strawberry.field(description="As the charger spells it (OCPP keys are "
                                            "compared without regard to case).")
    readonly: bool = strawberry.field(description="The charger does not let it be changed.")
    value: str | None = strawberry.field(description="Null when the charger gave none, and "
                                                     "for a `masked` key.")
    masked: bool = strawberry.field(default=False, description=(
        "A secret whose value is never stored nor shown: `AuthorizationKey` (the "
        "charger's Basic-auth password, OCPP 1.6 security profiles 1 and 2) and any key "
        "named for a password or secret."))
    read_at: datetime | None = strawberry.field(default=None, description=(
        "When a `getConfiguration` answer last gave it; null when known only from a "
        "change."))
    changed_at: datetime | None = strawberry.field(default=None, description=(
        "When the charger last took a `changeConfiguration` of it (ACCEPTED or "
        "REBOOT_REQUIRED); null when none went through the service."))
    reboot_required: bool = strawberry.field(default=False, description=(
        "Its last change was answered REBOOT_REQUIRED and the charger has not booted "
        "since: `value` applies from its next boot."))


@strawberry.type
class ChargingSchedulePeriod:
    start_period: int
    limit: float
    number_phases: int | None


@strawberry.type
class ChargingSchedule:
    charging_rate_unit: ChargingRateUnitType  # type: ignore[valid-type]
    charging_schedule_period: list[ChargingSchedulePeriod]
    duration: int | None
    start_schedule: datetime | None
    min_charging_rate: float | None

    @classmethod
    def from_ocpp(cls, data: dict[str, Any]) -> ChargingSchedule:
        start = data.get("startSchedule")
        return cls(
            charging_rate_unit=ocpp16.ChargingRateUnitType(data["chargingRateUnit"]),
            charging_schedule_period=[
                ChargingSchedulePeriod(start_period=int(p["startPeriod"]),
                                       limit=float(p["limit"]),
                                       number_phases=p.get("numberPhases"))
                for p in data.get("chargingSchedulePeriod", [])
            ],
            duration=data.get("duration"),
            start_schedule=datetime.fromisoformat(start) if start else None,
            min_charging_rate=float(data["minChargingRate"])
            if data.get("minChargingRate") is not None else None,
        )
