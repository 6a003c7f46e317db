"""Another card starting on a plug reserved for a card (QA s33, a CPO's NOC: the wrong
card started on a reserved plug, answered Accepted, the reservation left ACTIVE on a plug
charging another session). OCPP 1.6, 5.13: a connector reserved for an idTag starts only
for it or its group. A live start by another card is told Invalid, refused and billed
nothing, the reservation kept; a start replayed from an offline queue charged before it
could be told, so it is billed and ends the reservation it took the plug of. End to end
with the ``ocpp`` package as the charger, on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.events import ReservationChanged
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.query import Eq
from domain.services.base import stamp_new
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.conftest import central_on_each_store as central
from tests.ocpp.test_commands import run

__all__ = ["central"]  # the fixture, on each store


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _reserve(central: Central, connector: int) -> int:
    """driver2 reserves CP-1's ``connector`` for an hour with TAG-OTHER; its number."""
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": connector,
                                             "expiryDate": expiry},
                     "reservation { reservationId state }", as_user="driver2")
    assert held["errors"] == [] and held["reservation"]["state"] == "ACTIVE", held
    return int(held["reservation"]["reservationId"])


async def _state(central: Central, number: int) -> d.ReservationState:
    [stored] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
    return stored.state


async def _start(cp: SimulatedChargePoint, connector: int, tag: str, at: datetime,
                 reservation_id: int | None = None) -> tuple[int, str]:
    answer = await cp.call(call.StartTransaction(
        connector_id=connector, id_tag=tag, meter_start=1_000, timestamp=_stamp(at),
        reservation_id=reservation_id))
    return answer.transaction_id, answer.id_tag_info["status"]


async def _stop(cp: SimulatedChargePoint, tx: int, at: datetime) -> None:
    await cp.call(call.StopTransaction(meter_stop=6_000, transaction_id=tx,
                                       timestamp=_stamp(at), reason="DeAuthorized"))


@pytest.mark.parametrize("naming", [True, False])
async def test_another_cards_live_start_on_a_reserved_plug_is_refused(
        central: Central, naming: bool) -> None:
    """TAG-OK (driver's) starts on CP-1's connector 2, reserved for driver2's TAG-OTHER,
    naming the reservation or not: told Invalid, recorded refused, its 5 kWh billed
    nothing, and the reservation stays ACTIVE. Its resend (the answer lost) is told
    Invalid again, the same transaction (judged on the card alone, it was Accepted and
    billed). The reserved card then starts there and uses the reservation."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        number = await _reserve(central, 2)
        at = datetime.now(UTC).replace(microsecond=0)
        named = number if naming else None
        tx, told = await _start(cp, 2, "TAG-OK", at, named)
        assert told == "Invalid"
        assert await _state(central, number) is d.ReservationState.ACTIVE
        again = await _start(cp, 2, "TAG-OK", at, named)
        assert again == (tx, "Invalid")
        await _stop(cp, tx, datetime.now(UTC))
        refused = await central.session(tx)
        assert refused is not None and refused.state is d.SessionState.COMPLETED
        assert (refused.start_refused, refused.reservation_id, refused.cost_minor) == (
            "Invalid", None, None)
        assert await _state(central, number) is d.ReservationState.ACTIVE

        own, own_told = await _start(cp, 2, "TAG-OTHER", datetime.now(UTC))
        assert own_told == "Accepted"
        assert await _state(central, number) is d.ReservationState.USED
        session = await central.session(own)
        assert session is not None and session.reservation_id == number


async def test_a_reservation_of_connector_0_leaves_another_connector_to_any_card(
        central: Central) -> None:
    """A reservation of the station's connector 0 holds no plug in particular: another
    card's start on connector 1 is Accepted, the reservation left ACTIVE (a plug of the
    station's stays for its card)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        number = await _reserve(central, 0)
        tx, told = await _start(cp, 1, "TAG-OK", datetime.now(UTC))
        assert told == "Accepted"
        session = await central.session(tx)
        assert session is not None and session.start_refused is None
        assert await _state(central, number) is d.ReservationState.ACTIVE


