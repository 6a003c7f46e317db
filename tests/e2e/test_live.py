"""Live subscriptions end to end: a simulated charger talks OCPP to a real uvicorn-served
ChargeGraph, and websocket subscribers of each role see exactly what they may."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from domain import entities as d
from domain.events import StationConnectionChanged
from domain.policy import SYSTEM
from domain.query import Eq, all_of
from domain.services import ConnectorSpec
from domain.services.base import patch
from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from pubsub.memory import MemoryEventBus
from tests.e2e.conftest import Running, running_service, two_instances
from tests.e2e.wsclient import GraphQLWS
from tests.ocpp.conftest import STATION_PASSWORD
from tests.ocpp.test_charger_actions import CANCEL, RESERVE, ReservesWithoutSayingSo

STATUS = """subscription($f: StationEventFilter) { connectorStatusChanged(filter: $f) {
  cpId connectorId status errorCode droppedBefore connector { status maxKw }
  station { cpId owner { name } } } }"""
SESSIONS = """subscription { sessionUpdated { change transactionId energyKwh state
  session { idTag user { name } } } }"""
FAULTS = "subscription { faultReported { cpId connectorId errorCode status } }"
CONNECTIONS = "subscription { stationConnectionChanged { cpId online } }"


async def test_connector_status_feed_per_role(service: Running) -> None:
    op = await GraphQLWS.open(service.ws_url, await service.token("op"))
    other = await GraphQLWS.open(service.ws_url, await service.token("op_other"))
    driver = await GraphQLWS.open(service.ws_url, await service.token("driver"))
    try:
        for client in (op, other, driver):
            await client.subscribe(STATUS)
        await service.until_subscribed(3)
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.status(2, "Faulted", "GroundFailure")
            got = await op.next()
            event = got["payload"]["data"]["connectorStatusChanged"]
            assert event["cpId"] == "CP-1" and event["status"] == "FAULTED"
            assert event["connector"] == {"status": "FAULTED", "maxKw": 22.0}
            assert event["station"]["owner"] == {"name": "op"}
            assert event["droppedBefore"] == 0
            public = (await driver.next())["payload"]["data"]["connectorStatusChanged"]
            assert public["status"] == "FAULTED"
            assert public["station"]["owner"] is None  # the driver's public view
            with pytest.raises(TimeoutError):
                await other.next(timeout=0.5)  # another tenant sees nothing at all
    finally:
        for client in (op, other, driver):
            await client.close()


async def test_session_updates_reach_only_their_driver(service: Running) -> None:
    mine = await GraphQLWS.open(service.ws_url, await service.token("driver"))
    theirs = await GraphQLWS.open(service.ws_url, await service.token("driver2"))
    operator = await GraphQLWS.open(service.ws_url, await service.token("op"),
                                    protocol="graphql-ws")  # legacy protocol
    try:
        for client in (mine, theirs, operator):
            await client.subscribe(SESSIONS)
        await service.until_subscribed(3)
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            cp.connectors[1].meter_wh = 0
            tx, _ = await cp.start_transaction(1, "TAG-OK")
            cp.connectors[1].power_w = 7200
            await cp.meter_values(1, seconds=1800)
            await cp.stop_transaction(1)
        changes = []
        for _ in range(3):
            data = (await mine.next())["payload"]["data"]["sessionUpdated"]
            changes.append((data["change"], data["transactionId"], data["energyKwh"]))
        assert changes == [("STARTED", tx, 0.0), ("UPDATED", tx, 3.6), ("ENDED", tx, 3.6)]
        legacy = await operator.next()
        assert legacy["type"] == "data"
        assert legacy["payload"]["data"]["sessionUpdated"]["session"]["user"] == {
            "name": "driver"}
        with pytest.raises(TimeoutError):
            await theirs.next(timeout=0.5)
    finally:
        for client in (mine, theirs, operator):
            await client.close()


async def test_faults_and_connections_for_operators(service: Running) -> None:
    op = await GraphQLWS.open(service.ws_url, await service.token("op"))
    driver = await GraphQLWS.open(service.ws_url, await service.token("driver"))
    try:
        await op.subscribe(FAULTS)
        await op.subscribe(CONNECTIONS)
        await driver.subscribe(FAULTS)
        await service.until_subscribed(3)
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.status(1, "Faulted", "HighTemperature")
        messages = [(await op.next())["payload"]["data"] for _ in range(3)]
        kinds = [next(iter(m)) for m in messages]
        assert kinds.count("stationConnectionChanged") == 2
        fault = next(m["faultReported"] for m in messages if "faultReported" in m)
        assert fault == {"cpId": "CP-1", "connectorId": 1, "errorCode": "HIGH_TEMPERATURE",
                         "status": "FAULTED"}
        with pytest.raises(TimeoutError):
            await driver.next(timeout=0.5)  # faults are operators' business
    finally:
        await op.close()
        await driver.close()


async def _closed_at_init(url: str, payload: dict[str, Any]) -> tuple[int, str]:
    """The close code and reason a ``connection_init`` of ``payload`` is answered with."""
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_a_token_without_bearer_is_told_the_format_not_forbidden(
        service: Running) -> None:
    """QA s33: ``{"authorization": "<token>"}`` closed 4403 "Forbidden", as a revoked
    token does, while HTTP says how to send it: an app could not tell its own mistake
    from a sign-out. Same close code, HTTP's words."""
    token = await service.token("driver")
    assert await _closed_at_init(service.ws_url, {"authorization": token}) == (
        4403, "use 'Authorization: Bearer <token>'")
    # A token refused as such is still "Forbidden" (sign in again).
    assert await _closed_at_init(service.ws_url, {"authorization": "Bearer not-a-token"}) \
        == (4403, "Forbidden")
    # Sent as the README says it is accepted: signed in.
    signed_in = await GraphQLWS.open(service.ws_url, token)
    await signed_in.close()


