"""A removed car stays as the car its history was charged for (QA s22): removing a car
deleted it, so a driver's past sessions read ``vehicle: null`` and the CSV export an
empty vehicleId while ``sessions(filter: {vehicleId})`` still matched them. Now it is
gone from the garage only: every list of cars, card links and remote starts."""

from __future__ import annotations

from typing import Any

from domain.services import Services
from graph.csv_export import _session_rows
from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes, gid
from tests.graph.world import World

HISTORY = """query($car: ID!) {
  sessions(filter: {vehicleId: $car}, first: 10) { totalCount
    nodes { vehicle { id licensePlate make batteryKwh removedAt } } }
  node(id: $car) { ... on Vehicle { licensePlate removedAt sessions { totalCount } } }
  vehicles { totalCount }
}"""


async def history(api: Api, world: World, who: str, car: str) -> dict[str, Any]:
    return await api.gql(HISTORY, {"car": car}, as_user=world.users[who].id)


async def test_a_removed_car_stays_on_its_sessions_and_leaves_the_garage(
        api: Api, world: World, services: Services) -> None:
    car = gid("vehicle", world.vehicles["driver2"].id)
    before = await history(api, world, "driver2", car)
    assert before["vehicles"]["totalCount"] == 1
    # op_a's: their company's driver's, and driver1's and driver2's (sessions in A's books).
    assert (await history(api, world, "op_a", car))["vehicles"]["totalCount"] == 3

    removed = await call(api, world, "driver2", "removeVehicle", {"id": car},
                         "vehicle { licensePlate removedAt }")
    assert codes(removed) == [] and removed["vehicle"]["removedAt"] is not None

    # The driver's history: the session's car, by its id, by node, with its sessions.
    mine = await history(api, world, "driver2", car)
    assert mine["sessions"]["totalCount"] == 1
    [session] = mine["sessions"]["nodes"]
    assert session["vehicle"] == {"id": car, "licensePlate": "B-DR 2", "make": "VW",
                                  "batteryKwh": 58.0,
                                  "removedAt": removed["vehicle"]["removedAt"]}
    assert mine["node"] == {"licensePlate": "B-DR 2",
                            "removedAt": removed["vehicle"]["removedAt"],
                            "sessions": {"totalCount": 1}}
    # ... but not their garage.
    assert mine["vehicles"]["totalCount"] == 0
    garage = await api.gql("{ me { vehicles { totalCount nodes { id } } } }",
                           as_user=world.users["driver2"].id)
    assert garage["me"]["vehicles"] == {"totalCount": 0, "nodes": []}

    # The operator whose books hold the session reads the car by its plate, as before,
    # and no longer lists it.
    theirs = await history(api, world, "op_a", car)
    assert theirs["sessions"]["nodes"][0]["vehicle"]["licensePlate"] == "B-DR 2"
    assert theirs["sessions"]["nodes"][0]["vehicle"]["batteryKwh"] is None
    assert theirs["vehicles"]["totalCount"] == 2

    # The CSV export names the car, as the session's `vehicle` does.
    rows = await _session_rows(services.reads, world.viewer("driver2"),
                               [world.sessions["s3"]])
    assert rows[0][6] == car

    # The audit log reads the removal as before: a DELETE with the car as it was.
    log = await api.gql("""query($id: ID!) { auditLog(filter: {entityId: $id}) {
      nodes { action before after } } }""", {"id": car}, as_user=world.users["driver2"].id)
    removal = log["auditLog"]["nodes"][0]
    assert (removal["action"], removal["after"]) == ("DELETE", None)
    assert removal["before"]["license_plate"] == "B-DR 2"


async def test_a_removed_car_is_no_choice_and_its_plate_is_free(api: Api,
                                                                world: World) -> None:
    car = gid("vehicle", world.vehicles["driver2"].id)
    assert codes(await call(api, world, "driver2", "removeVehicle", {"id": car},
                            "vehicle { id }")) == []
    # Not changed, removed again, linked to a card, nor charged with.
    assert codes(await call(api, world, "driver2", "updateVehicle",
                            {"id": car, "make": "Kia"}, "vehicle { id }")) == [("id", "NOT_FOUND")]
    assert codes(await call(api, world, "driver2", "removeVehicle", {"id": car},
                            "vehicle { id }")) == [("id", "NOT_FOUND")]
    assert codes(await call(api, world, "driver2", "issueIdTag",
                            {"tag": "NEW-CARD-2", "vehicleId": car}, "idTag { id }")
                 ) == [("vehicleId", "NOT_FOUND")]
    assert codes(await call(api, world, "driver2", "updateIdTag",
                            {"id": gid("id_tag", world.tags["driver2"].id), "vehicleId": car},
                            "idTag { id }")) == [("vehicleId", "NOT_FOUND")]
    start = await api.gql("""mutation($input: RemoteStartTransactionInput!) {
      remoteStartTransaction(input: $input) { errors { field code } } }""",
                          {"input": {"cpId": "A-002", "connectorId": 2, "vehicleId": car}},
                          as_user=world.users["driver2"].id)
    assert codes(start["remoteStartTransaction"]) == [("vehicleId", "NOT_FOUND")]

    # The same plate, typed another way, is a new car of the garage.
    again = await call(api, world, "driver2", "addVehicle", {"licensePlate": "bdr2"},
                       "vehicle { id licensePlate removedAt }")
    assert codes(again) == [] and again["vehicle"]["removedAt"] is None
    assert codes(await call(api, world, "driver2", "addVehicle", {"licensePlate": "B-DR-2"},
                            "vehicle { id }")) == [("licensePlate", "DUPLICATE")]
    garage = await api.gql("{ vehicles { nodes { id } } }", as_user=world.users["driver2"].id)
    assert garage["vehicles"]["nodes"] == [{"id": again["vehicle"]["id"]}]


async def test_when_a_car_was_removed_is_its_owner_s_to_read(api: Api, world: World) -> None:
    """Review s22: a removed car's removedAt, shown to an operator who sees the car by
    its plate only, told the moment its owner last changed it, which that view hides
    (updatedAt reads createdAt there)."""
    car = gid("vehicle", world.vehicles["driver2"].id)
    removed = await call(api, world, "driver2", "removeVehicle", {"id": car},
                         "vehicle { updatedAt removedAt }")
    assert codes(removed) == [] and removed["vehicle"]["removedAt"] is not None
    seen = await api.gql("""query($car: ID!) { sessions(filter: {vehicleId: $car}, first: 10)
      { nodes { vehicle { createdAt updatedAt removedAt } } } }""", {"car": car},
                         as_user=world.users["op_a"].id)
    [reduced] = [n["vehicle"] for n in seen["sessions"]["nodes"]][:1]
    assert reduced["updatedAt"] == reduced["createdAt"]
    assert reduced["removedAt"] is None
