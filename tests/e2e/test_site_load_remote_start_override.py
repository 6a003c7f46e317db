"""An operator's override given in a RemoteStartTransaction's chargingProfile while the
station was in no site is held when the station joins a site (review r4):
``SiteLoad._overridden`` read only SetChargingProfile entries from the session's
creation on, and the remote start is sent before it. The site counted the session
ACCEPTED at its share while it drew the override's 22 kW: 22 + 15 kW on 30 kW."""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from ocpp_bridge.simulator import connected
from tests.e2e.conftest import Running
from tests.e2e.test_site_load import (
    StrictChargePoint,
    allocations,
    limits,
    site_of_two,
    until,
)
from tests.ocpp.conftest import STATION_PASSWORD

START = """mutation($i: RemoteStartTransactionInput!) {
  remoteStartTransaction(input: $i) { status errors { code field } } }"""


class ProfileTakingChargePoint(StrictChargePoint):
    """Takes a RemoteStartTransaction's chargingProfile as its transaction's TxProfile,
    as OCPP 1.6 (5.11) says a charger does."""

    remote_profile: dict[str, Any] | None = None

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                        charging_profile: dict[str, Any] | None = None
                        ) -> result.RemoteStartTransaction:
        self.remote_profile = charging_profile
        return super().on_remote_start(id_tag, connector_id, charging_profile)

    async def _start_remotely(self, id_tag: str) -> None:
        target = self._remote_target
        await super()._start_remotely(id_tag)
        profile = self.remote_profile
        if target is None or profile is None:
            return
        state = self.connectors[target]
        state.power_w = 22_000.0
        self.charging_profiles[int(profile["charging_profile_id"])] = {
            "connector_id": target, **profile, "transaction_id": state.transaction_id}


async def test_an_override_given_in_a_remote_start_before_the_site_is_held(
        service: Running) -> None:
    """A remote start with a 22 kW TxProfile above the site's level, accepted while the
    station is in no site: once it joins a 30 kW site, its session is OVERRIDDEN (held
    at its rating) and the two sessions draw no more than 30 kW."""
    token = await service.token("op")
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=StrictChargePoint) as one, \
            connected(service.ocpp_url, "CP-OPEN",
                      charge_point=ProfileTakingChargePoint) as two:
        one.connectors[2].power_w = 22_000.0
        await one.start_transaction(2, "TAG-OK")
        # In no site: a remote start with the operator's 22 kW TxProfile above the
        # site level (the simulator's ChargeProfileMaxStackLevel is 10) is allowed.
        started = await service.gql(START, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "idTag": "TAG-OTHER",
            "chargingProfile": {
                "chargingProfileId": 5, "stackLevel": 11,
                "chargingProfilePurpose": "TX_PROFILE", "chargingProfileKind": "RELATIVE",
                "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 22_000}]}}}}, token)
        assert started["remoteStartTransaction"]["errors"] == []
        await until(lambda: two.connectors[2].transaction_id is not None
                    and 5 in two.charging_profiles, "remote start taken")
        await asyncio.sleep(0.2)
        site, _ = await site_of_two(service, 30)
        await until(lambda: limits(one), "CP-1 told its share")
        await service.services.site_load.settled()
        shares = [(a["powerKw"], a["boundKw"], a["answer"], a["underControl"])
                  for a in await allocations(service, site, token)]
        drawn = one.drawn_w(2) + two.drawn_w(2)
        # Expected as for a SetChargingProfile override: held at its rating.
        assert drawn <= 30_000, (shares, drawn)
        assert ("OVERRIDDEN" in [s[2] for s in shares]), shares
