"""A driver finds their own command in the audit log by the ``commandId`` its mutation
answered (review r33-d: COMMAND entries named no holder, and a driver reads the entries
about them, ``holder_id``, so ``auditLog(filter: {commandId})`` was always empty for
them, their own remote start too). Nobody else's commands, nor theirs to anyone else;
staff read them as before. A real ``ocpp`` charger (the simulator) against a real
central system on a real SQLite file."""

from __future__ import annotations

from typing import Any

from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central

START = """mutation($i: RemoteStartTransactionInput!) { remoteStartTransaction(input: $i) {
  commandId status errors { field code } } }"""
LOOKUP = """query($id: ID!) { auditLog(filter: {commandId: $id}, first: 10) {
  nodes { entity action after } } }"""


async def entries(central: Central, command_id: str, who: str) -> list[dict[str, Any]]:
    nodes = (await central.gql(LOOKUP, {"id": command_id}, as_user=who))["auditLog"]["nodes"]
    return nodes  # type: ignore[no-any-return]


async def test_a_driver_finds_their_own_command_by_its_id(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        answer = (await central.gql(START, {"i": {"cpId": "CP-1", "connectorId": 1}},
                                    as_user="driver"))["remoteStartTransaction"]
        assert (answer["status"], answer["errors"]) == ("ACCEPTED", []), answer
        command_id = answer["commandId"]

        mine = await entries(central, command_id, "driver")
        assert [(e["entity"], e["action"], e["after"]["stage"]) for e in mine] == [
            ("station", "COMMAND", "ANSWERED"), ("station", "COMMAND", "SENT")]
        # What they sent and were answered, nothing more of the charger.
        assert set(mine[0]["after"]) == {"command", "commandId", "stage", "request",
                                         "status", "error"}
        assert mine[0]["after"]["request"]["idTag"] == "TAG-OK"
        assert mine[0]["after"]["status"] == "Accepted"
        assert await entries(central, command_id, "driver2") == []  # not another's
        assert len(await entries(central, command_id, "op")) == 2  # the station's books
        assert await entries(central, command_id, "op_other") == []

        # An operator's command to the charger is no driver's.
        cleared = (await central.gql(
            """mutation { clearCache(input: {cpId: "CP-1"}) { commandId status } }""",
            as_user="op"))["clearCache"]
        assert cleared["status"] == "ACCEPTED"
        assert await entries(central, cleared["commandId"], "driver") == []
        assert len(await entries(central, cleared["commandId"], "op")) == 2
