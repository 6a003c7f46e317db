"""OCPP intake gaps (QA s28), end to end with the ``ocpp`` package's charge point
(``ocpp_bridge.simulator``) over a real websocket: a frame starting with a UTF-8 BOM, a
resend of a closed session's StartTransaction, what the audit keeps of a DataTransfer, an
updateFirmware left unanswered, and a charger connecting under its cpId in other case."""

from __future__ import annotations

from typing import Any

from ocpp.v16 import call

from ocpp_bridge import simulator
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central

BOM = "\ufeff"


class _SendsBom(simulator.SimulatedChargePoint):
    """A charger whose firmware writes each frame with a UTF-8 byte order mark first (as
    some .NET and Windows-based stacks do)."""

    async def _send(self, message: Any) -> None:
        await super()._send(BOM + message)


async def test_a_frame_starting_with_a_bom_is_read_as_the_json_after_it(
        central: Central) -> None:
    """The frame was refused as "not valid JSON" under uniqueId "-1": the charger never
    heard its boot answered (it waited out its timeout, over and over). It is read as the
    JSON after the mark, answered under its own uniqueId, and the connection stays up."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         response_timeout=3, charge_point=_SendsBom) as cp:
        boot = await cp.boot()
        assert boot.status == "Accepted"
        assert (await cp.call(call.Heartbeat())).current_time
