"""Removing a station: its operator keeps the books, its charger is hung up on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import Eq, In, all_of
from domain.services import ConnectorSpec
from graph.ids import to_global_id
from ocpp_bridge.handler import CLOSE_UNKNOWN_STATION
from ocpp_bridge.simulator import basic_auth, connected
from pubsub.memory import MemoryEventBus
from tests.helpers import all_taken, soon, until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_instances import second_instance

BOOKS = """{ sessions(first: 10) { nodes { transactionId cpId station { id }
    user { name } vehicle { licensePlate } cost { amountMinor } } }
  payments(first: 10) { nodes { amount { amountMinor currency } session { transactionId } } }
}"""


async def test_operator_keeps_the_books_of_a_removed_station(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        cp.connectors[1].power_w = 11_000
        await cp.meter_values(1, seconds=3600)  # the meter moves on an hour at once
        await cp.stop_transaction(1)
    before = await central.gql(BOOKS, as_user="op")
    [session] = before["sessions"]["nodes"]
    assert session["transactionId"] == tx and session["user"] == {"name": "driver"}
    assert len(before["payments"]["nodes"]) == 1

    station_id = to_global_id("station", central.stations["CP-1"].id)
    removed = await central.gql("""mutation($id: ID!) { removeStation(input: {id: $id}) {
        errors { code } } }""", {"id": station_id}, as_user="op")
    assert removed["removeStation"]["errors"] == []

    after = await central.gql(BOOKS, as_user="op")
    [kept] = after["sessions"]["nodes"]
    assert kept == {**session, "station": None}  # the station itself is gone
    assert after["payments"]["nodes"] == before["payments"]["nodes"]
    assert (await central.gql(BOOKS, as_user="op_other"))["sessions"]["nodes"] == []
    driver = await central.gql(BOOKS, as_user="driver")
    assert [s["transactionId"] for s in driver["sessions"]["nodes"]] == [tx]

    # The books are the company's, not the person's: an operator moved to another company
    # leaves them behind, though the station was theirs.
    other_company = central.users["op_other"].company_id
    await central.services.accounts.update_user(
        SYSTEM, central.users["op"].id, company_id=other_company)
    moved = await central.gql(BOOKS, as_user="op")
    assert moved["sessions"]["nodes"] == [] and moved["payments"]["nodes"] == []


REMOVE = """mutation($id: ID!) { removeStation(input: {id: $id}) { errors { code } } }"""


async def booted_charger(url: str) -> ClientConnection:
    """CP-1 connected to ``url`` and answered once (so its connection is recorded)."""
    ws = await connect(f"{url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                       additional_headers=basic_auth("CP-1", STATION_PASSWORD))
    await ws.send('[2, "b", "Heartbeat", {}]')
    assert str(await asyncio.wait_for(ws.recv(), 5)).startswith("[3")
    return ws


async def remove_cp1(central: Central) -> None:
    station_id = to_global_id("station", central.stations["CP-1"].id)
    removed = await central.gql(REMOVE, {"id": station_id}, as_user="op")
    assert removed["removeStation"]["errors"] == []


async def hung_up_as_unknown(ws: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    # By reason too: a password changed is closed with the same code.
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (CLOSE_UNKNOWN_STATION,
                                                                  "unknown charge point")


async def arrival_hung_up_as_unknown(central: Central) -> None:
    """CP-1 arrives with its password, passes the handshake and is hung up as an unknown
    charge point without a word from it (its station gone, or another, by ``connect``)."""
    ws = await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                       additional_headers=basic_auth("CP-1", STATION_PASSWORD))
    try:
        await hung_up_as_unknown(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("frame", [
    '[2, "h", "Heartbeat", {}]',
    '[2, "h", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", '
    '"status": "Available"}]',  # the connector check meets the missing station first
])
async def test_the_charger_of_a_removed_station_is_hung_up_on(central: Central,
                                                              frame: str) -> None:
    ws = await booted_charger(central.url)
    try:
        await remove_cp1(central)
        await ws.send(frame)
        refused = str(await asyncio.wait_for(ws.recv(), 5))
        assert '"PropertyConstraintViolation"' in refused and '"h"' in refused
        await hung_up_as_unknown(ws)
    finally:
        await ws.close()
    with pytest.raises(InvalidStatus) as again:
        await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                      additional_headers=basic_auth("CP-1", STATION_PASSWORD))
    assert again.value.response.status_code == 401  # unknown now: as a wrong password


async def test_the_instance_holding_the_charger_hangs_up_when_its_station_is_removed(
        tmp_path: Path) -> None:
    """With the event bus, the charger is hung up on at once, without sending anything,
    by the instance it is connected to, though the removal came through another."""
    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    try:
        async with second_instance(central, bus) as (_, b_url):
            ws = await booted_charger(b_url)
            try:
                await remove_cp1(central)
                await hung_up_as_unknown(ws)
            finally:
                await ws.close()
    finally:
        await stop_central(central)
        await bus.close()


END = """mutation($i: EndSessionInput!) { endSession(input: $i) {
    session { state stopReason energyKwh endTime cost { amountMinor } }
    errors { field code } } }"""


async def test_a_session_its_charger_never_stops_can_be_ended(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        cp.connectors[1].power_w = 11_000
        await cp.meter_values(1, seconds=3600)
    # The charger went away for good: its session stays ACTIVE and blocks the removal.
    session = await central.session(tx)
    assert session is not None and session.state.value == "ACTIVE"
    sid = to_global_id("session", session.id)
    station_id = to_global_id("station", central.stations["CP-1"].id)
    remove = """mutation($id: ID!) { removeStation(input: {id: $id}) { errors { code } } }"""
    assert (await central.gql(remove, {"id": station_id}, as_user="op")
            )["removeStation"]["errors"] == [{"code": "IN_USE"}]

    async def end(who: str, **extra: str) -> dict:
        data = await central.gql(END, {"i": {"id": sid, **extra}}, as_user=who)
        return data["endSession"]  # type: ignore[no-any-return]

    assert (await end("driver"))["errors"] == [{"field": None, "code": "FORBIDDEN"}]
    assert (await end("op_other"))["errors"] == [{"field": "id", "code": "NOT_FOUND"}]
    assert (await end("op", endTime="2020-01-01T00:00:00Z"))["errors"] == [
        {"field": "endTime", "code": "OUT_OF_RANGE"}]
    ended = await end("op")
    assert ended["errors"] == []
    assert ended["session"]["state"] == "COMPLETED"
    assert ended["session"]["stopReason"] == "OTHER"
    assert abs(ended["session"]["energyKwh"] - 11.0) < 0.002  # as last metered (Wh rounding)
    assert ended["session"]["cost"] == {"amountMinor": 440}  # 11 kWh at 0.40 EUR
    assert (await end("op"))["errors"] == [{"field": "id", "code": "INVALID_STATE"}]
    assert await central.store.count(d.Payment, Eq("session_id", session.id)) == 1
    assert (await central.gql(remove, {"id": station_id}, as_user="op")
            )["removeStation"]["errors"] == []


async def test_a_session_started_on_a_clock_ahead_of_ours_can_be_ended(central: Central
                                                                       ) -> None:
    ahead = datetime.now(UTC) + timedelta(hours=2)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK", timestamp=ahead.isoformat())
        # One odd report later must not carry the end (and the price) to 2150.
        await cp.call(call.StatusNotification(connector_id=2, error_code="NoError",
                                              status="Available",
                                              timestamp="2150-01-01T00:00:00Z"))
    session = await central.session(tx)
    assert session is not None
    data = await central.gql(END, {"i": {"id": to_global_id("session", session.id)}},
                             as_user="op")
    assert data["endSession"]["errors"] == []
    ended = await central.session(tx)
    assert ended is not None and ended.end_time is not None
    # "Now" on the charger's clock: the session lasted the seconds it did, not zero or less.
    assert timedelta(0) < ended.end_time - ended.start_time < timedelta(minutes=1)


async def test_a_session_live_updates_stay_with_its_books_when_the_station_moves(
        tmp_path: Path) -> None:
    """Handed to another company mid-session, a station's running session keeps
    reporting to the operator who will bill it, as its reads do, and never to the new
    one (who cannot read it)."""
    from domain.events import SessionChanged
    from domain.policy import Viewer

    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    events = bus.subscribe(["session"])
    op, op_other = Viewer.of(central.users["op"]), Viewer.of(central.users["op_other"])
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await cp.start_transaction(1, "TAG-OK")
            await central.services.stations.update_station(
                SYSTEM, central.stations["CP-1"].id,
                company_id=central.users["op_other"].company_id,
                owner_id=central.users["op_other"].id)
            cp.connectors[1].power_w = 11_000
            await cp.meter_values(1, seconds=600)
            await cp.stop_transaction(1)
        seen: list[SessionChanged] = []
        while len(seen) < 3:
            event = await asyncio.wait_for(anext(events), 5)
            if isinstance(event, SessionChanged) and event.change in (
                    "STARTED", "UPDATED", "ENDED") and event.change not in [
                    e.change for e in seen]:
                seen.append(event)
        policy = central.services.policy
        for event in seen:
            assert policy.sees_event(op, event), event.change
            assert not policy.sees_event(op_other, event), event.change
        ops = (await central.gql("{ sessions(first: 5) { totalCount } }", as_user="op"),
               await central.gql("{ sessions(first: 5) { totalCount } }", as_user="op_other"))
        assert [o["sessions"]["totalCount"] for o in ops] == [1, 0]
    finally:
        await events.aclose()
        await stop_central(central)
        await bus.close()


async def test_a_station_handed_over_mid_session_is_billed_as_its_books_agreed(
        central: Central) -> None:
    """Priced with the tariff of the company whose books the session is in (in force at
    its start), ended by that company's operator, and counted in that company's
    analytics, after the station went to another company with a dearer tariff."""
    from decimal import Decimal

    from domain.clock import utcnow
    from domain.services.analytics import Scope
    from domain.timebuckets import Bucket

    other = central.users["op_other"]
    await central.services.tariffs.set_tariff(
        SYSTEM, company_id=other.company_id, price_per_kwh=Decimal("2.00"), currency="USD",
        valid_from=utcnow() - timedelta(days=2))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        ended_by_charger, _ = await cp.start_transaction(1, "TAG-OK")
        lost, _ = await cp.start_transaction(2, "TAG-OK")
        await central.services.stations.update_station(
            SYSTEM, central.stations["CP-1"].id, company_id=other.company_id,
            owner_id=other.id)
        cp.connectors[1].power_w = 10_000
        await cp.meter_values(1, seconds=3600)
        await cp.stop_transaction(1)
    stopped = await central.session(ended_by_charger)
    assert stopped is not None and stopped.energy_wh == 10_000
    assert (stopped.cost_minor, stopped.currency) == (400, "EUR")  # 10 kWh at 0.40 EUR
    left_open = await central.session(lost)
    assert left_open is not None
    session_id = to_global_id("session", left_open.id)
    end = """mutation($id: ID!) { endSession(input: {id: $id}) {
        session { state cost { currency } } errors { code } } }"""
    refused = await central.gql(end, {"id": session_id}, as_user="op_other")
    assert [e["code"] for e in refused["endSession"]["errors"]] == ["NOT_FOUND"]
    ended = await central.gql(end, {"id": session_id}, as_user="op")
    assert ended["endSession"]["errors"] == []
    assert ended["endSession"]["session"]["state"] == "COMPLETED"
    analytics = central.services.analytics
    volt, moved_to = central.users["op"].company_id, other.company_id
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for company, sessions in ((volt, 2), (moved_to, 0)):
        trend = await analytics.energy_trend(SYSTEM, Scope(company_id=company), day,
                                             day + timedelta(days=1), Bucket.DAY, "UTC", "EUR")
        assert sum(b.sessions for b in trend) == sessions, company
        assert sum(b.revenue_minor for b in trend) == (400 if sessions else 0), company


async def test_a_session_whose_station_was_removed_under_it_can_still_be_ended(
        central: Central) -> None:
    """A start that raced the station's removal leaves an ACTIVE session on a station that
    is gone: whoever keeps its books ends and bills it, freeing the driver's card."""
    from domain.clock import utcnow
    from domain.ports import Delete

    charging = central.services.charging
    tx, _ = await charging.start_transaction("CP-1", 1, "TAG-OK", 0, utcnow())
    [station] = await central.store.get_many(d.Station, [central.stations["CP-1"].id])
    assert station is not None
    await central.store.write([Delete(station)], [])  # removed as if no session were open
    session = await central.session(tx)
    assert session is not None
    end = """mutation($id: ID!) { endSession(input: {id: $id}) {
        session { state } errors { code } } }"""
    ended = await central.gql(end, {"id": to_global_id("session", session.id)}, as_user="op")
    assert ended["endSession"] == {"session": {"state": "COMPLETED"}, "errors": []}
    authorized = await charging.authorize("CP-OPEN", "TAG-OK")
    assert authorized.status == "Accepted"  # no longer ConcurrentTx


