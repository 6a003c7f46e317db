"""License plates through the API: kept as the driver typed them (trimmed, spaces
collapsed, upper case), told apart by their letters and digits alone (``plate_key``):
unique per owner on that key, and found by it."""

from __future__ import annotations

from typing import Any

from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes
from tests.graph.world import World

VEHICLES = """query($f: VehicleFilter, $o: [VehicleOrder!]) {
  vehicles(filter: $f, orderBy: $o, first: 50) { nodes { licensePlate owner { name } } } }"""


async def add(api: Api, world: World, who: str, plate: str, **more: Any) -> dict[str, Any]:
    return await call(api, world, who, "addVehicle", {"licensePlate": plate, **more},
                      "vehicle { id licensePlate }")


async def plates(api: Api, world: World, who: str, search: str | None = None,
                 order: list[dict[str, str]] | None = None) -> list[str]:
    data = await api.gql(VEHICLES, {"f": {"search": search}, "o": order},
                         as_user=world.users[who].id)
    return [n["licensePlate"] for n in data["vehicles"]["nodes"]]


async def test_a_plate_reads_back_as_entered(api: Api, world: World) -> None:
    added = await add(api, world, "driver1", "  b-mi   2024 ")
    assert codes(added) == [] and added["vehicle"]["licensePlate"] == "B-MI 2024"
    node = await api.gql("""query($id: ID!) { node(id: $id) { ... on Vehicle {
      licensePlate } } }""", {"id": added["vehicle"]["id"]},
                         as_user=world.users["driver1"].id)
    assert node["node"] == {"licensePlate": "B-MI 2024"}
    changed = await call(api, world, "driver1", "updateVehicle",
                         {"id": added["vehicle"]["id"], "licensePlate": "B MI-2025"},
                         "vehicle { licensePlate }")
    assert changed["vehicle"] == {"licensePlate": "B MI-2025"}


async def test_the_same_letters_and_digits_are_one_plate_per_owner(api: Api,
                                                                   world: World) -> None:
    assert codes(await add(api, world, "driver1", "B-MI 2024")) == []
    for same in ("bmi2024", "B MI-2024", "b-mi 2024"):
        refused = await add(api, world, "driver1", same)
        assert codes(refused) == [("licensePlate", "DUPLICATE")], same
        assert refused["vehicle"] is None
    # Changing another car of theirs to it is refused the same way.
    other = (await add(api, world, "driver1", "B-XY 1"))["vehicle"]["id"]
    assert codes(await call(api, world, "driver1", "updateVehicle",
                            {"id": other, "licensePlate": "BMI 2024"}, "vehicle { id }")
                 ) == [("licensePlate", "DUPLICATE")]
    assert await plates(api, world, "driver1") == ["B-DR 1", "B-MI 2024", "B-XY 1"]


async def test_two_owners_may_share_a_plate(api: Api, world: World) -> None:
    """A family car, registered by each driver who charges it, typed each their way."""
    assert codes(await add(api, world, "driver1", "B-MI 2024")) == []
    assert codes(await add(api, world, "driver2", "bmi2024")) == []
    for search in ("bmi 2024", "B-MI"):
        shared = await api.gql(VEHICLES, {"f": {"search": search}},
                               as_user=world.users["admin"].id)
        assert sorted((n["licensePlate"], n["owner"]["name"])
                      for n in shared["vehicles"]["nodes"]) == [("B-MI 2024", "Driver1"),
                                                                ("BMI2024", "Driver2")]


async def test_a_plate_is_found_however_its_separators_are_typed(api: Api,
                                                                 world: World) -> None:
    await add(api, world, "driver1", "B-MI 2024", make="Volkswagen")
    await add(api, world, "driver1", "M-XY 42", make="BMW")
    for search in ("bmi 2024", "BMI2024", "b-mi", "MI 20", "i-2"):
        assert await plates(api, world, "driver1", search) == ["B-MI 2024"], search
    assert await plates(api, world, "driver1", "bmw") == ["M-XY 42"]  # make, as before
    assert await plates(api, world, "driver1", "volks") == ["B-MI 2024"]
    assert await plates(api, world, "driver1", "B-M") == ["B-MI 2024"]  # not B-DR 1
    # Nobody else's car is found by its key: the scope still applies.
    assert await plates(api, world, "driver2", "bmi 2024") == []


async def test_plates_sort_by_their_letters_and_digits(api: Api, world: World) -> None:
    """"B-MI 2024" sorts after "BA 1" (BMI… after BA…), not before it as its dash would."""
    for plate in ("B-MI 2024", "BA 1", "B 9"):
        await add(api, world, "driver1", plate)
    order = [{"field": "LICENSE_PLATE", "direction": "ASC"}]
    assert await plates(api, world, "driver1", order=order) == [
        "B 9", "BA 1", "B-DR 1", "B-MI 2024"]


async def test_a_bad_plate_is_a_user_error_on_the_plate(api: Api, world: World) -> None:
    assert codes(await add(api, world, "driver1", "B_MI 2024")) == [
        ("licensePlate", "INVALID")]
    assert codes(await add(api, world, "driver1", " - ")) == [("licensePlate", "REQUIRED")]
    assert codes(await add(api, world, "driver1", "B" + "-" * 30 + "1")) == [
        ("licensePlate", "TOO_LONG")]


async def test_a_plate_typed_full_width_is_the_same_plate(api: Api, world: World) -> None:
    """QA s25: a plate typed with a phone's full-width keyboard (an IME) was another
    car: "Ｂ-ＭＩ ２０２４" beside "B-MI 2024" in one garage, and no search for "bmi 2024"
    found it. Plates are kept and compared in their compatibility form (NFKC), as
    emails and passwords are."""
    added = await add(api, world, "driver1", "ｂ-ｍｉ\u3000２０２４")
    assert codes(added) == [] and added["vehicle"]["licensePlate"] == "B-MI 2024"
    assert codes(await add(api, world, "driver1", "B-MI 2024")) == [
        ("licensePlate", "DUPLICATE")]
    assert await plates(api, world, "driver1", search="bmi 2024") == ["B-MI 2024"]
    assert await plates(api, world, "driver1", search="ＢＭＩ２０２４") == ["B-MI 2024"]
