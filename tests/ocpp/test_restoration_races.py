"""Withdrawals and restorations racing each other, an operator's own list, or a second
push (review s19 rev-d): what a charger's list holds ends as the card's state now says,
and only our own withdrawals leave a mark to put back. Real ``ocpp`` chargers (the
simulator); a charger's answer is held in flight by ``Gate``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ocpp.v16 import call_result as result

from domain import entities as d
from domain.policy import SYSTEM, Viewer
from domain.query import Eq
from domain.services import commands
from domain.services.base import patch
from domain.services.commands import CommandService
from domain.services.withdrawal import Withdrawal
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_card_restoration import unblock
from tests.ocpp.test_card_withdrawal import (
    SEND_LIST,
    block,
    entry,
    local_lists_sent,
    send_full_list,
    settled,
)


class Gate:
    """Holds the charger's SendLocalList answers until opened: a list in flight."""

    def __init__(self, cp: SimulatedChargePoint) -> None:
        self.opened = asyncio.Event()
        self.arrived = asyncio.Event()
        routes = cp.route_map["SendLocalList"]
        original: Callable[..., Any] = routes["_on_action"]

        async def held(**kwargs: Any) -> Any:
            self.arrived.set()
            await self.opened.wait()
            return original(**kwargs)
        routes["_on_action"] = held

    async def in_flight(self) -> None:
        await asyncio.wait_for(self.arrived.wait(), 5)


async def card(central: Central, name: str) -> d.IdTag:
    [now] = await central.store.get_many(d.IdTag, [central.tags[name].id])
    assert now is not None
    return now


async def recorded(central: Central, tag: str) -> tuple[str | None, ...]:
    held = await entry(central, "CP-1", tag)
    assert held is not None
    return held.status, held.wanted, held.restore


async def test_a_card_blocked_again_while_its_restoration_is_in_flight_is_withdrawn(
        central: Central) -> None:
    """The block's push saw the entry Blocked and sent nothing; the charger then took
    the restoration's Accepted and kept accepting the lost card offline until its next
    boot. The accepted list is judged by the card's state now: withdrawn again."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER")
        await block(central, "other", who="admin")
        await settled(central)
        gate = Gate(cp)
        await unblock(central, "other", who="admin")
        await gate.in_flight()                       # Accepted on its way
        await block(central, "other", who="admin")   # lost again meanwhile
        gate.opened.set()
        await settled(central)
        assert (await card(central, "other")).status is d.IdTagStatus.BLOCKED
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}
        assert await recorded(central, "TAG-OTHER") == ("Blocked", None, "Accepted")


async def test_a_restoration_marked_elsewhere_is_not_taken_for_held_when_blocked_again(
        central: Central) -> None:
    """Another instance marked the restoration (its Accepted may be in flight there)
    and the card was blocked again: the record still says Blocked, but the charger may
    be about to hold Accepted, so Blocked is sent again rather than nothing."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER")
        await block(central, "other", who="admin")
        await settled(central)
        marked = await entry(central, "CP-1", "TAG-OTHER")
        assert marked is not None
        await central.store.write([patch(marked, SYSTEM, wanted="Accepted")], [])
        before = len(local_lists_sent(cp))
        await central.services.withdrawal.push(SYSTEM, central.stations["CP-1"].id)
        assert local_lists_sent(cp)[before:] == [{
            "list_version": 3, "update_type": "Differential",
            "entries": [{"id_tag": "TAG-OTHER", "id_tag_info": {"status": "Blocked"}}]}]
        assert await recorded(central, "TAG-OTHER") == ("Blocked", None, "Accepted")