async def test_a_removal_stands_and_hangs_up_whatever_its_notice_cleanup_meets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its offline notices are deleted after the removal's write: a store error there
    answered the removal as failed although it stood, and its charger was never told to
    go (review s18)."""
    from domain.errors import StoreUnavailable

    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    real = central.store.find_all

    async def failing(kind: object, *args: object, **kwargs: object) -> object:
        if kind is d.OfflineNotice:
            raise StoreUnavailable("disk full", reason="disk full")
        return await real(kind, *args, **kwargs)  # type: ignore[arg-type]

    try:
        ws = await booted_charger(central.url)
        monkeypatch.setattr(central.store, "find_all", failing)
        removed = await central.services.stations.remove_station(
            SYSTEM, central.stations["CP-1"].id)
        monkeypatch.setattr(central.store, "find_all", real)
        assert removed.cp_id == "CP-1"
        await hung_up_as_unknown(ws)
        assert await central.store.find_one(d.Station, Eq("cp_id", "CP-1")) is None
    finally:
        await stop_central(central)
        await bus.close()


REMOVE_CONNECTOR = """mutation($id: ID!) { removeConnector(input: {id: $id}) {
    errors { code } } }"""


async def reserve_plug_2(central: Central) -> int:
    """A live reservation of CP-1's connector 2 for TAG-OK; its reservationId."""
    soon = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    held = await central.gql("""mutation($input: ReserveNowInput!) {
        reserveNow(input: $input) { errors { code } reservation { reservationId } } }""",
                             {"input": {"cpId": "CP-1", "connectorId": 2,
                                        "idTag": "TAG-OK", "expiryDate": soon}},
                             as_user="op")
    assert held["reserveNow"]["errors"] == [], held
    return int(held["reserveNow"]["reservation"]["reservationId"])


