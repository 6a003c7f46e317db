"""Card numbers freed (``FreedIdTag``, ``domain.services.freed_tags``) on both stores:
held back from drivers for 30 days after a card's removal or its holder's erasure (QA
s32: any driver issuing a freed number had the physical card's sessions booked to them),
known to an instance started after, given back to its holder or issued by its company's
staff at once, swept once past the hold-back; chargers answer it Invalid meanwhile."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.entities import FreedIdTag, IdTag, Role
from domain.errors import Conflict
from domain.policy import Viewer
from domain.ports import Delete, Store
from domain.query import ALL
from domain.services import Services, freed_tags
from domain.services.freed_tags import HELD_FOR
from tests.contract.factories import company, put, station, user
from tests.contract.instances import KEY, T0, Clock, instance, right_after

TAG = "DEMO-0002"


class World:
    def __init__(self) -> None:
        self.acme, self.other = company(), company()
        self.jonas = user(company_id=self.acme.id)
        self.newcomer = user()  # a new sign-up, of no company
        self.colleague = user(company_id=self.acme.id)
        self.operator = user(role=Role.OPERATOR, company_id=self.acme.id)
        self.stranger = user(role=Role.OPERATOR, company_id=self.other.id)
        self.outsider = user(company_id=self.other.id)
        self.admin = user(role=Role.ADMIN)

    async def stored(self, store: Store) -> None:
        await put(store, self.acme, self.other, self.jonas, self.newcomer, self.colleague,
                  self.operator, self.stranger, self.outsider, self.admin)


async def refused(services: Services, viewer: Viewer, holder_id: str) -> Conflict:
    with pytest.raises(Conflict) as caught:
        await services.fleet.issue_id_tag(viewer, tag=TAG, user_id=holder_id)
    assert (caught.value.code, caught.value.field) == ("IN_USE", "tag")
    return caught.value


async def removed(services: Services, world: World) -> None:
    """Jonas's card ``TAG``, issued and removed by him."""
    jonas = Viewer.of(world.jonas)
    card = await services.fleet.issue_id_tag(jonas, tag=TAG)
    await services.fleet.remove_id_tag(jonas, card.id)
    await services.fleet.settled()


async def test_a_removed_card_s_number_is_held_back_from_drivers(store: Store) -> None:
    clock, world = Clock(), World()
    await world.stored(store)
    services = instance(store, clock)
    await removed(services, world)

    [freed] = await store.find_all(FreedIdTag, ALL)
    # Kept as a digest keyed with the deployment's key (review r32-c: a plain SHA-256 of
    # a short card UID is undone by trying them all): not the number, nor its digest
    # without the key.
    assert TAG not in repr(freed)
    assert freed.tag_digest == freed_tags.digest(TAG, KEY) != freed_tags.digest(TAG, b"")
    # The newcomer, and any driver; on an instance started after the removal too.
    clock.now = T0 + HELD_FOR - timedelta(minutes=1)
    later = instance(store, clock)
    await refused(later, Viewer.of(world.newcomer), world.newcomer.id)
    await refused(later, Viewer.of(world.colleague), world.colleague.id)
    # Another company's operator, for one of their drivers: not theirs to hand out.
    await refused(later, Viewer.of(world.stranger), world.outsider.id)
    assert await store.find_one(IdTag, ALL) is None
    # Past the hold-back, anyone may; the sweep deletes the freeing then.
    clock.now = T0 + HELD_FOR + timedelta(minutes=1)
    assert await later.fleet.sweep_freed_tags() == 1
    assert await store.find_all(FreedIdTag, ALL) == []
    card = await later.fleet.issue_id_tag(Viewer.of(world.newcomer), tag=TAG)
    assert card.user_id == world.newcomer.id


@pytest.mark.parametrize("issuer", ["jonas", "operator", "admin"])
async def test_its_holder_and_its_company_s_staff_may_issue_it_at_once(
        store: Store, issuer: str) -> None:
    """A lost card found again goes back to its holder; staff handing out cards may give
    the number to anyone they manage."""
    clock, world = Clock(), World()
    await world.stored(store)
    services = instance(store, clock)
    await removed(services, world)
    holder = world.jonas if issuer == "jonas" else world.colleague
    again = await services.fleet.issue_id_tag(Viewer.of(getattr(world, issuer)), tag=TAG,
                                              user_id=holder.id)
    assert again.user_id == holder.id
    await services.fleet.settled()


