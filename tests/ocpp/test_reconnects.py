"""A charger reconnecting while its old socket is half-open (a cellular modem dropped
without closing), through a real websocket: the station's recorded connection is the
live one, whatever order the closes finish in (QA s18, soak)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect

import ocpp_bridge.handler as handler_module
from domain import entities as d
from domain.errors import ChargerOffline, ChargerTimeout
from domain.query import Eq
from ocpp_bridge.simulator import basic_auth, connected
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


async def test_a_command_on_a_connection_replaced_here_fails_at_once(
        central: Central) -> None:
    """A command the half-open socket had when its charger connected again waited for
    that socket's close (10 s) to fail; it fails as soon as the new connection takes
    over, saying why (the charger may have it: outcome unknown), and the next command
    goes to the new connection."""
    first = await half_open(central.url)
    try:
        await until(lambda: _connected(central))
        stale = central.gateway.handler_of("CP-1")
        in_flight = asyncio.create_task(central.gateway.call(
            "CP-1", "UnlockConnector", {"connectorId": 1}, 8))

        async def sent() -> bool:
            return stale is not None and not stale._sending and bool(stale._pending)
        await until(sent)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            with pytest.raises(ChargerTimeout, match="CP-1 reconnected; the command went to its "
                               "previous connection, which may have got it"):
                await asyncio.wait_for(in_flight, 3)
            answer = await central.gateway.call("CP-1", "UnlockConnector",
                                                {"connectorId": 1}, 8)
            assert answer == {"status": "Unlocked"}
    finally:
        first.close()


async def test_a_command_whose_connection_was_let_go_while_it_was_checked_is_not_sent(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request is checked on a thread before it is queued: a connection let go
    meanwhile (its charger connected to another instance) does not send it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await until(lambda: _connected(central))
        handler = central.gateway.handler_of("CP-1")
        assert handler is not None
        real = handler_module._check_outgoing

        async def checking(request: Any, unique_id: str) -> None:
            await real(request, unique_id)
            handler.superseded("connected to another instance")
        monkeypatch.setattr(handler_module, "_check_outgoing", checking)
        with pytest.raises(ChargerOffline, match="CP-1 connected to another instance "
                           "before UnlockConnector was sent"):
            await central.gateway.call("CP-1", "UnlockConnector", {"connectorId": 1}, 8)
        assert cp.received == []


async def _connected(central: Central) -> bool:
    return central.gateway.is_connected("CP-1")
