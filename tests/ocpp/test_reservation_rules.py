"""Reservations against what the records show of their plugs and cards (QA s25): a plug
charging a session, a reservation cancelled while its charger is offline, a card that
expires while it holds one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action
from websockets.exceptions import ConnectionClosedError

from domain import entities as d
from domain.errors import ChargerTimeout
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.query import Eq
from domain.services import ConnectorSpec
from domain.services.base import patch, stamp_new
from domain.services.commands import CommandService
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.helpers import soon as eventually
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_card_withdrawal import block, entry, send_full_list, settled
from tests.ocpp.test_commands import run


@pytest.fixture(params=["direct", "relayed"])
async def central(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Central]:
    """Commands sent directly, and relayed as from another instance (a charger offline
    is then one no instance claims the command for)."""
    c = await start_central(tmp_path / "central.db", relayed=request.param == "relayed")
    await seed(c)
    yield c
    await stop_central(c)


SELECTION = "status reservation { reservationId state } errors { field code message }"


def soon() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def test_a_plug_charging_a_session_is_not_reserved(central: Central) -> None:
    """QA s25: a reserveNow on a plug our records show charging was stored, sent, and
    left to the charger's Occupied (or, at a charger that takes it for the next session,
    answered ACCEPTED for a plug in use). Refused IN_USE before anything is stored or
    sent; "any" connector only once every connector charges; a free plug still is."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.start_transaction(1, "TAG-OTHER")
        busy = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon()}, SELECTION,
                         as_user="driver")
        assert busy["status"] is None and busy["reservation"] is None
        assert [(e["field"], e["code"]) for e in busy["errors"]] == [
            ("connectorId", "IN_USE")]
        assert "charging a session" in busy["errors"][0]["message"]
        assert await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1")) == []
        assert [name for name, _ in cp.received] == []

        await cp.start_transaction(2, "TAG-OK")
        anywhere = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 0,
                                                     "expiryDate": soon(),
                                                     "idTag": "TAG-OTHER"}, SELECTION)
        assert [(e["field"], e["code"]) for e in anywhere["errors"]] == [
            ("connectorId", "IN_USE")]
        assert [name for name, _ in cp.received] == []

        await cp.stop_transaction(1)
        free = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon()}, SELECTION,
                         as_user="driver")
        assert free["errors"] == [] and free["reservation"]["state"] == "ACTIVE", free


async def test_a_reservation_the_charger_refuses_is_audited_as_made_then_rejected(
        central: Central) -> None:
    """Session 29 (a leftover said a refusal was audited as a CREATE and a DELETE): a
    reserveNow is stored PENDING before it is sent (the charger may use it before its
    answer is recorded, and the clash check needs it stored), so the audit log says
    what was: the reservation made (CREATE, PENDING), the command sent and answered,
    and the refusal (UPDATE to REJECTED), the record kept. Nothing is deleted, for each
    refusal a charger gives (Occupied, Faulted, Unavailable)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        plug = cp.connectors[1]
        for status, refusing in (("OCCUPIED", "reservation_id"), ("FAULTED", "error_code"),
                                 ("UNAVAILABLE", "available")):
            saved = getattr(plug, refusing)
            setattr(plug, refusing, {"reservation_id": 99, "error_code": "GroundFailure",
                                     "available": False}[refusing])
            refused = await run(central, "reserveNow", {
                "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
                "expiryDate": soon()}, SELECTION)
            setattr(plug, refusing, saved)
            assert refused["status"] == status, refused
            assert refused["reservation"]["state"] == "REJECTED", refused
            [made] = await central.store.find_all(d.Reservation, Eq(
                "reservation_id", refused["reservation"]["reservationId"]))
            audit = sorted(await central.store.find_all(
                d.AuditEntry, Eq("entity_id", made.id)), key=lambda e: e.at)
            assert [(e.action, (e.after or {}).get("state")) for e in audit] == [
                (d.AuditAction.CREATE, "PENDING"), (d.AuditAction.UPDATE, "REJECTED")]


async def reserved(central: Central) -> int:
    """A driver's reservation of CP-1's plug 2 (its charger connected, taking it):
    ACTIVE, its number."""
    held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                             "expiresAt": soon()}, SELECTION,
                     as_user="driver")
    assert held["reservation"]["state"] == "ACTIVE", held
    return int(held["reservation"]["reservationId"])


async def station_offline(central: Central, cp_id: str) -> None:
    async def offline() -> bool:
        [station] = await central.store.find_all(d.Station, Eq("cp_id", cp_id))
        return not station.online
    await until(offline)


async def test_a_reservation_to_an_offline_charger_leaves_nothing(central: Central) -> None:
    """QA s31: a reserveNow to a charger gone offline answered CHARGER_OFFLINE and kept a
    REJECTED reservation (the driver's list, the audit log, a reservation id), though
    the charger never heard of it and never said no. Nothing stays, as of a remote
    start; back online, the charger is sent only the reservation made then."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
    await station_offline(central, "CP-1")
    refused = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                "expiresAt": soon()}, SELECTION,
                        as_user="driver")
    assert [e["code"] for e in refused["errors"]] == ["CHARGER_OFFLINE"], refused
    assert refused["reservation"] is None and refused["status"] is None
    assert await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1")) == []

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        await back.boot()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiresAt": soon()}, SELECTION,
                         as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        number = held["reservation"]["reservationId"]
        assert [(a, p["reservation_id"]) for a, p in back.received
                if a == "ReserveNow"] == [("ReserveNow", number)]
    [kept] = await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1"))
    assert kept.reservation_id == number and kept.state is d.ReservationState.ACTIVE


