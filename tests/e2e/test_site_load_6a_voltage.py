"""Site load in amperes at a voltage whose 6 A is no whole number of watts (review r4):
a share of 6 A is sent as 6.0 A, once. Rounded down to whole watts (1.390 kW for 6 A =
1.3902 kW at 231.7 V), it was below the session's least, sent as 0 A (paused) although
the site had room for it, and sent again on every recompute."""

from __future__ import annotations

from graph.ids import expect_id
from ocpp_bridge.simulator import connected
from tests.e2e.conftest import Running
from tests.e2e.test_site_load import (
    ASSIGN,
    CREATE_STATION,
    SITE,
    StrictChargePoint,
    sent_in_amperes,
    until,
)


async def test_a_session_given_its_6_a_is_sent_6_a_at_any_voltage(service: Running) -> None:
    """A site in A at 231.7 V on one phase whose limit is exactly one session's 6 A
    sends it 6.0 A (not 0 A), and a recompute sends nothing again."""
    token = await service.token("op")
    created = await service.gql(SITE, {"i": {
        "name": "Barn", "maxPowerKw": 1.3902, "unit": "A", "voltage": 231.7,
        "phases": 1}}, token)
    assert created["createSite"]["errors"] == [], created
    site = created["createSite"]["site"]["id"]
    made = await service.gql(CREATE_STATION, {"i": {
        "cpId": "WB-V", "name": "WB-V", "connectors": [{"connectorId": 1, "maxKw": 3.7}]}},
        token)
    assert made["createStation"]["errors"] == []
    assigned = await service.gql(ASSIGN, {"st": made["createStation"]["station"]["id"],
                                          "site": site}, token)
    assert assigned["assignStationToSite"]["errors"] == []
    async with connected(service.ocpp_url, "WB-V", charge_point=StrictChargePoint) as cp:
        await cp.start_transaction(1, "TAG-OK")
        await until(lambda: sent_in_amperes(cp), "told")
        await service.services.site_load.settled()
        assert sent_in_amperes(cp) == [(6.0, 1)]
        service.services.site_load.request_site(expect_id(site, "site", "id"))
        await service.services.site_load.settled()
        assert sent_in_amperes(cp) == [(6.0, 1)]  # told once: the share has not changed
