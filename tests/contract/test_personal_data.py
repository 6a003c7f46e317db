"""What a person's copy of their data asks of a store (``domain/services/personal_data.py``),
on every backend: each section is the person's records and nobody else's (a shared
station's other drivers stay out), read a page at a time; removed cars are in; the
audit log is the entries about them and those they made, merged newest first (each
list in its index's order), each entry once, capped; the export is recorded; and who
may export whose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

from domain.entities import AuditAction, AuditEntry, E, Role, SessionState, User, Webhook
from domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from domain.policy import ANONYMOUS, Policy, Viewer
from domain.ports import Store
from domain.query import Eq, Filter
from domain.services.base import ServiceContext
from domain.services.personal_data import AuditItem, PersonalDataService
from domain.services.refresh_tokens import RefreshTokenService
from tests.contract.factories import (
    T0,
    at,
    audit,
    company,
    id_tag,
    payment,
    put,
    refund,
    reservation,
    session,
    station,
    user,
    vehicle,
)
from tests.helpers import FastHasher

T = TypeVar("T")


async def every(pages: AsyncIterator[list[T]]) -> list[list[T]]:
    return [page async for page in pages]


def flat(pages: list[list[T]]) -> list[T]:
    return [item for page in pages for item in page]


def service(store: Store) -> PersonalDataService:
    return PersonalDataService(ServiceContext(store=store, policy=Policy(),
                                              hasher=FastHasher()))


def asking(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[Filter]:
    """The filters ``store.find_all`` is asked from now on."""
    asked: list[Filter] = []
    find_all = store.find_all

    async def recorded(kind: type[E], where: Filter, *args: Any, **kwargs: Any) -> list[E]:
        asked.append(where)
        return await find_all(kind, where, *args, **kwargs)

    monkeypatch.setattr(store, "find_all", recorded)
    return asked


async def test_each_section_holds_the_persons_records_only_a_page_at_a_time(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    volt = company()
    person = user(company_id=volt.id, role=Role.OPERATOR)
    other = user()
    shared = station(company_id=volt.id)
    kept_car = vehicle(person)
    removed_car = vehicle(person, removed_at=T0)
    others_car = vehicle(other)
    cards = [id_tag(person), id_tag(person, vehicle_id=kept_car.id)]
    others_card = id_tag(other)
    theirs = [session(shared, user_id=person.id, transaction_id=9000 + n,
                      start_time=at(n), energy_wh=1000 * n, cost_minor=40 * n,
                      currency="EUR", state=SessionState.COMPLETED) for n in range(5)]
    others_session = session(shared, user_id=other.id, start_time=at(3))  # charging
    paid = payment(theirs[0])
    others_paid = payment(others_session)
    back = refund(theirs[0], paid.id)
    others_back = refund(others_session, others_paid.id)
    held = reservation(shared, user_id=person.id)
    others_held = reservation(shared, user_id=other.id)
    own_hook = Webhook(url="https://me.example.org/hook", events=["session.ended"],
                       secret="never-exported", owner_id=person.id, company_id=volt.id)
    others_hook = Webhook(url="https://x.example.org/", events=["ping"], secret="s",
                          owner_id=other.id)
    await put(store, volt, person, other, shared, kept_car, removed_car, others_car,
              *cards, others_card, *theirs, others_session, paid, others_paid, back,
              others_back, held, others_held, own_hook, others_hook)
    refresh = RefreshTokenService(ServiceContext(store=store, policy=Policy(),
                                                 hasher=FastHasher()))
    await refresh.start(person)
    await refresh.start(other)
    monkeypatch.setattr("domain.services.personal_data.READ_ROWS", 2)

    data = await service(store).open(Viewer.of(person), None)

    sessions = await every(data.sessions())
    assert [len(p) for p in sessions] == [2, 2, 1]  # read a page at a time
    assert {s.id for s in flat(sessions)} == {s.id for s in theirs}
    assert {v.id for v in flat(await every(data.vehicles()))} == {kept_car.id,
                                                                   removed_car.id}
    assert {c.id for c in flat(await every(data.id_tags()))} == {c.id for c in cards}
    assert [p.id for p in flat(await every(data.payments()))] == [paid.id]
    assert [r.id for r in flat(await every(data.refunds()))] == [back.id]
    assert [r.id for r in flat(await every(data.reservations()))] == [held.id]
    assert [w.id for w in flat(await every(data.webhooks()))] == [own_hook.id]
    devices = flat(await every(data.devices()))
    assert [d.user_id for d in devices] == [person.id]
    # The export is recorded, about the person, in their company's books.
    [entry] = await store.find_all(AuditEntry, Eq("action", AuditAction.EXPORT))
    assert (entry.entity, entry.entity_id, entry.actor, entry.holder_id,
            entry.company_id) == ("user", person.id, person.id, person.id, volt.id)


async def test_a_car_handed_over_is_not_in_its_former_drivers_copy(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r28-org: the copy's cars are those the person owns. Since a driver's vehicle
    scope also takes the cars of their sessions (a car handed over stays on its former
    driver's sessions), reading "their cars" by that scope exported a car handed to
    another owner as the former driver's, with its new owner's private battery figure
    and its ``removedAt``."""
    former, new_owner = user(), user()
    st = station()
    car = vehicle(new_owner, battery_kwh=77.0)  # charged by ``former``, handed over since
    past = session(st, user_id=former.id, vehicle_id=car.id, start_time=T0,
                   state=SessionState.COMPLETED)
    await put(store, former, new_owner, st, car, past)
    data = await service(store).open(Viewer.of(former), None)
    asked = asking(store, monkeypatch)
    assert flat(await every(data.vehicles())) == []
    # By owner alone (their index): not also by their scope's sub-select of their
    # sessions' cars, a join (a ``$lookup`` on MongoDB) that cannot add one of theirs.
    assert asked == [Eq("owner_id", former.id)]
    assert [s.id for s in flat(await every(data.sessions()))] == [past.id]
    theirs = await service(store).open(Viewer.of(new_owner), None)
    assert [(v.id, v.battery_kwh) for v in flat(await every(theirs.vehicles()))] \
        == [(car.id, 77.0)]