async def test_bad_token_is_rejected_and_anonymous_needs_public_map(tmp_path: Path) -> None:
    async with running_service(tmp_path / "a") as service:
        from websockets.exceptions import ConnectionClosed

        with pytest.raises((ConnectionClosed, AssertionError)):
            await GraphQLWS.open(service.ws_url, "not-a-token")
        # Without the public map an anonymous socket could follow nothing: closed at
        # init (QA s24: acknowledged, it was held open for ever).
        with pytest.raises(ConnectionClosed) as closed:
            await GraphQLWS.open(service.ws_url)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    async with running_service(tmp_path / "b", public_map=True) as service:
        anonymous = await GraphQLWS.open(service.ws_url)
        await anonymous.subscribe(STATUS, {"f": {"cpIds": ["CP-1"]}})
        await service.until_subscribed(1)
        async with connected(service.ocpp_url, "CP-OPEN") as cp:
            await cp.status(1, "Charging")
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.status(1, "Available")
        event = (await anonymous.next())["payload"]["data"]["connectorStatusChanged"]
        assert event["cpId"] == "CP-1"  # the filter kept CP-OPEN's event out
        assert event["station"]["owner"] is None
        await anonymous.close()


async def test_command_completed_reaches_the_operator(service: Running) -> None:
    operator = await GraphQLWS.open(service.ws_url, await service.token("op"))
    driver = await GraphQLWS.open(service.ws_url, await service.token("driver"))
    try:
        query = """subscription { commandCompleted { action cpId status errorCode requestedBy
            requestedByUser { name } } }"""
        await operator.subscribe(query)
        await driver.subscribe(query)
        await service.until_subscribed(2)
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD):
            token = await service.token("op")
            answer = await service.gql("""mutation { unlockConnector(input: {cpId: "CP-1",
                connectorId: 1}) { status errors { code } } }""", token=token)
            assert answer["unlockConnector"] == {"status": "UNLOCKED", "errors": []}
            me = (await service.gql("{ me { id } }", token=token))["me"]["id"]
        event = (await operator.next())["payload"]["data"]["commandCompleted"]
        # Who asked as the API names them everywhere: their ``me.id`` (QA s31: the raw
        # record id, which a console could not match).
        assert event == {"action": "UnlockConnector", "cpId": "CP-1", "status": "Unlocked",
                         "errorCode": None, "requestedBy": me,
                         "requestedByUser": {"name": service.central.users["op"].name}}
        with pytest.raises(TimeoutError):
            await driver.next(timeout=0.5)  # not the driver's command
    finally:
        await operator.close()
        await driver.close()


