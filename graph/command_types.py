"""GraphQL shapes of OCPP 1.6 commands: enums, nested inputs mirroring the OCPP schema,
and result types."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.utils.str_converters import to_camel_case

from domain import ocpp16

# Registered as GraphQL enums; the names below are the classes themselves.
for _enum, _description in (
    (ocpp16.ResetType, "OCPP 1.6 ResetType: how a charger restarts."),
    (ocpp16.ResetStatus, "OCPP 1.6 ResetStatus: a charger's answer to `reset`."),
    (ocpp16.UnlockStatus, "OCPP 1.6 UnlockStatus: a charger's answer to `unlockConnector`."),
    (ocpp16.AvailabilityType, "OCPP 1.6 AvailabilityType: in or out of service."),
    (ocpp16.AvailabilityStatus,
     "OCPP 1.6 AvailabilityStatus: a charger's answer to `changeAvailability`."),
    (ocpp16.ConfigurationStatus,
     "OCPP 1.6 ConfigurationStatus: a charger's answer to `changeConfiguration`."),
    (ocpp16.ClearCacheStatus, "OCPP 1.6 ClearCacheStatus: a charger's answer to "
                              "`clearCache`."),
    (ocpp16.MessageTrigger, "OCPP 1.6 MessageTrigger: the message `triggerMessage` asks "
                            "a charger to send now."),
    (ocpp16.TriggerMessageStatus,
     "OCPP 1.6 TriggerMessageStatus: a charger's answer to `triggerMessage`."),
    (ocpp16.DataTransferStatus,
     "OCPP 1.6 DataTransferStatus: a charger's answer to `dataTransfer`."),
    (ocpp16.ReservationStatus, "OCPP 1.6 ReservationStatus: a charger's answer to "
                               "`reserveNow`."),
    (ocpp16.CancelReservationStatus,
     "OCPP 1.6 CancelReservationStatus: a charger's answer to `cancelReservation`."),
    (ocpp16.ChargingProfileStatus,
     "OCPP 1.6 ChargingProfileStatus: a charger's answer to `setChargingProfile`."),
    (ocpp16.ClearChargingProfileStatus,
     "OCPP 1.6 ClearChargingProfileStatus: a charger's answer to `clearChargingProfile`."),
    (ocpp16.GetCompositeScheduleStatus,
     "OCPP 1.6 GetCompositeScheduleStatus: a charger's answer to `getCompositeSchedule`."),
    (ocpp16.UpdateType, "OCPP 1.6 UpdateType: how `sendLocalList` changes a charger's "
                        "local authorization list."),
    (ocpp16.UpdateStatus, "OCPP 1.6 UpdateStatus: a charger's answer to `sendLocalList`."),
    (ocpp16.ChargingProfilePurposeType,
     "OCPP 1.6 ChargingProfilePurposeType: what a charging profile limits."),
    (ocpp16.ChargingProfileKindType,
     "OCPP 1.6 ChargingProfileKindType: when a charging profile's schedule starts."),
    (ocpp16.RecurrencyKind, "OCPP 1.6 RecurrencyKind: how often a RECURRING profile's "
                            "schedule repeats."),
    (ocpp16.ChargingRateUnitType,
     "OCPP 1.6 ChargingRateUnitType: the unit of a charging schedule's limits."),
    (ocpp16.RemoteStartStopStatus,
     "OCPP 1.6 RemoteStartStopStatus: a charger's answer to `remoteStartTransaction` or "
     "`remoteStopTransaction`."),
    (ocpp16.AuthorizationStatus,
     "OCPP 1.6 AuthorizationStatus: what a charger is told of an id tag."),
    # What chargers report, shown on records and events (DESIGN §6: enumerations, OCPP's
    # included, by name). A stored value outside one reads as its fallback
    # (``ocpp16.member``).
    (ocpp16.ChargePointErrorCode,
     "OCPP 1.6 ChargePointErrorCode: what a charger reports is wrong with a connector "
     "(NO_ERROR when nothing is); a stored code OCPP 1.6 does not have reads OTHER_ERROR."),
    (ocpp16.FirmwareStatus,
     "OCPP 1.6 FirmwareStatus, a charger's firmware update's progress, and ChargeGraph's "
     "REQUESTED and UNANSWERED."),
    (ocpp16.DiagnosticsStatus,
     "OCPP 1.6 DiagnosticsStatus, a charger's diagnostics upload's progress, and "
     "ChargeGraph's REQUESTED."),
    (ocpp16.UnitOfMeasure, "OCPP 1.6 UnitOfMeasure: the unit of a sampled value."),
    (ocpp16.Phase, "OCPP 1.6 Phase: the phase a value was measured on."),
    (ocpp16.ReadingContext,
     "OCPP 1.6 ReadingContext: why a value was sampled; a stored context OCPP 1.6 does "
     "not have reads OTHER."),
):
    strawberry.enum(_enum, description=_description)
# Named apart from OCPP's: ``Reason`` says little on its own, and ``Location`` is a
# station's place.
strawberry.enum(ocpp16.Reason, name="StopReason", description=(
    "OCPP 1.6 Reason: why a transaction stopped; a stored reason OCPP 1.6 does not have "
    "reads OTHER."))
strawberry.enum(ocpp16.Location, name="MeterLocation", description=(
    "OCPP 1.6 Location: where a sampled value was measured."))

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
ChargePointErrorCode = ocpp16.ChargePointErrorCode
StopReason = ocpp16.Reason
FirmwareStatus = ocpp16.FirmwareStatus
DiagnosticsStatus = ocpp16.DiagnosticsStatus
UnitOfMeasure = ocpp16.UnitOfMeasure
Phase = ocpp16.Phase
ReadingContext = ocpp16.ReadingContext
MeterLocation = ocpp16.Location


#: A stored errorCode as the API shows it (OTHER_ERROR for one OCPP 1.6 has not).
shown_error_code = ocpp16.shown_error_code

#: The values' descriptions of the OCPP 1.6 enumerations, by GraphQL enum and value name
#: (the meaning OCPP 1.6 gives each). ``domain.ocpp16`` knows nothing of GraphQL, so
#: these are given to the schema when it is built, as ``graph.enums.VALUE_DESCRIPTIONS``
#: are (``graph.schema.describe_shared_arguments``).
OCPP_VALUE_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "ResetType": {
        "HARD": "Restart the hardware at once; transactions under way are stopped "
                "(reason HardReset).",
        "SOFT": "Stop transactions under way gracefully (reason SoftReset), then restart "
                "the software.",
    },
    "ResetStatus": {
        "ACCEPTED": "The charger will reset.",
        "REJECTED": "The charger will not reset.",
    },
    "UnlockStatus": {
        "UNLOCKED": "The connector's cable lock was released.",
        "UNLOCK_FAILED": "The charger tried and failed to release the lock.",
        "NOT_SUPPORTED": "The connector has no lock to release (e.g. a tethered cable).",
    },
    "AvailabilityType": {
        "INOPERATIVE": "Out of service: the connector (0: every connector) reports "
                       "UNAVAILABLE and charges nobody.",
        "OPERATIVE": "Back in service.",
    },
    "AvailabilityStatus": {
        "ACCEPTED": "Changed now.",
        "REJECTED": "Refused: nothing changes.",
        "SCHEDULED": "A transaction is under way: the change happens when it ends.",
    },
    "ConfigurationStatus": {
        "ACCEPTED": "The new value is in force.",
        "REJECTED": "Refused: the key is read-only or the value not acceptable.",
        "REBOOT_REQUIRED": "Stored; it applies from the charger's next reboot.",
        "NOT_SUPPORTED": "The charger does not know the key.",
    },
    "ClearCacheStatus": {
        "ACCEPTED": "The charger's authorization cache was cleared.",
        "REJECTED": "Not cleared (e.g. the charger keeps no cache).",
    },
    "MessageTrigger": {
        "BOOT_NOTIFICATION": "A BootNotification (the charger's model, firmware; answered "
                             "with its registration).",
        "FIRMWARE_STATUS_NOTIFICATION": "A FirmwareStatusNotification: where a firmware "
                                        "update is.",
        "HEARTBEAT": "A Heartbeat.",
        "METER_VALUES": "MeterValues of the connector given (all without one).",
        "STATUS_NOTIFICATION": "A StatusNotification of the connector given (all "
                               "without one).",
        "DIAGNOSTICS_STATUS_NOTIFICATION": "A DiagnosticsStatusNotification: where a "
                                           "diagnostics upload is.",
    },
    "TriggerMessageStatus": {
        "ACCEPTED": "The charger will send the message.",
        "REJECTED": "It will not (e.g. the connector id is not one of its own).",
        "NOT_IMPLEMENTED": "It cannot be asked for this message.",
    },
    "DataTransferStatus": {
        "ACCEPTED": "The vendor's handler on the charger took the message.",
        "REJECTED": "The vendor's handler refused it.",
        "UNKNOWN_MESSAGE_ID": "The vendorId is known, the messageId is not.",
        "UNKNOWN_VENDOR_ID": "The charger has no handler for the vendorId.",
    },
    "ReservationStatus": {
        "ACCEPTED": "The connector is held for the tag (or its group) until `expiresAt`.",
        "FAULTED": "Refused: the connector or the charger is faulted.",
        "OCCUPIED": "Refused: the connector is in use or reserved for another tag.",
        "REJECTED": "Refused: the charger takes no reservations (or none for connector "
                    "0).",
        "UNAVAILABLE": "Refused: the connector is out of service (UNAVAILABLE).",
    },
    "CancelReservationStatus": {
        "ACCEPTED": "The charger ended the reservation.",
        "REJECTED": "The charger holds no reservation of that id (it is over either way).",
    },
    "ChargingProfileStatus": {
        "ACCEPTED": "The charger installed the profile.",
        "REJECTED": "The charger refused the profile.",
        "NOT_SUPPORTED": "The charger does no smart charging.",
    },
    "ClearChargingProfileStatus": {
        "ACCEPTED": "The profiles matching the criteria were cleared.",
        "UNKNOWN": "No profile matched the criteria.",
    },
    "GetCompositeScheduleStatus": {
        "ACCEPTED": "The schedule is in the answer.",
        "REJECTED": "The charger cannot give one (e.g. an unknown connector).",
    },
    "UpdateType": {
        "DIFFERENTIAL": "Change the tags listed: an entry with `idTagInfo` adds or updates "
                        "its tag, one without removes it.",
        "FULL": "Replace the whole list with the entries given (none: empty it).",
    },
    "UpdateStatus": {
        "ACCEPTED": "The list now has the version sent.",
        "FAILED": "Updating the list failed.",
        "NOT_SUPPORTED": "The charger keeps no local list.",
        "VERSION_MISMATCH": "A differential update whose version is not newer than the "
                            "charger's list: send a FULL one.",
    },
    "ChargingProfilePurposeType": {
        "CHARGE_POINT_MAX_PROFILE": "Limits the charge point as a whole (connector 0).",
        "TX_DEFAULT_PROFILE": "The default for transactions to come, on one connector (0: "
                              "on every connector).",
        "TX_PROFILE": "Limits one transaction under way on its connector, over the "
                      "default.",
    },
    "ChargingProfileKindType": {
        "ABSOLUTE": "The schedule starts at its `startSchedule`.",
        "RECURRING": "The schedule repeats daily or weekly (`recurrencyKind`) from its "
                     "`startSchedule`.",
        "RELATIVE": "The schedule starts when the charger decides, such as the "
                    "transaction's start.",
    },
    "RecurrencyKind": {
        "DAILY": "Repeats every 24 hours from `startSchedule`.",
        "WEEKLY": "Repeats every 7 days from `startSchedule`.",
    },
    "ChargingRateUnitType": {
        "W": "Watts: a power limit.",
        "A": "Amperes per phase: a current limit.",
    },
    "RemoteStartStopStatus": {
        "ACCEPTED": "The charger will try to start (or stop) the transaction: "
                    "`sessionUpdated` tells when it did.",
        "REJECTED": "The charger will not.",
    },
    "AuthorizationStatus": {
        "ACCEPTED": "May charge.",
        "BLOCKED": "Refused: the tag is blocked.",
        "EXPIRED": "Refused: the tag is past its expiry.",
        "INVALID": "Refused: the tag is unknown or not valid here.",
        "CONCURRENT_TX": "Refused: the tag is charging in another transaction already.",
    },
    "Measurand": {
        "ENERGY_ACTIVE_EXPORT_REGISTER": "`Energy.Active.Export.Register`: active energy "
                                         "fed back to the grid, the meter's register "
                                         "(Wh or kWh).",
        "ENERGY_ACTIVE_IMPORT_REGISTER": "`Energy.Active.Import.Register`: active energy "
                                         "delivered to the car, the meter's register (Wh "
                                         "or kWh): what a session's energy is counted "
                                         "from.",
        "ENERGY_REACTIVE_EXPORT_REGISTER": "`Energy.Reactive.Export.Register`: reactive "
                                           "energy exported, the register (varh or "
                                           "kvarh).",
        "ENERGY_REACTIVE_IMPORT_REGISTER": "`Energy.Reactive.Import.Register`: reactive "
                                           "energy imported, the register (varh or "
                                           "kvarh).",
        "ENERGY_ACTIVE_EXPORT_INTERVAL": "`Energy.Active.Export.Interval`: active energy "
                                         "exported in the last interval (Wh or kWh).",
        "ENERGY_ACTIVE_IMPORT_INTERVAL": "`Energy.Active.Import.Interval`: active energy "
                                         "imported in the last interval (Wh or kWh).",
        "ENERGY_REACTIVE_EXPORT_INTERVAL": "`Energy.Reactive.Export.Interval`: reactive "
                                           "energy exported in the last interval (varh "
                                           "or kvarh).",
        "ENERGY_REACTIVE_IMPORT_INTERVAL": "`Energy.Reactive.Import.Interval`: reactive "
                                           "energy imported in the last interval (varh "
                                           "or kvarh).",
        "POWER_ACTIVE_EXPORT": "`Power.Active.Export`: active power fed back to the grid "
                               "(W or kW).",
        "POWER_ACTIVE_IMPORT": "`Power.Active.Import`: active power delivered to the car "
                               "(W or kW): a session's `powerKw`.",
        "POWER_OFFERED": "`Power.Offered`: the most power offered to the car (W or kW).",
        "POWER_REACTIVE_EXPORT": "`Power.Reactive.Export`: reactive power exported (var "
                                 "or kvar).",
        "POWER_REACTIVE_IMPORT": "`Power.Reactive.Import`: reactive power imported (var "
                                 "or kvar).",
        "POWER_FACTOR": "`Power.Factor`: the power factor of the energy flow.",
        "CURRENT_IMPORT": "`Current.Import`: current delivered to the car (A).",
        "CURRENT_EXPORT": "`Current.Export`: current fed back from the car (A).",
        "CURRENT_OFFERED": "`Current.Offered`: the most current offered to the car (A).",
        "VOLTAGE": "`Voltage`: AC RMS supply voltage (V).",
        "FREQUENCY": "`Frequency`: power line frequency (Hz).",
        "TEMPERATURE": "`Temperature`: a temperature in the charger (Celsius, Fahrenheit "
                       "or K).",
        "SOC": "`SoC`: the car's State of Charge (percent): a session's `socPercent`.",
        "RPM": "`RPM`: a fan's speed (revolutions per minute).",
    },
    "ChargePointErrorCode": {
        "CONNECTOR_LOCK_FAILURE": "`ConnectorLockFailure`: the cable could not be locked "
                                  "or unlocked.",
        "EV_COMMUNICATION_ERROR": "`EVCommunicationError`: talking to the car failed.",
        "GROUND_FAILURE": "`GroundFailure`: earth fault (the RCD tripped).",
        "HIGH_TEMPERATURE": "`HighTemperature`: too hot inside.",
        "INTERNAL_ERROR": "`InternalError`: a hardware or software fault.",
        "LOCAL_LIST_CONFLICT": "`LocalListConflict`: the local authorization list "
                               "contradicts the central system's answer for a tag.",
        "NO_ERROR": "`NoError`: healthy (a FAULTED status may still come with it: the "
                    "cause is then in `vendorErrorCode` and `info`).",
        "OTHER_ERROR": "`OtherError`: another error (see `vendorErrorCode`); also a stored "
                       "code OCPP 1.6 does not have.",
        "OVER_CURRENT_FAILURE": "`OverCurrentFailure`: the car drew more current than "
                                "allowed.",
        "OVER_VOLTAGE": "`OverVoltage`: the supply voltage is too high.",
        "POWER_METER_FAILURE": "`PowerMeterFailure`: the meter cannot be read.",
        "POWER_SWITCH_FAILURE": "`PowerSwitchFailure`: the contactor failed.",
        "READER_FAILURE": "`ReaderFailure`: the card reader failed.",
        "RESET_FAILURE": "`ResetFailure`: a reset failed.",
        "UNDER_VOLTAGE": "`UnderVoltage`: the supply voltage is too low.",
        "WEAK_SIGNAL": "`WeakSignal`: the charger's network link is weak.",
    },
    "StopReason": {
        "DE_AUTHORIZED": "`DeAuthorized`: the central system refused the tag that "
                         "started it (at its StartTransaction).",
        "EMERGENCY_STOP": "`EmergencyStop`: the emergency stop was pressed.",
        "EV_DISCONNECTED": "`EVDisconnected`: the cable was pulled from the car.",
        "HARD_RESET": "`HardReset`: a hard reset (`reset(type: HARD)`).",
        "LOCAL": "`Local`: stopped at the charger (a card, a button); also a stop that "
                 "gave no reason.",
        "OTHER": "`Other`: another reason; also a session closed without its "
                 "StopTransaction (lost, or `endSession`), and a stored reason OCPP 1.6 "
                 "does not have.",
        "POWER_LOSS": "`PowerLoss`: the charger lost power.",
        "REBOOT": "`Reboot`: the charger restarted on its own.",
        "REMOTE": "`Remote`: stopped remotely (`remoteStopTransaction`).",
        "SOFT_RESET": "`SoftReset`: a soft reset (`reset(type: SOFT)`).",
        "UNLOCK_COMMAND": "`UnlockCommand`: an `unlockConnector` ended it.",
    },
    "FirmwareStatus": {
        "DOWNLOADED": "`Downloaded`: the new firmware is on the charger.",
        "DOWNLOAD_FAILED": "`DownloadFailed`: the download failed.",
        "DOWNLOADING": "`Downloading`: the firmware is being downloaded.",
        "IDLE": "`Idle`: no update under way.",
        "INSTALLATION_FAILED": "`InstallationFailed`: installing it failed.",
        "INSTALLING": "`Installing`: it is being installed.",
        "INSTALLED": "`Installed`: the new firmware is installed.",
        "REQUESTED": "ChargeGraph's: an `updateFirmware` the charger accepted, not "
                     "reported on yet.",
        "UNANSWERED": "ChargeGraph's: an `updateFirmware` the charger did not answer in "
                      "time (it may have started it).",
    },
    "DiagnosticsStatus": {
        "IDLE": "`Idle`: no upload under way.",
        "UPLOADED": "`Uploaded`: the diagnostics file was uploaded.",
        "UPLOAD_FAILED": "`UploadFailed`: the upload failed.",
        "UPLOADING": "`Uploading`: the file is being uploaded.",
        "REQUESTED": "ChargeGraph's: a `getDiagnostics` the charger accepted, not "
                     "reported on yet.",
    },
    "UnitOfMeasure": {
        "WH": "`Wh`: watt-hours.",
        "KWH": "`kWh`: kilowatt-hours.",
        "VARH": "`varh`: volt-ampere reactive hours.",
        "KVARH": "`kvarh`: kilovolt-ampere reactive hours.",
        "W": "`W`: watts.",
        "KW": "`kW`: kilowatts.",
        "VA": "`VA`: volt-amperes.",
        "KVA": "`kVA`: kilovolt-amperes.",
        "VAR": "`var`: volt-amperes reactive.",
        "KVAR": "`kvar`: kilovolt-amperes reactive.",
        "A": "`A`: amperes.",
        "V": "`V`: volts.",
        "K": "`K`: kelvin.",
        "CELSIUS": "`Celsius` (or OCPP 1.6's misspelling `Celcius`): degrees Celsius.",
        "FAHRENHEIT": "`Fahrenheit`: degrees Fahrenheit.",
        "PERCENT": "`Percent`: a percentage (State of Charge).",
        "HERTZ": "`Hertz`: frequency.",
    },
    "Phase": {
        "L1": "`L1`: current on phase 1.",
        "L2": "`L2`: current on phase 2.",
        "L3": "`L3`: current on phase 3.",
        "N": "`N`: current on the neutral.",
        "L1_N": "`L1-N`: voltage of phase 1 to neutral.",
        "L2_N": "`L2-N`: voltage of phase 2 to neutral.",
        "L3_N": "`L3-N`: voltage of phase 3 to neutral.",
        "L1_L2": "`L1-L2`: voltage between phases 1 and 2.",
        "L2_L3": "`L2-L3`: voltage between phases 2 and 3.",
        "L3_L1": "`L3-L1`: voltage between phases 3 and 1.",
    },
    "ReadingContext": {
        "INTERRUPTION_BEGIN": "`Interruption.Begin`: when the supply was interrupted.",
        "INTERRUPTION_END": "`Interruption.End`: when the supply came back.",
        "OTHER": "`Other`: another reason; also a stored context OCPP 1.6 does not have.",
        "SAMPLE_CLOCK": "`Sample.Clock`: at a clock-aligned interval.",
        "SAMPLE_PERIODIC": "`Sample.Periodic`: at the transaction's sampling interval.",
        "TRANSACTION_BEGIN": "`Transaction.Begin`: at the transaction's start.",
        "TRANSACTION_END": "`Transaction.End`: at the transaction's end.",
        "TRIGGER": "`Trigger`: asked for by `triggerMessage`.",
    },
    "MeterLocation": {
        "BODY": "`Body`: inside the charger.",
        "CABLE": "`Cable`: in the cable.",
        "EV": "`EV`: in the car.",
        "INLET": "`Inlet`: at the charger's grid connection.",
        "OUTLET": "`Outlet`: at the connector, what the car gets.",
    },
}


def to_ocpp(value: Any) -> Any:
    """A strawberry input (tree) as an OCPP payload: camelCase keys, enum values, fields
    left out or null dropped."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None or item is strawberry.UNSET:
                continue
            out[to_camel_case(f.name)] = to_ocpp(item)
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
    number_phases: int | None = strawberry.field(default=None, description=(
        "Phases the car may charge on, 1 to 3; left out: 3."))


