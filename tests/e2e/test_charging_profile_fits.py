"""A person's charging profile is judged against the charger's own bounds, as its stored
configuration knows them (QA s27): a schedule with more periods than its
``ChargingScheduleMaxPeriods`` or in a unit its ``ChargingScheduleAllowedChargingRateUnit``
does not name was sent and answered Rejected, and the operator told CHARGER_REJECTED
with no reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.e2e.conftest import Running
from tests.ocpp.conftest import STATION_PASSWORD

SET_PROFILE = """mutation($i: SetChargingProfileInput!) {
  setChargingProfile(input: $i) { status errors { code field message } } }"""
GET_CONFIGURATION = """mutation($i: GetConfigurationInput!) {
  getConfiguration(input: $i) { errors { code } } }"""


class BoundedChargePoint(SimulatedChargePoint):
    """Takes schedules of at most two periods, in amperes, and says so; refuses others."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration["ChargingScheduleAllowedChargingRateUnit"] = ("Current", True)
        self.configuration["ChargingScheduleMaxPeriods"] = ("2", True)

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int,
                                cs_charging_profiles: dict[str, Any]
                                ) -> result.SetChargingProfile:
        schedule = cs_charging_profiles["charging_schedule"]
        if schedule["charging_rate_unit"] != "A" \
                or len(schedule["charging_schedule_period"]) > 2:
            self.received.append(("Refused", cs_charging_profiles))
            return result.SetChargingProfile(status="Rejected")  # type: ignore[arg-type]
        return super().on_set_charging_profile(connector_id, cs_charging_profiles)


def default_profile(unit: str, periods: int) -> dict[str, Any]:
    return {"chargingProfileId": 5, "stackLevel": 1,
            "chargingProfilePurpose": "TX_DEFAULT_PROFILE", "chargingProfileKind": "RELATIVE",
            "chargingSchedule": {"chargingRateUnit": unit, "chargingSchedulePeriod": [
                {"startPeriod": 600 * i, "limit": 16} for i in range(periods)]}}


async def test_a_schedule_the_charger_cannot_take_is_refused_naming_the_field(
        service: Running) -> None:
    token = await service.token("op")

    async def set_profile(unit: str, periods: int) -> dict[str, Any]:
        body = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-1", "connectorId": 0,
            "csChargingProfiles": default_profile(unit, periods)}}, token)
        return body["setChargingProfile"]  # type: ignore[no-any-return]

    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=BoundedChargePoint) as cp:
        # Booted as chargers do on connecting (what it answers on this connection holds
        # for that boot: ``ChargerClocks.boot_at``); its next boot is a restart.
        await cp.boot()
        # Not known yet: sent, and the charger judges it.
        assert (await set_profile("W", 1))["errors"][0]["code"] == "CHARGER_REJECTED"
        read = await service.gql(GET_CONFIGURATION, {"i": {"cpId": "CP-1"}}, token)
        assert read["getConfiguration"]["errors"] == []
        refused = len(cp.received)

        assert await set_profile("A", 3) == {"status": None, "errors": [{
            "code": "TOO_MANY",
            "field": "csChargingProfiles.chargingSchedule.chargingSchedulePeriod",
            "message": "this charger takes at most 2 periods in a schedule (its "
                       "ChargingScheduleMaxPeriods), not 3"}]}
        assert await set_profile("W", 1) == {"status": None, "errors": [{
            "code": "UNSUPPORTED",
            "field": "csChargingProfiles.chargingSchedule.chargingRateUnit",
            "message": "this charger takes limits in A only (its "
                       "ChargingScheduleAllowedChargingRateUnit is Current), not W"}]}
        assert len(cp.received) == refused  # neither was sent
        assert await set_profile("A", 2) == {"status": "ACCEPTED", "errors": []}

        # After a reboot the values read before are not known to hold (new firmware may
        # say others): sent again, for the charger to judge.
        await cp.boot()
        assert (await set_profile("A", 3))["errors"][0]["code"] == "CHARGER_REJECTED"


def readme_words() -> str:
    """The README, its lines run together (a field may be wrapped onto the next)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    return " ".join(text.split())


async def test_a_remote_starts_profile_is_refused_on_its_own_field_which_the_readme_names(
        service: Running) -> None:
    # A remote start carries its profile in chargingProfile, not csChargingProfiles:
    # the error names that field, and the README said the other (review r27).
    token = await service.token("op")
    start = """mutation($i: RemoteStartTransactionInput!) {
      remoteStartTransaction(input: $i) { status errors { code field } } }"""
    too_long = {**default_profile("A", 3), "chargingProfilePurpose": "TX_PROFILE"}
    in_watts = {**default_profile("W", 1), "chargingProfilePurpose": "TX_PROFILE"}
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=BoundedChargePoint):
        read = await service.gql(GET_CONFIGURATION, {"i": {"cpId": "CP-1"}}, token)
        assert read["getConfiguration"]["errors"] == []
        fields = []
        for profile in (too_long, in_watts):
            refused = await service.gql(start, {"i": {
                "cpId": "CP-1", "connectorId": 2, "idTag": "TAG-OK",
                "chargingProfile": profile}}, token)
            fields.append(refused["remoteStartTransaction"]["errors"])
    assert fields == [
        [{"code": "TOO_MANY", "field": "chargingProfile.chargingSchedule.chargingSchedulePeriod"}],
        [{"code": "UNSUPPORTED", "field": "chargingProfile.chargingSchedule.chargingRateUnit"}]]
    readme = readme_words()
    for [error] in fields:
        assert f"`{error['field']}`" in readme, error
