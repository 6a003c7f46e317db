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


def test_limits_go_in_steps_of_a_tenth_as_the_client_wrote_them() -> None:
    import pytest

    from domain.errors import ValidationError

    def profile(limit: float, minimum: float = 6.0) -> dict[str, object]:
        return {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 1, "stackLevel": 0,
            "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_DEFAULT_PROFILE,
            "chargingProfileKind": ocpp16.ChargingProfileKindType.ABSOLUTE,
            "chargingSchedule": {**PERIODS, "minChargingRate": minimum,
                                 "chargingSchedulePeriod": [
                                     {"startPeriod": 0, "limit": 16.0},
                                     {"startPeriod": 60, "limit": limit}]}}}

    for fine in (16.3, 2999.5, 0.1, 32, 0):
        check_command("SetChargingProfile", profile(fine))
    for wrong, field in ((16.35, "csChargingProfiles.chargingSchedule."
                                 "chargingSchedulePeriod.1.limit"),
                         (0.05, "csChargingProfiles.chargingSchedule."
                                "chargingSchedulePeriod.1.limit")):
        with pytest.raises(ValidationError) as info:
            check_command("SetChargingProfile", profile(wrong))
        assert (info.value.field, info.value.code) == (field, "INVALID")
    with pytest.raises(ValidationError) as info:
        check_command("SetChargingProfile", profile(16.0, minimum=6.25))
    assert info.value.field == "csChargingProfiles.chargingSchedule.minChargingRate"
