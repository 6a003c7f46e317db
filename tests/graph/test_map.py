""""Find a charger near me", done by the API: stations within a circle ordered by
distance (with the distance shown), the driver app's connector filters, and "available
now", which a charger that went offline or is down as a whole is not, nor a plug a
session or a live reservation holds."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Insert, Update
from domain.services import ConnectorSpec, Services
from domain.services.base import books_of
from tests.graph.conftest import Api
from tests.graph.world import World

HERE = {"lat": 52.52, "lon": 13.405}
EARTH_RADIUS_KM = 6371.0088
AVAILABLE, CHARGING = d.ConnectorStatus.AVAILABLE, d.ConnectorStatus.CHARGING


def east(km: float) -> tuple[float, float]:
    lat, lon = HERE["lat"], HERE["lon"]
    return lat, lon + math.degrees(km / EARTH_RADIUS_KM / math.cos(math.radians(lat)))


async def arrange(services: Services, world: World, cp_id: str, *,
                  km: float | None = None, online: bool = True,
                  point: d.ConnectorStatus | None = None,
                  connectors: tuple[d.ConnectorStatus, d.ConnectorStatus] = (AVAILABLE,
                                                                             AVAILABLE)
                  ) -> None:
    """Where the station stands, whether its charger is connected, what it reported for
    connector 0 (``point``) and for its two connectors."""
    store = services.ctx.store
    station = world.stations[cp_id]
    lat, lon = east(km) if km is not None else (station.lat, station.lon)
    changes: list[Any] = [Update(replace(station, lat=lat, lon=lon, online=online,
                                         status=point))]
    changes += [Update(replace(c, status=s))
                for c, s in zip(world.connectors[cp_id], connectors, strict=True)]
    await store.write(changes, [])


async def errors(api: Api, query: str, user: str, world: World) -> list[dict[str, Any]]:
    response = await api.post(query, None, api.token_for(world.users[user].id))
    return [e["extensions"] for e in response.json()["errors"]]


# ------------------------------------------------------------------------- near me

NEAREST = """query($after: String, $before: String, $first: Int, $last: Int) {
  stations(first: $first, after: $after, last: $last, before: $before,
           filter: {near: {lat: 52.52, lon: 13.405, radiusKm: 50}},
           orderBy: [{field: DISTANCE}]) {
    totalCount pageInfo { hasNextPage hasPreviousPage }
    edges { cursor node { cpId distanceKm(from: {lat: 52.52, lon: 13.405}) } } } }"""


async def test_stations_near_a_point_page_nearest_first_with_their_distance(
        api: Api, world: World, services: Services) -> None:
    # A-002 and B-001 stand at one spot: the tie is ordered by id, B-002 is outside.
    for cp_id, km in (("A-001", 3.0), ("A-002", 0.4), ("B-001", 0.4), ("B-002", 80.0)):
        await arrange(services, world, cp_id, km=km)
    driver = world.users["driver1"].id
    tied = sorted(["A-002", "B-001"], key=lambda cp: world.stations[cp].id)

    seen: list[tuple[str, float]] = []
    after = None
    for _ in range(4):  # bounded: a broken cursor must fail, not hang
        data = (await api.gql(NEAREST, {"first": 1, "after": after}, as_user=driver))
        page = data["stations"]
        assert page["totalCount"] == 3
        seen += [(e["node"]["cpId"], e["node"]["distanceKm"]) for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["edges"][-1]["cursor"]
    assert [cp for cp, _ in seen] == [*tied, "A-001"]
    assert [round(km, 6) for _, km in seen] == [0.4, 0.4, 3.0]

    back = (await api.gql(NEAREST, {"last": 2}, as_user=driver))["stations"]
    assert [e["node"]["cpId"] for e in back["edges"]] == [tied[1], "A-001"]
    before = (await api.gql(NEAREST, {"last": 2, "before": back["edges"][0]["cursor"]},
                            as_user=driver))["stations"]
    assert [e["node"]["cpId"] for e in before["edges"]] == [tied[0]]
    assert before["pageInfo"]["hasPreviousPage"] is False

    # The operator's scope still applies: B's operator sees its one station in the circle.
    mine = await api.gql(NEAREST, {"first": 10}, as_user=world.users["op_b"].id)
    assert [e["node"]["cpId"] for e in mine["stations"]["edges"]] == ["B-001"]
    assert mine["stations"]["totalCount"] == 1


async def test_farthest_first_and_a_second_key(api: Api, world: World,
                                               services: Services) -> None:
    for cp_id, km in (("A-001", 3.0), ("A-002", 0.4), ("B-001", 0.4), ("B-002", 9.0)):
        await arrange(services, world, cp_id, km=km)
    query = """{ stations(first: 10, filter: {near: {lat: 52.52, lon: 13.405, radiusKm: 50}},
        orderBy: [{field: DISTANCE, direction: DESC}, {field: CP_ID, direction: DESC}]) {
        nodes { cpId } } }"""
    data = await api.gql(query, as_user=world.users["driver1"].id)
    assert [n["cpId"] for n in data["stations"]["nodes"]] == ["B-002", "A-001", "B-001",
                                                              "A-002"]


async def test_a_distance_order_needs_a_near_point(api: Api, world: World) -> None:
    query = "{ stations(first: 5, orderBy: [{field: DISTANCE}]) { nodes { cpId } } }"
    assert await errors(api, query, "driver1", world) == [
        {"code": "REQUIRED", "field": "filter.near"}]
    query = """{ stations(first: 5, filter: {online: true}, orderBy: [{field: DISTANCE}]) {
        nodes { cpId } } }"""
    assert await errors(api, query, "driver1", world) == [
        {"code": "REQUIRED", "field": "filter.near"}]


async def test_a_cursor_from_another_point_is_refused(api: Api, world: World) -> None:
    driver = world.users["driver1"].id
    page = await api.gql(NEAREST, {"first": 1}, as_user=driver)
    cursor = page["stations"]["edges"][0]["cursor"]
    elsewhere = NEAREST.replace("radiusKm: 50", "radiusKm: 60").replace(
        "near: {lat: 52.52,", "near: {lat: 52.53,")
    response = await api.post(elsewhere, {"first": 1, "after": cursor}, api.token_for(driver))
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "INVALID_CURSOR", "field": "after"}


async def test_a_name_cursor_pages_on_under_another_point(api: Api, world: World,
                                                          services: Services) -> None:
    """Only a distance is measured from the point: a cursor of a NAME order taken near
    one point pages on from its station's name near another, as under any other filter
    (the README said it was refused too)."""
    for cp_id, km in (("A-001", 3.0), ("A-002", 0.4), ("B-001", 0.4), ("B-002", 9.0)):
        await arrange(services, world, cp_id, km=km)
    by_name = """query($after: String, $lat: Float!) { stations(first: 1, after: $after,
        filter: {near: {lat: $lat, lon: 13.405, radiusKm: 50}}, orderBy: [{field: NAME}]) {
        nodes { cpId } pageInfo { endCursor } } }"""
    driver = world.users["driver1"].id
    first = await api.gql(by_name, {"lat": 52.52}, as_user=driver)
    assert first["stations"]["nodes"] == [{"cpId": "A-001"}]
    on = await api.gql(by_name, {"lat": 52.53, "after": first["stations"]["pageInfo"][
        "endCursor"]}, as_user=driver)
    assert on["stations"]["nodes"] == [{"cpId": "A-002"}]


async def test_distance_km_of_a_station_anywhere(api: Api, world: World,
                                                 services: Services) -> None:
    await arrange(services, world, "A-001", km=2.0)
    query = """{ station(cpId: "A-001") {
        here: distanceKm(from: {lat: 52.52, lon: 13.405}) there: distanceKm(from:
        {lat: 52.52, lon: 13.405}) } }"""
    data = await api.gql(query, as_user=world.users["driver1"].id)
    assert round(data["station"]["here"], 6) == 2.0
    station = world.stations["A-002"]
    await services.ctx.store.write([Update(replace(station, lat=None, lon=None))], [])
    query = '{ station(cpId: "A-002") { distanceKm(from: {lat: 52.52, lon: 13.405}) } }'
    assert (await api.gql(query, as_user=world.users["driver1"].id)) == {
        "station": {"distanceKm": None}}
    query = '{ station(cpId: "A-001") { distanceKm(from: {lat: 91, lon: 13.405}) } }'
    assert await errors(api, query, "driver1", world) == [
        {"code": "OUT_OF_RANGE", "field": "from.lat"}]


# ------------------------------------------------------------------------- filters

async def _fleet_states(services: Services, world: World) -> None:
    """Connector 1 of every station is a CCS2 of 150 kW, connector 2 a Type 2 of 22 kW.

    * A-001: online, its CCS2 free, its Type 2 charging;
    * A-002: online, its CCS2 charging, its Type 2 free;
    * B-001: offline: both last reported Available;
    * B-002: online, both report Available, but the charge point is Faulted as a whole.

    The world's ACTIVE session on A-001's CCS2 has ended: a plug holding one is taken,
    whatever it reported (``availability.connectors_held``).
    """
    held = world.sessions["s1"]
    await services.ctx.store.write([Update(replace(
        held, state=d.SessionState.COMPLETED, end_time=held.start_time + timedelta(hours=1),
        meter_stop_wh=held.meter_start_wh + held.energy_wh))], [])
    await arrange(services, world, "A-001", connectors=(AVAILABLE, CHARGING))
    await arrange(services, world, "A-002", connectors=(CHARGING, AVAILABLE))
    await arrange(services, world, "B-001", online=False)
    await arrange(services, world, "B-002", point=d.ConnectorStatus.FAULTED)


STATIONS = """query($f: StationFilter) { stations(first: 50, filter: $f) {
    totalCount nodes { cpId } } }"""


async def stations(api: Api, world: World, where: dict[str, Any]) -> set[str]:
    data = (await api.gql(STATIONS, {"f": where}, as_user=world.users["driver1"].id))
    assert data["stations"]["totalCount"] == len(data["stations"]["nodes"])
    return {n["cpId"] for n in data["stations"]["nodes"]}


async def test_station_filters_for_the_driver_app(api: Api, world: World,
                                                  services: Services) -> None:
    await _fleet_states(services, world)
    everyone = {"A-001", "A-002", "B-001", "B-002"}
    assert await stations(api, world, {"availableNow": True}) == {"A-001", "A-002"}
    assert await stations(api, world, {"connectorTypes": ["CCS2"],
                                       "availableNow": True}) == {"A-001"}
    assert await stations(api, world, {"minKw": 100, "availableNow": True}) == {"A-001"}
    assert await stations(api, world, {"connectorTypes": ["TYPE2"],
                                       "availableNow": True}) == {"A-002"}
    # One connector meets them all: no station has a Type 2 of 50 kW.
    assert await stations(api, world, {"connectorTypes": ["TYPE2"], "minKw": 50}) == set()
    assert await stations(api, world, {"connectorTypes": ["CCS2", "TYPE2"]}) == everyone
    assert await stations(api, world, {"connectorTypes": None, "minKw": 22}) == everyone
    assert await stations(api, world, {"connectorTypes": [], "minKw": 22}) == set()
    assert await stations(api, world, {"connectorTypes": ["CHADEMO"]}) == set()
    near = {"near": {"lat": 52.5, "lon": 13.4, "radiusKm": 0.5}, "availableNow": True}
    assert await stations(api, world, near) == {"A-001"}  # B-001 stands there too


async def test_station_filter_errors(api: Api, world: World) -> None:
    query = "{ stations(first: 5, filter: {minKw: -1}) { nodes { cpId } } }"
    assert await errors(api, query, "driver1", world) == [
        {"code": "OUT_OF_RANGE", "field": "filter.minKw"}]


async def _more_states(services: Services, world: World) -> None:
    """Besides ``_fleet_states``: A-003, online and up, every connector busy or faulted;
    B-003, online, both connectors Available, its charge point Unavailable; C-001, online,
    with no connector at all."""
    for company, cp_id in (("a", "A-003"), ("b", "B-003")):
        station, plugs = await services.stations.create_station(
            SYSTEM, cp_id=cp_id, name=cp_id, company_id=world.companies[company].id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150.0),
                        ConnectorSpec(2, d.ConnectorType.TYPE2, 22.0)])
        world.stations[cp_id], world.connectors[cp_id] = station, plugs
    world.stations["C-001"], _ = await services.stations.create_station(
        SYSTEM, cp_id="C-001", name="bare")
    await arrange(services, world, "A-003", point=AVAILABLE,
                  connectors=(CHARGING, d.ConnectorStatus.FAULTED))
    await arrange(services, world, "B-003", point=d.ConnectorStatus.UNAVAILABLE)
    await services.ctx.store.write([Update(replace(world.stations["C-001"], online=True))], [])


async def test_stations_without_a_connector_available_now(api: Api, world: World,
                                                          services: Services) -> None:
    await _fleet_states(services, world)
    await _more_states(services, world)
    everyone = set(world.stations)
    free = await stations(api, world, {"availableNow": True})
    none_free = await stations(api, world, {"availableNow": False})
    assert free == {"A-001", "A-002"}
    # Offline (B-001), down as a whole (B-002 Faulted, B-003 Unavailable), all busy
    # (A-003) and without connectors (C-001): exactly the others.
    assert none_free == {"B-001", "B-002", "A-003", "B-003", "C-001"}
    assert free | none_free == everyone and not free & none_free
    assert await stations(api, world, {}) == everyone

    # With connector conditions, the complement among the stations meeting them: those
    # with a CCS2, none of them free now (A-002's Type 2 is free, its CCS2 charges).
    ccs = await stations(api, world, {"connectorTypes": ["CCS2"]})
    free_ccs = await stations(api, world, {"connectorTypes": ["CCS2"], "availableNow": True})
    busy_ccs = await stations(api, world, {"connectorTypes": ["CCS2"], "availableNow": False})
    assert free_ccs == {"A-001"}
    assert busy_ccs == {"A-002", "B-001", "B-002", "A-003", "B-003"}
    assert free_ccs | busy_ccs == ccs and not free_ccs & busy_ccs
    assert await stations(api, world, {"minKw": 100, "availableNow": False}) == busy_ccs

    # Other conditions and the operator's scope still apply.
    assert await stations(api, world, {"availableNow": False, "online": True}) == {
        "B-002", "A-003", "B-003", "C-001"}
    data = await api.gql(STATIONS, {"f": {"availableNow": False}},
                         as_user=world.users["op_a"].id)
    assert {n["cpId"] for n in data["stations"]["nodes"]} == {"A-003"}


CONNECTORS = """query($f: ConnectorFilter) { connectors(first: 50, filter: $f) {
    totalCount nodes { cpId connectorId status } } }"""


async def connectors(api: Api, world: World, where: dict[str, Any],
                     user: str = "driver1") -> set[tuple[str, int]]:
    data = await api.gql(CONNECTORS, {"f": where}, as_user=world.users[user].id)
    assert data["connectors"]["totalCount"] == len(data["connectors"]["nodes"])
    return {(n["cpId"], n["connectorId"]) for n in data["connectors"]["nodes"]}


async def test_available_connectors_are_those_a_driver_can_plug_in_now(
        api: Api, world: World, services: Services) -> None:
    await _fleet_states(services, world)
    free = {("A-001", 1), ("A-002", 2)}
    # Not B-001's (its charger is offline) nor B-002's (the charge point is Faulted).
    assert await connectors(api, world, {"status": "AVAILABLE"}) == free
    assert await connectors(api, world, {"availableNow": True}) == free
    everything = {(cp, n) for cp in world.stations for n in (1, 2)}
    assert await connectors(api, world, {"availableNow": False}) == everything - free
    # Other statuses are the last reported, which Connector.status keeps showing.
    assert await connectors(api, world, {"status": "CHARGING"}) == {("A-001", 2),
                                                                    ("A-002", 1)}
    offline = await api.gql('{ station(cpId: "B-001") { connectors { status } } }',
                            as_user=world.users["driver1"].id)
    assert offline["station"]["connectors"] == [{"status": "AVAILABLE"}] * 2
    # An operator's view is scoped as always.
    assert await connectors(api, world, {"status": "AVAILABLE"}, "op_b") == set()
    assert await connectors(api, world, {"availableNow": True}, "op_a") == free


async def test_connector_type_and_power_filters(api: Api, world: World,
                                                services: Services) -> None:
    await _fleet_states(services, world)
    ccs = {(cp, 1) for cp in world.stations}
    assert await connectors(api, world, {"types": ["CCS2"]}) == ccs
    assert await connectors(api, world, {"minKw": 100}) == ccs
    assert await connectors(api, world, {"minKw": 22, "types": ["TYPE2"]}) == {
        (cp, 2) for cp in world.stations}
    assert await connectors(api, world, {"types": ["CCS2"], "availableNow": True}) == {
        ("A-001", 1)}
    query = "{ connectors(first: 5, filter: {minKw: -0.5}) { nodes { cpId } } }"
    assert await errors(api, query, "driver1", world) == [
        {"code": "OUT_OF_RANGE", "field": "filter.minKw"}]


async def _reserve(services: Services, world: World, cp_id: str, connector_id: int,
                   driver: str, state: d.ReservationState = d.ReservationState.ACTIVE
                   ) -> d.Reservation:
    """A reservation of ``connector_id`` (0: the station's next free one) for ``driver``'s
    card for an hour, stored as ``reserveNow`` stores it (PENDING until the charger
    answers, ACTIVE once it accepted); its charger has reported nothing of it."""
    station = world.stations[cp_id]
    company_id, station_owner_id = books_of(station)
    reservation = d.Reservation(
        reservation_id=await services.ctx.store.next_sequence("reservation"),
        station_id=station.id, cp_id=cp_id, connector_id=connector_id,
        id_tag=world.tags[driver].tag, user_id=world.users[driver].id, state=state,
        expires_at=utcnow() + timedelta(hours=1), company_id=company_id,
        station_owner_id=station_owner_id)
    await services.ctx.store.write([Insert(reservation)], [])
    return reservation


async def test_a_plug_a_live_reservation_holds_is_not_available_now(
        api: Api, world: World, services: Services) -> None:
    """QA s23: with an ACTIVE reservation for another card on a plug whose charger had
    not reported it Reserved, both filters listed the plug free, and a remote start
    there was refused (IN_USE, reserved for another card); a PENDING one (ReserveNow
    unanswered) did so for up to 24 h. A live reservation holds its plug for everyone,
    its holder too (who finds it by the reservation); ended ones hold nothing."""
    await _fleet_states(services, world)  # free: A-001's CCS2 and A-002's Type 2
    accepted = await _reserve(services, world, "A-001", 1, "driver2")
    unanswered = await _reserve(services, world, "A-002", 2, "driver2",
                                d.ReservationState.PENDING)
    for who in ("driver1", "driver2", "op_a"):  # driver2 holds both
        assert await connectors(api, world, {"status": "AVAILABLE"}, who) == set(), who
        assert await connectors(api, world, {"availableNow": True}, who) == set(), who
    held = {("A-001", 1), ("A-002", 2)}
    assert held <= await connectors(api, world, {"availableNow": False})
    assert await stations(api, world, {"availableNow": True}) == set()
    assert {"A-001", "A-002"} <= await stations(api, world, {"availableNow": False})
    # What the charger reported stays what the connector shows.
    shown = await api.gql('{ station(cpId: "A-001") { connectors { status } } }',
                          as_user=world.users["driver1"].id)
    assert shown["station"]["connectors"][0] == {"status": "AVAILABLE"}

    # Cancelled, or live but past its expiry before the sweep stored it: free again.
    await services.ctx.store.write([
        Update(replace(accepted, state=d.ReservationState.CANCELLED)),
        Update(replace(unanswered, expires_at=utcnow() - timedelta(seconds=1)))], [])
    assert await connectors(api, world, {"status": "AVAILABLE"}) == held
    assert await stations(api, world, {"availableNow": True}) == {"A-001", "A-002"}


async def test_a_station_wide_reservation_holds_every_plug_of_its_station(
        api: Api, world: World, services: Services) -> None:
    """A reservation of connector 0 holds the plug the charger picks when the car
    comes: which one is not known before, and a remote start for another card is
    refused on each (``CommandService._refuse_reserved``), so none is listed, though
    two are free."""
    await _fleet_states(services, world)
    await arrange(services, world, "A-002")  # both plugs free
    await _reserve(services, world, "A-002", 0, "driver2")
    assert await connectors(api, world, {"status": "AVAILABLE"}) == {("A-001", 1)}
    assert await stations(api, world, {"availableNow": True}) == {"A-001"}
    assert "A-002" in await stations(api, world, {"availableNow": False})
    assert await stations(api, world, {"connectorTypes": ["TYPE2"],
                                       "availableNow": True}) == set()
