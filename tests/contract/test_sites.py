"""Sites on every store: a site's stations and its sessions' shares are found by site,
and the policy's scopes (a company's operators and admins; drivers none) select the same
records on both backends."""

from __future__ import annotations

from domain.entities import LimitAnswer, Role, Site, SiteAllocation, Station
from domain.ids import new_id
from domain.policy import Policy, Viewer
from domain.ports import Store
from domain.query import ALL, Eq, Sort
from tests.contract.factories import company, put, station


def share(site: Site, st: Station, transaction_id: int, **kw: object) -> SiteAllocation:
    return SiteAllocation(site_id=site.id, company_id=site.company_id, session_id=new_id(),
                          station_id=st.id, cp_id=st.cp_id, connector_id=1,
                          transaction_id=transaction_id, power_kw=11.0, bound_kw=11.0,
                          **kw)  # type: ignore[arg-type]


async def test_a_site_s_stations_and_shares_are_found_by_site(store: Store) -> None:
    a, b = company(), company()
    depot = Site(name="Depot", company_id=a.id, max_power_kw=50)
    yard = Site(name="Yard", company_id=b.id, max_power_kw=20)
    s1, s2 = station(company_id=a.id, site_id=depot.id), station(company_id=a.id,
                                                                 site_id=depot.id)
    s3, loose = station(company_id=b.id, site_id=yard.id), station(company_id=a.id)
    x1, x2 = share(depot, s1, 2, answer=LimitAnswer.ACCEPTED), share(depot, s2, 1)
    x3 = share(yard, s3, 3, answer=LimitAnswer.TIMEOUT)
    await put(store, a, b, depot, yard, s1, s2, s3, loose, x1, x2, x3)

    grouped = await store.find_grouped(Station, "site_id", [depot.id, yard.id], ALL, (), 10)
    assert {k: sorted(s.cp_id for s in v) for k, v in grouped.items()} == {
        depot.id: sorted([s1.cp_id, s2.cp_id]), yard.id: [s3.cp_id]}
    shares = await store.find_grouped(SiteAllocation, "site_id", [depot.id], ALL,
                                      (Sort("transaction_id"),), 10)
    assert [x.id for x in shares[depot.id]] == [x2.id, x1.id]
    assert await store.count(Station, Eq("site_id", None)) == 1

    policy = Policy()
    op_a = Viewer(user_id=new_id(), role=Role.OPERATOR, company_id=a.id)
    driver = Viewer(user_id=new_id(), role=Role.DRIVER, company_id=a.id)
    admin = Viewer(user_id=new_id(), role=Role.ADMIN)
    for viewer, sites, allocations in ((op_a, {depot.id}, {x1.id, x2.id}),
                                       (driver, set(), set()),
                                       (admin, {depot.id, yard.id}, {x1.id, x2.id, x3.id})):
        seen = await store.find_all(Site, policy.scope(viewer, "site"))
        assert {s.id for s in seen} == sites
        held = await store.find_all(SiteAllocation, policy.scope(viewer, "site_allocation"))
        assert {x.id for x in held} == allocations
