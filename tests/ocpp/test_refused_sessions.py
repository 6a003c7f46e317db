"""A session whose start the CSMS refused (``start_refused``) holds neither its card nor
its car (README "Cards at the charger", ``holding_card``, ``holding_car``): every check
of "a session holding the card" goes by that rule (review r26-tx3)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.clock import utcnow
from domain.errors import Conflict, Forbidden, NotFound
from domain.policy import SYSTEM, Viewer
from domain.ports import Insert
from domain.query import Eq, all_of
from domain.services.base import stamp_new
from domain.services.charging import START_ATTEMPTS
from ocpp_bridge.simulator import connected
from tests.ocpp import test_commands
from tests.ocpp.conftest import STATION_PASSWORD, Central

central = test_commands.central


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _refused_left_open(central: Central) -> int:
    """TAG-OK charges on connector 1, is presented at connector 2 (told ConcurrentTx:
    the charger cuts the energy and never sends a StopTransaction for it), then the
    first session ends. Returns the refused transaction, still ACTIVE."""
    start = datetime.now(UTC).replace(microsecond=0)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()

        async def started(connector_id: int, meter: int, at: datetime) -> tuple[int, str]:
            answer = await cp.call(call.StartTransaction(
                connector_id=connector_id, id_tag="TAG-OK", meter_start=meter,
                timestamp=_stamp(at)))
            return answer.transaction_id, answer.id_tag_info["status"]

        first, told = await started(1, 5_000, start)
        assert told == "Accepted"
        refused, told = await started(2, 8_000, start + timedelta(seconds=1))
        assert told == "ConcurrentTx"
        await cp.call(call.StopTransaction(meter_stop=6_000,
                                           timestamp=_stamp(start + timedelta(seconds=2)),
                                           transaction_id=first))
    held = await central.session(refused)
    assert held is not None and held.start_refused == "ConcurrentTx"
    assert held.state is d.SessionState.ACTIVE
    return refused


async def test_a_refused_session_does_not_keep_its_card_from_being_removed(
        central: Central) -> None:
    """The driver lost the card: removeIdTag was refused IN_USE "the card is charging
    right now" for good, because of a session that holds the card for nothing (its
    StartTransaction was refused; the card's next start elsewhere is Accepted)."""
    await _refused_left_open(central)
    driver = Viewer.of(central.users["driver"])
    # The card is not held: a new start of it would be Accepted...
    info = await central.services.charging.authorize_start(
        "CP-1", "TAG-OK", (), before=None)
    assert info.status == "Accepted"
    # ...and it can be removed.
    await central.services.fleet.remove_id_tag(driver, central.tags["ok"].id)
    assert await central.services.ctx.store.get_many(d.IdTag, [central.tags["ok"].id]) == [None]


async def test_an_erasure_closes_the_refused_sessions_its_chargers_never_stop(
        central: Central) -> None:
    """The driver asks for their account to be erased: it was refused IN_USE ("a session
    of theirs is under way") for good, because of a session refused at its start that its
    charger never stops, until an operator ended it. Such a session holds no card or car
    and bills nothing: the erasure closes it itself, without its stop (as ``endSession``
    would), and the charger's StopTransaction, should it come after all, is answered and
    corrects the close."""
    refused = await _refused_left_open(central)
    driver = central.users["driver"]
    admin = Viewer.of(central.users["admin"])
    erased = await central.services.erasure.erase_user(admin, driver.id)
    assert erased.erased_at is not None
    closed = await central.session(refused)
    assert closed is not None and closed.state is d.SessionState.COMPLETED
    assert closed.closed_without_stop and closed.stop_reason == "Other"
    assert closed.user_id == driver.id  # the books keep it, under the account's id
    assert closed.cost_minor is None  # refused: priced by no tariff
    payments = await central.store.find_all(d.Payment, Eq("session_id", closed.id))
    assert payments == []
    # Audited as the erasure's close, by whoever erased the account.
    entries = await central.store.find_all(
        d.AuditEntry, all_of(Eq("entity", "session"), Eq("entity_id", closed.id)))
    assert [(e.action, e.actor) for e in entries][-1] == (d.AuditAction.UPDATE,
                                                          admin.actor)

    # The charger stops it after all: answered, and the close corrected by its stop.
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        answer = await cp.call(call.StopTransaction(
            meter_stop=8_500, timestamp=_stamp(datetime.now(UTC).replace(microsecond=0)),
            transaction_id=refused, id_tag="TAG-OK"))
    assert answer.id_tag_info["status"] == "Invalid"  # the card went with the erasure
    corrected = await central.session(refused)
    assert corrected is not None and corrected.meter_stop_wh == 8_500
    assert not corrected.closed_without_stop and corrected.cost_minor is None


