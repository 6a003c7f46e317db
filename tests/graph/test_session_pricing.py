"""A session's tariff, its bill line by line, and the running cost of one under way."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Insert, Update
from domain.pricing import cost_breakdown
from domain.query import Eq
from domain.services import Services
from domain.services.charging import books_of
from domain.tariff_bands import DAYS, BandInput
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World

FIELDS = """transactionId state cost { amountMinor currency }
  tariff { pricePerKwh pricePerMinute company { name } }
  costBreakdown { energy time fee idle net tax gross currency }
  estimatedCost { amountMinor amount currency }"""
SESSIONS = "query($n: Int) { sessions(first: $n) { nodes { " + FIELDS + " } } }"


async def _sessions(api: Api, world: World, who: str, n: int = 100) -> dict[int, Any]:
    data = await api.gql(SESSIONS, {"n": n}, as_user=world.users[who].id)
    return {s["transactionId"]: s for s in data["sessions"]["nodes"]}


async def _company_tariff(services: Services, world: World, company: str, **prices: str
                          ) -> d.Tariff:
    return await services.tariffs.set_tariff(
        world.viewer("admin"), company_id=world.companies[company].id, currency="EUR",
        valid_from=utcnow() - timedelta(hours=3), **prices)  # type: ignore[arg-type]


async def _started(services: Services, world: World, cp_id: str, driver: str,
                   start_ago: timedelta, energy_wh: int, *, done: bool = False
                   ) -> d.Session:
    """A session recorded as the charging service records one (ACTIVE); ``done``: one
    completed with no cost recorded (its lines are then not shown, its tariff is)."""
    station = world.stations[cp_id]
    company_id, owner_id = books_of(station)
    session = d.Session(
        transaction_id=await services.ctx.store.next_sequence("transaction"),
        station_id=station.id, cp_id=cp_id, connector_id=2, id_tag=world.tags[driver].tag,
        user_id=world.users[driver].id, start_time=utcnow() - start_ago,
        meter_start_wh=0, energy_wh=energy_wh, company_id=company_id,
        station_owner_id=owner_id)
    if done:
        session.state = d.SessionState.COMPLETED
        session.end_time = session.start_time + timedelta(minutes=5)
    await services.ctx.store.write([Insert(session)], [])
    return session


async def test_a_running_session_is_estimated_and_a_closed_one_itemised(
        api: Api, services: Services, world: World) -> None:
    tariff = await _company_tariff(services, world, "a", price_per_kwh="0.333333",
                                   price_per_minute="0.0123", session_fee="0.49",
                                   tax_rate="0.19")
    s1 = world.sessions["s1"]  # driver1's, ACTIVE on A-001: 5 kWh, two hours in
    before = utcnow()
    live = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    after = utcnow()
    # Priced as it would be if it ended now (on its own timeline): between the two
    # instants the request ran in.
    low = cost_breakdown(tariff, 5000, s1.start_time, before).gross
    high = cost_breakdown(tariff, 5000, s1.start_time, after).gross
    assert low <= live["estimatedCost"]["amountMinor"] <= high
    assert live["estimatedCost"]["currency"] == "EUR"
    assert live["cost"] is None and live["costBreakdown"] is None
    # The driver sees the tariff (the public prices), not the company behind it.
    assert live["tariff"] == {"pricePerKwh": "0.333333", "pricePerMinute": "0.0123",
                              "company": None}

    closed = await services.charging.end_session(world.viewer("op_a"), s1.id)
    done = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    assert done["estimatedCost"] is None
    lines = done["costBreakdown"]
    amounts = {k: Decimal(v) for k, v in lines.items() if k != "currency"}
    assert lines["currency"] == "EUR"
    assert amounts["energy"] + amounts["time"] + amounts["fee"] == amounts["net"]
    assert amounts["net"] + amounts["tax"] == amounts["gross"]
    assert closed.cost_minor is not None
    assert amounts["gross"] * 100 == closed.cost_minor == done["cost"]["amountMinor"]
    assert amounts["fee"] == Decimal("0.49")


async def test_the_tax_line_is_the_rate_on_the_net_and_the_payment_asks_the_gross(
        api: Api, services: Services, world: World) -> None:
    """QA s31: a net of 0.544 EUR is shown 0.54, and 19 % of it is 0.1026: the tax line
    reads 0.10 and the gross 0.64, which the session's cost, its estimate at the same
    instant and its payment ask alike (the exact total with tax, 0.647, made them 0.65
    and the tax the 0.11 left)."""
    tariff = await _company_tariff(services, world, "a", price_per_kwh="1.00",
                                   session_fee="0.50", tax_rate="0.19")
    session = await _started(services, world, "A-001", "driver1", timedelta(minutes=5), 44)
    live = (await _sessions(api, world, "driver1"))[session.transaction_id]
    assert live["estimatedCost"]["amountMinor"] == 64
    assert cost_breakdown(tariff, 44, session.start_time, utcnow()).gross == 64
    closed = await services.charging.end_session(world.viewer("op_a"), session.id)
    done = (await _sessions(api, world, "driver1"))[session.transaction_id]
    assert done["costBreakdown"] == {"energy": "0.04", "time": "0.00", "fee": "0.50",
                                     "idle": "0.00", "net": "0.54", "tax": "0.10",
                                     "gross": "0.64", "currency": "EUR"}
    assert closed.cost_minor == done["cost"]["amountMinor"] == 64
    payments = await api.gql("{ payments(first: 100) { nodes { amount { amountMinor } "
                             "session { transactionId } } } }",
                             as_user=world.users["op_a"].id)
    [asked] = [p["amount"]["amountMinor"] for p in payments["payments"]["nodes"]
               if (p["session"] or {}).get("transactionId") == session.transaction_id]
    assert asked == 64


async def test_no_tariff_no_estimate_and_none_of_another_state(
        api: Api, world: World) -> None:
    sessions = await _sessions(api, world, "admin")
    for session in sessions.values():
        assert session["tariff"] is None and session["estimatedCost"] is None
        assert session["costBreakdown"] is None


async def test_a_bill_no_longer_matching_its_tariff_is_not_itemised(
        api: Api, services: Services, world: World) -> None:
    """A version dated back after billing would split a different total: no receipt is
    shown rather than one that does not add up to the bill."""
    await _company_tariff(services, world, "a", price_per_kwh="0.30")
    s1 = world.sessions["s1"]
    await services.charging.end_session(world.viewer("op_a"), s1.id)
    assert (await _sessions(api, world, "driver1"))[s1.transaction_id]["costBreakdown"]
    await services.tariffs.set_tariff(
        world.viewer("admin"), company_id=world.companies["a"].id, currency="EUR",
        price_per_kwh="0.31", valid_from=s1.start_time - timedelta(minutes=1))
    again = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    assert again["costBreakdown"] is None
    assert again["tariff"]["pricePerKwh"] == "0.31"  # what would price it now


async def test_a_session_billed_before_exact_durations_keeps_its_receipt(
        api: Api, services: Services, world: World) -> None:
    """Review s27: 90.3 s at 1.00 EUR/min closed before durations were priced exactly
    was billed 1.50 (the float 90.29999… s fell short of the half); priced again exactly
    it is 1.51, and its receipt vanished though nothing of it or its tariff changed. It
    shows the lines it was billed by, adding up to what was billed."""
    await _company_tariff(services, world, "a", price_per_kwh="0", price_per_minute="1.00")
    session = await _started(services, world, "A-001", "driver1", timedelta(hours=1), 0,
                             done=True)
    span = timedelta(seconds=90, microseconds=300_000)
    billed = int((Decimal(span.total_seconds()) / 60).scaleb(2).quantize(
        Decimal(1), ROUND_HALF_UP))
    assert billed == 150  # what the build before billed
    await services.ctx.store.write([Update(replace(
        session, end_time=session.start_time + span, meter_stop_wh=0, cost_minor=billed,
        currency="EUR"), frozenset({"end_time", "meter_stop_wh", "cost_minor", "currency"}))], [])
    seen = (await _sessions(api, world, "driver1"))[session.transaction_id]
    assert seen["cost"] == {"amountMinor": 150, "currency": "EUR"}
    assert seen["costBreakdown"] == {"energy": "0.00", "time": "1.50", "fee": "0.00",
                                     "idle": "0.00", "net": "1.50", "tax": "0.00",
                                     "gross": "1.50", "currency": "EUR"}


async def test_operators_see_by_the_books_and_tariffs_as_tariffs_are(
        api: Api, services: Services, world: World) -> None:
    company = await _company_tariff(services, world, "a", price_per_kwh="0.20")
    station_tariff = await services.tariffs.set_tariff(
        world.viewer("admin"), station_id=world.stations["A-002"].id, currency="EUR",
        price_per_kwh="0.55", valid_from=utcnow() - timedelta(hours=3))
    at_a2 = await _started(services, world, "A-002", "driver2", timedelta(hours=1), 7000)
    await services.charging.end_session(world.viewer("op_a"), at_a2.id)
    # A-002 goes to company B: its tariff is B's operators' now; the session stays in A's
    # books.
    await services.stations.update_station(world.viewer("admin"), world.stations["A-002"].id,
                                           company_id=world.companies["b"].id,
                                           owner_id=world.users["op_b"].id)
    tx = at_a2.transaction_id
    op_a = (await _sessions(api, world, "op_a"))[tx]
    # Priced by the station's tariff, no longer op_a's in ``tariffs``, but the price of
    # a session in their books: shown on it (QA s27: null, while its driver saw it), and
    # never the company tariff standing in for it. The bill is theirs, and its lines.
    assert op_a["tariff"] == {"pricePerKwh": "0.55", "pricePerMinute": "0.00",
                              "company": None}
    assert Decimal(op_a["costBreakdown"]["energy"]) == Decimal("3.85")  # 7 kWh × 0.55
    assert tx not in await _sessions(api, world, "op_b")  # not their books
    assert tx not in await _sessions(api, world, "driver1")  # not their session
    driver2 = (await _sessions(api, world, "driver2"))[tx]
    assert driver2["tariff"] == {"pricePerKwh": "0.55", "pricePerMinute": "0.00",
                                 "company": None}
    admin = (await _sessions(api, world, "admin"))[tx]
    assert admin["tariff"]["pricePerKwh"] == str(station_tariff.price_per_kwh)
    # A session at a station of no tariff of its own: its books' company's, with the
    # company shown to staff.
    s1 = (await _sessions(api, world, "op_a"))[world.sessions["s1"].transaction_id]
    assert s1["tariff"] == {"pricePerKwh": str(company.price_per_kwh),
                            "pricePerMinute": "0.00", "company": {"name": "Alpha Charging"}}


async def test_a_page_of_sessions_prices_in_a_fixed_number_of_store_calls(
        api: Api, services: Services, world: World, store: CountingStore) -> None:
    await _company_tariff(services, world, "a", price_per_kwh="0.20")
    await _company_tariff(services, world, "b", price_per_kwh="0.30")
    await services.tariffs.set_tariff(
        SYSTEM, station_id=world.stations["A-002"].id, currency="EUR",
        price_per_kwh="0.55", valid_from=utcnow() - timedelta(hours=3))

    async def calls() -> tuple[list[str], int]:
        store.detail.clear()
        found = await _sessions(api, world, "admin")
        return list(store.detail), len(found)

    small = await calls()
    for i in range(12):
        cp_id = ("A-001", "A-002", "B-001", "B-002")[i % 4]
        await _started(services, world, cp_id, "driver1", timedelta(minutes=10 + i), 100 * i,
                             done=True)
    large = await calls()
    assert (small[1], large[1]) == (3, 15)
    # token viewer, page, station tariffs, company tariffs, the tariffs' visibility, the
    # tariffs' companies: one call each, whatever the number of sessions and starts.
    assert small[0] == large[0] == [
        "get_many:user", "find_page:session", "find_grouped:tariff", "find_grouped:tariff",
        "get_many:tariff", "get_many:company"]


async def test_the_batch_picks_what_tariff_at_picks_beyond_one_batch_of_versions(
        services: Services, world: World, monkeypatch: Any) -> None:
    """Many versions (more than a batch reads), two set with the same start (the one set
    last wins): each session gets the version ``tariff_at`` gives, as ``_close`` bills."""
    from domain.services import tariffs
    monkeypatch.setattr(tariffs, "VERSIONS_PER_BATCH", 2)
    station = world.stations["A-001"]
    base = utcnow() - timedelta(days=1)
    for i, price in enumerate(["0.10", "0.11", "0.12", "0.13", "0.14"]):
        await services.tariffs.set_tariff(SYSTEM, station_id=station.id, currency="EUR",
                                          price_per_kwh=price,
                                          valid_from=base + timedelta(hours=min(i, 3)))
    await _company_tariff(services, world, "a", price_per_kwh="0.90")
    starts = [base - timedelta(hours=1), base, base + timedelta(minutes=90),
              base + timedelta(hours=3), utcnow()]
    wanted = [tariffs.PricedAt(station.id, world.companies["a"].id, at) for at in starts]
    batch = await tariffs.tariffs_in_force(services.ctx.store, wanted)
    one_by_one = [await services.tariffs.tariff_at(station, at, company_id=w.company_id)
                  for w, at in zip(wanted, starts, strict=True)]
    assert [t.id if t else None for t in batch] == [t.id if t else None for t in one_by_one]
    assert [str(t.price_per_kwh) if t else None for t in batch] == [
        None, "0.10", "0.11", "0.14", "0.14"]


async def _history(services: Services, session: d.Session,
                   *stretches: tuple[d.ConnectorStatus, int, int | None]) -> None:
    """The state intervals of the session's connector, minutes from its start."""
    def at(minutes: int | None) -> Any:
        return None if minutes is None else session.start_time + timedelta(minutes=minutes)
    await services.ctx.store.write([Insert(d.ConnectorInterval(
        station_id=session.station_id, cp_id=session.cp_id,
        connector_id=session.connector_id, status=status, start=at(start), end=at(end)))
        for status, start, end in stretches], [])


