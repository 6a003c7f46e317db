"""Telemetry history in the graph: a session's meter samples and State of Charge, a
connector's status reports, a station's connections. Who sees them per role (lists and
``node(id:)``), paging, time ranges, and a fixed number of store calls for a page."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import entities as d
from domain.policy import SYSTEM, Policy
from domain.ports import Insert, Update
from domain.services import ConnectorSpec, ServiceContext, Services
from graph import TokenService, create_graphql_app
from graph.ids import to_global_id
from tests.graph.conftest import SECRET, Api, CountingStore
from tests.graph.world import World, build_world

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
ENERGY = "Energy.Active.Import.Register"


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def sample(session: d.Session, at: datetime, measurand: str, value: float,
           unit: str | None = None, **kw: Any) -> d.MeterSample:
    return d.MeterSample(session_id=session.id, cp_id=session.cp_id,
                         connector_id=session.connector_id, at=at, measurand=measurand,
                         value=value, unit=unit, station_id=session.station_id, **kw)


async def add_history(services: Services, world: World) -> None:
    """s1 (driver1 at A-001) meters energy every minute and reports its SoC twice; s2
    (driver1 at B-001) reports no SoC; s3 (driver2 at A-002) one SoC. A-001 and B-001
    report statuses and connections."""
    s1, s2, s3 = (world.sessions[k] for k in ("s1", "s2", "s3"))
    a1, b1 = world.stations["A-001"], world.stations["B-001"]
    # Status reports and connection events in their station's books, as they arrived
    # (``books_of``).
    a_books: dict[str, Any] = {"company_id": a1.company_id,
                               "station_owner_id": None if a1.company_id else a1.owner_id}
    b_books: dict[str, Any] = {"company_id": b1.company_id,
                               "station_owner_id": None if b1.company_id else b1.owner_id}
    records: list[d.Record] = [
        *(sample(s1, minutes(n), ENERGY, 1000 + 100 * n, "Wh", context="Sample.Periodic")
          for n in range(6)),
        sample(s1, minutes(1), "SoC", 40, "Percent"),
        sample(s1, minutes(4), "SoC", 55, "Percent"),
        sample(s1, minutes(2), "Current.Import", 16, "A", phase="L1"),
        *(sample(s2, minutes(n), ENERGY, 5000 + 10 * n, "Wh") for n in range(3)),
        sample(s3, minutes(2), "SoC", 80, "Percent"),
        # A sample of no session on A-001 (an unknown transaction): in no session's list.
        d.MeterSample(session_id=None, cp_id="A-001", connector_id=1, at=minutes(3),
                      measurand="SoC", value=99, station_id=a1.id),
        d.StatusEvent(**a_books, station_id=a1.id, cp_id="A-001", connector_id=1,
                      status=d.ConnectorStatus.AVAILABLE, at=minutes(0)),
        d.StatusEvent(**a_books, station_id=a1.id, cp_id="A-001", connector_id=1,
                      status=d.ConnectorStatus.PREPARING, at=minutes(1)),
        d.StatusEvent(**a_books, station_id=a1.id, cp_id="A-001", connector_id=1,
                      status=d.ConnectorStatus.CHARGING, at=minutes(1)),  # same instant
        d.StatusEvent(**a_books, station_id=a1.id, cp_id="A-001", connector_id=1,
                      status=d.ConnectorStatus.FAULTED, error_code="GroundFailure",
                      info="RCD tripped", at=minutes(5)),
        d.StatusEvent(**a_books, station_id=a1.id, cp_id="A-001", connector_id=2,
                      status=d.ConnectorStatus.AVAILABLE, at=minutes(2)),
        d.StatusEvent(**b_books, station_id=b1.id, cp_id="B-001", connector_id=1,
                      status=d.ConnectorStatus.AVAILABLE, at=minutes(2)),
        d.ConnectionEvent(**a_books, station_id=a1.id, cp_id="A-001", online=True,
                          at=minutes(0)),
        d.ConnectionEvent(**a_books, station_id=a1.id, cp_id="A-001", online=False,
                          at=minutes(3)),
        d.ConnectionEvent(**a_books, station_id=a1.id, cp_id="A-001", online=True,
                          at=minutes(4)),
        d.ConnectionEvent(**b_books, station_id=b1.id, cp_id="B-001", online=True,
                          at=minutes(1)),
    ]
    # The charging service keeps each session's latest SoC with its live energy.
    kept = [Update(replace(s1, soc_percent=55.0, soc_at=minutes(4))),
            Update(replace(s3, soc_percent=80.0, soc_at=minutes(2)))]
    await services.ctx.store.write([*(Insert(r) for r in records), *kept], [])


@pytest.fixture
async def history_world(services: Services) -> World:
    world = await build_world(services)
    await add_history(services, world)
    return world


SESSIONS = """{ sessions(first: 50) { nodes { cpId socPercent
  meterValues(first: 50) { totalCount nodes { measurand value } } } } }"""


def curves(data: dict[str, Any]) -> dict[str, tuple[float | None, int, int]]:
    """cpId -> (socPercent, totalCount, samples on the page) of each session listed."""
    return {n["cpId"]: (n["socPercent"], n["meterValues"]["totalCount"],
                        len(n["meterValues"]["nodes"])) for n in data["sessions"]["nodes"]}


S1, S2, S3 = (55.0, 9, 9), (None, 3, 3), (80.0, 1, 1)


@pytest.mark.parametrize(("who", "expected"), [
    ("admin", {"A-001": S1, "B-001": S2, "A-002": S3}),
    ("op_a", {"A-001": S1, "A-002": S3}),
    ("op_b", {"B-001": S2}),
    ("driver1", {"A-001": S1, "B-001": S2}),
    ("driver2", {"A-002": S3}),
    ("driver_a", {}),
])
async def test_each_role_sees_the_samples_of_the_sessions_it_sees(
        api: Api, history_world: World, who: str,
        expected: dict[str, tuple[float | None, int, int]]) -> None:
    assert curves(await api.gql(SESSIONS, as_user=history_world.users[who].id)) == expected


NODE_SESSION = """query($id: ID!) { node(id: $id) { ... on Session { socPercent
  meterValues(first: 50) { totalCount nodes { value } } } } }"""


@pytest.mark.parametrize(("who", "visible"), [
    ("admin", {"s1", "s2", "s3"}), ("op_a", {"s1", "s3"}), ("op_b", {"s2"}),
    ("driver1", {"s1", "s2"}), ("driver2", {"s3"}), ("driver_a", set()),
])
async def test_node_paths_to_a_session_s_samples(api: Api, history_world: World, who: str,
                                                 visible: set[str]) -> None:
    for key, session in history_world.sessions.items():
        data = await api.gql(NODE_SESSION, {"id": to_global_id("session", session.id)},
                             as_user=history_world.users[who].id)
        if key in visible:
            assert data["node"]["meterValues"]["totalCount"] > 0, (who, key)
        else:
            assert data["node"] is None, (who, key)


async def test_the_session_s_curve_in_order_with_every_field(api: Api,
                                                            history_world: World) -> None:
    s1 = to_global_id("session", history_world.sessions["s1"].id)
    data = await api.gql("""query($id: ID!) { node(id: $id) { ... on Session {
        meterValues(first: 4) { nodes { at measurand value unit phase context } } } } }""",
                         {"id": s1}, as_user=history_world.users["driver1"].id)
    nodes = data["node"]["meterValues"]["nodes"]
    assert nodes[0] == {"at": "2025-03-01T08:00:00.000Z",
                        "measurand": "ENERGY_ACTIVE_IMPORT_REGISTER", "value": 1000.0,
                        "unit": "WH", "phase": None, "context": "SAMPLE_PERIODIC"}
    # Oldest first; samples of one instant in id order (either may come first).
    assert [n["at"][11:16] for n in nodes] == ["08:00", "08:01", "08:01", "08:02"]
    assert {(n["measurand"], n["unit"]) for n in nodes[1:3]} == {
        ("ENERGY_ACTIVE_IMPORT_REGISTER", "WH"), ("SOC", "PERCENT")}
    assert nodes[3]["measurand"] in ("ENERGY_ACTIVE_IMPORT_REGISTER", "CURRENT_IMPORT")


CURVE = """query($id: ID!, $m: [Measurand!], $from: DateTime, $to: DateTime, $first: Int,
  $after: String, $last: Int, $before: String) { node(id: $id) { ... on Session {
  meterValues(measurands: $m, from: $from, to: $to, first: $first, after: $after,
              last: $last, before: $before) {
    totalCount pageInfo { hasNextPage hasPreviousPage endCursor startCursor }
    edges { cursor node { at measurand value } } } } } }"""


async def _curve(api: Api, world: World, **variables: Any) -> dict[str, Any]:
    variables["id"] = to_global_id("session", world.sessions["s1"].id)
    data = await api.gql(CURVE, variables, as_user=world.users["op_a"].id)
    return data["node"]["meterValues"]  # type: ignore[no-any-return]


def values(page: dict[str, Any]) -> list[tuple[str, float]]:
    return [(e["node"]["measurand"], e["node"]["value"]) for e in page["edges"]]


async def test_samples_page_forward_and_back_oldest_first(api: Api,
                                                          history_world: World) -> None:
    whole = await _curve(api, history_world, first=50)
    ats = [e["node"]["at"] for e in whole["edges"]]
    assert ats == sorted(ats) and whole["totalCount"] == len(ats) == 9
    seen: list[tuple[str, float]] = []
    after = None
    while True:
        page = await _curve(api, history_world, first=4, after=after)
        assert page["totalCount"] == 9
        seen += values(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == values(whole)
    tail = await _curve(api, history_world, last=3)
    assert values(tail) == values(whole)[-3:]
    before = await _curve(api, history_world, last=2, before=tail["pageInfo"]["startCursor"])
    assert values(before) == values(whole)[-5:-3]


async def test_samples_by_measurand_and_time_range(api: Api, history_world: World) -> None:
    soc = await _curve(api, history_world, m=["SOC"], first=10)
    assert values(soc) == [("SOC", 40.0), ("SOC", 55.0)]
    both = await _curve(api, history_world, m=["SOC", "CURRENT_IMPORT"], first=10)
    assert values(both) == [("SOC", 40.0), ("CURRENT_IMPORT", 16.0), ("SOC", 55.0)]
    # ``from`` inclusive, ``to`` exclusive.
    window = await _curve(api, history_world, m=["ENERGY_ACTIVE_IMPORT_REGISTER"],
                          first=10, **{"from": minutes(2).isoformat(),
                                       "to": minutes(4).isoformat()})
    assert values(window) == [(("ENERGY_ACTIVE_IMPORT_REGISTER"), 1200.0),
                              ("ENERGY_ACTIVE_IMPORT_REGISTER", 1300.0)]
    assert window["totalCount"] == 2
    later = await _curve(api, history_world, first=1, after=window["pageInfo"]["endCursor"],
                         m=["ENERGY_ACTIVE_IMPORT_REGISTER"], to=minutes(4).isoformat())
    assert values(later) == [] and later["totalCount"] == 4


async def test_no_measurands_is_no_samples(api: Api, history_world: World) -> None:
    """``measurands: []`` reads as every list filter's empty list: none of them, so no
    samples (not INVALID, nor every sample)."""
    nothing = await _curve(api, history_world, m=[], first=10)
    assert values(nothing) == [] and nothing["totalCount"] == 0
    assert (await _curve(api, history_world, m=None, first=10))["totalCount"] > 0


@pytest.mark.parametrize(("variables", "field", "code"), [
    ({"from": "2025-03-01T09:00:00Z", "to": "2025-03-01T08:00:00Z"}, "to", "OUT_OF_RANGE"),
    ({"from": "2025-03-01T09:00:00"}, "from", "INVALID"),
    ({"first": 101}, "first", "OUT_OF_RANGE"),
])
async def test_bad_history_arguments_are_user_errors(api: Api, history_world: World,
                                                     variables: dict[str, Any], field: str,
                                                     code: str) -> None:
    variables["id"] = to_global_id("session", history_world.sessions["s1"].id)
    response = await api.post(CURVE, variables,
                              api.token_for(history_world.users["admin"].id))
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": code, "field": field}, error


async def test_a_cursor_of_another_list_is_refused(api: Api, history_world: World) -> None:
    admin = history_world.users["admin"].id
    sessions = await api.gql("{ sessions(first: 1) { pageInfo { endCursor } } }",
                             as_user=admin)
    response = await api.post(CURVE, {
        "id": to_global_id("session", history_world.sessions["s1"].id), "first": 2,
        "after": sessions["sessions"]["pageInfo"]["endCursor"]}, api.token_for(admin))
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "INVALID_CURSOR"


async def test_a_connector_s_status_cursor_pages_only_its_own_history(
        api: Api, history_world: World) -> None:
    """Review s21: connector 1's statusHistory cursor paged connector 2's (both lists
    are the station's reports, told apart by connector number), skipping its rows."""
    admin = history_world.users["admin"].id
    query = """query($cp: String!, $after: String) { station(cpId: $cp) { connectors {
      connectorId statusHistory(first: 5, after: $after) { nodes { status }
      pageInfo { endCursor } } } } }"""
    first = await api.gql(query, {"cp": "A-001"}, as_user=admin)
    one = next(c for c in first["station"]["connectors"] if c["connectorId"] == 1)
    cursor = one["statusHistory"]["pageInfo"]["endCursor"]
    response = await api.post(query, {"cp": "A-001", "after": cursor}, api.token_for(admin))
    errors = response.json()["errors"]  # connector 2's list refuses it; 1's pages on
    assert [e["extensions"]["code"] for e in errors] == ["INVALID_CURSOR"]
    assert errors[0]["path"][-1] == "statusHistory"


# ---------------------------------------------------------------- status and connections
STATIONS = """{ stations(first: 50) { nodes { cpId
  connectionHistory(first: 10) { totalCount nodes { online at } }
  connectors { connectorId statusHistory(first: 10) { totalCount
    nodes { status errorCode info at } } } } } }"""


def station_history(data: dict[str, Any]) -> dict[str, Any]:
    return {s["cpId"]: ([c["online"] for c in s["connectionHistory"]["nodes"]],
                        {c["connectorId"]: [e["status"] for e in c["statusHistory"]["nodes"]]
                         for c in s["connectors"]})
            for s in data["stations"]["nodes"]}


A001 = ([True, False, True], {1: ["FAULTED", "CHARGING", "PREPARING", "AVAILABLE"],
                              2: ["AVAILABLE"]})
B001 = ([True], {1: ["AVAILABLE"], 2: []})
QUIET: tuple[list[bool], dict[int, list[str]]] = ([], {1: [], 2: []})


@pytest.mark.parametrize(("who", "expected"), [
    ("admin", {"A-001": A001, "A-002": QUIET, "B-001": B001, "B-002": QUIET}),
    ("op_a", {"A-001": A001, "A-002": QUIET}),
    ("op_b", {"B-001": B001, "B-002": QUIET}),
    # Drivers see every station's public view and live status, no history.
    ("driver1", dict.fromkeys(("A-001", "A-002", "B-001", "B-002"), QUIET)),
])
async def test_status_and_connection_history_per_role(
        api: Api, history_world: World, who: str, expected: dict[str, Any]) -> None:
    data = await api.gql(STATIONS, as_user=history_world.users[who].id)
    assert station_history(data) == expected


async def test_node_paths_to_status_and_connection_history(api: Api,
                                                           history_world: World) -> None:
    station = history_world.stations["A-001"]
    connector = history_world.connectors["A-001"][0]
    document = """query($s: ID!, $c: ID!) {
      s: node(id: $s) { ... on Station { connectionHistory { totalCount } } }
      c: node(id: $c) { ... on Connector { statusHistory { totalCount
        nodes { status errorCode info } } } } }"""
    ids = {"s": to_global_id("station", station.id), "c": to_global_id("connector",
                                                                        connector.id)}
    mine = await api.gql(document, ids, as_user=history_world.users["op_a"].id)
    assert mine["s"]["connectionHistory"]["totalCount"] == 3
    assert mine["c"]["statusHistory"]["totalCount"] == 4
    assert mine["c"]["statusHistory"]["nodes"][0] == {
        "status": "FAULTED", "errorCode": "GROUND_FAILURE", "info": "RCD tripped"}
    # Another company's station reads as missing.
    other = await api.gql(document, ids, as_user=history_world.users["op_b"].id)
    assert other == {"s": None, "c": None}
    # A driver sees the public station and connector, none of their history.
    driver = await api.gql(document, ids, as_user=history_world.users["driver1"].id)
    assert driver == {"s": {"connectionHistory": {"totalCount": 0}},
                      "c": {"statusHistory": {"totalCount": 0, "nodes": []}}}


async def test_status_history_pages_newest_first_within_a_time_range(
        api: Api, history_world: World) -> None:
    connector = to_global_id("connector", history_world.connectors["A-001"][0].id)
    document = """query($id: ID!, $from: DateTime, $to: DateTime, $after: String) {
      node(id: $id) { ... on Connector { statusHistory(from: $from, to: $to, first: 2,
        after: $after) { totalCount pageInfo { hasNextPage endCursor }
        nodes { status at } } } } }"""
    admin = history_world.users["admin"].id

    async def page(**variables: Any) -> dict[str, Any]:
        data = await api.gql(document, {"id": connector, **variables}, as_user=admin)
        return data["node"]["statusHistory"]  # type: ignore[no-any-return]

    first = await page()
    assert [n["status"] for n in first["nodes"]] == ["FAULTED", "CHARGING"]
    second = await page(after=first["pageInfo"]["endCursor"])
    assert [n["status"] for n in second["nodes"]] == ["PREPARING", "AVAILABLE"]
    assert not second["pageInfo"]["hasNextPage"] and second["totalCount"] == 4
    ranged = await page(**{"from": minutes(1).isoformat(), "to": minutes(5).isoformat()})
    assert [n["status"] for n in ranged["nodes"]] == ["CHARGING", "PREPARING"]
    assert ranged["totalCount"] == 2 and not ranged["pageInfo"]["hasNextPage"]


async def test_anonymous_sees_no_history_even_on_the_public_map(
        services: Services, history_world: World) -> None:
    public = Services(ServiceContext(store=services.ctx.store,
                                     policy=Policy(public_map=True),
                                     hasher=services.ctx.hasher))
    tokens = TokenService(SECRET, timedelta(hours=1))
    client = Api(create_graphql_app(public, tokens), tokens)
    try:
        data = await client.gql(STATIONS)
        assert station_history(data) == dict.fromkeys(("A-001", "A-002", "B-001", "B-002"),
                                                      QUIET)
        s1 = to_global_id("session", history_world.sessions["s1"].id)
        assert (await client.gql(NODE_SESSION, {"id": s1}))["node"] is None
    finally:
        await client.client.aclose()


# ---------------------------------------------------------------- books and reused cpIds
async def test_a_session_s_samples_follow_its_books_when_the_station_changes_hands(
        api: Api, services: Services, history_world: World) -> None:
    """B-001 goes to company A: B keeps the books of s2 and its charging curve; A runs the
    station now, but reads neither B's session, nor B's status reports (in B's books, as
    the session: review r27), nor its charger's connects and disconnects under B
    (review r27-analytics2)."""
    b1 = history_world.stations["B-001"]
    await services.stations.update_station(SYSTEM, b1.id,
                                           company_id=history_world.companies["a"].id)
    op_a, op_b = history_world.users["op_a"].id, history_world.users["op_b"].id
    assert curves(await api.gql(SESSIONS, as_user=op_b)) == {"B-001": S2}
    assert "B-001" not in curves(await api.gql(SESSIONS, as_user=op_a))
    s2 = to_global_id("session", history_world.sessions["s2"].id)
    assert (await api.gql(NODE_SESSION, {"id": s2}, as_user=op_a))["node"] is None
    assert station_history(await api.gql(STATIONS, as_user=op_a))["B-001"] == QUIET
    assert "B-001" not in station_history(await api.gql(STATIONS, as_user=op_b))


async def test_a_reused_cp_id_starts_without_the_old_station_s_history(
        api: Api, services: Services, history_world: World) -> None:
    """A-001's session is ended, the station removed and a new one takes its cpId: the
    new station's connectors and connections have no history, while the old session
    keeps its samples for its books."""
    old = history_world.stations["A-001"]
    await services.charging.end_session(SYSTEM, history_world.sessions["s1"].id)
    await services.stations.remove_station(SYSTEM, old.id)
    await services.stations.create_station(
        SYSTEM, cp_id="A-001", name="A Station 1 again",
        company_id=history_world.companies["a"].id,
        connectors=[ConnectorSpec(1), ConnectorSpec(2)])
    op_a = history_world.users["op_a"].id
    assert station_history(await api.gql(STATIONS, as_user=op_a))["A-001"] == QUIET
    assert curves(await api.gql(SESSIONS, as_user=op_a))["A-001"] == S1


# ---------------------------------------------------------------- store calls
PAGE = """query($n: Int!) { sessions(first: $n) { nodes { transactionId socPercent
  meterValues(first: 3, measurands: [ENERGY_ACTIVE_IMPORT_REGISTER]) {
    totalCount nodes { value } } } } }"""


async def test_a_page_of_sessions_loads_samples_and_soc_with_fixed_store_calls(
        api: Api, services: Services, history_world: World, store: CountingStore) -> None:
    admin = history_world.users["admin"].id

    async def calls(n: int) -> tuple[list[str], int]:
        store.calls.clear()
        data = await api.gql(PAGE, {"n": n}, as_user=admin)
        return list(store.calls), len(data["sessions"]["nodes"])

    small, small_rows = await calls(2)
    station = history_world.stations["A-002"]
    more = []
    for i in range(12):
        session = d.Session(
            transaction_id=await services.ctx.store.next_sequence("transaction"),
            station_id=station.id, cp_id="A-002", connector_id=2, id_tag="TAG-X",
            start_time=minutes(i), end_time=minutes(i + 1), meter_start_wh=0,
            state=d.SessionState.COMPLETED, company_id=station.company_id,
            soc_percent=10.0 + i, soc_at=minutes(i))
        more += [session, sample(session, minutes(i), ENERGY, 10.0 * i, "Wh"),
                 sample(session, minutes(i), "SoC", 10.0 + i, "Percent")]
    await services.ctx.store.write([Insert(r) for r in more], [])
    large, large_rows = await calls(15)
    assert (small_rows, large_rows) == (2, 15)
    # token viewer, the page, the samples of its sessions, their counts (the SoC is
    # the session's own)
    assert large == small and len(large) == 4, large
    assert sorted(large) == sorted(["get_many", "find_page", "find_grouped",
                                    "count_grouped"])


async def test_connectors_status_history_costs_a_call_per_connector_number(
        api: Api, services: Services, history_world: World, store: CountingStore) -> None:
    """Reports are batched by station, one call for each connector number among the
    page's connectors (1 and 2 here), whatever the number of stations."""
    admin = history_world.users["admin"].id
    document = """query($n: Int!) { stations(first: $n) { nodes {
      connectionHistory(first: 5) { nodes { online } }
      connectors { statusHistory(first: 5) { nodes { status } } } } } }"""

    async def calls(n: int) -> int:
        store.calls.clear()
        data = await api.gql(document, {"n": n}, as_user=admin)
        assert len(data["stations"]["nodes"]) == n
        return len(store.calls)

    small = await calls(2)
    for i in range(10):
        await services.stations.create_station(
            SYSTEM, cp_id=f"X-{i:03d}", name=f"Extra {i}",
            company_id=history_world.companies["a"].id,
            connectors=[ConnectorSpec(1), ConnectorSpec(2)])
    assert await calls(14) == small
    # token viewer, page, connectors, connection history, status history of 1 and of 2
    assert small == 6


FAULTS = """query($from: DateTime!, $to: DateTime!) { faultReports(
  from: $from, to: $to, filter: {cpIds: ["A-001"]}) {
  groups { errorCode count } events(first: 10) { nodes { id status errorCode } } } }"""
CONNECTOR_HISTORY = """query($id: ID!) { node(id: $id) { ... on Connector {
  statusHistory(first: 10) { totalCount nodes { id status errorCode info } } } } }"""
NODE_EVENT = """query($id: ID!) { node(id: $id) { ... on StatusEvent { status info } } }"""


async def test_status_history_after_a_handover_is_each_company_s_own(
        api: Api, services: Services, history_world: World) -> None:
    """A-001 handed to company B: B reads none of A's status reports, neither in
    ``faultReports`` nor one field away in ``Connector.statusHistory`` or by
    ``node(id:)`` (review r27: it read A's GroundFailure "RCD tripped" and its drivers'
    Preparing and Charging times); A keeps them, by ``node(id:)`` and its fault report,
    as it keeps its sessions there."""
    station = history_world.stations["A-001"]
    await services.stations.update_station(SYSTEM, station.id,
                                           company_id=history_world.companies["b"].id)
    op_a, op_b = (history_world.users[who].id for who in ("op_a", "op_b"))
    window = {"from": T0.isoformat(), "to": services.ctx.clock().isoformat()}
    faults: Any = await api.gql(FAULTS, window, as_user=op_b)
    assert faults["faultReports"] == {"groups": [], "events": {"nodes": []}}
    connector = to_global_id("connector", history_world.connectors["A-001"][0].id)
    seen: Any = await api.gql(CONNECTOR_HISTORY, {"id": connector}, as_user=op_b)
    assert seen["node"]["statusHistory"] == {"totalCount": 0, "nodes": []}
    kept: Any = await api.gql(FAULTS, window, as_user=op_a)
    assert kept["faultReports"]["groups"] == [{"errorCode": "GROUND_FAILURE", "count": 1}]
    [event] = kept["faultReports"]["events"]["nodes"]
    for who, expected in ((op_a, {"status": "FAULTED", "info": "RCD tripped"}),
                          (op_b, None)):
        found: Any = await api.gql(NODE_EVENT, {"id": event["id"]}, as_user=who)
        assert found["node"] == expected, who


async def test_a_status_report_carries_its_audit_stamps_as_other_nodes(
        services: Services, api: Api, history_world: World) -> None:
    """Design audit s30: StatusEvent was the only node without createdAt/updatedAt/
    createdBy/updatedBy, though its record carries them. Staff see who recorded it (the
    charger, ``ocpp:<cpId>``); a report recorded by a user names them in ``…User``."""
    a1 = history_world.stations["A-001"]
    op_a = history_world.users["op_a"]
    await services.ctx.store.write([Insert(d.StatusEvent(
        company_id=a1.company_id, station_id=a1.id, cp_id="A-001", connector_id=1,
        status=d.ConnectorStatus.UNAVAILABLE, at=minutes(9), created_at=minutes(9),
        updated_at=minutes(10), created_by="ocpp:A-001", updated_by=op_a.id))], [])
    document = """query($c: ID!) { node(id: $c) { ... on Connector {
      statusHistory(first: 1) { nodes { status createdAt updatedAt createdBy updatedBy
        createdByUser { id } updatedByUser { email } } } } } }"""
    connector = to_global_id("connector", history_world.connectors["A-001"][0].id)
    data = await api.gql(document, {"c": connector}, as_user=op_a.id)
    assert data["node"]["statusHistory"]["nodes"] == [{
        "status": "UNAVAILABLE", "createdAt": "2025-03-01T08:09:00.000Z",
        "updatedAt": "2025-03-01T08:10:00.000Z", "createdBy": "ocpp:A-001",
        "updatedBy": to_global_id("user", op_a.id), "createdByUser": None,
        "updatedByUser": {"email": op_a.email}}]