async def remove_plug_2_or_cp1(central: Central, what: str) -> dict[str, Any]:
    """The answer to removing CP-1's connector 2 (``what`` "connector") or CP-1."""
    if what == "connector":
        connector = await central.store.find_one(d.Connector, all_of(
            Eq("cp_id", "CP-1"), Eq("connector_id", 2)))
        assert connector is not None
        return dict((await central.gql(REMOVE_CONNECTOR, {
            "id": to_global_id("connector", connector.id)}, as_user="op"))["removeConnector"])
    return dict((await central.gql(REMOVE, {
        "id": to_global_id("station", central.stations["CP-1"].id)}, as_user="op")
                 )["removeStation"])


@pytest.mark.parametrize("what", ["connector", "station"])
async def test_a_removal_cancels_the_reservations_it_ends_at_the_charger(
        central: Central, what: str) -> None:
    """QA s20: removeConnector stored its live reservation CANCELLED and told the charger
    nothing: it kept the plug reserved for the old card until the reservation expired,
    while ChargeGraph showed none."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        number = await reserve_plug_2(central)
        removed = await remove_plug_2_or_cp1(central, what)
        assert removed["errors"] == [], removed
        assert ("CancelReservation", {"reservation_id": number}) in cp.received
    [reservation] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert reservation.state is d.ReservationState.CANCELLED


async def test_a_removed_stations_tariff_is_not_replaced_by_its_companys(
        central: Central) -> None:
    """QA s20: removeStation deleted the station's tariffs, and its sessions' ``tariff``
    then showed the company's (2.00/kWh, no fee) beside a cost billed at the station's
    (1.00/kWh + 0.30), and the receipt's lines were gone. The tariffs are kept as price
    history: the receipt stays; the tariff itself is an admin's to read (no station
    names whose it is), never another standing in for it; the price list offers no
    station that is gone. Its local list is forgotten with it."""
    from decimal import Decimal

    from domain.clock import utcnow
    from tests.ocpp.test_card_withdrawal import send_full_list

    station = central.stations["CP-1"]
    for owner in ({"station_id": station.id},
                  {"company_id": central.users["op"].company_id}):
        await central.services.tariffs.set_tariff(
            SYSTEM, **owner, price_per_kwh=Decimal("1.00" if owner.get("station_id")
                                                   else "2.00"),
            session_fee=Decimal("0.30" if owner.get("station_id") else "0"),
            currency="EUR", valid_from=utcnow() - timedelta(days=1))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK")
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        cp.connectors[1].power_w = 2_000
        await cp.meter_values(1, seconds=3600)
        await cp.stop_transaction(1)
    session = await central.session(tx)
    assert session is not None
    priced = """query($id: ID!) { node(id: $id) { ... on Session {
        cost { amountMinor } costBreakdown { energy fee }
        tariff { pricePerKwh sessionFee } } } }"""
    gid = {"id": to_global_id("session", session.id)}
    before = await central.gql(priced, gid, as_user="op")
    assert before["node"]["tariff"] == {"pricePerKwh": "1.00", "sessionFee": "0.30"}
    await remove_cp1(central)
    for who in ("op", "driver", "admin"):
        after = (await central.gql(priced, gid, as_user=who))["node"]
        assert after["cost"] == before["node"]["cost"], who
        assert after["costBreakdown"] == before["node"]["costBreakdown"], who
        # The operator whose books the session is in still sees the price list that
        # priced it (as after a handover); the driver sees only what is in their scope.
        assert after["tariff"] == (None if who == "driver" else before["node"]["tariff"]), \
            who
    listed = "{ tariffs(first: 50) { nodes { pricePerKwh } } }"
    for who in ("driver", "op"):
        prices = (await central.gql(listed, as_user=who))["tariffs"]["nodes"]
        assert {"pricePerKwh": "1.00"} not in prices, who
    assert await central.store.find_all(d.LocalListEntry, Eq("cp_id", "CP-1")) == []
    assert await central.store.find_all(d.LocalList, Eq("cp_id", "CP-1")) == []


class StartDuringCancel:
    """The command gateway, but while the first CancelReservation travels the charger
    starts a transaction (``meanwhile``), as its holder at the plug may."""

    def __init__(self, real: Any, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self.real = real
        self.meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def call(self, cp_id: str, action: str, payload: Any, timeout: float,
                   newest: int | None = None) -> Any:
        if action == "CancelReservation" and self.meanwhile is not None:
            go, self.meanwhile = self.meanwhile, None
            await go()
        return await self.real.call(cp_id, action, payload, timeout, newest)


@pytest.mark.parametrize("what", ["connector", "station"])
async def test_a_start_during_a_removals_cancels_refuses_the_removal(
        central: Central, what: str) -> None:
    """Review s20: the IN_USE check ran before the CancelReservation round trips and
    never again; a session started meanwhile was left ACTIVE on a deleted station or
    plug, holding its driver's card everywhere."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        await reserve_plug_2(central)

        async def start() -> None:  # the holder starts on the reserved plug
            await cp.start_transaction(2, "TAG-OK")
        commands = central.services.commands
        commands.gateway = StartDuringCancel(commands.gateway, start)
        removed = await remove_plug_2_or_cp1(central, what)
        assert removed["errors"] == [{"code": "IN_USE"}], removed
    assert await central.store.find_one(d.Connector, all_of(
        Eq("cp_id", "CP-1"), Eq("connector_id", 2))) is not None


