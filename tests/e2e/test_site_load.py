"""Site load management end to end: a real uvicorn-served ChargeGraph and two real
``ocpp`` charge points behind one site. Each session is told its share of the site's
limit with SetChargingProfile as sessions start and stop and the limit changes; a
charger that refuses or never answers shows as not under control, and its transactions
are answered as ever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from ocpp.exceptions import InternalError as OcppInternalError
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError as OcppNotSupported
from ocpp.exceptions import OccurrenceConstraintViolationError, OCPPError
from ocpp.routing import on
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from domain.entities import ConfigurationKey, Station
from domain.events import StationConnectionChanged
from domain.load_sharing import FALLBACK_PROFILE_ID, PROFILE_ID_BASE, ChargingRateUnit
from domain.policy import Policy
from domain.query import Eq, all_of
from domain.services import ServiceContext, Services
from domain.services.commands import ALLOWED_UNITS_KEY as UNITS_KEY
from domain.services.commands import CommandOutcome
from domain.services.site_load import LEVEL_UNKNOWN_FOR, MAX_STACK_LEVEL_KEY
from graph.ids import expect_id, to_global_id
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from store.sqlite import SqliteStore
from tests.e2e.conftest import Running, running_service, two_instances
from tests.helpers import FastHasher
from tests.helpers import until as until_async
from tests.ocpp.conftest import STATION_PASSWORD

SITE = """mutation($i: CreateSiteInput!) {
  createSite(input: $i) { site { id } errors { code } } }"""
ASSIGN = """mutation($st: ID!, $site: ID) {
  assignStationToSite(input: {stationId: $st, siteId: $site}) { errors { code } } }"""
UPDATE = """mutation($i: UpdateSiteInput!) { updateSite(input: $i) { errors { code } } }"""
ALLOCATIONS = """query($id: ID!) { site(id: $id) { allocations {
  transactionId powerKw boundKw limit unit answer underControl limitSentAt
  session { idTag } connector { connectorId maxKw } } } }"""


class StrictChargePoint(SimulatedChargePoint):
    """Takes a TxProfile only for the transaction it knows its connector to run, as real
    chargers do: one sent before the StartTransaction's answer reached it is refused."""

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int,
                                      cs_charging_profiles: dict[str, Any]
                                      ) -> result.SetChargingProfile:
        if cs_charging_profiles["charging_profile_purpose"] != "TxProfile":
            return super().on_set_charging_profile(connector_id, cs_charging_profiles)
        # A real charger has read its StartTransaction's answer before the next frame;
        # here the coroutine that reads it may not have run yet when this one arrives.
        for _ in range(50):
            if self.connectors[connector_id].transaction_id is not None:
                break
            await asyncio.sleep(0.01)
        known = self.connectors[connector_id].transaction_id
        if known is None or known != cs_charging_profiles.get("transaction_id"):
            return result.SetChargingProfile(status="Rejected")  # type: ignore[arg-type]
        return super().on_set_charging_profile(connector_id, cs_charging_profiles)


class RefusingChargePoint(SimulatedChargePoint):
    """Takes no charging profiles (as chargers without smart charging answer)."""

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]
                                ) -> result.SetChargingProfile:
        self.received.append(("SetChargingProfile", {"connector_id": connector_id,
                                                      "profile": cs_charging_profiles}))
        return result.SetChargingProfile(status="Rejected")  # type: ignore[arg-type]


class SilentChargePoint(SimulatedChargePoint):
    """Reads SetChargingProfile and never answers it (its other messages flow on)."""

    async def route_message(self, raw_msg: str | bytes) -> None:
        message = orjson.loads(raw_msg)
        if message[0] == 2 and message[2] == "SetChargingProfile":
            self.received.append(("SetChargingProfile", {"connector_id": message[3][
                "connectorId"], "profile": message[3]["csChargingProfiles"]}))
            return
        await super().route_message(raw_msg)


def fallbacks(cp: SimulatedChargePoint) -> list[dict[str, Any]]:
    """The site's fallbacks the charger took (TxDefaultProfiles), oldest first, with the
    connector they were set on."""
    return [{"connector_id": p["connector_id"], **p["profile"]}
            for action, p in cp.received if action == "SetChargingProfile"
            and p["profile"].get("charging_profile_id") == FALLBACK_PROFILE_ID]


def limits(cp: SimulatedChargePoint) -> list[float]:
    """The sessions' limits the charger took (or, silent, was sent), oldest first (not
    the site's fallback, a TxDefaultProfile: ``fallbacks``). The package
    hands handlers snake_case; the silent charger keeps the frame's camelCase."""
    def limit(profile: dict[str, Any]) -> float:
        schedule = profile.get("charging_schedule") or profile["chargingSchedule"]
        periods = schedule.get("charging_schedule_period") \
            or schedule["chargingSchedulePeriod"]
        return float(periods[0]["limit"])

    def purpose(profile: dict[str, Any]) -> str:
        return str(profile.get("charging_profile_purpose")
                   or profile["chargingProfilePurpose"])

    return [limit(p["profile"]) for action, p in cp.received
            if action == "SetChargingProfile" and purpose(p["profile"]) == "TxProfile"]


