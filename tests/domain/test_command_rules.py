"""Cross-field rules of OCPP 1.6 commands that pass (as the payload arrives from GraphQL,
with the 1.6 enums): a refusal test alone could not tell a rule from a typo in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import ocpp16
from domain.command_rules import MAX_RETRIEVE_AHEAD, check_command
from domain.errors import ValidationError

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def check(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``check_command`` on 2026-12-05, 10:00 UTC."""
    return check_command(action, payload, now=NOW)


PERIODS = {"chargingRateUnit": ocpp16.ChargingRateUnitType.A,
           "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}


def test_a_remote_start_with_its_transactions_profile_passes() -> None:
    profile = {"chargingProfileId": 1, "stackLevel": 0,
               "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_PROFILE,
               "chargingProfileKind": ocpp16.ChargingProfileKindType.RELATIVE,
               "chargingSchedule": PERIODS}
    checked = check("RemoteStartTransaction", {"connectorId": 1, "idTag": "tag",
                                                       "chargingProfile": profile})
    assert checked["chargingProfile"] == profile and checked["idTag"] == "TAG"


def test_a_recurring_profile_with_its_kind_and_a_full_list_with_its_info_pass() -> None:
    recurring = {"chargingProfileId": 2, "stackLevel": 0,
                 "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_PROFILE,
                 "chargingProfileKind": ocpp16.ChargingProfileKindType.RECURRING,
                 "recurrencyKind": ocpp16.RecurrencyKind.DAILY,
                 "chargingSchedule": PERIODS}
    check("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": recurring})
    check("SendLocalList", {
        "listVersion": 2, "updateType": ocpp16.UpdateType.DIFFERENTIAL,
        "localAuthorizationList": [{"idTag": "GONE"}]})  # a removal


def test_limits_go_in_steps_of_a_tenth_as_the_client_wrote_them() -> None:
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
        check("SetChargingProfile", profile(fine))
    for wrong, field in ((16.35, "csChargingProfiles.chargingSchedule."
                                 "chargingSchedulePeriod.1.limit"),
                         (0.05, "csChargingProfiles.chargingSchedule."
                                "chargingSchedulePeriod.1.limit")):
        with pytest.raises(ValidationError) as info:
            check("SetChargingProfile", profile(wrong))
        assert (info.value.field, info.value.code) == (field, "INVALID")
    with pytest.raises(ValidationError) as info:
        check("SetChargingProfile", profile(16.0, minimum=6.25))
    assert info.value.field == "csChargingProfiles.chargingSchedule.minChargingRate"