class DeafCharger:
    """A charger's websocket that never answers a close frame (firmware that ignores
    it, or a link that carries only one way): the server's close waits out its timeout
    (10 s) while the socket still delivers what the charger sends."""

    async def open(self, url: str, headers: dict[str, str]) -> None:
        uri = parse_uri(url)
        self._protocol = ClientProtocol(uri, subprotocols=[Subprotocol("ocpp1.6")])
        request = self._protocol.connect()
        for name, value in headers.items():
            request.headers[name] = value
        self._reader, self._writer = await asyncio.open_connection(uri.host, uri.port)
        self._protocol.send_request(request)
        self._writer.write(b"".join(self._protocol.data_to_send()))
        while self._protocol.state is State.CONNECTING:
            self._protocol.receive_data(await asyncio.wait_for(self._reader.read(65536), 5))
        assert self._protocol.state is State.OPEN, self._protocol.handshake_exc
        self._read = b""

    def send(self, text: str) -> None:
        self._protocol.send_text(text.encode())
        self._writer.write(b"".join(self._protocol.data_to_send()))

    async def until_received(self, wanted: bytes) -> None:
        """Reads (not answering anything) until ``wanted`` has arrived."""
        while wanted not in self._read:
            self._read += await asyncio.wait_for(self._reader.read(65536), 5)

    def close(self) -> None:
        self._writer.close()