async def until(check: Callable[[], Any], what: str) -> None:
    """Waits (up to 15 s) until ``check()`` is true: a share is sent after the charger's
    StartTransaction has been answered, so the charger cannot know when it comes."""
    for _ in range(1500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def site_of_two(service: Running, max_kw: float, *, via: Running | None = None
                      ) -> tuple[str, str]:
    """A site of the seeded company holding CP-1 and CP-OPEN; its id and the operator's
    token. ``via``: the instance the edits are made on (``service`` by default)."""
    on = via or service
    token = await on.token("op")
    created = await on.gql(SITE, {"i": {"name": "Depot", "maxPowerKw": max_kw}}, token)
    site = created["createSite"]["site"]["id"]
    for cp_id in ("CP-1", "CP-OPEN"):
        station = to_global_id("station", service.central.stations[cp_id].id)
        assigned = await on.gql(ASSIGN, {"st": station, "site": site}, token)
        assert assigned["assignStationToSite"]["errors"] == []
    return site, token


async def _depot_of_two(service: Running) -> str:
    """A site of 5 kW, its minimum 1 kW, in W, holding CP-1 and CP-OPEN; its id."""
    token = await service.token("op")
    created = await service.gql(SITE, {"i": {"name": "Depot", "maxPowerKw": 5,
                                             "minPowerKw": 1}}, token)
    site = created["createSite"]["site"]["id"]
    for cp_id in ("CP-1", "CP-OPEN"):
        station = to_global_id("station", service.central.stations[cp_id].id)
        assigned = await service.gql(ASSIGN, {"st": station, "site": site}, token)
        assert assigned["assignStationToSite"]["errors"] == []
    return str(site)


async def allocations(service: Running, site: str, token: str) -> list[dict[str, Any]]:
    data = await service.gql(ALLOCATIONS, {"id": site}, token)
    return data["site"]["allocations"]  # type: ignore[no-any-return]


async def test_two_chargers_share_the_site_s_limit(service: Running) -> None:
    site, token = await site_of_two(service, 40)
    url = service.ocpp_url
    async with connected(url, "CP-1", password=STATION_PASSWORD,
                         charge_point=StrictChargePoint) as one, \
            connected(url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        # The first session gets the whole limit, capped at its 22 kW connector.
        tx1, status = await one.start_transaction(2, "TAG-OK")
        assert status == "Accepted"
        await until(lambda: limits(one) == [22_000.0], "CP-1 told 22 kW")
        [sent] = [p for a, p in one.received if a == "SetChargingProfile"
                  and p["profile"]["charging_profile_purpose"] == "TxProfile"]
        assert sent["connector_id"] == 2
        assert sent["profile"] == {
            "charging_profile_id": PROFILE_ID_BASE + 2, "transaction_id": tx1,
            # The simulator says ChargeProfileMaxStackLevel 10 (below STACK_LEVEL): a
            # charger holding to it refuses a profile above (QA s16).
            "stack_level": 10, "charging_profile_purpose": "TxProfile",
            "charging_profile_kind": "Relative", "charging_schedule": {
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 22000.0}]}}

        # A second session (on a 150 kW connector): both get half. Its first limit is
        # what the first does not hold (18 kW), raised once that one took its lower one.
        tx2, _ = await two.start_transaction(1, "TAG-OTHER")
        await until(lambda: limits(two) == [18_000.0, 20_000.0]
                    and limits(one)[-1] == 20_000.0, "both told 20 kW")
        await service.services.site_load.settled()
        shares = await allocations(service, site, token)
        assert [(a["transactionId"], a["powerKw"], a["limit"], a["unit"], a["answer"],
                 a["underControl"]) for a in shares] == [
            (tx1, 20.0, 20000.0, "W", "ACCEPTED", True),
            (tx2, 20.0, 20000.0, "W", "ACCEPTED", True)]
        assert shares[0]["connector"] == {"connectorId": 2, "maxKw": 22.0}
        assert shares[0]["session"] == {"idTag": "TAG-OK"}
        assert all(a["limitSentAt"] for a in shares)

        # One stops: the other gets the whole limit again.
        await one.stop_transaction(2)
        await until(lambda: limits(two)[-1] == 40_000.0, "CP-OPEN told 40 kW")
        # Lowering the site's limit is sent at once; a share that did not change is not.
        assert (await service.gql(UPDATE, {"i": {"id": site, "maxPowerKw": 30}},
                                  token))["updateSite"]["errors"] == []
        await until(lambda: limits(two)[-1] == 30_000.0, "CP-OPEN told 30 kW")
        await service.services.site_load.settled()
        # Shared again with nothing changed: nobody is told anything.
        service.services.site_load.request_site(expect_id(site, "site", "id"))
        await service.services.site_load.settled()
        assert limits(one) == [22_000.0, 20_000.0]
        assert limits(two) == [18_000.0, 20_000.0, 40_000.0, 30_000.0]
        # Each charger took the site's fallback once, on connector 0 at the site's
        # level (the least a session charges at, 6 A on three phases), not at each run.
        assert fallbacks(one) == fallbacks(two) == [{
            "connector_id": 0, "charging_profile_id": PROFILE_ID_BASE, "stack_level": 10,
            "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Relative", "charging_schedule": {
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 4140.0}]}}]
        assert [(a["transactionId"], a["powerKw"])
                for a in await allocations(service, site, token)] == [(tx2, 30.0)]
        await two.stop_transaction(1)  # its end is heard before it is answered
    await service.services.site_load.settled()
    assert await allocations(service, site, token) == []


async def test_a_charger_that_refuses_its_limit_shows_as_not_under_control(
        service: Running) -> None:
    site, token = await site_of_two(service, 40)
    async with connected(service.ocpp_url, "CP-OPEN",
                         charge_point=RefusingChargePoint) as cp:
        tx, status = await cp.start_transaction(1, "TAG-OK")
        assert status == "Accepted"
        await until(lambda: limits(cp) == [40_000.0], "told 40 kW")
        await service.services.site_load.settled()
        [share] = await allocations(service, site, token)
        assert (share["transactionId"], share["answer"], share["underControl"]) == (
            tx, "REJECTED", False)
        await cp.stop_transaction(1)


async def test_start_and_stop_are_answered_when_the_charger_never_answers_its_limit(
        tmp_path: Path) -> None:
    async with running_service(tmp_path, command_timeout=1) as service:
        site, token = await site_of_two(service, 40)
        async with connected(service.ocpp_url, "CP-OPEN",
                             charge_point=SilentChargePoint) as cp:
            tx, status = await cp.start_transaction(1, "TAG-OK")
            assert (tx > 0, status) == (True, "Accepted")
            await until(lambda: limits(cp) == [40_000.0], "sent 40 kW")
            # The charger is still served while its answer is awaited.
            assert (await cp.heartbeat()).current_time
            await service.services.site_load.settled()
            [share] = await allocations(service, site, token)
            assert (share["answer"], share["underControl"]) == ("TIMEOUT", False)
            await cp.stop_transaction(1)
            session = await service.central.session(tx)
            assert session is not None and session.state.value == "COMPLETED"


async def test_a_station_leaving_every_site_has_its_sessions_limit_lifted(
        service: Running) -> None:
    """A station taken out of its site mid-session: its charger was left applying its
    last share (however low) until the transaction ended. It is told to clear
    ChargeGraph's profile; moved to another site instead, it gets that site's share
    (same profile id, replacing it) and no clear, which could land after the share."""
    _, token = await site_of_two(service, 10)
    other = (await service.gql(SITE, {"i": {"name": "Yard", "maxPowerKw": 7}},
                               token))["createSite"]["site"]["id"]
    station = to_global_id("station", service.central.stations["CP-OPEN"].id)
    async with connected(service.ocpp_url, "CP-OPEN",
                         charge_point=StrictChargePoint) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        await until(lambda: limits(cp) == [10_000.0], "told 10 kW")
        moved = await service.gql(ASSIGN, {"st": station, "site": other}, token)
        assert moved["assignStationToSite"]["errors"] == []
        await until(lambda: limits(cp) == [10_000.0, 7_000.0], "told the yard's 7 kW")
        await service.services.site_load.settled()
        assert "ClearChargingProfile" not in [action for action, _ in cp.received]
        left = await service.gql(ASSIGN, {"st": station, "site": None}, token)
        assert left["assignStationToSite"]["errors"] == []
        await until(lambda: ("ClearChargingProfile", {"id": PROFILE_ID_BASE + 1})
                    in cp.received, "the limit lifted")
        await service.services.site_load.settled()
        assert cp.charging_profiles == {}
        assert await allocations(service, other, token) == []
        await cp.stop_transaction(1)
    session = await service.central.session(tx)
    assert session is not None and session.state.value == "COMPLETED"


