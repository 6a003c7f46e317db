"""Card numbers a user is told are someone's are counted (``FleetService.card_probes``,
``TAKEN_CARD_NUMBERS``) on both stores: review s33, a driver's ``issueIdTag`` answered
DUPLICATE for every number another driver held (IN_USE for another company's card group
and for a freed number held back), 60 tries in 5 s, unthrottled. Once spent, every issue
is refused TOO_MANY_ATTEMPTS before the number is read, whether it is taken or free."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from chargegraph.app import shared_throttles
from domain.entities import IdTag, Role
from domain.errors import DomainError
from domain.events import SignInsCounted
from domain.policy import Viewer
from domain.ports import Store
from domain.query import Eq
from domain.services import Services
from domain.services.fleet import CARD_PROBE_WINDOW
from domain.services.throttle_sharing import ThrottleSharing
from pubsub.memory import MemoryEventBus
from tests.contract.factories import company, put, user
from tests.contract.instances import T0, Clock, instance

LIMIT = 3


def limited(store: Store, clock: Clock) -> Services:
    services = instance(store, clock)
    services.fleet.card_probes.limit = LIMIT
    return services


async def refused(services: Services, viewer: Viewer, tag: str, code: str, *,
                  user_id: str | None = None, parent_tag: str | None = None
                  ) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await services.fleet.issue_id_tag(viewer, tag=tag, user_id=user_id,
                                          parent_tag=parent_tag)
    assert caught.value.code == code, caught.value.message
    return caught.value


class World:
    def __init__(self) -> None:
        self.acme, self.other = company(), company()
        self.holder = user(company_id=self.acme.id)
        self.prober = user()  # a sign-up, of no company
        self.operator = user(role=Role.OPERATOR, company_id=self.acme.id)
        self.their_operator = user(role=Role.OPERATOR, company_id=self.other.id)
        self.outsider = user(company_id=self.other.id)
        self.admin = user(role=Role.ADMIN)

    async def stored(self, store: Store, services: Services) -> None:
        """The holder's card DEMO-0001; another company's card in group GROUP-1; the
        number FREED-1, removed by its holder (held back 30 days)."""
        await put(store, self.acme, self.other, self.holder, self.prober, self.operator,
                  self.their_operator, self.outsider, self.admin)
        await services.fleet.issue_id_tag(Viewer.of(self.holder), tag="DEMO-0001")
        await services.fleet.issue_id_tag(Viewer.of(self.their_operator), tag="OTHR-1",
                                          user_id=self.outsider.id, parent_tag="GROUP-1")
        freed = await services.fleet.issue_id_tag(Viewer.of(self.holder), tag="FREED-1")
        await services.fleet.remove_id_tag(Viewer.of(self.holder), freed.id)
        await services.fleet.settled()


async def test_a_driver_told_numbers_are_taken_is_refused_before_any_is_read(
        store: Store) -> None:
    clock, world = Clock(), World()
    services = limited(store, clock)
    await world.stored(store, services)
    me = Viewer.of(world.prober)
    # A free number is no probe: issued, and not counted.
    await services.fleet.issue_id_tag(me, tag="MINE-0001")
    # Each refusal that says a number is someone's is counted: the three kinds.
    await refused(services, me, "DEMO-0001", "DUPLICATE")
    clock.now = T0 + timedelta(minutes=10)
    await refused(services, me, "GROUP-1", "IN_USE")
    await refused(services, me, "FREED-1", "IN_USE")
    # Spent: refused before the number is read, taken or free alike (the answer tells
    # nothing), and a free one is not issued.
    error = await refused(services, me, "DEMO-0001", "TOO_MANY_ATTEMPTS")
    assert f"at most {LIMIT} an hour; try again in 50 min" in error.message
    await refused(services, me, "MINE-0002", "TOO_MANY_ATTEMPTS")
    assert await store.find_one(IdTag, Eq("tag", "MINE-0002")) is None
    # A rolling window: once the oldest is an hour old, one more.
    clock.now = T0 + CARD_PROBE_WINDOW
    await refused(services, me, "DEMO-0001", "DUPLICATE")
    await refused(services, me, "MINE-0002", "TOO_MANY_ATTEMPTS")
    # Others' budgets are their own.
    await services.fleet.issue_id_tag(Viewer.of(world.holder), tag="HOLD-0002")


async def test_operators_are_counted_by_their_own_budget_admins_not(store: Store) -> None:
    """As operators' taken emails (``_counting_operator_probes``): other companies' cards
    do not exist for an operator, so each DUPLICATE or IN_USE of one tells them it does;
    an admin sees every card anyway."""
    clock, world = Clock(), World()
    services = limited(store, clock)
    await world.stored(store, services)
    operator = Viewer.of(world.operator)
    for _ in range(LIMIT - 1):
        await refused(services, operator, "DEMO-0001", "DUPLICATE", user_id=world.holder.id)
    # Another company's group as the card's group says it exists as well.
    await refused(services, operator, "ACME-1", "IN_USE", user_id=world.holder.id,
                  parent_tag="GROUP-1")
    await refused(services, operator, "ACME-2", "TOO_MANY_ATTEMPTS",
                  user_id=world.holder.id)
    admin = Viewer.of(world.admin)
    for _ in range(LIMIT + 1):
        await refused(services, admin, "DEMO-0001", "DUPLICATE", user_id=world.holder.id)
    await services.fleet.issue_id_tag(admin, tag="ADMN-1", user_id=world.holder.id)
    # The operator's budget spent is no driver's of their company.
    await refused(services, Viewer.of(world.holder), "DEMO-0001", "DUPLICATE")


async def test_a_group_refused_on_a_cards_edit_is_counted_as_an_issues(
        store: Store) -> None:
    """Review r33-d: ``updateIdTag(parentIdTag)`` answered IN_USE "this card group is
    another company's" 12 times with a budget of 3 (``_parent_tag`` matches other
    companies' card numbers too). It is counted in the same budget, refused once spent
    before the group is read, taken or free; an edit naming no group is neither."""
    clock, world = Clock(), World()
    services = limited(store, clock)
    await world.stored(store, services)
    operator = Viewer.of(world.operator)
    card = await services.fleet.issue_id_tag(operator, tag="ACME-1",
                                             user_id=world.holder.id)

    async def edit_refused(group: str, code: str) -> DomainError:
        with pytest.raises(DomainError) as caught:
            await services.fleet.update_id_tag(operator, card.id, parent_tag=group)
        assert caught.value.code == code, caught.value.message
        return caught.value

    await services.fleet.update_id_tag(operator, card.id, parent_tag="ACME-GRP")  # free
    await edit_refused("GROUP-1", "IN_USE")  # another company's group
    await edit_refused("OTHR-1", "IN_USE")  # another company's card number
    await refused(services, operator, "DEMO-0001", "DUPLICATE", user_id=world.holder.id)
    error = await edit_refused("GROUP-1", "TOO_MANY_ATTEMPTS")
    assert f"at most {LIMIT} an hour" in error.message
    await edit_refused("ACME-GRP2", "TOO_MANY_ATTEMPTS")  # free alike, and not set
    assert (await services.fleet.update_id_tag(operator, card.id, vehicle_id=None)
            ).parent_tag == "ACME-GRP"  # an edit naming no group still goes through
    await refused(services, operator, "ACME-2", "TOO_MANY_ATTEMPTS",
                  user_id=world.holder.id)  # one budget with issues
    admin = Viewer.of(world.admin)
    for _ in range(LIMIT + 1):
        await services.fleet.update_id_tag(admin, card.id, parent_tag="GROUP-1")


async def test_the_budget_is_shared_across_instances(store: Store) -> None:
    """A prober spreading tries over the instances meets one budget: ``shared_throttles``
    includes it, shared over the bus as sign-ins are (``ThrottleSharing``)."""
    clock, world = Clock(), World()
    a, b = limited(store, clock), limited(store, clock)
    await world.stored(store, a)
    bus = MemoryEventBus(queue_size=100)
    await bus.start()
    sharings = [ThrottleSharing(bus, shared_throttles(services)) for services in (a, b)]
    followers = [asyncio.create_task(sharing.follow(bus.subscribe([SignInsCounted.topic])))
                 for sharing in sharings]
    try:
        await asyncio.sleep(0)  # both subscribed
        me = Viewer.of(world.prober)
        for _ in range(LIMIT):
            await refused(a, me, "DEMO-0001", "DUPLICATE")
        await sharings[0].settled()
        for _ in range(200):  # bounded: the bus delivers within a few loop steps
            if b.fleet.card_probes.refused_for(world.prober.id) is not None:
                break
            await asyncio.sleep(0.005)
        await refused(b, me, "DEMO-0001", "TOO_MANY_ATTEMPTS")
    finally:
        for follower in followers:
            follower.cancel()
        await bus.close()
