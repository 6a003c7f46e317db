"""reserveNow takes its end as `expiresAt`, the name `Reservation.expiresAt` reads it by,
or as the deprecated `expiryDate` (OCPP's name), exactly one of them (QA s30: a client
wrote one and read the other). A real charger is sent OCPP's `expiryDate` either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run

SELECTION = "status reservation { connectorId expiresAt } errors { field code }"


def faults(answer: dict[str, object]) -> list[tuple[object, object]]:
    return [(e["field"], e["code"]) for e in answer["errors"]]  # type: ignore[attr-defined, index]


async def test_expires_at_or_the_deprecated_expiry_date_exactly_one(central: Central) -> None:
    end = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        for connector, name, tag in ((1, "expiresAt", "TAG-OK"),
                                     (2, "expiryDate", "TAG-OTHER")):
            made = await run(central, "reserveNow", {
                "cpId": "CP-1", "connectorId": connector, "idTag": tag,
                name: end.isoformat()}, SELECTION)
            assert made["errors"] == [] and made["status"] == "ACCEPTED", (name, made)
            assert datetime.fromisoformat(made["reservation"]["expiresAt"]) == end
        # The charger's ocpp library validates the call against the 1.6 schema: it took
        # both, so both went with OCPP's required expiryDate.
        sent = [payload for action, payload in cp.received if action == "ReserveNow"]
        assert [p["connector_id"] for p in sent] == [1, 2]

        # Refused before anything is sent, on the field given: both, neither, and a
        # time in the past under either name.
        base = {"cpId": "CP-1", "connectorId": 0, "idTag": "TAG-OK"}
        for extra, expected in (
                ({"expiresAt": end.isoformat(), "expiryDate": end.isoformat()},
                 [("expiresAt", "INVALID")]),
                ({}, [("expiresAt", "REQUIRED")]),
                ({"expiresAt": past}, [("expiresAt", "INVALID")]),
                ({"expiryDate": past}, [("expiryDate", "INVALID")]),
                # Every fault at once, in the input's order, the end's under its name.
                ({"idTag": "T" * 33, "expiresAt": past, "connectorId": -1},
                 [("connectorId", "OUT_OF_RANGE"), ("expiresAt", "INVALID"),
                  ("idTag", "TOO_LONG")])):
            refused = await run(central, "reserveNow", {**base, **extra}, SELECTION)
            assert refused["status"] is None and refused["reservation"] is None, extra
            assert faults(refused) == expected, extra
        assert [a for a, _ in cp.received if a == "ReserveNow"] == ["ReserveNow"] * 2


async def test_who_is_asking_is_refused_before_the_end_is_judged(central: Central) -> None:
    """A refusal of who is asking comes first and alone (README Errors), whichever way
    the end is wrong: as for an end in the past, so for one left out or named twice
    (review s30: REQUIRED or INVALID on expiresAt came before anything else). A station
    that does not exist is a fault of the stored data: told only once the end is valid
    (QA s31: NOT_FOUND came first and hid it)."""
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for extra, code in (({}, "REQUIRED"), ({"expiresAt": end, "expiryDate": end}, "INVALID"),
                        ({"expiresAt": past}, "INVALID")):
        anonymous = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 0, "idTag": "TAG-OK", **extra}, SELECTION,
            as_user=None)
        assert faults(anonymous) == [(None, "UNAUTHENTICATED")], extra
        nowhere = await run(central, "reserveNow", {
            "cpId": "CP-NOWHERE", "connectorId": 0, **extra}, SELECTION, as_user="driver")
        assert faults(nowhere) == [("expiresAt", code)], extra
    nowhere = await run(central, "reserveNow", {
        "cpId": "CP-NOWHERE", "connectorId": 0, "expiresAt": end}, SELECTION,
        as_user="driver")
    assert faults(nowhere) == [("cpId", "NOT_FOUND")]


async def test_an_end_left_out_or_named_twice_is_told_with_the_other_faults(
        central: Central) -> None:
    """Neither name or both is a fault of the input among its fields', in the input's
    order, as an end in the past is (review s30: it was told alone, hiding the rest)."""
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        for extra, expected in (({}, "REQUIRED"),
                                ({"expiryDate": end, "expiresAt": end}, "INVALID")):
            refused = await run(central, "reserveNow", {
                "idTag": "T" * 33, **extra, "connectorId": -1, "cpId": "CP-1"}, SELECTION)
            assert refused["status"] is None and refused["reservation"] is None, extra
            assert faults(refused) == [("connectorId", "OUT_OF_RANGE"),
                                       ("expiresAt", expected), ("idTag", "TOO_LONG")], extra
        assert not [a for a, _ in cp.received if a == "ReserveNow"]


async def test_a_vehicle_id_naming_no_vehicle_is_judged_after_who_is_asking(
        central: Central) -> None:
    """A ``vehicleId`` that names no vehicle is a fault of the input among its fields',
    after the refusals of who is asking (review s30: INVALID_ID came first, to an
    anonymous caller too), on reserveNow as on remoteStartTransaction."""
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    commands: tuple[tuple[str, dict[str, object], str], ...] = (
        ("reserveNow", {"connectorId": 0, "expiresAt": end}, SELECTION),
        ("remoteStartTransaction", {}, "status errors { field code }"))
    for name, extra, selection in commands:
        anonymous = await run(central, name, {"cpId": "CP-1", "vehicleId": "garbage",
                                              **extra}, selection, as_user=None)
        assert faults(anonymous) == [(None, "UNAUTHENTICATED")], name
        # A station that does not exist is told only once the input is valid (QA s31).
        nowhere = await run(central, name, {"cpId": "CP-NOWHERE", "vehicleId": "garbage",
                                            **extra}, selection, as_user="driver")
        assert faults(nowhere) == [("vehicleId", "INVALID_ID")], name
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        for name, extra, selection in commands:
            refused = await run(central, name, {"cpId": "CP-1", "vehicleId": "garbage",
                                                **extra, "connectorId": -1},
                                selection, as_user="driver")
            assert refused["status"] is None, name
            assert sorted(faults(refused), key=str) == [
                ("connectorId", "OUT_OF_RANGE"), ("vehicleId", "INVALID_ID")], name
        assert not [a for a, _ in cp.received if a in ("ReserveNow",
                                                       "RemoteStartTransaction")]