IDLE_PRICES = {"price_per_kwh": "0.30", "idle_price_per_minute": "0.10",
               "idle_grace_minutes": 10, "idle_fee_cap": "30"}


async def test_idle_time_is_estimated_billed_and_itemised(
        api: Api, services: Services, world: World) -> None:
    tariff = await _company_tariff(services, world, "a", **IDLE_PRICES)  # type: ignore[arg-type]
    s1 = world.sessions["s1"]  # ACTIVE on A-001 for two hours
    # Throttled by the charger for 10 minutes (not billed), then the car was done an
    # hour in and sits there still (SuspendedEV, open).
    await _history(services, s1, (d.ConnectorStatus.CHARGING, 0, 30),
                   (d.ConnectorStatus.SUSPENDED_EVSE, 30, 40),
                   (d.ConnectorStatus.CHARGING, 40, 60),
                   (d.ConnectorStatus.SUSPENDED_EV, 60, None))
    idle_since = s1.start_time + timedelta(minutes=60)
    before = utcnow()
    live = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    after = utcnow()
    low = cost_breakdown(tariff, 5000, s1.start_time, before, before - idle_since)
    high = cost_breakdown(tariff, 5000, s1.start_time, after, after - idle_since)
    assert low.idle >= 490  # (60 − 10) minutes × 0.10, at least
    assert low.gross <= live["estimatedCost"]["amountMinor"] <= high.gross

    closed = await services.charging.end_session(world.viewer("op_a"), s1.id)
    assert closed.idle_seconds is not None and closed.end_time is not None
    assert closed.idle_seconds == int((closed.end_time - idle_since).total_seconds())
    done = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    lines = {k: Decimal(v) for k, v in done["costBreakdown"].items() if k != "currency"}
    exact = (Decimal(closed.idle_seconds) / 60 - 10) * Decimal("0.10")
    assert abs(lines["idle"] - exact) < Decimal("0.01")
    assert lines["energy"] + lines["time"] + lines["fee"] + lines["idle"] == lines["net"]
    assert lines["gross"] * 100 == closed.cost_minor == done["cost"]["amountMinor"]
    payment = await services.ctx.store.find_one(d.Payment, Eq("session_id", s1.id))
    assert payment is not None and payment.amount_minor == closed.cost_minor


