"""A card usable again has what its withdrawals changed in the chargers' local lists put
back (QA s19 conformance, finding 1): unblocked, its expiry moved later, its holder
reactivated, each Blocked or Expired entry a withdrawal of ours had a charger accept is
sent Accepted again with the card's idTagInfo now, with the withdrawal's guarantees (sent
at the next boot when the charger was away, once, from any instance). Entries the list's
sender set are theirs and stay. Real ``ocpp`` chargers (the simulator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import entities as d
from domain.errors import ChargerLost, ChargerTimeout
from domain.policy import SYSTEM, Viewer
from domain.query import Eq
from domain.services.base import patch
from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_card_withdrawal import (
    BLOCK,
    SEND_LIST,
    block,
    entry,
    full_list,
    local_lists_sent,
    offline,
    send_full_list,
    settled,
)


async def unblock(central: Central, tag: str, who: str) -> None:
    answer = await central.gql(BLOCK, {"input": {
        "id": to_global_id("id_tag", central.tags[tag].id), "status": "ACCEPTED"}},
        as_user=who)
    assert answer["updateIdTag"]["errors"] == [], answer



async def booted_and_restored(central: Central, back: Any, version: int,
                              held: dict[str, Any]) -> None:
    """``back`` reconnected holding ``held`` at ``version`` (what it kept while away)
    boots, and is sent TAG-OTHER back Accepted."""
    back.local_list_version, back.local_list = version, held
    await back.boot()

    async def restored() -> bool:
        return back.local_list.get("TAG-OTHER") == {"status": "Accepted"}
    await until(restored)
    await settled(central)

async def test_an_unblocked_card_is_accepted_again_in_the_lists_that_blocked_it(
        central: Central) -> None:
    """QA's frames: a Full list with TAG-OTHER Accepted, the card blocked (a
    Differential with it Blocked), then unblocked: nothing was sent, not even at the
    next boot, and the list kept refusing the card offline. Now a Differential at the
    next version has it Accepted with the card's idTagInfo (its group), and the
    record says the list holds it so, with nothing left to put back."""
    await central.services.fleet.update_id_tag(SYSTEM, central.tags["other"].id,
                                               parent_tag="FLEET-1")
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER", "TAG-OK")
        await block(central, "other", who="admin")
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}
        blocked = await entry(central, "CP-1", "TAG-OTHER")
        assert blocked is not None and (blocked.status, blocked.restore) == (
            "Blocked", "Accepted")

        await unblock(central, "other", who="admin")
        await settled(central)
        assert local_lists_sent(cp)[-1] == {
            "list_version": 3, "update_type": "Differential",
            "entries": [{"id_tag": "TAG-OTHER", "id_tag_info": {
                "status": "Accepted", "parent_id_tag": "FLEET-1"}}]}
        assert cp.local_list["TAG-OK"] == {"status": "Accepted"}  # never touched
        back = await entry(central, "CP-1", "TAG-OTHER")
        assert back is not None and (back.status, back.wanted, back.restore) == (
            "Accepted", None, None)
        [version] = await central.store.find_all(d.LocalList, Eq("cp_id", "CP-1"))
        assert version.version == 3


async def test_a_card_unblocked_while_its_charger_was_away_is_put_back_at_its_boot(
        central: Central) -> None:
    """The restoration waits for an offline charger as a withdrawal does: marked in the
    card's own commit, sent when the charger boots, and once (a second boot sends
    nothing)."""
    async with connected(central.url, "CP-OPEN") as cp:
        await cp.boot()
        await send_full_list(central, "CP-OPEN", "TAG-OTHER")
        await block(central, "other", who="admin")
        await settled(central)
        assert cp.local_list == {"TAG-OTHER": {"status": "Blocked"}}
        kept_version, kept = cp.local_list_version, dict(cp.local_list)
    await offline(central, "CP-OPEN")
    await unblock(central, "other", who="admin")
    await settled(central)
    waiting = await entry(central, "CP-OPEN", "TAG-OTHER")
    assert waiting is not None and (waiting.status, waiting.wanted) == ("Blocked", "Accepted")

    async with connected(central.url, "CP-OPEN") as back:
        await booted_and_restored(central, back, kept_version, kept)
        assert back.local_list_version == kept_version + 1
        done = await entry(central, "CP-OPEN", "TAG-OTHER")
        assert done is not None and (done.status, done.wanted, done.restore) == (
            "Accepted", None, None)
        kept_version, kept = back.local_list_version, dict(back.local_list)
    await offline(central, "CP-OPEN")
    async with connected(central.url, "CP-OPEN") as again:
        again.local_list_version, again.local_list = kept_version, kept
        await again.boot()
        central.services.withdrawal.charger_back(central.stations["CP-OPEN"].id)
        await settled(central)
        assert local_lists_sent(again) == []


async def test_a_card_whose_expiry_moved_later_is_accepted_again_until_then(
        central: Central) -> None:
    """An expired card swept Expired in a list, its expiry then moved a year later: the
    list has it Accepted again, with the new expiry (the list's own, used offline)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER")
        card = central.tags["other"]
        await central.store.write([patch(card, SYSTEM, expires_at=datetime.now(UTC)
                                         - timedelta(minutes=1))], [])
        assert await central.services.withdrawal.sweep_expired() == 1
        assert cp.local_list["TAG-OTHER"] == {"status": "Expired"}

        later = (datetime.now(UTC) + timedelta(days=365)).replace(microsecond=0)
        await central.services.fleet.update_id_tag(SYSTEM, card.id, expires_at=later)
        await settled(central)
        info = cp.local_list["TAG-OTHER"]
        assert info["status"] == "Accepted"
        assert datetime.fromisoformat(info["expiry_date"]) == later


async def test_a_reactivated_drivers_cards_are_accepted_again(central: Central) -> None:
    """A deactivation withdraws every card of the driver; the reactivation puts back
    those that are usable (a card blocked of its own stays Blocked)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK", "TAG-OTHER")
        own = await central.services.fleet.issue_id_tag(
            Viewer.of(central.users["driver2"]), tag="TAG-LOST")
        await central.gql(SEND_LIST, {"input": {
            "cpId": "CP-1", "listVersion": 2, "updateType": "DIFFERENTIAL",
            "localAuthorizationList": [{"idTag": "TAG-LOST",
                                        "idTagInfo": {"status": "ACCEPTED"}}]}},
            as_user="op")
        user = to_global_id("user", central.users["driver2"].id)
        active = """mutation($input: UpdateUserInput!) { updateUser(input: $input)
            { errors { code } } }"""
        await central.gql(active, {"input": {"id": user, "active": False}}, as_user="admin")
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}
        assert cp.local_list["TAG-LOST"] == {"status": "Blocked"}
        await central.services.fleet.update_id_tag(
            Viewer.of(central.users["admin"]), own.id, status=d.IdTagStatus.BLOCKED)

        await central.gql(active, {"input": {"id": user, "active": True}}, as_user="admin")
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Accepted"}
        assert cp.local_list["TAG-LOST"] == {"status": "Blocked"}
        assert cp.local_list["TAG-OK"] == {"status": "Accepted"}


async def test_what_the_lists_sender_blocked_is_not_put_back(central: Central) -> None:
    """An entry the operator's own list holds Blocked is theirs: unblocking the card
    sends nothing for it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await central.gql(SEND_LIST, {"input": {
            "cpId": "CP-1", "listVersion": 1, "updateType": "FULL",
            "localAuthorizationList": [
                {"idTag": "TAG-OTHER", "idTagInfo": {"status": "BLOCKED"}},
                {"idTag": "TAG-OK", "idTagInfo": {"status": "ACCEPTED"}}]}}, as_user="op")
        await block(central, "other", who="admin")
        await unblock(central, "other", who="admin")
        await settled(central)
        assert local_lists_sent(cp)[1:] == []
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}