@strawberry.input(description="OCPP ChargingSchedule.")
class ChargingScheduleInput:
    charging_rate_unit: ChargingRateUnitType = strawberry.field(  # type: ignore[valid-type]
        description="The unit of `limit` and `minChargingRate`: W (limits up to "
                    "10,000,000) or A (up to 3,000).")
    charging_schedule_period: list[ChargingSchedulePeriodInput] = strawberry.field(
        description="At least one: the first starting at 0, each later one after the one "
                    "before.")
    duration: int | None = strawberry.field(default=None, description=(
        "Seconds the schedule lasts; left out: its last period goes on until the "
        "transaction ends or another profile takes over."))
    start_schedule: datetime | None = strawberry.field(default=None, description=(
        "When an ABSOLUTE or RECURRING schedule starts; left out: relative to the start "
        "of charging."))
    min_charging_rate: float | None = strawberry.field(default=None, description=(
        "The least rate the car charges at, in the schedule's unit (0.1 steps): a charger "
        "may use it to share power."))


@strawberry.input(description="OCPP csChargingProfiles / chargingProfile.")
class ChargingProfileInput:
    charging_profile_id: int = strawberry.field(description=(
        "The profile's id, 0 or more: one with the id of a profile the charger holds "
        "replaces it."))
    stack_level: int = strawberry.field(description=(
        "0 to 100: of the profiles of one purpose in force at once, the highest level "
        "applies."))
    charging_profile_purpose: ChargingProfilePurposeType = strawberry.field(  # type: ignore[valid-type]
        description="What it limits; a remote start's profile is a TX_PROFILE.")
    charging_profile_kind: ChargingProfileKindType = strawberry.field(  # type: ignore[valid-type]
        description="When its schedule starts.")
    charging_schedule: ChargingScheduleInput = strawberry.field(description="The limits "
                                                                            "over time.")
    transaction_id: int | None = strawberry.field(default=None, description=(
        "A TX_PROFILE's transaction (OCPP transactionId), under way on the connector; left "
        "out: the one under way there. Not with a remote start, nor a TX_DEFAULT_PROFILE."))
    recurrency_kind: RecurrencyKind | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Required with RECURRING.")
    valid_from: datetime | None = strawberry.field(default=None, description=(
        "When the profile starts to apply; left out: at once."))
    valid_to: datetime | None = strawberry.field(default=None, description=(
        "When it stops applying: in the future and after `validFrom` (else "
        "`OUT_OF_RANGE`); left out: until replaced or cleared."))


