"""A driver's lists of cars are their garage, the cars they own (``Policy.theirs``): the
store is asked for those by owner alone (its index), not also by the sub-select of their
sessions' cars that their scope holds for a car handed over since (a ``$lookup`` per
query on MongoDB, for an answer it cannot change). That wider rule stays where it is
used: the car of their own sessions and ``node(id:)``, in its reduced view."""

from __future__ import annotations

from domain import entities as d
from domain.query import Filter
from store.mongo.query import compile_query
from tests.graph.conftest import Api, CountingStore
from tests.graph.test_mutations import call, gid
from tests.graph.world import World
from tests.helpers import subselects

GARAGE = """{ vehicles { totalCount nodes { licensePlate } }
              me { vehicles { totalCount nodes { licensePlate } } } }"""


def asked_of_cars(store: CountingStore) -> list[Filter]:
    return [where for kind, where in store.asked if kind == d.Vehicle.kind]


async def test_a_driver_s_garage_is_asked_by_owner_alone(
        api: Api, world: World, store: CountingStore) -> None:
    van = gid("vehicle", world.vehicles["driver1"].id)
    driver1, driver2 = world.users["driver1"].id, world.users["driver2"].id
    moved = await call(api, world, "admin", "updateVehicle",
                       {"id": van, "ownerId": gid("user", driver2)}, "vehicle { id }")
    assert moved["errors"] == []
    added = await call(api, world, "driver1", "addVehicle", {"licensePlate": "B-DR 9"},
                       "vehicle { id }")
    assert added["errors"] == []

    store.asked.clear()
    mine = await api.gql(GARAGE, as_user=driver1)
    garage = {"totalCount": 1, "nodes": [{"licensePlate": "B-DR 9"}]}
    assert mine == {"vehicles": garage, "me": {"vehicles": garage}}
    asked = asked_of_cars(store)
    # The page and count of both lists: no join, a plain find on MongoDB.
    assert len(asked) == 4 and all(subselects(where) == [] for where in asked), asked
    assert all(compile_query(d.Vehicle, where).stages == () for where in asked)

    # The handed-over van still reads on their session and by its id, reduced.
    wider = await api.gql("""query($s: ID!, $v: ID!) {
        s: node(id: $s) { ... on Session { vehicle { licensePlate batteryKwh } } }
        v: node(id: $v) { ... on Vehicle { licensePlate owner { name } } } }""",
        {"s": gid("session", world.sessions["s2"].id), "v": van}, as_user=driver1)
    assert wider == {"s": {"vehicle": {"licensePlate": "B-DR 1", "batteryKwh": None}},
                     "v": {"licensePlate": "B-DR 1", "owner": None}}
    # Its owner now lists it in theirs, as they did before.
    theirs = await api.gql(GARAGE, as_user=driver2)
    assert {"licensePlate": "B-DR 1"} in theirs["vehicles"]["nodes"]
    assert theirs["me"]["vehicles"] == theirs["vehicles"]


async def test_an_operator_s_list_of_cars_keeps_the_cars_of_their_books(
        api: Api, world: World, store: CountingStore) -> None:
    """Theirs are also the cars of sessions in their books: that list needs the join."""
    store.asked.clear()
    listed = await api.gql("{ vehicles { totalCount } }", as_user=world.users["op_a"].id)
    # driver_a's (their company's), driver1's and driver2's (sessions in A's books).
    assert listed["vehicles"]["totalCount"] == 3
    asked = asked_of_cars(store)
    assert asked and all(subselects(where) for where in asked), asked
