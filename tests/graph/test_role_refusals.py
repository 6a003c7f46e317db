"""A refusal of who you are, not of what you sent, has no field (README, Errors): a
driver making a mutation their role may never make is told FORBIDDEN with ``field``
null, first and alone, whatever the input names; a refusal of one value sent (a status
only staff set, a record of another company) names that input (QA s30: as a driver,
``createStation`` and ``endSession`` answered ``field: null``, ``updateStation`` ``id``,
``unlockConnector`` ``cpId``)."""

from __future__ import annotations

from typing import Any

from domain.ids import new_id
from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes, gid
from tests.graph.world import World

#: What each mutation a driver may make is (tested with their refusals elsewhere).
DRIVERS_MAY = {"remoteStartTransaction", "remoteStopTransaction", "reserveNow",
               "cancelReservation", "login", "signUp", "refreshToken", "signOut",
               "changePassword", "updateUser", "signOutEverywhere", "signOutDevice",
               "eraseMyAccount",
               "addVehicle", "updateVehicle", "removeVehicle", "issueIdTag", "updateIdTag",
               "removeIdTag"}


def staff_only(world: World) -> dict[str, dict[str, Any]]:
    """Every other mutation, with an input naming records the driver sees where it can
    (a station on the map, their own session and payment), else of the right kind."""
    station = gid("station", world.stations["A-001"].id)
    connector = gid("connector", world.connectors["A-001"][0].id)
    cp = {"cpId": "A-001"}
    return {
        "reset": {**cp, "type": "SOFT"},
        "unlockConnector": {**cp, "connectorId": 1},
        "changeAvailability": {**cp, "connectorId": 1, "type": "INOPERATIVE"},
        "changeConfiguration": {**cp, "key": "HeartbeatInterval", "value": "60"},
        "getConfiguration": cp,
        "clearCache": cp,
        "triggerMessage": {**cp, "requestedMessage": "HEARTBEAT"},
        "dataTransfer": {**cp, "vendorId": "acme"},
        "setChargingProfile": {**cp, "connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 1, "stackLevel": 0,
            "chargingProfilePurpose": "TX_DEFAULT_PROFILE",
            "chargingProfileKind": "RELATIVE",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 16}]}}},
        "clearChargingProfile": cp,
        "getCompositeSchedule": {**cp, "connectorId": 1, "duration": 60},
        "getLocalListVersion": cp,
        "sendLocalList": {**cp, "listVersion": 1, "updateType": "FULL"},
        "getDiagnostics": {**cp, "location": "https://example.com/up"},
        "updateFirmware": {**cp, "location": "https://example.com/fw",
                           "retrieveDate": "2030-01-01T00:00:00Z"},
        "createWebhook": {"url": "https://example.com/hook", "events": ["SESSION_STARTED"]},
        "updateWebhook": {"id": gid("webhook", new_id())},
        "removeWebhook": {"id": gid("webhook", new_id())},
        "testWebhook": {"id": gid("webhook", new_id())},
        "createSite": {"name": "Yard", "maxPowerKw": 100, "unit": "A"},
        "updateSite": {"id": gid("site", new_id())},
        "removeSite": {"id": gid("site", new_id())},
        "assignStationToSite": {"stationId": station},
        "createCompany": {"name": "Mine"},
        "updateCompany": {"id": gid("company", world.companies["a"].id), "name": "Mine"},
        "createUser": {"email": "new@example.com", "password": "correct horse battery",
                       "name": "New", "role": "DRIVER"},
        "deactivateUser": {"id": gid("user", world.users["driver2"].id)},
        "eraseUser": {"id": gid("user", world.users["driver2"].id)},
        "createStation": {"cpId": "MINE-1", "name": "Mine", "connectors": [
            {"connectorId": 1, "type": "TYPE2", "maxKw": 11}]},
        "updateStation": {"id": station, "name": ""},  # invalid too: refused first
        "removeStation": {"id": station},
        "addConnector": {"stationId": station, "connectorId": 3, "type": "TYPE2",
                         "maxKw": 11},
        "updateConnector": {"id": connector, "maxKw": 11},
        "removeConnector": {"id": connector},
        "endSession": {"id": gid("session", world.sessions["s1"].id)},
        "setTariff": {"stationId": station, "pricePerKwh": "0.5", "currency": "EUR"},
        "removeTariff": {"id": gid("tariff", new_id())},
        "capturePayment": {"id": gid("payment", world.payments["s2"].id)},
        "failPayment": {"id": gid("payment", world.payments["s2"].id)},
        "refundPayment": {"id": gid("payment", world.payments["s2"].id)},
    }


