"""An instance killed with its chargers connected: another instance, on the same database
and Redis, records them offline once the dead one's lease expires, and the live map hears
of it. The victim is a real ``chargegraph serve`` process, killed with SIGKILL so it writes
nothing on its way out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.e2e.conftest import running_service
from tests.e2e.test_process import serve
from tests.e2e.wsclient import GraphQLWS
from tests.helpers import communicate
from tests.ocpp.conftest import STATION_PASSWORD
from tests.shell.test_process import clean_env
from tests.support.redis_server import RedisServer

LEASE_S = 1.0
CONNECTIONS = "subscription { stationConnectionChanged { cpId online } }"


def environment(tmp_path: Path, database_url: str, redis_url: str) -> dict[str, str]:
    return {**clean_env(tmp_path), "CHARGEGRAPH_DATABASE_URL": database_url,
            "CHARGEGRAPH_PUBSUB_URL": redis_url, "CHARGEGRAPH_JWT_SECRET": "e" * 40,
            "CHARGEGRAPH_INSTANCE_LEASE_SECONDS": str(LEASE_S)}


async def test_a_killed_instances_chargers_are_recorded_offline_by_another(
        tmp_path: Path) -> None:
    redis = RedisServer().start()
    victim = None
    try:
        async with running_service(tmp_path / "b", pubsub_url=redis.url,
                                   instance_lease_seconds=LEASE_S) as b:
            (tmp_path / "a").mkdir()
            # In a thread: B (this loop) renews its lease and serves meanwhile.
            victim, _, ocpp_port = await asyncio.to_thread(
                serve, environment(tmp_path / "a", b.settings.database_url, redis.url),
                tmp_path / "a")
            watcher = await GraphQLWS.open(b.ws_url, await b.token("op"))
            await watcher.subscribe(CONNECTIONS)
            await b.until_subscribed(1)
            store = b.services.ctx.store
            async with connected(f"ws://127.0.0.1:{ocpp_port}/ocpp", "CP-1",
                                 password=STATION_PASSWORD):
                assert (await watcher.next())["payload"]["data"][
                    "stationConnectionChanged"] == {"cpId": "CP-1", "online": True}
                station = await store.find_one(d.Station, Eq("cp_id", "CP-1"))
                assert station is not None and station.online
                holder = station.connected_instance
                assert holder is not None
                assert await store.get_many(d.InstanceLease, [holder]) != [None]

                victim.kill()
                victim.wait(timeout=10)
                # Nothing recorded the disconnect; B does once A's lease has expired.
                message = await asyncio.wait_for(watcher.next(), 10 * LEASE_S)
                assert message["payload"]["data"]["stationConnectionChanged"] == {
                    "cpId": "CP-1", "online": False}
                station = await store.find_one(d.Station, Eq("cp_id", "CP-1"))
                assert station is not None
                assert (station.online, station.connected_instance) == (False, None)
                assert await store.get_many(d.InstanceLease, [holder]) == [None]
            await watcher.close()
    finally:
        if victim is not None:
            if victim.poll() is None:
                victim.kill()
            communicate(victim, 10)  # its pipes closed
        redis.cleanup()
