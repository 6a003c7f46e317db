"""Removing a price list (QA s25: there was no way to). A station priced on its own could
never go back to its company's prices, nor a company give up a DC price list, nor a
price change scheduled by mistake be called off: every version stayed in force until
a later one of its scope replaced it. Over real OCPP sessions on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v16 import call

from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central

SET = """mutation($i: SetTariffInput!) { setTariff(input: $i) {
  tariff { id pricePerKwh validUntil } errors { field code } } }"""
REMOVE = """mutation($id: ID!) { removeTariff(input: {id: $id}) {
  tariff { id pricePerKwh validFrom validUntil } errors { field code } } }"""
PRICES = """{ stations(first: 5) { nodes { id cpId tariff { pricePerKwh }
  connectors { connectorId tariff { pricePerKwh } } } } }"""
SESSIONS = "{ sessions(first: 10) { nodes { transactionId cost { amountMinor } } } }"


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _ids(central: Central) -> tuple[str, str]:
    data = await central.gql("{ stations(first: 5) { nodes { id cpId } } "
                             "companies(first: 5) { nodes { id name } } }", as_user="admin")
    station = next(s["id"] for s in data["stations"]["nodes"] if s["cpId"] == "CP-1")
    company = next(c["id"] for c in data["companies"]["nodes"] if c["name"] == "Volt GmbH")
    return station, company


async def _set(central: Central, **fields: Any) -> dict[str, Any]:
    data = await central.gql(SET, {"i": {"currency": "EUR", **fields}}, as_user="op")
    assert data["setTariff"]["errors"] == []
    return data["setTariff"]["tariff"]  # type: ignore[no-any-return]


async def _remove(central: Central, tariff_id: str) -> dict[str, Any]:
    return (await central.gql(REMOVE, {"id": tariff_id}, as_user="op"))[  # type: ignore[no-any-return]
        "removeTariff"]


async def _costs(central: Central) -> dict[int, int]:
    data = await central.gql(SESSIONS, as_user="driver")
    return {s["transactionId"]: s["cost"]["amountMinor"] for s in data["sessions"]["nodes"]}


async def _previews(central: Central) -> tuple[str, dict[int, str]]:
    data = await central.gql(PRICES, as_user="driver")
    [cp1] = [s for s in data["stations"]["nodes"] if s["cpId"] == "CP-1"]
    return cp1["tariff"]["pricePerKwh"], {c["connectorId"]: c["tariff"]["pricePerKwh"]
                                           for c in cp1["connectors"]}


async def test_a_station_s_removed_price_list_gives_it_back_its_company_s(
        central: Central) -> None:
    """CP-1 is priced on its own (0.25); its operator removes that price list while a
    session charges: that session keeps 0.25 (2 kWh: 0.50), the next one is at the
    company's 0.40 (2 kWh: 0.80), as the station's and its plugs' prices show."""
    station_id, _ = await _ids(central)
    own = await _set(central, stationId=station_id, pricePerKwh="0.25")
    assert await _previews(central) == ("0.25", {1: "0.25", 2: "0.25"})
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        before = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp=iso(datetime.now(UTC))))).transaction_id
        removed = await _remove(central, own["id"])
        assert removed["errors"] == [] and removed["tariff"]["validUntil"] is not None
        assert await _previews(central) == ("0.40", {1: "0.40", 2: "0.40"})
        after = (await cp.call(call.StartTransaction(
            connector_id=2, id_tag="TAG-OTHER", meter_start=0,
            timestamp=iso(datetime.now(UTC))))).transaction_id
        for tx in (before, after):
            await cp.call(call.StopTransaction(meter_stop=2000, transaction_id=tx,
                                               timestamp=iso(datetime.now(UTC))))
    costs = await _costs(central)
    assert costs[before] == 50
    data = await central.gql(SESSIONS, as_user="driver2")
    assert {s["transactionId"]: s["cost"]["amountMinor"]
            for s in data["sessions"]["nodes"]}[after] == 80
    # Ended already: it prices no new session, and saying so again is no removal.
    again = await _remove(central, own["id"])
    assert again == {"tariff": None, "errors": [{"field": "id", "code": "INVALID_STATE"}]}


async def test_a_scheduled_price_change_is_called_off_and_a_dc_price_given_up(
        central: Central) -> None:
    """A company price change set for tomorrow by mistake is removed: it never takes
    effect, the price in force goes on. A company DC price list removed: its DC plugs
    are at its all-plugs price again. Another company's operator may remove neither."""
    _, company_id = await _ids(central)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    scheduled = await _set(central, companyId=company_id, pricePerKwh="4.00",
                           validFrom=iso(tomorrow))
    dc = await _set(central, companyId=company_id, pricePerKwh="0.69", powerType="DC")
    assert await _previews(central) == ("0.40", {1: "0.69", 2: "0.40"})
    foreign = await central.gql(REMOVE, {"id": dc["id"]}, as_user="op_other")
    assert foreign["removeTariff"]["errors"] == [{"field": "id", "code": "NOT_FOUND"}]
    called_off = await _remove(central, scheduled["id"])
    assert called_off["errors"] == [] and called_off["tariff"]["validUntil"] is None
    listed = await central.gql("{ tariffs(first: 20) { nodes { id } } }", as_user="op")
    assert scheduled["id"] not in {t["id"] for t in listed["tariffs"]["nodes"]}
    assert (await _remove(central, dc["id"]))["errors"] == []
    assert await _previews(central) == ("0.40", {1: "0.40", 2: "0.40"})
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp=iso(datetime.now(UTC))))).transaction_id
        await cp.call(call.StopTransaction(meter_stop=1000, transaction_id=tx,
                                           timestamp=iso(datetime.now(UTC))))
    assert (await _costs(central))[tx] == 40  # 1 kWh at the all-plugs 0.40, not 0.69


async def test_a_removal_is_in_the_company_s_change_log(central: Central) -> None:
    """The operator's colleagues read who removed which price list, as every change to it:
    a station's (ended) and a company's scheduled one (deleted)."""
    station_id, company_id = await _ids(central)
    own = await _set(central, stationId=station_id, pricePerKwh="0.25")
    scheduled = await _set(central, companyId=company_id, pricePerKwh="0.45",
                           validFrom=iso(datetime.now(UTC) + timedelta(days=1)))
    for tariff in (own, scheduled):
        assert (await _remove(central, tariff["id"]))["errors"] == []
    log = await central.gql("""{ auditLog(filter: {entity: "tariff"}, first: 20) {
        nodes { entityId action } } }""", as_user="op")
    actions = [(e["entityId"], e["action"]) for e in log["auditLog"]["nodes"]]
    assert (own["id"], "UPDATE") in actions and (scheduled["id"], "DELETE") in actions
