"""A card made expired by an edit of its expiry to a moment already past (QA s27): the
expiry sweep walks expiries from where it last stopped, so one set before that moment
was never its; the withdrawal the edit set off marked the chargers' lists and left the
card's reservations ACTIVE, the plug held for a card that could no longer charge (shown
reserved, other drivers refused) until the reservation's own expiry, up to a day."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from domain import entities as d
from domain.keyed_locks import KeyedLocks
from domain.policy import SYSTEM, Viewer
from domain.ports import Insert
from domain.query import Eq, In
from domain.services.base import patch, stamp_new
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_card_withdrawal import settled
from tests.ocpp.test_commands import run


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Central]:
    c = await start_central(tmp_path / "central.db")
    await seed(c)
    yield c
    await stop_central(c)


SELECTION = "status reservation { reservationId state } errors { field code message }"


async def test_a_card_expired_by_an_edit_has_its_reservation_cancelled(central: Central
                                                                        ) -> None:
    """The driver holds plug 1 with TAG-OK; the expiry sweep has run; an admin
    then sets TAG-OK's expiry to an hour ago (the card was to end then). The card's
    reservation is cancelled at the charger, as a card expiring in the sweep's time
    has it; another card's stays."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        for connector, tag in ((1, "TAG-OK"), (2, "TAG-OTHER")):
            held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": connector,
                                                     "expiryDate": expiry, "idTag": tag},
                             SELECTION)
            assert held["reservation"]["state"] == "ACTIVE", held
        [mine] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        await central.services.withdrawal.sweep_expired()  # its cursor: now

        await central.services.fleet.update_id_tag(
            Viewer.of(central.users["admin"]), central.tags["ok"].id,
            expires_at=datetime.now(UTC) - timedelta(hours=1))
        await settled(central)
        await central.services.withdrawal.sweep_expired()

        async def cancelled() -> bool:
            [now] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
            return now.state is d.ReservationState.CANCELLED
        await until(cancelled)
        assert ("CancelReservation", {"reservation_id": mine.reservation_id}) \
            in cp.received
        [kept] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OTHER"))
        assert kept.state is d.ReservationState.ACTIVE


async def test_an_expired_card_whose_expiry_is_moved_earlier_loses_its_reservation(
        central: Central) -> None:
    """TAG-OK's expiry passes after the sweep's last run (the next one minutes away);
    an admin then corrects it to the day before, when the contract really ended, before
    where the sweep stopped. Expired before the edit and after it, the card was withdrawn
    by neither (review r27-reserve): the edit saw no change of state, and the sweep walks
    on from its cursor, past the corrected expiry. Its reservation is cancelled at the
    charger all the same, once."""
    admin = Viewer.of(central.users["admin"])
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, SELECTION)
        assert held["reservation"]["state"] == "ACTIVE", held
        await central.services.withdrawal.sweep_expired()  # its cursor: now
        # The card is to end in a second (still usable: nothing withdrawn) ...
        await central.services.fleet.update_id_tag(
            admin, central.tags["ok"].id, expires_at=datetime.now(UTC) + timedelta(seconds=1))
        await asyncio.sleep(1.5)  # ... it has expired; the next sweep is minutes away
        await central.services.fleet.update_id_tag(
            admin, central.tags["ok"].id, expires_at=datetime.now(UTC) - timedelta(days=1))
        await settled(central)
        await central.services.withdrawal.sweep_expired()  # the next sweep
        await settled(central)

        async def cancelled() -> bool:
            [now] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
            return now.state is d.ReservationState.CANCELLED
        await until(cancelled)
        assert [p for name, p in cp.received if name == "CancelReservation"] == [
            {"reservation_id": held["reservation"]["reservationId"]}]