class ReservesAnyWithoutSayingSo(ReservesWithoutSayingSo):
    """As its base, and accepts a reservation of connector 0 too (the charger picks the
    plug when the car comes)."""

    @on(Action.reserve_now)
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str,
                       reservation_id: int, parent_id_tag: str | None = None
                       ) -> result.ReserveNow:
        if connector_id:
            return super().on_reserve_now(connector_id, expiry_date, id_tag,
                                          reservation_id, parent_id_tag)
        return result.ReserveNow(status="Accepted")  # type: ignore[arg-type]


MAP = """subscription { connectorStatusChanged { cpId connectorId status free } }"""
PLUGS = """{ connectors(first: 10, filter: {cpId: "CP-1"}) { nodes { connectorId free } } }"""


async def _events(client: GraphQLWS, seconds: float = 0.5) -> list[tuple[int, str, bool]]:
    got = []
    try:
        while True:
            event = (await client.next(timeout=seconds))["payload"]["data"][
                "connectorStatusChanged"]
            got.append((event["connectorId"], event["status"], event["free"]))
    except TimeoutError:
        return got


async def test_the_public_map_hears_of_reservations_the_charger_does_not_report(
        tmp_path: Path) -> None:
    """Review of 163f9e3: a reservation takes its plug out of ``availableNow`` while the
    charger goes on reporting Available (some never report Reserved), and its end puts
    it back; the live map's feed said nothing either time, and a signed-out map may not
    follow reservations. Now each is a ``connectorStatusChanged`` of the plugs it holds
    (connector 0's: every plug of the station), status unchanged, ``free`` as
    ``Connector.free`` and the filter read it, saying nothing of whose it is."""
    async with running_service(tmp_path, public_map=True) as service:
        anonymous = await GraphQLWS.open(service.ws_url)
        op = await service.token("op")
        try:
            await anonymous.subscribe(MAP)
            await service.until_subscribed(1)
            async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                                 charge_point=ReservesAnyWithoutSayingSo) as cp:
                for connector_id in (1, 2):
                    await cp.status(connector_id, "Available")
                # A charger's reports carry it too.
                assert await _events(anonymous) == [(1, "AVAILABLE", True),
                                                    (2, "AVAILABLE", True)]
                expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
                reserved = (await service.gql(RESERVE, {"input": {
                    "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OTHER",
                    "expiryDate": expiry}}, token=op))["reserveNow"]
                assert reserved["reservation"]["state"] == "ACTIVE"
                # Stored PENDING (held from then, answered or not); its ACTIVE changes
                # no plug, and is no event of one (review r3b: told twice).
                assert await _events(anonymous) == [(1, "AVAILABLE", False)]
                assert (await service.gql(PLUGS))["connectors"]["nodes"] == [
                    {"connectorId": 1, "free": False}, {"connectorId": 2, "free": True}]
                await service.gql(CANCEL, {"input": {
                    "cpId": "CP-1",
                    "reservationId": reserved["reservation"]["reservationId"]}}, token=op)
                assert await _events(anonymous) == [(1, "AVAILABLE", True)]

                # Connector 0's holds every plug of the station, until the sweep expires it.
                station_wide = (await service.gql(RESERVE, {"input": {
                    "cpId": "CP-1", "connectorId": 0, "idTag": "TAG-OTHER",
                    "expiryDate": expiry}}, token=op))["reserveNow"]["reservation"]
                assert station_wide["state"] == "ACTIVE"
                assert sorted(await _events(anonymous)) == [(1, "AVAILABLE", False),
                                                            (2, "AVAILABLE", False)]
                store = service.services.ctx.store
                [held] = await store.find_all(d.Reservation, Eq(
                    "reservation_id", station_wide["reservationId"]))
                await store.write([patch(held, SYSTEM, expires_at=datetime.now(UTC)
                                         - timedelta(seconds=1))], [])
                assert await service.services.commands.expire_reservations() == 1
                assert sorted(await _events(anonymous)) == [(1, "AVAILABLE", True),
                                                            (2, "AVAILABLE", True)]
        finally:
            await anonymous.close()


