"""A station handed to another company mid-session: the session stays in the books it
started in, priced by the price list its station had then, and the operator who bills it
sees that price list on it, as its driver and admins do (QA s27: ``Session.tariff`` read
null for them, the price list being the station's now-former one). Real server, real
``ocpp`` charger."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from ocpp.v16 import call

from domain.clock import utcnow
from domain.policy import SYSTEM
from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from tests.e2e.conftest import Running
from tests.ocpp.conftest import STATION_PASSWORD

PRICED = """query($id: ID!) { node(id: $id) { ... on Session {
    cost { amount currency } tariff { pricePerKwh currency } } } }"""


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def test_the_operator_billing_a_session_across_a_handover_sees_its_price_list(
        service: Running) -> None:
    c, services = service.central, service.services
    station = c.stations["CP-1"]
    await services.tariffs.set_tariff(SYSTEM, station_id=station.id,
                                      price_per_kwh=Decimal("0.77"), currency="EUR",
                                      valid_from=utcnow() - timedelta(hours=2))
    async with connected(c.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        started = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp=stamp(utcnow() - timedelta(minutes=20))))
        await services.stations.update_station(
            SYSTEM, station.id, company_id=c.users["op_other"].company_id,
            owner_id=c.users["op_other"].id)
        await cp.call(call.StopTransaction(
            meter_stop=10_000, timestamp=stamp(utcnow()),
            transaction_id=started.transaction_id, reason="Local"))
    session = await c.session(started.transaction_id)
    assert session is not None and session.company_id == c.users["op"].company_id
    node_id = to_global_id("session", session.id)
    seen = {who: (await service.gql(PRICED, {"id": node_id},
                                    token=await service.token(who)))["node"]
            for who in ("op", "driver", "admin", "op_other")}
    billed = {"cost": {"amount": "7.70", "currency": "EUR"},
              "tariff": {"pricePerKwh": "0.77", "currency": "EUR"}}
    assert seen["op"] == billed
    assert seen["driver"] == seen["admin"] == billed
    assert seen["op_other"] is None  # not in its books