async def charged_and_gone(service: Running, two: SimulatedChargePoint
                           ) -> tuple[int, int]:
    """CP-1 charges on its 22 kW connector beside ``two`` (CP-OPEN, connected) on a
    40 kW site, both told 20 kW; then CP-1's connection drops with its session ACTIVE.
    The two transaction ids."""
    url = service.ocpp_url
    async with connected(url, "CP-1", password=STATION_PASSWORD,
                         charge_point=StrictChargePoint) as one:
        tx1, _ = await one.start_transaction(2, "TAG-OK")
        await until(lambda: limits(one) == [22_000.0], "CP-1 told 22 kW")
        tx2, _ = await two.start_transaction(1, "TAG-OTHER")
        await until(lambda: limits(one) == [22_000.0, 20_000.0]
                    and limits(two) == [18_000.0, 20_000.0], "both told 20 kW")
    station_id = service.central.stations["CP-1"].id

    async def offline() -> bool:
        [station] = await service.central.store.get_many(Station, [station_id])
        return station is not None and not station.online

    await until_async(offline)
    await service.services.site_load.settled()
    return tx1, tx2


def rows(shares: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["transactionId"], a["powerKw"], a["boundKw"], a["answer"],
             a["underControl"]) for a in shares]


async def test_a_charger_back_online_is_told_its_limit_again(service: Running) -> None:
    """Its connection dropped mid-session and came back (a reboot, say, that lost the
    profile): nothing had changed on the site, so nothing was sent, and the charger drew
    its rating while the site counted it at 20 kW. It is told its limit again when it
    connects, and again once its boot is accepted (a rebooted charger may refuse
    commands until then); the same profile id replaces what it holds."""
    site, token = await site_of_two(service, 40)
    url = service.ocpp_url
    async with connected(url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        tx1, tx2 = await charged_and_gone(service, two)
        # While it is offline its share stays held: CP-OPEN is not raised into it.
        assert rows(await allocations(service, site, token)) == [
            (tx1, 20.0, 20.0, "ACCEPTED", True), (tx2, 20.0, 20.0, "ACCEPTED", True)]
        assert limits(two) == [18_000.0, 20_000.0]
        # Back, as a charger that lost its profiles (it takes any).
        async with connected(url, "CP-1", password=STATION_PASSWORD) as again:
            await until(lambda: limits(again) == [20_000.0], "CP-1 told 20 kW again")
            assert again.charging_profiles[PROFILE_ID_BASE + 2]["transaction_id"] == tx1
            assert (await again.boot()).status == "Accepted"
            await until(lambda: limits(again) == [20_000.0, 20_000.0],
                        "told again after its boot")
            await service.services.site_load.settled()
            assert limits(again) == [20_000.0, 20_000.0]
            assert limits(two) == [18_000.0, 20_000.0]  # nothing changed for it
            assert rows(await allocations(service, site, token)) == [
                (tx1, 20.0, 20.0, "ACCEPTED", True), (tx2, 20.0, 20.0, "ACCEPTED", True)]
            again.connectors[2].transaction_id = tx1  # it went on across the reconnect
            await again.stop_transaction(2)
        await two.stop_transaction(1)


async def test_a_charger_back_online_refusing_its_limit_is_held_at_its_rating(
        service: Running) -> None:
    """Back online, it refuses its limit: it may have lost the one it accepted before,
    so the site holds its 22 kW rating for it and CP-OPEN is lowered to the rest."""
    site, token = await site_of_two(service, 40)
    url = service.ocpp_url
    async with connected(url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        tx1, tx2 = await charged_and_gone(service, two)
        async with connected(url, "CP-1", password=STATION_PASSWORD,
                             charge_point=RefusingChargePoint) as again:
            await until(lambda: limits(again) == [20_000.0], "CP-1 told 20 kW again")
            await until(lambda: limits(two) == [18_000.0, 20_000.0, 18_000.0],
                        "CP-OPEN lowered to 18 kW")
            await service.services.site_load.settled()
            shares = await allocations(service, site, token)
            assert rows(shares) == [(tx1, 20.0, 22.0, "REJECTED", False),
                                    (tx2, 18.0, 18.0, "ACCEPTED", True)]
            assert sum(a["boundKw"] for a in shares) <= 40
            # Asked again in a while (RETRY_LOOSE_S), not at once over and over.
            assert limits(again) == [20_000.0]
            again.connectors[2].transaction_id = tx1  # it went on across the reconnect
            await again.stop_transaction(2)
        await two.stop_transaction(1)


SET_PROFILE = """mutation($i: SetChargingProfileInput!) {
  setChargingProfile(input: $i) { status errors { code field } } }"""
CLEAR_PROFILE = """mutation($i: ClearChargingProfileInput!) {
  clearChargingProfile(input: $i) { status errors { code field } } }"""


def operators_cap(level: int, limit: float, tx: int) -> dict[str, Any]:
    return {"chargingProfileId": 5, "stackLevel": level, "transactionId": tx,
            "chargingProfilePurpose": "TX_PROFILE", "chargingProfileKind": "RELATIVE",
            "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": limit}]}}


async def test_an_operators_own_profiles_do_not_lift_the_sites_limit(
        service: Running) -> None:
    """QA s21: an operator's ClearChargingProfile removed the site's limit at the charger
    (it drew its rating, the site still said ACCEPTED) and nothing sent it again; an
    operator's TxProfile at the site's stack level replaced it; one above it overrode it
    while the site still counted the session at its share."""
    site, token = await site_of_two(service, 40)
    url = service.ocpp_url
    ours = PROFILE_ID_BASE + 2

    async def shares() -> list[tuple[float, float, str, bool]]:
        await service.services.site_load.settled()
        return [(a["powerKw"], a["boundKw"], a["answer"], a["underControl"])
                for a in await allocations(service, site, token)]

    async with connected(url, "CP-1", password=STATION_PASSWORD,
                         charge_point=StrictChargePoint) as one, \
            connected(url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        await one.start_transaction(2, "TAG-OK")
        tx2, _ = await two.start_transaction(2, "TAG-OTHER")
        await until(lambda: limits(one)[-1:] == limits(two)[-1:] == [20_000.0], "20 each")
        # A clear of every profile takes the site's too: the site tells it again.
        cleared = await service.gql(CLEAR_PROFILE, {"i": {"cpId": "CP-1"}}, token)
        assert cleared["clearChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        await until(lambda: ours in one.charging_profiles, "the site's limit told again")
        assert one.charging_profiles[ours]["charging_schedule"][
            "charging_schedule_period"][0]["limit"] == 20_000.0
        assert await shares() == [(20.0, 20.0, "ACCEPTED", True)] * 2

        # At the site's own level (the simulator's ChargeProfileMaxStackLevel, 10) the two
        # would replace each other: refused, nothing sent.
        sent = len(two.received)
        same = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "csChargingProfiles": operators_cap(
                10, 22_000, tx2)}}, token)
        assert same["setChargingProfile"]["errors"] == [
            {"code": "IN_USE", "field": "csChargingProfiles.stackLevel"}]
        assert len(two.received) == sent and ours in two.charging_profiles

        # Above it, a deliberate override: the site holds the connector's rating (22 kW)
        # for that session, not under control, and the other gets the rest.
        over = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "csChargingProfiles": operators_cap(
                11, 22_000, tx2)}}, token)
        assert over["setChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        await until(lambda: limits(one)[-1] == 18_000.0, "CP-1 lowered to the rest")
        assert await shares() == [(18.0, 18.0, "ACCEPTED", True),
                                  (20.0, 22.0, "OVERRIDDEN", False)]

        # Clearing every TxProfile on that connector ends the override: under control.
        lifted = await service.gql(CLEAR_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "chargingProfilePurpose": "TX_PROFILE"}},
            token)
        assert lifted["clearChargingProfile"]["status"] == "ACCEPTED"
        await until(lambda: ours in two.charging_profiles, "CP-OPEN told its limit again")
        for _ in range(300):
            if await shares() == [(20.0, 20.0, "ACCEPTED", True)] * 2:
                break
            await asyncio.sleep(0.01)
        assert await shares() == [(20.0, 20.0, "ACCEPTED", True)] * 2
        assert limits(one)[-1] == limits(two)[-1] == 20_000.0