async def test_the_refusal_names_who_may_issue_it_now(store: Store) -> None:
    """QA s33: it said "or by its operator now" of a sign-up's own card too, which has
    no operator (no company): that one says the days only."""
    clock, world = Clock(), World()
    await world.stored(store)
    services = instance(store, clock)
    await removed(services, world)  # a card of Jonas, of Acme
    company_card = await refused(services, Viewer.of(world.newcomer), world.newcomer.id)
    assert company_card.message == (
        "this card number was in use recently: it can be issued again 30 days after it "
        "was freed, or by the company's staff now")
    newcomer = Viewer.of(world.newcomer)
    own = await services.fleet.issue_id_tag(newcomer, tag="OWN-0001")
    await services.fleet.remove_id_tag(newcomer, own.id)
    await services.fleet.settled()
    with pytest.raises(Conflict) as caught:
        await services.fleet.issue_id_tag(Viewer.of(world.jonas), tag="OWN-0001")
    assert (caught.value.code, caught.value.field) == ("IN_USE", "tag")
    assert caught.value.message == ("this card number was in use recently: it can be "
                                    "issued again 30 days after it was freed")


async def test_an_erased_account_s_card_numbers_are_held_back_and_answered_invalid(
        store: Store) -> None:
    clock, world = Clock(), World()
    await world.stored(store)
    cp = station(company_id=world.acme.id)
    await put(store, cp)
    services = instance(store, clock)
    await services.fleet.issue_id_tag(Viewer.of(world.jonas), tag=TAG)
    assert (await services.charging.authorize(cp.cp_id, TAG)).status == "Accepted"
    await services.erasure.erase_user(Viewer.of(world.admin), world.jonas.id)
    await services.erasure.settled()
    await services.fleet.settled()
    assert await store.find_one(IdTag, ALL) is None
    # The physical card presented at a charger: Invalid, as for a number never issued.
    assert (await services.charging.authorize(cp.cp_id, TAG)).status == "Invalid"
    await refused(services, Viewer.of(world.newcomer), world.newcomer.id)
    card = await services.fleet.issue_id_tag(Viewer.of(world.operator), tag=TAG,
                                             user_id=world.colleague.id)
    assert card.user_id == world.colleague.id
    await services.fleet.settled()


def deletes_a_card(change: object) -> bool:
    return isinstance(change, Delete) and isinstance(change.record, IdTag)


@pytest.mark.parametrize("freed_by", ["removal", "erasure"])
async def test_an_issue_on_another_instance_landing_right_after_the_card_s_delete_is_refused(
        store: Store, monkeypatch: pytest.MonkeyPatch, freed_by: str) -> None:
    """Review r32-c: on MongoDB a batch's changes land one by one, and the freeing was
    written after the card's delete: a newcomer's issue on another instance landing in
    between took the number, its guard finding no freeing. Written first, the freeing
    is there for any issue landing after the delete."""
    clock, world = Clock(), World()
    await world.stored(store)
    a, b = instance(store, clock), instance(store, clock)
    card = await a.fleet.issue_id_tag(Viewer.of(world.jonas), tag=TAG)
    told: list[str] = []

    async def take() -> None:
        try:
            await b.fleet.issue_id_tag(Viewer.of(world.newcomer), tag=TAG)
            told.append("issued")
        except Conflict as error:
            told.append(f"{error.code} on {error.field}")
    right_after(store, monkeypatch, deletes_a_card, take)
    if freed_by == "removal":
        await a.fleet.remove_id_tag(Viewer.of(world.jonas), card.id)
    else:
        await a.erasure.erase_user(Viewer.of(world.admin), world.jonas.id)
        await a.erasure.settled()
    await a.fleet.settled()
    await b.fleet.settled()
    assert told == ["IN_USE on tag"]
    assert await store.find_all(IdTag, ALL) == []
    assert len(await store.find_all(FreedIdTag, ALL)) == 1