async def test_an_erasure_still_waits_for_an_accepted_session(central: Central) -> None:
    """Only refused sessions are closed by an erasure: one its charger accepted is being
    charged (and billed) to the person, and the erasure waits for it (IN_USE)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        answer = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1_000,
            timestamp=_stamp(datetime.now(UTC).replace(microsecond=0))))
        assert answer.id_tag_info["status"] == "Accepted"
    admin = Viewer.of(central.users["admin"])
    with pytest.raises(Conflict) as refused:
        await central.services.erasure.erase_user(admin, central.users["driver"].id)
    assert refused.value.code == "IN_USE"
    still = await central.session(answer.transaction_id)
    assert still is not None and still.state is d.SessionState.ACTIVE


async def _erased(central: Central, session: d.Session) -> None:
    await central.services.erasure.erase_user(Viewer.of(central.users["admin"]),
                                              central.users["driver"].id)


async def _ended(central: Central, session: d.Session) -> None:
    await central.services.charging.end_session(Viewer.of(central.users["op"]), session.id)


async def _card_removed(central: Central, session: d.Session) -> None:
    await central.services.fleet.remove_id_tag(Viewer.of(central.users["driver"]),
                                               central.tags["ok"].id)


@pytest.mark.parametrize(("landing", "told", "closed"), [
    (_erased, "ConcurrentTx", True),
    (_ended, "ConcurrentTx", True),
    (_card_removed, "Invalid", False),
], ids=["erasure", "end-session", "card-removed"])
async def test_a_resent_refused_start_is_not_accepted_onto_what_landed_meanwhile(
        central: Central, monkeypatch: pytest.MonkeyPatch,
        landing: Callable[[Central, d.Session], Awaitable[None]], told: str,
        closed: bool) -> None:
    """The charger lost the answer to a refused start (ConcurrentTx) and resends it once
    the card is free: it would be Accepted. Between that judgement and its write, the
    driver's erasure (or an operator's endSession) closes the refused session, or the
    card is removed. The resend's write is refused (the session is no longer open as
    read, its holder erased, its card gone) and it is judged again on what stands: the
    charger is not told to charge on a card that is gone, the closed session stays
    closed and refused, and its stop bills no one (review r27-accounts: Accepted, and a
    PENDING payment of the erased account)."""
    services = central.services
    start = datetime.now(UTC).replace(microsecond=0)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        first = await cp.call(call.StartTransaction(
            connector_id=2, id_tag="TAG-OK", meter_start=5_000, timestamp=_stamp(start)))
        assert first.id_tag_info["status"] == "Accepted"
        refused_start = call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=8_000,
            timestamp=_stamp(start + timedelta(seconds=1)))
        refused = await cp.call(refused_start)
        assert refused.id_tag_info["status"] == "ConcurrentTx"
        await cp.call(call.StopTransaction(
            meter_stop=6_000, timestamp=_stamp(start + timedelta(seconds=2)),
            transaction_id=first.transaction_id))

        real_commit = services.charging.commit
        landed: list[bool] = []

        async def commit(actor: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
            for change, before in changes:
                if not landed and isinstance(change.record, d.Session) \
                        and change.record.start_refused is None \
                        and before is not None and before.start_refused:
                    landed.append(True)
                    await landing(central, before)
            await real_commit(actor, changes, *args, **kwargs)

        monkeypatch.setattr(services.charging, "commit", commit)
        resent = await cp.call(refused_start)
        monkeypatch.undo()
        assert landed
        assert resent.id_tag_info["status"] == told
        after = await central.session(refused.transaction_id)
        assert after is not None and after.start_refused == "ConcurrentTx"
        assert (after.state is d.SessionState.COMPLETED) is closed
        # The car charged 100 Wh on it all the same: its stop bills no one.
        await asyncio.sleep(1)
        await cp.call(call.StopTransaction(
            meter_stop=8_100, timestamp=_stamp(datetime.now(UTC).replace(microsecond=0)),
            transaction_id=refused.transaction_id, id_tag="TAG-OK"))
    session = await central.session(refused.transaction_id)
    assert session is not None
    assert session.start_refused == "ConcurrentTx" and session.cost_minor is None
    assert await central.store.find_all(d.Payment, Eq("session_id", session.id)) == []


async def test_an_erasure_closes_a_refused_session_its_charger_still_meters(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused session whose charger keeps sending MeterValues (it cut the energy but
    goes on reporting its register) is closed by the erasure all the same: its close
    depends on the session being open and refused, not on its meter standing still (it
    bills nothing, and its stop corrects the close). Written only onto the session as
    read, every sample landing between the erasure's read and its write failed it, and
    the erasure was refused CHANGED after three tries."""
    refused = await _refused_left_open(central)
    services = central.services
    real_closes = services.charging.refused_closes
    metered = [8_000]

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        async def closes(viewer: Viewer, sessions: Any) -> Any:
            made = await real_closes(viewer, sessions)
            metered.append(metered[-1] + 10)  # a sample lands before the erasure's write
            await cp.call(call.MeterValues(
                connector_id=2, transaction_id=refused, meter_value=[{
                    "timestamp": _stamp(datetime.now(UTC)), "sampledValue": [{
                        "value": str(metered[-1]), "unit": "Wh",
                        "measurand": "Energy.Active.Import.Register"}]}]))
            return made

        monkeypatch.setattr(services.charging, "refused_closes", closes)
        erased = await services.erasure.erase_my_account(
            Viewer.of(central.users["driver"]), "password-123")
    assert erased.erased_at is not None
    assert len(metered) == 2  # closed in its first write
    closed = await central.session(refused)
    assert closed is not None and closed.state is d.SessionState.COMPLETED
    assert closed.start_refused == "ConcurrentTx" and closed.cost_minor is None