@pytest.mark.parametrize("failed", ["before the write", "after the write",
                                    "socket closed under the write"])
async def test_a_reservation_lost_with_its_charger_mid_call_is_kept_pending(
        central: Central, failed: str) -> None:
    """Review s31: a command failing in a way nobody foresaw (not a closed socket: a
    write that broke, say) with its charger gone was ``ChargerOffline``, "never sent",
    though its frame may have gone out: the reservation the charger may hold was
    removed, and its later StartTransaction would name none. The frame handed to the
    socket, it is ``CHARGER_TIMEOUT`` (the charger may have it: PENDING, holding the
    plug); failing before, ``CHARGER_OFFLINE`` and nothing kept. Relayed, the holding
    instance's answer reads the same. So with the socket closing under the write, its
    frame handed over."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        handler = central.gateway.handler_of("CP-1")
        assert handler is not None
        write = handler._send

        async def breaks(message: str) -> None:
            # The charger's connection goes as the write fails (the gateway forgets it,
            # as the server does once the socket is gone).
            if '"ReserveNow"' in message:
                if failed != "before the write":
                    await write(message)
                central.gateway.unregister(handler)
                if failed == "socket closed under the write":
                    # websockets' send waiting for a slow reader's buffer to drain
                    # (review s31: ChargerOffline, the reservation deleted).
                    raise ConnectionClosedError(None, None)
                raise RuntimeError("the transport broke under the write")
            await write(message)

        handler._send = breaks  # type: ignore[method-assign]
        answer = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                   "expiresAt": soon()}, SELECTION,
                           as_user="driver")
        kept = await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1"))
        if failed == "before the write":
            assert [e["code"] for e in answer["errors"]] == ["CHARGER_OFFLINE"], answer
            assert answer["reservation"] is None and kept == []
            assert [a for a, _ in cp.received if a == "ReserveNow"] == []
        else:
            assert [e["code"] for e in answer["errors"]] == ["CHARGER_TIMEOUT"], answer
            assert answer["reservation"]["state"] == "PENDING", answer
            assert [r.state for r in kept] == [d.ReservationState.PENDING]
            number = kept[0].reservation_id
            await eventually(lambda: [(a, p["reservation_id"]) for a, p in cp.received
                                 if a == "ReserveNow"] == [("ReserveNow", number)])


class SlowReserve(SimulatedChargePoint):
    """Takes a ReserveNow and answers it once ``gate`` is set."""

    gate: asyncio.Event | None = None

    @on(Action.reserve_now)
    async def on_reserve_now(self, **fields: Any) -> result.ReserveNow:  # type: ignore[override]
        answer = super().on_reserve_now(**fields)
        if self.gate is not None:
            await self.gate.wait()
        return answer


async def test_a_reservation_whose_holding_instance_stops_mid_call_is_kept_pending(
        tmp_path: Path) -> None:
    """Review s31: the instance holding the charger, stopping while the charger had a
    relayed ReserveNow, answered ``ChargerOffline`` ("never sent"), and the asking
    instance removed the reservation the charger holds. Its outcome is unknown
    (``CHARGER_TIMEOUT``): the reservation stays PENDING, holding the plug."""
    central = await start_central(tmp_path / "central.db", relayed=True)
    await seed(central)
    holder = central.relays[1]  # (the asker, the holder, their bus)
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                             charge_point=SlowReserve) as cp:
            assert isinstance(cp, SlowReserve)
            await cp.boot()
            cp.gate = asyncio.Event()
            asked = asyncio.create_task(run(
                central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                        "expiresAt": soon()}, SELECTION, as_user="driver"))
            await eventually(lambda: any(a == "ReserveNow" for a, _ in cp.received))
            await holder.close()
            answer = await asyncio.wait_for(asked, 30)
            cp.gate.set()
        assert [e["code"] for e in answer["errors"]] == ["CHARGER_TIMEOUT"], answer
        assert answer["reservation"]["state"] == "PENDING", answer
        [kept] = await central.store.find_all(d.Reservation, Eq("cp_id", "CP-1"))
        assert kept.state is d.ReservationState.PENDING
        assert kept.reservation_id == answer["reservation"]["reservationId"]
    finally:
        await stop_central(central)


async def test_a_reservation_cancelled_while_its_charger_is_offline(central: Central
                                                                     ) -> None:
    """QA s25: nobody could end a live reservation while its charger was offline (the
    cancel answered CHARGER_OFFLINE and left it ACTIVE): the driver was kept from
    reserving anywhere else until it expired or the charger came back. It is cancelled
    here (CANCELLED, told as CHARGER_OFFLINE: the charger has not heard), and the charger
    is sent the cancel when it connects again, once (its boot after asks again: nothing
    is owed any more)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        number = await reserved(central)
    await station_offline(central, "CP-1")

    cancel = await run(central, "cancelReservation", {"cpId": "CP-1",
                                                      "reservationId": number},
                       SELECTION, as_user="driver")
    assert cancel["reservation"]["state"] == "CANCELLED", cancel
    assert [e["code"] for e in cancel["errors"]] == ["CHARGER_OFFLINE"]
    assert cancel["errors"][0]["message"] == (
        "CP-1 is not connected: the reservation is cancelled here, and its charger, which "
        "holds the connector until it hears of it, is sent the cancel once it is "
        "connected"), cancel
    [stored] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert stored.state is d.ReservationState.CANCELLED
    assert stored.cancel_owed_since is not None
    # Theirs no more: the driver may reserve again (the charger is still offline).
    again = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                              "expiryDate": soon()}, SELECTION,
                      as_user="driver")
    assert [e["code"] for e in again["errors"]] == ["CHARGER_OFFLINE"], again

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        async def delivered() -> bool:
            [now] = await central.store.find_all(d.Reservation,
                                                 Eq("reservation_id", number))
            return now.cancel_owed_since is None
        await until(delivered)
        assert back.received == [("CancelReservation", {"reservation_id": number})]
        await back.boot()
        await central.services.withdrawal.settled()
        assert back.received == [("CancelReservation", {"reservation_id": number})]
    [after] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert after.state is d.ReservationState.CANCELLED