SIGHT = "subscription { stationConnectionChanged { cpId stationId online station { cpId } } }"
EDIT = """mutation($input: UpdateStationInput!) { updateStation(input: $input) {
  errors { field code } } }"""


async def _connections(client: GraphQLWS, seconds: float = 0.5) -> list[dict[str, Any]]:
    got = []
    try:
        while True:
            got.append((await client.next(timeout=seconds))["payload"]["data"][
                "stationConnectionChanged"])
    except TimeoutError:
        return got


async def test_a_station_handed_to_another_company_leaves_the_old_map_for_the_new(
        tmp_path: Path) -> None:
    """QA s25: an operator's live map (subscribe, query, apply the events) went on
    showing a station an admin handed to another company, online with its plugs
    available now, for as long as it ran, and the new company's map never heard of it
    until it queried again. Now those who lost sight of it are told it offline (its
    `station` null, as a removed station's), those who gained it that it is online; to
    whoever sees it before and after (an admin, a driver's public map) nothing
    changed."""
    async with running_service(tmp_path, public_map=True) as service:
        names = ("op", "op_other", "admin", "driver")
        clients = {name: await GraphQLWS.open(service.ws_url, await service.token(name))
                   for name in names}
        anonymous = await GraphQLWS.open(service.ws_url)
        station = service.central.stations["CP-1"]
        station_id = to_global_id("station", station.id)
        try:
            for client in (*clients.values(), anonymous):
                await client.subscribe(SIGHT)
            await service.until_subscribed(len(names) + 1)
            async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD):
                for client in (*clients.values(), anonymous):
                    await _connections(client, 0.3)  # its coming online
                other = service.central.users["op_other"]
                assert (await service.gql(EDIT, {"input": {
                    "id": station_id,
                    "companyId": to_global_id("company", other.company_id or ""),
                    "ownerId": to_global_id("user", other.id)}},
                    token=await service.token("admin")))["updateStation"]["errors"] == []
                assert await _connections(clients["op"]) == [
                    {"cpId": "CP-1", "stationId": station_id, "online": False,
                     "station": None}]
                assert await _connections(clients["op_other"]) == [
                    {"cpId": "CP-1", "stationId": station_id, "online": True,
                     "station": {"cpId": "CP-1"}}]
                for unchanged in (clients["admin"], clients["driver"], anonymous):
                    assert await _connections(unchanged, 0.2) == []
        finally:
            for client in (*clients.values(), anonymous):
                await client.close()


async def test_a_station_taken_off_the_map_leaves_the_public_map(tmp_path: Path) -> None:
    """QA s25: a station set back to PENDING (or REJECTED) is no longer on the map, nor
    available now, yet every driver's and signed-out live map went on showing it online
    and its plugs free; accepted again, it came back to none of them. Its operators and
    admins see it either way, and hear nothing of it."""
    async with running_service(tmp_path, public_map=True) as service:
        admin = await service.token("admin")
        public = [await GraphQLWS.open(service.ws_url, await service.token("driver")),
                  await GraphQLWS.open(service.ws_url)]
        staff = [await GraphQLWS.open(service.ws_url, await service.token("op")),
                 await GraphQLWS.open(service.ws_url, admin)]
        station_id = to_global_id("station", service.central.stations["CP-1"].id)
        try:
            for client in (*public, *staff):
                await client.subscribe(SIGHT)
            await service.until_subscribed(4)
            async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD):
                for client in (*public, *staff):
                    await _connections(client, 0.3)
                for registration, online, station in (
                        ("PENDING", False, None), ("ACCEPTED", True, {"cpId": "CP-1"})):
                    assert (await service.gql(EDIT, {"input": {
                        "id": station_id, "registration": registration}}, token=admin)
                    )["updateStation"]["errors"] == []
                    for client in public:
                        assert await _connections(client) == [
                            {"cpId": "CP-1", "stationId": station_id, "online": online,
                             "station": station}]
                    for client in staff:
                        assert await _connections(client, 0.2) == []
        finally:
            for client in (*public, *staff):
                await client.close()


