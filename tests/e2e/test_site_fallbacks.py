"""A site charger's fallback end to end (``domain/services/site_fallbacks.py``): every
charger behind a site holds a TxDefaultProfile of ChargeGraph's at the site's least per
session, so a new session draws that, not its connector's rating, until its share
arrives (QA s21: two starts at once drew 44 kW on a 30 kW site), and while the charger
cannot reach ChargeGraph. It follows the site's settings, is sent again when the charger
connects, and is removed once the station leaves every site, also when its charger was
offline then. Real uvicorn, real ``ocpp`` charge points."""

from __future__ import annotations

from typing import Any

import orjson

from domain.entities import Station
from domain.load_sharing import FALLBACK_PROFILE_ID
from graph.ids import to_global_id
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.e2e.conftest import Running
from tests.e2e.test_site_load import (
    ASSIGN,
    CLEAR_PROFILE,
    SET_PROFILE,
    UPDATE,
    fallbacks,
    site_of_two,
    until,
)
from tests.helpers import until as until_async

CLEARED = ("ClearChargingProfile", {"id": FALLBACK_PROFILE_ID})


class UnansweredShares(SimulatedChargePoint):
    """Takes the site's fallback and never answers a session's TxProfile: what a new
    session draws before its share lands."""

    async def route_message(self, raw_msg: str | bytes) -> None:
        message = orjson.loads(raw_msg)
        if message[0] == 2 and message[2] == "SetChargingProfile" \
                and message[3]["csChargingProfiles"]["chargingProfilePurpose"] == "TxProfile":
            return
        await super().route_message(raw_msg)


def fallback_limits(cp: SimulatedChargePoint) -> list[tuple[float, str, int | None]]:
    """Each fallback's limit, unit and phases, oldest first."""
    return [(float(period["limit"]), p["charging_schedule"]["charging_rate_unit"],
             period.get("number_phases"))
            for p in fallbacks(cp)
            for period in p["charging_schedule"]["charging_schedule_period"][:1]]


async def stored(service: Running, cp_id: str) -> Station:
    [station] = await service.central.store.get_many(
        Station, [service.central.stations[cp_id].id])
    assert station is not None
    return station


async def test_a_new_session_draws_the_fallback_until_its_share_arrives(
        service: Running) -> None:
    await site_of_two(service, 30)
    async with connected(service.ocpp_url, "CP-OPEN", charge_point=UnansweredShares) as cp:
        await until(lambda: fallback_limits(cp) == [(4140.0, "W", None)], "the fallback")
        await service.services.site_load.settled()
        assert FALLBACK_PROFILE_ID in cp.charging_profiles
        assert (await stored(service, "CP-OPEN")).site_fallback_kw == 4.14
        await cp.start_transaction(1, "TAG-OK")
        cp.connectors[1].power_w = 22_000.0  # the car asks for the plug's rating
        # Its share is on its way (unanswered): meanwhile the fallback governs it.
        assert cp.drawn_w(1) == 4140.0


async def test_the_fallback_follows_the_site_s_settings(service: Running) -> None:
    site, token = await site_of_two(service, 30)
    async with connected(service.ocpp_url, "CP-OPEN") as cp:
        await until(lambda: len(fallbacks(cp)) == 1, "the first fallback")
        edited = await service.gql(UPDATE, {"i": {"id": site, "minPowerKw": 5}}, token)
        assert edited["updateSite"]["errors"] == []
        await until(lambda: len(fallbacks(cp)) == 2, "the new minimum")
        edited = await service.gql(UPDATE, {"i": {"id": site, "unit": "A"}}, token)
        assert edited["updateSite"]["errors"] == []
        await until(lambda: len(fallbacks(cp)) == 3, "the new unit")
        # A rename changes nothing the charger holds: nothing is sent.
        edited = await service.gql(UPDATE, {"i": {"id": site, "name": "Yard"}}, token)
        assert edited["updateSite"]["errors"] == []
        await service.services.site_load.settled()
        # 5 kW in amperes on three 230 V phases, rounded down.
        assert fallback_limits(cp) == [(4140.0, "W", None), (5000.0, "W", None),
                                       (7.2, "A", 3)]
        assert (await stored(service, "CP-OPEN")).site_fallback_kw == 5.0