class DropsOnCancel(SimulatedChargePoint):
    """Drops its socket on receiving a CancelReservation, before carrying it out or
    answering: the frame reached it, nothing came back."""

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int  # type: ignore[override]
                              ) -> result.CancelReservation:
        self.received.append(("CancelReservation", {"reservation_id": reservation_id}))
        self._connection.transport.abort()
        return result.CancelReservation(status="Accepted")  # type: ignore[arg-type]


async def test_a_cancel_whose_charger_drops_mid_call_is_cancelled_and_owed(
        central: Central) -> None:
    """Review s32: a cancel whose charger dropped its socket on receiving it (the frame
    may have reached it: ``CHARGER_TIMEOUT``) left the reservation ACTIVE, no cancel
    owed, since s31 told it from one never sent. The operator asked to cancel: it is
    cancelled here and the cancel owed, as at a charger offline, and sent again when the
    charger comes back (CancelReservation is idempotent on the charger)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=DropsOnCancel) as cp:
        await cp.boot()
        number = await reserved(central)
        cancel = await run(central, "cancelReservation", {"cpId": "CP-1",
                                                          "reservationId": number},
                           SELECTION, as_user="op")
        assert cp.received[-1] == ("CancelReservation", {"reservation_id": number})
    assert [e["code"] for e in cancel["errors"]] == ["CHARGER_TIMEOUT"], cancel
    assert cancel["errors"][0]["message"].startswith(
        "the charger went offline after receiving the command; its outcome is unknown: "
        "the reservation is cancelled here"), cancel
    assert cancel["reservation"]["state"] == "CANCELLED", cancel
    [stored] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert stored.state is d.ReservationState.CANCELLED
    assert stored.cancel_owed_since is not None
    await station_offline(central, "CP-1")

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        async def delivered() -> bool:
            [now] = await central.store.find_all(d.Reservation,
                                                 Eq("reservation_id", number))
            return now.cancel_owed_since is None
        await until(delivered)
        assert back.received == [("CancelReservation", {"reservation_id": number})]
    [after] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert after.state is d.ReservationState.CANCELLED


class SilentOnCancel(SimulatedChargePoint):
    """Takes a CancelReservation and answers it only once ``answer`` is set."""

    answer = asyncio.Event()

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int  # type: ignore[override]
                                    ) -> result.CancelReservation:
        self.received.append(("CancelReservation", {"reservation_id": reservation_id}))
        await self.answer.wait()
        return result.CancelReservation(status="Accepted")  # type: ignore[arg-type]


async def test_a_cancel_lost_to_a_new_connection_says_so_and_is_owed(
        central: Central) -> None:
    """Review r32-b: a ChargerLost is not only a connection's going (a graceful stop, a
    relay's holder gone, a newer connection of the charger): the cancel's answer said
    "CP-1's connection went while it was sent the cancel" of each, the real cause
    dropped. It keeps its cause; the reservation is cancelled here and the cancel owed,
    and sent to the newer connection."""
    SilentOnCancel.answer = asyncio.Event()
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=SilentOnCancel) as cp:
        await cp.boot()
        number = await reserved(central)
        cancelling = asyncio.create_task(run(
            central, "cancelReservation", {"cpId": "CP-1", "reservationId": number},
            SELECTION, as_user="op"))

        async def sent() -> bool:
            return ("CancelReservation", {"reservation_id": number}) in cp.received
        await until(sent)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as again:
            cancel = await cancelling
            SilentOnCancel.answer.set()  # its answer goes to a connection let go
            assert [e["code"] for e in cancel["errors"]] == ["CHARGER_TIMEOUT"], cancel
            assert cancel["errors"][0]["message"].startswith(
                "CP-1 reconnected; the command went to its previous connection"), cancel
            assert "the reservation is cancelled here" in cancel["errors"][0]["message"]
            assert cancel["reservation"]["state"] == "CANCELLED", cancel
            [stored] = await central.store.find_all(d.Reservation,
                                                    Eq("reservation_id", number))
            assert stored.cancel_owed_since is not None
            sweeper = holder_commands(central) if central.relays \
                else central.services.commands
            await sweeper.sweep_owed_cancels()
            assert ("CancelReservation", {"reservation_id": number}) in again.received


async def test_a_drivers_cancel_sends_the_station_s_older_owed_cancels_at_once(
        central: Central) -> None:
    """Session 29: a driver's own cancelReservation reached the charger, and another
    cancel owed there (driver2's, cancelled here while the charger could not be
    reached, ``cancel_owed``) still waited for the holder's minute sweep, the plug held
    at the charger meanwhile, though a withdrawal's cancel sends it at once. It is sent
    at once too, directly or through the relay; one another send claimed a moment ago
    (``cancel_sending_since``) is left to that send, never sent twice."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = {}
        for plug, who in ((1, "driver"), (2, "driver2")):
            made = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": plug,
                                                     "expiryDate": soon()}, SELECTION,
                             as_user=who)
            assert made["reservation"]["state"] == "ACTIVE", made
            held[who] = made["reservation"]["reservationId"]
        store = central.store
        [older] = await store.find_all(d.Reservation, Eq("reservation_id", held["driver2"]))
        assert await central.services.commands.cancel_owed([older]) != []
        # Owed too, but another instance's send claimed it a moment ago.
        claimed = stamp_new(d.Reservation(
            reservation_id=await store.next_sequence("reservation"),
            station_id=older.station_id, cp_id="CP-1", connector_id=0, id_tag="TAG-GONE",
            expires_at=older.expires_at, state=d.ReservationState.CANCELLED,
            cancel_owed_since=datetime.now(UTC), cancel_sending_since=datetime.now(UTC)),
            SYSTEM)
        await store.write([Insert(claimed)], [])

        cancel = await run(central, "cancelReservation", {
            "cpId": "CP-1", "reservationId": held["driver"]}, SELECTION, as_user="driver")
        assert (cancel["status"], cancel["errors"]) == ("ACCEPTED", []), cancel
        await central.services.withdrawal.settled()
        cancels = [p["reservation_id"] for n, p in cp.received if n == "CancelReservation"]
        assert sorted(cancels) == sorted(held.values()), cancels
        [sent] = await store.get_many(d.Reservation, [older.id])
        assert sent is not None and sent.cancel_owed_since is None  # settled
        [still] = await store.get_many(d.Reservation, [claimed.id])
        assert still is not None and still.cancel_owed_since is not None