async def test_a_plug_removed_leaves_the_live_map(tmp_path: Path) -> None:
    """QA s25: a plug removed (`removeConnector`) was told to no live map: every driver's
    kept it AVAILABLE and free, a plug to drive to that no longer exists, until the map
    queried again. It is announced UNAVAILABLE and not free now, its `connector` null
    from then on, as a removed station is announced offline."""
    async with running_service(tmp_path, public_map=True) as service:
        anonymous = await GraphQLWS.open(service.ws_url)
        try:
            await anonymous.subscribe("""subscription { connectorStatusChanged {
                cpId connectorId status free connector { connectorId } } }""")
            await service.until_subscribed(1)
            async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
                for connector_id in (1, 2):
                    await cp.status(connector_id, "Available")
                assert await _events(anonymous) == [(1, "AVAILABLE", True),
                                                    (2, "AVAILABLE", True)]
                [plug] = await service.services.ctx.store.find_all(d.Connector, all_of(
                    Eq("cp_id", "CP-1"), Eq("connector_id", 2)))
                removed = (await service.gql(
                    """mutation($input: RemoveConnectorInput!) { removeConnector(
                    input: $input) { errors { code } } }""",
                    {"input": {"id": to_global_id("connector", plug.id)}},
                    token=await service.token("op")))["removeConnector"]
                assert removed == {"errors": []}
                event = (await anonymous.next())["payload"]["data"]["connectorStatusChanged"]
                assert event == {"cpId": "CP-1", "connectorId": 2, "status": "UNAVAILABLE",
                                 "free": False, "connector": None}
                assert await _events(anonymous) == []  # and nothing of plug 1
        finally:
            await anonymous.close()


async def test_what_follows_a_subscribe_on_its_socket_runs_once_it_is_registered(
        service: Running) -> None:
    """The live map's recipe (README): subscribe, then query. A subscribe is not
    acknowledged, so a client cannot know when it is registered; what it sends next on
    the same socket (a query, a mutation) runs only once it is, so nothing that
    operation sees or does can be missed by the subscription. Not so for a request over
    HTTP, which may run before the socket has even been acknowledged."""
    op = await GraphQLWS.open(service.ws_url, await service.token("op"))
    try:
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD,
                             charge_point=ReservesWithoutSayingSo) as cp:
            for connector_id in (1, 2):
                await cp.status(connector_id, "Available")
            expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            watching = await op.subscribe(MAP)
            # At once, without waiting for the server to register the subscription.
            reserving = await op.subscribe(RESERVE, {"input": {
                "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OTHER",
                "expiryDate": expiry}})
            got: dict[str, list[Any]] = {watching: [], reserving: []}
            while not got[watching] or not got[reserving]:
                message = await op.next()
                if message["type"] == "next":
                    got[message["id"]].append(message["payload"]["data"])
            assert got[reserving][0]["reserveNow"]["errors"] == []
            assert got[watching][0]["connectorStatusChanged"] == {
                "cpId": "CP-1", "connectorId": 1, "status": "AVAILABLE", "free": False}
    finally:
        await op.close()


GONE = """subscription { stationConnectionChanged { cpId online station { cpId } } }"""
PLUGS_OF = """subscription($f: StationEventFilter) { connectorStatusChanged(filter: $f) {
  cpId connectorId status free connector { connectorId } } }"""
REMOVE_STATION = """mutation($input: RemoveStationInput!) { removeStation(input: $input) {
  errors { code } } }"""