async def test_a_remote_start_with_a_profile_on_a_site_is_refused(service: Running) -> None:
    """Review s21: a remote start's TxProfile reached the charger unwatched: above the
    site's level it overrode the site while the site counted the session at its share.
    Its transaction does not exist yet: refused, nothing sent; without one it starts."""
    _, token = await site_of_two(service, 40)
    start = """mutation($i: RemoteStartTransactionInput!) {
      remoteStartTransaction(input: $i) { status errors { code field } } }"""
    profile = operators_cap(9, 22_000, 0)
    del profile["transactionId"]
    async with connected(service.ocpp_url, "CP-OPEN", charge_point=StrictChargePoint) as cp:
        await until(lambda: fallbacks(cp), "the site's fallback taken")
        await service.services.site_load.settled()
        sent = len(cp.received)
        refused = await service.gql(start, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "idTag": "TAG-OTHER",
            "chargingProfile": profile}}, token)
        assert refused["remoteStartTransaction"]["errors"] == [
            {"code": "IN_USE", "field": "chargingProfile"}]
        assert len(cp.received) == sent
        plain = await service.gql(start, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "idTag": "TAG-OTHER"}}, token)
        assert plain["remoteStartTransaction"]["errors"] == []


async def _drawn_by_all(*cps: SimulatedChargePoint) -> float:
    """What every charging connector of ``cps`` draws now, its profiles composed as OCPP
    1.6 does."""
    return sum(cp.drawn_w(c) for cp in cps for c, state in cp.connectors.items()
               if state.transaction_id is not None)


async def test_an_override_set_before_the_station_joined_a_site_is_held(
        service: Running) -> None:
    """QA sites s3: an operator's TxProfile above the site's stack level, set while the
    station was in no site, went on governing its session once the station joined a
    30 kW site, which counted it ACCEPTED at its 15 kW share: 22 + 15 kW drawn. It is
    OVERRIDDEN, held at its connector's rating, and the other session gets the rest."""
    token = await service.token("op")
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=StrictChargePoint) as one, \
            connected(service.ocpp_url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        one.connectors[2].power_w = two.connectors[2].power_w = 22_000.0
        await one.start_transaction(2, "TAG-OK")
        tx2, _ = await two.start_transaction(2, "TAG-OTHER")
        # In no site: nothing of a site's to judge it by, accepted.
        over = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "csChargingProfiles": operators_cap(
                11, 22_000, tx2)}}, token)
        assert over["setChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        site, _ = await site_of_two(service, 30)
        await until(lambda: limits(one)[-1:] == [8_000.0], "CP-1 told the rest")
        await service.services.site_load.settled()
        shares = await allocations(service, site, token)
        assert [(a["powerKw"], a["boundKw"], a["answer"], a["underControl"])
                for a in shares] == [(8.0, 8.0, "ACCEPTED", True),
                                     (0.0, 22.0, "OVERRIDDEN", False)]
        # Not told the site's share, which would not govern it anyway.
        assert PROFILE_ID_BASE + 2 not in two.charging_profiles
        assert two.drawn_w(2) == 22_000.0 and one.drawn_w(2) == 8_000.0
        assert await _drawn_by_all(one, two) <= 30_000


async def test_an_override_follows_its_station_from_one_site_to_another(
        service: Running) -> None:
    """QA sites s3: a station leaving a site forgets its sessions' shares, OVERRIDDEN
    marks with them; joining another site mid-session, the override was counted at the
    new site's share. It stays OVERRIDDEN there until a clear of every TxProfile on its
    connector lifts it."""
    first, token = await site_of_two(service, 40)
    created = await service.gql(SITE, {"i": {"name": "Yard", "maxPowerKw": 30}}, token)
    second = created["createSite"]["site"]["id"]
    station = to_global_id("station", service.central.stations["CP-OPEN"].id)
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=StrictChargePoint) as one, \
            connected(service.ocpp_url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        await one.start_transaction(2, "TAG-OK")
        tx2, _ = await two.start_transaction(2, "TAG-OTHER")
        await until(lambda: limits(one)[-1:] == limits(two)[-1:] == [20_000.0], "20 each")
        over = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "csChargingProfiles": operators_cap(
                11, 22_000, tx2)}}, token)
        assert over["setChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        await until(lambda: limits(one)[-1] == 18_000.0, "CP-1 lowered to the rest")

        # Out of every site (its marks forgotten), then into the second one with CP-1.
        for site in (None, second):
            moved = await service.gql(ASSIGN, {"st": station, "site": site}, token)
            assert moved["assignStationToSite"]["errors"] == []
            await service.services.site_load.settled()
        one_id = to_global_id("station", service.central.stations["CP-1"].id)
        moved = await service.gql(ASSIGN, {"st": one_id, "site": second}, token)
        assert moved["assignStationToSite"]["errors"] == []
        await until(lambda: limits(one)[-1] == 8_000.0, "CP-1 told the second site's rest")
        await service.services.site_load.settled()

        async def shares() -> list[tuple[float, float, str, bool]]:
            await service.services.site_load.settled()
            return [(a["powerKw"], a["boundKw"], a["answer"], a["underControl"])
                    for a in await allocations(service, second, token)]

        assert await shares() == [(8.0, 8.0, "ACCEPTED", True),
                                  (0.0, 22.0, "OVERRIDDEN", False)]
        assert await allocations(service, first, token) == []

        # Clearing every TxProfile on that connector lifts the override: under control.
        lifted = await service.gql(CLEAR_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "chargingProfilePurpose": "TX_PROFILE"}},
            token)
        assert lifted["clearChargingProfile"]["status"] == "ACCEPTED"
        for _ in range(300):
            if await shares() == [(15.0, 15.0, "ACCEPTED", True)] * 2:
                break
            await asyncio.sleep(0.01)
        assert await shares() == [(15.0, 15.0, "ACCEPTED", True)] * 2


CREATE_STATION = """mutation($i: CreateStationInput!) {
  createStation(input: $i) { station { id connectors { id connectorId phases } }
  errors { code field } } }"""
UPDATE_CONNECTOR = """mutation($i: UpdateConnectorInput!) {
  updateConnector(input: $i) { connector { phases } errors { code field } } }"""


