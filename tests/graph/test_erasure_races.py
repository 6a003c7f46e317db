"""An erasure and what lands around it (review s22 of ``domain/services/erasure.py``): a
scrub that fails, a second erasure, and requests of other instances landing between the
erasure's reads and its write (run here from inside the write, as such a request would
land), on both stores."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

import domain.services.erasure as erasure_module
from domain import entities as d
from domain.events import AccessChanged
from domain.policy import Viewer
from domain.ports import Insert
from domain.query import ALL, Eq, all_of
from domain.services import Services
from tests.contract.factories import id_tag, vehicle
from tests.graph.test_erasure import NO_WEBHOOKS
from tests.graph.world import World
from tests.support.mongo_backend import unhurried_batches

#: What names driver2 in the world: their name, email, plate and its key.
PERSONAL = ("Driver2", "driver2@example.com", "B-DR 2", "BDR2")


async def settle(services: Services) -> None:
    await services.erasure.settled()
    await services.withdrawal.settled()


async def audit_text(services: Services) -> str:
    entries = await services.ctx.store.find_all(d.AuditEntry, ALL, limit=10_000)
    return json.dumps([(e.before, e.after) for e in entries])


async def test_a_failed_scrub_still_signs_out_withdraws_and_is_retried(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    erasure = services.erasure
    published: list[Any] = []
    real_publish = erasure.accounts.publish  # the sign-out goes as a deactivation's

    async def publish(event: Any) -> None:
        published.append(event)
        await real_publish(event)

    withdrawn: list[list[str]] = []

    async def on_erased(viewer: Viewer, user: d.User, cards: Sequence[d.IdTag]) -> None:
        withdrawn.append([c.tag for c in cards])

    real_scrub = erasure._scrub_audit
    scrubs: list[str] = []

    async def scrub_failing_once(erased: d.User) -> None:
        scrubs.append(erased.id)
        if len(scrubs) == 1:
            raise RuntimeError("the store went away mid-scrub")
        await real_scrub(erased)

    monkeypatch.setattr(erasure.accounts, "publish", publish)
    monkeypatch.setattr(erasure, "on_erased", on_erased)
    monkeypatch.setattr(erasure, "_scrub_audit", scrub_failing_once)
    monkeypatch.setattr(erasure_module, "SCRUB_RETRY_S", (0.0,), raising=False)
    person = world.users["driver2"]

    # The erasure happened: its caller is told so, not the scrub's failure.
    erased = await erasure.erase_user(world.viewer("admin"), person.id)
    assert erased.erased_at is not None
    # Signed out and the card withdrawn although the scrub failed.
    assert [type(e) for e in published] == [AccessChanged]
    await settle(services)
    assert withdrawn == [["TAG-DRIVER2"]]
    # The scrub was tried again in the background, and this time it went through.
    assert scrubs == [person.id, person.id]
    text = await audit_text(services)
    assert [p for p in PERSONAL if p in text] == []


def inside_the_write(services: Services, monkeypatch: pytest.MonkeyPatch,
                     action: Callable[[], Awaitable[None]]) -> None:
    """Runs ``action`` once inside the erasure's write, after it read the person's
    account, cars and cards and before it commits: another instance's request landing
    then."""
    erasure = services.erasure
    real_commit = erasure.commit
    done: list[bool] = []

    async def commit(*args: Any, **kwargs: Any) -> None:
        if not done:
            done.append(True)
            await action()
        await real_commit(*args, **kwargs)

    monkeypatch.setattr(erasure, "commit", commit)


async def test_a_car_handed_to_someone_else_meanwhile_is_theirs_untouched(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    car = world.vehicles["driver2"]
    driver1 = world.users["driver1"]

    async def hand_over() -> None:
        await services.fleet.update_vehicle(world.viewer("admin"), car.id,
                                            owner_id=driver1.id)

    inside_the_write(services, monkeypatch, hand_over)
    erased = await services.erasure.erase_user(world.viewer("admin"),
                                               world.users["driver2"].id)
    await settle(services)
    [now] = await services.ctx.store.find_all(d.Vehicle, Eq("id", car.id))
    assert (now.owner_id, now.license_plate, now.removed_at) == (
        driver1.id, "B-DR 2", None)
    [entry] = [e for e in await services.ctx.store.find_all(d.AuditEntry, ALL)
               if e.action is d.AuditAction.ERASE]
    assert entry.after == {"vehicles_removed": 0, "id_tags_removed": 1, **NO_WEBHOOKS}
    assert erased.erased_at is not None


async def test_a_car_and_card_added_meanwhile_go_with_the_erasure(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    person = world.users["driver2"]
    added: dict[str, Any] = {}

    async def add() -> None:
        added["car"] = await services.fleet.add_vehicle(
            Viewer.of(person), license_plate="B-LATE 77", make="Fiat")
        added["card"] = await services.fleet.issue_id_tag(
            world.viewer("admin"), tag="TAG-LATE", user_id=person.id)

    inside_the_write(services, monkeypatch, add)
    await services.erasure.erase_user(world.viewer("admin"), person.id)
    await settle(services)
    [car] = await services.ctx.store.find_all(d.Vehicle, Eq("id", added["car"].id))
    assert (car.license_plate, car.plate_key) == ("ERASED", "ERASED")
    assert car.removed_at is not None
    assert await services.ctx.store.count(d.IdTag, Eq("user_id", person.id)) == 0
    assert [p for p in (*PERSONAL, "B-LATE 77", "BLATE77")
            if p in await audit_text(services)] == []
    [entry] = [e for e in await services.ctx.store.find_all(d.AuditEntry, ALL)
               if e.action is d.AuditAction.ERASE]
    assert entry.after == {"vehicles_removed": 2, "id_tags_removed": 2, **NO_WEBHOOKS}


async def test_a_card_changed_meanwhile_is_removed_as_it_stands_then(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    card = world.tags["driver2"]

    async def block() -> None:
        await services.fleet.update_id_tag(world.viewer("admin"), card.id,
                                           status=d.IdTagStatus.BLOCKED)

    inside_the_write(services, monkeypatch, block)
    await services.erasure.erase_user(world.viewer("admin"), world.users["driver2"].id)
    await settle(services)
    # Its removal's entry holds the card as the block left it: the images chain.
    entries = [e for e in await services.ctx.store.find_all(d.AuditEntry, ALL)
               if e.entity_id == card.id]
    deleted = [e for e in entries if e.action is d.AuditAction.DELETE]
    assert [e.before["status"] for e in deleted if e.before] == ["Blocked"]


async def test_erasing_again_keeps_when_and_counts_only_what_it_removed(
        services: Services, world: World) -> None:
    person = world.users["driver2"]
    admin = world.viewer("admin")
    # A car the person had removed themselves before: its plate goes, it is no removal
    # of the erasure's.
    old = await services.fleet.add_vehicle(Viewer.of(person), license_plate="B-OLD 1")
    await services.fleet.remove_vehicle(Viewer.of(person), old.id)
    first = await services.erasure.erase_user(admin, person.id)
    second = await services.erasure.erase_user(admin, person.id)
    await settle(services)
    assert second.erased_at == first.erased_at
    [stored] = await services.ctx.store.find_all(d.User, Eq("id", person.id))
    assert stored.erased_at == first.erased_at
    [car] = await services.ctx.store.find_all(d.Vehicle, Eq("id", old.id))
    assert car.license_plate == "ERASED"
    entries = [e for e in await services.ctx.store.find_all(d.AuditEntry, ALL)
               if e.action is d.AuditAction.ERASE]
    assert [e.after for e in entries] == [
        {"vehicles_removed": 1, "id_tags_removed": 1, **NO_WEBHOOKS},
        {"vehicles_removed": 0, "id_tags_removed": 0, **NO_WEBHOOKS}]


async def test_a_fleet_of_over_a_thousand_cards_and_cars_goes_whole(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """More than ``find_all``'s default limit (1000) of each."""
    unhurried_batches(monkeypatch)
    person = world.users["driver2"]
    store = services.ctx.store
    await store.write([Insert(id_tag(person, tag=f"FLEET-{i:05d}")) for i in range(1000)]
                      + [Insert(vehicle(person, license_plate=f"B-FL {i}"))
                         for i in range(1000)], [])
    withdrawn: list[int] = []

    async def on_erased(viewer: Viewer, user: d.User, cards: Sequence[d.IdTag]) -> None:
        withdrawn.append(len(cards))

    monkeypatch.setattr(services.erasure, "on_erased", on_erased)
    await services.erasure.erase_user(world.viewer("admin"), person.id)
    await settle(services)
    assert await store.count(d.IdTag, Eq("user_id", person.id)) == 0
    assert await store.count(d.Vehicle, all_of(Eq("owner_id", person.id),
                                               Eq("removed_at", None))) == 0
    assert await store.count(d.Vehicle, all_of(Eq("owner_id", person.id),
                                               Eq("license_plate", "ERASED"))) == 1001
    assert withdrawn == [1001]
    [entry] = [e for e in await store.find_all(d.AuditEntry, ALL, limit=10_000)
               if e.action is d.AuditAction.ERASE]
    assert entry.after == {"vehicles_removed": 1001, "id_tags_removed": 1001, **NO_WEBHOOKS}