async def test_an_expired_card_marked_expired_loses_its_reservation(central: Central) -> None:
    """TAG-OK's expiry passes after the sweep's last run (the next one minutes away); an
    admin then marks it EXPIRED (status only, tidying up). That takes it out of the
    sweep (it reads Accepted cards), and the edit saw it expired before and after, so it
    was withdrawn by neither (review r27-misc): the plug stayed held until the
    reservation's own expiry. An edit leaving a card unusable that still holds a
    reservation withdraws it, whatever it changed; cancelled at the charger once."""
    admin = Viewer.of(central.users["admin"])
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, SELECTION)
        assert held["reservation"]["state"] == "ACTIVE", held
        await central.services.withdrawal.sweep_expired()  # its cursor: now
        await central.services.fleet.update_id_tag(
            admin, central.tags["ok"].id, expires_at=datetime.now(UTC) + timedelta(seconds=1))
        await asyncio.sleep(1.5)  # it has expired; the next sweep is minutes away
        await central.services.fleet.update_id_tag(
            admin, central.tags["ok"].id, status=d.IdTagStatus.EXPIRED)
        await settled(central)
        await central.services.withdrawal.sweep_expired()  # the next sweep
        await settled(central)

        async def cancelled() -> bool:
            [now] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
            return now.state is d.ReservationState.CANCELLED
        await until(cancelled)
        assert [p for name, p in cp.received if name == "CancelReservation"] == [
            {"reservation_id": held["reservation"]["reservationId"]}]


class SlowCancel(SimulatedChargePoint):
    """Answers its first CancelReservation once ``gate`` is set (a charger a few seconds
    slow to answer)."""

    gate: asyncio.Event | None = None

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int, **_: Any
                                    ) -> result.CancelReservation:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.received.append(("CancelReservation", {"reservation_id": reservation_id}))
            await gate.wait()
            for state in self.connectors.values():
                if state.reservation_id == reservation_id:
                    state.reservation_id, state.reserved_for = None, ()
                    return result.CancelReservation(status="Accepted")  # type: ignore[arg-type]
            return result.CancelReservation(status="Rejected")  # type: ignore[arg-type]
        return super().on_cancel_reservation(reservation_id)


async def cancels_answered(central: Central, *tags: str) -> None:
    """Waits (bounded, 10 s) until the reservations of ``tags`` are cancelled and their
    cancels answered (none owed): what a fixed pause after ``settled`` hoped for (the
    relay's answer is recorded after the withdrawal that sent it returned)."""
    async def answered() -> bool:
        held = await central.store.find_all(d.Reservation, In("id_tag", tags))
        return len(held) == len(tags) and all(
            r.state is d.ReservationState.CANCELLED and r.cancel_owed_since is None
            for r in held)
    await until(answered, attempts=400, step=0.025)


