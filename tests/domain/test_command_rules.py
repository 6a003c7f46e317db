"""Cross-field rules of OCPP 1.6 commands that pass (as the payload arrives from GraphQL,
with the 1.6 enums): a refusal test alone could not tell a rule from a typo in it."""

from __future__ import annotations

from domain import ocpp16
from domain.command_rules import check_command

PERIODS = {"chargingRateUnit": ocpp16.ChargingRateUnitType.A,
           "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}


def test_a_remote_start_with_its_transactions_profile_passes() -> None:
    profile = {"chargingProfileId": 1, "stackLevel": 0,
               "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_PROFILE,
               "chargingProfileKind": ocpp16.ChargingProfileKindType.RELATIVE,
               "chargingSchedule": PERIODS}
    checked = check_command("RemoteStartTransaction", {"connectorId": 1, "idTag": "tag",
                                                       "chargingProfile": profile})
    assert checked["chargingProfile"] == profile and checked["idTag"] == "TAG"


def test_a_recurring_profile_with_its_kind_and_a_full_list_with_its_info_pass() -> None:
    recurring = {"chargingProfileId": 2, "stackLevel": 0,
                 "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_PROFILE,
                 "chargingProfileKind": ocpp16.ChargingProfileKindType.RECURRING,
                 "recurrencyKind": ocpp16.RecurrencyKind.DAILY,
                 "chargingSchedule": PERIODS}
    check_command("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": recurring})
    check_command("SendLocalList", {
        "listVersion": 2, "updateType": ocpp16.UpdateType.DIFFERENTIAL,
        "localAuthorizationList": [{"idTag": "GONE"}]})  # a removal
