"""The visibility policy end to end: ``Policy().scope(viewer, kind)`` evaluated by the store
returns exactly the records DESIGN.md section 3 says each viewer may see.

The world: companies A and B; operators opA and opA2 (company A), opB (company B, owns S3)
and opSolo (no company, owns S4); drivers d1, d2 (no company), d3 (company B) and d4
(company A, moved there from B).
Stations S1 (A, owned by opA), S2 (A, no owner), S3 (B), S4 (opSolo), S5 (opA, no company),
S6 (B's now, handed over by A: A keeps its books, sessions and reservations made under A).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import cast

import pytest

from domain.clock import utcnow
from domain.entities import (
    ENTITY_TYPES,
    LIVE_RESERVATION_STATES,
    AuditAction,
    ConfigurationKey,
    Connector,
    MeterSample,
    Payment,
    Record,
    Refund,
    Registration,
    Reservation,
    ReservationState,
    Role,
    Session,
    SignedMeterValue,
    Station,
    Tariff,
    User,
)
from domain.events import ConnectorStatusChanged
from domain.ids import new_id
from domain.policy import ANONYMOUS, Policy, Viewer
from domain.ports import Store
from domain.query import Eq, In, all_of
from domain.services.base import owned_by, reservation_changed
from tests.contract.factories import (
    at,
    audit,
    company,
    configuration_key,
    connector,
    id_tag,
    meter_sample,
    payment,
    put,
    refund,
    reservation,
    session,
    signed_value,
    station,
    status_event,
    tariff,
    user,
    vehicle,
)

#: The expiry of a reservation still live whenever the suite runs (fixed, a century on).
LIVE_UNTIL = at(100 * 365 * 24 * 60)


def build_world() -> dict[str, Record]:
    """Every record of the world by its short name."""
    w = SimpleNamespace()
    w.A, w.B = company(name="A"), company(name="B")
    w.admin = user(role=Role.ADMIN)
    w.opA = user(role=Role.OPERATOR, company_id=w.A.id)
    w.opA2 = user(role=Role.OPERATOR, company_id=w.A.id)
    w.opB = user(role=Role.OPERATOR, company_id=w.B.id)
    w.opSolo = user(role=Role.OPERATOR)
    w.d1, w.d2 = user(), user()
    w.d3 = user(company_id=w.B.id)
    w.d4 = user(company_id=w.A.id)  # of B until an admin moved them to A
    w.v1, w.v2, w.v3 = vehicle(w.d1), vehicle(w.d2), vehicle(w.d3)
    w.t1, w.t2, w.t3 = id_tag(w.d1, vehicle_id=w.v1.id), id_tag(w.d2), id_tag(w.d3)
    w.t4 = id_tag(w.opA2)
    w.S1 = station(company_id=w.A.id, owner_id=w.opA.id)
    w.S2 = station(company_id=w.A.id)
    w.S3 = station(company_id=w.B.id, owner_id=w.opB.id)
    w.S4 = station(owner_id=w.opSolo.id)
    w.S5 = station(owner_id=w.opA.id)
    # B's station still naming opA its owner (handed over, or opA moved away): B's only.
    w.S6 = station(company_id=w.B.id, owner_id=w.opA.id)
    w.C1, w.C2, w.C3, w.C4, w.C5 = (connector(s) for s in (w.S1, w.S2, w.S3, w.S4, w.S5))
    # Registered themselves and not accepted (yet): their operators' only, off the map
    # (QA s16: any client reaching the OCPP port put "available" chargers on it).
    w.S7 = station(company_id=w.A.id, registration=Registration.PENDING)
    w.S8 = station(company_id=w.B.id, registration=Registration.REJECTED)
    w.C7, w.C8 = connector(w.S7), connector(w.S8)
    w.x1 = session(w.S1, 1, user_id=w.d1.id, vehicle_id=w.v1.id)
    w.x2 = session(w.S3, 1, user_id=w.d2.id, vehicle_id=w.v2.id)
    w.x3 = session(w.S2, 1)  # unknown tag: no user, no vehicle
    w.x4 = session(w.S4, 1, user_id=w.d2.id)
    w.x5 = session(w.S1, 2, user_id=w.d3.id, vehicle_id=w.v3.id)
    w.m1, w.m2 = meter_sample(w.S1, w.x1), meter_sample(w.S3, w.x2)
    w.m_orphan = meter_sample(w.S2, None)
    w.m4 = meter_sample(w.S4, w.x4)
    # Metered by a removed station whose cpId S3 now has: not S3's operators' to see.
    w.m_reused = meter_sample(w.S3, None, station_id=new_id())
    w.m3_own = meter_sample(w.S3, None, station_id=w.S3.id)
    # d1 charged at S6 while A ran it: the session and its samples stay in A's books.
    w.x6 = session(w.S6, 1, user_id=w.d1.id, company_id=w.A.id, station_owner_id=None)
    w.m6 = meter_sample(w.S6, w.x6, station_id=w.S6.id)
    # Each sample's signed twin (s1 for m1): a session's signed meter values are seen
    # exactly as its samples are (``SIGNED_AS_SAMPLES``).
    w.s1, w.s2 = signed_value(w.S1, w.x1), signed_value(w.S3, w.x2)
    w.s_orphan = signed_value(w.S2, None)
    w.s4 = signed_value(w.S4, w.x4)
    w.s_reused = signed_value(w.S3, None, station_id=new_id())
    w.s3_own = signed_value(w.S3, None)
    w.s6 = signed_value(w.S6, w.x6)
    w.e1, w.e3, w.e4 = status_event(w.S1), status_event(w.S3), status_event(w.S4)
    w.r1 = reservation(w.S1, user_id=w.d1.id)
    w.r3 = reservation(w.S3, user_id=w.d2.id)
    # Made at S6 while A ran it: A's books. The new company B runs its charger, so it
    # sees the one still live (it may cancel it), not those over or past their expiry.
    in_a: dict[str, str | None] = {"company_id": w.A.id, "station_owner_id": None}
    w.r6_done = reservation(w.S6, user_id=w.d1.id, state=ReservationState.CANCELLED, **in_a)
    w.r6_live = reservation(w.S6, user_id=w.d3.id, state=ReservationState.ACTIVE,
                            expires_at=LIVE_UNTIL, **in_a)
    w.r6_lapsed = reservation(w.S6, user_id=w.d1.id, state=ReservationState.ACTIVE,
                              **in_a)  # expired, before the sweep has stored it
    # Made at S6 since B runs it (an unknown card): B's books, not A's.
    w.r6_b = reservation(w.S6, state=ReservationState.USED)
    w.tA = tariff(company_id=w.A.id)
    w.tS3, w.tS4, w.tS5 = (tariff(station_id=s.id) for s in (w.S3, w.S4, w.S5))
    w.p1, w.p2 = payment(w.x1), payment(w.x2)
    # Refunds are in their payment's books, and their driver's: f6 of x6, in A's books,
    # paid back since B runs S6 (A pays it back; B does not learn of it).
    w.f1, w.f2 = refund(w.x1, w.p1.id), refund(w.x2, w.p2.id)
    w.f6 = refund(w.x6)
    # Audit entries as the services write them (``base.Service._whose``): in the books
    # of the record then, about its person then. Entries of a station's own record are
    # written here without books: its current operators read those by the station.
    books_a = {"company_id": w.A.id}
    books_b = {"company_id": w.B.id}
    w.a_opA = audit(w.S1, w.opA.id)
    w.a_opA2 = audit(w.A, w.opA2.id, **books_a)
    w.a_opB = audit(w.S3, w.opB.id)
    w.a_sys_c2 = audit(w.C2, "system", **books_a)
    w.a_d1 = audit(w.v1, w.d1.id, holder_id=w.d1.id)
    w.a_ocpp_x2 = audit(w.x2, "ocpp:" + w.S3.cp_id, holder_id=w.d2.id, **books_b)
    w.a_sys_s4 = audit(w.S4, "system")
    # opA2 worked for B (on S3) before joining A: A does not inherit that entry, B keeps it.
    w.a_moved = audit(w.S3, w.opA2.id)
    w.a_b_person = audit(w.d3, w.opB.id, holder_id=w.d3.id, **books_b)  # one of B's people
    w.a_a_tariff = audit(w.tA, w.opA2.id, **books_a)
    # opA2, still in B, changed one of B's people: no longer opA2's to read.
    w.a_moved_person = audit(w.d3, w.opA2.id, holder_id=w.d3.id, **books_b)
    # opA2 removed one of A's stations: gone, A's operators read it by its books.
    w.a_removal = audit(station(company_id=w.A.id), w.opA2.id, action=AuditAction.DELETE,
                        **books_a)
    w.a_x1_ended = audit(w.x1, w.opA.id, holder_id=w.d1.id, **books_a)  # a session in A's books
    # d1, an operator of B before being demoted to driver, changed d3's card: d1's no more.
    w.a_demoted = audit(w.t3, w.d1.id, holder_id=w.d3.id, **books_b)
    # Removals (QA s21): read by the record's books and its person, whoever acted, and no
    # longer by their actor. d1, then an operator of B, removed d3's other card, and
    # opA2, then in B, d3's second car: B's and d3's, neither d1's (a driver now) nor
    # opA2's (in A now). An admin removed d1's car (d1's) and a card of B's d3 (B's
    # and d3's); and a station of no one's (admins' only).
    w.a_demoted_removal = audit(id_tag(w.d3), w.d1.id, action=AuditAction.DELETE,
                                holder_id=w.d3.id, **books_b)
    w.a_moved_removal = audit(vehicle(w.d3), w.opA2.id, action=AuditAction.DELETE,
                              holder_id=w.d3.id, **books_b)
    w.a_admin_removed_car = audit(vehicle(w.d1), w.admin.id, action=AuditAction.DELETE,
                                  holder_id=w.d1.id)
    w.a_admin_removed_card = audit(id_tag(w.d3), w.admin.id, action=AuditAction.DELETE,
                                   holder_id=w.d3.id, **books_b)
    w.a_nobody_removed = audit(station(), w.admin.id, action=AuditAction.DELETE)
    # d4 moved from B to A: B keeps what was written in its books (the move too, in the
    # books d4 left), A reads only what was written since.
    w.a_d4_in_b = audit(w.d4, w.opB.id, holder_id=w.d4.id, **books_b)
    w.a_d4_moved = audit(w.d4, w.admin.id, holder_id=w.d4.id, **books_b)
    w.a_d4_in_a = audit(w.d4, w.opA.id, holder_id=w.d4.id, **books_a)
    # Written in A's books while A ran S6, before it was handed to B: a command (drivers'
    # cards in its request) and a reservation stay A's; the station's own record is B's too.
    w.a_command_s6 = audit(w.S6, w.opA.id, action=AuditAction.COMMAND, company_id=w.A.id)
    w.a_record_s6 = audit(w.S6, w.opA.id, company_id=w.A.id)
    w.a_reserved_r1 = audit(w.r1, w.d1.id, action=AuditAction.CREATE, company_id=w.A.id,
                            holder_id=w.d1.id)
    # What is known of chargers' configuration: those who run the station now only (S6's
    # is B's, whoever ran it when it was read), never drivers nor the map.
    w.k1, w.k3, w.k4, w.k6, w.k7 = (configuration_key(s) for s in
                                    (w.S1, w.S3, w.S4, w.S6, w.S7))
    # A command to opSolo's own station, in their books.
    w.a_command_s4 = audit(w.S4, w.opSolo.id, action=AuditAction.COMMAND,
                           station_owner_id=w.opSolo.id)
    return dict(vars(w))


#: viewer -> kind -> the names it sees; kinds left out: nothing.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "opA": {
        "configuration_key": {"k1", "k7"},
        "company": {"A"},
        "user": {"opA", "opA2", "d1", "d3", "d4"},
        "vehicle": {"v1", "v3"},
        "id_tag": {"t4"},
        "station": {"S1", "S2", "S5", "S7"},
        "connector": {"C1", "C2", "C5", "C7"},
        "session": {"x1", "x3", "x5", "x6"},
        "meter_sample": {"m1", "m_orphan", "m6"},
        "status_event": {"e1"},
        "reservation": {"r1", "r6_done", "r6_live", "r6_lapsed"},
        "tariff": {"tA", "tS5"},
        "payment": {"p1"},
        "refund": {"f1", "f6"},
        # A colleague's removal too (opA2's of a station), and of d4 what was written
        # since d4 joined A.
        "audit_entry": {"a_opA", "a_opA2", "a_sys_c2", "a_a_tariff", "a_x1_ended",
                        "a_command_s6", "a_record_s6", "a_reserved_r1", "a_removal",
                        "a_d4_in_a"},
    },
    # Moved from B to A: A's records, B's left behind (a_moved, a_moved_person).
    "opA2": {
        "configuration_key": {"k1", "k7"},
        "company": {"A"},
        "user": {"opA", "opA2", "d1", "d3", "d4"},
        "vehicle": {"v1", "v3"},
        "id_tag": {"t4"},
        "station": {"S1", "S2", "S7"},
        "connector": {"C1", "C2", "C7"},
        "session": {"x1", "x3", "x5", "x6"},
        "meter_sample": {"m1", "m_orphan", "m6"},
        "status_event": {"e1"},
        "reservation": {"r1", "r6_done", "r6_live", "r6_lapsed"},
        "tariff": {"tA"},
        "payment": {"p1"},
        "refund": {"f1", "f6"},
        # Not the removal they made while in B (a_moved_removal).
        "audit_entry": {"a_opA", "a_opA2", "a_sys_c2", "a_a_tariff", "a_removal",
                        "a_x1_ended", "a_command_s6", "a_record_s6", "a_reserved_r1",
                        "a_d4_in_a"},
    },
    "opB": {
        "configuration_key": {"k3", "k6"},
        "company": {"B"},
        "user": {"opB", "d3", "d2"},
        "vehicle": {"v2", "v3"},
        "id_tag": {"t3"},
        "station": {"S3", "S6", "S8"},
        "connector": {"C3", "C8"},
        "session": {"x2"},
        "meter_sample": {"m2", "m3_own"},
        "status_event": {"e3"},
        "reservation": {"r3", "r6_live", "r6_b"},
        "tariff": {"tS3"},
        "payment": {"p2"},
        "refund": {"f2"},
        # Its people's removals, whoever made them and wherever they are now; d4's
        # history up to the move, which A does not inherit.
        "audit_entry": {"a_opB", "a_moved", "a_b_person", "a_moved_person", "a_ocpp_x2",
                        "a_demoted", "a_record_s6", "a_demoted_removal", "a_moved_removal",
                        "a_admin_removed_card", "a_d4_in_b", "a_d4_moved"},
    },
    "opSolo": {
        "configuration_key": {"k4"},
        "user": {"opSolo", "d2"},
        "station": {"S4"},
        "connector": {"C4"},
        "session": {"x4"},
        "meter_sample": {"m4"},
        "status_event": {"e4"},
        "tariff": {"tS4"},
        "audit_entry": {"a_sys_s4", "a_command_s4"},
    },
    "d1": {
        "user": {"d1"},
        "vehicle": {"v1"},
        "id_tag": {"t1"},
        "session": {"x1", "x6"},
        "meter_sample": {"m1", "m6"},
        "reservation": {"r1", "r6_done", "r6_lapsed"},
        "payment": {"p1"},
        "refund": {"f1", "f6"},
        # About what is theirs, whoever acted (their session, ended by its operator;
        # their car, removed by an admin), not the removal they made as B's operator.
        "audit_entry": {"a_d1", "a_x1_ended", "a_reserved_r1", "a_admin_removed_car"},
        # The public map: every station, connector and price.
        "station": {"S1", "S2", "S3", "S4", "S5", "S6"},
        "connector": {"C1", "C2", "C3", "C4", "C5"},
        "tariff": {"tA", "tS3", "tS4", "tS5"},
    },
    "d3": {
        "company": {"B"},
        "user": {"d3"},
        "vehicle": {"v3"},
        "id_tag": {"t3"},
        "session": {"x5"},
        "reservation": {"r6_live"},
        "station": {"S1", "S2", "S3", "S4", "S5", "S6"},
        "connector": {"C1", "C2", "C3", "C4", "C5"},
        "tariff": {"tA", "tS3", "tS4", "tS5"},
        # Entries about themselves and what they hold, by their operators, its removals
        # included.
        "audit_entry": {"a_b_person", "a_moved_person", "a_demoted", "a_demoted_removal",
                        "a_moved_removal", "a_admin_removed_card"},
    },
    # Moved from B to A: their whole history, whichever company's books it is in.
    "d4": {
        "company": {"A"},
        "user": {"d4"},
        "station": {"S1", "S2", "S3", "S4", "S5", "S6"},
        "connector": {"C1", "C2", "C3", "C4", "C5"},
        "tariff": {"tA", "tS3", "tS4", "tS5"},
        "audit_entry": {"a_d4_in_b", "a_d4_moved", "a_d4_in_a"},
    },
    "anonymous, public map": {
        "station": {"S1", "S2", "S3", "S4", "S5", "S6"},
        "connector": {"C1", "C2", "C3", "C4", "C5"},
        "tariff": {"tA", "tS3", "tS4", "tS5"},
    },
    "anonymous, no map": {},
    "no role": {},
}




def signed_twins(samples: set[str]) -> set[str]:
    """The names of the signed meter values beside the samples named (m1 -> s1)."""
    return {"s" + name[1:] for name in samples}


# A session's signed meter values follow the rules of its samples, viewer for viewer.
for _seen in EXPECTED.values():
    if "meter_sample" in _seen:
        _seen["signed_meter_value"] = signed_twins(_seen["meter_sample"])


@pytest.fixture
async def world(store: Store) -> dict[str, Record]:
    records = build_world()
    await put(store, *records.values())
    return records


def viewer_and_policy(name: str, world: dict[str, Record]) -> tuple[Viewer, Policy]:
    if name == "anonymous, public map":
        return ANONYMOUS, Policy(public_map=True)
    if name == "anonymous, no map":
        return ANONYMOUS, Policy(public_map=False)
    if name == "no role":
        return Viewer(user_id=world["d1"].id), Policy(public_map=True)
    return Viewer.of(world[name]), Policy()  # type: ignore[arg-type]


async def visible(store: Store, world: dict[str, Record], viewer: Viewer, policy: Policy,
                  kind: type[Record]) -> set[str]:
    """Names of the records of ``kind`` the viewer sees, read three ways that must agree."""
    scope = policy.scope(viewer, kind.kind)
    names = {record.id: name for name, record in world.items()}
    listed = {names[r.id] for r in await store.find_all(kind, scope)}
    assert await store.count(kind, scope) == len(listed)
    all_ids = [r.id for r in world.values() if isinstance(r, kind)]
    fetched = await store.get_many(kind, all_ids, scope)
    assert {names[r.id] for r in fetched if r is not None} == listed
    return listed


@pytest.mark.parametrize("viewer_name", sorted(EXPECTED))
async def test_scope_of_each_viewer(store: Store, world: dict[str, Record],
                                    viewer_name: str) -> None:
    viewer, policy = viewer_and_policy(viewer_name, world)
    for kind in ENTITY_TYPES:
        expected = EXPECTED[viewer_name].get(kind.kind, set())
        assert await visible(store, world, viewer, policy, kind) == expected, kind.kind


async def test_admin_sees_everything(store: Store, world: dict[str, Record]) -> None:
    admin = Viewer.of(world["admin"])  # type: ignore[arg-type]
    for kind in ENTITY_TYPES:
        every = {name for name, r in world.items() if isinstance(r, kind)}
        assert await visible(store, world, admin, Policy(), kind) == every, kind.kind


async def test_operators_of_two_tenants_see_disjoint_stations(store: Store,
                                                              world: dict[str, Record]) -> None:
    policy = Policy(public_map=True)  # the public map never leaks across tenants
    seen = {}
    for name in ("opA", "opB"):
        viewer = Viewer.of(world[name])  # type: ignore[arg-type]
        seen[name] = {
            kind.kind: await visible(store, world, viewer, policy, kind)
            for kind in ENTITY_TYPES
            if kind.kind in ("station", "connector", "session", "status_event")
        }
    for kind, names in seen["opA"].items():
        assert not names & seen["opB"][kind], kind


#: viewer -> the samples it sees listed under their sessions (``Session.meterValues``).
SAMPLES_UNDER_SESSIONS: dict[str, set[str]] = {
    "admin": {"m1", "m2", "m4", "m6"},
    # Their books: A's sessions, also x6 on S6, which B runs now.
    "opA": {"m1", "m6"},
    "opA2": {"m1", "m6"},
    "opB": {"m2"},
    "opSolo": {"m4"},
    "d1": {"m1", "m6"},
    "d2": {"m2", "m4"},
    "d3": set(),  # x5 is d3's session, metered by nothing here
    "anonymous, public map": set(),
    "anonymous, no map": set(),
    "no role": set(),
}


@pytest.mark.parametrize("kind", [MeterSample, SignedMeterValue], ids=lambda k: k.kind)
@pytest.mark.parametrize("viewer_name", sorted(SAMPLES_UNDER_SESSIONS))
async def test_a_session_s_samples_are_seen_by_whoever_sees_the_session(
        store: Store, world: dict[str, Record], viewer_name: str,
        kind: type[Record]) -> None:
    """``Policy.scope_under``: a session's samples, and its signed meter values, follow
    the session's books, not the station that metered them (x6 was charged at S6 while
    A ran it; B runs it now)."""
    names = {r.id: name for name, r in world.items()}
    keys = [r.id for r in world.values() if r.kind == "session"]
    viewer, policy = viewer_and_policy(viewer_name, world)

    scope = policy.scope_under(viewer, kind.kind, "session_id", keys)
    found = await store.find_grouped(kind, "session_id", keys, scope, (), 10)
    counted = await store.count_grouped(kind, "session_id", keys, scope)

    listed = {names[m.id] for rows in found.values() for m in rows}
    expected = SAMPLES_UNDER_SESSIONS[viewer_name]
    assert listed == (expected if kind is MeterSample else signed_twins(expected))
    assert sum(counted.values()) == len(listed)


@pytest.mark.parametrize("viewer_name", ["admin", "d2", *sorted(EXPECTED)])
async def test_a_payment_s_refunds_are_seen_by_whoever_sees_the_payment(
        store: Store, world: dict[str, Record], viewer_name: str) -> None:
    """``Payment.refunds`` (``Policy.scope_under``): a payment's ledger is seen exactly
    by whoever sees the payment, whatever its refund records say: ``f1_bare`` (a refund
    of p1 recorded without books or driver) is listed with p1's, and f6, whose payment
    is not among the parents asked for, with none."""
    bare = refund(cast(Session, world["x1"]), world["p1"].id, company_id=None,
                  station_owner_id=None, user_id=None)
    await put(store, bare)
    world = {**world, "f1_bare": bare}
    names = {r.id: name for name, r in world.items()}
    viewer, policy = viewer_and_policy(viewer_name, world)
    keys = [world["p1"].id, world["p2"].id]
    seen_payments = {names[p.id] for p in await store.find_all(
        Payment, all_of(policy.scope(viewer, "payment"), In("id", tuple(keys))))}
    expected = {"p1": {"f1", "f1_bare"}, "p2": {"f2"}}

    scope = policy.scope_under(viewer, "refund", "payment_id", keys)
    found = await store.find_grouped(Refund, "payment_id", keys, scope, (), 10)
    counted = await store.count_grouped(Refund, "payment_id", keys, scope)

    listed = {names[r.id] for rows in found.values() for r in rows}
    assert listed == {f for p in seen_payments for f in expected[p]}
    assert sum(counted.values()) == len(listed)
    if viewer_name in ("admin", "opA", "d2"):  # neither none nor everything
        assert seen_payments, viewer_name


@pytest.mark.parametrize("viewer_name", sorted(EXPECTED))
def test_reservation_events_reach_whoever_sees_the_reservation(viewer_name: str) -> None:
    """``Policy.sees_event`` decides ``reservationChanged`` by the reservation scope's
    rule, on the event: its books, or live on a station the operator runs now. Each
    event is the reservation as it reads now (one past its expiry is announced EXPIRED
    by the sweep, never live). An event that ends a reservation also reaches the
    station's current operators, who saw it live (``test_a_reservation_s_end_reaches_
    the_station_s_operators``): here only the ends in the viewer's reads are counted."""
    world = build_world()
    viewer, policy = viewer_and_policy(viewer_name, world)
    now = utcnow()
    seen = set()
    expected = EXPECTED[viewer_name].get("reservation", set())
    for name, record in world.items():
        if isinstance(record, Reservation):
            station = world_station(world, record.station_id)
            event = reservation_changed(replace(record, state=record.state_at(now)), station)
            ended = event.state not in LIVE_RESERVATION_STATES
            if policy.sees_event(viewer, event) and (name in expected or not ended):
                seen.add(name)
    assert seen == expected


