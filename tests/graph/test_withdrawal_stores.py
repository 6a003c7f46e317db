"""What the card withdrawal (``domain/services/withdrawal.py``) reads and writes, on both
stores (QA review 17b): a reservation holds its plug for the card it was made for, not
for a tag string."""

from __future__ import annotations

from datetime import timedelta

from domain import entities as d
from domain.clock import utcnow
from domain.ports import Insert
from domain.services import Services
from domain.services.base import reserved_for_card, stamp_new
from tests.graph.world import World


async def test_a_reservation_holds_its_plug_for_the_card_it_was_made_for(
        services: Services, world: World) -> None:
    """A literal match used to be accepted before the company was checked: a card issued
    by another company with a bare id a company had reserved took the reservation."""
    store = services.ctx.store
    station = world.stations["A-001"]

    async def reserve(tag: str, maker: str, user_id: str | None = None
                      ) -> d.Reservation:
        reservation = stamp_new(d.Reservation(
            reservation_id=await store.next_sequence("reservation"),
            station_id=station.id, cp_id=station.cp_id, connector_id=1, id_tag=tag,
            user_id=user_id, expires_at=utcnow() + timedelta(hours=1),
            state=d.ReservationState.ACTIVE, company_id=station.company_id),
            world.viewer(maker))
        await store.write([Insert(reservation)], [])
        return reservation

    bare = await reserve("FLEET-B", "op_a")  # a's group id: no card has it yet
    guest = await reserve("GUEST-1", "op_a")
    theirs = await services.fleet.issue_id_tag(world.viewer("op_b"), tag="FLEET-B",
                                               user_id=world.users["op_b"].id)
    ours = await services.fleet.issue_id_tag(world.viewer("op_a"), tag="GUEST-1",
                                             user_id=world.users["driver_a"].id)
    assert not await reserved_for_card(store, bare, "FLEET-B", theirs)
    assert await reserved_for_card(store, guest, "GUEST-1", ours)  # a's own card
    assert await reserved_for_card(store, bare, "FLEET-B", None)  # a tag of no card
    card = world.tags["driver1"]
    made_for_it = await reserve(card.tag, "driver1", user_id=card.user_id)
    assert await reserved_for_card(store, made_for_it, card.tag, card)