async def test_every_mutation_is_either_a_drivers_or_refused_them_on_no_field(
        api: Api, world: World) -> None:
    schema = await api.gql("{ __type(name: \"Mutation\") { fields { name } } }")
    mutations = {f["name"] for f in schema["__type"]["fields"]}
    refused = staff_only(world)
    assert mutations == DRIVERS_MAY | set(refused), mutations ^ (DRIVERS_MAY | set(refused))
    answers, told = {}, {}
    for mutation, given in refused.items():
        payload = await call(api, world, "driver1", mutation, given, "__typename")
        answers[mutation] = codes(payload)
        told[mutation] = [e["message"] for e in payload["errors"]]
    wrong = {m: a for m, a in answers.items() if a != [(None, "FORBIDDEN")]}
    assert wrong == {}
    # Each told who may (``policy.refuse_unless_staff``, ``refuse_unless``): createStation
    # and createSite wrote their own check, "you may not create stations" (s31).
    vague = {m: t for m, t in told.items() if not t[0].startswith("only ")}
    assert vague == {}


async def id_fields(api: Api, mutation: str) -> list[str]:
    """The fields of ``mutation``'s input that take an id (``ID`` or ``ID!``)."""
    name = mutation[0].upper() + mutation[1:] + "Input"
    answer = await api.gql("""query($n: String!) { __type(name: $n) { inputFields {
      name type { name ofType { name } } } } }""", {"n": name})
    return [f["name"] for f in answer["__type"]["inputFields"]
            if "ID" in (f["type"]["name"], (f["type"]["ofType"] or {}).get("name"))]


async def test_a_driver_is_refused_first_whatever_ids_they_send(
        api: Api, world: World) -> None:
    """Every id a staff-only mutation takes sent malformed: still FORBIDDEN with no
    field, not INVALID_ID (review s30: removeStation, eraseUser, endSession,
    capturePayment, assignStationToSite's siteId... decoded their ids before the use
    case's refusal ran)."""
    answers, walked = {}, set()
    for mutation, given in staff_only(world).items():
        fields = await id_fields(api, mutation)
        if not fields:
            continue
        walked.add(mutation)
        malformed = {**given, **dict.fromkeys(fields, "not-an-id")}
        answers[mutation] = codes(await call(api, world, "driver1", mutation, malformed,
                                             "__typename"))
    assert {"removeStation", "removeConnector", "removeTariff", "deactivateUser",
            "eraseUser", "endSession", "capturePayment", "failPayment", "refundPayment",
            "assignStationToSite", "removeWebhook", "testWebhook", "removeSite",
            "createStation", "setTariff"} <= walked
    wrong = {m: a for m, a in answers.items() if a != [(None, "FORBIDDEN")]}
    assert wrong == {}


async def test_staff_sending_a_malformed_id_are_told_on_that_input(
        api: Api, world: World) -> None:
    """Past the refusal, the ids are checked as before, every one named."""
    for mutation, given, told in (
            ("removeStation", {"id": "x"}, [("id", "INVALID_ID")]),
            ("endSession", {"id": "x"}, [("id", "INVALID_ID")]),
            ("capturePayment", {"id": gid("session", new_id())}, [("id", "INVALID_ID")]),
            ("assignStationToSite", {"stationId": "x", "siteId": "y"},
             [("stationId", "INVALID_ID"), ("siteId", "INVALID_ID")])):
        assert codes(await call(api, world, "op_a", mutation, given, "__typename")) \
            == told, mutation
    assert codes(await call(api, world, "admin", "eraseUser", {"id": "x"}, "__typename")) \
        == [("id", "INVALID_ID")]


async def test_a_drivers_refused_value_names_its_input(api: Api, world: World) -> None:
    """What a driver may do, with one value only staff set: that input is named."""
    card = gid("id_tag", world.tags["driver1"].id)
    for given, field in (({"status": "EXPIRED"}, "status"),
                         ({"expiresAt": "2030-01-01T00:00:00Z"}, "expiresAt"),
                         ({"parentIdTag": "GROUP-1"}, "parentIdTag")):
        assert codes(await call(api, world, "driver1", "updateIdTag", {"id": card, **given},
                                "__typename")) == [(field, "FORBIDDEN")], given