def sent_in_amperes(cp: SimulatedChargePoint) -> list[tuple[float, int]]:
    """Each session's limit the charger took: (A, numberPhases), oldest first."""
    return [(float(period["limit"]), int(period["number_phases"]))
            for action, p in cp.received if action == "SetChargingProfile"
            and p["profile"]["charging_profile_purpose"] == "TxProfile"
            for period in p["profile"]["charging_schedule"]["charging_schedule_period"]]


async def test_a_site_in_amperes_sends_each_connector_its_current_on_its_phases(
        service: Running) -> None:
    """QA sites s5: a site in A converted every share with its own phases (3): a
    single-phase 3.7 kW (16 A) wallbox was sent 5.3 A on 3 phases, below the 6 A an AC
    charger charges at. A connector's `phases` converts its share (and is sent as
    `numberPhases`); one left to the site's is never sent less than 6 A."""
    token = await service.token("op")
    created = await service.gql(SITE, {"i": {"name": "Depot", "maxPowerKw": 40,
                                             "unit": "A"}}, token)
    site = created["createSite"]["site"]["id"]
    connectors = {}
    for cp_id, phases in (("WB-1PH", 1), ("WB-SITE", None)):
        plug = {"connectorId": 1, "maxKw": 3.7, **({"phases": phases} if phases else {})}
        made = await service.gql(CREATE_STATION, {"i": {
            "cpId": cp_id, "name": cp_id, "connectors": [plug]}}, token)
        assert made["createStation"]["errors"] == []
        station = made["createStation"]["station"]
        assert [c["phases"] for c in station["connectors"]] == [phases]
        connectors[cp_id] = station["connectors"][0]["id"]
        assigned = await service.gql(ASSIGN, {"st": station["id"], "site": site}, token)
        assert assigned["assignStationToSite"]["errors"] == []
    async with connected(service.ocpp_url, "WB-1PH", charge_point=StrictChargePoint) as one, \
            connected(service.ocpp_url, "WB-SITE", charge_point=StrictChargePoint) as three:
        await one.start_transaction(1, "TAG-OK")
        await three.start_transaction(1, "TAG-OTHER")
        await until(lambda: sent_in_amperes(one) and sent_in_amperes(three), "both told")
        await service.services.site_load.settled()
        assert sent_in_amperes(one) == [(16.0, 1)]  # 3.7 kW on one 230 V phase
        assert sent_in_amperes(three) == [(6.0, 3)]  # not 5.3 A: 6 A, it draws 3.7 kW

        # Told its one phase, the second is sent its 16 A on it.
        edited = await service.gql(UPDATE_CONNECTOR, {"i": {"id": connectors["WB-SITE"],
                                                            "phases": 1}}, token)
        assert edited["updateConnector"] == {"connector": {"phases": 1}, "errors": []}
        await until(lambda: sent_in_amperes(three)[-1:] == [(16.0, 1)], "16 A on 1 phase")
        bad = await service.gql(UPDATE_CONNECTOR, {"i": {"id": connectors["WB-SITE"],
                                                         "phases": 4}}, token)
        assert bad["updateConnector"]["errors"] == [{"code": "OUT_OF_RANGE",
                                                     "field": "phases"}]


class CurrentOnlyChargePoint(StrictChargePoint):
    """Takes limits in amperes only, and says so (``ChargingScheduleAllowedChargingRateUnit``
    ``Current``), as many AC wallboxes: a limit in W is refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration["ChargingScheduleAllowedChargingRateUnit"] = ("Current", True)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int,
                                      cs_charging_profiles: dict[str, Any]
                                      ) -> result.SetChargingProfile:
        if cs_charging_profiles["charging_schedule"]["charging_rate_unit"] != "A":
            self.received.append(("Refused", {"profile": cs_charging_profiles}))
            return result.SetChargingProfile(status="Rejected")  # type: ignore[arg-type]
        return await super().on_set_charging_profile(connector_id, cs_charging_profiles)


async def test_a_charger_taking_only_amperes_is_sent_its_share_in_amperes_on_a_site_in_watts(
        service: Running) -> None:
    # QA s27: the site sent its limits in W whatever the charger said it takes; one
    # taking only Current refused every one, was never under control and held its whole
    # rating (22 kW of 40), the other session getting 18 kW.
    site, token = await site_of_two(service, 40)
    url = service.ocpp_url
    async with connected(url, "CP-1", password=STATION_PASSWORD,
                         charge_point=CurrentOnlyChargePoint) as one, \
            connected(url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        await one.start_transaction(2, "TAG-OK")
        await two.start_transaction(2, "TAG-OTHER")
        await until(lambda: limits(two)[-1:] == [20_000.0], "CP-OPEN told 20 kW")
        await service.services.site_load.settled()
        assert [a for a, _ in one.received if a == "Refused"] == []
        # 20 kW on three phases at 230 V: 28.9 A (rounded down), its fallback 6 A.
        assert limits(one)[-1] == 28.9
        assert [(p["charging_schedule"]["charging_rate_unit"],
                 float(p["charging_schedule"]["charging_schedule_period"][0]["limit"]))
                for p in fallbacks(one)] == [("A", 6.0)]
        shares = {a["limit"]: (a["unit"], a["answer"], a["underControl"], a["powerKw"])
                  for a in await allocations(service, site, token)}
        assert shares == {28.9: ("A", "ACCEPTED", True, 20.0),
                          20_000.0: ("W", "ACCEPTED", True, 20.0)}
        told = len(limits(one))
        # Shared again (the site's limit unchanged): nothing new is sent to either.
        service.services.site_load.request_site(expect_id(site, "site", "id"))
        await service.services.site_load.settled()
        assert len(limits(one)) == told


async def test_a_charger_taking_only_amperes_is_never_sent_less_than_6_a_on_a_site_in_watts(
        service: Running) -> None:
    # A site in W may share less than 6 A's worth (its minimum set lower): sent in
    # amperes, that is a current no charger offers (IEC 61851). The later session is
    # paused instead, as on a site in A.
    token = await service.token("op")
    created = await service.gql(SITE, {"i": {"name": "Depot", "maxPowerKw": 5,
                                             "minPowerKw": 1}}, token)
    site = created["createSite"]["site"]["id"]
    for cp_id in ("CP-1", "CP-OPEN"):
        station = to_global_id("station", service.central.stations[cp_id].id)
        assigned = await service.gql(ASSIGN, {"st": station, "site": site}, token)
        assert assigned["assignStationToSite"]["errors"] == []
    url = service.ocpp_url
    async with connected(url, "CP-OPEN", charge_point=StrictChargePoint) as first, \
            connected(url, "CP-1", password=STATION_PASSWORD,
                      charge_point=CurrentOnlyChargePoint) as later:
        await first.start_transaction(2, "TAG-OTHER")
        await until(lambda: limits(first) == [5_000.0], "CP-OPEN told 5 kW")
        await later.start_transaction(2, "TAG-OK")
        await until(lambda: limits(later), "CP-1 told its limit")
        await service.services.site_load.settled()
        assert [limit for limit in limits(later) if 0 < limit < 6] == []
        assert limits(later)[-1] == 0.0 and limits(first)[-1] == 5_000.0


class OneKeyChargePoint(StrictChargePoint):
    """Reads one configuration key per GetConfiguration (``GetConfigurationMaxKeys`` 1),
    answering more with a CALLERROR, and refuses profiles above its
    ``ChargeProfileMaxStackLevel`` (10) as chargers holding to the key do."""

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> result.GetConfiguration:
        if key is not None and len(key) > 1:
            raise OccurrenceConstraintViolationError(description="one key at a time")
        return super().on_get_configuration(key)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int,
                                      cs_charging_profiles: dict[str, Any]
                                      ) -> result.SetChargingProfile:
        if cs_charging_profiles["stack_level"] > 10:
            return result.SetChargingProfile(status="Rejected")  # type: ignore[arg-type]
        return await super().on_set_charging_profile(connector_id, cs_charging_profiles)


async def test_a_charger_reading_one_key_at_a_time_is_told_its_limit_at_its_level(
        service: Running) -> None:
    # The site reads the charger's stack level and units in one GetConfiguration; a
    # charger taking one key per request refused the two, and was sent level 90, which
    # it refused: never under control. Each key is asked alone then.
    site, token = await site_of_two(service, 40)
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=OneKeyChargePoint) as one:
        await one.start_transaction(2, "TAG-OK")
        await until(lambda: limits(one), "CP-1 told its limit")
        await service.services.site_load.settled()
        assert [(a["answer"], a["underControl"])
                for a in await allocations(service, site, token)] == [("ACCEPTED", True)]
        assert one.charging_profiles[PROFILE_ID_BASE + 2]["stack_level"] == 10


class LevelCappedChargePoint(StrictChargePoint):
    """Refuses profiles above its ``ChargeProfileMaxStackLevel`` (10), as chargers
    holding to the key do, noting each level it was sent; notes every GetConfiguration
    it is asked (``asked``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.levels_sent: list[int] = []
        self.asked: list[list[str] | None] = []

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int,
                                      cs_charging_profiles: dict[str, Any]
                                      ) -> result.SetChargingProfile:
        self.levels_sent.append(cs_charging_profiles["stack_level"])
        if cs_charging_profiles["stack_level"] > 10:
            return result.SetChargingProfile(status="Rejected")  # type: ignore[arg-type]
        return await super().on_set_charging_profile(connector_id, cs_charging_profiles)