@asynccontextmanager
async def slow_cancelling(central: Central) -> AsyncIterator[SlowCancel]:
    """CP-1 as a ``SlowCancel`` charger, booted and its connectors reported."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=SlowCancel) as cp:
        assert isinstance(cp, SlowCancel)
        await cp.boot()
        await cp.report_all()
        yield cp


async def test_an_edit_of_a_card_just_blocked_does_not_cancel_its_reservation_twice(
        central: Central) -> None:
    """Review r27-reserve3: an edit of a card blocked a moment ago, while the block's
    CancelReservation is still on its way, found the reservation still ACTIVE and
    cancelled it again: the charger was sent the cancel twice, the second Rejected."""
    admin = Viewer.of(central.users["admin"])
    async with slow_cancelling(central) as cp:
        held = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, SELECTION)
        assert held["reservation"]["state"] == "ACTIVE", held
        gate = asyncio.Event()
        cp.gate = gate  # type: ignore[attr-defined]
        # The card is lost: blocked. Its reservation's cancel goes to the charger ...
        await central.services.fleet.update_id_tag(admin, central.tags["ok"].id,
                                                   status=d.IdTagStatus.BLOCKED)
        async def sent() -> bool:
            return any(n == "CancelReservation" for n, _ in cp.received)
        await until(sent)
        # ... and, while it is on its way, the operator also sets the card's expiry.
        await central.services.fleet.update_id_tag(
            admin, central.tags["ok"].id, expires_at=datetime.now(UTC) + timedelta(days=30))
        await asyncio.sleep(1.0)
        gate.set()
        await settled(central)
        await asyncio.sleep(1.0)
        await settled(central)

        [now] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        assert now.state is d.ReservationState.CANCELLED
        assert [p for name, p in cp.received if name == "CancelReservation"] == [
            {"reservation_id": held["reservation"]["reservationId"]}]


async def test_a_block_after_a_deactivation_does_not_cancel_the_reservation_twice(
        central: Central) -> None:
    """Review r27-reserve5: the holder is deactivated (their reservation's cancel on its
    way to the charger), then their card is blocked while that cancel is unanswered. The
    deactivation cancelled through the relay, the reservation ACTIVE until the charger
    answered, so the block found it live and cancelled it again: two CancelReservations,
    the second Rejected. Every withdrawal now cancels once (``_cancel_held``)."""
    admin = Viewer.of(central.users["admin"])
    async with slow_cancelling(central) as cp:
        held = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, SELECTION)
        assert held["reservation"]["state"] == "ACTIVE", held
        gate = asyncio.Event()
        cp.gate = gate  # type: ignore[attr-defined]
        await central.services.accounts.deactivate_user(admin, central.users["driver"].id)

        async def sent() -> bool:
            return any(n == "CancelReservation" for n, _ in cp.received)
        await until(sent)
        # While the deactivation's cancel is on its way, the card is blocked (lost).
        await central.services.fleet.update_id_tag(admin, central.tags["ok"].id,
                                                   status=d.IdTagStatus.BLOCKED)
        await asyncio.sleep(1.0)
        gate.set()
        await settled(central)
        await asyncio.sleep(1.0)
        await settled(central)

        [now] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        assert now.state is d.ReservationState.CANCELLED
        cancels = [p for name, p in cp.received if name == "CancelReservation"]
        assert cancels == [{"reservation_id": held["reservation"]["reservationId"]}], cancels


@pytest.fixture
async def relayed(tmp_path: Path) -> AsyncIterator[Central]:
    """Commands from an instance that does not hold the charger (through the relay)."""
    c = await start_central(tmp_path / "central.db", relayed=True)
    await seed(c)
    yield c
    await stop_central(c)


async def test_a_block_on_another_instance_frees_the_plug_at_the_charger_at_once(
        relayed: Central) -> None:
    """Review r27-reserve5: a card blocked on an instance that does not hold the
    charger (GraphQL-only, or the other of two) had its reservation stored CANCELLED at
    once, but its CancelReservation waited for the holder's owed-cancel sweep (up to a
    minute): the plug read free, and another driver's reservation there was refused by
    the charger, still holding it for the blocked card. The instance that cancelled it
    asks the holder (through the relay) to send the owed cancel now."""
    central = relayed
    admin = Viewer.of(central.users["admin"])
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK", "expiryDate": expiry},
            SELECTION)
        assert held["reservation"]["state"] == "ACTIVE", held
        await central.services.fleet.update_id_tag(admin, central.tags["ok"].id,
                                                   status=d.IdTagStatus.BLOCKED)
        await settled(central)
        await asyncio.sleep(1.0)
        cancels = [p for name, p in cp.received if name == "CancelReservation"]
        # The plug reads free here: another driver reserves it.
        other = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OTHER", "expiryDate": expiry},
            SELECTION)
        assert cancels == [{"reservation_id": held["reservation"]["reservationId"]}], (
            cancels, other)
        assert other["reservation"] is not None \
            and other["reservation"]["state"] == "ACTIVE", other
        [mine] = await central.store.find_all(d.Reservation, Eq("id_tag", "TAG-OK"))
        assert mine.cancel_owed_since is None  # settled: the sweep sends nothing more


async def test_two_withdrawals_on_two_instances_relay_each_cancel_once(
        relayed: Central) -> None:
    """Two instances that do not hold CP-1's charger withdraw, at the same moment, two
    cards with reservations there: TAG-OK's (plug 1) and TAG-OTHER's (plug 2). The
    first's CancelReservation is on its way (unanswered) when the second's withdrawal
    relays its own. Each instance relays the cancels its own claim won
    (``cancel_owed``'s guarded write), not every cancel owed at the station: the second
    read the first's still owed and relayed it again, the charger sent it twice and the
    second answered Rejected, recorded as a failed cancel."""
    central = relayed
    admin = Viewer.of(central.users["admin"])
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with slow_cancelling(central) as cp:
        held = {}
        for plug, tag in ((1, "TAG-OK"), (2, "TAG-OTHER")):
            made = await run(central, "reserveNow", {
                "cpId": "CP-1", "connectorId": plug, "idTag": tag, "expiryDate": expiry},
                SELECTION)
            assert made["reservation"]["state"] == "ACTIVE", made
            held[tag] = made["reservation"]["reservationId"]
        gate = asyncio.Event()
        cp.gate = gate  # type: ignore[attr-defined]
        await central.services.fleet.update_id_tag(admin, central.tags["ok"].id,
                                                   status=d.IdTagStatus.BLOCKED)

        async def sent() -> bool:
            return any(n == "CancelReservation" for n, _ in cp.received)
        await until(sent)
        # The other instance: its own one-send-at-a-time per station.
        central.services.commands._owing = KeyedLocks()
        await central.services.fleet.update_id_tag(admin, central.tags["other"].id,
                                                   status=d.IdTagStatus.BLOCKED)
        await asyncio.sleep(1.0)
        gate.set()
        await settled(central)
        await cancels_answered(central, "TAG-OK", "TAG-OTHER")
        cancels = sorted(p["reservation_id"] for n, p in cp.received
                         if n == "CancelReservation")
        assert cancels == sorted(held.values()), cancels


async def test_the_holder_s_sweep_does_not_send_a_cancel_another_instance_is_relaying(
        relayed: Central) -> None:
    """An instance not holding CP-1 blocks TAG-OK: its claim (``cancel_owed``) won, and
    it relays the CancelReservation, unanswered yet, when the holder's owed-cancel sweep
    (every minute, its own process: its own one-send-at-a-time per station) comes
    round. The sweep sent every cancel owed at its stations, that one too: the charger
    was sent it twice, the second answered Rejected and recorded as a failed cancel
    (review r28-leftan). A send claims the cancel first (``Reservation.
    cancel_sending_since``), and one claimed within ``CANCEL_CLAIM_S`` is left to it."""
    central = relayed
    admin = Viewer.of(central.users["admin"])
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with slow_cancelling(central) as cp:
        made = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK", "expiryDate": expiry},
            SELECTION)
        assert made["reservation"]["state"] == "ACTIVE", made
        gate = asyncio.Event()
        cp.gate = gate  # type: ignore[attr-defined]
        blocking = asyncio.create_task(central.services.fleet.update_id_tag(
            admin, central.tags["ok"].id, status=d.IdTagStatus.BLOCKED))

        async def sent() -> bool:
            return any(n == "CancelReservation" for n, _ in cp.received)
        await until(sent)
        central.services.commands._owing = KeyedLocks()  # the holder's own process
        [station] = await central.store.find_all(d.Station, Eq("cp_id", "CP-1"))
        sweep = asyncio.create_task(central.services.commands.send_owed_cancels(station.id))
        await asyncio.sleep(1.0)
        gate.set()
        await blocking
        await sweep
        await settled(central)
        await cancels_answered(central, "TAG-OK")  # answered: settled
        cancels = [p for n, p in cp.received if n == "CancelReservation"]
        assert cancels == [{"reservation_id": made["reservation"]["reservationId"]}], cancels


async def test_the_boot_check_and_the_expiry_sweep_cancel_a_reservation_once(
        central: Central) -> None:
    """TAG-OK expired with its reservation live (no sweep saw it yet). CP-1 boots: the
    boot's check (``_cancel_unusable``) cancels it, and while that cancel is unanswered
    the expiry sweep finds the card. The boot's check cancelled through the relay, the
    reservation ACTIVE until the charger answered, so the sweep cancelled it again: two
    CancelReservations, the second Rejected and recorded as a failed cancel. It cancels
    once now (``_cancel_once``): stored CANCELLED and owed at once, sent by the owed
    record."""
    async with slow_cancelling(central) as cp:
        held = await run(central, "reserveNow", {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, SELECTION)
        assert held["reservation"]["state"] == "ACTIVE", held
        store = central.store
        card = await store.find_one(d.IdTag, Eq("tag", "TAG-OK"))
        assert card is not None
        await store.write([patch(card, SYSTEM, expires_at=datetime.now(UTC)
                                 - timedelta(seconds=1))], [])  # no withdrawal ran
        gate = asyncio.Event()
        cp.gate = gate  # type: ignore[attr-defined]
        await cp.boot()

        async def sent() -> bool:
            return any(n == "CancelReservation" for n, _ in cp.received)
        await until(sent)
        sweep = asyncio.create_task(central.services.withdrawal.sweep_expired())
        await asyncio.sleep(1.0)
        gate.set()
        await sweep
        await settled(central)
        await cancels_answered(central, "TAG-OK")
        cancels = [p for n, p in cp.received if n == "CancelReservation"]
        assert cancels == [{"reservation_id": held["reservation"]["reservationId"]}], cancels


@pytest.mark.parametrize("relayed", [False, True], ids=["direct", "relayed"])
async def test_a_block_sends_the_station_s_older_owed_cancels_at_once(
        tmp_path: Path, relayed: bool) -> None:
    """Session 29: a withdrawal (TAG-OK blocked) sent only the cancel it made itself;
    TAG-OTHER's, owed at the same charger since it was cancelled here while the charger
    was unreachable (``cancel_owed``), waited for the holder's minute sweep, the plug
    held at the charger meanwhile. It is sent at once too, directly or through the
    relay; one another send claimed a moment ago (``cancel_sending_since``) is left to
    that send, never sent twice."""
    central = await start_central(tmp_path / "central.db", relayed=relayed)
    await seed(central)
    admin = Viewer.of(central.users["admin"])
    expiry = datetime.now(UTC) + timedelta(hours=1)
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await cp.report_all()
            held = {}
            for plug, tag in ((1, "TAG-OK"), (2, "TAG-OTHER")):
                made = await run(central, "reserveNow", {
                    "cpId": "CP-1", "connectorId": plug, "idTag": tag,
                    "expiryDate": expiry.isoformat()}, SELECTION)
                assert made["reservation"]["state"] == "ACTIVE", made
                held[tag] = made["reservation"]["reservationId"]
            store = central.store
            [older] = await store.find_all(d.Reservation, Eq("id_tag", "TAG-OTHER"))
            assert await central.services.commands.cancel_owed([older]) != []
            # Owed too, but another instance's send claimed it a moment ago.
            station = central.stations["CP-1"]
            claimed = stamp_new(d.Reservation(
                reservation_id=await store.next_sequence("reservation"),
                station_id=station.id, cp_id="CP-1", connector_id=0, id_tag="TAG-GONE",
                expires_at=expiry, state=d.ReservationState.CANCELLED,
                cancel_owed_since=datetime.now(UTC),
                cancel_sending_since=datetime.now(UTC)), SYSTEM)
            await store.write([Insert(claimed)], [])
            assert [n for n, _ in cp.received if n == "CancelReservation"] == []

            await central.services.fleet.update_id_tag(admin, central.tags["ok"].id,
                                                       status=d.IdTagStatus.BLOCKED)
            await settled(central)
            cancels = sorted(p["reservation_id"] for n, p in cp.received
                             if n == "CancelReservation")
            assert cancels == sorted(held.values()), cancels
            [sent] = await store.get_many(d.Reservation, [older.id])
            assert sent is not None and sent.cancel_owed_since is None  # settled
            [still] = await store.get_many(d.Reservation, [claimed.id])
            assert still is not None and still.cancel_owed_since is not None
    finally:
        await stop_central(central)