async def test_a_page_of_estimates_reads_idle_time_in_one_store_call(
        api: Api, services: Services, world: World, store: CountingStore) -> None:
    await _company_tariff(services, world, "a", **IDLE_PRICES)  # type: ignore[arg-type]
    await _company_tariff(services, world, "b", **IDLE_PRICES)  # type: ignore[arg-type]
    sessions = [world.sessions["s1"]]
    for i, cp_id in enumerate(("A-002", "B-001", "B-002")):
        sessions.append(await _started(services, world, cp_id, "driver1",
                                       timedelta(minutes=30 + i), 1000))
    for session in sessions:
        await _history(services, session, (d.ConnectorStatus.CHARGING, 0, 1),
                       (d.ConnectorStatus.SUSPENDED_EV, 1, None))
    store.detail.clear()
    found = await _sessions(api, world, "admin")
    estimates = [found[s.transaction_id]["estimatedCost"]["amountMinor"] for s in sessions]
    # Each idle since its first minute's charge, 119 and 29-31 minutes, beyond the 10
    # minutes' grace.
    assert estimates[0] > 1000 and all(190 <= e <= 290 for e in estimates[1:])
    assert store.detail.count("find_grouped:connector_interval") == 1


async def test_time_of_day_prices_are_estimated_and_itemised(
        api: Api, services: Services, world: World) -> None:
    """A band over about the first hour of s1 (started two hours ago, 5 kWh so far):
    the energy read in it at its price, the rest at the base price."""
    s1 = world.sessions["s1"]
    edge = (s1.start_time + timedelta(hours=1)).replace(second=0, microsecond=0)
    if s1.start_time.date() != edge.date() or edge.hour == 0:
        pytest.skip("the band would cross midnight (a tariff needs two bands then)")
    band = BandInput(list(DAYS), s1.start_time.strftime("%H:%M"), edge.strftime("%H:%M"),
                     "0.50")
    tariff = await services.tariffs.set_tariff(
        world.viewer("admin"), company_id=world.companies["a"].id, currency="EUR",
        price_per_kwh="0.20", energy_bands=[band], time_zone="UTC",
        valid_from=utcnow() - timedelta(hours=3))
    # Registers: 2 kWh by 20 minutes before the band ends, 2 kWh over the 40 minutes
    # from then (half in the band, half after), 1 kWh no reading accounts for (at the
    # start's price: the band's).
    await services.ctx.store.write([Insert(d.MeterSample(
        session_id=s1.id, cp_id=s1.cp_id, connector_id=s1.connector_id,
        station_id=s1.station_id, at=edge + timedelta(minutes=minutes),
        measurand="Energy.Active.Import.Register", value=float(wh), delta_wh=2000))
        for minutes, wh in ((-20, 3000), (20, 5000))], [])
    expected = cost_breakdown(tariff, 5000, s1.start_time, s1.start_time,
                              band_wh=[4000, 1000]).gross
    assert expected == 220  # 4 kWh × 0.50 + 1 kWh × 0.20
    live = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    assert live["estimatedCost"]["amountMinor"] == expected
    closed = await services.charging.end_session(world.viewer("op_a"), s1.id)
    assert closed.band_energy_wh == [4000, 1000] and closed.cost_minor == expected
    done = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    assert Decimal(done["costBreakdown"]["energy"]) == Decimal("2.20")
    assert done["cost"]["amountMinor"] == expected
    shown = await api.gql('{ tariffs(first: 5) { nodes { timeZone energyBands { days start '
                          'end pricePerKwh } } } }', as_user=world.users["driver1"].id)
    assert {"timeZone": "UTC", "energyBands": [{
        "days": list(DAYS), "start": band.start, "end": band.end, "pricePerKwh": "0.50"}]
    } in shown["tariffs"]["nodes"]


