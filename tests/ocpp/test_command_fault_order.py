"""Every charger command tells every field of its input at fault at once, and a station
that does not exist (or that the caller does not see: the same answer) only once all are
valid (README, Errors). QA s31: the station's lookup came first, so a command to a
missing station answered ``cpId NOT_FOUND`` alone, and an empty ``cpId`` NOT_FOUND, not
REQUIRED. Refusals of who is asking still come first and alone
(``tests/graph/test_role_refusals.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from graph.ids import to_global_id
from tests.ocpp.conftest import Central
from tests.ocpp.test_commands import run

SELECTION = "errors { field code }"
_PROFILE = {"chargingProfileId": 1, "stackLevel": 0,
            "chargingProfilePurpose": "TX_DEFAULT_PROFILE", "chargingProfileKind": "RELATIVE",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 16}]}}


def commands() -> dict[str, tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]]:
    """Each command mutation: a valid input but for its cpId, what makes it invalid
    (nothing for those with no field that can be), and the faults that tells."""
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    at = "https://example.com/file"
    return {
        "remoteStartTransaction": ({"connectorId": 1, "idTag": "TAG-OK"},
                                   {"connectorId": -1}, [("connectorId", "OUT_OF_RANGE")]),
        "remoteStopTransaction": ({"transactionId": 1}, {"transactionId": -1},
                                  [("transactionId", "OUT_OF_RANGE")]),
        "reset": ({"type": "SOFT"}, {}, []),
        "unlockConnector": ({"connectorId": 1}, {"connectorId": -1},
                            [("connectorId", "OUT_OF_RANGE")]),
        "changeAvailability": ({"connectorId": 1, "type": "INOPERATIVE"},
                               {"connectorId": -1}, [("connectorId", "OUT_OF_RANGE")]),
        "changeConfiguration": ({"key": "MeterValueSampleInterval", "value": "60"},
                                {"key": ""}, [("key", "REQUIRED")]),
        "getConfiguration": ({}, {"key": [""]}, [("key.0", "REQUIRED")]),
        "clearCache": ({}, {}, []),
        "triggerMessage": ({"requestedMessage": "HEARTBEAT"}, {"connectorId": -1},
                           [("connectorId", "OUT_OF_RANGE")]),
        "dataTransfer": ({"vendorId": "acme"}, {"vendorId": ""}, [("vendorId", "REQUIRED")]),
        "reserveNow": ({"connectorId": 0, "idTag": "TAG-OK", "expiresAt": end},
                       {"connectorId": -1, "idTag": ""},
                       [("connectorId", "OUT_OF_RANGE"), ("idTag", "REQUIRED")]),
        "cancelReservation": ({"reservationId": 1}, {"reservationId": -1},
                              [("reservationId", "OUT_OF_RANGE")]),
        "setChargingProfile": ({"connectorId": 1, "csChargingProfiles": _PROFILE},
                               {"csChargingProfiles": {**_PROFILE, "stackLevel": 101}},
                               [("csChargingProfiles.stackLevel", "OUT_OF_RANGE")]),
        "clearChargingProfile": ({}, {"id": -1}, [("id", "OUT_OF_RANGE")]),
        "getCompositeSchedule": ({"connectorId": 1, "duration": 60}, {"duration": -1},
                                 [("duration", "OUT_OF_RANGE")]),
        "getLocalListVersion": ({}, {}, []),
        "sendLocalList": ({"listVersion": 1, "updateType": "FULL"}, {"listVersion": -1},
                          [("listVersion", "OUT_OF_RANGE")]),
        "getDiagnostics": ({"location": at}, {"location": "nope"}, [("location", "INVALID")]),
        "updateFirmware": ({"location": at, "retrieveDate": end}, {"location": "nope"},
                           [("location", "INVALID")]),
    }


def faults(answer: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in answer["errors"]]


async def test_every_command_tells_its_fields_before_the_station_is_looked_up(
        central: Central) -> None:
    """For each command, as an operator: the fields at fault, the same whether the
    station is missing, not theirs to see, or theirs; an empty cpId is REQUIRED, told
    first with them; valid fields, a missing station and one not seen are one answer,
    NOT_FOUND. Nothing reaches a charger: none is connected, and none was asked."""
    for name, (valid, invalid, expected) in commands().items():
        bad = {**valid, **invalid}
        for cp_id, user in (("NOPE", "op"), ("CP-1", "op_other"), ("CP-1", "op")):
            if expected:
                answer = await run(central, name, {"cpId": cp_id, **bad}, SELECTION, user)
                assert faults(answer) == expected, (name, cp_id, user)
        empty = await run(central, name, {"cpId": "", **bad}, SELECTION)
        assert faults(empty) == [("cpId", "REQUIRED"), *expected], name
        missing = await run(central, name, {"cpId": "NOPE", **valid}, SELECTION)
        unseen = await run(central, name, {"cpId": "CP-1", **valid}, SELECTION, "op_other")
        assert faults(missing) == faults(unseen) == [("cpId", "NOT_FOUND")], name


async def test_a_drivers_command_to_a_missing_station_tells_every_field(
        central: Central) -> None:
    """QA s31's case: a driver's start with three fields at fault, to a cpId that names
    no station, is told the three (it was ``cpId NOT_FOUND`` alone); a staff-only
    command is refused them first and alone, whatever its fields."""
    answer = await run(central, "remoteStartTransaction", {
        "cpId": "NOPE", "connectorId": -1, "idTag": "", "vehicleId": "x"}, SELECTION,
        "driver")
    assert faults(answer) == [("connectorId", "OUT_OF_RANGE"), ("idTag", "REQUIRED"),
                              ("vehicleId", "INVALID_ID")]
    reserve = await run(central, "reserveNow", {"cpId": "", "connectorId": -1},
                        SELECTION, "driver")
    assert faults(reserve) == [("cpId", "REQUIRED"), ("connectorId", "OUT_OF_RANGE"),
                               ("expiresAt", "REQUIRED")]
    unlock = await run(central, "unlockConnector", {"cpId": "", "connectorId": -1},
                       SELECTION, "driver")
    assert faults(unlock) == [(None, "FORBIDDEN")]
    # An operator's vehicleId (a driver's shorthand) is a fault of the input, told with
    # the others, whichever station.
    car = to_global_id("vehicle", central.vehicles["car"].id)
    for cp_id in ("NOPE", "CP-1"):
        staff = await run(central, "remoteStartTransaction", {
            "cpId": cp_id, "connectorId": -1, "idTag": "TAG-OK", "vehicleId": car},
            SELECTION)
        assert faults(staff) == [("connectorId", "OUT_OF_RANGE"), ("vehicleId", "INVALID")]
