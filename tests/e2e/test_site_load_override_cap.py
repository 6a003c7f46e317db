"""An override set before its station joined a site is found behind any number of the
system's own commands to the station (review r4): ``SiteLoad._overridden`` read the
latest 1000 command entries of every kind, the site's own shares among them (two entries
each), and an override followed by 500 of them was missed: 22 + 15 kW on a 30 kW site.
The 500 are written straight into the audit log here, as a previous site's
SetChargingProfile to connector 1 would be (with their command, as
``CommandService`` records them)."""

from __future__ import annotations

from domain.entities import SYSTEM_ACTOR, AuditAction, AuditEntry
from domain.load_sharing import PROFILE_ID_BASE
from ocpp_bridge.simulator import connected
from tests.e2e.conftest import Running
from tests.e2e.test_site_load import (
    SET_PROFILE,
    StrictChargePoint,
    allocations,
    limits,
    operators_cap,
    site_of_two,
    until,
)
from tests.ocpp.conftest import STATION_PASSWORD


async def test_an_override_behind_500_later_commands_is_still_held(service: Running) -> None:
    """A person's TxProfile above the site's level, then 500 SYSTEM SetChargingProfiles
    to the station: when it joins a site, the session is held (OVERRIDDEN) and the two
    draw no more than the site's 30 kW."""
    token = await service.token("op")
    async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                         charge_point=StrictChargePoint) as one, \
            connected(service.ocpp_url, "CP-OPEN", charge_point=StrictChargePoint) as two:
        one.connectors[2].power_w = two.connectors[2].power_w = 22_000.0
        await one.start_transaction(2, "TAG-OK")
        tx2, _ = await two.start_transaction(2, "TAG-OTHER")
        over = await service.gql(SET_PROFILE, {"i": {
            "cpId": "CP-OPEN", "connectorId": 2, "csChargingProfiles": operators_cap(
                11, 22_000, tx2)}}, token)
        assert over["setChargingProfile"] == {"status": "ACCEPTED", "errors": []}
        station = service.central.stations["CP-OPEN"]
        request = {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": PROFILE_ID_BASE + 1, "stackLevel": 10,
            "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "transactionId": 999, "chargingSchedule": {"chargingRateUnit": "W",
                                                       "chargingSchedulePeriod": [
                                                           {"startPeriod": 0,
                                                            "limit": 7000}]}}}
        entries = [AuditEntry(entity="station", entity_id=station.id,
                              action=AuditAction.COMMAND, actor=SYSTEM_ACTOR,
                              command="SetChargingProfile",
                              after={"command": "SetChargingProfile", "commandId": f"c{i}",
                                     "stage": stage, "request": request,
                                     "status": "Accepted", "error": None})
                   for i in range(500) for stage in ("SENT", "ANSWERED")]
        await service.central.store.write([], entries)
        site, _ = await site_of_two(service, 30)
        await until(lambda: limits(one), "CP-1 told its share")
        await service.services.site_load.settled()
        shares = [(a["powerKw"], a["boundKw"], a["answer"], a["underControl"])
                  for a in await allocations(service, site, token)]
        assert one.drawn_w(2) + two.drawn_w(2) <= 30_000, shares
        assert "OVERRIDDEN" in [s[2] for s in shares], shares