def test_a_profile_ending_in_the_past_is_refused() -> None:
    """A profile whose ``validTo`` has passed would never apply: the charger accepts it
    and the operator believes a limit is set (QA s20, time 2). Refused wherever the
    profile sits, with or without ``validFrom``, as a reservation's past expiry is."""

    def profile(**times: datetime) -> dict[str, Any]:
        return {"chargingProfileId": 1, "stackLevel": 0,
                "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_DEFAULT_PROFILE,
                "chargingProfileKind": ocpp16.ChargingProfileKindType.ABSOLUTE,
                "chargingSchedule": PERIODS, **times}

    dec = {day: datetime(2026, 12, day, tzinfo=UTC) for day in (1, 2)}
    for times in ({"validFrom": dec[1], "validTo": dec[2]}, {"validTo": dec[2]},
                  {"validTo": NOW}):
        with pytest.raises(ValidationError) as info:
            check("SetChargingProfile", {"connectorId": 1,
                                         "csChargingProfiles": profile(**times)})
        assert (info.value.field, info.value.code) == ("csChargingProfiles.validTo",
                                                       "OUT_OF_RANGE")
        with pytest.raises(ValidationError) as info:
            check("RemoteStartTransaction", {"idTag": "tag", "chargingProfile": {
                **profile(**times),
                "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_PROFILE}})
        assert (info.value.field, info.value.code) == ("chargingProfile.validTo",
                                                       "OUT_OF_RANGE")
    # Begun already and still applying, or to come: sent.
    later = NOW + timedelta(seconds=1)
    for times in ({"validFrom": dec[1], "validTo": later}, {"validTo": later}, {}):
        check("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile(**times)})


def test_a_firmware_retrieve_date_is_at_most_a_year_ahead() -> None:
    """A rollout is planned days or weeks ahead; 2150 held the charger's request for ever
    (QA s20, time 2). A past date means "at once" (OCPP 1.6: not before it)."""
    firmware = {"location": "https://fw.example.com/x.bin"}
    for fine in (datetime(2020, 1, 1, tzinfo=UTC), NOW, NOW + MAX_RETRIEVE_AHEAD):
        check("UpdateFirmware", {**firmware, "retrieveDate": fine})
    for wrong in (NOW + MAX_RETRIEVE_AHEAD + timedelta(seconds=1),
                  datetime(2150, 1, 1, tzinfo=UTC)):
        with pytest.raises(ValidationError) as info:
            check("UpdateFirmware", {**firmware, "retrieveDate": wrong})
        assert (info.value.field, info.value.code) == ("retrieveDate", "OUT_OF_RANGE")


def test_a_password_holding_a_hash_slash_or_question_mark_is_not_audited() -> None:
    """getDiagnostics/updateFirmware accept (``command_rules._url``: a scheme and a
    netloc) an FTP URL whose password holds ``#``, ``/`` or ``?`` unencoded, as users
    type them: its '@' lies past the RFC 3986 authority, so the URL is hidden whole
    after its scheme (review s25, s26: every reading that kept the host and path showed
    a password or a query value in some URL)."""
    from domain.command_rules import RULES
    from domain.services.commands import masked
    for url in ("ftp://diag:p#ss@files.example.com/up", "ftp://diag:12/34@files.example.com/up",
                "ftp://diag:secret?x@files.example.com/up"):
        RULES["location"](url, "location")  # accepted
        shown = masked("GetDiagnostics", {"location": url})["location"]
        assert shown == "ftp://[hidden]", (url, shown)


def test_a_limits_bounds_are_written_out_not_in_scientific_notation() -> None:
    """QA s30: a limit of -5 was told "must be within 0..1e+07"."""
    def refusal(limit: float, unit: str) -> str:
        schedule = {"chargingRateUnit": unit,
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}
        with pytest.raises(ValidationError) as info:
            check("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {
                "chargingProfileId": 1, "stackLevel": 0,
                "chargingProfilePurpose": ocpp16.ChargingProfilePurposeType.TX_DEFAULT_PROFILE,
                "chargingProfileKind": ocpp16.ChargingProfileKindType.RELATIVE,
                "chargingSchedule": schedule}})
        return str(info.value)

    assert refusal(-5, ocpp16.ChargingRateUnitType.A) == "must be within 0..10000000"
    assert refusal(3000.5, ocpp16.ChargingRateUnitType.A) == "at most 3000 A"


@pytest.mark.parametrize(("value", "code", "says"), [
    (" 90", "INVALID", "a HeartbeatInterval is whole seconds, digits only"),
    ("99999999999", "OUT_OF_RANGE", "must be within 1..86400 seconds"),
    ("0", "OUT_OF_RANGE", "must be within 1..86400 seconds"),
    ("86401", "OUT_OF_RANGE", "must be within 1..86400 seconds"),
])
def test_a_heartbeat_interval_change_is_told_its_own_bounds(value: str, code: str,
                                                            says: str) -> None:
    """``HeartbeatInterval`` is judged by its own, stricter check alone: the integer
    keys' check (0..2^31-1) ran first and told a value out of either range the wrong
    bounds, or "a whole number" (review s33)."""
    for key in ("HeartbeatInterval", "heartbeatinterval"):
        with pytest.raises(ValidationError) as refused:
            check("ChangeConfiguration", {"key": key, "value": value})
        assert (refused.value.field, refused.value.code, refused.value.message) == (
            "value", code, says), (key, value)
    assert check("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "0090"})
