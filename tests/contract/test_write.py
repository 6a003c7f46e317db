"""Writes: all-or-nothing batches with their audit entries, unique rules enforced by the
database, Update/Delete semantics, and the atomic counters."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from domain.entities import (
    AuditAction,
    AuditEntry,
    Company,
    ConfigurationKey,
    Connector,
    IdTag,
    LocalListEntry,
    Payment,
    PaymentStatus,
    Record,
    RefreshToken,
    Reservation,
    Role,
    Session,
    SessionState,
    Station,
    User,
    Vehicle,
)
from domain.errors import Conflict, NotFound, UniqueViolation
from domain.ports import (
    PARTIAL_UNIQUE_RULES,
    UNIQUE_RULES,
    AuditIfApplied,
    Change,
    Delete,
    Guard,
    Insert,
    Store,
    Update,
)
from domain.query import ALL, Eq, In, Search, Sub, all_of
from tests.contract.factories import (
    at,
    audit,
    company,
    connector,
    id_tag,
    payment,
    put,
    reservation,
    session,
    station,
    user,
    vehicle,
)

_owner = user()
_st = station(cp_id="CP-U")
_sess = session(_st)

#: For each unique rule: the kind, two records that clash on it, and the field reported.
CLASHES: dict[str, tuple[type[Record], Callable[[], Record], Callable[[], Record], str]] = {
    "user.email": (User, lambda: user(email="same@example.com"),
                   lambda: user(email="same@example.com"), "email"),
    # Without a name's identity (``None``, as the factory makes them; below): the same
    # name with one breaks both rules, and a store may report either.
    "company.name": (Company, lambda: company(name="Same GmbH"),
                     lambda: company(name="Same GmbH"), "name"),
    # On the name's identity: the names as entered differ (review r2).
    "company.name_identity": (
        Company, lambda: company(name="Bäckerei X", name_identity="bäckerei x"),
        lambda: company(name="BÄCKEREI X", name_identity="bäckerei x"), "name_identity"),
    # On the plate's key: the plates as entered differ. (Among kept cars: below.)
    "vehicle.plate_key+owner_id": (
        Vehicle, lambda: vehicle(_owner, license_plate="B-AB 123"),
        lambda: vehicle(_owner, license_plate="BAB123"), "plate_key"),
    # Among ACTIVE sessions: the connector is what is taken.
    "session.cp_id+connector_id": (
        Session, lambda: session(_st, 3, transaction_id=31),
        lambda: session(_st, 3, transaction_id=32), "connector_id"),
    "id_tag.tag": (IdTag, lambda: id_tag(_owner, tag="04A2B3"),
                   lambda: id_tag(user(), tag="04A2B3"), "tag"),
    "station.cp_id": (Station, lambda: station(cp_id="CP-1"), lambda: station(cp_id="CP-1"),
                      "cp_id"),
    "connector.cp_id+connector_id": (Connector, lambda: connector(_st, 2),
                                     lambda: connector(_st, 2), "cp_id"),
    "session.transaction_id": (
        Session, lambda: session(_st, 1, transaction_id=7, state=SessionState.COMPLETED),
        lambda: session(_st, 2, transaction_id=7, state=SessionState.COMPLETED),
        "transaction_id"),
    "reservation.reservation_id": (Reservation, lambda: reservation(_st, reservation_id=9),
                                   lambda: reservation(_st, reservation_id=9, connector_id=2),
                                   "reservation_id"),
    "payment.session_id": (Payment, lambda: payment(_sess), lambda: payment(_sess),
                           "session_id"),
    "refresh_token.token_hash": (
        RefreshToken,
        lambda: RefreshToken(family_id=_owner.id, user_id=_owner.id, token_hash="f" * 64,
                             expires_at=at(60)),
        lambda: RefreshToken(family_id=_owner.id, user_id=_owner.id, token_hash="f" * 64,
                             expires_at=at(90)), "token_hash"),
    "local_list_entry.station_id+tag": (
        LocalListEntry,
        lambda: LocalListEntry(station_id=_st.id, cp_id=_st.cp_id, tag="04A2B3",
                               status="Accepted"),
        lambda: LocalListEntry(station_id=_st.id, cp_id=_st.cp_id, tag="04A2B3",
                               status="Blocked"), "station_id"),
    # One key whatever its case (OCPP CiString): the folded key clashes.
    "configuration_key.station_id+folded_key": (
        ConfigurationKey,
        lambda: ConfigurationKey(station_id=_st.id, cp_id=_st.cp_id, key="HeartbeatInterval",
                                 folded_key="heartbeatinterval"),
        lambda: ConfigurationKey(station_id=_st.id, cp_id=_st.cp_id, key="heartbeatinterval",
                                 folded_key="heartbeatinterval"), "station_id"),
}


def test_every_unique_rule_has_a_clash_case() -> None:
    rules = {f"{kind}.{'+'.join(rule)}" for kind, rs in UNIQUE_RULES.items() for rule in rs}
    rules |= {f"{kind}.{'+'.join(rule)}" for kind, rs in PARTIAL_UNIQUE_RULES.items()
              for rule, _ in rs}
    assert rules == set(CLASHES)


@pytest.mark.parametrize("rule", sorted(CLASHES))
async def test_unique_rule_rejects_the_second_record(store: Store, rule: str) -> None:
    kind, first, second, field = CLASHES[rule]
    kept, clashing = first(), second()
    await put(store, kept)

    with pytest.raises(UniqueViolation) as raised:
        await store.write([Insert(clashing)], [audit(clashing, "system")])

    assert raised.value.field == field
    assert raised.value.code == "DUPLICATE"
    assert isinstance(raised.value, Conflict)
    assert await store.get_many(kind, [kept.id, clashing.id]) == [kept, None]
    assert await store.count(kind, ALL) == 1
    assert await store.count(AuditEntry, ALL) == 0


async def test_a_plate_is_unique_among_its_owner_s_kept_cars_only(store: Store) -> None:
    """QA s22: a removed car stays as its sessions' car (``Vehicle.removed_at``), and its
    owner may add the plate again; twice removed, twice kept as history. A kept car still
    clashes with a kept one, and putting a removed car back where a kept one has its
    plate is refused."""
    owner = user()
    first = vehicle(owner, license_plate="B-LE 123")
    await put(store, owner, first)
    gone = dataclasses.replace(first, removed_at=at(0))
    await store.write([Update(gone)], [])
    again = vehicle(owner, license_plate="BLE123")
    await store.write([Insert(again)], [])
    await store.write([Update(dataclasses.replace(again, removed_at=at(1)))], [])
    third = vehicle(owner, license_plate="B LE 123")
    await store.write([Insert(third)], [])
    with pytest.raises(UniqueViolation) as raised:
        await store.write([Insert(vehicle(owner, license_plate="b-le-123"))], [])
    assert raised.value.field == "plate_key"
    with pytest.raises(UniqueViolation):
        await store.write([Update(dataclasses.replace(gone, removed_at=None))], [])
    assert await store.count(Vehicle, Eq("owner_id", owner.id)) == 3
    assert [v.id for v in await store.find_all(Vehicle, all_of(
        Eq("owner_id", owner.id), Eq("removed_at", None)))] == [third.id]


async def test_a_company_without_a_name_identity_clashes_only_by_its_name(
        store: Store) -> None:
    """``Company.name_identity`` is unique where a company has one; one left without
    (``None``: its name an older one's by identity before the rule, migration 55) is
    under no rule but the exact name's, as many as there are, and takes one when
    renamed."""
    older = company(name="Bäckerei X", name_identity="bäckerei x")
    left = [company(name=name) for name in ("BÄCKEREI X", "bäckerei x")]
    await put(store, older, *left)
    assert await store.count(Company, Eq("name_identity", None)) == 2
    with pytest.raises(UniqueViolation) as raised:
        await store.write([Insert(company(name="Bäckerei X"))], [])
    assert raised.value.field == "name"
    with pytest.raises(UniqueViolation) as raised:
        await store.write([Update(dataclasses.replace(left[0], name_identity="bäckerei x"),
                                  frozenset({"name_identity"}))], [])
    assert raised.value.field == "name_identity"
    renamed = dataclasses.replace(left[0], name="Bäckerei X Süd",
                                  name_identity="bäckerei x süd")
    await store.write([Update(renamed, frozenset({"name", "name_identity"}))], [])
    assert await store.get_many(Company, [left[0].id]) == [renamed]


async def test_a_guarded_update_is_skipped_once_its_condition_no_longer_holds(
        store: Store) -> None:
    """``Update.only_if``: a charger's live energy lands on a session still ACTIVE, and
    is dropped without error on one another instance ended meanwhile."""
    st = station(cp_id="CP-G")
    live = session(st, energy_wh=100)
    await put(store, st, live)
    guard = ("state", SessionState.ACTIVE)
    await store.write([Update(dataclasses.replace(live, energy_wh=200),
                              frozenset({"energy_wh"}), guard)], [])
    assert (await store.get_many(Session, [live.id]))[0].energy_wh == 200  # type: ignore[union-attr]
    ended = dataclasses.replace(live, energy_wh=200, state=SessionState.COMPLETED)
    await store.write([Update(ended)], [])
    await store.write([Update(dataclasses.replace(live, energy_wh=999),
                              frozenset({"energy_wh"}), guard)], [])
    assert (await store.get_many(Session, [live.id]))[0] == ended
    # Without a guard a missing record is still an error.
    with pytest.raises(NotFound):
        await store.write([Update(session(st, energy_wh=1), frozenset({"energy_wh"}))], [])


async def test_a_guard_may_expect_an_empty_field(store: Store) -> None:
    """A session flushed late awaits its stop as COMPLETED without a stop reason: the
    stop that lands is guarded on the reason still being empty, so a second copy of it
    is skipped."""
    st = station(cp_id="CP-N")
    waiting = session(st, state=SessionState.COMPLETED, stop_reason=None)
    await put(store, st, waiting)
    guard = ("stop_reason", None)
    stopped = dataclasses.replace(waiting, stop_reason="Local", energy_wh=5000)
    await store.write([Update(stopped, frozenset({"stop_reason", "energy_wh"}), guard)], [])
    again = dataclasses.replace(waiting, stop_reason="Remote", energy_wh=9999)
    await store.write([Update(again, frozenset({"stop_reason", "energy_wh"}), guard)], [])
    assert (await store.get_many(Session, [waiting.id]))[0] == stopped


async def test_a_guard_may_expect_the_time_a_record_was_last_written(store: Store) -> None:
    """``endSession`` closes a session only as it read it: guarded on ``updated_at`` as
    read back from the store (whatever precision the store keeps), any write since fails
    the guard."""
    st = station(cp_id="CP-U")
    live = session(st, energy_wh=100)
    await put(store, st, live)
    read = (await store.get_many(Session, [live.id]))[0]
    assert read is not None
    grown = dataclasses.replace(read, energy_wh=150, updated_at=read.updated_at
                                + timedelta(seconds=1))
    await store.write([Update(grown, frozenset({"energy_wh", "updated_at"}))], [])
    stale_close = dataclasses.replace(read, state=SessionState.COMPLETED)
    with pytest.raises(Conflict):
        await store.write([Update(stale_close, frozenset({"state"}),
                                  ("updated_at", read.updated_at), required=True)], [])
    fresh = (await store.get_many(Session, [live.id]))[0]
    assert fresh is not None and fresh.state is SessionState.ACTIVE
    closed = dataclasses.replace(fresh, state=SessionState.COMPLETED)
    await store.write([Update(closed, frozenset({"state"}), ("updated_at", fresh.updated_at),
                              required=True)], [])
    assert (await store.get_many(Session, [live.id]))[0].state is SessionState.COMPLETED  # type: ignore[union-attr]


async def test_an_update_that_breaks_a_unique_rule_is_rejected(store: Store) -> None:
    ada, bob = user(email="ada@example.com"), user(email="bob@example.com")
    await put(store, ada, bob)

    with pytest.raises(UniqueViolation) as raised:
        await store.write([Update(dataclasses.replace(bob, email="ada@example.com"))], [])

    assert raised.value.field == "email"
    assert await store.get_many(User, [ada.id, bob.id]) == [ada, bob]


async def test_a_required_guard_that_no_longer_holds_fails_the_whole_write(
        store: Store) -> None:
    """``Update.required``: of two requests racing for one state change, the second
    fails with CHANGED and nothing of its write stays, while a quiet guard in the same
    batch still just skips."""
    st = station(cp_id="CP-R")
    pay = payment(session(st), status=PaymentStatus.PENDING)
    await put(store, st, pay)
    fields = frozenset({"status"})
    captured = dataclasses.replace(pay, status=PaymentStatus.CAPTURED)
    first = Update(captured, fields, ("status", PaymentStatus.PENDING), required=True)
    await store.write([first], [])
    bystander = company(name="Written with the loser")
    quiet = Update(dataclasses.replace(pay, amount_minor=1), frozenset({"amount_minor"}),
                   ("status", PaymentStatus.PENDING))
    failed = Update(dataclasses.replace(pay, status=PaymentStatus.FAILED), fields,
                    ("status", PaymentStatus.PENDING), required=True)
    with pytest.raises(Conflict) as raised:
        await store.write([Insert(bystander), quiet, failed], [])
    assert (raised.value.code, raised.value.field) == ("CHANGED", "id")
    assert (await store.get_many(Payment, [pay.id]))[0] == captured
    assert await store.get_many(Company, [bystander.id]) == [None]
    await store.write([quiet], [])  # alone, a quiet guard that fails is no error


def _active_on(st: Station) -> Any:
    return all_of(Eq("station_id", st.id), Eq("state", SessionState.ACTIVE))


async def test_a_write_whose_guard_holds_is_written_whole(store: Store) -> None:
    """``Guard``: a session's insert while its station exists, a station's removal while
    no session is active on it; both with their audit entries."""
    st = station(cp_id="CP-G")
    await put(store, st)
    opened = session(st)
    await store.write([Insert(opened)], [audit(opened, "ocpp:CP-G")],
                      [Guard(Station, Eq("id", st.id))])
    assert await store.get_many(Session, [opened.id]) == [opened]
    ended = dataclasses.replace(opened, state=SessionState.COMPLETED)
    await store.write([Update(ended)], [])
    await store.write([Delete(st)], [audit(st, "admin")],
                      [Guard(Session, _active_on(st), exists=False)])
    assert await store.get_many(Station, [st.id]) == [None]
    assert await store.count(AuditEntry, ALL) == 2


async def test_a_guard_that_does_not_hold_fails_the_whole_write(store: Store) -> None:
    """The station removed before the start's write: the session is not inserted, nor
    anything else of its write, and the error is the one of a required update
    (CHANGED). And the station's removal with a session active on it fails the same
    way, its connector and audit entry staying as they were."""
    gone, kept = station(cp_id="CP-GONE"), station(cp_id="CP-KEPT")
    plug = connector(kept)
    await put(store, kept, plug)
    orphan = session(gone)
    bystander = company(name="Written with the orphan")
    with pytest.raises(Conflict) as raised:
        await store.write([Insert(bystander), Insert(orphan)], [audit(orphan, "ocpp:x")],
                          [Guard(Station, Eq("id", gone.id))])
    assert (raised.value.code, raised.value.field) == ("CHANGED", "id")
    assert await store.get_many(Session, [orphan.id]) == [None]
    assert await store.get_many(Company, [bystander.id]) == [None]
    live = session(kept)
    await put(store, live)
    with pytest.raises(Conflict) as raised:
        await store.write([Delete(plug), Delete(kept)], [audit(kept, "admin")],
                          [Guard(Session, _active_on(kept), exists=False)])
    assert raised.value.code == "CHANGED"
    assert await store.get_many(Station, [kept.id]) == [kept]
    assert await store.get_many(Connector, [plug.id]) == [plug]
    assert await store.count(AuditEntry, ALL) == 0


async def test_a_guard_is_checked_on_the_store_as_the_write_leaves_it(store: Store) -> None:
    """Checked after the write's own changes: a write that inserts what its guard asks
    for passes, one whose own change breaks its guard fails; a write of guards alone
    writes nothing and fails or passes as they do."""
    st = station(cp_id="CP-OWN")
    await store.write([Insert(st)], [], [Guard(Station, Eq("cp_id", "CP-OWN"))])
    with pytest.raises(Conflict):
        await store.write([Insert(session(st))], [],
                          [Guard(Session, _active_on(st), exists=False)])
    assert await store.count(Session, ALL) == 0
    await store.write([], [], [Guard(Station, Eq("id", st.id))])
    with pytest.raises(Conflict):
        await store.write([], [], [Guard(Station, Eq("id", st.id), exists=False)])


async def test_a_guard_may_use_any_filter_a_read_may(store: Store) -> None:
    """A guard's filter is the query language's (a sub-select, a search), compiled as a
    read's: a demotion guarded by "no station they own", a station's owner by their
    role."""
    owner = user(role=Role.OPERATOR, name="Orla Owner")
    st = station(cp_id="CP-OWNED", owner_id=owner.id)
    await put(store, owner, st)
    may_own = all_of(Eq("id", owner.id), In("role", (Role.OPERATOR, Role.ADMIN)),
                     Search(("name",), "orla"))
    await store.write([Update(dataclasses.replace(st, name="Renamed"))], [],
                      [Guard(User, may_own)])
    owns = Sub("id", "station", Eq("owner_id", owner.id), select="owner_id")
    with pytest.raises(Conflict):
        await store.write([Update(dataclasses.replace(owner, role=Role.DRIVER))], [],
                          [Guard(User, all_of(Eq("id", owner.id), owns), exists=False)])
    assert (await store.get_many(User, [owner.id]))[0] == owner


async def test_a_unique_violation_is_told_in_words_not_column_names(store: Store) -> None:
    owner = user()
    await put(store, owner, vehicle(owner, license_plate="BEV1"))
    with pytest.raises(UniqueViolation) as raised:
        await store.write([Insert(vehicle(owner, license_plate="BEV1"))], [])
    assert raised.value.field == "plate_key"
    assert str(raised.value) == "another vehicle has the same license plate and owner"


async def test_a_batch_whose_third_change_violates_leaves_nothing_behind(store: Store) -> None:
    taken = station(cp_id="CP-TAKEN")
    renamed = company(name="Before")
    await put(store, taken, renamed)
    first = company(name="New")
    second = Update(dataclasses.replace(renamed, name="After"))
    third = station(cp_id="CP-TAKEN")
    changes: list[Change] = [Insert(first), second, Insert(third)]
    entries = [audit(first, "system", action=AuditAction.CREATE),
               audit(renamed, "system"), audit(third, "system", action=AuditAction.CREATE)]

    with pytest.raises(UniqueViolation) as raised:
        await store.write(changes, entries)

    assert raised.value.field == "cp_id"
    assert str(raised.value) == "another station has the same charge point id (cpId)"
    assert await store.get_many(Company, [first.id, renamed.id]) == [None, renamed]
    assert await store.count(Station, ALL) == 1
    assert await store.count(AuditEntry, ALL) == 0


async def test_a_batch_with_a_missing_update_target_leaves_nothing_behind(store: Store
                                                                          ) -> None:
    inserted = company(name="New")
    ghost = company(name="Never stored")

    with pytest.raises(NotFound):
        await store.write([Insert(inserted), Update(ghost)], [audit(inserted, "system")])

    assert await store.count(Company, ALL) == 0
    assert await store.count(AuditEntry, ALL) == 0


async def test_audit_entries_are_written_with_their_changes(store: Store) -> None:
    c = company(name="ACME")
    s = station(company_id=c.id)
    entries = [audit(c, "system", action=AuditAction.CREATE, after={"name": "ACME"}),
               audit(s, "system", action=AuditAction.CREATE, at=at(1))]

    await store.write([Insert(c), Insert(s)], entries)

    assert await store.get_many(AuditEntry, [e.id for e in entries]) == entries
    assert await store.find_all(AuditEntry, Eq("entity_id", s.id)) == [entries[1]]


async def test_the_entry_of_a_guarded_update_is_written_only_if_the_update_applied(
        store: Store) -> None:
    """``AuditIfApplied``: a firmware rollout's ``Requested`` written onto the station as
    read, which a charger's report overtook, is skipped, and so is its entry; the same
    write's other guarded update lands with its own, and an entry of the write's that
    depends on nothing stays. Two alike updates in one write (on SQLite one statement
    for both, were it not for the entries depending on them) each decide their own
    entry (QA: the audit said ``Installed → Requested`` of a station that never was)."""
    held, overtaken = station(firmware_status="Installed"), station(firmware_status="Installed")
    await put(store, held, overtaken)
    await store.write([Update(dataclasses.replace(overtaken, firmware_status="Downloading"),
                              frozenset({"firmware_status"}))], [])
    guard = ("firmware_status", "Installed")
    fields = frozenset({"firmware_status"})
    updates = [Update(dataclasses.replace(st, firmware_status="Requested"), fields, guard)
               for st in (held, overtaken)]
    entries = [audit(st, "admin", at=at(1), before={"firmware_status": "Installed"},
                     after={"firmware_status": "Requested"}) for st in (held, overtaken)]
    command = audit(overtaken, "admin", action=AuditAction.COMMAND, at=at(1),
                    after={"command": "UpdateFirmware"})

    await store.write(updates, [*(AuditIfApplied(e, u) for e, u in zip(entries, updates,
                                                                        strict=True)),
                                command])

    stored = await store.get_many(Station, [held.id, overtaken.id])
    assert [st.firmware_status for st in stored if st is not None] == [
        "Requested", "Downloading"]
    assert await store.get_many(AuditEntry, [e.id for e in entries]) == [entries[0], None]
    assert await store.find_all(AuditEntry, Eq("entity_id", overtaken.id)) == [command]


async def test_an_entry_of_a_guarded_update_goes_with_a_write_that_fails(
        store: Store) -> None:
    """An applied guarded update's entry is part of its all-or-nothing write: a guard
    of the write that fails leaves neither."""
    st = station(firmware_status="Installed")
    await put(store, st)
    update = Update(dataclasses.replace(st, firmware_status="Requested"),
                    frozenset({"firmware_status"}), ("firmware_status", "Installed"))
    entry = audit(st, "admin", at=at(1))
    with pytest.raises(Conflict):
        await store.write([update], [AuditIfApplied(entry, update)],
                          [Guard(Company, ALL)])
    assert (await store.get_many(Station, [st.id]))[0] == st
    assert await store.count(AuditEntry, ALL) == 0


async def test_an_entry_may_depend_only_on_a_change_of_its_own_write(store: Store) -> None:
    """Told by the object, not by its value: an equal update is another change, which
    this write does not make."""
    st = station(firmware_status="Installed")
    await put(store, st)
    update = Update(dataclasses.replace(st, firmware_status="Requested"),
                    frozenset({"firmware_status"}), ("firmware_status", "Installed"))
    with pytest.raises(ValueError, match="change"):
        await store.write([dataclasses.replace(update)],
                          [AuditIfApplied(audit(st, "admin"), update)])
    assert (await store.get_many(Station, [st.id]))[0] == st
    assert await store.count(AuditEntry, ALL) == 0


async def test_an_entry_may_not_depend_on_a_change_given_twice(store: Store) -> None:
    """Review r2: the store tells which updates applied by the object, so one update
    given twice (applied the first time, its guard failing the second) lost the entry of
    the time it applied, the record changed without one. Refused, nothing written."""
    st = station(firmware_status="Installed")
    await put(store, st)
    update = Update(dataclasses.replace(st, firmware_status="Requested"),
                    frozenset({"firmware_status"}), ("firmware_status", "Installed"))
    entries = [audit(st, "admin", at=at(n), before={"firmware_status": "Installed"},
                     after={"firmware_status": "Requested"}) for n in (1, 2)]
    with pytest.raises(ValueError, match="more than once"):
        await store.write([update, update],
                          [AuditIfApplied(entry, update) for entry in entries])
    assert (await store.get_many(Station, [st.id]))[0] == st
    assert await store.count(AuditEntry, ALL) == 0


async def test_update_replaces_the_whole_record(store: Store) -> None:
    st = station(name="Old", online=False, lat=52.0, lon=13.0)
    await put(store, st)
    new = dataclasses.replace(st, name="New", online=True, lat=None, lon=None,
                              last_seen=at(5), updated_at=at(5), updated_by="ocpp:x")

    await store.write([Update(new)], [])

    assert await store.get_many(Station, [st.id]) == [new]
    assert await store.count(Station, ALL) == 1


async def test_delete_removes_the_record(store: Store) -> None:
    a, b = company(name="A"), company(name="B")
    await put(store, a, b)

    await store.write([Delete(a)], [audit(a, "system", action=AuditAction.DELETE)])

    assert await store.get_many(Company, [a.id, b.id]) == [None, b]
    assert await store.count(AuditEntry, Eq("action", AuditAction.DELETE)) == 1


async def test_a_delete_on_the_version_read_fails_the_write_once_it_changed(
        store: Store) -> None:
    """``Delete.only_if``: an erasure removes a person's cards as it read them; one
    changed since (or gone) fails the whole write with CHANGED, for it to read again,
    and nothing of the write stays. On the version still stored, it deletes."""
    owner = user()
    card, other = id_tag(owner, tag="TAG-V1"), id_tag(owner, tag="TAG-V2")
    await put(store, owner, card, other)
    read = (await store.get_many(IdTag, [card.id]))[0]
    assert read is not None
    blocked = dataclasses.replace(read, blocked_by="someone",
                                  updated_at=read.updated_at + timedelta(seconds=1))
    await store.write([Update(blocked, frozenset({"blocked_by", "updated_at"}))], [])
    bystander = company(name="Written with the stale delete")
    writes: list[list[Change]] = [
        [Delete(other), Delete(read, ("updated_at", read.updated_at))],
        [Delete(read, ("updated_at", read.updated_at)), Insert(bystander)]]
    for stale in writes:
        with pytest.raises(Conflict) as raised:
            await store.write(stale, [])
        assert raised.value.code == "CHANGED"
        assert await store.count(IdTag, Eq("user_id", owner.id)) == 2
        assert await store.get_many(Company, [bystander.id]) == [None]
    fresh = (await store.get_many(IdTag, [card.id]))[0]
    assert fresh is not None
    await store.write([Delete(fresh, ("updated_at", fresh.updated_at))], [])
    assert await store.get_many(IdTag, [card.id, other.id]) == [None, other]
    with pytest.raises(Conflict):  # gone meanwhile: changed too
        await store.write([Delete(fresh, ("updated_at", fresh.updated_at))], [])


def test_more_fields_without_a_guard_are_refused_when_the_write_is_made() -> None:
    """``also_if`` goes with ``only_if``: refused as the Update or Delete is made, not
    where each store happened to read it (SQLite refused such an update and deleted
    unguarded, MongoDB the other way round: review r26-handover4)."""
    owner = user()
    card = id_tag(owner, tag="TAG-ALSO")
    with pytest.raises(ValueError):
        Update(card, frozenset({"parent_tag"}), also_if=(("blocked_by", None),))
    with pytest.raises(ValueError):
        Delete(card, also_if=(("blocked_by", None),))


async def test_a_guard_on_more_fields_holds_on_each(store: Store) -> None:
    """``also_if``: an update or delete guarded on more than one field (a station's
    handover on its ``updated_at`` and its version of who sees it; its removal on its
    connection and the ownership its remover's rights were checked on) fails with
    CHANGED when any of them changed, the first holding or not, and applies when all
    hold (review r26-handover3)."""
    owner = user()
    card = id_tag(owner, tag="TAG-G1")
    await put(store, owner, card)
    [read] = await store.get_many(IdTag, [card.id])
    assert read is not None
    # Changed meanwhile in the second field only (its version stamp left as it was).
    await store.write([Update(dataclasses.replace(read, blocked_by="someone"),
                              frozenset({"blocked_by"}))], [])
    stale: list[Change] = [
        Update(dataclasses.replace(read, parent_tag="STALE"), frozenset({"parent_tag"}),
               ("updated_at", read.updated_at), True, (("blocked_by", read.blocked_by),)),
        Delete(read, ("updated_at", read.updated_at), (("blocked_by", read.blocked_by),))]
    for change in stale:
        with pytest.raises(Conflict) as raised:
            await store.write([change], [])
        assert raised.value.code == "CHANGED"
    [now] = await store.get_many(IdTag, [card.id])
    assert now is not None and (now.blocked_by, now.parent_tag) == ("someone",
                                                                     read.parent_tag)
    guard = (("blocked_by", "someone"), ("user_id", owner.id))
    await store.write([Update(dataclasses.replace(now, parent_tag="FRESH"),
                              frozenset({"parent_tag"}), ("updated_at", now.updated_at),
                              True, guard)], [])
    [fresh] = await store.get_many(IdTag, [card.id])
    assert fresh is not None and fresh.parent_tag == "FRESH"
    await store.write([Delete(fresh, ("updated_at", fresh.updated_at), guard)], [])
    assert await store.get_many(IdTag, [card.id]) == [None]


@pytest.mark.parametrize("change", [Update, Delete])
async def test_update_or_delete_of_a_missing_record_is_not_found(
    store: Store, change: type[Update] | type[Delete]
) -> None:
    with pytest.raises(NotFound):
        await store.write([change(company())], [])


async def test_a_deleted_record_cannot_be_updated(store: Store) -> None:
    c = company()
    await put(store, c)
    await store.write([Delete(c)], [])
    with pytest.raises(NotFound):
        await store.write([Update(c)], [])


async def test_changes_of_one_batch_apply_in_order(store: Store) -> None:
    c = company(name="v1")
    v2 = dataclasses.replace(c, name="v2")
    gone = company(name="short-lived")

    await store.write([Insert(c), Update(v2), Insert(gone), Delete(gone)], [])

    assert await store.get_many(Company, [c.id, gone.id]) == [v2, None]


async def test_inserting_an_existing_id_is_rejected(store: Store) -> None:
    c = company(name="First")
    await put(store, c)
    with pytest.raises(UniqueViolation):
        await put(store, dataclasses.replace(c, name="Second"))
    assert await store.get_many(Company, [c.id]) == [c]


async def test_an_empty_write_is_a_no_op(store: Store) -> None:
    await store.write([], [])
    assert await store.count(AuditEntry, ALL) == 0


async def test_one_active_session_per_connector(store: Store) -> None:
    st = station()
    done = session(st, 1, state=SessionState.COMPLETED)
    done_too = session(st, 1, state=SessionState.COMPLETED)
    active = session(st, 1)
    other_connector = session(st, 2)
    await put(store, done, done_too, active, other_connector)

    second_active = session(st, 1)
    with pytest.raises(UniqueViolation) as raised:
        await put(store, second_active)
    assert raised.value.field == "connector_id"
    assert await store.count(Session, Eq("state", SessionState.ACTIVE)) == 2

    # Once the running session completes, the connector takes a new one.
    finished = dataclasses.replace(active, state=SessionState.COMPLETED, end_time=at(60))
    await store.write([Update(finished), Insert(second_active)], [])
    active_on_1 = all_of(Eq("state", SessionState.ACTIVE), Eq("connector_id", 1))
    assert await store.find_all(Session, active_on_1) == [second_active]


async def test_reactivating_a_completed_session_on_a_busy_connector_is_rejected(
    store: Store
) -> None:
    st = station()
    old = session(st, 1, state=SessionState.COMPLETED)
    running = session(st, 1)
    await put(store, old, running)

    with pytest.raises(UniqueViolation) as raised:
        await store.write([Update(dataclasses.replace(old, state=SessionState.ACTIVE))], [])

    assert raised.value.field == "connector_id"
    assert await store.get_many(Session, [old.id]) == [old]


async def test_next_sequence_counts_from_one_per_name(store: Store) -> None:
    assert [await store.next_sequence("transaction") for _ in range(3)] == [1, 2, 3]
    assert await store.next_sequence("reservation") == 1
    assert await store.next_sequence("transaction") == 4


async def test_a_sequence_is_read_without_counting(store: Store) -> None:
    assert await store.sequence_value("demo") == 0  # never incremented: none made
    assert await store.sequence_value("demo") == 0
    assert await store.next_sequence("demo") == 1
    assert [await store.sequence_value("demo"), await store.sequence_value("other")] == [1, 0]
    assert await store.next_sequence("demo") == 2


async def test_next_sequence_is_atomic_under_concurrency(store: Store) -> None:
    values = await asyncio.gather(*(store.next_sequence("tx") for _ in range(50)))
    assert sorted(values) == list(range(1, 51))
    assert await store.next_sequence("tx") == 51


async def test_concurrent_writes_all_land(store: Store) -> None:
    companies = [company(name=f"C{i}") for i in range(20)]
    await asyncio.gather(*(put(store, c) for c in companies))
    assert await store.count(Company, ALL) == 20


@pytest.mark.parametrize(("field", "value"), [
    ("connector_id", 2.0), ("connector_id", True), ("connector_id", "2"),
    ("power_w", "7000"), ("power_w", False), ("cp_id", 7), ("station_id", 7)])
async def test_a_value_of_another_type_is_refused_by_every_store(
        store: Store, field: str, value: Any) -> None:
    """SQLite's codec refuses it; MongoDB stored a float or a bool in an int field, to be
    read back as one."""
    site = station()
    await put(store, site)
    wrong = dataclasses.replace(session(site), **{field: value})

    with pytest.raises(TypeError):
        await store.write([Insert(wrong)], [])

    assert await store.count(Session, ALL) == 0


async def test_an_int_in_a_float_field_is_a_number(store: Store) -> None:
    site = station()
    charging = dataclasses.replace(session(site), power_w=7000)
    await put(store, site, charging)

    [stored] = await store.get_many(Session, [charging.id])
    assert stored is not None and stored.power_w == 7000.0


@pytest.mark.parametrize("value", ["1", 1.5, True])
async def test_a_filter_value_of_another_type_is_refused_by_every_store(
        store: Store, value: object) -> None:
    with pytest.raises(TypeError):
        await store.count(Session, Eq("connector_id", value))


async def test_unique_violations_read_the_same_on_every_store(store: Store) -> None:
    """A client sees one message whichever store runs (MongoDB said "a record with this
    id exists" and "another session has the same connector id")."""
    site = station()
    charging = session(site, 1)
    await put(store, site, charging)

    with pytest.raises(UniqueViolation) as same_id:
        await store.write([Insert(dataclasses.replace(site, cp_id="CP-OTHER"))], [])
    with pytest.raises(UniqueViolation) as second:
        await store.write([Insert(session(site, 1))], [audit(site, "system")])

    assert (same_id.value.message, same_id.value.field) == (
        "another station has the same id", "id")
    assert (second.value.message, second.value.field) == (
        "the connector already has an active session", "connector_id")