async def _reserve_then_go_offline(central: Central) -> int:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        number = await reserved(central)
    await station_offline(central, "CP-1")
    return number


async def test_an_owed_cancel_is_sent_behind_a_hundred_ordinary_cancellations(
        central: Central) -> None:
    """Review s25: the owed cancels were looked for among the station's first 100
    cancelled unexpired reservations: a busy station's ordinary cancellations hid an
    owed one, never sent (the charger held the plug until its expiry while our map
    showed it free). The owed ones are read as such, a page at a time."""
    [station] = await central.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    expiry = datetime.now(UTC) + timedelta(hours=3)
    await central.store.write([Insert(stamp_new(d.Reservation(
        reservation_id=await central.store.next_sequence("reservation"),
        station_id=station.id, cp_id="CP-1", connector_id=1, id_tag=f"T{n}",
        expires_at=expiry, state=d.ReservationState.CANCELLED), SYSTEM))
        for n in range(100)], [])
    number = await _reserve_then_go_offline(central)
    cancel = await run(central, "cancelReservation", {"cpId": "CP-1",
                                                      "reservationId": number},
                       SELECTION, as_user="driver")
    assert cancel["reservation"]["state"] == "CANCELLED", cancel
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        await back.boot()
        await central.services.withdrawal.settled()
        assert ("CancelReservation", {"reservation_id": number}) in back.received
    [stored] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert stored.cancel_owed_since is None