# ------------------------------------------------------------------ local list inputs
@strawberry.input(description="OCPP IdTagInfo for a local authorization list entry.")
class IdTagInfoInput:
    status: AuthorizationStatus = strawberry.field(  # type: ignore[valid-type]
        description="What the charger answers for the tag from its list.")
    expires_at: datetime | None = strawberry.field(default=None, description=(
        "When the charger stops accepting the tag (as `IdTag.expiresAt`); left out: no "
        "expiry. Not with the deprecated `expiryDate` (INVALID with both)."))
    expiry_date: datetime | None = strawberry.field(
        default=None, deprecation_reason="Use `expiresAt`, as `IdTag.expiresAt` reads it; "
                                         "not with it.",
        description="When the charger stops accepting the tag, by OCPP's name.")
    parent_id_tag: str | None = strawberry.field(default=None, description=(
        "The tag's group (OCPP parentIdTag, at most 20 characters)."))


@strawberry.input(description="OCPP AuthorizationData.")
class AuthorizationDataInput:
    id_tag: str = strawberry.field(description=(
        "The tag, at most 20 printable ASCII characters, sent upper case (OCPP id tags "
        "are case-insensitive)."))
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
        "named for a password, secret, token, pre-shared key, credential, API key or "
        "private key (`BackendPassword`, `MqttPwd`, `ApiToken`, `WifiPSK`, …)."))
    read_at: datetime | None = strawberry.field(default=None, description=(
        "When a `getConfiguration` answer last gave it; null when known only from a "
        "change. While `rebootRequired`, an answer giving another value (the one still "
        "in force) is not recorded."))
    changed_at: datetime | None = strawberry.field(default=None, description=(
        "When the charger last took a `changeConfiguration` of it (ACCEPTED or "
        "REBOOT_REQUIRED); null when none went through the service."))
    reboot_required: bool = strawberry.field(default=False, description=(
        "Its last change was answered REBOOT_REQUIRED and the charger has not booted "
        "since: `value` is the one set, which applies from its next boot (a "
        "`getConfiguration` meanwhile answers the one still in force and does not "
        "replace it here; one giving the value set does not clear this: only a boot "
        "does)."))
    value_in_force: str | None = strawberry.field(default=None, description=(
        "In `Station.configuration`: the value the charger runs with now, as far as "
        "known. While `rebootRequired`, the one that change replaced, if it was known "
        "since the charger's last boot and before the change was sent (a read after "
        "the send may give the value set; null: not known until its next boot; a "
        "`LocalAuthListMaxLength` or `SendLocalListMaxLength` not known since the boot "
        "is read before it is changed, so that it is if the charger answers in a short "
        "share of the command's time, and local lists are not judged by one not known); "
        "otherwise `value`. Null for a `masked` key, and in a `getConfiguration` "
        "answer (its `value` is the charger's own)."))