async def test_the_audit_log_merges_about_and_made_by_newest_first_capped(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # An admin, who reads every entry they made (a driver reads fewer: the next test).
    person, other = user(role=Role.ADMIN), user(role=Role.ADMIN)
    card = id_tag(person)
    others_card = id_tag(other)
    await put(store, person, other, card, others_card)
    # About them, by someone else; about them, by them (in both lists: once); about
    # someone else, by them (no images); about someone else, by someone else (out).
    about = [audit(card, other.id, holder_id=person.id, at=at(2 * n),
                   after={"tag": "MINE"}) for n in range(4)]
    both = audit(person, person.id, holder_id=person.id, at=at(3),
                 after={"name": "Me"})
    made = [audit(others_card, person.id, holder_id=other.id, at=at(2 * n + 1),
                  after={"tag": "THEIRS"}) for n in range(3)]
    tie = audit(others_card, person.id, holder_id=other.id, at=at(2),
                after={"tag": "THEIRS"})
    unrelated = audit(others_card, other.id, holder_id=other.id, at=at(10))
    await store.write([], [*about, both, *made, tie, unrelated])
    monkeypatch.setattr("domain.services.personal_data.READ_ROWS", 2)
    data = await service(store).open(Viewer.of(other), person.id)  # an admin's

    log = data.audit_log()
    items: list[AuditItem] = flat([page async for page in log])
    export = (await store.find_all(AuditEntry, Eq("action", AuditAction.EXPORT)))[0]
    expected = sorted([*about, both, *made, tie, export],  # ties last written first
                      key=lambda e: (e.at, e.id), reverse=True)
    assert [i.entry.id for i in items] == [e.id for e in expected]
    assert log.complete
    assert {i.entry.id for i in items if i.about_them} == \
        {e.id for e in [*about, both, export]}

    capped = data.audit_log(cap=4)
    first = flat([page async for page in capped])
    assert [i.entry.id for i in first] == [e.id for e in expected[:4]]
    assert not capped.complete


async def test_the_entries_they_made_are_those_their_role_reads_now(
        store: Store) -> None:
    """An admin demoted to driver keeps only the entries about what is theirs; an
    operator who moved company keeps those of the new company's books, not the old
    one's (the audit scope of ``auditLog``, the same query on every store)."""
    volt, ampere = company(), company()
    demoted = user()  # once an admin
    mover = user(role=Role.OPERATOR, company_id=ampere.id)  # once at Volt
    driver = user()
    card = id_tag(driver)
    old_station, new_station = station(company_id=volt.id), station(company_id=ampere.id)
    await put(store, volt, ampere, demoted, mover, driver, card, old_station, new_station)
    own = audit(demoted, demoted.id, holder_id=demoted.id, at=at(1))
    managed = audit(card, demoted.id, holder_id=driver.id, at=at(2))
    old_books = audit(old_station, mover.id, company_id=volt.id, at=at(3))
    new_books = audit(new_station, mover.id, company_id=ampere.id, at=at(4))
    await store.write([], [own, managed, old_books, new_books])
    personal = service(store)

    async def listed(person: User) -> list[str]:
        data = await personal.open(Viewer.of(person), None)
        return [i.entry.id async for page in data.audit_log() for i in page
                if i.entry.action is not AuditAction.EXPORT]

    assert await listed(demoted) == [own.id]
    assert await listed(mover) == [new_books.id]


async def test_who_may_export_whose(store: Store) -> None:
    volt = company()
    admin = user(role=Role.ADMIN)
    op = user(role=Role.OPERATOR, company_id=volt.id)
    colleague = user(role=Role.OPERATOR, company_id=volt.id)
    driver, driver2 = user(), user()
    erased = user(erased_at=T0, active=False)
    await put(store, volt, admin, op, colleague, driver, driver2, erased)
    personal = service(store)

    for viewer, whose in ((Viewer.of(driver), None), (Viewer.of(op), None),
                          (Viewer.of(admin), driver.id), (Viewer.of(admin), op.id)):
        data = await personal.open(viewer, whose)
        assert data.subject.id == (whose or viewer.user_id)
    with pytest.raises(Forbidden):  # seen, not theirs to export
        await personal.open(Viewer.of(op), colleague.id)
    for viewer, whose in ((Viewer.of(driver), driver2.id), (Viewer.of(op), driver.id),
                          (Viewer.of(admin), "0" * 24)):
        with pytest.raises(NotFound):  # as if missing
            await personal.open(viewer, whose)
    with pytest.raises(Unauthenticated):
        await personal.open(ANONYMOUS, driver.id)
    with pytest.raises(Conflict) as refused:
        await personal.open(Viewer.of(admin), erased.id)
    assert refused.value.code == "ERASED"
    # Refusals record nothing; each export made one entry.
    exports = await store.find_all(AuditEntry, Eq("action", AuditAction.EXPORT))
    assert sorted((e.actor, e.entity_id) for e in exports) == sorted(
        [(driver.id, driver.id), (op.id, op.id), (admin.id, driver.id),
         (admin.id, op.id)])