async def test_a_start_that_read_the_card_before_the_erasure_charges_for_no_one(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from domain.clock import utcnow
    person = world.users["driver2"]
    real_commit = services.charging.commit
    erased: list[d.User] = []

    async def commit(actor: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
        # The start has read the card; the erasure lands before its write.
        if not erased and any(isinstance(c.record, d.Session) for c, _ in changes):
            erased.append(await services.erasure.erase_user(world.viewer("admin"),
                                                            person.id))
        await real_commit(actor, changes, *args, **kwargs)

    monkeypatch.setattr(services.charging, "commit", commit)
    tx, info = await services.charging.start_transaction("B-002", 1, "TAG-driver2", 0,
                                                         utcnow())
    await settle(services)
    assert erased and erased[0].erased_at is not None
    assert info.status == "Invalid"
    [session] = await services.ctx.store.find_all(d.Session, Eq("transaction_id", tx))
    assert (session.state, session.user_id) == (d.SessionState.ACTIVE, None)
    assert await services.ctx.store.count(d.Session, all_of(
        Eq("user_id", person.id), Eq("state", d.SessionState.ACTIVE))) == 0


async def test_no_station_is_handed_to_an_erased_account(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from domain.errors import Conflict
    admin = world.viewer("admin")
    op = world.users["op_a2"]  # an operator of company a who owns nothing
    station = world.stations["A-001"]
    real_commit = services.stations.commit
    erased: list[d.User] = []

    async def commit(viewer: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
        # The hand-over has read the owner; their erasure lands before its write.
        if not erased:
            erased.append(await services.erasure.erase_user(admin, op.id))
        await real_commit(viewer, changes, *args, **kwargs)

    monkeypatch.setattr(services.stations, "commit", commit)
    with pytest.raises(Conflict) as raised:
        await services.stations.update_station(admin, station.id, owner_id=op.id)
    assert (raised.value.field, raised.value.code) == ("ownerId", "INVALID_STATE")
    assert erased and erased[0].erased_at is not None
    [now] = await services.ctx.store.find_all(d.Station, Eq("id", station.id))
    assert now.owner_id == world.users["op_a"].id
    # Afterwards too, and to a new station.
    with pytest.raises(Conflict):
        await services.stations.update_station(admin, station.id, owner_id=op.id)
    with pytest.raises(Conflict):
        await services.stations.create_station(admin, cp_id="A-NEW", name="New",
                                               owner_id=op.id, lat=52.5, lon=13.4)


async def test_a_card_is_not_linked_to_a_car_removed_meanwhile(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from domain.errors import NotFound
    from domain.services.fleet import FleetService
    person = world.users["driver2"]
    car = world.vehicles["driver2"]
    original = FleetService._vehicle_of
    removed: list[bool] = []

    async def vehicle_of(self: FleetService, viewer: Viewer, owner: d.User,
                         vehicle_id: str) -> d.Vehicle:
        found = await original(self, viewer, owner, vehicle_id)
        if not removed:  # the link has read the car; its removal lands now
            removed.append(True)
            await services.fleet.remove_vehicle(Viewer.of(person), vehicle_id)
        return found

    monkeypatch.setattr(FleetService, "_vehicle_of", vehicle_of)
    with pytest.raises(NotFound) as raised:
        await services.fleet.issue_id_tag(Viewer.of(person), tag="TAG-NEW",
                                          vehicle_id=car.id)
    assert raised.value.field == "vehicleId"
    assert await services.ctx.store.count(d.IdTag, Eq("tag", "TAG-NEW")) == 0
    # The same for a card's new link.
    card = await services.fleet.issue_id_tag(Viewer.of(person), tag="TAG-TWO")
    other = await services.fleet.add_vehicle(Viewer.of(person), license_plate="B-TWO 2")
    removed.clear()
    with pytest.raises(NotFound):
        await services.fleet.update_id_tag(Viewer.of(person), card.id, vehicle_id=other.id)
    [stored] = await services.ctx.store.find_all(d.IdTag, Eq("id", card.id))
    assert stored.vehicle_id is None


async def test_a_car_s_removal_unlinks_a_card_linked_meanwhile(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    person = world.users["driver2"]
    car = world.vehicles["driver2"]
    card = await services.fleet.issue_id_tag(Viewer.of(person), tag="TAG-LINK")
    real_commit = services.fleet.commit
    linked: list[bool] = []

    async def commit(viewer: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
        removing = any(isinstance(c.record, d.Vehicle) and c.record.removed_at is not None
                       for c, _ in changes)
        if removing and not linked:  # the removal has read the car's links
            linked.append(True)
            await services.fleet.update_id_tag(Viewer.of(person), card.id,
                                               vehicle_id=car.id)
        await real_commit(viewer, changes, *args, **kwargs)

    monkeypatch.setattr(services.fleet, "commit", commit)
    await services.fleet.remove_vehicle(Viewer.of(person), car.id)
    [stored] = await services.ctx.store.find_all(d.IdTag, Eq("id", card.id))
    assert linked and stored.vehicle_id is None


async def test_no_car_or_card_is_given_to_an_erased_account(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from domain.errors import Conflict
    admin = world.viewer("admin")
    person = world.users["driver2"]
    real_commit = services.fleet.commit
    erased: list[d.User] = []

    async def commit(viewer: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
        # The new card has read its holder; their erasure lands before its write.
        if not erased:
            erased.append(await services.erasure.erase_user(admin, person.id))
        await real_commit(viewer, changes, *args, **kwargs)

    monkeypatch.setattr(services.fleet, "commit", commit)
    with pytest.raises(Conflict) as raised:
        await services.fleet.issue_id_tag(admin, tag="TAG-LATE", user_id=person.id)
    assert (raised.value.field, raised.value.code) == ("userId", "INVALID_STATE")
    monkeypatch.setattr(services.fleet, "commit", real_commit)
    with pytest.raises(Conflict):
        await services.fleet.add_vehicle(admin, license_plate="B-LATE 1", owner_id=person.id)
    with pytest.raises(Conflict):
        await services.fleet.update_vehicle(admin, world.vehicles["driver1"].id,
                                            owner_id=person.id)
    assert await services.ctx.store.count(d.IdTag, Eq("user_id", person.id)) == 0
    assert await services.ctx.store.count(d.Vehicle, all_of(
        Eq("owner_id", person.id), Eq("removed_at", None))) == 0


async def test_a_car_added_as_its_owner_is_erased_is_refused_on_its_owner(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s25: the new car has read its owner; their erasure lands before its write. The
    guard refuses the write, and the add runs again as ``issueIdTag`` does: refused on
    ``ownerId`` (INVALID_STATE), not told ``CHANGED`` on an ``id`` its input has not."""
    from domain.errors import Conflict
    admin = world.viewer("admin")
    person = world.users["driver2"]
    real_commit = services.fleet.commit
    erased: list[d.User] = []

    async def commit(viewer: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
        if not erased:
            erased.append(await services.erasure.erase_user(admin, person.id))
        await real_commit(viewer, changes, *args, **kwargs)

    monkeypatch.setattr(services.fleet, "commit", commit)
    with pytest.raises(Conflict) as raised:
        await services.fleet.add_vehicle(admin, license_plate="B-LATE 1", owner_id=person.id)
    assert (raised.value.field, raised.value.code) == ("ownerId", "INVALID_STATE")
    assert await services.ctx.store.count(d.Vehicle, all_of(
        Eq("owner_id", person.id), Eq("removed_at", None))) == 0


async def test_two_admins_erasing_each_other_leave_one(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from domain.errors import Conflict
    a = world.users["admin"]
    b = await services.accounts.create_user(
        world.viewer("admin"), email="b@example.com", password="pw pw pw 12", name="B",
        role=d.Role.ADMIN)

    async def b_erases_a() -> None:
        await services.erasure.erase_user(Viewer.of(b), a.id)

    inside_the_write(services, monkeypatch, b_erases_a)
    with pytest.raises(Conflict) as raised:
        await services.erasure.erase_user(Viewer.of(a), b.id)
    assert raised.value.code == "IN_USE"
    admins = await services.ctx.store.find_all(d.User, Eq("role", d.Role.ADMIN))
    assert [u.id for u in admins if u.active] == [b.id]
