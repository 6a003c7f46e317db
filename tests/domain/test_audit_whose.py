"""Whose each audit entry is, as the services write it (``base.Service._whose``), and who
reads it then (``Policy.scope("audit_entry")``): by the books and the person of the
record when it changed, not by who acted (QA s21: an operator's removals were read by
that operator alone, also after a move to another company or a demotion, and by neither
their colleagues nor the driver whose card or car was removed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from domain import entities as d
from domain.policy import SYSTEM, Policy, Viewer
from domain.query import Eq, all_of
from domain.services import ConnectorSpec, ServiceContext, Services
from store.sqlite import SqliteStore
from tests.helpers import FastHasher

PASSWORD = "correct horse battery"


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    store = SqliteStore(str(tmp_path / "whose.db"))
    await store.start()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
    yield services
    await services.fleet.settled()
    await services.accounts.settled()
    await store.close()


@dataclass
class People:
    a: d.Company
    b: d.Company
    admin: d.User
    op_a: d.User
    op_a2: d.User
    op_b: d.User
    driver_a: d.User  # one of A's people
    driver: d.User  # of no company


async def people(services: Services) -> People:
    acc = services.accounts
    a = await acc.create_company(SYSTEM, name="A")
    b = await acc.create_company(SYSTEM, name="B")

    async def person(name: str, role: d.Role, company: d.Company | None) -> d.User:
        return await acc.create_user(SYSTEM, email=f"{name}@example.com", password=PASSWORD,
                                     name=name, role=role,
                                     company_id=company.id if company else None)

    return People(a, b, await person("admin", d.Role.ADMIN, None),
                  await person("op_a", d.Role.OPERATOR, a),
                  await person("op_a2", d.Role.OPERATOR, a),
                  await person("op_b", d.Role.OPERATOR, b),
                  await person("driver_a", d.Role.DRIVER, a),
                  await person("driver", d.Role.DRIVER, None))


async def entry(services: Services, entity_id: str, action: d.AuditAction) -> d.AuditEntry:
    found = await services.ctx.store.find_all(
        d.AuditEntry, all_of(Eq("entity_id", entity_id), Eq("action", action)))
    assert len(found) == 1, found
    return found[0]


def whose(e: d.AuditEntry) -> tuple[str | None, str | None, str | None]:
    return e.company_id, e.station_owner_id, e.holder_id


async def readers(services: Services, e: d.AuditEntry, *viewers: Viewer) -> list[bool]:
    """For each viewer, whether their audit log holds ``e``."""
    seen = []
    for viewer in viewers:
        scope = all_of(services.policy.scope(viewer, "audit_entry"), Eq("id", e.id))
        seen.append(await services.ctx.store.count(d.AuditEntry, scope) == 1)
    return seen


async def test_a_removal_is_read_by_the_record_s_company_and_person_not_by_its_actor(
        services: Services) -> None:
    """(a) op_a2 removed a card and a car of A's driver_a, then moved to B: they read
    neither any more; nor does an operator demoted to driver. (b) Their former
    colleague op_a reads both, and A reads what an admin removed of its people.
    (c) driver_a reads the removal of their card and car, whoever removed it."""
    p = await people(services)
    op_a2 = Viewer.of(p.op_a2)
    card = await services.fleet.issue_id_tag(op_a2, tag="CARD-A", user_id=p.driver_a.id)
    car = await services.fleet.add_vehicle(op_a2, license_plate="B-A 1",
                                           owner_id=p.driver_a.id)
    await services.fleet.remove_id_tag(op_a2, card.id)
    await services.fleet.remove_vehicle(op_a2, car.id)
    admin = Viewer.of(p.admin)
    other = await services.fleet.issue_id_tag(admin, tag="CARD-A2", user_id=p.driver_a.id)
    await services.fleet.remove_id_tag(admin, other.id)
    removed = [await entry(services, record_id, d.AuditAction.DELETE)
               for record_id in (card.id, car.id, other.id)]
    assert [whose(e) for e in removed] == [(p.a.id, None, p.driver_a.id)] * 3

    moved = await services.accounts.update_user(admin, p.op_a2.id, company_id=p.b.id)
    demoted = await services.accounts.update_user(admin, p.op_a.id, role=d.Role.DRIVER)
    op_a = Viewer.of(p.op_a)  # before the demotion
    for e in removed:
        assert await readers(services, e, Viewer.of(moved), Viewer.of(demoted), op_a,
                             Viewer.of(p.driver_a), Viewer.of(p.op_b),
                             Viewer.of(p.driver)) == [False, False, True, True, False,
                                                      False]


async def test_a_driver_reads_the_removal_of_their_car_and_card_by_an_admin(
        services: Services) -> None:
    """(c) for a driver of no company: the entries are in no company's books, theirs."""
    p = await people(services)
    admin, driver = Viewer.of(p.admin), Viewer.of(p.driver)
    car = await services.fleet.add_vehicle(driver, license_plate="B-D 1")
    card = await services.fleet.issue_id_tag(driver, tag="CARD-D")
    await services.fleet.remove_vehicle(admin, car.id)
    await services.fleet.remove_id_tag(admin, card.id)
    for record_id in (car.id, card.id):
        removal = await entry(services, record_id, d.AuditAction.DELETE)
        assert whose(removal) == (None, None, p.driver.id)
        assert await readers(services, removal, driver, Viewer.of(p.op_a)) == [True, False]