async def test_a_removed_stations_connection_is_let_go_though_its_close_is_not_answered(
        tmp_path: Path) -> None:
    """The known leftover: a removal hung up on the charger in the background, its
    connection left the charger's until the close was done (a peer that does not
    answer it: the 10 s close timeout). Meanwhile the cpId created again (another
    company's station) had its commands sent to that socket, waiting out the command
    timeout, and the old connection, signed in with the removed station's password,
    reported into the new station."""
    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    charger = DeafCharger()
    try:
        await charger.open(f"{central.url}/CP-1", basic_auth("CP-1", STATION_PASSWORD))
        charger.send('[2, "h", "Heartbeat", {}]')
        await charger.until_received(b'[3,"h"')
        connection = central.gateway.handler_of("CP-1")
        assert connection is not None and connection.heard_at is not None
        heard = connection.heard_at
        await remove_cp1(central)
        await charger.until_received(b"unknown charge point")  # the close frame
        await central.services.stations.create_station(
            SYSTEM, cp_id="CP-1", name="CP-1 again",
            company_id=central.users["op_other"].company_id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50)],
            password="another-password")
        charger.send('[2, "s", "StatusNotification", {"connectorId": 1, '
                      '"errorCode": "GroundFailure", "status": "Faulted"}]')

        async def taken() -> bool:
            return connection.heard_at is not None and connection.heard_at > heard
        await until(taken)
        await asyncio.sleep(0.3)  # what it sets off (a store write) is done by then
        changed = await central.gql("""mutation { changeAvailability(input: {cpId: "CP-1",
            connectorId: 1, type: INOPERATIVE}) { errors { code message } } }""",
            as_user="op_other")
        # No connection is the cpId's: the command went to no socket, so it waited for
        # none (the old one held it for the command timeout or its close), told by the
        # answer, not by a bound on its wall time.
        assert changed["changeAvailability"]["errors"] == [
            {"code": "CHARGER_OFFLINE", "message": "CP-1 is not connected"}]
        plug = await central.store.find_one(d.Connector, Eq("cp_id", "CP-1"))
        assert plug is not None and plug.status is not d.ConnectorStatus.FAULTED
        again = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert again is not None and not again.online
    finally:
        charger.close()
        await stop_central(central)
        await bus.close()