def test_a_reservation_s_end_reaches_the_station_s_operators() -> None:
    """A reservation in A's books, live on S6 when B took it over: B saw it live, and
    must hear that it ended (B's charger used it, B cancelled it), or B's live map goes
    on showing the plug held."""
    world = build_world()
    live = next(r for r in world.values() if isinstance(r, Reservation)
                and r.station_id == world["S6"].id and r.company_id == world["A"].id
                and r.state in LIVE_RESERVATION_STATES and r.expires_at > utcnow())
    policy = Policy()
    for state in (ReservationState.USED, ReservationState.CANCELLED):
        event = reservation_changed(replace(live, state=state),
                                    world_station(world, live.station_id))
        assert policy.sees_event(Viewer.of(cast(User, world["opB"])), event), state
        assert policy.sees_event(Viewer.of(cast(User, world["opA"])), event), state
        assert not policy.sees_event(Viewer.of(cast(User, world["opSolo"])), event)


def test_a_reservation_event_without_books_follows_its_station() -> None:
    """From a version before events carried the books (a rolling upgrade): decided by
    the station's ownership, as then."""
    world = build_world()
    done = cast(Reservation, world["r6_done"])
    event = replace(reservation_changed(done, world_station(world, done.station_id)),
                    books_company_id=None, books_station_owner_id=None)
    policy = Policy()
    assert policy.sees_event(Viewer.of(cast(User, world["opB"])), event)
    assert not policy.sees_event(Viewer.of(cast(User, world["opA"])), event)


