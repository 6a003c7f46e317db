"""QA s26, local lists and card answers at the charger: a charger told the truth about a
card it lists or is asked about. Real ``ocpp`` chargers (the simulator) against a real
central system on a real SQLite file."""

from __future__ import annotations

from ocpp.v16 import call

from domain.policy import Viewer
from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_card_withdrawal import (
    UPDATE_USER,
    entry,
    fleet_driver,
    local_lists_sent,
    offline,
    send_full_list,
    settled,
)

REMOVE_TAG = """mutation($input: RemoveIdTagInput!) { removeIdTag(input: $input) {
    errors { field code message } } }"""


async def test_authorize_of_a_card_charging_elsewhere_is_accepted(central: Central) -> None:
    """OCPP 1.6 (7.2, AuthorizationStatus): ConcurrentTx is "only relevant for a
    StartTransaction.req". Authorize answered it for a card charging anywhere: a charger
    that authorizes the card presented to end its own session (or a group member's, by
    parentIdTag) refused it, and the driver could not stop charging with their card.
    Authorize answers Accepted (with the card's group); the start elsewhere is still
    ConcurrentTx."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        _, status = await cp.start_transaction(1, "TAG-OK")
        assert status == "Accepted"
        answer = await cp.call(call.Authorize(id_tag="TAG-OK"))
        assert answer.id_tag_info["status"] == "Accepted", answer
        assert answer.id_tag_info.get("expiry_date")  # still bounded for the cache
        _, again = await cp.start_transaction(2, "TAG-OK")
        assert again == "ConcurrentTx"  # StartTransaction is where it belongs
        await cp.stop_transaction(1)


async def test_send_max_length_the_charger_does_not_know_is_asked_once(
        central: Central) -> None:
    """A charger without ``SendLocalListMaxLength`` (unknownKey) was asked it at every
    withdrawal of more than one card: remembered until it boots again."""
    holder = await fleet_driver(central, 3)
    tags = [f"FLEET-{n}" for n in range(3)]
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", *tags)
        for active in (False, True, False):
            answer = await central.gql(UPDATE_USER, {"input": {
                "id": to_global_id("user", holder.id), "active": active}}, as_user="admin")
            assert answer["updateUser"]["errors"] == [], answer
            await settled(central)
        assert [s["list_version"] for s in local_lists_sent(cp)] == [1, 2, 3, 4]
        assert [name for name, _ in cp.received].count("GetConfiguration") == 1
        await cp.boot()  # a reboot (new firmware) may change what it takes: asked again
        await settled(central)
        answer = await central.gql(UPDATE_USER, {"input": {
            "id": to_global_id("user", holder.id), "active": True}}, as_user="admin")
        await settled(central)
        assert [name for name, _ in cp.received].count("GetConfiguration") == 2


async def test_a_removed_card_issued_again_to_its_holder_is_accepted_again(
        central: Central) -> None:
    """A card removed (lost) is Blocked in the lists that held it. Its holder finds it
    and it is issued again with the same tag: it stayed Blocked at the charger, refused
    offline while Authorize accepted it. Put back for the same holder only."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK", "TAG-OTHER")
        for who, key in (("driver", "ok"), ("driver2", "other")):
            removed = await central.gql(REMOVE_TAG, {"input": {"id": to_global_id(
                "id_tag", central.tags[key].id)}}, as_user=who)
            assert removed["removeIdTag"]["errors"] == [], removed
        await settled(central)
        assert cp.local_list["TAG-OK"] == {"status": "Blocked"}
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}

        await central.services.fleet.issue_id_tag(
            Viewer.of(central.users["driver"]), tag="TAG-OK")
        # TAG-OTHER issued to another person: not what the list's sender listed.
        await central.services.fleet.issue_id_tag(
            Viewer.of(central.users["driver"]), tag="TAG-OTHER")
        await settled(central)
        assert cp.local_list["TAG-OK"]["status"] == "Accepted"
        assert cp.local_list["TAG-OTHER"] == {"status": "Blocked"}
        back = await entry(central, "CP-1", "TAG-OK")
        assert back is not None and (back.status, back.wanted) == ("Accepted", None)