async def test_a_replayed_start_on_a_reserved_plug_is_billed_and_ends_the_reservation(
        central: Central) -> None:
    """CP-OPEN's connector 2 was reserved for driver2's TAG-OTHER two hours ago; the
    charger went offline and let TAG-OK charge there 90 minutes ago, and replays it on
    reconnecting. It charged before it could be told: Accepted and billed (5 kWh at
    0.40 EUR). The reservation can no longer be used (the plug was taken): CANCELLED,
    and its driver told (``reservationChanged``), not left ACTIVE until it expires."""
    held, heard = await _replayed_on_reserved_plug(central, timedelta(hours=1))
    assert await _state(central, held.reservation_id) is d.ReservationState.CANCELLED
    assert [(e.reservation_id, e.user_id, e.state) for e in heard] == [
        (held.reservation_id, central.users["driver2"].id, "CANCELLED")]


async def test_a_resend_of_a_start_refused_otherwise_on_a_reserved_plug_stays_refused(
        central: Central) -> None:
    """TAG-OK charges on CP-1's connector 1 and starts on connector 2, reserved for
    driver2's TAG-OTHER: told ConcurrentTx (its card is busy). Its session on connector 1
    stops, and the start on connector 2 is resent (the answer lost): judged on the card
    alone it is free now, but the plug is still held for another card, so it is told
    Invalid, the same transaction, billed nothing, and the reservation stays ACTIVE
    (review r33: it was Accepted, billed, on the reserved plug)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        first, first_told = await _start(cp, 1, "TAG-OK", datetime.now(UTC))
        assert first_told == "Accepted"
        number = await _reserve(central, 2)
        at = datetime.now(UTC).replace(microsecond=0)
        tx, told = await _start(cp, 2, "TAG-OK", at)
        assert told == "ConcurrentTx"
        await _stop(cp, first, datetime.now(UTC))
        assert await _start(cp, 2, "TAG-OK", at) == (tx, "Invalid")
        assert await _state(central, number) is d.ReservationState.ACTIVE
        await _stop(cp, tx, datetime.now(UTC))
    refused = await central.session(tx)
    assert refused is not None and refused.state is d.SessionState.COMPLETED
    assert refused.start_refused is not None and refused.cost_minor is None
    assert refused.reservation_id is None
    assert await _state(central, number) is d.ReservationState.ACTIVE


async def test_a_replayed_start_leaves_a_reservation_past_its_expiry_to_the_sweep(
        central: Central) -> None:
    """As the replay above, but the reservation, live when TAG-OK started 90 minutes ago,
    expired 5 minutes ago and the sweep has not run yet: the start is billed, and the
    reservation is not CANCELLED (it is over already): left ACTIVE as stored, no
    ``reservationChanged`` told, and the expiry sweep stores it EXPIRED."""
    held, heard = await _replayed_on_reserved_plug(central, -timedelta(minutes=5))
    assert await _state(central, held.reservation_id) is d.ReservationState.ACTIVE
    assert heard == []
    assert await central.services.commands.expire_reservations() == 1
    assert await _state(central, held.reservation_id) is d.ReservationState.EXPIRED


async def _replayed_on_reserved_plug(central: Central, expires_in: timedelta
                                     ) -> tuple[d.Reservation, list[ReservationChanged]]:
    """CP-OPEN's connector 2 reserved two hours ago for driver2's TAG-OTHER, expiring
    ``expires_in`` from now; TAG-OK's start there 90 minutes ago replayed and stopped an
    hour later: Accepted and billed (5 kWh at 0.40 EUR). The reservation and the
    ``reservationChanged`` events heard meanwhile."""
    heard: list[ReservationChanged] = []
    central.services.ctx.published.append(
        lambda e: heard.append(e) if isinstance(e, ReservationChanged) else None)
    now = datetime.now(UTC).replace(microsecond=0)
    station = central.stations["CP-OPEN"]
    held = stamp_new(d.Reservation(
        reservation_id=await central.store.next_sequence("reservation"),
        station_id=station.id, cp_id="CP-OPEN", connector_id=2, id_tag="TAG-OTHER",
        user_id=central.users["driver2"].id, expires_at=now + expires_in,
        state=d.ReservationState.ACTIVE, company_id=station.company_id),
        SYSTEM, now - timedelta(hours=2))
    await central.store.write([Insert(held)], [])
    async with connected(central.url, "CP-OPEN") as cp:
        start = now - timedelta(minutes=90)
        tx, told = await _start(cp, 2, "TAG-OK", start)
        assert told == "Accepted"
        await _stop(cp, tx, start + timedelta(hours=1))
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert (session.start_refused, session.reservation_id, session.cost_minor) == (
        None, None, 200)
    return held, heard