async def test_an_erasure_of_ones_own_account_that_keeps_meeting_changes_names_no_field(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """eraseMyAccount has no ``id`` argument: when its write keeps meeting a change (here
    a refused start of the person's blocked card landing before each write) its CHANGED
    error names no field; eraseUser's names ``id``. (Each start on the other connector:
    a second one on the same connector soon after would read as a resend of the
    first.)"""
    await _refused_left_open(central)
    services = central.services
    real_closes = services.charging.refused_closes
    meter = [9_000]

    async def closes(viewer: Viewer, sessions: Any) -> Any:
        made = await real_closes(viewer, sessions)
        meter.append(meter[-1] + 100)
        _, info = await services.charging.start_transaction(
            "CP-1", len(meter) % 2 + 1, "TAG-BLOCKED", meter[-1],
            datetime.now(UTC) + timedelta(seconds=len(meter)))
        assert info.status == "Blocked"
        return made

    monkeypatch.setattr(services.charging, "refused_closes", closes)
    driver = central.users["driver"]
    with pytest.raises(Conflict) as own:
        await services.erasure.erase_my_account(Viewer.of(driver), "password-123")
    assert (own.value.code, own.value.field) == ("CHANGED", None)
    with pytest.raises(Conflict) as admins:
        await services.erasure.erase_user(Viewer.of(central.users["admin"]), driver.id)
    assert (admins.value.code, admins.value.field) == ("CHANGED", "id")


async def test_an_erasure_does_not_close_a_refused_session_a_resend_accepted_meanwhile(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """The erasure closes a refused session only while it is refused as read: a resend of
    its start accepted between the erasure's read and its write (the card was free) makes
    it a session being charged to the person, which the erasure waits for (IN_USE), not
    one it closes unbilled under an account it erases."""
    refused = await _refused_left_open(central)
    services = central.services
    held = await central.session(refused)
    assert held is not None
    real_closes = services.charging.refused_closes
    told: list[str] = []

    async def closes(viewer: Viewer, sessions: Any) -> Any:
        made = await real_closes(viewer, sessions)
        if not told:
            _, info = await services.charging.start_transaction(
                "CP-1", held.connector_id, "TAG-OK", held.meter_start_wh, held.start_time)
            told.append(info.status)
        return made

    monkeypatch.setattr(services.charging, "refused_closes", closes)
    with pytest.raises(Conflict) as waits:
        await services.erasure.erase_user(Viewer.of(central.users["admin"]),
                                          central.users["driver"].id)
    assert told == ["Accepted"] and waits.value.code == "IN_USE"
    accepted = await central.session(refused)
    assert accepted is not None and accepted.state is d.SessionState.ACTIVE
    assert accepted.start_refused is None


@pytest.mark.parametrize("what", ["station", "connector"])
async def test_a_refused_session_does_not_keep_its_station_from_being_removed(
        central: Central, what: str) -> None:
    """An operator removes the station (or the plug) a refused session was left open on:
    it was refused IN_USE "a charging session is active" for good, though that session
    charges nothing (its charger cut the energy and never stops it). The removal closes
    it in its own write, as ``endSession`` would, billing nothing; an accepted session
    still refuses it."""
    refused = await _refused_left_open(central)
    op = Viewer.of(central.users["op"])
    station = central.stations["CP-1"]
    if what == "station":
        await central.services.stations.remove_station(op, station.id)
    else:
        plug = await central.store.find_one(d.Connector, all_of(
            Eq("station_id", station.id), Eq("connector_id", 2)))
        assert plug is not None
        await central.services.stations.remove_connector(op, plug.id)
    closed = await central.session(refused)
    assert closed is not None and closed.state is d.SessionState.COMPLETED
    assert closed.closed_without_stop and closed.cost_minor is None
    assert closed.start_refused == "ConcurrentTx"
    assert await central.store.find_all(d.Payment, Eq("session_id", closed.id)) == []


async def test_an_accepted_session_still_keeps_its_station_from_being_removed(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        answer = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1_000,
            timestamp=_stamp(datetime.now(UTC).replace(microsecond=0))))
        assert answer.id_tag_info["status"] == "Accepted"
    with pytest.raises(Conflict) as refused:
        await central.services.stations.remove_station(
            Viewer.of(central.users["op"]), central.stations["CP-1"].id)
    assert refused.value.code == "IN_USE"
    still = await central.session(answer.transaction_id)
    assert still is not None and still.state is d.SessionState.ACTIVE


async def test_a_resend_accepted_inside_a_card_removal_keeps_the_card(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver removes their card: the removal has read "no session holds it", and
    the charger's resend of a refused start of the card (its answer lost) is judged
    Accepted and written before the card's delete. The delete is guarded (no session
    holding the card as the store stands with it): it runs again and is refused IN_USE,
    the card stays for the session now charging on it (review r27-accounts2: the card
    was deleted under an ACTIVE, billed session whose charger was told Accepted)."""
    services = central.services
    start = datetime.now(UTC).replace(microsecond=0)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        first = await cp.call(call.StartTransaction(
            connector_id=2, id_tag="TAG-OK", meter_start=5_000, timestamp=_stamp(start)))
        assert first.id_tag_info["status"] == "Accepted"
        refused_start = call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=8_000,
            timestamp=_stamp(start + timedelta(seconds=1)))
        refused = await cp.call(refused_start)
        assert refused.id_tag_info["status"] == "ConcurrentTx"
        await cp.call(call.StopTransaction(
            meter_stop=6_000, timestamp=_stamp(start + timedelta(seconds=2)),
            transaction_id=first.transaction_id))

        real_commit = services.fleet.commit
        told: list[str] = []

        async def commit(viewer: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
            # Between the removal's read and its delete: the resend lands.
            if not told and any(isinstance(before, d.IdTag) for _, before in changes):
                resent = await cp.call(refused_start)
                told.append(resent.id_tag_info["status"])
            await real_commit(viewer, changes, *args, **kwargs)

        monkeypatch.setattr(services.fleet, "commit", commit)
        with pytest.raises(Conflict) as raised:
            await services.fleet.remove_id_tag(Viewer.of(central.users["driver"]),
                                               central.tags["ok"].id)
        monkeypatch.undo()
    assert told == ["Accepted"]
    assert raised.value.code == "IN_USE"
    session = await central.session(refused.transaction_id)
    assert session is not None and session.state is d.SessionState.ACTIVE
    assert session.start_refused is None
    assert await central.store.get_many(d.IdTag, [central.tags["ok"].id]) != [None]


async def test_a_removal_closes_a_refused_session_of_other_books_as_the_system(
        central: Central) -> None:
    """A station handed over mid-session leaves its refused session in the old
    company's books, which the new company's operator may not see nor end
    (``endSession``). Their removal of the station closes it all the same (a removed
    station can never stop it, and it bills nothing), but as the system's act because
    of the removal, not theirs: audited under ``system`` in the old company's books
    (review r27-accounts2: the old company's log named the other company's operator)."""
    refused = await _refused_left_open(central)
    services = central.services
    station = central.stations["CP-1"]
    other = central.users["op_other"]
    await services.stations.update_station(SYSTEM, station.id, company_id=other.company_id,
                                           owner_id=other.id)
    held = await central.session(refused)
    assert held is not None and held.company_id != other.company_id
    with pytest.raises((Forbidden, NotFound)):  # endSession: not theirs to see or end
        await services.charging.end_session(Viewer.of(other), held.id)
    await services.stations.remove_station(Viewer.of(other), station.id)
    after = await central.session(refused)
    assert after is not None and after.state is d.SessionState.COMPLETED
    assert after.updated_by == d.SYSTEM_ACTOR
    [close] = [e for e in await central.store.find_all(d.AuditEntry,
                                                       Eq("entity_id", held.id))
               if e.action is d.AuditAction.UPDATE and e.after
               and e.after.get("state") == d.SessionState.COMPLETED.value]
    assert close.actor == d.SYSTEM_ACTOR
    assert close.company_id == held.company_id  # in the books it was kept in
    # The station's own removal stays the remover's act.
    [gone] = [e for e in await central.store.find_all(d.AuditEntry,
                                                      Eq("entity_id", station.id))
              if e.action is d.AuditAction.DELETE]
    assert gone.actor == other.id


@pytest.mark.parametrize("removed", ["station", "connector"])
async def test_a_removal_cancels_a_reservation_of_other_books_as_the_system(
        central: Central, removed: str) -> None:
    """A live reservation on a station handed over since stays in the old company's
    books. The new company's operator removes the station (or the reserved connector):
    the reservation is cancelled as the system's act because of the removal, audited
    under ``system`` in the books it is kept in, as the refused sessions the removal
    closes are (review r27-accounts3: the old company's log named the other company's
    operator, who may not see the reservation, as the one who cancelled it)."""
    services = central.services
    store = central.store
    station = central.stations["CP-1"]
    old_company = station.company_id
    reservation = stamp_new(d.Reservation(
        reservation_id=await store.next_sequence("reservation"),
        station_id=station.id, cp_id=station.cp_id, connector_id=1, id_tag="TAG-OK",
        user_id=central.tags["ok"].user_id, expires_at=utcnow() + timedelta(hours=1),
        state=d.ReservationState.ACTIVE, company_id=old_company), SYSTEM)
    await store.write([Insert(reservation)], [])
    other = central.users["op_other"]
    await services.stations.update_station(SYSTEM, station.id, company_id=other.company_id,
                                           owner_id=other.id)
    if removed == "station":
        await services.stations.remove_station(Viewer.of(other), station.id)
    else:
        plug = await store.find_one(d.Connector, all_of(
            Eq("station_id", station.id), Eq("connector_id", 1)))
        assert plug is not None
        await services.stations.remove_connector(Viewer.of(other), plug.id)
    [after] = await store.get_many(d.Reservation, [reservation.id])
    assert after is not None and after.state is d.ReservationState.CANCELLED
    assert after.updated_by == d.SYSTEM_ACTOR
    [cancel] = [e for e in await store.find_all(d.AuditEntry, Eq("entity_id", reservation.id))
                if e.action is d.AuditAction.UPDATE]
    assert cancel.company_id == old_company  # in the books it was kept in
    assert cancel.actor == d.SYSTEM_ACTOR


async def test_a_resend_whose_last_write_met_its_close_is_answered_as_recorded(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start refused Blocked; the card is unblocked and the charger resends the start
    (its answer lost): it would be Accepted, but every write meets a change, and an
    operator's endSession closes the session as the last one is tried. The charger is
    told what was recorded (Blocked), read again, not ConcurrentTx (review
    r27-accounts2: the last attempt answered ConcurrentTx without reading again)."""
    services = central.services
    charging = services.charging
    started = call.StartTransaction(
        connector_id=1, id_tag="TAG-BLOCKED", meter_start=1_000,
        timestamp=_stamp(datetime.now(UTC).replace(microsecond=0)))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()
        first = await cp.call(started)
        assert first.id_tag_info["status"] == "Blocked"
        await services.fleet.update_id_tag(SYSTEM, central.tags["blocked"].id,
                                           status=d.IdTagStatus.ACCEPTED)
        tries: list[int] = []

        async def answered(station: d.Station, session: d.Session, info: Any,
                           *_: Any) -> None:
            assert info.status == "Accepted"
            tries.append(1)
            if len(tries) == START_ATTEMPTS:  # closed as its last write is tried
                await charging.end_session(Viewer.of(central.users["op"]), session.id)
            return None

        async def no_pause(attempt: int) -> None:
            return None

        monkeypatch.setattr(charging, "_answered", answered)
        monkeypatch.setattr(charging, "pause_to_retry", no_pause)
        resent = await cp.call(started)
        monkeypatch.undo()
    assert len(tries) == START_ATTEMPTS
    assert resent.id_tag_info["status"] == "Blocked"
    session = await central.session(first.transaction_id)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert session.start_refused == "Blocked"


@pytest.mark.parametrize("tag", ["ok", "blocked"])
async def test_a_resend_on_its_tag_issued_again_to_another_driver_is_told_as_recorded(
        central: Central, monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    """A refused session is left open (TAG-OK told ConcurrentTx, or TAG-BLOCKED told
    Blocked); the card is removed and its tag issued again to another driver. The
    charger's resend of the refused start is not Accepted against the other driver's
    card, to be billed to the first (review r27-accounts2: the resend's guard matched
    the tag text only): that card is not the one the session was judged on, so it is
    told the refusal recorded, at once, no retry (review r27-accounts3: its guard could
    never hold, and after three tries a Blocked one was told ConcurrentTx)."""
    services = central.services
    card = central.tags[tag]
    if tag == "ok":
        refused = await _refused_left_open(central)
        await services.fleet.remove_id_tag(Viewer.of(central.users["driver"]), card.id)
    else:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.report_all()
            first = await cp.call(call.StartTransaction(
                connector_id=2, id_tag=card.tag, meter_start=8_000,
                timestamp=_stamp(datetime.now(UTC).replace(microsecond=0))))
        refused = first.transaction_id
        await services.fleet.remove_id_tag(SYSTEM, card.id)
    recorded = "ConcurrentTx" if tag == "ok" else "Blocked"
    # By staff: held back from drivers for a while (QA s32).
    await services.fleet.issue_id_tag(SYSTEM, tag=card.tag,
                                      user_id=central.users["driver2"].id)
    held = await central.session(refused)
    assert held is not None and held.start_refused == recorded
    pauses: list[int] = []

    async def pause(attempt: int) -> None:
        pauses.append(attempt)
    monkeypatch.setattr(services.charging, "pause_to_retry", pause)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        resent = await cp.call(call.StartTransaction(
            connector_id=2, id_tag=card.tag, meter_start=8_000,
            timestamp=_stamp(held.start_time)))
    assert resent.transaction_id == refused
    assert resent.id_tag_info["status"] == recorded
    assert pauses == []
    after = await central.session(refused)
    assert after is not None and after.start_refused == recorded
    assert after.user_id == card.user_id