async def test_a_live_map_sees_a_removed_stations_charger_go_offline(tmp_path: Path) -> None:
    """README's live map (subscribe, query, apply the events) showed a station removed
    while its charger was online as online, its plugs available now, until the client
    queried again: the removal hung up on the charger, whose disconnect then found no
    station to record or announce. Its going offline is announced, to whoever saw it
    online (the public map too); and its plugs UNAVAILABLE, not free, as a plug removed
    is (QA s30: a map of plugs alone kept them available)."""
    from domain.events import ConnectorStatusChanged, StationConnectionChanged
    from domain.policy import Viewer

    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    events = bus.subscribe([StationConnectionChanged.topic, ConnectorStatusChanged.topic])
    station = central.stations["CP-1"]
    try:
        ws = await booted_charger(central.url)
        try:
            online = await asyncio.wait_for(anext(events), 5)
            assert isinstance(online, StationConnectionChanged) and online.online
            await remove_cp1(central)
            offline = await asyncio.wait_for(anext(events), 5)
            assert isinstance(offline, StationConnectionChanged)
            assert (offline.station_id, offline.online) == (station.id, False)
            assert offline.at >= online.at
            assert not offline.removed_offline  # a disconnect: its charger was hung up on
            plugs: list[ConnectorStatusChanged] = []
            for _ in range(2):
                plug = await asyncio.wait_for(anext(events), 5)
                assert isinstance(plug, ConnectorStatusChanged)
                plugs.append(plug)
            assert [(p.connector_id, p.status, p.free) for p in plugs] == [
                (1, "Unavailable", False), (2, "Unavailable", False)]
            policy = central.services.policy
            for event in (offline, *plugs):
                for viewer in ("driver", "op"):
                    assert policy.sees_event(Viewer.of(central.users[viewer]), event)
                assert not policy.sees_event(Viewer.of(central.users["op_other"]), event)
            await hung_up_as_unknown(ws)
        finally:
            await ws.close()
    finally:
        await events.aclose()
        await stop_central(central)
        await bus.close()