class OneKeyNotImplementedChargePoint(LevelCappedChargePoint):
    """Reads one key per GetConfiguration, answering more with a CALLERROR
    NotImplemented (as the list limits' read already expects)."""

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> result.GetConfiguration:
        self.asked.append(key)
        if key is not None and len(key) > 1:
            raise OcppNotImplemented(description="one key at a time")
        return super().on_get_configuration(key)


class LastKeyOnlyChargePoint(LevelCappedChargePoint):
    """Reads one key per GetConfiguration, answering several with the last one alone
    (neither giving the others nor calling them unknown)."""

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> result.GetConfiguration:
        self.asked.append(key)
        return super().on_get_configuration(key[-1:] if key else key)


@pytest.mark.parametrize("charger", [OneKeyNotImplementedChargePoint,
                                     LastKeyOnlyChargePoint])
async def test_a_charger_refusing_or_leaving_out_two_keys_is_told_its_limit_at_its_level(
        service: Running, charger: type[LevelCappedChargePoint]) -> None:
    # Review r27: the one-key retry left out NotImplemented/NotSupported CALLERRORs (and
    # answers leaving the level out): the level unknown, 90 was sent, refused, and the
    # session never under control (the site held its whole rating). Asked alone, as the
    # site's read did before it asked the two keys at once.
    site, token = await site_of_two(service, 40)
    site_load = service.services.site_load
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=charger) as one:
        await one.start_transaction(2, "TAG-OK")
        await until(lambda: len(one.levels_sent) >= 2, "CP-1 sent its fallback and limit")
        await site_load.settled()
        assert one.levels_sent[:2] == [10, 10]
        assert [(a["answer"], a["underControl"])
                for a in await allocations(service, site, token)] == [("ACCEPTED", True)]
        assert one.charging_profiles[PROFILE_ID_BASE + 2]["stack_level"] == 10
        # Read again once its level's while is over (an hour): each key alone at once,
        # the charger being known to take one at a time, not three requests each hour.
        asked = len(one.asked)
        site_load._levels.pop("CP-1")
        assert await site_load._stack_level("CP-1") == 10
        assert one.asked[asked:] == [[MAX_STACK_LEVEL_KEY],
                                     ["ChargingScheduleAllowedChargingRateUnit"]]


async def test_a_charger_taking_only_amperes_gets_no_fallback_below_6_a_on_a_site_in_watts(
        service: Running) -> None:
    # Review r27: a session's share sent in amperes is never between 0 and 6 A, but the
    # site's fallback (what each new session draws until its share lands) was its
    # minimum converted without that floor: 1 kW on three 230 V phases sent as 1.4 A,
    # a current no charger offers. Raised to 6 A, the least a session on it charges at
    # (the fallback is never 0: it would start nothing while ChargeGraph is unreachable).
    token = await service.token("op")
    created = await service.gql(SITE, {"i": {"name": "Depot", "maxPowerKw": 5,
                                             "minPowerKw": 1}}, token)
    site = created["createSite"]["site"]["id"]
    station = to_global_id("station", service.central.stations["CP-1"].id)
    assigned = await service.gql(ASSIGN, {"st": station, "site": site}, token)
    assert assigned["assignStationToSite"]["errors"] == []
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=CurrentOnlyChargePoint) as cp:
        await until(lambda: fallbacks(cp), "CP-1 sent its fallback")
        await service.services.site_load.settled()
        assert [(p["charging_schedule"]["charging_rate_unit"],
                 float(p["charging_schedule"]["charging_schedule_period"][0]["limit"]))
                for p in fallbacks(cp)] == [("A", 6.0)]


