"""Every role's view of the graph, as DESIGN.md section 3 says: lists, nested paths and
``node(id:)`` on other people's ids."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest

from domain.clock import utcnow
from domain.entities import Payment
from domain.policy import SYSTEM
from domain.services import Services
from graph.ids import to_global_id
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World
from tests.support.gateways import Accepting

STATIONS = "{ stations(first: 50) { totalCount nodes { cpId owner { name } } } }"
SESSIONS = "{ sessions(first: 50) { totalCount nodes { transactionId cpId } } }"
USERS = "{ users(first: 50) { nodes { name email } } }"


def cp_ids(data: dict) -> set[str]:
    return {n["cpId"] for n in data["stations"]["nodes"]}


def session_cps(data: dict) -> set[str]:
    return {n["cpId"] for n in data["sessions"]["nodes"]}


@pytest.mark.parametrize(
    ("who", "stations", "owner_visible", "sessions"),
    [
        ("admin", {"A-001", "A-002", "B-001", "B-002"}, True, {"A-001", "B-001", "A-002"}),
        ("op_a", {"A-001", "A-002"}, True, {"A-001", "A-002"}),
        ("op_a2", {"A-001", "A-002"}, True, {"A-001", "A-002"}),
        ("op_b", {"B-001", "B-002"}, True, {"B-001"}),
        ("driver1", {"A-001", "A-002", "B-001", "B-002"}, False, {"A-001", "B-001"}),
        ("driver2", {"A-001", "A-002", "B-001", "B-002"}, False, {"A-002"}),
        ("driver_a", {"A-001", "A-002", "B-001", "B-002"}, False, set()),
    ],
)
async def test_lists_per_role(api: Api, world: World, who: str, stations: set[str],
                              owner_visible: bool, sessions: set[str]) -> None:
    uid = world.users[who].id
    data = await api.gql(STATIONS, as_user=uid)
    assert cp_ids(data) == stations
    assert data["stations"]["totalCount"] == len(stations)
    owners = [n["owner"] for n in data["stations"]["nodes"]]
    assert all((o is not None) == owner_visible for o in owners)
    data = await api.gql(SESSIONS, as_user=uid)
    assert session_cps(data) == sessions
    assert data["sessions"]["totalCount"] == len(sessions)


async def test_anonymous_sees_nothing_without_public_map(api: Api, world: World) -> None:
    data = await api.gql("{ me { id } stations { totalCount } sessions { totalCount } }")
    assert data == {"me": None, "stations": {"totalCount": 0}, "sessions": {"totalCount": 0}}


async def test_users_per_role_and_reduced_view(api: Api, world: World) -> None:
    def names(data: dict) -> dict[str, str | None]:
        return {n["name"]: n["email"] for n in data["users"]["nodes"]}

    op_a = names(await api.gql(USERS, as_user=world.users["op_a"].id))
    # Colleagues in full; drivers of sessions on A's stations by name only.
    assert op_a == {"Op_A": "op_a@example.com", "Op_A2": "op_a2@example.com",
                    "Driver_A": "driver_a@example.com", "Driver1": None, "Driver2": None}
    op_b = names(await api.gql(USERS, as_user=world.users["op_b"].id))
    assert op_b == {"Op_B": "op_b@example.com", "Driver1": None}
    driver = names(await api.gql(USERS, as_user=world.users["driver2"].id))
    assert driver == {"Driver2": "driver2@example.com"}
    admin = names(await api.gql(USERS, as_user=world.users["admin"].id))
    assert len(admin) == 7 and all(admin.values())


USER_NAMES = """query($f: UserFilter, $o: [UserOrder!]) {
    users(first: 50, filter: $f, orderBy: $o) { edges { cursor node { name } } } }"""


@pytest.mark.parametrize(("who", "variables", "names"), [
    # Op_A sees Driver1 and Driver2 by name only: their emails and roles cannot be
    # found out by searching, filtering or sorting on them.
    ("op_a", {"f": {"search": "driver1@"}}, set()),
    ("op_a", {"f": {"search": "driver"}}, {"Driver_A", "Driver1", "Driver2"}),  # names
    ("op_a", {"f": {"search": "example.com"}}, {"Op_A", "Op_A2", "Driver_A"}),
    ("op_a", {"f": {"role": "DRIVER"}}, {"Driver_A"}),
    ("op_a", {"o": [{"field": "EMAIL"}]}, {"Op_A", "Op_A2", "Driver_A"}),
    ("op_a", {"o": [{"field": "NAME"}]}, {"Op_A", "Op_A2", "Driver_A", "Driver1", "Driver2"}),
    ("admin", {"f": {"search": "driver1@"}}, {"Driver1"}),
    ("admin", {"f": {"role": "DRIVER"}}, {"Driver_A", "Driver1", "Driver2"}),
])
async def test_hidden_user_fields_cannot_be_searched_filtered_or_sorted(
        api: Api, world: World, who: str, variables: dict, names: set[str]) -> None:
    data = await api.gql(USER_NAMES, variables, as_user=world.users[who].id)
    edges = data["users"]["edges"]
    assert {e["node"]["name"] for e in edges} == names
    if who != "admin":  # cursors carry the sort values: never a hidden one
        hidden = {"driver1@example.com", "driver2@example.com"}
        cursors = [base64.urlsafe_b64decode(e["cursor"] + "=" * (-len(e["cursor"]) % 4))
                   for e in edges]
        assert not any(email.encode() in cursor for cursor in cursors for email in hidden)


async def test_a_drivers_tariff_does_not_say_which_company_runs_the_station(
        api: Api, world: World, services: Services) -> None:
    """A station of no tariff of its own shows its company's; a driver of that company
    (who sees their own company) read from it which stations the company runs."""
    from decimal import Decimal

    from domain.policy import SYSTEM

    await services.tariffs.set_tariff(SYSTEM, price_per_kwh=Decimal("0.39"), currency="EUR",
                                      company_id=world.companies["a"].id)
    query = "{ stations(first: 10) { nodes { cpId tariff { company { name } } } } }"
    for who, named in (("driver_a", False), ("driver1", False), ("op_a", True)):
        nodes = (await api.gql(query, as_user=world.users[who].id))["stations"]["nodes"]
        companies = {n["tariff"]["company"] is not None for n in nodes if n["tariff"]}
        assert companies == {named}, who


async def test_hidden_station_fields_cannot_be_filtered_on(api: Api, world: World) -> None:
    """A driver sees the map, not who runs it: filtering on the owner or company finds
    nothing, as it does for an operator of another company."""
    query = """query($f: StationFilter) { stations(first: 50, filter: $f) {
        nodes { cpId } } }"""
    company = to_global_id("company", world.companies["a"].id)
    owner = to_global_id("user", world.users["op_a"].id)
    for who, expected in (("driver1", set()), ("op_b", set()),
                          ("op_a", {"A-001", "A-002"}), ("admin", {"A-001", "A-002"})):
        for variables in ({"f": {"companyId": company}}, {"f": {"ownerId": owner}}):
            data = await api.gql(query, variables, as_user=world.users[who].id)
            assert cp_ids(data) == expected, (who, variables)
    data = await api.gql(query, {"f": {"search": "A Station"}},
                         as_user=world.users["driver1"].id)
    assert cp_ids(data) == {"A-001", "A-002"}  # the public fields still search


async def test_a_station_handed_to_another_company_leaves_its_books_behind(
        api: Api, world: World, services: Services) -> None:
    """Sessions and payments stay in the books they went to when they happened: the old
    company keeps and settles them, the new one sees none of the drivers who charged
    under the old one."""
    station = to_global_id("station", world.stations["A-002"].id)
    moved = await api.gql("""mutation($id: ID!, $c: ID!, $o: ID!) { updateStation(input:
        {id: $id, companyId: $c, ownerId: $o}) { errors { code } } }""",
                          {"id": station, "c": to_global_id("company", world.companies["b"].id),
                           "o": to_global_id("user", world.users["op_b"].id)},
                          as_user=world.users["admin"].id)
    assert moved["updateStation"]["errors"] == []
    books = """{ sessions(first: 50) { nodes { cpId } } payments(first: 50) { nodes { id } }
        users(first: 50) { nodes { name } } }"""
    op_b = await api.gql(books, as_user=world.users["op_b"].id)
    assert session_cps(op_b) == {"B-001"}  # not A-002's session of driver2
    assert "Driver2" not in {n["name"] for n in op_b["users"]["nodes"]}
    op_a = await api.gql(books, as_user=world.users["op_a"].id)
    assert session_cps(op_a) == {"A-001", "A-002"}
    payment = to_global_id("payment", world.payments["s3"].id)
    capture = """mutation($id: ID!) { capturePayment(input: {id: $id}) {
        payment { status } errors { code } } }"""
    refused = await api.gql(capture, {"id": payment}, as_user=world.users["op_b"].id)
    assert refused["capturePayment"]["errors"] == [{"code": "NOT_FOUND"}]
    settled = await api.gql(capture, {"id": payment}, as_user=world.users["op_a"].id)
    assert settled["capturePayment"] == {"payment": {"status": "CAPTURED"}, "errors": []}
    # Stored with who settled it and when, as the answer and the audit log say.
    stored = await services.payments.store.get_many(Payment, [world.payments["s3"].id])
    assert stored[0] is not None and stored[0].updated_by == world.users["op_a"].id
    assert stored[0].updated_at > world.payments["s3"].updated_at


AUDIT = """{ auditLog(first: 100) { totalCount nodes { entity action after } } }"""
HAND_OVER = """mutation($id: ID!, $c: ID!) { updateStation(input: {id: $id, companyId: $c}) {
    errors { code } } }"""


def commands(data: dict) -> list[str]:
    return [n["after"]["command"] for n in data["auditLog"]["nodes"]
            if n["action"] == "COMMAND"]


async def test_a_station_handed_over_leaves_its_command_history_in_the_old_books(
        api: Api, world: World, services: Services) -> None:
    """QA: after a hand-over the new company read the old one's commands (a driver's
    remote start with their card) and the old one lost them. Commands stay in the books
    they were written in; the station's own record changes are its operators' now."""
    station = world.stations["A-002"]
    await services.commands.send(world.viewer("op_a"), station.cp_id, "RemoteStartTransaction",
                                 {"idTag": world.tags["driver2"].tag, "connectorId": 1})
    await services.commands.send(world.viewer("op_a"), station.cp_id, "ReserveNow", {
        "connectorId": 2, "idTag": world.tags["driver2"].tag,
        "expiryDate": utcnow() + timedelta(hours=1)})
    moved = await api.gql(HAND_OVER, {"id": to_global_id("station", station.id),
                                      "c": to_global_id("company", world.companies["b"].id)},
                          as_user=world.users["admin"].id)
    assert moved["updateStation"]["errors"] == []
    await services.commands.send(world.viewer("op_b"), station.cp_id, "Reset",
                                 {"type": "Soft"})
    op_a = await api.gql(AUDIT, as_user=world.users["op_a"].id)
    assert sorted(commands(op_a)) == ["RemoteStartTransaction", "ReserveNow"]
    reserved = [n["action"] for n in op_a["auditLog"]["nodes"] if n["entity"] == "reservation"]
    assert sorted(reserved) == ["CREATE", "DELETE"]  # made, then called off (no charger)
    op_b = await api.gql(AUDIT, as_user=world.users["op_b"].id)
    assert commands(op_b) == ["Reset"]
    assert "TAG-DRIVER2" not in str(op_b)
    handed = [n for n in op_b["auditLog"]["nodes"] if n["entity"] == "station"
              and n["action"] == "UPDATE" and n["after"]["cp_id"] == station.cp_id]
    assert len(handed) == 1  # the station's record: B runs it with its history
    assert any(n["entity"] == "station" and n["action"] == "UPDATE"
               for n in op_a["auditLog"]["nodes"])  # A keeps its hand-over too


RESERVATIONS = """query($station: ID!) {
    reservations(first: 50) { totalCount nodes { id idTag state createdBy } }
    node(id: $station) { ... on Station { reservations(first: 50) { nodes { idTag } } } } }"""
RESERVATION = """query($id: ID!) { node(id: $id) { ... on Reservation { idTag state
    user { id } } } }"""
CANCEL = """mutation($cp: String!, $n: Int!) { cancelReservation(input: {cpId: $cp,
    reservationId: $n}) { status reservation { state } errors { code } } }"""


async def test_a_station_handed_over_leaves_its_reservations_in_the_old_books(
        api: Api, world: World, services: Services) -> None:
    """QA: after a hand-over the new company read the old one's reservation records (the
    driver's card and user id) and the old one lost them. They stay in the books they
    were made in; the new company, which runs the charger now, sees (and may cancel) the
    one still holding its plug, and nothing of it once it is over."""
    services.attach_gateway(Accepting())
    station = world.stations["A-002"]
    soon = utcnow() + timedelta(hours=1)
    made = await services.commands.send(world.viewer("driver1"), station.cp_id, "ReserveNow",
                                        {"connectorId": 2, "expiryDate": soon})
    assert made.reservation is not None
    over = await services.commands.send(
        world.viewer("driver1"), station.cp_id, "CancelReservation",
        {"reservationId": made.reservation.reservation_id})
    assert over.reservation is not None and over.reservation.state.value == "CANCELLED"
    held = await services.commands.send(world.viewer("driver2"), station.cp_id, "ReserveNow",
                                        {"connectorId": 1, "expiryDate": soon})
    assert held.reservation is not None and held.reservation.state.value == "ACTIVE"
    moved = await api.gql(HAND_OVER, {"id": to_global_id("station", station.id),
                                      "c": to_global_id("company", world.companies["b"].id)},
                          as_user=world.users["admin"].id)
    assert moved["updateStation"]["errors"] == []
    ids = {r.id_tag: to_global_id("reservation", r.id)
           for r in (over.reservation, held.reservation)}

    async def read(who: str) -> tuple[dict, dict[str, dict | None]]:
        listed = await api.gql(RESERVATIONS, {"station": to_global_id("station", station.id)},
                               as_user=world.users[who].id)
        nodes = {tag: (await api.gql(RESERVATION, {"id": gid},
                                     as_user=world.users[who].id))["node"]
                 for tag, gid in ids.items()}
        return listed, nodes

    def tags(listed: dict) -> dict[str, str]:
        return {n["idTag"]: n["state"] for n in listed["reservations"]["nodes"]}

    op_a, op_a_nodes = await read("op_a")
    assert tags(op_a) == {"TAG-DRIVER1": "CANCELLED", "TAG-DRIVER2": "ACTIVE"}
    assert op_a["reservations"]["totalCount"] == 2
    assert all(op_a_nodes.values())
    assert op_a["node"] is None  # A no longer runs the station
    op_b, op_b_nodes = await read("op_b")
    assert tags(op_b) == {"TAG-DRIVER2": "ACTIVE"}  # live: B runs its charger
    assert op_b["reservations"]["totalCount"] == 1
    assert op_b["node"]["reservations"]["nodes"] == [{"idTag": "TAG-DRIVER2"}]
    assert op_b_nodes == {"TAG-DRIVER1": None, "TAG-DRIVER2": {
        "idTag": "TAG-DRIVER2", "state": "ACTIVE", "user": None}}
    assert world.users["driver1"].id not in str(op_b)

    # B cancels it at the charger it runs; over, it is A's alone, history included.
    cancelled = await api.gql(CANCEL, {"cp": station.cp_id,
                                       "n": held.reservation.reservation_id},
                              as_user=world.users["op_b"].id)
    assert cancelled["cancelReservation"] == {
        "status": "ACCEPTED", "reservation": {"state": "CANCELLED"}, "errors": []}
    op_b, op_b_nodes = await read("op_b")
    assert op_b["reservations"]["totalCount"] == 0 and op_b["node"]["reservations"] == {
        "nodes": []}
    assert op_b_nodes == {"TAG-DRIVER1": None, "TAG-DRIVER2": None}
    op_a, _ = await read("op_a")
    assert tags(op_a) == {"TAG-DRIVER1": "CANCELLED", "TAG-DRIVER2": "CANCELLED"}
    history = """{ auditLog(first: 100, filter: {entity: "reservation"}) {
        nodes { action actor } } }"""
    assert (await api.gql(history, as_user=world.users["op_b"].id))["auditLog"]["nodes"] == []
    a_history = (await api.gql(history, as_user=world.users["op_a"].id))["auditLog"]["nodes"]
    assert {"action": "UPDATE", "actor": to_global_id("user", world.users["op_b"].id)} in a_history
    # Drivers keep seeing their own.
    for driver, tag in (("driver1", "TAG-DRIVER1"), ("driver2", "TAG-DRIVER2")):
        mine = await api.gql(RESERVATIONS, {"station": to_global_id("station", station.id)},
                             as_user=world.users[driver].id)
        assert set(tags(mine)) == {tag}, driver
    # Their history, without whose books it is (no read of a reservation tells them).
    images = """{ auditLog(first: 20, filter: {entity: "reservation", action: CREATE}) {
        nodes { after } } }"""
    for who, shown in (("driver1", False), ("op_a", True)):
        created = (await api.gql(images, as_user=world.users[who].id))["auditLog"]["nodes"]
        assert created and all(n["after"]["id_tag"] for n in created), who
        assert {"company_id" in n["after"] for n in created} == {shown}, who


async def test_a_driver_reads_their_sessions_audit_without_whose_books_it_is(
        api: Api, world: World, services: Services) -> None:
    """A session's books (the company that ran its station) are no driver's to read in
    its audit entries, as in no read of the session; its operators read them."""
    await services.charging.end_session(world.viewer("op_a"), world.sessions["s1"].id)
    query = """{ auditLog(first: 20, filter: {entity: "session"}) {
        nodes { before after } } }"""
    for who, shown in (("driver1", False), ("op_a", True), ("admin", True)):
        data = await api.gql(query, as_user=world.users[who].id)
        [entry] = data["auditLog"]["nodes"]
        for image in (entry["before"], entry["after"]):
            assert ("company_id" in image, "station_owner_id" in image) == (shown, shown), who
            assert image["user_id"] == world.users["driver1"].id


async def test_which_stations_take_any_charger_is_the_operators_to_know(
        api: Api, world: World, services) -> None:
    await services.stations.create_station(  # security profile 0: no password
        SYSTEM, cp_id="A-OPEN", name="A Station open", company_id=world.companies["a"].id,
        owner_id=world.users["op_a"].id)
    query = """{ stations(first: 10, filter: {search: "A Station"}) {
        nodes { cpId passwordRequired } } }"""
    op = await api.gql(query, as_user=world.users["op_a"].id)
    assert {n["cpId"]: n["passwordRequired"] for n in op["stations"]["nodes"]} == {
        "A-001": True, "A-002": True, "A-OPEN": False}
    driver = await api.gql(query, as_user=world.users["driver1"].id)
    assert {n["passwordRequired"] for n in driver["stations"]["nodes"]} == {None}


async def test_node_on_others_ids_reads_null(api: Api, world: World) -> None:
    query = "query($id: ID!) { node(id: $id) { id __typename } }"
    hidden = {
        "op_b": [("station", world.stations["A-001"].id), ("session", world.sessions["s1"].id),
                 ("user", world.users["driver2"].id), ("company", world.companies["a"].id),
                 ("connector", world.connectors["A-001"][0].id)],
        "driver2": [("session", world.sessions["s1"].id), ("user", world.users["driver1"].id),
                    ("vehicle", world.vehicles["driver1"].id),
                    ("payment", world.payments["s2"].id), ("id_tag", world.tags["driver1"].id)],
        "op_a": [("station", world.stations["B-001"].id), ("session", world.sessions["s2"].id),
                 ("payment", world.payments["s2"].id), ("user", world.users["op_b"].id)],
    }
    for who, targets in hidden.items():
        for kind, record_id in targets:
            data = await api.gql(query, {"id": to_global_id(kind, record_id)},
                                 as_user=world.users[who].id)
            assert data["node"] is None, (who, kind)
    visible = to_global_id("session", world.sessions["s1"].id)
    data = await api.gql(query, {"id": visible}, as_user=world.users["op_a"].id)
    assert data["node"] == {"id": visible, "__typename": "Session"}


async def test_not_our_id_reads_null(api: Api, world: World) -> None:
    data = await api.gql('{ a: node(id: "garbage") { id } b: node(id: "U3RhdGlvbjp4") { id } }',
                         as_user=world.users["admin"].id)
    assert data == {"a": None, "b": None}


NESTED = """{ stations(first: 50) { nodes { cpId connectors { connectorId
  activeSession { transactionId user { name email } vehicle { licensePlate batteryKwh } } } } } }"""


async def test_nested_active_session_obeys_scope(api: Api, world: World) -> None:
    def active(data: dict) -> dict[tuple[str, int], dict]:
        return {(s["cpId"], c["connectorId"]): c["activeSession"]
                for s in data["stations"]["nodes"] for c in s["connectors"]
                if c["activeSession"]}

    op_a = active(await api.gql(NESTED, as_user=world.users["op_a"].id))
    assert list(op_a) == [("A-001", 1)]
    assert op_a[("A-001", 1)]["user"] == {"name": "Driver1", "email": None}
    assert op_a[("A-001", 1)]["vehicle"] == {"licensePlate": "B-DR 1", "batteryKwh": None}
    driver1 = active(await api.gql(NESTED, as_user=world.users["driver1"].id))
    assert driver1[("A-001", 1)]["user"] == {"name": "Driver1", "email": "driver1@example.com"}
    assert driver1[("A-001", 1)]["vehicle"]["batteryKwh"] == 58
    assert active(await api.gql(NESTED, as_user=world.users["driver2"].id)) == {}
    assert active(await api.gql(NESTED, as_user=world.users["op_b"].id)) == {}


async def test_nested_lists_are_scoped_per_viewer(api: Api, world: World) -> None:
    query = """{ stations(first: 50) { nodes { cpId sessions { totalCount nodes { id } } } } }"""
    data = await api.gql(query, as_user=world.users["driver1"].id)
    counts = {s["cpId"]: s["sessions"]["totalCount"] for s in data["stations"]["nodes"]}
    assert counts == {"A-001": 1, "A-002": 0, "B-001": 1, "B-002": 0}
    query = """query($id: ID!) { node(id: $id) { ... on User { sessions { totalCount }
      vehicles { totalCount } idTags { totalCount } } } }"""
    uid = to_global_id("user", world.users["driver1"].id)
    data = await api.gql(query, {"id": uid}, as_user=world.users["op_b"].id)
    # op_b sees driver1 (a session on B-001) but only the session on its own station.
    assert data["node"] == {"sessions": {"totalCount": 1}, "vehicles": {"totalCount": 1},
                            "idTags": {"totalCount": 0}}


async def test_station_by_cp_id_and_private_fields(api: Api, world: World) -> None:
    query = """{ station(cpId: "A-001") { cpId owner { name } company { name } registration
      location { lat lon address } createdBy } }"""
    own = await api.gql(query, as_user=world.users["op_a2"].id)
    assert own["station"]["owner"] == {"name": "Op_A"}
    assert own["station"]["company"] == {"name": "Alpha Charging"}
    assert own["station"]["registration"] == "ACCEPTED"
    public = await api.gql(query, as_user=world.users["driver1"].id)
    assert public["station"]["owner"] is None and public["station"]["registration"] is None
    assert public["station"]["createdBy"] is None
    assert public["station"]["location"]["address"] == "Street 1, Berlin"
    assert (await api.gql(query, as_user=world.users["op_b"].id)) == {"station": None}


async def test_audit_stamps_name_their_users_for_whoever_may_see_them(
        api: Api, world: World) -> None:
    """``createdBy`` is a user's global id (session 31; raw before): the user behind it
    is a field of its own too, null where the stamp is hidden or names no user."""
    query = """{ station(cpId: "A-001") { createdBy createdByUser { id name }
      updatedByUser { name } connectors { createdByUser { name } } } }"""
    staff = await api.gql(query, as_user=world.users["admin"].id)
    creator = staff["station"]["createdBy"]
    assert creator is not None
    if creator == "system":
        assert staff["station"]["createdByUser"] is None
    else:
        assert staff["station"]["createdByUser"]["id"] == creator
    public = await api.gql(query, as_user=world.users["driver1"].id)
    assert public["station"]["createdByUser"] is None
    assert all(c["createdByUser"] is None for c in public["station"]["connectors"])
    mine = await api.gql("""{ me { vehicles { nodes { createdByUser { name } } } } }""",
                         as_user=world.users["driver1"].id)
    assert [v["createdByUser"] for v in mine["me"]["vehicles"]["nodes"]] == [
        {"name": "Driver1"}]


async def test_payments_and_audit_scoped(api: Api, world: World) -> None:
    query = "{ payments { nodes { amount { amountMinor amount currency } session { cpId } } } }"
    data = await api.gql(query, as_user=world.users["driver1"].id)
    assert data["payments"]["nodes"] == [
        {"amount": {"amountMinor": 420, "amount": "4.20", "currency": "EUR"},
         "session": {"cpId": "B-001"}}
    ]
    assert (await api.gql(query, as_user=world.users["driver2"].id))["payments"]["nodes"][0][
        "session"] == {"cpId": "A-002"}
    audit = "{ auditLog(first: 100) { nodes { entity actor } } }"
    mine = await api.gql(audit, as_user=world.users["driver1"].id)
    # What is theirs, whoever acted: their account (created by the system), their car and
    # card (by themselves).
    assert {n["actor"] for n in mine["auditLog"]["nodes"]} == {
        to_global_id("user", world.users["driver1"].id), "system"}
    assert {n["entity"] for n in mine["auditLog"]["nodes"]} == {"user", "vehicle", "id_tag"}
    everything = await api.gql(audit, as_user=world.users["admin"].id)
    assert len(everything["auditLog"]["nodes"]) > len(mine["auditLog"]["nodes"])


REMOVALS = """{ auditLog(first: 100, filter: {action: DELETE}) {
  nodes { entity entityId actor before } } }"""


async def removals(api: Api, world: World, who: str) -> set[str]:
    """The raw ids of the records whose removal ``who`` reads in the audit log."""
    data = await api.gql(REMOVALS, as_user=world.users[who].id)
    return {base64.b64decode(n["entityId"]).decode().split(":", 1)[1]
            for n in data["auditLog"]["nodes"]}


async def mutate(api: Api, world: World, who: str, mutation: str, input: dict[str, Any]
                 ) -> None:
    name = mutation[0].upper() + mutation[1:]
    query = f"""mutation($input: {name}Input!) {{ {mutation}(input: $input) {{
      errors {{ field code }} }} }}"""
    data = await api.gql(query, {"input": input}, as_user=world.users[who].id)
    assert data[mutation]["errors"] == [], data


async def test_removals_are_read_by_the_record_s_company_and_person_not_by_who_removed(
        api: Api, world: World) -> None:
    """QA s21: removals were read by their actor alone. op_a2 removes a card of A's
    driver_a, then moves to company B: op_a2 no longer reads that removal (with its
    before-image, the card), their former colleague op_a does, and so does driver_a;
    op_b, op_a2's new colleague, does not. An admin's removal of driver2's car is read
    by driver2 (no company: nobody else but admins)."""
    card = world.tags["driver_a"]
    await mutate(api, world, "op_a2", "removeIdTag", {"id": to_global_id("id_tag", card.id)})
    car = world.vehicles["driver2"]
    await mutate(api, world, "admin", "removeVehicle", {"id": to_global_id("vehicle", car.id)})
    await mutate(api, world, "admin", "updateUser", {
        "id": to_global_id("user", world.users["op_a2"].id),
        "companyId": to_global_id("company", world.companies["b"].id)})

    assert await removals(api, world, "op_a2") == set()
    assert await removals(api, world, "op_b") == set()
    assert await removals(api, world, "op_a") == {card.id}
    assert await removals(api, world, "driver_a") == {card.id}
    assert await removals(api, world, "driver2") == {car.id}
    assert await removals(api, world, "driver1") == set()
    seen = await api.gql(REMOVALS, as_user=world.users["driver_a"].id)
    [removal] = seen["auditLog"]["nodes"]
    assert (removal["entity"], removal["actor"], removal["before"]["tag"]) == (
        "id_tag", to_global_id("user", world.users["op_a2"].id), card.tag)


async def test_public_map_for_anonymous(services, world: World) -> None:
    from datetime import timedelta

    from domain.policy import Policy
    from domain.services import Services
    from graph import TokenService, create_graphql_app
    from tests.graph.conftest import SECRET

    public = Services(services.ctx.__class__(store=services.ctx.store,
                                             policy=Policy(public_map=True),
                                             hasher=services.ctx.hasher))
    tokens = TokenService(SECRET, timedelta(hours=1))
    client = Api(create_graphql_app(public, tokens), tokens)
    data = await client.gql("""{ stations(first: 50) { totalCount nodes { owner { id }
      connectors { status activeSession { id } } } }
      sessions { totalCount } users { totalCount } }""")
    assert data["stations"]["totalCount"] == 4
    assert all(n["owner"] is None for n in data["stations"]["nodes"])
    assert all(c["activeSession"] is None for n in data["stations"]["nodes"]
               for c in n["connectors"])
    assert data["sessions"]["totalCount"] == 0 and data["users"]["totalCount"] == 0
    await client.client.aclose()


async def test_lists_grouped_or_sorted_by_a_hidden_field_are_guarded_like_their_pages(
        api: Api, world: World) -> None:
    """A driver of a company cannot learn its stations through the batched first page of
    ``company.stations`` (grouped by the hidden ``station.company_id``) any more than
    through the next page or a filter; and ``totalCount`` counts what a sort on a hidden
    field lets the pages show."""
    nested = """{ me { company { stations(first: 1) { totalCount pageInfo { hasNextPage }
        nodes { cpId } } } } }"""
    driver = await api.gql(nested, as_user=world.users["driver_a"].id)
    assert driver["me"]["company"]["stations"] == {
        "totalCount": 0, "pageInfo": {"hasNextPage": False}, "nodes": []}
    operator = await api.gql(nested, as_user=world.users["op_a"].id)
    assert operator["me"]["company"]["stations"]["totalCount"] == 2
    assert operator["me"]["company"]["stations"]["pageInfo"]["hasNextPage"] is True
    for order in ("", "orderBy: [{field: EMAIL}]"):
        data = await api.gql(f"{{ users(first: 50, {order}) {{ totalCount nodes {{ name }} }} }}"
                             .replace("(first: 50, )", "(first: 50)"),
                             as_user=world.users["op_b"].id)
        assert data["users"]["totalCount"] == len(data["users"]["nodes"]), order


async def test_search_text_is_bounded_and_printable(api: Api, world: World) -> None:
    query = """query($s: String) { stations(first: 5, filter: {search: $s}) {
        nodes { cpId } } }"""
    token = api.token_for(world.users["admin"].id)
    for text, code in (("." * 201, "TOO_LONG"), ("A\x00Station", "INVALID")):
        response = await api.post(query, {"s": text}, token)
        [error] = response.json()["errors"]
        assert error["extensions"] == {"code": code, "field": "filter.search"}, error
    fine = await api.gql(query, {"s": "  A Station  "}, as_user=world.users["admin"].id)
    assert {n["cpId"] for n in fine["stations"]["nodes"]} == {"A-001", "A-002"}


async def test_a_deactivated_users_cards_read_blocked_as_chargers_are_told(
        api: Api, world: World, services: Services, store: CountingStore) -> None:
    """QA: a deactivated user's card read ACCEPTED while chargers were told Blocked. It
    reads and is found as BLOCKED; the owners of a page of cards load in one call."""
    driver = world.users["driver_a"]
    await services.accounts.deactivate_user(world.viewer("op_a"), driver.id)
    await services.accounts.settled()
    tag = world.tags["driver_a"].tag
    assert (await services.charging.authorize("A-001", tag)).status == "Blocked"
    query = """query($s: IdTagStatus) { idTags(first: 50, filter: {status: $s}) {
        nodes { tag status } } }"""
    admin = world.users["admin"].id
    store.calls.clear()
    every = await api.gql(query, {"s": None}, as_user=admin)
    assert {n["tag"]: n["status"] for n in every["idTags"]["nodes"]} == {
        "TAG-DRIVER1": "ACCEPTED", "TAG-DRIVER2": "ACCEPTED", tag: "BLOCKED"}
    assert store.calls == ["get_many", "find_page", "get_many"]  # viewer, page, owners
    for status, tags in (("BLOCKED", {tag}), ("ACCEPTED", {"TAG-DRIVER1", "TAG-DRIVER2"}),
                         ("EXPIRED", set())):
        found = await api.gql(query, {"s": status}, as_user=admin)
        assert {n["tag"] for n in found["idTags"]["nodes"]} == tags, status
    mine = await api.gql(query, {"s": None}, as_user=world.users["op_a"].id)
    assert mine["idTags"]["nodes"] == [{"tag": tag, "status": "BLOCKED"}]


async def test_statuses_read_and_filter_as_they_are_now(api: Api, world: World,
                                                        services) -> None:
    """A card past its expiry reads EXPIRED (as chargers are told) and is found as such;
    a reservation past its expiry likewise, before the sweep has stored it."""
    from dataclasses import replace
    from datetime import timedelta

    from domain import entities as d
    from domain.clock import utcnow
    from domain.ports import Insert, Update

    past = utcnow() - timedelta(minutes=1)
    tag = world.tags["driver1"]
    await services.ctx.store.write([Update(replace(tag, expires_at=past))], [])
    admin = world.users["admin"].id
    query = """query($s: IdTagStatus) { idTags(first: 50, filter: {status: $s}) {
        nodes { tag status } } }"""
    expired = await api.gql(query, {"s": "EXPIRED"}, as_user=admin)
    assert {"tag": tag.tag, "status": "EXPIRED"} in expired["idTags"]["nodes"]
    accepted = await api.gql(query, {"s": "ACCEPTED"}, as_user=admin)
    assert tag.tag not in {n["tag"] for n in accepted["idTags"]["nodes"]}
    assert {n["status"] for n in accepted["idTags"]["nodes"]} == {"ACCEPTED"}

    station = world.stations["A-001"]
    lapsed = d.Reservation(reservation_id=9001, station_id=station.id, cp_id="A-001",
                           connector_id=1, id_tag=tag.tag, expires_at=past,
                           state=d.ReservationState.ACTIVE)
    await services.ctx.store.write([Insert(lapsed)], [])
    reservations = """query($s: ReservationState) { reservations(first: 50,
        filter: {state: $s}) { nodes { reservationId state } } }"""
    active = await api.gql(reservations, {"s": "ACTIVE"}, as_user=admin)
    assert 9001 not in {n["reservationId"] for n in active["reservations"]["nodes"]}
    gone = await api.gql(reservations, {"s": "EXPIRED"}, as_user=admin)
    assert {"reservationId": 9001, "state": "EXPIRED"} in gone["reservations"]["nodes"]


async def test_reduced_views_of_people_do_not_tell_when_they_changed(
        api: Api, world: World) -> None:
    """An operator sees the driver of a session on their station by name and plate only:
    the driver's deactivation or new battery moves ``updatedAt``, which would tell them when
    (and sorting by it would order the drivers by it)."""
    uid = to_global_id("user", world.users["driver1"].id)
    vid = to_global_id("vehicle", world.vehicles["driver1"].id)
    admin = world.users["admin"].id
    for mutation, input_ in (
            ("deactivateUser(input: {id: $id}) { user { id } }", uid),
            ("updateVehicle(input: {id: $id, batteryKwh: 77}) { vehicle { id } }", vid)):
        await api.gql(f"mutation($id: ID!) {{ {mutation} }}", {"id": input_}, as_user=admin)
    query = """query($u: ID!, $v: ID!) { u: node(id: $u) { ... on User { createdAt updatedAt } }
      v: node(id: $v) { ... on Vehicle { createdAt updatedAt } } }"""
    own = await api.gql(query, {"u": uid, "v": vid}, as_user=admin)
    assert own["u"]["updatedAt"] > own["u"]["createdAt"]
    assert own["v"]["updatedAt"] > own["v"]["createdAt"]
    reduced = await api.gql(query, {"u": uid, "v": vid}, as_user=world.users["op_a"].id)
    assert reduced == {"u": {"createdAt": own["u"]["createdAt"],
                             "updatedAt": own["u"]["createdAt"]},
                       "v": {"createdAt": own["v"]["createdAt"],
                             "updatedAt": own["v"]["createdAt"]}}
    by_change = """{ users(orderBy: [{field: UPDATED_AT}]) { nodes { id } }
      vehicles(orderBy: [{field: UPDATED_AT}]) { nodes { id } } }"""
    seen = await api.gql(by_change, as_user=world.users["op_a"].id)
    assert uid not in [n["id"] for n in seen["users"]["nodes"]]
    assert vid not in [n["id"] for n in seen["vehicles"]["nodes"]]


async def test_a_company_s_operators_read_its_drivers_cars_history_without_their_battery(
        api: Api, world: World) -> None:
    """Review s21: the car's history is in its owner's company's books, and its images
    told the company's operators the battery (and when it changed) that the car's own
    read hides from them. The owner reads all of it."""
    car = world.vehicles["driver_a"]  # driver_a is company A's
    driver = world.users["driver_a"].id
    await api.gql("""mutation($id: ID!) { updateVehicle(input: {id: $id, batteryKwh: 77}) {
      errors { code } } }""", {"id": to_global_id("vehicle", car.id)}, as_user=driver)
    log = """{ auditLog(filter: {entity: "vehicle"}) { nodes { action before after } } }"""

    def of_the_car(data: dict) -> list[dict]:
        return [n for n in data["auditLog"]["nodes"]
                if (n["after"] or n["before"] or {}).get("owner_id") == driver
                or (n["before"] or {}).get("owner_id") == driver]

    seen = of_the_car(await api.gql(log, as_user=world.users["op_a"].id))
    # The battery's change is the driver's alone (verify s21: its entry told when).
    assert [n["action"] for n in seen] == ["CREATE"]
    await api.gql("""mutation($id: ID!) { updateVehicle(input: {id: $id,
      licensePlate: "B-XY 77"}) { errors { code } } }""",
                  {"id": to_global_id("vehicle", car.id)}, as_user=driver)
    seen = of_the_car(await api.gql(log, as_user=world.users["op_a"].id))
    assert [n["action"] for n in seen] == ["UPDATE", "CREATE"]  # a plate they see
    # A battery an operator of the company set is in its books (review s21).
    changed = await api.gql("""mutation($id: ID!) { updateVehicle(input: {id: $id,
      batteryKwh: 80}) { errors { code } } }""", {"id": to_global_id("vehicle", car.id)},
                            as_user=world.users["op_a"].id)
    assert changed["updateVehicle"]["errors"] == []
    seen = of_the_car(await api.gql(log, as_user=world.users["op_a2"].id))
    assert [n["action"] for n in seen] == ["UPDATE", "UPDATE", "CREATE"]
    for entry in seen:
        for image in (entry["before"], entry["after"]):
            assert image is None or not {"battery_kwh", "updated_at", "updated_by",
                                         "created_by"} & set(image), image
    own = of_the_car(await api.gql(log, as_user=driver))
    assert [n["after"]["battery_kwh"] for n in own if n["action"] == "UPDATE"] == [
        80, 77, 77]
