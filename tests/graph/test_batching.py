"""A nested query costs a fixed number of store calls, whatever the number of rows."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.services import ConnectorSpec
from domain.services.charging import books_of
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World, build_world

QUERY = """query($n: Int!) { stations(first: $n) { edges { node { cpId owner { name }
  company { name } tariff { pricePerKwh }
  connectors { connectorId station { cpId } activeSession { transactionId
    user { name vehicles(first: 5) { nodes { licensePlate } } } vehicle { licensePlate }
    connector { connectorId } payment { status } } } } } } }"""


async def _calls_for(api: Api, store: CountingStore, uid: str, n: int) -> tuple[int, int]:
    store.calls.clear()
    data = await api.gql(QUERY, {"n": n}, as_user=uid)
    # The viewer lookup for the bearer token is one call of its own.
    return len(store.calls), len(data["stations"]["edges"])


async def test_same_store_calls_at_two_sizes(api: Api, services, store: CountingStore) -> None:
    world: World = await build_world(services, stations_per_company=2)
    admin = world.users["admin"].id
    small_calls, small_rows = await _calls_for(api, store, admin, 3)
    for i in range(20):
        await services.stations.create_station(
            SYSTEM, cp_id=f"X-{i:03d}", name=f"Extra {i}", company_id=world.companies["a"].id,
            owner_id=world.users["op_a"].id,
            connectors=[ConnectorSpec(1), ConnectorSpec(2), ConnectorSpec(3)],
        )
    large_calls, large_rows = await _calls_for(api, store, admin, 24)
    assert (small_rows, large_rows) == (3, 24)
    assert small_calls == large_calls
    # token viewer, page, owners, companies, station tariffs, company tariffs, connectors,
    # active sessions, session users, their vehicles, session vehicles, payments: one call
    # per relation, never one per row (a connector's station is its parent, already known).
    assert large_calls == 12


async def test_grouped_loads_per_level(api: Api, world: World, store: CountingStore) -> None:
    store.calls.clear()
    await api.gql("{ stations(first: 10) { nodes { connectors { connectorId } } } }",
                  as_user=world.users["admin"].id)
    assert store.calls == ["get_many", "find_page", "find_grouped"]


async def test_a_page_prefetches_its_levels_whatever_the_selection_shape(
        api: Api, world: World, store: CountingStore) -> None:
    """``nodes``, ``edges { node }`` and fragments select the same levels: each loads them
    up front for the whole page (one call per level), with the same answer as a station
    reached on its own."""
    admin = world.users["admin"].id
    inner = "cpId connectors { connectorId activeSession { transactionId user { name } " \
            "vehicle { licensePlate } } }"
    shapes = [
        f"{{ stations(first: 50) {{ nodes {{ {inner} }} }} }}",
        f"{{ stations(first: 50) {{ edges {{ node {{ {inner} }} }} }} }}",
        "{ stations(first: 50) { nodes { ...S } } } fragment S on Station { "
        "cpId connectors { ...C } } fragment C on Connector { connectorId activeSession { "
        "transactionId user { name } vehicle { licensePlate } } }",
    ]
    answers, calls = [], []
    for document in shapes:
        store.calls.clear()
        data = await api.gql(document, as_user=admin)
        page = data["stations"]
        answers.append(page["nodes"] if "nodes" in page else [e["node"] for e in page["edges"]])
        calls.append(list(store.calls))
    assert answers[0] == answers[1] == answers[2]
    assert any(c["activeSession"] for s in answers[0] for c in s["connectors"])
    # token viewer, page, connectors, active sessions, users, vehicles
    assert calls[0] == calls[1] == calls[2]
    assert len(calls[0]) == 6
    for station in answers[0]:
        one = await api.gql(f'{{ station(cpId: "{station["cpId"]}") {{ {inner} }} }}',
                            as_user=admin)
        assert one["station"] == station


SESSION_FIELDS = """transactionId user { name } vehicle { licensePlate } station { cpId }
  connector { connectorId } payment { status }"""


async def test_a_page_of_sessions_loads_each_relation_once(
        api: Api, world: World, store: CountingStore) -> None:
    """``sessions { user vehicle station connector payment }``: one call per relation for
    the page, and the same answers as each session read on its own (``node``)."""
    admin = world.users["admin"].id
    store.calls.clear()
    data = await api.gql(f"{{ sessions(first: 50) {{ nodes {{ id {SESSION_FIELDS} }} }} }}",
                         as_user=admin)
    nodes = data["sessions"]["nodes"]
    assert len(nodes) == len(world.sessions)
    assert any(n["payment"] for n in nodes) and any(n["payment"] is None for n in nodes)
    # token viewer, page, users, vehicles, stations, connectors, payments
    assert len(store.calls) == 7
    for node in nodes:
        one = await api.gql(f'{{ node(id: "{node["id"]}") {{ id ... on Session {{ '
                            f'{SESSION_FIELDS} }} }} }}', as_user=admin)
        assert one["node"] == node


async def test_a_page_of_connectors_loads_each_level_once(
        api: Api, world: World, store: CountingStore) -> None:
    admin = world.users["admin"].id
    document = ("{ connectors(first: 50) { nodes { id connectorId station { cpId } "
                f"activeSession {{ {SESSION_FIELDS} }} }} }} }}")
    store.calls.clear()
    nodes = (await api.gql(document, as_user=admin))["connectors"]["nodes"]
    assert any(n["activeSession"] for n in nodes)
    # token viewer, page, stations, active sessions, then the sessions' relations
    # (users, vehicles, stations are known, connectors, payments)
    assert len(store.calls) == 8
    for node in nodes:
        one = await api.gql(f'{{ node(id: "{node["id"]}") {{ id ... on Connector {{ '
                            f'connectorId station {{ cpId }} activeSession {{ '
                            f'{SESSION_FIELDS} }} }} }} }}', as_user=admin)
        assert one["node"] == node


async def _more_stations(services, world: World, count: int, batch: str = "X"
                         ) -> list[d.Station]:
    """``count`` more stations for each company, each with a live reservation and a paid
    session on plug 1 (by driver1), so every nested path below has rows per station."""
    store = services.ctx.store
    made = []
    for company in ("a", "b"):
        for i in range(count):
            station, _ = await services.stations.create_station(
                SYSTEM, cp_id=f"{company.upper()}-{batch}{i:03d}", name=f"Extra {i}",
                company_id=world.companies[company].id,
                owner_id=world.users[f"op_{company}"].id,
                connectors=[ConnectorSpec(1), ConnectorSpec(2)])
            made.append(station)
            company_id, owner_id = books_of(station)
            start = utcnow() - timedelta(hours=2)
            session = d.Session(
                transaction_id=await store.next_sequence("transaction"),
                station_id=station.id, cp_id=station.cp_id, connector_id=1,
                id_tag=world.tags["driver1"].tag, user_id=world.users["driver1"].id,
                vehicle_id=world.vehicles["driver1"].id, start_time=start,
                meter_start_wh=0, energy_wh=1000, state=d.SessionState.COMPLETED,
                end_time=start + timedelta(hours=1), meter_stop_wh=1000,
                created_at=start, updated_at=start, company_id=company_id,
                station_owner_id=owner_id)
            await store.write([
                Insert(session),
                Insert(d.Payment(session_id=session.id, station_id=station.id,
                                 user_id=session.user_id, amount_minor=100, currency="EUR",
                                 company_id=company_id, station_owner_id=owner_id)),
                Insert(d.Reservation(
                    reservation_id=await store.next_sequence("reservation"),
                    station_id=station.id, cp_id=station.cp_id, connector_id=2,
                    id_tag=world.tags["driver1"].tag, user_id=world.users["driver1"].id,
                    expires_at=utcnow() + timedelta(hours=1), company_id=company_id,
                    station_owner_id=owner_id)),
            ], [])
    return made


CONNECTORS_BELOW = "cpId connectors { connectorId station { cpId } " \
                   "activeSession { transactionId user { name } } }"

#: Stations reached other than as a page of ``stations``: their connectors (and the
#: connectors' active sessions and drivers) must cost one store call per level too.
STATIONS_UNDER_PARENTS = {
    "company": f"{{ companies(first: 5) {{ nodes {{ stations(first: 20) {{ nodes {{ "
               f"{CONNECTORS_BELOW} }} }} }} }} }}",
    "owner": f"{{ users(first: 10) {{ nodes {{ stations(first: 20) {{ nodes {{ "
             f"{CONNECTORS_BELOW} }} }} }} }} }}",
    "reservation": f"{{ reservations(first: 50) {{ nodes {{ station {{ "
                   f"{CONNECTORS_BELOW} }} }} }} }}",
    "payment": f"{{ payments(first: 50) {{ nodes {{ session {{ station {{ "
               f"{CONNECTORS_BELOW} }} }} }} }} }}",
}


@pytest.mark.parametrize("path", sorted(STATIONS_UNDER_PARENTS))
async def test_connectors_of_stations_under_other_parents_load_once_per_level(
        api: Api, world: World, services, store: CountingStore, path: str) -> None:
    """``companies { stations { connectors } }``, a reservation's or a payment's station
    …: the connectors of every station of the level come from one store call, as under
    a page of stations (QA s28: each station's connectors and active sessions were a
    call of their own, 40 calls for a company's 20 stations)."""
    document = STATIONS_UNDER_PARENTS[path]
    viewer = world.users["op_a"].id
    await _more_stations(services, world, 1)
    store.calls.clear()
    few = await api.gql(document, as_user=viewer)
    few_calls = list(store.calls)
    await _more_stations(services, world, 8, batch="Y")
    store.calls.clear()
    many = await api.gql(document, as_user=viewer)
    # many more stations (and their connectors) listed, for the same calls
    assert json.dumps(many).count('"cpId"') > 2 * json.dumps(few).count('"cpId"')
    assert store.calls == few_calls
    # connectors, active sessions and their drivers: one call each at any size
    assert store.calls.count("find_grouped") <= 3 + ("users" in document)


async def test_nodes_by_ids_load_each_kind_in_one_call(
        api: Api, world: World, services, store: CountingStore) -> None:
    """``nodes(ids:)`` loads its ids of each kind in one store call (QA s28: awaited one
    by one, 100 ids were 100 calls), answers in the order asked, null for a hidden one."""
    await _more_stations(services, world, 5)
    admin = world.users["admin"].id
    stations = (await api.gql("{ stations(first: 50) { nodes { id cpId } } }",
                              as_user=admin))["stations"]["nodes"]
    users = (await api.gql("{ users(first: 50) { nodes { id name } } }",
                           as_user=admin))["users"]["nodes"]
    ids = [n["id"] for pair in zip(stations, users, strict=False) for n in pair]
    document = ("query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Station { cpId "
                "connectors { connectorId } } ... on User { name } } }")
    store.calls.clear()
    nodes = (await api.gql(document, {"ids": ids}, as_user=admin))["nodes"]
    assert [n["id"] for n in nodes] == ids
    # token viewer, stations, users, the stations' connectors
    assert sorted(store.calls) == ["find_grouped", "get_many", "get_many", "get_many"]
    # An operator of A: B's stations read null, in their places.
    op_a = world.users["op_a"].id
    ids = [s["id"] for s in stations]
    store.calls.clear()
    seen = (await api.gql(document, {"ids": ids}, as_user=op_a))["nodes"]
    assert len(store.calls) == 3
    assert [n and n["cpId"] for n in seen] == [
        s["cpId"] if s["cpId"].startswith("A-") else None for s in stations]


LAST_UNDER_PARENTS = (
    "{ stations(first: 50) { nodes { cpId sessions(last: 1) { totalCount "
    "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
    "edges { cursor node { transactionId } } } } } }")


async def test_last_of_nested_lists_loads_once_per_level(
        api: Api, world: World, services, store: CountingStore) -> None:
    """``sessions(last: n)`` under a page of stations is batched as ``first`` is (QA s28:
    a store call per station, and one more per station for ``totalCount``), and answers
    as the store's own backward page of each list: its last rows in the list's order,
    their cursors, ``hasPreviousPage`` when rows come before them."""
    admin = world.users["admin"].id
    await _more_stations(services, world, 1)
    store.calls.clear()
    await api.gql(LAST_UNDER_PARENTS, as_user=admin)
    few_calls = list(store.calls)
    made = await _more_stations(services, world, 6, batch="Y")
    # A second session on some stations, so some lists have more than their last row.
    for station in (world.stations["A-001"], made[0], made[-1]):
        company_id, owner_id = books_of(station)
        await services.ctx.store.write([Insert(d.Session(
            transaction_id=await services.ctx.store.next_sequence("transaction"),
            station_id=station.id, cp_id=station.cp_id, connector_id=2, id_tag="OTHER",
            start_time=utcnow() - timedelta(minutes=5), meter_start_wh=0,
            company_id=company_id, station_owner_id=owner_id))], [])
    store.calls.clear()
    stations = (await api.gql(LAST_UNDER_PARENTS, as_user=admin))["stations"]["nodes"]
    assert store.calls == few_calls
    # token viewer, page, sessions, their counts
    assert len(store.calls) == 4
    assert sum(s["sessions"]["totalCount"] > 1 for s in stations) >= 3
    for station in stations:
        got = station["sessions"]
        whole = (await api.gql(
            f'{{ station(cpId: "{station["cpId"]}") {{ sessions(first: 100) {{ '
            "edges { cursor node { transactionId } } } } }", as_user=admin)
        )["station"]["sessions"]["edges"]
        assert got["edges"] == whole[-1:]
        assert got["totalCount"] == len(whole)
        assert got["pageInfo"] == {
            "hasNextPage": False, "hasPreviousPage": len(whole) > 1,
            "startCursor": whole[-1]["cursor"] if whole else None,
            "endCursor": whole[-1]["cursor"] if whole else None}
        if len(whole) > 1:  # its cursor pages on backward, in that parent's list
            before = (await api.gql(
                f'{{ station(cpId: "{station["cpId"]}") {{ sessions(last: 100, before: '
                f'"{whole[-1]["cursor"]}") {{ edges {{ cursor node {{ transactionId }} }} }} '
                "} }", as_user=admin))["station"]["sessions"]["edges"]
            assert before == whole[:-1]


#: A page whose prefetch loads a kind: the kind failed, the field of each row it
#: answers, and whether every row's field fails (a station's active sessions, asked of
#: each connector) or only those the kind would answer (a session's station when it has
#: one). One page of each type that prefetches, down to a station's connectors' active
#: sessions' vehicles.
PREFETCH_FAILING = {
    "sessions": ("{ sessions(first: 50) { nodes { transactionId user { name } "
                 "vehicle { licensePlate } station { cpId } } } }", "station", "station",
                 False),
    "connectors": ("{ connectors(first: 50) { nodes { id connectorId station { cpId } "
                   "activeSession { transactionId user { name } } } } }", "station",
                   "station", False),
    "connectors-sessions": ("{ connectors(first: 50) { nodes { id connectorId station { "
                            "cpId } activeSession { transactionId user { name } } } } }",
                            "session", "activeSession", True),
    "stations": ("{ stations(first: 50) { nodes { cpId connectors { connectorId "
                 "activeSession { transactionId user { name } vehicle { licensePlate } "
                 "} } } } }", "vehicle", "vehicle", False),
}


def _answered(value: object, field: str, every: bool, path: tuple[str | int, ...] = ()
              ) -> list[tuple[str | int, ...]]:
    """The paths of an answer's ``field``s: the non-null ones, or ``every`` one."""
    if isinstance(value, dict):
        return [p for key, inner in value.items()
                for p in ([(*path, key)] if key == field and (every or inner is not None)
                          else _answered(inner, field, every, (*path, key)))]
    if isinstance(value, list):
        return [p for i, inner in enumerate(value)
                for p in _answered(inner, field, every, (*path, i))]
    return []


@pytest.mark.parametrize("page", sorted(PREFETCH_FAILING))
async def test_a_page_survives_its_prefetch_failing(
        api: Api, world: World, store: CountingStore, page: str) -> None:
    """QA s31: a page's prefetch failing to load a related kind failed the whole page
    (its data null up to the list). As analytics' rows (review s30), and as a resolver
    without a prefetch: every row stands, the related field is null with the error at
    its own path, and the rows' own loads of it are one batch, not one call per row.
    When nothing fails, the prefetch costs what it did."""
    document, kind, field, every = PREFETCH_FAILING[page]
    token = api.token_for(world.users["admin"].id)
    store.calls.clear()
    store.detail.clear()
    whole = (await api.post(document, token=token)).json()
    assert "errors" not in whole, whole["errors"]
    calls = list(store.calls)
    detail = Counter(store.detail)
    # token viewer, page, then one call per related level (as the tests above count)
    assert len(calls) == {"sessions": 5, "connectors": 5, "connectors-sessions": 5,
                          "stations": 6}[page]
    answered = _answered(whole["data"], field, every)
    assert answered, whole  # the world has rows whose field the failure nulls

    store.failing.add(kind)
    store.detail.clear()
    body = (await api.post(document, token=token)).json()
    expected = json.loads(json.dumps(whole["data"]))
    for path in answered:
        *parent, key = path
        row = expected
        for step in parent:
            row = row[step]
        row[key] = None
    assert body["data"] == expected, body
    assert sorted(tuple(e["path"]) for e in body["errors"]) == sorted(answered)
    assert {e["extensions"]["code"] for e in body["errors"]} == {"STORE_BUSY"}
    # The prefetch's call, then the rows' one batch of the failing kind; of the others,
    # no more than when nothing fails (none below a failed level).
    failed = Counter(call for call in store.detail if call.endswith(f":{kind}"))
    assert list(failed.values()) == [2], store.detail
    assert Counter(store.detail) - failed <= detail, (store.detail, detail)