async def test_a_card_removed_and_issued_again_while_its_charger_was_away_stays_accepted(
        central: Central) -> None:
    """The removal's withdrawal never reached the charger (offline) and the card was
    issued again to its holder meanwhile: at its boot the charger is sent nothing (it
    holds the card Accepted, as it should), not Blocked for the card removed."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await send_full_list(central, "CP-1", "TAG-OK")
    await offline(central, "CP-1")
    removed = await central.gql(REMOVE_TAG, {"input": {"id": to_global_id(
        "id_tag", central.tags["ok"].id)}}, as_user="driver")
    assert removed["removeIdTag"]["errors"] == [], removed
    await settled(central)
    await central.services.fleet.issue_id_tag(Viewer.of(central.users["driver"]),
                                              tag="TAG-OK")
    await settled(central)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as back:
        back.local_list_version, back.local_list = 1, {"TAG-OK": {"status": "Accepted"}}
        await back.boot()
        await settled(central)
        assert back.local_list["TAG-OK"] == {"status": "Accepted"}
        assert local_lists_sent(back) == []
        held = await entry(central, "CP-1", "TAG-OK")
        assert held is not None and (held.status, held.wanted) == ("Accepted", None)


SEND_LIST = """mutation($input: SendLocalListInput!) { sendLocalList(input: $input) {
    status errors { field code message } } }"""


def a_list(version: int, update: str, *tags: str) -> dict[str, object]:
    return {"input": {"cpId": "CP-1", "listVersion": version, "updateType": update,
                      "localAuthorizationList": [
                          {"idTag": tag, "idTagInfo": {"status": "ACCEPTED"}}
                          for tag in tags]}}


async def test_a_list_longer_than_the_charger_holds_is_refused_saying_what_fits(
        central: Central) -> None:
    """``LocalAuthListMaxLength`` was ignored: an operator's list longer than the
    charger holds was sent, answered Failed, and the operator shown FAILED with no
    reason. Refused before sending, saying how many fit and which tags would not; a
    Differential is judged on the list as recorded; the limits are asked once."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        cp.configuration["LocalAuthListMaxLength"] = ("3", True)
        cp.configuration["SendLocalListMaxLength"] = ("2", True)
        await cp.boot()
        too_long = await central.gql(SEND_LIST, a_list(1, "FULL", "A1", "A2", "A3"),
                                     as_user="op")
        [error] = too_long["sendLocalList"]["errors"]
        assert (error["field"], error["code"]) == ("localAuthorizationList",
                                                   "OUT_OF_RANGE"), too_long
        assert "at most 2 entries in one list" in error["message"]
        fits = await central.gql(SEND_LIST, a_list(1, "FULL", "A1", "A2"), as_user="op")
        assert fits["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, fits
        over = await central.gql(SEND_LIST, a_list(2, "DIFFERENTIAL", "B1", "B2"),
                                 as_user="op")
        [error] = over["sendLocalList"]["errors"]
        assert error["code"] == "OUT_OF_RANGE", over
        assert "holds at most 3 tags" in error["message"]
        assert "would leave it holding 4" in error["message"]
        assert "(B2)" in error["message"], error  # the tag that would not fit
        assert [s["list_version"] for s in local_lists_sent(cp)] == [1]  # none sent
        ok = await central.gql(SEND_LIST, a_list(2, "DIFFERENTIAL", "B1"), as_user="op")
        assert ok["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, ok
        assert [name for name, _ in cp.received].count("GetConfiguration") == 1


async def test_a_one_tag_differential_overfilling_the_list_is_refused(
        central: Central) -> None:
    """The commonest way an operator adds a card is a Differential of one tag. With the
    charger's list already at its LocalAuthListMaxLength it was sent anyway (a single
    entry was never judged), answered Failed, and the operator read FAILED with no
    reason. Refused like a longer list; an update of a tag it holds, or a removal,
    grows nothing and is sent."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        cp.configuration["LocalAuthListMaxLength"] = ("2", True)
        cp.configuration["SendLocalListMaxLength"] = ("5", True)
        await cp.boot()
        fits = await central.gql(SEND_LIST, a_list(1, "FULL", "A1", "A2"), as_user="op")
        assert fits["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, fits
        over = await central.gql(SEND_LIST, a_list(2, "DIFFERENTIAL", "B1"), as_user="op")
        [error] = over["sendLocalList"]["errors"]
        assert (error["field"], error["code"]) == ("localAuthorizationList",
                                                   "OUT_OF_RANGE"), over
        assert "holds 2 already, room for 0 more" in error["message"]
        assert "(B1)" in error["message"], error
        assert [s["list_version"] for s in local_lists_sent(cp)] == [1]  # none sent
        update = await central.gql(SEND_LIST, a_list(2, "DIFFERENTIAL", "A1"), as_user="op")
        assert update["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, update
        removal = {"input": {"cpId": "CP-1", "listVersion": 3, "updateType": "DIFFERENTIAL",
                             "localAuthorizationList": [{"idTag": "A2"}]}}
        removed = await central.gql(SEND_LIST, removal, as_user="op")
        assert removed["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, removed
        room = await central.gql(SEND_LIST, a_list(4, "DIFFERENTIAL", "B1"), as_user="op")
        assert room["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, room
        assert sorted(cp.local_list) == ["A1", "B1"]


async def test_a_refusal_names_only_the_tags_of_the_list_sent(central: Central) -> None:
    """A charger holding more than its LocalAuthListMaxLength now says (new firmware, or
    a list left by the company it was handed over from) is sent one tag: the refusal
    named the tags already held past the limit, possibly another company's cards.
    It names only the operator's own; an update of a tag held is not refused."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        cp.configuration["LocalAuthListMaxLength"] = ("3", True)
        await cp.boot()
        fits = await central.gql(SEND_LIST, a_list(1, "FULL", "A1", "A2", "A3"),
                                 as_user="op")
        assert fits["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, fits
        cp.configuration["LocalAuthListMaxLength"] = ("2", True)
        await cp.boot()
        await settled(central)
        over = await central.gql(SEND_LIST, a_list(2, "DIFFERENTIAL", "B1"), as_user="op")
        [error] = over["sendLocalList"]["errors"]
        assert error["code"] == "OUT_OF_RANGE", over
        assert "1 of this list's would not (B1)" in error["message"], error
        assert "A3" not in error["message"] and "A1" not in error["message"], error
        # An update of a tag it holds grows nothing: sent, over the limit as it is.
        update = await central.gql(SEND_LIST, a_list(2, "DIFFERENTIAL", "A1"), as_user="op")
        assert update["sendLocalList"] == {"status": "ACCEPTED", "errors": []}, update
