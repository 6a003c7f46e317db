"""A charger reconnecting while its old socket is half-open (a cellular modem dropped
without closing), through a real websocket: the station's recorded connection is the
live one, whatever order the closes finish in (QA s18, soak)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import basic_auth
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central

BOOT = {"chargePointVendor": "QA", "chargePointModel": "X"}


async def half_open(url: str) -> asyncio.StreamWriter:
    """A connection of CP-1 that completes the handshake and then never reads again: its
    closing handshake takes the server's full close timeout."""
    where = urlsplit(url)
    assert where.hostname is not None and where.port is not None
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = basic_auth("CP-1", STATION_PASSWORD)["Authorization"]
    writer.write((f"GET {where.path}/CP-1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
                  f"Authorization: {auth}\r\n\r\n").encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return writer


async def test_a_connection_replaced_while_the_one_before_closes_is_never_the_stations(
        central: Central) -> None:
    """The second connection waited for the half-open first one to close (10 s) before
    it was recorded; a third, meanwhile, was recorded first and served. The second was
    then recorded as the station's newest: the third's clean close was refused as not
    the newest, and the station stayed online with no connection at all."""
    async def online() -> bool:
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None
        return station.online

    first = await half_open(central.url)
    try:
        await until(online)
        second = await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                               additional_headers=basic_auth("CP-1", STATION_PASSWORD))
        await second.send(json.dumps([2, "b1", "BootNotification", BOOT]))
        third = await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                              additional_headers=basic_auth("CP-1", STATION_PASSWORD))
        await third.send(json.dumps([2, "b2", "BootNotification", BOOT]))
        answer = json.loads(await asyncio.wait_for(third.recv(), 15))
        assert answer[:2] == [3, "b2"]
        await third.close()

        async def every_connection_recorded() -> bool:
            events = await central.store.find_all(d.ConnectionEvent, Eq("cp_id", "CP-1"))
            return sum(e.online for e in events) == 3 and not await online()

        # Bounded (20 s, past the first's close timeout): the second's record, had it
        # waited for the first's close, came last and brought the station back online.
        await until(every_connection_recorded, attempts=400, step=0.05)
        await asyncio.sleep(0.2)
        assert not await online()
        await second.close()
    finally:
        first.close()


async def test_a_socket_that_dies_without_a_close_leaves_the_charger_last_seen_at_its_last_frame(
        central: Central) -> None:
    """QA s21: a charger gone silent (no close frame: power, network, or no answer to
    pings) read lastSeen at the moment its socket was found dead, ~70 s after its last
    word. Its last frame is when it was last heard; the disconnect itself is dated when
    it was found."""
    from datetime import UTC, datetime

    cp = await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                       additional_headers=basic_auth("CP-1", STATION_PASSWORD))
    await cp.send(json.dumps([2, "b1", "BootNotification", BOOT]))
    assert json.loads(await asyncio.wait_for(cp.recv(), 15))[:2] == [3, "b1"]
    answered = datetime.now(UTC)
    await asyncio.sleep(0.05)  # the socket dies after the answer, not with it
    cp.transport.abort()  # no close frame: the server finds the socket dead (1006)

    async def offline() -> bool:
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None
        return not station.online

    await until(offline)
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None and station.last_seen is not None
    assert station.last_seen <= answered
    [gone] = [e for e in await central.store.find_all(d.ConnectionEvent, Eq("cp_id", "CP-1"))
              if not e.online]
    assert gone.at > answered
