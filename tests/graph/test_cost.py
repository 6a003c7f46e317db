"""The query size limit: estimates, and refusal before anything runs."""

from __future__ import annotations

from graphql import parse

from domain.services.configuration import MAX_KEYS
from graph.cost import LIST_GUESS, MAX_OBJECTS, ROOT_LIST_GUESS, estimated_objects
from graph.schema import schema
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World


def estimate(query: str, variables: dict | None = None, name: str | None = None) -> int:
    return estimated_objects(schema._schema, query, parse(query), name, variables)


def test_pages_lists_and_single_objects_multiply_down_the_tree() -> None:
    # 20 stations (the default page), their connectors (a guess each), one active
    # session per connector with its user and vehicle.
    query = """{ stations { nodes { name connectors { status
        activeSession { user { name } vehicle { licensePlate } } } } } }"""
    stations = 20
    connectors = stations * LIST_GUESS
    assert estimate(query) == 1 + stations + connectors + 3 * connectors
    # The page size comes from the argument or the variable, clamped to the largest page.
    assert estimate("{ stations(first: 5) { nodes { id } } }") == 1 + 5
    assert estimate("query($n: Int) { stations(first: $n) { edges { node { id } } } }",
                    {"n": 100}) == 1 + 100 + 100
    assert estimate("{ stations(last: 1000) { nodes { id } } }") == 1 + 100
    # A variable's default, or a whole float (GraphQL takes 100.0 for an Int), counts too.
    paged = "query($n: Int = 100) { stations(first: $n) { nodes { id } } }"
    assert estimate(paged) == 1 + 100
    assert estimate(paged, {"n": 100.0}) == 1 + 100
    assert estimate(paged, {"n": 3}) == 1 + 3
    # An explicit null replaces the declared default: the argument counts as not given,
    # and the page is ``last`` or the resolvers' default.
    assert estimate("query($n: Int = 1) { stations(first: $n) { nodes { id } } }",
                    {"n": None}) == 1 + 20
    assert estimate("query($n: Int) { stations(first: $n, last: 100) { nodes { id } } }",
                    {"n": None}) == 1 + 100
    assert estimate("{ stations(first: 5, last: 50) { nodes { id } } }") == 1 + 50
    # nodes(ids:) returns one object per id.
    assert estimate('{ nodes(ids: ["a", "b", "c"]) { id } }') == 3
    assert estimate("query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                    {"ids": ["x"] * 50}) == 50
    # Fragments count like the fields they stand for; leaves cost nothing.
    fragment = """query { me { ...M } } fragment M on User { name company { name } }"""
    assert estimate(fragment) == 2
    # A subscription: per event.
    assert estimate("subscription { connectorStatusChanged { station { name } } }") == 2


def test_the_names_operation_is_estimated() -> None:
    query = "query a { me { id } } query b { stations(first: 50) { nodes { id } } }"
    assert estimate(query, name="a") == 1
    assert estimate(query, name="b") == 51


NESTED = "stations(first: 100) { nodes { company { %s } } }"


async def test_a_query_too_large_is_refused_before_it_runs(api: Api, world: World,
                                                           store: CountingStore) -> None:
    inner = "name"
    for _ in range(3):
        inner = NESTED % inner
    aliases = " ".join(f"a{i}: {NESTED % inner}" for i in range(30))
    huge = f"{{ {aliases} }}"
    assert estimate(huge) > MAX_OBJECTS
    token = api.token_for(world.users["op_a"].id)
    store.calls.clear()
    r = await api.post(huge, token=token)
    [error] = r.json()["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert "data" not in r.json()
    assert store.calls == ["get_many"]  # the viewer's user: nothing of the query ran
    fine = await api.post("{ " + NESTED % "name" + " }", token=token)
    assert "errors" not in fine.json()


def test_analytics_rows_count_as_the_large_lists_they_may_be() -> None:
    """Up to 10,000 rows each: every row's station with its connectors and sessions
    passed as ten rows' worth and held the event loop for 10-27 s (QA s18)."""
    heavy = """{ utilization(from: "2026-09-28T00:00:00Z", to: "2026-12-05T00:00:00Z",
        bucket: HOUR, groupBy: CONNECTOR) { start station { name
        connectors { connectorId tariff { pricePerKwh } }
        sessions(first: 20) { nodes { id user { name } } } } } }"""
    assert estimate(heavy) > MAX_OBJECTS
    # A grouped report with each row's station by name stays well within the limit.
    for field in ("energyTrend", "utilization", "availability"):
        args = '(filter: {from: "2026-11-01T00:00:00Z", to: "2026-12-01T00:00:00Z"})' \
            if field == "energyTrend" else \
            '(from: "2026-11-01T00:00:00Z", to: "2026-12-01T00:00:00Z")'
        assert estimate(f"{{ {field}{args} {{ start station {{ name }} }} }}") \
            == 2 * ROOT_LIST_GUESS < MAX_OBJECTS


def test_long_lists_below_the_root_count_as_what_they_may_hold() -> None:
    """A fault report's groups and a station's configuration: thirty aliases of them,
    each counted as ten, answered 60,000-190,000 objects (QA s18)."""
    groups = """query($f: DateTime!, $t: DateTime!) { faultReports(from: $f, to: $t) {
        a: groups { station { sessions(first: 10) { nodes { id } } } } } }"""
    assert estimate(groups) == 1 + ROOT_LIST_GUESS * (1 + 1 + 1 + 10)  # groups, station,
    # its sessions connection, their nodes
    assert estimate(groups.replace("a: groups", " ".join(
        f"a{i}: groups" + " { station { id } }" for i in range(10)) + " a: groups")) \
        > MAX_OBJECTS
    config = '{ station(cpId: "CP-1") { configuration { key } } }'
    assert estimate(config) == 1 + MAX_KEYS
    aliased = "{ " + " ".join(f'a{i}: station(cpId: "CP-1") {{ configuration {{ key }} }}'
                              for i in range(10)) + " }"
    assert estimate(aliased) > MAX_OBJECTS


def test_a_payment_s_refunds_count_as_a_list() -> None:
    """``Payment.refunds`` is a plain list under each payment: a guess of ten each, with
    what is selected below them (here each refund's amount)."""
    query = "{ payments(first: 100) { nodes { refunds { amount { amount } } } } }"
    payments = 100
    refunds = payments * LIST_GUESS
    assert estimate(query) == 1 + payments + refunds + refunds


def test_a_page_filtered_by_one_cp_id_counts_as_one_station() -> None:
    """QA s23: ``stations(filter: {cpId: "X"}) { nodes { configuration } }``, one
    station's keys, was refused as a default page of stations' (40,000 objects). The
    key named literally, by a variable, or in a filter given as a variable; a variable
    given null (or no cpId) narrows nothing."""
    one = 1 + 1 + MAX_KEYS  # the connection, its one station, that station's keys
    literal = '{ stations(filter: {cpId: "CP-1"}) { nodes { configuration { key } } } }'
    assert estimate(literal) == one
    by_field = """query($cp: String) { stations(filter: {cpId: $cp}) {
        nodes { configuration { key } } } }"""
    assert estimate(by_field, {"cp": "CP-1"}) == one
    assert estimate(by_field, {"cp": None}) == 1 + 20 * (1 + MAX_KEYS) > MAX_OBJECTS
    by_filter = """query($f: StationFilter) { stations(filter: $f) {
        nodes { configuration { key } } } }"""
    assert estimate(by_filter, {"f": {"cpId": "CP-1"}}) == one
    assert estimate(by_filter, {"f": {"search": "CP-1"}}) > MAX_OBJECTS
    assert estimate(by_filter, {"f": {"cpId": None}}) > MAX_OBJECTS
    # Other filters narrow nothing for the estimate.
    assert estimate('{ stations(filter: {search: "CP-1"}) { nodes { configuration '
                    '{ key } } } }') > MAX_OBJECTS


def test_a_page_filtered_by_a_list_of_cp_ids_counts_as_many_stations() -> None:
    """``cpIds`` replaces the deprecated ``cpId`` (QA s30): a client moving to it must
    not be refused the one station's configuration it was answered. At most as many
    stations as listed, literally or by variable; null or left out narrows nothing."""
    def stations(n: int) -> int:
        return 1 + n * (1 + MAX_KEYS)  # the connection, its stations, their keys

    literal = '{ stations(filter: {cpIds: ["CP-1"]}) { nodes { configuration { key } } } }'
    assert estimate(literal) == stations(1) <= MAX_OBJECTS
    assert estimate(literal.replace('["CP-1"]', '["A", "B", "C"]')) == stations(3)
    by_field = """query($cp: [String!]) { stations(filter: {cpIds: $cp}) {
        nodes { configuration { key } } } }"""
    assert estimate(by_field, {"cp": ["CP-1", "CP-2"]}) == stations(2)
    assert estimate(by_field, {"cp": None}) == stations(20) > MAX_OBJECTS
    by_filter = """query($f: StationFilter) { stations(filter: $f) {
        nodes { configuration { key } } } }"""
    assert estimate(by_filter, {"f": {"cpIds": ["CP-1"]}}) == stations(1)
    assert estimate(by_filter, {"f": {"cpIds": None}}) > MAX_OBJECTS
    # Never more than the page asked for.
    many = {"f": {"cpIds": [f"CP-{i}" for i in range(50)]}}
    assert estimate(by_filter.replace("stations(filter: $f)",
                                      "stations(first: 2, filter: $f)"), many) == stations(2)