def world_station(world: dict[str, Record], station_id: str) -> Station:
    [station] = [r for r in world.values() if isinstance(r, Station) and r.id == station_id]
    return station


def test_the_map_events_of_a_station_not_accepted_reach_only_its_operators() -> None:
    """``sees_event`` as the scopes: a self-registered station's status reports are not
    the drivers' (nor the signed-out map's) until it is accepted."""
    world = build_world()
    policy = Policy(public_map=True)
    seen = {}
    for name in ("S1", "S7"):
        event = ConnectorStatusChanged(**owned_by(cast(Station, world[name])),
                                       connector_record_id=None, connector_id=1,
                                       status="Available")
        seen[name] = [policy.sees_event(viewer, event) for viewer in (
            ANONYMOUS, Viewer.of(cast(User, world["d1"])),
            Viewer.of(cast(User, world["opA"])), Viewer.of(cast(User, world["admin"])))]
    assert seen == {"S1": [True, True, True, True], "S7": [False, False, True, True]}


@pytest.mark.parametrize("viewer_name", sorted(EXPECTED))
async def test_lists_under_stations_seen_are_the_scope_s(
        store: Store, world: dict[str, Record], viewer_name: str) -> None:
    """``Policy.sees`` is the station scope on one station held, and a list under stations
    seen (``scope_under``'s ``seen``), its station conditions dropped, holds exactly what
    the kind's scope does under them, for every viewer."""
    viewer, policy = viewer_and_policy(viewer_name, world)
    seen = await visible(store, world, viewer, policy, Station)
    assert {name for name, r in world.items() if isinstance(r, Station)
            and policy.sees(viewer, r)} == seen
    keys = [world[name].id for name in seen]
    for kind in (Connector, Tariff, ConfigurationKey, Session, Reservation):
        under = In("station_id", tuple(keys))
        scoped = all_of(under, policy.scope(viewer, kind.kind))
        asked = all_of(under, policy.scope_under(viewer, kind.kind, "station_id", keys,
                                                 seen="station"))
        expected = {r.id for r in await store.find_all(kind, scoped)}
        assert {r.id for r in await store.find_all(kind, asked)} == expected, kind.kind
    # A seen station's company prices, asked by its company alone (``Station.tariff``'s
    # fallback): the keys decide what the scope says of them.
    for company_id in {cast(Station, world[name]).company_id for name in seen} - {None}:
        of_company = all_of(Eq("company_id", company_id), Eq("station_id", None))
        asked = all_of(of_company,
                       policy.scope_under(viewer, "tariff", "company_id", [company_id]))
        expected = {r.id for r in await store.find_all(Tariff, all_of(
            of_company, policy.scope(viewer, "tariff")))}
        assert {r.id for r in await store.find_all(Tariff, asked)} == expected, company_id
