"""Three ChargeGraph instances on one database and one Redis (QA s24, multi): a charger
that moved to another instance while its old socket hangs half-open, and a charger
whose station was given its password again, on instances that saw it connect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import InvalidStatus

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.e2e.conftest import Running, running_service
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD
from tests.support.redis_server import RedisServer

UNLOCK = """mutation { unlockConnector(input: {cpId: "CP-1", connectorId: 1}) {
    status errors { code message } } }"""


@contextlib.asynccontextmanager
async def three_instances(tmp_path: Path, **settings: Any
                          ) -> AsyncIterator[tuple[Running, Running, Running]]:
    """Instances A (with the test data), B and C, on A's database and one Redis."""
    redis = RedisServer().start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(running_service(
                tmp_path / "a", pubsub_url=redis.url, **settings))
            b, c = [await stack.enter_async_context(running_service(
                tmp_path / name, pubsub_url=redis.url, seed_data=False,
                database_url=a.settings.database_url, **settings)) for name in "bc"]
            yield a, b, c
    finally:
        redis.cleanup()


class FreezingHop:
    """A TCP hop to ``url``'s server that can freeze: from then on nothing passes either
    way and nothing is closed, as when a cellular modem drops, so the server's socket
    through it is half-open. ``swallowed``: bytes the server sent since."""

    def __init__(self, url: str) -> None:
        where = urlsplit(url)
        assert where.hostname is not None and where.port is not None
        self.target = (where.hostname, where.port)
        self.path = where.path
        self.frozen = False
        self.swallowed = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}{self.path}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, server_writer]
        for pipe in (self._pipe(reader, server_writer, False),
                     self._pipe(server_reader, writer, True)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    from_server: bool) -> None:
        while data := await reader.read(65536):
            if self.frozen:
                if from_server:
                    self.swallowed += len(data)
                continue
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        """Drops every connection at once (no closing handshake to wait for)."""
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


async def test_a_charger_that_moved_is_let_go_at_once_and_commands_reach_it(
        tmp_path: Path) -> None:
    """QA s24: CP-1's socket on A went half-open and the charger connected to B. A kept
    the dead socket as the charger's until its close timed out (10 s): A's commands went
    to it (CHARGER_TIMEOUT, then CHARGER_OFFLINE), and A claimed C's relayed ones along
    with B. A lets it go as soon as it hears of B's connection: the command in flight
    there fails at once, saying why, and every instance's next one reaches the charger,
    once."""
    async with three_instances(tmp_path, command_timeout=8) as (a, b, c):
        token = await a.token("op")
        hop = FreezingHop(a.ocpp_url)
        try:
            async with connected(await hop.start(), "CP-1",
                                 password=STATION_PASSWORD) as old:
                await old.boot()
                hop.frozen = True
                in_flight = asyncio.create_task(a.gql(UNLOCK, token=token))

                async def sent() -> bool:
                    return hop.swallowed > 0
                await until(sent)  # A wrote it to the dead socket
                async with connected(b.ocpp_url, "CP-1", password=STATION_PASSWORD) as new:
                    await new.boot()
                    # At once: not after its 8 s, nor after the dead socket's 10 s close.
                    answer = (await asyncio.wait_for(in_flight, 3))["unlockConnector"]
                    [error] = answer["errors"]
                    assert error["code"] == "CHARGER_TIMEOUT"  # the charger may have it
                    assert "connected to another instance" in error["message"]

                    for via in (a, b, c):
                        answer = await asyncio.wait_for(via.gql(UNLOCK, token=token), 3)
                        assert answer["unlockConnector"] == {"status": "UNLOCKED",
                                                             "errors": []}
                    unlocks = [r for r in new.received if r[0] == "UnlockConnector"]
                    assert len(unlocks) == 3  # each once: C's went to B alone
                    station = await a.services.ctx.store.find_one(
                        d.Station, Eq("cp_id", "CP-1"))
                    assert station is not None and station.online
                    await hop.close()  # A's old socket ends for good now
                    await asyncio.sleep(0.3)  # its close handled, had it written anything
                    station = await a.services.ctx.store.find_one(
                        d.Station, Eq("cp_id", "CP-1"))
                    assert station is not None and station.online
        finally:
            await hop.close()


async def opens(running: Running, password: str) -> bool:
    try:
        async with connected(running.ocpp_url, "CP-1", password=password):
            return True
    except InvalidStatus as err:
        assert err.response.status_code == 401
        return False


async def test_a_station_given_its_password_again_still_takes_its_charger_everywhere(
        tmp_path: Path) -> None:
    """QA s24: CP-1's charger had connected to A and B; its station was given the same
    password again (a new hash: a new salt) and then another one and back. A and B took
    the right password for the former one and refused it for good (401), C took it."""
    async with three_instances(tmp_path) as (a, b, c):
        admin = await a.token("admin")
        station_id = (await a.gql('{ station(cpId: "CP-1") { id } }', token=admin)
                      )["station"]["id"]

        async def set_password(password: str) -> None:
            answer = await c.gql("""mutation($i: UpdateStationInput!) {
                updateStation(input: $i) { errors { code } } }""",
                                 {"i": {"id": station_id, "password": password}}, admin)
            assert answer["updateStation"]["errors"] == []

        assert await opens(a, STATION_PASSWORD) and await opens(b, STATION_PASSWORD)
        await set_password(STATION_PASSWORD)
        await asyncio.sleep(0.2)  # A and B hear of the change
        for running in (a, b, c, a, b):
            assert await opens(running, STATION_PASSWORD)
        await set_password("brand-new-password-2")
        await asyncio.sleep(0.2)
        assert not await opens(a, STATION_PASSWORD)  # the former password: refused
        assert await opens(b, "brand-new-password-2")
        await set_password(STATION_PASSWORD)
        await asyncio.sleep(0.2)
        for running in (a, b, c):
            assert await opens(running, STATION_PASSWORD)
        assert not await opens(b, "brand-new-password-2")