async def test_a_card_unblocked_while_its_withdrawal_is_in_flight_is_put_back(
        central: Central) -> None:
    """The withdrawal's Blocked landed after the unblock: the list refused a usable card
    for good (no restore mark, so not even the boot check put it back)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER")
        gate = Gate(cp)
        await block(central, "other", who="admin")
        await gate.in_flight()                         # Blocked on its way
        await unblock(central, "other", who="admin")   # found again meanwhile
        gate.opened.set()
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Accepted"}
        assert await recorded(central, "TAG-OTHER") == ("Accepted", None, None)


async def test_a_withdrawal_landing_after_another_instance_cleared_its_mark_is_put_back(
        central: Central) -> None:
    """Across instances no lock orders the pushes: the card is unblocked and another
    instance's push clears the withdrawal's mark while its Blocked is in flight. The
    accepted Blocked still remembers what to put back, and is put back."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER")
        gate = Gate(cp)
        await block(central, "other", who="admin")
        await gate.in_flight()
        pending = await entry(central, "CP-1", "TAG-OTHER")
        assert pending is not None and pending.wanted == "Blocked"
        await central.store.write([
            patch(await card(central, "other"), SYSTEM, status=d.IdTagStatus.ACCEPTED),
            patch(pending, SYSTEM, wanted=None)], [])   # no trigger here: elsewhere
        gate.opened.set()
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Accepted"}
        assert await recorded(central, "TAG-OTHER") == ("Accepted", None, None)


async def test_two_withdrawals_to_one_station_at_once_keep_the_restore_mark(
        central: Central) -> None:
    """Two cards blocked together: the second push resent the first's entry (still
    marked), and recording that duplicate wiped the first's restore mark, so unblocking
    it put nothing back. One push at a time per station, and a withdrawal accepted
    again keeps its mark."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER", "TAG-OK")
        gate = Gate(cp)
        await block(central, "other", who="admin")
        await gate.in_flight()
        await block(central, "ok", who="admin")
        gate.opened.set()
        await settled(central)
        assert await recorded(central, "TAG-OTHER") == ("Blocked", None, "Accepted")
        assert [p["list_version"] for p in local_lists_sent(cp)] == [1, 2, 3]

        await unblock(central, "other", who="admin")
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Accepted"}


async def test_a_resend_after_a_version_mismatch_reads_what_is_wanted_again(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's own Full list (without the card) reached the charger while a
    restoration was being sent: the VersionMismatch resend put the card back, Accepted,
    into a list that left it out. What is wanted is read again: nothing."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER", "TAG-OK")
        await block(central, "other", who="admin")
        await settled(central)
        computing, go = asyncio.Event(), asyncio.Event()
        items: Callable[[Withdrawal, Any], Awaitable[Any]] = Withdrawal._items

        async def slow_items(self: Withdrawal, wanted: Any) -> Any:
            if not go.is_set():  # read what to send; the operator's list lands meanwhile
                computing.set()
                await go.wait()
            return await items(self, wanted)
        monkeypatch.setattr(Withdrawal, "_items", slow_items)
        await unblock(central, "other", who="admin")
        await asyncio.wait_for(computing.wait(), 5)
        answer = await central.gql(SEND_LIST, {"input": {
            "cpId": "CP-1", "listVersion": 5, "updateType": "FULL",
            "localAuthorizationList": [
                {"idTag": "TAG-OK", "idTagInfo": {"status": "ACCEPTED"}}]}}, as_user="op")
        assert answer["sendLocalList"]["status"] == "ACCEPTED", answer
        go.set()
        await settled(central)
        sent = [(p["list_version"], p["update_type"]) for p in local_lists_sent(cp)]
        assert sent[-2:] == [(5, "Full"), (3, "Differential")], sent  # refused, not resent
        assert "TAG-OTHER" not in cp.local_list
        assert await entry(central, "CP-1", "TAG-OTHER") is None


async def test_an_operators_list_is_not_taken_for_our_withdrawal(central: Central) -> None:
    """Our withdrawal pending (the charger answered Failed), the operator's Full list
    holds the card Blocked itself: that entry is theirs (no restore mark), so
    unblocking the card leaves it in their list, Blocked."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER", "TAG-OK")
        routes = cp.route_map["SendLocalList"]
        original = routes["_on_action"]
        routes["_on_action"] = lambda **kw: result.SendLocalList(status="Failed")
        await block(central, "other", who="admin")
        await settled(central)
        routes["_on_action"] = original
        assert await recorded(central, "TAG-OTHER") == ("Accepted", "Blocked", None)

        answer = await central.gql(SEND_LIST, {"input": {
            "cpId": "CP-1", "listVersion": 5, "updateType": "FULL",
            "localAuthorizationList": [
                {"idTag": "TAG-OTHER", "idTagInfo": {"status": "BLOCKED"}},
                {"idTag": "TAG-OK", "idTagInfo": {"status": "ACCEPTED"}}]}}, as_user="op")
        assert answer["sendLocalList"]["status"] == "ACCEPTED", answer
        assert await recorded(central, "TAG-OTHER") == ("Blocked", None, None)

        await unblock(central, "other", who="admin")
        await settled(central)
        assert local_lists_sent(cp)[-1]["list_version"] == 5
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}


