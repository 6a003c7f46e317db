"""Sites in the graph: who sees them (as stations: admins all, operators their company's,
drivers none), their validation, assigning stations and removing sites, and their audit
trail. The sharing itself is tested in tests/domain/test_load_sharing.py and end to end
in tests/e2e/test_site_load.py."""

from __future__ import annotations

from typing import Any

import pytest

from domain import entities as d
from domain.policy import SYSTEM
from domain.ports import Update
from domain.services import Services
from domain.services.base import changed
from graph.ids import expect_id, to_global_id
from tests.graph.conftest import Api
from tests.graph.world import World

CREATE = """mutation($i: CreateSiteInput!) { createSite(input: $i) {
  site { id name maxPowerKw minPowerKw unit voltage phases company { name } }
  errors { field code message } } }"""
UPDATE = """mutation($i: UpdateSiteInput!) { updateSite(input: $i) {
  site { maxPowerKw minPowerKw unit } errors { field code } } }"""
REMOVE = """mutation($id: ID!) { removeSite(input: {id: $id}) {
  site { name } errors { field code } } }"""
ASSIGN = """mutation($st: ID!, $site: ID) {
  assignStationToSite(input: {stationId: $st, siteId: $site}) {
    station { cpId site { name } } errors { field code } } }"""
SITES = "{ sites { totalCount edges { node { name stations { edges { node { cpId } } } } } } }"
ONE = """query($id: ID!) { site(id: $id) { name allocations { powerKw } }
  node(id: $id) { ... on Site { name } } }"""


async def create(api: Api, w: World, who: str, **fields: Any) -> dict[str, Any]:
    data = await api.gql(CREATE, {"i": {"name": "Depot", "maxPowerKw": 50, **fields}},
                         as_user=w.users[who].id)
    return data["createSite"]  # type: ignore[no-any-return]


def station_id(w: World, cp_id: str) -> str:
    return to_global_id("station", w.stations[cp_id].id)


async def test_an_operator_creates_a_site_of_their_company_with_defaults(
        api: Api, world: World) -> None:
    created = await create(api, world, "op_a")
    assert created["errors"] == []
    site = created["site"]
    assert {k: site[k] for k in ("name", "maxPowerKw", "minPowerKw", "unit", "voltage",
                                 "phases")} == {"name": "Depot", "maxPowerKw": 50.0,
                                                "minPowerKw": 4.14, "unit": "W",
                                                "voltage": 230.0, "phases": 3}
    assert site["company"] == {"name": "Alpha Charging"}


async def test_sites_are_seen_like_stations(api: Api, world: World,
                                            services: Services) -> None:
    site_a = (await create(api, world, "op_a"))["site"]["id"]
    await create(api, world, "admin", companyId=to_global_id(
        "company", world.companies["b"].id))
    await api.gql(ASSIGN, {"st": station_id(world, "A-001"), "site": site_a},
                  as_user=world.users["op_a"].id)

    def names(data: dict[str, Any]) -> int:
        return int(data["sites"]["totalCount"])

    assert names(await api.gql(SITES, as_user=world.users["admin"].id)) == 2
    mine = await api.gql(SITES, as_user=world.users["op_a2"].id)
    assert names(mine) == 1
    assert mine["sites"]["edges"][0]["node"]["stations"]["edges"] == [
        {"node": {"cpId": "A-001"}}]
    for outsider in ("op_b", "driver1", "driver_a"):
        data = await api.gql(ONE, {"id": site_a}, as_user=world.users[outsider].id)
        assert data == {"site": None, "node": None}, outsider
    assert names(await api.gql(SITES, as_user=world.users["op_b"].id)) == 1  # its own
    assert names(await api.gql(SITES, as_user=world.users["driver_a"].id)) == 0
    # A station's site: its operators see it, a driver's public view of it does not.
    station = """query($id: ID!) { node(id: $id) { ... on Station { site { name } } } }"""
    sid = station_id(world, "A-001")
    assert (await api.gql(station, {"id": sid}, as_user=world.users["op_a"].id)
            )["node"]["site"] == {"name": "Depot"}
    assert (await api.gql(station, {"id": sid}, as_user=world.users["driver1"].id)
            )["node"]["site"] is None
    await services.site_load.settled()