async def test_a_charger_connecting_during_a_removal_is_announced_offline(
        tmp_path: Path) -> None:
    """Review s25: whether a removal announces its station offline was decided from the
    station as read before its reservations were cancelled at the chargers (round trips
    of up to 30 s each). A charger connecting meanwhile was announced online, hung up on
    as unknown, and its close recorded nothing: a live map kept the removed station
    online, its plugs available now, for good. Decided from the station as deleted."""
    from domain.events import StationConnectionChanged

    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    events = bus.subscribe([StationConnectionChanged.topic])
    stations = central.services.stations
    original = stations._cancel_at_chargers
    sockets: list[ClientConnection] = []

    async def charger_connects_meanwhile(*args: Any, **kwargs: Any) -> None:
        if sockets:  # the removal run again: the chargers were asked already
            return await original(*args, **kwargs)
        sockets.append(await booted_charger(central.url))

        async def recorded() -> bool:
            s = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
            return s is not None and s.online
        await until(recorded)
        return await original(*args, **kwargs)

    stations._cancel_at_chargers = charger_connects_meanwhile  # type: ignore[method-assign]
    try:
        await remove_cp1(central)
        online = await asyncio.wait_for(anext(events), 5)
        assert isinstance(online, StationConnectionChanged) and online.online
        assert await central.store.find_one(d.Station, Eq("cp_id", "CP-1")) is None
        try:
            offline = await asyncio.wait_for(anext(events), 5)
        except TimeoutError:
            raise AssertionError("the removed station was never announced offline") from None
        assert isinstance(offline, StationConnectionChanged) and not offline.online
        for ws in sockets:
            await hung_up_as_unknown(ws)
    finally:
        for ws in sockets:
            await ws.close()
        await events.aclose()
        await stop_central(central)
        await bus.close()