async def test_an_instance_that_did_not_read_the_chargers_units_shares_as_the_one_that_did(
        service: Running) -> None:
    # Review r27: the units a charger takes were known only to the instance that read
    # them. Another (here: this one with its memory emptied) shared with the
    # current-only charger's least at 0, lowered the other session to an equal share,
    # then paused the current-only one below 6 A: the power taken went unused. Every
    # instance reads them from the charger's stored configuration, in force since its
    # boot. Booting as chargers do (review r27 smart2): the site reads the units when
    # the charger connects (its fallback), often before the BootNotification is
    # recorded; that read was taken for one older than the boot, for up to an hour.
    site = await _depot_of_two(service)
    url = service.ocpp_url
    site_load = service.services.site_load
    store = service.services.ctx.store
    [station] = await store.find_all(Station, Eq("cp_id", "CP-1"), limit=1)
    async with connected(url, "CP-OPEN", charge_point=StrictChargePoint) as first, \
            connected(url, "CP-1", password=STATION_PASSWORD,
                      charge_point=CurrentOnlyChargePoint) as later:
        # Booted once the fallback (read with the units) went out: the read is made
        # on the connection, before its boot, as it often is unforced.
        await until(lambda: fallbacks(later), "CP-1 sent its fallback")
        [units] = await store.find_all(ConfigurationKey, all_of(
            Eq("station_id", station.id), Eq("folded_key", UNITS_KEY.lower())))
        assert units.value == "Current" and units.read_at is not None
        before_boot = datetime.now(UTC)
        await first.boot()
        await later.boot()
        await site_load.settled()
        await first.start_transaction(2, "TAG-OTHER")
        await until(lambda: limits(first) == [5_000.0], "CP-OPEN told 5 kW")
        await later.start_transaction(2, "TAG-OK")
        await until(lambda: limits(later), "CP-1 told its limit")
        await site_load.settled()
        assert limits(later)[-1] == 0.0 and limits(first)[-1] == 5_000.0
        # Premise: the units as stored are that read, made before the boot was sent.
        [read] = await store.get_many(ConfigurationKey, [units.id])
        assert read is not None and read.read_at == units.read_at < before_boot
        # Another instance's view: nothing read from these chargers itself.
        site_load._units.clear()
        site_load._levels.clear()
        site_load.request_site(expect_id(site, "site", "id"))
        await site_load.settled()
        # Nothing changed on the site: the 5 kW stay with CP-OPEN.
        assert limits(first)[-1] == 5_000.0, (limits(first), limits(later))
        assert limits(later)[-1] == 0.0


class FlakyOneKeyCurrentOnlyChargePoint(CurrentOnlyChargePoint):
    """Takes amperes only; reads one key per GetConfiguration (NotImplemented to more);
    while ``flaky``, its lone read of the units key fails once (an InternalError; a
    timeout does the same)."""

    flaky = False

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> result.GetConfiguration:
        if key is not None and len(key) > 1:
            raise OcppNotImplemented(description="one key at a time")
        if self.flaky and key == [UNITS_KEY]:
            self.flaky = False
            raise OcppInternalError(description="busy")
        return super().on_get_configuration(key)


async def test_a_failed_read_of_a_chargers_units_leaves_its_stored_ones_in_use(
        service: Running) -> None:
    # Review r27 smart2: a failed read of the units key alone was kept as "it names
    # none", over the units its stored configuration (in force since its boot) says:
    # every limit went in W to a charger taking only Current, refused before it went
    # by the schedule check (ERROR), the site holding its rating, for an hour.
    site, token = await site_of_two(service, 40)
    site_load = service.services.site_load
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=FlakyOneKeyCurrentOnlyChargePoint) as one:
        await one.start_transaction(2, "TAG-OK")
        await until(lambda: limits(one), "CP-1 told its limit")
        await site_load.settled()
        assert [(a["unit"], a["answer"]) for a in await allocations(service, site, token)
                ] == [("A", "ACCEPTED")]
        # Another instance (or this one an hour later) reads it again; the units read
        # fails this once.
        site_load._units.clear()
        site_load._levels.clear()
        site_load._one_key.clear()
        one.flaky = True
        assert (await service.gql(UPDATE, {"i": {"id": site, "maxPowerKw": 10}},
                                  token))["updateSite"]["errors"] == []
        await site_load.settled()
        assert not one.flaky  # the read failed
        assert [(a["unit"], a["answer"], a["underControl"])
                for a in await allocations(service, site, token)
                ] == [("A", "ACCEPTED", True)]
        # Read again in a while, not in an hour.
        [(_, until_at)] = [v for k, v in site_load._levels.items() if k == "CP-1"]
        assert until_at is not None \
            and until_at - datetime.now(UTC) <= LEVEL_UNKNOWN_FOR


class NoUnitsKeyChargePoint(LevelCappedChargePoint):
    """Reads one key per GetConfiguration and has no units key: asked for it (or for
    more than one key) it answers a CALLERROR (``refusal``: NotImplemented, or
    NotSupported), as some firmware answers an optional key it lacks."""

    refusal: type[OCPPError] = OcppNotImplemented

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> result.GetConfiguration:
        self.asked.append(key)
        if key is not None and (len(key) > 1 or UNITS_KEY in key):
            raise self.refusal(description="no such key")
        return super().on_get_configuration(key)


class NoUnitsKeyNotSupportedChargePoint(NoUnitsKeyChargePoint):
    refusal = OcppNotSupported


@pytest.mark.parametrize("charger", [NoUnitsKeyChargePoint,
                                     NoUnitsKeyNotSupportedChargePoint])
async def test_a_charger_without_the_units_key_is_sent_the_sites_unit_and_read_hourly(
        service: Running, charger: type[NoUnitsKeyChargePoint]) -> None:
    # Review r27-smart3: a NotImplemented/NotSupported to the units key read alone is
    # the charger saying it has no such key (as the list limits' read takes it), not a
    # failed read: it was left unread, and both keys read again every 10 minutes for
    # ever (two or three audited GetConfigurations each time). Not configured, as an
    # unknownKey: the site's unit is sent and the read kept for the hour.
    site, token = await site_of_two(service, 40)
    site_load = service.services.site_load
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=charger) as one:
        await one.start_transaction(2, "TAG-OK")
        await until(lambda: limits(one), "CP-1 told its limit")
        await site_load.settled()
        assert [UNITS_KEY] in one.asked  # asked alone, refused
        assert [(a["unit"], a["answer"], a["underControl"])
                for a in await allocations(service, site, token)
                ] == [("W", "ACCEPTED", True)]
        [(_, until_at)] = [v for k, v in site_load._levels.items() if k == "CP-1"]
        assert until_at is not None \
            and until_at - datetime.now(UTC) > LEVEL_UNKNOWN_FOR
        asked = len(one.asked)
        assert await site_load._stack_level("CP-1") == 10
        assert one.asked[asked:] == []  # not asked again within the hour


async def test_a_fallback_goes_in_the_unit_the_chargers_stored_configuration_says(
        service: Running) -> None:
    # Review r27 smart2: the fallback took the site's unit whenever this instance had
    # not read the charger's units itself (another instance did, or the read failed),
    # where its sessions' limits take the stored ones: W to a charger taking only
    # Current, refused, and nothing held it while ChargeGraph was unreachable.
    token = await service.token("op")
    created = await service.gql(SITE, {"i": {"name": "Depot", "maxPowerKw": 5,
                                             "minPowerKw": 1}}, token)
    site = created["createSite"]["site"]["id"]
    station = to_global_id("station", service.central.stations["CP-1"].id)
    assigned = await service.gql(ASSIGN, {"st": station, "site": site}, token)
    assert assigned["assignStationToSite"]["errors"] == []
    url = service.ocpp_url
    async with connected(url, "CP-1", password=STATION_PASSWORD,
                         charge_point=FlakyOneKeyCurrentOnlyChargePoint) as cp:
        await until(lambda: fallbacks(cp), "CP-1 sent its fallback")
        await service.services.site_load.settled()
    # Connected again: its units read fails this time; stored, they say Current.
    FlakyOneKeyCurrentOnlyChargePoint.flaky = True
    try:
        async with connected(url, "CP-1", password=STATION_PASSWORD,
                             charge_point=FlakyOneKeyCurrentOnlyChargePoint) as cp:
            await until(lambda: fallbacks(cp), "CP-1 sent its fallback again")
            await service.services.site_load.settled()
            assert not cp.flaky  # the read failed
            assert [(p["charging_schedule"]["charging_rate_unit"],
                     float(p["charging_schedule"]["charging_schedule_period"][0]["limit"]))
                    for p in fallbacks(cp)] == [("A", 6.0)]
    finally:
        FlakyOneKeyCurrentOnlyChargePoint.flaky = False


