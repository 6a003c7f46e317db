"""A driver's own cards are capped (``FleetService.max_cards_per_driver``,
``CHARGEGRAPH_MAX_CARDS_PER_DRIVER``) on both stores: QA s33, one sign-up issued itself 40
card numbers in a row, each then refused to everyone else (DUPLICATE, and IN_USE for 30
days after its removal). Staff issuing for a driver are not capped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from domain.entities import IdTag, IdTagStatus, Role, User
from domain.errors import Conflict
from domain.policy import Viewer
from domain.ports import Insert, Store
from domain.query import Eq
from domain.services import Services
from tests.contract.factories import company, put, user
from tests.contract.instances import Clock, instance

CAP = 3


def capped(store: Store, clock: Clock) -> Services:
    services = instance(store, clock)
    services.fleet.max_cards_per_driver = CAP
    return services


async def refused(services: Services, viewer: Viewer, tag: str) -> Conflict:
    with pytest.raises(Conflict) as caught:
        await services.fleet.issue_id_tag(viewer, tag=tag)
    assert (caught.value.code, caught.value.field) == ("LIMIT_REACHED", "tag")
    return caught.value


async def test_a_driver_issues_themselves_no_card_beyond_the_cap(store: Store) -> None:
    acme = company()
    driver = user(company_id=acme.id)
    operator = user(role=Role.OPERATOR, company_id=acme.id)
    await put(store, acme, driver, operator)
    services = capped(store, Clock())
    me = Viewer.of(driver)
    cards = [await services.fleet.issue_id_tag(me, tag=f"BENX-{n:03}") for n in range(CAP)]
    # Any status counts: a card they blocked (lost) is still theirs.
    await services.fleet.update_id_tag(me, cards[0].id, status=IdTagStatus.BLOCKED)
    await services.fleet.settled()
    error = await refused(services, me, "BENX-003")
    assert f"you hold {CAP} cards already, {CAP} the most" in error.message
    # Their company's staff hand out cards beyond it; those count toward the driver's own.
    await services.fleet.issue_id_tag(Viewer.of(operator), tag="ACME-0001",
                                      user_id=driver.id)
    # The refusal says what they hold, not the cap (review r33: "you hold 3").
    error = await refused(services, me, "BENX-003")
    assert f"you hold {CAP + 1} cards already, {CAP} the most" in error.message
    # A card removed no longer counts: one place freed, one more card.
    await services.fleet.remove_id_tag(me, cards[1].id)
    await services.fleet.remove_id_tag(me, cards[2].id)
    await services.fleet.settled()
    await services.fleet.issue_id_tag(me, tag="BENX-003")
    await refused(services, me, "BENX-004")
    assert len(await store.find_all(IdTag, Eq("user_id", driver.id))) == CAP
    # 0: no limit.
    services.fleet.max_cards_per_driver = 0
    await services.fleet.issue_id_tag(me, tag="BENX-004")


async def test_two_issues_racing_for_the_last_place_on_two_instances_keep_one(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both read the driver holding one card fewer than the cap; the one whose write
    lands second fails its guard and, read again, is refused."""
    driver, a, b = await _driver_on_two_instances(store)
    me = Viewer.of(driver)
    for n in range(CAP - 1):
        await a.fleet.issue_id_tag(me, tag=f"BENX-{n:03}")
    write = store.write
    raced = False

    async def b_first(changes: Any, *args: Any, **kwargs: Any) -> None:
        # A's write, its checks done: B's whole issue lands before it.
        nonlocal raced
        if not raced and any(isinstance(c, Insert) and isinstance(c.record, IdTag)
                             for c in changes):
            raced = True
            await b.fleet.issue_id_tag(me, tag="BENX-B")
        await write(changes, *args, **kwargs)
    monkeypatch.setattr(store, "write", b_first)

    await refused(a, me, "BENX-A")
    held = await store.find_all(IdTag, Eq("user_id", driver.id))
    assert raced and len(held) == CAP
    assert "BENX-B" in {card.tag for card in held}


async def test_two_issues_at_once_below_the_cap_both_land(store: Store) -> None:
    """Two issues at once by a driver with room for both (on two instances): neither
    takes the last place, so neither carries the cap's guard; on MongoDB, where guards
    are read after the write, each saw the other's card, both were undone and, retried
    in step, both answered CHANGED (review r33)."""
    driver, a, b = await _driver_on_two_instances(store)
    # No pause to part them: both fit, neither should need to run again.
    a.fleet.pause_to_retry = b.fleet.pause_to_retry = None
    me = Viewer.of(driver)
    await asyncio.gather(a.fleet.issue_id_tag(me, tag="BENX-A"),
                         b.fleet.issue_id_tag(me, tag="BENX-B"))
    held = await store.find_all(IdTag, Eq("user_id", driver.id))
    assert {card.tag for card in held} == {"BENX-A", "BENX-B"}


async def test_two_issues_at_once_for_the_last_place_give_one_card_and_one_refusal(
        store: Store) -> None:
    """Both carry the cap's guard; on MongoDB both may be undone, and the retries'
    random pauses (``pause_to_retry``) part them: one lands, the other, read again, is
    refused, not CHANGED (review r33: CHANGED, CHANGED in 8 races of 8)."""
    driver, a, b = await _driver_on_two_instances(store)
    me = Viewer.of(driver)
    for n in range(CAP - 1):
        await a.fleet.issue_id_tag(me, tag=f"BENX-{n:03}")
    answers = await asyncio.gather(a.fleet.issue_id_tag(me, tag="BENX-A"),
                                   b.fleet.issue_id_tag(me, tag="BENX-B"),
                                   return_exceptions=True)
    issued = [answer for answer in answers if isinstance(answer, IdTag)]
    refusals = [answer for answer in answers if isinstance(answer, Conflict)]
    assert len(issued) == 1 and len(refusals) == 1, answers
    assert refusals[0].code == "LIMIT_REACHED"
    held = await store.find_all(IdTag, Eq("user_id", driver.id))
    assert len(held) == CAP and issued[0].tag in {card.tag for card in held}


async def _driver_on_two_instances(store: Store) -> tuple[User, Services, Services]:
    """A driver holding no card, and two instances' services on one clock."""
    driver = user()
    await put(store, driver)
    clock = Clock()
    return driver, capped(store, clock), capped(store, clock)