async def test_a_late_removal_leaves_the_connection_of_the_station_created_again(
        tmp_path: Path) -> None:
    """Review s25: a removal is matched to a connection by the station it signed in as,
    not by cpId. Its StationRemoved delivered late (an instance lagging) after the cpId
    was created again and the new station's charger connected took that legitimate
    connection for the removed station's: refused its messages, let it go and hung up,
    the new station left online with no connection."""
    from domain.events import StationRemoved
    from domain.services.base import owned_by

    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    removed = central.stations["CP-1"]
    ws = None
    try:
        await central.services.stations.remove_station(SYSTEM, removed.id)
        await central.services.stations.create_station(
            SYSTEM, cp_id="CP-1", name="CP-1 again",
            company_id=central.users["op_other"].company_id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50)],
            password=STATION_PASSWORD)
        ws = await booted_charger(central.url)
        connection = central.gateway.handler_of("CP-1")
        assert connection is not None
        await bus.publish(StationRemoved(**owned_by(removed)))  # late, as delivered
        # Taken by every subscriber: the OCPP server's watcher acts on a removal in the
        # step that takes it (nothing awaited), so it has been judged.
        await soon(lambda: all_taken(bus))
        assert central.gateway.handler_of("CP-1") is connection
        await ws.send('[2, "h2", "Heartbeat", {}]')
        assert str(await asyncio.wait_for(ws.recv(), 5)).startswith('[3,"h2"')
        again = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert again is not None and again.id != removed.id and again.online
        # The removal of the station it signed in as still hangs it up.
        await central.services.stations.remove_station(SYSTEM, again.id)
        await hung_up_as_unknown(ws)
    finally:
        if ws is not None:
            await ws.close()
        await stop_central(central)
        await bus.close()


async def test_a_charger_whose_station_goes_between_its_handshake_and_its_connection_is_closed(
        central: Central, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Session 29: a station removed after its charger's handshake let it in and before
    its connection was recorded (its ``StationRemoved`` found no connection of it to hang
    up). ``connect`` found no station and recorded nothing, and the socket was kept as
    the charger's anyway: in the gateway, taking commands, online to nobody until its
    first message met the missing station. It is closed at once as an unknown charge
    point, its arrival and its close recording nothing."""
    charging = central.services.charging
    draw = charging.draw_connection
    removed = central.stations["CP-1"]

    async def removed_meanwhile() -> int:
        await central.services.stations.remove_station(SYSTEM, removed.id)
        return await draw()

    monkeypatch.setattr(charging, "draw_connection", removed_meanwhile)
    await arrival_hung_up_as_unknown(central)
    assert central.gateway.handler_of("CP-1") is None
    assert await central.store.find_all(d.ConnectionEvent,
                                        Eq("station_id", removed.id)) == []
    assert "CP-1: its station is gone since it signed in" in caplog.text


async def test_a_charger_whose_station_is_created_again_between_its_handshake_and_its_connection_is_closed(  # noqa: E501
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 30: the station removed and created again under its cpId, with the same
    password, after the charger's handshake signed it in as the removed one and before
    its connection was recorded. ``connect`` looked the station up by cpId and recorded
    the connection on the new one (a password check after it closes it only when the
    hashes differ, and never for a station with none). Bound to the station it signed
    in as, it is closed as an unknown charge point, nothing recorded on either."""
    charging = central.services.charging
    draw = charging.draw_connection
    removed = central.stations["CP-1"]
    again: list[d.Station] = []

    async def created_again_meanwhile() -> int:
        await central.services.stations.remove_station(SYSTEM, removed.id)
        station, _ = await central.services.stations.create_station(
            SYSTEM, cp_id="CP-1", name="CP-1 again",
            company_id=central.users["op_other"].company_id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50)],
            password=STATION_PASSWORD)
        again.append(station)
        return await draw()

    monkeypatch.setattr(charging, "draw_connection", created_again_meanwhile)
    await arrival_hung_up_as_unknown(central)
    [new] = again
    assert new.id != removed.id
    assert central.gateway.handler_of("CP-1") is None
    assert await central.store.find_all(d.ConnectionEvent, In(
        "station_id", (removed.id, new.id))) == []
    [stored] = await central.store.get_many(d.Station, [new.id])
    assert stored is not None and not stored.online and stored.connection is None