async def test_a_chargers_level_and_units_are_read_again_once_it_connects_elsewhere(
        service: Running) -> None:
    # Review r27 smart2: an instance not holding the charger kept the level and units
    # it read (through the instance holding it) for an hour after the charger
    # connected again elsewhere (new firmware, another charger); the announcement of
    # that connection, which every instance follows already, forgets them. Its own
    # announcements, heard back, do not.
    await site_of_two(service, 40)
    site_load = service.services.site_load
    bus = service.services.ctx.bus
    assert bus is not None
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=CurrentOnlyChargePoint) as one:
        await one.start_transaction(2, "TAG-OK")
        await until(lambda: limits(one), "CP-1 told its limit")
        await site_load.settled()
        [station] = await service.services.ctx.store.find_all(
            Station, Eq("cp_id", "CP-1"), limit=1)
        assert "CP-1" in site_load._levels and station.connection is not None
        mine = StationConnectionChanged(station_id=station.id, cp_id="CP-1",
                                        company_id=station.company_id,
                                        owner_id=station.owner_id, online=True,
                                        connection=station.connection)
        heard: list[Any] = []
        service.services.charging.on_followed.append(heard.append)  # after the site's
        await bus.publish(mine)
        await until(lambda: mine in heard, "its own announcement followed")
        assert "CP-1" in site_load._levels and "CP-1" in site_load._units
        await bus.publish(replace(mine, connection=station.connection + 1))
        await until(lambda: "CP-1" not in site_load._levels, "CP-1's level forgotten")
        assert "CP-1" not in site_load._units


async def test_an_api_only_instance_forgets_a_chargers_level_once_it_connects_elsewhere(
        tmp_path: Path) -> None:
    # QA s30 (review r27-smart3's leftover): the announcement of a charger's newer
    # connection reached ``SiteLoad.followed`` through the OCPP server's subscription
    # alone (session 31: the wiring's, on every instance); an instance serving the API
    # alone (CHARGEGRAPH_OCPP_ENABLED=false) kept the level and units it read (an
    # operator's updateSite there, through the instance holding the charger) for their
    # hour. It follows the announcements too.
    # The other instance: services of their own over the same database and bus.
    async with running_service(tmp_path, ocpp_enabled=False) as service:
        site_load = service.services.site_load
        store = SqliteStore(service.settings.database_url.removeprefix("sqlite:///"))
        await store.start()
        try:
            other = Services(ServiceContext(store=store, policy=Policy(),
                                            hasher=FastHasher(), bus=service.services.ctx.bus))
            # As read through the instance holding the charger (a site run here).
            site_load._levels["CP-1"] = (10, datetime.now(UTC) + timedelta(hours=1))
            site_load._units["CP-1"] = frozenset({ChargingRateUnit.A})
            site_load._one_key.add("CP-1")
            assert await other.charging.connect("CP-1", instance="other") is not None
            await until(lambda: "CP-1" not in site_load._levels, "CP-1's level forgotten")
            assert "CP-1" not in site_load._units and "CP-1" not in site_load._one_key
        finally:
            await store.close()


async def test_a_chargers_level_past_its_hour_is_read_again_with_its_units(
        service: Running) -> None:
    # Review r27-smart3: both keys, read again together once the hour is over.
    site_load = service.services.site_load
    station = service.central.stations["CP-1"]
    asked: list[list[str]] = []

    async def configuration(cp_id: str, keys: list[str]) -> CommandOutcome:
        asked.append(keys)
        return CommandOutcome(command_id="c", action="GetConfiguration",
                              station=station, result={"configurationKey": [
                                  {"key": MAX_STACK_LEVEL_KEY, "value": "5"},
                                  {"key": UNITS_KEY, "value": "Power"}]})

    site_load._configuration = configuration  # type: ignore[method-assign]
    site_load._levels["CP-1"] = (10, datetime.now(UTC) - timedelta(seconds=1))
    site_load._units["CP-1"] = frozenset({ChargingRateUnit.A})
    assert await site_load._stack_level("CP-1") == 5
    assert asked == [[MAX_STACK_LEVEL_KEY, UNITS_KEY]]
    assert site_load._units["CP-1"] == frozenset({ChargingRateUnit.W})


async def test_an_api_only_instance_forgets_what_it_read_of_a_charger_through_redis(
        tmp_path: Path) -> None:
    # As above, between two instances on one database and one Redis: B serves the API
    # alone, and reads CP-1's level and units through A, which holds it, when its site
    # edit sends the site's fallback; CP-1 connecting to A again has B forget them.
    async with two_instances(tmp_path, ocpp_enabled=False) as (a, b):
        site_load = b.services.site_load
        async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD,
                             charge_point=CurrentOnlyChargePoint) as cp:
            await site_of_two(a, 40, via=b)
            await until(lambda: fallbacks(cp), "CP-1 sent the site's fallback")
            await site_load.settled()
            assert site_load._units.get("CP-1") == frozenset({ChargingRateUnit.A})
            assert "CP-1" in site_load._levels
        async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD,
                             charge_point=CurrentOnlyChargePoint):
            await until(lambda: "CP-1" not in site_load._levels,
                        "CP-1's level forgotten on B")
            assert "CP-1" not in site_load._units


async def test_an_overridden_session_keeps_the_unit_its_last_limit_was_sent_in(
        service: Running) -> None:
    # Review r27: an allocation overridden by a person's profile kept the limit sent in
    # amperes but took the site's unit: "28.9 W", where the schema promises the limit
    # as sent, in ``unit``.
    site, token = await site_of_two(service, 40)
    url = service.ocpp_url
    async with connected(url, "CP-1", password=STATION_PASSWORD,
                         charge_point=CurrentOnlyChargePoint) as one, \
            connected(url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        tx1, _ = await one.start_transaction(2, "TAG-OK")
        await two.start_transaction(2, "TAG-OTHER")
        await until(lambda: limits(one)[-1:] == [28.9], "CP-1 told 28.9 A")
        await service.services.site_load.settled()
        over = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-1", "connectorId": 2, "csChargingProfiles": {
                "chargingProfileId": 5, "stackLevel": 11, "transactionId": tx1,
                "chargingProfilePurpose": "TX_PROFILE", "chargingProfileKind": "RELATIVE",
                "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 32}]}}}}, token)
        assert over["setChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        await service.services.site_load.settled()
        mine = [(a["limit"], a["unit"], a["answer"])
                for a in await allocations(service, site, token)
                if a["session"]["idTag"] == "TAG-OK"]
        assert mine == [(28.9, "A", "OVERRIDDEN")]
