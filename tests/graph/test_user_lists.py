"""``User.reservations`` and ``User.payments`` (QA s33: a driver's app had to read the
root lists, ``me`` had only ``sessions``), on both stores: each viewer sees under a user
exactly what the root list shows them of that user, and a page of users loads each list
in one store call whatever its size."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.query import ALL
from domain.services import Services
from graph.ids import from_global_id, to_global_id
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import PASSWORD, World
from tests.support.gateways import Accepting

LISTS = ("reservations", "payments")
ROOTS = "{ reservations(first: 100) { nodes { id } } payments(first: 100) { nodes { id } } }"
UNDER_USER = """query($id: ID!) { node(id: $id) { ... on User {
    reservations(first: 100) { totalCount nodes { id } }
    payments(first: 100) { totalCount nodes { id } } } } }"""


async def _reserve(services: Services, world: World) -> None:
    """Reservations of three drivers at both companies' stations, driver2's first one
    called off (a driver holds one at a time)."""
    services.attach_gateway(Accepting())
    soon = utcnow() + timedelta(hours=1)

    async def reserve(driver: str, cp_id: str, connector: int) -> d.Reservation:
        answer = await services.commands.send(world.viewer(driver), cp_id, "ReserveNow",
                                              {"connectorId": connector, "expiryDate": soon})
        assert answer.reservation is not None
        return answer.reservation

    await reserve("driver1", "A-001", 2)
    first = await reserve("driver2", "B-001", 1)
    over = await services.commands.send(world.viewer("driver2"), "B-001", "CancelReservation",
                                        {"reservationId": first.reservation_id})
    assert over.reservation is not None
    await reserve("driver2", "A-002", 1)
    await reserve("driver_a", "B-002", 2)


@pytest.mark.parametrize("viewer", ["admin", "op_a", "op_b", "driver1", "driver2"])
async def test_a_user_s_lists_are_the_root_lists_of_that_user(
        api: Api, services: Services, world: World, viewer: str) -> None:
    await _reserve(services, world)
    store = services.ctx.store
    rows: list[d.Reservation | d.Payment] = [*await store.find_all(d.Reservation, ALL),
                                             *await store.find_all(d.Payment, ALL)]
    owner = {r.id: r.user_id for r in rows}
    as_viewer = world.users[viewer].id
    roots = await api.gql(ROOTS, as_user=as_viewer)
    seen = {name: {n["id"] for n in roots[name]["nodes"]} for name in LISTS}
    listed_any = False
    for person in world.users.values():
        node = (await api.gql(UNDER_USER, {"id": to_global_id("user", person.id)},
                              as_user=as_viewer))["node"]
        if node is None:  # a user they may not see at all
            continue
        for name, kind in zip(LISTS, ("reservation", "payment"), strict=True):
            expected = {gid for gid in seen[name]
                        if owner[_raw(gid, kind)] == person.id}
            got = [n["id"] for n in node[name]["nodes"]]
            assert set(got) == expected, (viewer, person.name, name)
            assert len(got) == len(expected) == node[name]["totalCount"]
            listed_any = listed_any or bool(got)
    assert listed_any, viewer  # every viewer here sees some of someone's


async def test_a_driver_reads_their_own_from_me(api: Api, services: Services,
                                                world: World) -> None:
    await _reserve(services, world)
    me = (await api.gql("""{ me { reservations { nodes { cpId state } }
        payments { nodes { amount { amountMinor } session { cpId } } } } }""",
                        as_user=world.users["driver2"].id))["me"]
    assert sorted((n["cpId"], n["state"]) for n in me["reservations"]["nodes"]) == [
        ("A-002", "ACTIVE"), ("B-001", "CANCELLED")]
    assert me["payments"]["nodes"] == [{"amount": {"amountMinor": 420},
                                        "session": {"cpId": "A-002"}}]


def _raw(gid: str, kind: str) -> str:
    found_kind, raw = from_global_id(gid)
    assert found_kind == kind
    return raw


PAGE = """{ users(first: 50) { nodes { name
    reservations(first: 5) { totalCount nodes { id } }
    payments(first: 5) { totalCount nodes { amount { amountMinor } } } } } }"""


async def test_a_page_of_users_loads_each_list_once(
        api: Api, services: Services, world: World, store: CountingStore) -> None:
    await _reserve(services, world)
    admin = world.users["admin"].id
    await api.gql(PAGE, as_user=admin)  # what the first request reads once and keeps
    store.calls.clear()
    few = await api.gql(PAGE, as_user=admin)
    few_calls = list(store.calls)
    for i in range(15):
        await services.accounts.create_user(SYSTEM, email=f"more{i}@example.com",
                                            password=PASSWORD, name=f"More {i}",
                                            role=d.Role.DRIVER)
    store.calls.clear()
    many = await api.gql(PAGE, as_user=admin)
    assert len(many["users"]["nodes"]) == len(few["users"]["nodes"]) + 15
    assert store.calls == few_calls, (few_calls, store.calls)
    # token viewer, page (and its count), then each list's rows and counts: one call each
    assert store.calls.count("find_grouped") == 2
    assert store.calls.count("count_grouped") == 2
