"""A charger's calls are answered while subscriptions render a storm of nested selections:
rendering shares the event loop, it does not take it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from domain.policy import Viewer
from graph.app import resolve_viewer
from graph.live_ws import LiveEndpoint
from graph.schema import schema
from pubsub.memory import MemoryEventBus
from tests.graph.test_live_ws import Socket, data
from tests.ocpp.conftest import seed, start_central, stop_central
from tests.ocpp.test_protocol import exchange, raw

STORM = 100


def nested(i: int) -> str:
    # Aliased apart: no two share a render group, so each event is STORM renders.
    return (f"subscription {{ connectorStatusChanged {{ info c{i}: connector {{ station {{ "
            f"name connectors {{ status }} }} }} }} }}")


async def test_a_heartbeat_is_answered_before_a_render_storm_is_over(tmp_path: Path) -> None:
    bus = MemoryEventBus()
    central = await start_central(tmp_path / "central.db", bus=bus)
    try:
        await seed(central)

        async def authorize(header: str | None) -> Viewer:
            return await resolve_viewer(central.services, central.tokens, header)

        endpoint = LiveEndpoint(central.services, central.tokens, schema, authorize,
                                max_renders=1)
        socket = Socket(endpoint, "graphql-transport-ws")
        await socket.connect()
        await socket.init(central.tokens.issue(central.users["admin"].id).token)
        for i in range(STORM):
            socket.subscribe(str(i), nested(i))
        for _ in range(500):
            if central.services.live.watching >= STORM:
                break
            await asyncio.sleep(0.01)
        charger = await raw(central)
        try:
            answer = await exchange(charger, json.dumps([2, "sn", "StatusNotification", {
                "connectorId": 1, "errorCode": "NoError", "status": "Faulted",
                "info": "storm"}]))
            assert answer[0] == 3, answer
            beat = await exchange(charger, json.dumps([2, "hb", "Heartbeat", {}]))
            assert beat[0] == 3 and "currentTime" in beat[2], beat
            # Answered while most of the storm's renders had not even started.
            delivered_by_then = socket.outgoing.qsize()
            assert delivered_by_then < STORM // 2, delivered_by_then
            got = {m["id"]: data(m) for m in [await socket.next() for _ in range(STORM)]}
        finally:
            await charger.close()
        assert sorted(got, key=int) == [str(i) for i in range(STORM)]
        assert all(g["info"] == "storm" and g[f"c{i}"]["station"]["name"] == "CP-1"
                   for i, g in ((int(k), v) for k, v in got.items()))
        await socket.close()
    finally:
        await stop_central(central)
        await bus.close()