async def test_a_station_s_dc_plugs_are_priced_by_its_dc_tariff(
        api: Api, services: Services, world: World) -> None:
    station = world.stations["A-001"]  # connector 1 is CCS2 (DC), 2 is Type 2 (AC)

    async def price(kwh: str, **scope: Any) -> d.Tariff:
        return await services.tariffs.set_tariff(
            world.viewer("admin"), station_id=station.id, currency="EUR", price_per_kwh=kwh,
            valid_from=utcnow() - timedelta(hours=3), **scope)
    await price("0.39")
    await price("0.59", power_type=d.PowerType.DC)  # newer, but for DC plugs only
    shown = await api.gql(
        '{ station(cpId: "A-001") { tariff { pricePerKwh powerType } connectors { '
        'connectorId tariff { pricePerKwh powerType connectorType } } } }',
        as_user=world.users["driver1"].id)
    assert shown["station"]["tariff"] == {"pricePerKwh": "0.39", "powerType": None}
    assert shown["station"]["connectors"] == [
        {"connectorId": 1, "tariff": {"pricePerKwh": "0.59", "powerType": "DC",
                                      "connectorType": None}},
        {"connectorId": 2, "tariff": {"pricePerKwh": "0.39", "powerType": None,
                                      "connectorType": None}}]
    # A session started on the CCS2 plug: priced, shown and itemised by the DC tariff.
    s1 = world.sessions["s1"]
    await services.ctx.store.write([Update(
        replace(s1, connector_type=d.ConnectorType.CCS2), frozenset({"connector_type"}))],
        [])
    live = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    assert live["tariff"]["pricePerKwh"] == "0.59"
    closed = await services.charging.end_session(world.viewer("op_a"), s1.id)
    assert closed.cost_minor == 295  # 5 kWh × 0.59
    done = (await _sessions(api, world, "driver1"))[s1.transaction_id]
    assert done["costBreakdown"]["gross"] == "2.95"