@pytest.mark.parametrize(("fields", "field", "code"), [
    ({"maxPowerKw": 0}, "maxPowerKw", "OUT_OF_RANGE"),
    ({"maxPowerKw": -5}, "maxPowerKw", "OUT_OF_RANGE"),
    ({"minPowerKw": 60}, "minPowerKw", "OUT_OF_RANGE"),
    ({"minPowerKw": 0}, "minPowerKw", "OUT_OF_RANGE"),
    ({"phases": 4}, "phases", "OUT_OF_RANGE"),
    ({"voltage": 12}, "voltage", "OUT_OF_RANGE"),
    ({"name": "  "}, "name", "REQUIRED"),
])
async def test_bad_input_is_a_user_error_with_its_field(
        api: Api, world: World, fields: dict[str, Any], field: str, code: str) -> None:
    created = await create(api, world, "op_a", **fields)
    assert created["site"] is None
    assert [(e["field"], e["code"]) for e in created["errors"]] == [(field, code)]


async def test_an_operator_creates_no_site_for_another_company(api: Api,
                                                               world: World) -> None:
    created = await create(api, world, "op_a", companyId=to_global_id(
        "company", world.companies["b"].id))
    assert [(e["field"], e["code"]) for e in created["errors"]] in (
        [("companyId", "NOT_FOUND")], [("companyId", "FORBIDDEN")])
    driver = await create(api, world, "driver1")
    assert [e["code"] for e in driver["errors"]] == ["FORBIDDEN"]


async def test_an_update_is_checked_against_what_it_leaves(api: Api, world: World) -> None:
    site = (await create(api, world, "op_a", minPowerKw=4))["site"]["id"]
    op = world.users["op_a"].id
    lowered = await api.gql(UPDATE, {"i": {"id": site, "maxPowerKw": 3}}, as_user=op)
    assert lowered["updateSite"]["errors"] == [{"field": "minPowerKw",
                                                 "code": "OUT_OF_RANGE"}]
    # QA (s16): in amperes, 4 kW on three 230 V phases is 5.8 A, less than the 6 A an AC
    # charger charges at (a 1.4 kW minimum was sent as 2.0 A).
    amperes = await api.gql(UPDATE, {"i": {"id": site, "maxPowerKw": 30, "unit": "A"}},
                            as_user=op)
    assert amperes["updateSite"]["errors"] == [{"field": "minPowerKw",
                                                "code": "OUT_OF_RANGE"}]
    ok = await api.gql(UPDATE, {"i": {"id": site, "maxPowerKw": 30, "unit": "A",
                                      "phases": 1}}, as_user=op)
    assert ok["updateSite"] == {"site": {"maxPowerKw": 30.0, "minPowerKw": 4.0,
                                         "unit": "A"}, "errors": []}
    cleared = await api.gql(UPDATE, {"i": {"id": site, "maxPowerKw": None}}, as_user=op)
    assert cleared["updateSite"]["errors"] == [{"field": "maxPowerKw", "code": "REQUIRED"}]
    other = await api.gql(UPDATE, {"i": {"id": site, "maxPowerKw": 10}},
                          as_user=world.users["op_b"].id)
    assert other["updateSite"]["errors"] == [{"field": "id", "code": "NOT_FOUND"}]


async def test_a_station_joins_only_a_site_of_its_own_company(
        api: Api, world: World, services: Services) -> None:
    site_b = (await create(api, world, "op_b"))["site"]["id"]
    site_a = (await create(api, world, "op_a"))["site"]["id"]
    admin = world.users["admin"].id
    wrong = await api.gql(ASSIGN, {"st": station_id(world, "A-001"), "site": site_b},
                          as_user=admin)
    assert wrong["assignStationToSite"]["errors"] == [{"field": "siteId", "code": "INVALID"}]
    # Another company's operator cannot name this company's site (it is hidden).
    hidden = await api.gql(ASSIGN, {"st": station_id(world, "B-001"), "site": site_a},
                           as_user=world.users["op_b"].id)
    assert hidden["assignStationToSite"]["errors"] == [{"field": "siteId",
                                                        "code": "NOT_FOUND"}]
    ok = await api.gql(ASSIGN, {"st": station_id(world, "A-002"), "site": site_a},
                       as_user=world.users["op_a"].id)
    assert ok["assignStationToSite"] == {
        "station": {"cpId": "A-002", "site": {"name": "Depot"}}, "errors": []}
    await services.site_load.settled()