async def test_a_cancel_owed_just_after_its_charger_came_back_is_sent_by_the_sweep(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s25: a cancel that found the charger offline wrote its owed mark just
    after the charger reconnected (no boot: a network blip), whose connection's send had
    found nothing owed yet: nothing sent it until the charger's next connection, the
    plug held until the expiry while our records showed it free. The housekeeping's
    sweep (every instance, ``OWED_CANCEL_SWEEP_S``) of the instance holding the charger
    sends it, once: a second sweep sends nothing, nor does another instance's."""
    number = await _reserve_then_go_offline(central)
    commands = central.services.commands
    original = commands._reservation_answered
    entered, release = asyncio.Event(), asyncio.Event()

    async def paused(viewer, outcome):  # type: ignore[no-untyped-def]
        if outcome.action == "CancelReservation" and outcome.error is not None:
            entered.set()
            await release.wait()
        return await original(viewer, outcome)
    monkeypatch.setattr(commands, "_reservation_answered", paused)

    cancel = asyncio.create_task(run(central, "cancelReservation",
                                     {"cpId": "CP-1", "reservationId": number},
                                     SELECTION, as_user="driver"))
    await asyncio.wait_for(entered.wait(), 5)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        async def online() -> bool:
            [s] = await central.store.find_all(d.Station, Eq("cp_id", "CP-1"))
            return s.online
        await until(online)
        await central.services.withdrawal.settled()
        release.set()
        answer = await cancel
        assert answer["reservation"]["state"] == "CANCELLED", answer
        await central.services.withdrawal.settled()
        assert back.received == []  # the connection's send came too early

        holding = commands
        if central.relays:  # this instance is not the charger's: it sends nothing
            assert await commands.sweep_owed_cancels() == 0
            assert back.received == []
            holding = holder_commands(central)
        assert await holding.sweep_owed_cancels() == 1
        assert back.received == [("CancelReservation", {"reservation_id": number})]
        [stored] = await central.store.find_all(d.Reservation,
                                                Eq("reservation_id", number))
        assert stored.cancel_owed_since is None
        assert await holding.sweep_owed_cancels() == 0
        assert await commands.sweep_owed_cancels() == 0
        assert back.received == [("CancelReservation", {"reservation_id": number})]


async def test_a_cancel_the_bus_cannot_carry_leaves_an_online_chargers_reservation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s25: an instance whose Redis could not publish (an outage, a failover)
    got the relay's plain ChargerOffline for a charger connected to another instance,
    took it for an offline charger, cancelled the reservation here and owed the cancel
    "for its return": the charger never left, was never sent it, and held the plug until
    the expiry while our records showed it free. A charger recorded online (read then)
    is not owed a person's cancel: the reservation stays, the answer says it could not
    be reached (try again)."""
    central = await start_central(tmp_path / "central.db", relayed=True)
    try:
        await seed(central)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            number = await reserved(central)
            _asker, _holder, wire = central.relays
            real = wire.publish

            async def failing(event):  # type: ignore[no-untyped-def]
                if type(event).__name__ == "ChargerCommandRelayed":
                    raise ConnectionError("redis: connection refused")
                return await real(event)
            monkeypatch.setattr(wire, "publish", failing)
            cancel = await run(central, "cancelReservation",
                               {"cpId": "CP-1", "reservationId": number}, SELECTION,
                               as_user="driver")
            assert cancel["reservation"]["state"] == "ACTIVE", cancel
            assert [(e["field"], e["code"]) for e in cancel["errors"]] == [
                ("cpId", "CHARGER_OFFLINE")]
            assert "could not be reached" in cancel["errors"][0]["message"]
            assert "try again" in cancel["errors"][0]["message"]
            [stored] = await central.store.find_all(d.Reservation,
                                                    Eq("reservation_id", number))
            assert stored.state is d.ReservationState.ACTIVE
            assert stored.cancel_owed_since is None

            monkeypatch.setattr(wire, "publish", real)  # Redis is back: cancel again
            again = await run(central, "cancelReservation",
                              {"cpId": "CP-1", "reservationId": number}, SELECTION,
                              as_user="driver")
            assert again["errors"] == [] and \
                again["reservation"]["state"] == "CANCELLED", again
            assert ("CancelReservation", {"reservation_id": number}) in cp.received
    finally:
        await stop_central(central)


def holder_commands(central: Central) -> CommandService:
    """The command service of the instance holding a relayed central's chargers."""
    _asker, holder, _wire = central.relays
    return CommandService(central.services.ctx, holder)


async def test_a_withdrawals_cancel_the_bus_cannot_carry_is_owed_and_swept_by_the_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s25: the README says a blocked card's or deactivated user's reservations
    are cancelled the same way as at an offline charger, but one at a charger online on
    another instance, with the bus out of reach, stayed live: nobody is told to try
    again. It is cancelled here and the cancel owed; the instance holding the charger
    sends it in its sweep, over no bus; the asking instance sends nothing."""
    central = await start_central(tmp_path / "central.db", relayed=True)
    try:
        await seed(central)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            number = await reserved(central)
            _asker, _holder, wire = central.relays
            real = wire.publish

            async def failing(event):  # type: ignore[no-untyped-def]
                if type(event).__name__ == "ChargerCommandRelayed":
                    raise ConnectionError("redis: connection refused")
                return await real(event)
            monkeypatch.setattr(wire, "publish", failing)
            cp.received.clear()
            [reservation] = await central.store.find_all(d.Reservation,
                                                         Eq("reservation_id", number))
            await central.services.withdrawal.cancel_reservations(
                SYSTEM, Eq("id", reservation.id))
            [stored] = await central.store.find_all(d.Reservation,
                                                    Eq("reservation_id", number))
            assert stored.state is d.ReservationState.CANCELLED
            assert stored.cancel_owed_since is not None
            assert cp.received == []

            assert await central.services.commands.sweep_owed_cancels() == 0
            assert await holder_commands(central).sweep_owed_cancels() == 1
            assert cp.received == [("CancelReservation", {"reservation_id": number})]
            [stored] = await central.store.find_all(d.Reservation,
                                                    Eq("reservation_id", number))
            assert stored.cancel_owed_since is None
    finally:
        await stop_central(central)


@pytest.fixture
async def direct(tmp_path: Path) -> AsyncIterator[Central]:
    """One instance, holding its chargers."""
    c = await start_central(tmp_path / "central.db")
    await seed(c)
    yield c
    await stop_central(c)


async def test_the_sweep_sends_only_its_own_chargers_and_none_waits_for_a_silent_one(
        direct: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s25: every instance swept every station with an owed cancel, one at a
    time, through the relay: each charger was sent one per instance, and one that did
    not answer held up the rest for the command timeout each. An instance sweeps the
    chargers connected to it, several at once: a charger connected elsewhere (recorded
    online, not here) is sent nothing from here, and one that does not answer delays
    none of the others."""
    central = direct
    far, _ = await central.services.stations.create_station(
        SYSTEM, cp_id="CP-FAR", name="CP-FAR", company_id=central.stations["CP-1"].company_id,
        connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150)], password=None)
    expiry = datetime.now(UTC) + timedelta(hours=3)
    numbers: dict[str, int] = {}
    for cp_id, station_id in (("CP-1", central.stations["CP-1"].id),
                              ("CP-OPEN", central.stations["CP-OPEN"].id),
                              ("CP-FAR", far.id)):
        numbers[cp_id] = await central.store.next_sequence("reservation")
        await central.store.write([Insert(stamp_new(d.Reservation(
            reservation_id=numbers[cp_id], station_id=station_id, cp_id=cp_id,
            connector_id=1, id_tag="TAG-OK", expires_at=expiry,
            state=d.ReservationState.CANCELLED,
            cancel_owed_since=datetime.now(UTC) - timedelta(minutes=1)), SYSTEM))], [])
    [stored_far] = await central.store.get_many(d.Station, [far.id])
    assert stored_far is not None
    await central.store.write([patch(stored_far, SYSTEM, online=True)], [])
    # The charger sorted first is silent: one at a time, the other waited behind it.
    silent = min(("CP-1", "CP-OPEN"), key=lambda cp: central.stations[cp].id)
    heard = "CP-OPEN" if silent == "CP-1" else "CP-1"
    gateway = central.gateway
    real = gateway.call
    asked: list[str] = []
    mute, never = asyncio.Event(), asyncio.Event()

    async def call(cp_id, action, payload, timeout, newest=None):  # type: ignore[no-untyped-def]
        asked.append(cp_id)
        if cp_id == silent and action == "CancelReservation" and mute.is_set():
            await never.wait()
        return await real(cp_id, action, payload, timeout, newest)
    monkeypatch.setattr(gateway, "call", call)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as one, \
            connected(central.url, "CP-OPEN") as other:
        chargers = {"CP-1": one, "CP-OPEN": other}

        async def both() -> bool:
            return gateway.is_connected("CP-1") and gateway.is_connected("CP-OPEN")
        await until(both)
        await central.services.withdrawal.settled()  # their connections' own sends
        for cp_id in chargers:  # owed again (their connections may have sent them)
            [again] = await central.store.find_all(d.Reservation,
                                                   Eq("reservation_id", numbers[cp_id]))
            await central.store.write([patch(again, SYSTEM,
                                             cancel_owed_since=datetime.now(UTC))], [])
        asked.clear()
        for charger in chargers.values():
            charger.received.clear()
        mute.set()
        sweep = asyncio.create_task(central.services.commands.sweep_owed_cancels())
        try:
            async def delivered() -> bool:
                [r] = await central.store.find_all(d.Reservation,
                                                   Eq("reservation_id", numbers[heard]))
                return r.cancel_owed_since is None
            await until(delivered)
            assert ("CancelReservation", {"reservation_id": numbers[heard]}) \
                in chargers[heard].received
            assert not sweep.done()  # the silent one is still awaited
            assert "CP-FAR" not in asked
        finally:
            never.set()
        assert await sweep == 2
    assert "CP-FAR" not in asked