async def _checked_before(self: Any, viewer: Any, entries: Any) -> None:
    """``CommandService._refuse_withdrawn_cards`` as it judged a list checked just
    before its card was blocked: nothing to refuse then."""


async def test_an_operators_list_accepting_a_blocked_card_has_it_withdrawn(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A list the charger accepted is judged by the cards' state now, whoever sent it:
    a blocked card the operator's list accepts is withdrawn there (as the boot check
    would), at once. Such a list is refused before it is sent since QA s33
    (test_local_list_judged); one checked just before the card was blocked still
    reaches the charger, and stands for it here (the check left out)."""
    await central.services.fleet.update_id_tag(
        Viewer.of(central.users["admin"]), central.tags["other"].id,
        status=d.IdTagStatus.BLOCKED)
    await settled(central)
    monkeypatch.setattr(CommandService, "_refuse_withdrawn_cards", _checked_before)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER", "TAG-OK")
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}
        assert cp.local_list["TAG-OK"] == {"status": "Accepted"}
        assert await recorded(central, "TAG-OTHER") == ("Blocked", None, "Accepted")


async def test_our_record_landing_after_an_operators_later_list_changes_nothing(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s19 (rev-e): our withdrawal (Differential v2, TAG-OTHER Blocked) was
    accepted, but its record came after the operator's Full list v5 (TAG-OTHER
    Accepted) was accepted and recorded, which wanted the card withdrawn again. Our
    stale record set the entry Blocked with nothing wanted and the version back to 2:
    the charger held the blocked card Accepted, and not even its boot check saw it."""
    real = commands.record_local_list
    ours_arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(store: Any, station: Any, payload: Any, actor: Any, *, ours: bool,
                   now: Any) -> bool:
        if ours and not release.is_set():
            ours_arrived.set()
            await release.wait()  # our record comes late (its audit commit first)
        return await real(store, station, payload, actor, ours=ours, now=now)
    monkeypatch.setattr(commands, "record_local_list", slow)
    # The operator's v5 checked before the card was blocked (the one window the
    # refusal of QA s33 leaves): it reaches the charger.
    monkeypatch.setattr(CommandService, "_refuse_withdrawn_cards", _checked_before)

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER", "TAG-OK")  # v1
        await block(central, "other", who="admin")  # our v2: Blocked
        await asyncio.wait_for(ours_arrived.wait(), 5)  # the charger took it
        answer = await central.gql(SEND_LIST, {"input": {
            "cpId": "CP-1", "listVersion": 5, "updateType": "FULL",
            "localAuthorizationList": [
                {"idTag": "TAG-OTHER", "idTagInfo": {"status": "ACCEPTED"}},
                {"idTag": "TAG-OK", "idTagInfo": {"status": "ACCEPTED"}}]}}, as_user="op")
        assert answer["sendLocalList"]["status"] == "ACCEPTED", answer
        release.set()
        await settled(central)

        async def withdrawn_again() -> bool:
            return cp.local_list.get("TAG-OTHER") == {"status": "Blocked"}
        await until(withdrawn_again)
        await settled(central)
        [listed] = await central.store.find_all(d.LocalList, Eq("cp_id", "CP-1"))
        assert listed.version == cp.local_list_version >= 6
