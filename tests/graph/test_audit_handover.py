"""An audit entry of a hand-over names both sides (review s33): a car given to another
driver, a station to another company, a person moved to another company. Whoever reads
it is told each side's id only where they see the record it names
(``Policy.audit_snapshot``'s ``seen``), in ``before`` and ``after`` alike: the former
holder not the receiving side's, the receiving side not the former's; admins, and an
operator handing a car between two of their own drivers, both. On both stores; GraphQL
``auditLog``, ``/export/audit.csv`` and a person's copy of their data alike."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import QueryParams

from domain import entities as d
from domain.policy import SYSTEM
from domain.services import Services
from graph import csv_export
from graph.data_export import document
from graph.ids import to_global_id
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import PASSWORD, World

LOG = """query($e: ID!) { auditLog(first: 50, filter: {entityId: $e}) {
    nodes { action before after } } }"""


async def images(api: Api, world: World, who: str, kind: str, record_id: str
                 ) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(action, before, after) of the record's entries ``who`` reads, oldest first."""
    data = await api.gql(LOG, {"e": to_global_id(kind, record_id)},
                         as_user=world.users[who].id)
    return [(n["action"], n["before"], n["after"])
            for n in reversed(data["auditLog"]["nodes"])]


def told(entries: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
         field: str) -> list[tuple[str, Any, Any]]:
    """Per entry, its action and ``field`` in its before and after ("-" where not told)."""
    def of(image: dict[str, Any] | None) -> Any:
        return "-" if image is None or field not in image else image[field]
    return [(action, of(before), of(after)) for action, before, after in entries]


async def move_vehicle(api: Api, world: World, who: str, vehicle_id: str, owner_id: str
                       ) -> None:
    moved = await api.gql("""mutation($v: ID!, $o: ID!) { updateVehicle(input:
        {id: $v, ownerId: $o}) { errors { code } } }""",
                          {"v": to_global_id("vehicle", vehicle_id),
                           "o": to_global_id("user", owner_id)},
                          as_user=world.users[who].id)
    assert moved["updateVehicle"]["errors"] == []


async def test_a_car_s_former_owner_is_not_told_its_new_owner(
        api: Api, world: World, services: Services) -> None:
    van = world.vehicles["driver1"].id
    driver1, driver2 = world.users["driver1"].id, world.users["driver2"].id
    await move_vehicle(api, world, "admin", van, driver2)
    # Mia's (driver1's) log: her own id, not Jonas's (driver2's), as the car's read
    # shows her its owner as null.
    assert told(await images(api, world, "driver1", "vehicle", van), "owner_id") == [
        ("CREATE", "-", driver1), ("UPDATE", driver1, "-")]
    node = await api.gql("query($v: ID!) { node(id: $v) { ... on Vehicle { owner { id } } } }",
                         {"v": to_global_id("vehicle", van)}, as_user=driver1)
    assert node["node"] == {"owner": None}
    # The rest of the image stays hers: only the reference is masked.
    (_, _, _), (_, before, after) = await images(api, world, "driver1", "vehicle", van)
    assert before is not None and after is not None
    assert before["license_plate"] == after["license_plate"] == "B-DR 1"
    # An admin is told both.
    assert told(await images(api, world, "admin", "vehicle", van), "owner_id") == [
        ("CREATE", "-", driver1), ("UPDATE", driver1, driver2)]
    # The receiving driver reads none of her history (the entry is hers: holder_id).
    assert await images(api, world, "driver2", "vehicle", van) == []
    # /export/audit.csv shows the images as auditLog does.
    pages = await csv_export._audit(services, world.viewer("driver1"),
                                    csv_export.Params(QueryParams(), {}))
    rows = [row for page in [p async for p in pages] for row in page]
    update = next(row for row in rows if row[3] == to_global_id("vehicle", van)
                  and row[4] is d.AuditAction.UPDATE)
    assert json.loads(str(update[6]))["owner_id"] == driver1
    assert "owner_id" not in json.loads(str(update[7]))
    # Her copy of her data too.
    data = await services.personal_data.open(world.viewer("driver1"), None)
    copy = json.loads(b"".join([chunk async for chunk in document(services, data)]))
    handover = next(e for e in copy["auditLog"]
                    if e["entity"] == "vehicle" and e["action"] == "UPDATE")
    assert handover["before"]["owner_id"] == driver1 and "owner_id" not in handover["after"]


async def test_an_operator_handing_a_car_between_their_own_drivers_sees_both(
        api: Api, world: World, services: Services) -> None:
    newcomer = await services.accounts.create_user(
        SYSTEM, email="new@example.com", password=PASSWORD, name="Newcomer",
        role=d.Role.DRIVER, company_id=world.companies["a"].id)
    car = world.vehicles["driver_a"].id
    driver_a = world.users["driver_a"].id
    await move_vehicle(api, world, "op_a", car, newcomer.id)
    # Both are the operator's company's people, whom they see.
    assert told(await images(api, world, "op_a", "vehicle", car), "owner_id") == [
        ("CREATE", "-", driver_a), ("UPDATE", driver_a, newcomer.id)]
    # Another company's operator reads none of it.
    assert await images(api, world, "op_b", "vehicle", car) == []
    # The former owner, a driver, sees only herself.
    assert told(await images(api, world, "driver_a", "vehicle", car), "owner_id") == [
        ("CREATE", "-", driver_a), ("UPDATE", driver_a, "-")]