async def test_a_charger_connecting_again_is_sent_its_fallback_again(
        service: Running) -> None:
    """A reboot may have lost it: once per connection, whatever it held before."""
    await site_of_two(service, 30)
    for times in (1, 2):
        async with connected(service.ocpp_url, "CP-OPEN") as cp:
            await until(lambda: len(fallbacks(cp)) == 1, f"connection {times}'s fallback")
            await service.services.site_load.settled()
            assert len(fallbacks(cp)) == 1


async def test_a_station_leaving_its_site_has_its_fallback_removed(
        service: Running) -> None:
    _, token = await site_of_two(service, 30)
    station = to_global_id("station", service.central.stations["CP-OPEN"].id)
    async with connected(service.ocpp_url, "CP-OPEN") as cp:
        await took_the_fallback(service, cp)
        left = await service.gql(ASSIGN, {"st": station, "site": None}, token)
        assert left["assignStationToSite"]["errors"] == []
        await until(lambda: CLEARED in cp.received, "the fallback removed")
        await service.services.site_load.settled()
        assert FALLBACK_PROFILE_ID not in cp.charging_profiles
        assert (await stored(service, "CP-OPEN")).site_fallback_kw is None


async def test_a_fallback_left_on_an_offline_charger_is_removed_when_it_connects(
        service: Running) -> None:
    _, token = await site_of_two(service, 30)
    station = to_global_id("station", service.central.stations["CP-OPEN"].id)
    async with connected(service.ocpp_url, "CP-OPEN") as cp:
        await took_the_fallback(service, cp)

    async def offline() -> bool:
        return not (await stored(service, "CP-OPEN")).online

    await until_async(offline)
    left = await service.gql(ASSIGN, {"st": station, "site": None}, token)
    assert left["assignStationToSite"]["errors"] == []
    await service.services.site_load.settled()
    assert (await stored(service, "CP-OPEN")).site_fallback_kw == 4.14  # it may hold it
    async with connected(service.ocpp_url, "CP-OPEN") as cp:
        await until(lambda: CLEARED in cp.received, "removed once it connected")
        await service.services.site_load.settled()
        assert (await stored(service, "CP-OPEN")).site_fallback_kw is None
    async with connected(service.ocpp_url, "CP-OPEN") as cp:  # nothing left to remove
        await service.services.site_load.settled()
        assert "ClearChargingProfile" not in [action for action, _ in cp.received]


async def took_the_fallback(service: Running, cp: SimulatedChargePoint) -> None:
    """Waits until the charger, just connected, took its site's fallback, and the site's
    runs are over."""
    await until(lambda: len(fallbacks(cp)) == 1, "the fallback")
    await service.services.site_load.settled()


def operators_default(level: int, profile_id: int = 5) -> dict[str, Any]:
    return {"chargingProfileId": profile_id, "stackLevel": level,
            "chargingProfilePurpose": "TX_DEFAULT_PROFILE", "chargingProfileKind": "RELATIVE",
            "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 11_000}]}}


async def test_an_operators_profiles_keep_the_fallback(service: Running) -> None:
    """A TxDefaultProfile at the site's level would replace the fallback, sessions or
    none: refused. A clear of every profile removes it: the site sends it again."""
    _, token = await site_of_two(service, 30)
    async with connected(service.ocpp_url, "CP-OPEN") as cp:
        await took_the_fallback(service, cp)
        same = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 0, "csChargingProfiles": operators_default(
                10)}}, token)  # the simulator's ChargeProfileMaxStackLevel
        assert same["setChargingProfile"]["errors"] == [
            {"code": "IN_USE", "field": "csChargingProfiles.stackLevel"}]
        # QA s22 verify: a profile of the site's own id replaced the fallback, and the
        # fallback it in turn: refused, at any level.
        ours = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "csChargingProfiles": operators_default(
                3, FALLBACK_PROFILE_ID)}}, token)
        assert ours["setChargingProfile"]["errors"] == [
            {"code": "IN_USE", "field": "csChargingProfiles.chargingProfileId"}]
        lower = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 0, "csChargingProfiles": operators_default(
                3)}}, token)
        assert lower["setChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        # After any profile of a person's the charger took, the site asserts its own.
        await until(lambda: len(fallbacks(cp)) == 2, "the fallback asserted again")
        await service.services.site_load.settled()
        cleared = await service.gql(CLEAR_PROFILE, {"i": {"cpId": "CP-OPEN"}}, token)
        assert cleared["clearChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        await until(lambda: FALLBACK_PROFILE_ID in cp.charging_profiles,
                    "the fallback sent again")
        await service.services.site_load.settled()
        assert len(fallbacks(cp)) == 3