async def test_a_withdrawal_sent_above_a_list_moved_on_without_us_is_put_back_accepted(
        central: Central) -> None:
    """A withdrawal answered VersionMismatch (the charger's list moved on without our
    record: most often a list of ours it accepted whose answer was lost) is sent above
    the charger's version; what it puts back is what the operator's list, as recorded,
    held: Accepted (review s26: it was taken out of the list, refused offline)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK")
        cp.local_list_version = 7  # changed behind our back
        await block(central, "ok", who="admin")
        await settled(central)
        assert cp.local_list["TAG-OK"] == {"status": "Blocked"}
        moved = await entry(central, "CP-1", "TAG-OK")
        assert moved is not None and moved.restore == "Accepted"
        await unblock(central, "ok", who="admin")
        await settled(central)
        assert cp.local_list["TAG-OK"]["status"] == "Accepted"
        back = await entry(central, "CP-1", "TAG-OK")
        assert back is not None and (back.status, back.restore) == ("Accepted", None)


async def test_an_entry_marked_removed_before_review_s26_is_taken_out_again(
        central: Central) -> None:
    """Entries recorded ``restore`` Removed (a withdrawal above a list that had moved on,
    until review s26) are still put back as marked: the tag taken out of the list."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK")
        await block(central, "ok", who="admin")
        await settled(central)
        withdrawn = await entry(central, "CP-1", "TAG-OK")
        assert withdrawn is not None and withdrawn.restore == "Accepted"
        await central.store.write([patch(withdrawn, SYSTEM, restore="Removed")], [])
        await unblock(central, "ok", who="admin")
        await settled(central)
        assert local_lists_sent(cp)[-1]["entries"] == [{"id_tag": "TAG-OK"}]
        assert "TAG-OK" not in cp.local_list
        assert await entry(central, "CP-1", "TAG-OK") is None