async def test_a_station_handed_to_another_company_tells_each_side_its_own_ids(
        api: Api, world: World) -> None:
    station = world.stations["A-002"].id
    a, b = world.companies["a"].id, world.companies["b"].id
    op_a, op_b = world.users["op_a"].id, world.users["op_b"].id
    moved = await api.gql("""mutation($id: ID!, $c: ID!, $o: ID!) { updateStation(input:
        {id: $id, companyId: $c, ownerId: $o}) { errors { code } } }""",
                          {"id": to_global_id("station", station),
                           "c": to_global_id("company", b), "o": to_global_id("user", op_b)},
                          as_user=world.users["admin"].id)
    assert moved["updateStation"]["errors"] == []
    expected = {
        # Spree (company a) keeps its history, not told Havel's (b's) ids.
        "op_a": ([("CREATE", "-", a), ("UPDATE", a, "-")],
                 [("CREATE", "-", op_a), ("UPDATE", op_a, "-")]),
        # Havel runs it now and reads its record's changes, not told Spree's ids.
        "op_b": ([("CREATE", "-", "-"), ("UPDATE", "-", b)],
                 [("CREATE", "-", "-"), ("UPDATE", "-", op_b)]),
        "admin": ([("CREATE", "-", a), ("UPDATE", a, b)],
                  [("CREATE", "-", op_a), ("UPDATE", op_a, op_b)]),
    }
    for who, (companies, owners) in expected.items():
        record_changes = [e for e in await images(api, world, who, "station", station)
                          if e[0] in ("CREATE", "UPDATE")]
        assert told(record_changes, "company_id") == companies, who
        assert told(record_changes, "owner_id") == owners, who
        # The rest of each image as before: its name, in both.
        assert all(after is not None and after["name"] == "A Station 2"
                   for _, _, after in record_changes), who


async def test_a_person_moved_to_another_company_is_told_to_each_as_they_see_it(
        api: Api, world: World) -> None:
    driver_a = world.users["driver_a"].id
    a, b = world.companies["a"].id, world.companies["b"].id
    moved = await api.gql("""mutation($id: ID!, $c: ID!) { updateUser(input:
        {id: $id, companyId: $c}) { errors { code } } }""",
                          {"id": to_global_id("user", driver_a),
                           "c": to_global_id("company", b)},
                          as_user=world.users["admin"].id)
    assert moved["updateUser"]["errors"] == []

    def moves(entries: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
        return [e for e in told(entries, "company_id") if e[0] == "UPDATE"]

    # Her former company keeps the move, not told where she went.
    assert moves(await images(api, world, "op_a", "user", driver_a)) == [
        ("UPDATE", a, "-")]
    # She sees the company she is in now, not the one she left.
    assert moves(await images(api, world, "driver_a", "user", driver_a)) == [
        ("UPDATE", "-", b)]
    assert moves(await images(api, world, "admin", "user", driver_a)) == [
        ("UPDATE", a, b)]


async def test_a_page_of_hand_overs_reads_their_holders_once(
        api: Api, world: World, services: Services, store: CountingStore) -> None:
    """The holders a page's images name are read once per kind for the page (the
    request's batched loads), not once per entry: the same store calls for one car handed
    over as for four."""
    company = world.companies["a"].id
    receiver = await services.accounts.create_user(
        SYSTEM, email="fleet@example.com", password=PASSWORD, name="Fleet",
        role=d.Role.DRIVER, company_id=company)
    query = """{ auditLog(first: 50, filter: {entity: "vehicle", action: UPDATE}) {
        nodes { before after } } }"""

    async def hand_over(count: int) -> tuple[int, int]:
        for i in range(count):
            giver = await services.accounts.create_user(
                SYSTEM, email=f"giver{count}-{i}@example.com", password=PASSWORD,
                name=f"Giver {count} {i}", role=d.Role.DRIVER, company_id=company)
            car = await services.fleet.add_vehicle(
                world.viewer("op_a"), owner_id=giver.id, license_plate=f"B-G {count}{i}")
            await move_vehicle(api, world, "op_a", car.id, receiver.id)
        store.calls.clear()
        data = await api.gql(query, as_user=world.users["op_a"].id)
        nodes = data["auditLog"]["nodes"]
        assert all(n["before"]["owner_id"] != n["after"]["owner_id"] == receiver.id
                   for n in nodes)
        return len(store.calls), len(nodes)

    one_call, one = await hand_over(1)
    five_calls, five = await hand_over(4)
    assert (one, five) == (1, 5)
    assert five_calls == one_call


async def test_an_entry_s_holders_are_judged_once_for_both_images(
        api: Api, world: World, services: Services, monkeypatch: Any) -> None:
    """``before`` and ``after`` of one entry share what the viewer sees of the holders it
    names (review s33: worked out once per image); still told apart per image."""
    newcomer = await services.accounts.create_user(
        SYSTEM, email="new@example.com", password=PASSWORD, name="Newcomer",
        role=d.Role.DRIVER, company_id=world.companies["a"].id)
    car = world.vehicles["driver_a"].id
    driver_a = world.users["driver_a"].id
    await move_vehicle(api, world, "op_a", car, newcomer.id)
    asked: list[list[str]] = []
    references = services.policy.audit_references

    def counted(viewer: Any, entries: Any) -> Any:
        asked.append([e.id for e in entries])
        return references(viewer, entries)

    monkeypatch.setattr(services.policy, "audit_references", counted)
    entries = await images(api, world, "op_a", "vehicle", car)
    assert told(entries, "owner_id") == [
        ("CREATE", "-", driver_a), ("UPDATE", driver_a, newcomer.id)]
    # One judgement per entry, each of one entry: not one per image.
    assert len(asked) == 2 and all(len(ids) == 1 for ids in asked)
    assert len({ids[0] for ids in asked}) == 2