async def _until_told_of(client: GraphQLWS, subscriptions: dict[str, str], cp_id: str,
                         plugs: int) -> dict[str, list[dict[str, Any]]]:
    """What each of ``client``'s subscriptions (id: field) told, until the one of
    stations told ``cp_id``'s event and the one of plugs its ``plugs`` events (each
    read bounded by ``next``'s timeout)."""
    got: dict[str, list[dict[str, Any]]] = {sub: [] for sub in subscriptions}

    def told(sub: str) -> int:
        return sum(event["cpId"] == cp_id for event in got[sub])

    wanted = {sub: 1 if field == "stationConnectionChanged" else plugs
              for sub, field in subscriptions.items()}
    for _ in range(50):
        if all(told(sub) >= n for sub, n in wanted.items()):
            return got
        try:
            message = await client.next()
        except TimeoutError:
            raise AssertionError(f"{cp_id} never told: {got}") from None
        got[message["id"]].append(message["payload"]["data"][subscriptions[message["id"]]])
    raise AssertionError(f"{cp_id} never told: {got}")


async def test_a_station_removed_while_its_charger_is_offline_leaves_the_live_maps(
        tmp_path: Path) -> None:
    """QA s30: removing a station whose charger was offline (disconnected, or never
    connected) told no live map anything: every map that had it (its operator's, every
    driver's, the signed-out one) kept the station and its plugs, as last reported,
    until it queried again. It is told offline, its `station` null, and each plug
    UNAVAILABLE and not free, its `connector` null, as a station removed while online
    and a plug removed are; to whoever saw it, not to another company's operator. That
    one's own station, never connected, removed after it, is the first thing they hear
    (and what the public maps hear last)."""
    async with running_service(tmp_path, public_map=True) as service:
        services = service.services
        other = service.central.users["op_other"]
        theirs, _ = await services.stations.create_station(
            SYSTEM, cp_id="CP-THEIRS", name="CP-THEIRS", company_id=other.company_id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150)])
        # CP-1 reports its plugs, then goes: offline, its plugs AVAILABLE on every map.
        bus = services.ctx.bus
        assert isinstance(bus, MemoryEventBus)  # the in-process one, by default
        heard = bus.subscribe([StationConnectionChanged.topic])
        try:
            async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
                for connector_id in (1, 2):
                    await cp.status(connector_id, "Available")
            for _ in range(2):  # online, then offline: published before the maps open
                went = await asyncio.wait_for(anext(heard), 5)
            assert isinstance(went, StationConnectionChanged) and not went.online
        finally:
            await heard.aclose()

        clients = {name: await GraphQLWS.open(service.ws_url, await service.token(name))
                   for name in ("op", "driver", "op_other")}
        clients["anonymous"] = await GraphQLWS.open(service.ws_url)
        try:
            subscriptions: dict[str, dict[str, str]] = {}
            for name, client in clients.items():
                subscriptions[name] = {
                    await client.subscribe(GONE): "stationConnectionChanged",
                    await client.subscribe(PLUGS_OF, {"f": {"cpIds": ["CP-1", "CP-THEIRS"]}}):
                        "connectorStatusChanged"}
            await service.until_subscribed(2 * len(clients))
            for cp_id, remover in (("CP-1", "op"), ("CP-THEIRS", "op_other")):
                station = service.central.stations.get(cp_id, theirs)
                assert (await service.gql(REMOVE_STATION, {"input": {
                    "id": to_global_id("station", station.id)}},
                    token=await service.token(remover)))["removeStation"] == {"errors": []}

            gone = [{"cpId": "CP-1", "online": False, "station": None}]
            plugs_gone = [{"cpId": "CP-1", "connectorId": n, "status": "UNAVAILABLE",
                           "free": False, "connector": None} for n in (1, 2)]
            for name, client in clients.items():
                # Its operator does not see CP-THEIRS: read until CP-1's removal.
                got = await _until_told_of(client, subscriptions[name], *(
                    ("CP-1", 2) if name == "op" else ("CP-THEIRS", 1)))
                of_cp1 = [[e for e in events if e["cpId"] == "CP-1"]
                          for events in got.values()]
                assert of_cp1 == ([[], []] if name == "op_other" else [gone, plugs_gone]), \
                    name
        finally:
            for client in clients.values():
                await client.close()


async def _until_free(client: GraphQLWS, connector_id: int, free: bool
                      ) -> list[tuple[int, str, bool]]:
    """The feed's events up to the first telling ``connector_id`` ``free`` (bounded)."""
    got = []
    for _ in range(20):
        event = (await client.next(timeout=10))["payload"]["data"]["connectorStatusChanged"]
        got.append((event["connectorId"], event["status"], event["free"]))
        if got[-1][0] == connector_id and got[-1][2] is free:
            return got
    raise AssertionError(f"never told connector {connector_id} free={free}: {got}")


