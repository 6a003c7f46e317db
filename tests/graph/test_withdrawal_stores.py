"""What the card withdrawal (``domain/services/withdrawal.py``) reads and writes, on both
stores (QA review 17b): the expiry sweep pages by (expiry, id); a list entry records the
card its tag named; a card's withdrawal is marked in its own change's commit; a
reservation holds its plug for the card it was made for, not for a tag string."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.query import Eq, In
from domain.services import Services, withdrawal
from domain.services.base import patch, reserved_for_card, stamp_new
from tests.graph.world import World


async def listed(services: Services, world: World, *tags: str) -> None:
    """CP A-001's charger accepted a Full list of ``tags`` (recorded as for any)."""
    await withdrawal.record_local_list(services.ctx.store, world.stations["A-001"], {
        "listVersion": 1, "updateType": "Full", "localAuthorizationList": [
            {"idTag": tag, "idTagInfo": {"status": "Accepted"}} for tag in tags]}, SYSTEM,
        ours=False, now=datetime.now(UTC))


async def test_the_expiry_sweep_takes_every_card_sharing_an_expiry_across_batches(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full batch's sweep went on from its last card's expiry, strictly after it: the
    other cards of that expiry were never swept. Paged by (expiry, id) they are."""
    monkeypatch.setattr(withdrawal, "EXPIRY_BATCH", 5)
    store = services.ctx.store
    tags = [f"BULK-{i}" for i in range(8)]
    cards = [await services.fleet.issue_id_tag(SYSTEM, tag=tag,
                                               user_id=world.users["driver1"].id)
             for tag in tags]
    expired = utcnow().replace(microsecond=0) - timedelta(minutes=1)
    await store.write([patch(card, SYSTEM, expires_at=expired) for card in cards], [])
    await listed(services, world, *tags)

    swept = [await services.withdrawal.sweep_expired() for _ in range(3)]
    assert swept == [5, 3, 0]
    entries = await store.find_all(d.LocalListEntry, In("tag", tuple(tags)))
    assert sorted((e.tag, e.wanted) for e in entries) == [(tag, "Expired") for tag in tags]


async def test_a_list_entry_names_the_card_its_tag_named_when_accepted(
        services: Services, world: World) -> None:
    await listed(services, world, "TAG-DRIVER1", "STAFF-1")
    entries = {e.tag: e for e in await services.ctx.store.find_all(
        d.LocalListEntry, Eq("station_id", world.stations["A-001"].id))}
    assert entries["TAG-DRIVER1"].card_id == world.tags["driver1"].id
    assert entries["STAFF-1"].card_id is None


@pytest.mark.parametrize("change", ["block", "remove"])
async def test_a_withdrawn_cards_entries_are_marked_in_its_own_commit(
        services: Services, world: World, change: str) -> None:
    """The withdrawal runs in the background after the commit: a process killed in
    between left a removed card Accepted in every list. The mark is in the card's own
    commit (a charger's boot sends it); here no background work runs at all."""
    services.fleet.on_withdrawn = None  # the process died before it ran
    await listed(services, world, "TAG-DRIVER2")
    card = world.tags["driver2"]
    if change == "block":
        await services.fleet.update_id_tag(world.viewer("driver2"), card.id,
                                           status=d.IdTagStatus.BLOCKED)
    else:
        await services.fleet.remove_id_tag(world.viewer("driver2"), card.id)
    [held] = await services.ctx.store.find_all(d.LocalListEntry, Eq("tag", card.tag))
    assert (held.status, held.wanted) == ("Accepted", "Blocked")


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


@pytest.mark.parametrize(("theirs", "held"), [(2, ["STAFF-1"]),
                                              (3, ["STAFF-1", "TAG-DRIVER1"]),
                                              (1, ["STAFF-1", "TAG-DRIVER1"])])
async def test_an_unanswered_list_is_recorded_once_the_chargers_version_says_it_took_it(
        services: Services, world: World, theirs: int, held: list[str]) -> None:
    """A Full list sent and not answered is kept pending at its version (an entry with
    an expiry, as a put-back's, included): the charger's version at exactly it records
    it as accepted (review s26), any other drops it (review r26-multi3: one above it,
    3, was taken for it too, though the charger's list moved on by some other list)."""
    store, station = services.ctx.store, world.stations["A-001"]
    await listed(services, world, "TAG-DRIVER1", "STAFF-1")
    await withdrawal.hold_pending(store, station, {
        "listVersion": 2, "updateType": "Full", "localAuthorizationList": [
            {"idTag": "STAFF-1", "idTagInfo": {
                "status": "Accepted", "expiryDate": utcnow() + timedelta(days=1)}}]},
        SYSTEM, ours=False)
    [kept] = await store.get_many(d.LocalList, [station.id])
    assert kept is not None and kept.version == 1
    assert kept.pending is not None and [p["listVersion"] for p in kept.pending] == [2]

    await withdrawal.settle_pending(store, station, theirs, SYSTEM, now=utcnow())
    entries = await store.find_all(d.LocalListEntry, Eq("station_id", station.id))
    assert sorted(e.tag for e in entries) == held
    [after] = await store.get_many(d.LocalList, [station.id])
    assert after is not None and after.pending is None
    assert after.version == (2 if theirs == 2 else 1)


def _full(version: int, *tags: str) -> dict[str, Any]:
    return {"listVersion": version, "updateType": "Full", "localAuthorizationList": [
        {"idTag": tag, "idTagInfo": {"status": "Accepted"}} for tag in tags]}


def _differential(version: int, tag: str, status: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"idTag": tag}
    if status is not None:
        item["idTagInfo"] = {"status": status}
    return {"listVersion": version, "updateType": "Differential",
            "localAuthorizationList": [item]}


@pytest.mark.parametrize(("theirs", "held", "version"), [
    (2, ["STAFF-1"], 2),                                 # Full v2 taken, v3 above: not
    (3, ["STAFF-1", "TAG-DRIVER1", "TAG-DRIVER2"], 3),   # Full not at 3: only v3 taken
    (1, ["STAFF-1", "TAG-DRIVER1"], 1),                  # neither
    (7, ["STAFF-1", "TAG-DRIVER1", "TAG-DRIVER2"], 3)])  # v3 up to 7: taken; Full not
async def test_every_unanswered_list_is_kept_and_settled_in_order(
        services: Services, world: World, theirs: int, held: list[str],
        version: int) -> None:
    """Review r26-multi3: one pending list was kept, a second unanswered one in the
    first's place; the first, taken, was forgotten when the charger's version dropped
    the second. Each is kept, in the order sent, and walked so once the charger's
    version is learnt (review r26-multi4): a Full list taken only at exactly it, a
    Differential above the version recorded so far and up to it; the rest dropped."""
    store, station = services.ctx.store, world.stations["A-001"]
    await listed(services, world, "TAG-DRIVER1", "STAFF-1")
    await withdrawal.hold_pending(store, station, _full(2, "STAFF-1"), SYSTEM, ours=False)
    await withdrawal.hold_pending(store, station, _differential(3, "TAG-DRIVER2", "Accepted"),
                                  SYSTEM, ours=False)
    [kept] = await store.get_many(d.LocalList, [station.id])
    assert kept is not None and kept.pending is not None
    assert [p["listVersion"] for p in kept.pending] == [2, 3]

    await withdrawal.settle_pending(store, station, theirs, SYSTEM, now=utcnow())
    entries = await store.find_all(d.LocalListEntry, Eq("station_id", station.id))
    assert sorted(e.tag for e in entries) == held
    [after] = await store.get_many(d.LocalList, [station.id])
    assert after is not None and after.pending is None and after.version == version


async def test_the_unanswered_lists_kept_are_bounded(services: Services,
                                                     world: World) -> None:
    store, station = services.ctx.store, world.stations["A-001"]
    for version in range(2, 2 + withdrawal.MAX_PENDING + 3):
        await withdrawal.hold_pending(store, station, _full(version, "STAFF-1"), SYSTEM,
                                      ours=False)
    [kept] = await store.get_many(d.LocalList, [station.id])
    assert kept is not None and kept.pending is not None
    assert [p["listVersion"] for p in kept.pending] == list(
        range(5, 2 + withdrawal.MAX_PENDING + 3))


async def test_the_unanswered_lists_kept_are_bounded_by_their_weight_too(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """They are kept in one record, which on MongoDB carries at most 16 MiB, written
    guarded on the value read (the guard's filter and the update each hold them): eight
    lists as large as an operator may send passed it (QA s29 mongo). The oldest go past
    ``PENDING_BYTES`` as past ``MAX_PENDING``; a list weighing more alone is not kept."""
    store, station = services.ctx.store, world.stations["A-001"]
    tags = [f"STAFF-{i:03d}" for i in range(20)]
    one = len(json.dumps(_full(2, *tags), separators=(",", ":")))
    monkeypatch.setattr(withdrawal, "PENDING_BYTES", 3 * one + 3 * 150)  # 3 + their stamps
    for version in range(2, 7):
        await withdrawal.hold_pending(store, station, _full(version, *tags), SYSTEM,
                                      ours=False)
    [kept] = await store.get_many(d.LocalList, [station.id])
    assert kept is not None and kept.pending is not None
    assert [p["listVersion"] for p in kept.pending] == [4, 5, 6]
    assert len(json.dumps(kept.pending, separators=(",", ":"))) <= withdrawal.PENDING_BYTES

    await withdrawal.hold_pending(store, station, _full(7, *tags * 4), SYSTEM,
                                  ours=False)  # over the weight alone: dropped, all before it
    [after] = await store.get_many(d.LocalList, [station.id])
    assert after is not None and after.pending is None
    await withdrawal.hold_pending(store, station, _full(8, *tags), SYSTEM, ours=False)
    [last] = await store.get_many(d.LocalList, [station.id])
    assert last is not None and [p["listVersion"] for p in last.pending or ()] == [8]


@pytest.mark.parametrize(("pending_at", "theirs", "taken"), [
    (2, 2, False),   # at the version recorded: the charger at it took nothing
    (3, 3, True)])   # above it, at the charger's version: taken
async def test_an_unanswered_differential_at_the_recorded_version_is_not_taken(
        services: Services, world: World, pending_at: int, theirs: int,
        taken: bool) -> None:
    """Review r26-multi3: a pending list is taken when the charger's version is exactly
    its own, unless that is the version recorded before it: a Differential at the
    recorded version would have been refused (VersionMismatch), and a charger still at
    that version took none."""
    store, station = services.ctx.store, world.stations["A-001"]
    await withdrawal.record_local_list(store, station, _full(pending_at - 1, "STAFF-1"),
                                       SYSTEM, ours=False, now=utcnow())
    if pending_at == 2:  # recorded at 2 (a Differential accepted there)
        await withdrawal.record_local_list(store, station, _differential(2, "STAFF-2",
                                                                         "Accepted"),
                                           SYSTEM, ours=False, now=utcnow())
    await withdrawal.hold_pending(store, station, _differential(pending_at, "STAFF-1", None),
                                  SYSTEM, ours=False)
    await withdrawal.settle_pending(store, station, theirs, SYSTEM, now=utcnow())
    tags = {e.tag for e in await store.find_all(d.LocalListEntry,
                                                 Eq("station_id", station.id))}
    assert ("STAFF-1" not in tags) is taken, tags
    [after] = await store.get_many(d.LocalList, [station.id])
    assert after is not None and after.pending is None


async def test_two_instances_holding_unanswered_lists_at_once_keep_both(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pending lists are written guarded on the value read (review r26-multi3): an
    instance holding one while another held its own, after its read, wiped it. Its
    write fails, and it is tried again from a fresh read."""
    store, station = services.ctx.store, world.stations["A-001"]
    await listed(services, world, "STAFF-1")
    write = store.write
    other_done = False

    async def racing(changes: Any, audit: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal other_done
        if not other_done and any(isinstance(c.record, d.LocalList) for c in changes):
            other_done = True  # the other instance's hold lands between read and write
            await withdrawal.hold_pending(store, station, _full(3, "STAFF-1"), SYSTEM,
                                          ours=False)
        return await write(changes, audit, *args, **kwargs)
    monkeypatch.setattr(store, "write", racing)
    await withdrawal.hold_pending(store, station, _full(2, "STAFF-1"), SYSTEM, ours=True)
    [kept] = await store.get_many(d.LocalList, [station.id])
    assert kept is not None and kept.pending is not None
    assert [(p["listVersion"], p["ours"]) for p in kept.pending] == [(3, False), (2, True)]


async def _tags(services: Services, world: World) -> dict[str, str]:
    return {e.tag: e.status for e in await services.ctx.store.find_all(
        d.LocalListEntry, Eq("station_id", world.stations["A-001"].id))}


@pytest.mark.parametrize("learnt_by", ["settle", "later_differential"])
async def test_a_second_differential_at_the_taken_version_is_not_recorded(
        services: Services, world: World, learnt_by: str) -> None:
    """Review r26-multi4. Recorded at 1 (STAFF-1, STAFF-2 Accepted). Diff v2 (STAFF-1
    Blocked) is sent and its answer lost; Diff v2 again (STAFF-1 and STAFF-2 Blocked: the
    push re-sent at recorded+1 when its version check went unanswered) is refused by
    the charger, now at 2 (VersionMismatch), its answer lost as well. The charger holds
    STAFF-2 Accepted: learnt through its version (2) or a later accepted Differential,
    the second is dropped (it was recorded through the version: STAFF-2 Blocked,
    nothing wanted)."""
    store, station = services.ctx.store, world.stations["A-001"]
    now = datetime.now(UTC)
    await withdrawal.record_local_list(store, station, _full(1, "STAFF-1", "STAFF-2"),
                                       SYSTEM, ours=False, now=now)
    first = _differential(2, "STAFF-1", "Blocked")
    second = {**first, "localAuthorizationList": [
        {"idTag": "STAFF-1", "idTagInfo": {"status": "Blocked"}},
        {"idTag": "STAFF-2", "idTagInfo": {"status": "Blocked"}}]}
    await withdrawal.hold_pending(store, station, first, SYSTEM, ours=True)
    await withdrawal.hold_pending(store, station, second, SYSTEM, ours=True)
    if learnt_by == "settle":
        await withdrawal.settle_pending(store, station, 2, SYSTEM, now=now)
    else:
        await withdrawal.record_local_list(store, station, _differential(3, "X-9", None),
                                           SYSTEM, ours=False, now=now)
    assert (await _tags(services, world))["STAFF-2"] == "Accepted"


async def test_a_differential_above_the_chargers_version_sent_first_is_not_recorded(
        services: Services, world: World) -> None:
    """Review r26-multi4. Recorded at 1. Pending, in the order sent: Diff v3 removing
    STAFF-2 (never delivered), then Diff v2 adding STAFF-3 (taken, answer lost). The
    charger says 2: it cannot have taken v3 (it would be at 3, the v2 after it refused).
    v3 was recorded (STAFF-2 gone, version 3) and v2 skipped below it: the record held
    neither what the charger holds nor its version."""
    store, station = services.ctx.store, world.stations["A-001"]
    now = datetime.now(UTC)
    await withdrawal.record_local_list(store, station, _full(1, "STAFF-1", "STAFF-2"),
                                       SYSTEM, ours=False, now=now)
    await withdrawal.hold_pending(store, station, _differential(3, "STAFF-2", None),
                                  SYSTEM, ours=False, sent_at=now)
    await withdrawal.hold_pending(store, station, _differential(2, "STAFF-3", "Accepted"),
                                  SYSTEM, ours=False, sent_at=now + timedelta(seconds=1))
    await withdrawal.settle_pending(store, station, 2, SYSTEM, now=now)
    [after] = await store.get_many(d.LocalList, [station.id])
    assert after is not None
    assert (after.version, sorted(await _tags(services, world))) == (
        2, ["STAFF-1", "STAFF-2", "STAFF-3"])


async def test_the_unanswered_lists_are_walked_in_the_order_sent_not_held(
        services: Services, world: World) -> None:
    """Review r26-multi4: two Differentials sent at 2 (STAFF-1 Blocked, then STAFF-2
    Blocked), the second's answer failing first. The charger at 2 took the one sent
    first and refused the other (VersionMismatch): the one held first is not it."""
    store, station = services.ctx.store, world.stations["A-001"]
    now = datetime.now(UTC)
    await withdrawal.record_local_list(store, station, _full(1, "STAFF-1", "STAFF-2"),
                                       SYSTEM, ours=False, now=now)
    await withdrawal.hold_pending(store, station, _differential(2, "STAFF-2", "Blocked"),
                                  SYSTEM, ours=False, sent_at=now + timedelta(seconds=1))
    await withdrawal.hold_pending(store, station, _differential(2, "STAFF-1", "Blocked"),
                                  SYSTEM, ours=False, sent_at=now)
    [kept] = await store.get_many(d.LocalList, [station.id])
    assert kept is not None and kept.pending is not None
    assert [p["localAuthorizationList"][0]["idTag"] for p in kept.pending] == [
        "STAFF-1", "STAFF-2"]
    await withdrawal.settle_pending(store, station, 2, SYSTEM, now=now)
    assert await _tags(services, world) == {"STAFF-1": "Blocked", "STAFF-2": "Accepted"}


@pytest.mark.parametrize(("sent", "theirs", "held", "version"), [
    # Diff v2 then Full v3, the charger at 3: both taken, the Full last.
    ([_differential(2, "STAFF-2", "Blocked"), _full(3, "STAFF-3")], 3, {
        "STAFF-3": "Accepted"}, 3),
    # Full v3 then Diff v3: the Full taken, the Differential at its version refused.
    ([_full(3, "STAFF-3"), _differential(3, "STAFF-2", "Accepted")], 3, {
        "STAFF-3": "Accepted"}, 3),
    # Two Full lists at 3: the one sent last is taken (the guess left).
    ([_full(3, "STAFF-2"), _full(3, "STAFF-3")], 3, {"STAFF-3": "Accepted"}, 3),
    # Full v3 then Diff v4, the charger at 4: the Full, not at 4, is taken for not
    # (the guess left); the Differential is taken on what was recorded.
    ([_full(3, "STAFF-3"), _differential(4, "STAFF-1", "Blocked")], 4, {
        "STAFF-1": "Blocked", "STAFF-2": "Accepted"}, 4),
    # A Full list re-sent at the version recorded (1), the charger at 1: its version
    # tells nothing, and the record keeps the tags it had, so that blocking one of them
    # is sent (taken for held, the charger still accepting STAFF-1 and STAFF-2 if it
    # never arrived, a block of either sent nothing).
    ([_full(1, "STAFF-3")], 1, {"STAFF-1": "Accepted", "STAFF-2": "Accepted"}, 1)])
async def test_the_settle_rule_for_full_lists_among_differentials(
        services: Services, world: World, sent: list[dict[str, Any]], theirs: int,
        held: dict[str, str], version: int) -> None:
    """Review r26-multi4, the rule as decided: a Full list is taken at exactly the
    charger's version when no Full list sent after it is at it too, and resets the
    record; a Differential is taken above the version recorded so far."""
    store, station = services.ctx.store, world.stations["A-001"]
    now = datetime.now(UTC)
    await withdrawal.record_local_list(store, station, _full(1, "STAFF-1", "STAFF-2"),
                                       SYSTEM, ours=False, now=now)
    for i, payload in enumerate(sent):
        await withdrawal.hold_pending(store, station, payload, SYSTEM, ours=False,
                                      sent_at=now + timedelta(seconds=i))
    await withdrawal.settle_pending(store, station, theirs, SYSTEM, now=now)
    [after] = await store.get_many(d.LocalList, [station.id])
    assert after is not None and after.pending is None
    assert (after.version, await _tags(services, world)) == (version, held)


class _Holding:
    """A gateway holding the chargers ``cp_ids`` here (none answers: nothing is sent,
    the stations being recorded offline)."""

    def __init__(self, *cp_ids: str) -> None:
        self.cp_ids = set(cp_ids)

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        return cp_id in self.cp_ids

    def connected(self) -> list[str]:
        return sorted(self.cp_ids)

    async def call(self, cp_id: str, action: str, payload: dict[str, Any],
                   timeout: float, newest: int | None = None) -> dict[str, Any]:
        raise AssertionError(f"nothing is sent here ({action} to {cp_id})")


async def test_the_expiry_sweep_reads_the_marked_entries_of_its_own_chargers_only(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s26: every instance's every sweep read every marked entry of every
    station (up to 100,000, unsorted), and then kept those of its chargers. It reads
    those of the stations connected to it."""
    store = services.ctx.store
    services.attach_gateway(_Holding("A-001"))
    for cp_id in ("A-001", "A-002", "B-001"):
        await withdrawal.record_local_list(store, world.stations[cp_id], {
            "listVersion": 1, "updateType": "Full", "localAuthorizationList": [
                {"idTag": "TAG-DRIVER1", "idTagInfo": {"status": "Accepted"}}]}, SYSTEM,
            ours=False, now=datetime.now(UTC))
    entries = await store.find_all(d.LocalListEntry, Eq("tag", "TAG-DRIVER1"))
    await store.write([patch(e, SYSTEM, wanted="Blocked") for e in entries], [])
    read: list[str] = []
    find_all = store.find_all

    async def counting(kind: Any, *args: Any, **kwargs: Any) -> Any:
        found = await find_all(kind, *args, **kwargs)
        if kind is d.LocalListEntry:
            read.extend(e.cp_id for e in found)
        return found
    monkeypatch.setattr(store, "find_all", counting)

    assert await services.withdrawal._stations_marked() == [world.stations["A-001"].id]
    assert set(read) == {"A-001"}


async def test_our_withdrawal_adding_a_tag_the_list_did_not_hold_is_taken_out_again(
        services: Services, world: World) -> None:
    """A withdrawal of ours accepted for a tag our record of the list does not hold (an
    operator's list dropped it while the withdrawal was on its way) added it: the card,
    usable again, has it taken out, not made Accepted (the record followed exactly)."""
    store, station = services.ctx.store, world.stations["A-001"]
    await listed(services, world, "STAFF-1")
    await withdrawal.record_local_list(store, station, {
        "listVersion": 2, "updateType": "Differential", "localAuthorizationList": [
            {"idTag": "TAG-DRIVER1", "idTagInfo": {"status": "Blocked"}}]}, SYSTEM,
        ours=True, now=datetime.now(UTC))
    added = await store.find_one(d.LocalListEntry, Eq("tag", "TAG-DRIVER1"))
    assert added is not None and added.status == "Blocked"
    assert added.restore == withdrawal.RESTORE_REMOVED
    assert withdrawal.wanted_of(added, "Accepted") == "Accepted"  # put back: removed