async def test_a_person_s_history_stays_with_the_company_they_leave(
        services: Services) -> None:
    """Entries about a person are in their company's books then: moved from A to B,
    A keeps what was written while they were A's (the move too, in the books they
    left), and B reads only what is written since."""
    p = await people(services)
    admin = Viewer.of(p.admin)
    renamed = await services.accounts.update_user(Viewer.of(p.op_a), p.driver_a.id,
                                                  name="Renamed")
    await services.accounts.update_user(admin, p.driver_a.id, company_id=p.b.id)
    await services.accounts.update_user(Viewer.of(p.op_b), p.driver_a.id, name="In B")
    entries = sorted(await services.ctx.store.find_all(
        d.AuditEntry, all_of(Eq("entity_id", p.driver_a.id),
                             Eq("action", d.AuditAction.UPDATE))), key=lambda e: e.at)
    assert [e.company_id for e in entries] == [p.a.id, p.a.id, p.b.id]
    assert entries[0].after is not None and entries[0].after["name"] == renamed.name
    op_a, op_b = Viewer.of(p.op_a), Viewer.of(p.op_b)
    assert [await readers(services, e, op_a, op_b) for e in entries] == [
        [True, False], [True, False], [False, True]]
    # Their own history stays theirs whichever company's books it is in.
    for e in entries:
        assert await readers(services, e, Viewer.of(p.driver_a)) == [True]


async def test_a_car_handed_to_another_driver_keeps_its_history_with_its_owner_then(
        services: Services) -> None:
    """The hand-over is the former owner's (and their company's); the new owner reads
    what happens to the car from then on."""
    p = await people(services)
    admin = Viewer.of(p.admin)
    car = await services.fleet.add_vehicle(Viewer.of(p.driver_a), license_plate="B-H 1")
    await services.fleet.update_vehicle(admin, car.id, owner_id=p.driver.id)
    await services.fleet.update_vehicle(admin, car.id, make="VW")
    handed, since = sorted(await services.ctx.store.find_all(
        d.AuditEntry, all_of(Eq("entity_id", car.id), Eq("action", d.AuditAction.UPDATE))),
        key=lambda e: e.at)
    assert whose(handed) == (p.a.id, None, p.driver_a.id)
    assert whose(since) == (None, None, p.driver.id)
    former, new = Viewer.of(p.driver_a), Viewer.of(p.driver)
    assert await readers(services, handed, former, new, Viewer.of(p.op_a)) == [
        True, False, True]
    assert await readers(services, since, former, new, Viewer.of(p.op_a)) == [
        False, True, False]


async def test_what_is_held_at_a_station_is_in_its_books(services: Services) -> None:
    """A connector's and a station tariff's entries are in their station's books (its
    company's; of no company, its owner's), a company-wide tariff in its company's, and
    a station's connectors removed with it as well: its operators read them after."""
    p = await people(services)
    admin = Viewer.of(p.admin)
    solo = await services.accounts.create_user(
        SYSTEM, email="solo@example.com", password=PASSWORD, name="Solo",
        role=d.Role.OPERATOR)
    of_a, [plug] = await services.stations.create_station(
        admin, cp_id="CP-A", name="A 1", company_id=p.a.id,
        connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50.0)])
    own, _ = await services.stations.create_station(admin, cp_id="CP-S", name="S 1",
                                                    owner_id=solo.id)
    price = Decimal("0.40")
    on_station = await services.tariffs.set_tariff(admin, price_per_kwh=price, currency="EUR",
                                                   station_id=own.id)
    company_wide = await services.tariffs.set_tariff(admin, price_per_kwh=price,
                                                     currency="EUR", company_id=p.a.id)
    await services.stations.remove_station(Viewer.of(p.op_a), of_a.id)
    assert whose(await entry(services, plug.id, d.AuditAction.CREATE)) == (
        p.a.id, None, None)
    plug_removed = await entry(services, plug.id, d.AuditAction.DELETE)
    assert whose(plug_removed) == (p.a.id, None, None)
    assert whose(await entry(services, on_station.id, d.AuditAction.CREATE)) == (
        None, solo.id, None)
    assert whose(await entry(services, company_wide.id, d.AuditAction.CREATE)) == (
        p.a.id, None, None)
    assert await readers(services, plug_removed, Viewer.of(p.op_a2), Viewer.of(p.op_b),
                         Viewer.of(solo)) == [True, False, False]