@contextlib.asynccontextmanager
async def _reserved_on_the_map(tmp_path: Path, instances: str) -> AsyncIterator[
        tuple[Running, GraphQLWS, Any, str, dict[str, Any]]]:
    """CP-1's plug 1 reserved for an hour (TAG-OTHER) and heard RESERVED on the map by an
    operator subscribed on the asking instance; the charger on the holding one (the same
    for "one", A and B for "two"). Yields the asker, the map's client, the charger, the
    operator's token and the reservation."""
    async with contextlib.AsyncExitStack() as stack:
        if instances == "one":
            holder = asker = await stack.enter_async_context(running_service(tmp_path))
        else:
            holder, asker = await stack.enter_async_context(two_instances(tmp_path))
        op = await asker.token("op")
        client = await GraphQLWS.open(asker.ws_url, token=op)
        stack.push_async_callback(client.close)
        await client.subscribe(MAP)
        await asker.until_subscribed(1)
        cp = await stack.enter_async_context(connected(
            holder.ocpp_url, "CP-1", password=STATION_PASSWORD))
        await cp.status(1, "Available")
        await _until_free(client, 1, True)
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        reserved = (await asker.gql(RESERVE, {"input": {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OTHER", "expiryDate": expiry}},
            token=op))["reserveNow"]["reservation"]
        assert reserved["state"] == "ACTIVE"
        taken = await _until_free(client, 1, False)
        while taken[-1][1] != "RESERVED":  # the charger's report follows its answer
            taken = await _until_free(client, 1, False)
        yield asker, client, cp, op, reserved


@pytest.mark.parametrize("instances", ["one", "two"])
async def test_a_cancelled_reservation_is_one_event_of_its_plug_free(
        tmp_path: Path, instances: str) -> None:
    """QA s32: cancelling a reservation on a charger that reports Reserved told the map
    AVAILABLE with free false, then AVAILABLE with free true: the charger reports the
    plug Available as it answers the cancel, before the answer is recorded, so its
    report was announced while the reservation still held the plug. The reservation's
    end announces it, once, free; across instances too (the charger on A, the cancel
    and the subscriber on B)."""
    async with _reserved_on_the_map(tmp_path, instances) as (asker, client, cp, op, reserved):
        cancelled = (await asker.gql(CANCEL, {"input": {
            "cpId": "CP-1", "reservationId": reserved["reservationId"]}}, token=op))
        assert cancelled["cancelReservation"]["status"] == "ACCEPTED", cancelled
        assert await _until_free(client, 1, True) == [(1, "AVAILABLE", True)]
        # Nothing after it says otherwise: told by a later report of another plug.
        await cp.status(2, "Preparing")
        later = await _until_free(client, 2, False)
        assert all(event == (1, "AVAILABLE", True) for event in later[:-1]), later


@pytest.mark.parametrize("instances", ["one", "two"])
async def test_a_reservation_its_charger_drops_unasked_is_heard_at_once(
        tmp_path: Path, instances: str) -> None:
    """Review r32-e: a charger that lets a reservation go with no cancel sent (a reboot,
    its own clock) and reports the plug Available was held back for the reservation's
    end, the map showing it RESERVED for up to the reservation's hour while queries said
    AVAILABLE. Only a cancel in flight holds the report back
    (``test_a_cancelled_reservation_is_one_event_of_its_plug_free``): this one is told
    at once, AVAILABLE and not free (the reservation still holds it here); across
    instances too (the charger on A, the reservation and the subscriber on B)."""
    async with _reserved_on_the_map(tmp_path, instances) as (_, client, cp, _, _):
        await cp.status(1, "Available")  # the charger dropped it on its own
        # Told by a later report of another plug: whatever came before it.
        await cp.status(2, "Preparing")
        later = await _until_free(client, 2, False)
        assert later[:-1] == [(1, "AVAILABLE", False)], later