async def test_a_reactivation_no_instance_pushed_is_put_back_at_the_boot(
        central: Central) -> None:
    """A reactivation's push runs in the background after its commit (as a
    deactivation's does): one lost with its process is made good by the charger's boot,
    which checks what our withdrawals changed against the cards as they are now."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OTHER")
        await central.services.accounts.update_user(
            Viewer.of(central.users["admin"]), central.users["driver2"].id, active=False)
        await settled(central)
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}
        kept_version, kept = cp.local_list_version, dict(cp.local_list)
    await offline(central, "CP-1")
    [holder] = await central.store.get_many(d.User, [central.users["driver2"].id])
    assert holder is not None
    await central.store.write([patch(holder, SYSTEM, active=True)], [])  # no push
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        await booted_and_restored(central, back, kept_version, kept)


async def test_a_tag_the_operators_unanswered_list_dropped_is_not_put_back(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's Full list drops TAG-OK; the charger takes it, its answer is lost
    (a timeout). The card is blocked: our Differential draws a VersionMismatch, and the
    charger's version (at the unanswered list's) says it holds that list, recorded then,
    so there is nothing of TAG-OK to withdraw nor, once unblocked, to put back. Review
    s26: the record still held TAG-OK Accepted, the withdrawal was resent above the
    charger's version and added it Blocked, and the put-back made it Accepted: the
    charger accepted offline a tag the operator took out of its list."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK", "TAG-OTHER")
        real = central.gateway.call

        async def answer_lost(cp_id: str, action: str, payload: dict[str, Any],
                              timeout: float, newest: int | None = None) -> dict[str, Any]:
            result = await real(cp_id, action, payload, timeout, newest)
            if action == "SendLocalList" and payload.get("updateType") == "Full":
                raise ChargerTimeout(f"{cp_id} did not answer {action} in time")
            return result
        monkeypatch.setattr(central.gateway, "call", answer_lost)
        answer = await central.gql(SEND_LIST, {"input": {
            "cpId": "CP-1", "listVersion": 2, "updateType": "FULL",
            "localAuthorizationList": [{"idTag": "TAG-OTHER",
                                        "idTagInfo": {"status": "ACCEPTED"}}]}},
            as_user="op")
        monkeypatch.setattr(central.gateway, "call", real)
        assert cp.local_list == {"TAG-OTHER": {"status": "Accepted"}}, answer  # applied

        await block(central, "ok", who="admin")
        await settled(central)
        await unblock(central, "ok", who="admin")
        await settled(central)
        # The operator's list does not hold TAG-OK: nothing of ours puts it there.
        assert "TAG-OK" not in cp.local_list, (cp.local_list,
                                               await entry(central, "CP-1", "TAG-OK"))
        assert await entry(central, "CP-1", "TAG-OK") is None


async def test_of_two_unanswered_lists_the_one_the_charger_took_is_recorded(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's Full list v2 drops TAG-OK; the charger takes it, its answer is
    lost (a timeout). The operator tries again with v3, which never reaches the charger
    (the connection's holder lost). Review r26-multi3: one pending list was kept, v3 in
    v2's place; the charger's version (2) dropped v3 and v2 was never recorded, so the
    block of TAG-OK was resent above the charger's version, added it Blocked, and the
    unblock put it back Accepted in a list its operator took it out of. Both are kept,
    and the charger's version records v2."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK", "TAG-OTHER")
        real = central.gateway.call

        async def answer_lost(cp_id: str, action: str, payload: dict[str, Any],
                              timeout: float, newest: int | None = None) -> dict[str, Any]:
            if action == "SendLocalList" and payload.get("listVersion") == 3:
                raise ChargerLost(f"{cp_id}: its holder went")  # never delivered
            result = await real(cp_id, action, payload, timeout, newest)
            if action == "SendLocalList" and payload.get("updateType") == "Full":
                raise ChargerTimeout(f"{cp_id} did not answer {action} in time")
            return result
        monkeypatch.setattr(central.gateway, "call", answer_lost)
        await central.gql(SEND_LIST, full_list(2, "TAG-OTHER"), as_user="op")
        await central.gql(SEND_LIST, full_list(3, "TAG-OTHER"), as_user="op")
        monkeypatch.setattr(central.gateway, "call", real)
        assert cp.local_list == {"TAG-OTHER": {"status": "Accepted"}}
        assert cp.local_list_version == 2

        await block(central, "ok", who="admin")
        await settled(central)
        await unblock(central, "ok", who="admin")
        await settled(central)
        assert "TAG-OK" not in cp.local_list, (cp.local_list,
                                               await entry(central, "CP-1", "TAG-OK"))
        assert await entry(central, "CP-1", "TAG-OK") is None