async def sent_by_the_holder(central: Central, cp: Any, number: int) -> None:
    """Relayed (the charger on another instance): the card-expiry sweep cancels the
    reservation here and sends its charger nothing (review s26: every instance's sweep
    sent it, through the relay); the cancel is owed, sent by the instance holding the
    charger in its sweep of owed cancels. Direct: sent by the sweep itself."""
    if not central.relays:
        return
    [owed] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    assert owed.state is d.ReservationState.CANCELLED
    assert owed.cancel_owed_since is not None
    assert ("CancelReservation", {"reservation_id": number}) not in cp.received
    assert await holder_commands(central).sweep_owed_cancels() == 1


async def test_a_cards_reservation_is_cancelled_when_the_card_expires(central: Central
                                                                      ) -> None:
    """QA s25: a card that expired holding a reservation kept it ACTIVE until its
    charger booted (or it expired): the plug held for a card that could not charge, shown
    reserved, and its driver kept from reserving elsewhere. The expiry sweep cancels it
    at the charger; another card's reservation stays."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        for connector, tag in ((1, "TAG-OK"), (2, "TAG-OTHER")):
            held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": connector,
                                                     "expiryDate": soon(), "idTag": tag},
                             SELECTION)
            assert held["reservation"]["state"] == "ACTIVE", held
        [mine] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        card = central.tags["ok"]
        [stored] = await central.store.get_many(d.IdTag, [card.id])
        assert stored is not None
        await central.store.write([patch(stored, SYSTEM, expires_at=datetime.now(UTC)
                                         - timedelta(seconds=1))], [])
        cp.received.clear()

        await central.services.withdrawal.sweep_expired()
        await sent_by_the_holder(central, cp, mine.reservation_id)
        assert ("CancelReservation", {"reservation_id": mine.reservation_id}) \
            in cp.received
        [after] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        assert after.state is d.ReservationState.CANCELLED
        [kept] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OTHER"))
        assert kept.state is d.ReservationState.ACTIVE


async def test_an_expired_cards_reservation_is_found_behind_other_holders_of_its_tag(
        central: Central) -> None:
    """Review s25: the expiry sweep read the first 500 live reservations of the expired
    cards' tag strings and only then kept their holders': 500 reservations of the same
    string for no card (an operator's bare id) hid the card's own, left ACTIVE."""
    [station] = await central.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    expiry = datetime.now(UTC) + timedelta(hours=3)
    await central.store.write([Insert(stamp_new(d.Reservation(
        reservation_id=await central.store.next_sequence("reservation"),
        station_id=station.id, cp_id="CP-1", connector_id=2, id_tag="TAG-OK",
        expires_at=expiry, state=d.ReservationState.ACTIVE), SYSTEM))
        for _ in range(500)], [])
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon(), "idTag": "TAG-OK"},
                         SELECTION)
        assert held["reservation"]["state"] == "ACTIVE", held
        number = held["reservation"]["reservationId"]
        [stored] = await central.store.get_many(d.IdTag, [central.tags["ok"].id])
        assert stored is not None
        await central.store.write([patch(stored, SYSTEM, expires_at=datetime.now(UTC)
                                         - timedelta(seconds=1))], [])
        await central.services.withdrawal.sweep_expired()
        await sent_by_the_holder(central, cp, number)
        assert ("CancelReservation", {"reservation_id": number}) in cp.received
        [after] = await central.store.find_all(d.Reservation,
                                               Eq("reservation_id", number))
        assert after.state is d.ReservationState.CANCELLED


async def test_a_charger_silent_to_lists_does_not_hold_up_an_expired_cards_cancel(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s26: every expiry sweep first pushed, one station after another, every
    station connected here with an entry still marked, and only then cancelled the
    expired cards' reservations: a charger that never answers SendLocalList (another
    card's withdrawal left marked there) cost the command timeout at every sweep before
    any expired card's reservation was cancelled. The cancels come first."""
    real = central.gateway.call

    async def silent(cp_id: str, action: str, payload: dict[str, Any],
                     timeout: float, newest: int | None = None) -> dict[str, Any]:
        if cp_id == "CP-OPEN" and action == "SendLocalList" \
                and payload.get("updateType") == "Differential":
            await asyncio.sleep(timeout)
            raise ChargerTimeout(f"{cp_id} did not answer {action}")
        return await real(cp_id, action, payload, timeout, newest)

    async with connected(central.url, "CP-OPEN") as silent_cp, connected(
            central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await silent_cp.boot()
        await cp.boot()
        await cp.report_all()
        await send_full_list(central, "CP-OPEN", "TAG-OTHER")
        monkeypatch.setattr(central.gateway, "call", silent)
        await block(central, "other", who="admin")
        await settled(central)  # unanswered: stays marked
        marked = await entry(central, "CP-OPEN", "TAG-OTHER")
        assert marked is not None and marked.wanted == "Blocked"

        held = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
            "reservation { reservationId state } errors { code }")
        assert held["reservation"]["state"] == "ACTIVE", held
        [stored] = await central.store.get_many(d.IdTag, [central.tags["ok"].id])
        assert stored is not None
        await central.store.write([patch(stored, SYSTEM, expires_at=datetime.now(UTC)
                                         - timedelta(seconds=1))], [])

        sweep = asyncio.create_task(central.services.withdrawal.sweep_expired())
        try:
            await asyncio.sleep(1.5)
            [after] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
            assert after.state is d.ReservationState.CANCELLED, after.state
        finally:
            await sweep


async def test_an_expiry_sweep_pushes_to_its_chargers_side_by_side(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s26: the sweep pushed what is marked to one station after another, each
    up to the command timeout: a charger that does not answer held up the next. Both
    chargers here are sent their list before either answers (relayed: held by another
    instance, they are not this sweep's)."""
    real = central.gateway.call
    called: set[str] = set()
    both, release = asyncio.Event(), asyncio.Event()

    async def unanswered(cp_id: str, action: str, payload: dict[str, Any],
                         timeout: float, newest: int | None = None) -> dict[str, Any]:
        if action == "SendLocalList" and payload.get("updateType") == "Differential":
            raise ChargerTimeout(f"{cp_id} did not answer {action}")
        return await real(cp_id, action, payload, timeout, newest)

    async def held(cp_id: str, action: str, payload: dict[str, Any],
                   timeout: float, newest: int | None = None) -> dict[str, Any]:
        if action == "SendLocalList" and payload.get("updateType") == "Differential":
            called.add(cp_id)
            if len(called) == 2:
                both.set()
            await release.wait()
            raise ChargerTimeout(f"{cp_id} did not answer {action}")
        return await real(cp_id, action, payload, timeout, newest)

    async with connected(central.url, "CP-OPEN") as one, connected(
            central.url, "CP-1", password=STATION_PASSWORD) as two:
        await one.boot()
        await two.boot()
        for cp_id in ("CP-OPEN", "CP-1"):
            await send_full_list(central, cp_id, "TAG-OTHER")
        monkeypatch.setattr(central.gateway, "call", unanswered)
        await block(central, "other", who="admin")
        await settled(central)  # unanswered at both: stays marked
        for cp_id in ("CP-OPEN", "CP-1"):
            marked = await entry(central, cp_id, "TAG-OTHER")
            assert marked is not None and marked.wanted == "Blocked"

        monkeypatch.setattr(central.gateway, "call", held)
        sweep = asyncio.create_task(central.services.withdrawal.sweep_expired())
        try:
            if not central.relays:
                await asyncio.wait_for(both.wait(), 3)
        finally:
            release.set()
            await sweep
        # Relayed, the chargers are another instance's: its own sweep sends them.
        assert called == (set() if central.relays else {"CP-OPEN", "CP-1"})