@strawberry.type(description="One period of a charger's schedule (OCPP "
                             "ChargingSchedulePeriod).")
class ChargingSchedulePeriod:
    start_period: int = strawberry.field(description="Seconds from the schedule's start.")
    limit: float = strawberry.field(description="In the schedule's unit (W, or A per "
                                                "phase).")
    number_phases: int | None = strawberry.field(description=(
        "Phases the car may charge on; null: the charger did not say (OCPP reads 3)."))


@strawberry.type(description="A charging schedule as a charger reported it (OCPP "
                             "ChargingSchedule of a `getCompositeSchedule` answer).")
class ChargingSchedule:
    charging_rate_unit: ChargingRateUnitType = strawberry.field(  # type: ignore[valid-type]
        description="The unit of `limit` and `minChargingRate`.")
    charging_schedule_period: list[ChargingSchedulePeriod] = strawberry.field(
        description="The periods, in the order of their start.")
    duration: int | None = strawberry.field(description=(
        "Seconds the schedule lasts; null: its last period goes on."))
    start_schedule: datetime | None = strawberry.field(description=(
        "When the schedule starts, UTC; null: not given by the charger."))
    min_charging_rate: float | None = strawberry.field(description=(
        "The least rate the car charges at, in the schedule's unit; null: not given."))

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