async def test_a_site_with_stations_is_not_removed(api: Api, world: World,
                                                   services: Services) -> None:
    site = (await create(api, world, "op_a"))["site"]["id"]
    op = world.users["op_a"].id
    await api.gql(ASSIGN, {"st": station_id(world, "A-002"), "site": site}, as_user=op)
    refused = await api.gql(REMOVE, {"id": site}, as_user=op)
    assert refused["removeSite"] == {"site": None,
                                     "errors": [{"field": "id", "code": "IN_USE"}]}
    await api.gql(ASSIGN, {"st": station_id(world, "A-002"), "site": None}, as_user=op)
    removed = await api.gql(REMOVE, {"id": site}, as_user=op)
    assert removed["removeSite"] == {"site": {"name": "Depot"}, "errors": []}
    assert (await api.gql(ONE, {"id": site}, as_user=op))["site"] is None
    await services.site_load.settled()


async def test_a_site_s_history_is_its_company_s(api: Api, world: World) -> None:
    site = (await create(api, world, "op_a"))["site"]["id"]
    await api.gql(UPDATE, {"i": {"id": site, "maxPowerKw": 20}},
                  as_user=world.users["op_a"].id)
    await api.gql(REMOVE, {"id": site}, as_user=world.users["op_a"].id)
    log = """query($id: ID!) { auditLog(filter: {entityId: $id}) {
      edges { node { action actor } } } }"""

    def actions(data: dict[str, Any]) -> list[str]:
        return sorted(e["node"]["action"] for e in data["auditLog"]["edges"])

    seen = await api.gql(log, {"id": site}, as_user=world.users["op_a2"].id)
    assert actions(seen) == ["CREATE", "DELETE", "UPDATE"]
    assert actions(await api.gql(log, {"id": site}, as_user=world.users["op_b"].id)) == []


async def test_a_small_single_phase_site_is_told_what_to_give(api: Api, world: World) -> None:
    """QA re-check (s16): a 3.7 kW site failed with "the per-session minimum cannot exceed
    the site's limit", a minimum it was never given (6 A on three phases by default)."""
    small = await create(api, world, "op_a", maxPowerKw=3.7)
    [error] = small["errors"]
    assert (error["field"], error["code"]) == ("minPowerKw", "OUT_OF_RANGE")
    assert "give phases (1 for a single-phase connection)" in error["message"]
    single = await create(api, world, "op_a", maxPowerKw=3.7, phases=1)
    assert single["errors"] == [] and single["site"]["minPowerKw"] == 1.38


async def test_a_site_stored_below_the_floor_is_still_renamed(api: Api, world: World,
                                                               services: Services) -> None:
    """Review s16: a site in amperes stored with a minimum below 6 A per phase could not
    be renamed: the floor was judged on a field the edit did not send."""
    created = (await create(api, world, "op_a", unit="A"))["site"]["id"]
    store = services.ctx.store
    [site] = await store.get_many(d.Site, [expect_id(created, "site", "id")])
    assert site is not None
    await store.write([Update(changed(site, SYSTEM, min_power_kw=1.4))], [])
    op = world.users["op_a"].id
    renamed = await api.gql(UPDATE, {"i": {"id": created, "name": "Yard"}}, as_user=op)
    assert renamed["updateSite"]["errors"] == []
    touched = await api.gql(UPDATE, {"i": {"id": created, "phases": 3}}, as_user=op)
    assert [(e["field"], e["code"]) for e in touched["updateSite"]["errors"]] == [
        ("minPowerKw", "OUT_OF_RANGE")]
