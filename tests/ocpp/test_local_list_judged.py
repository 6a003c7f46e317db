"""QA s33, an operator's local lists judged by what the product knows: the version the
charger last accepted (``Station.localListVersion``, raised by the product's own
withdrawals too) and the cards it would refuse. Real ``ocpp`` chargers (the simulator)
against a real central system on a real SQLite file."""

from __future__ import annotations

from typing import Any

from domain import entities as d
from domain.policy import Viewer
from ocpp_bridge.simulator import connected
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_card_withdrawal import (
    SEND_LIST,
    block,
    issue,
    local_lists_sent,
    send_full_list,
    settled,
)

VERSION = """{ station(cpId: "CP-1") { localListVersion } }"""


async def version(central: Central, who: str = "op") -> Any:
    station = (await central.gql(VERSION, as_user=who))["station"]
    return station and station["localListVersion"]


def differential(version: int, tag: str) -> dict[str, Any]:
    return {"input": {"cpId": "CP-1", "listVersion": version, "updateType": "DIFFERENTIAL",
                      "localAuthorizationList": [
                          {"idTag": tag, "idTagInfo": {"status": "ACCEPTED"}}]}}


async def test_a_differential_at_or_below_the_version_recorded_is_refused_naming_it(
        central: Central) -> None:
    """v1 after a Full v1 was sent; a withdrawal raising the version made an operator's
    "version + 1" stale, and only a getLocalListVersion told the version."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        assert await version(central) is None  # nothing known yet
        await send_full_list(central, "CP-1", "TAG-OK", "ROAMING-1")
        assert await version(central) == 1
        assert await version(central, "op_other") is None  # not their station
        sent = len(local_lists_sent(cp))
        stale = (await central.gql(SEND_LIST, differential(1, "ROAMING-2"),
                                   as_user="op"))["sendLocalList"]
        [error] = stale["errors"]
        assert (error["field"], error["code"]) == ("listVersion", "OUT_OF_RANGE")
        assert "version 1" in error["message"] and "2" in error["message"]
        assert len(local_lists_sent(cp)) == sent  # not sent

        await block(central, "ok", who="driver")  # the product's withdrawal: v2
        await settled(central)
        assert cp.local_list_version == 2
        assert await version(central) == 2
        refused = (await central.gql(SEND_LIST, differential(2, "ROAMING-2"),
                                     as_user="op"))["sendLocalList"]
        assert [(e["field"], e["code"]) for e in refused["errors"]] == [
            ("listVersion", "OUT_OF_RANGE")]
        assert "version 2" in refused["errors"][0]["message"]
        taken = (await central.gql(SEND_LIST, differential(3, "ROAMING-2"),
                                   as_user="op"))["sendLocalList"]
        assert taken == {"status": "ACCEPTED", "errors": []}
        assert await version(central) == 3 == cp.local_list_version


async def test_a_list_accepting_a_card_the_product_refuses_is_refused_entry_by_entry(
        central: Central) -> None:
    """A Full list giving a blocked card Accepted was sent, answered ACCEPTED, and
    withdrawn within a second. Each such entry of a card the operator may see (their
    company's people's) is refused (INVALID_STATE, as a remote start with the card);
    the card listed as what it is, and tags of no card here (another network's), are
    sent."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        holder = await central.services.accounts.create_user(
            Viewer.of(central.users["op"]), email="volt-driver@example.com",
            password="password-123", name="volt-driver", role=d.Role.DRIVER)
        for tag in ("VOLT-1", "VOLT-2"):
            await issue(central, "op", tag, holder)
            await block(central, tag, who="op")
        await settled(central)
        entries: list[dict[str, Any]] = [
            {"idTag": "ROAMING-1", "idTagInfo": {"status": "ACCEPTED"}},
            {"idTag": "volt-1", "idTagInfo": {"status": "ACCEPTED"}},
            {"idTag": "VOLT-2", "idTagInfo": {"status": "ACCEPTED"}}]
        wrong = {"input": {"cpId": "CP-1", "listVersion": 1, "updateType": "FULL",
                           "localAuthorizationList": entries}}
        answer = (await central.gql(SEND_LIST, wrong, as_user="op"))["sendLocalList"]
        assert [(e["field"], e["code"]) for e in answer["errors"]] == [
            ("localAuthorizationList.1.idTagInfo.status", "INVALID_STATE"),
            ("localAuthorizationList.2.idTagInfo.status", "INVALID_STATE")], answer
        assert "VOLT-1 is blocked" in answer["errors"][0]["message"]
        assert answer["status"] is None and local_lists_sent(cp) == []
        entries[1]["idTagInfo"]["status"] = entries[2]["idTagInfo"]["status"] = "BLOCKED"
        right = (await central.gql(SEND_LIST, wrong, as_user="op"))["sendLocalList"]
        assert right == {"status": "ACCEPTED", "errors": []}
        assert cp.local_list["VOLT-1"]["status"] == "Blocked"
        await settled(central)
        assert len(local_lists_sent(cp)) == 1  # no withdrawal followed


async def test_a_card_the_operator_may_not_see_is_not_judged_and_tells_nothing(
        central: Central) -> None:
    """Review r33-d: op (Volt GmbH) was told "card TAG-OK is blocked here" of a driver's
    own card outside its card visibility, before anything was sent, of any card in the
    product. Such a card is sent as listed, as a tag of no card here is, the answer the
    same whatever its state, and the product's own withdrawal follows."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await block(central, "ok", who="driver")
        await settled(central)
        listed = {"input": {"cpId": "CP-1", "listVersion": 1, "updateType": "FULL",
                            "localAuthorizationList": [
                                {"idTag": tag, "idTagInfo": {"status": "ACCEPTED"}}
                                for tag in ("TAG-OK", "TAG-BLOCKED", "TAG-OTHER")]}}
        answer = (await central.gql(SEND_LIST, listed, as_user="op"))["sendLocalList"]
        assert answer == {"status": "ACCEPTED", "errors": []}
        assert len(local_lists_sent(cp)) == 1
        await settled(central)

        async def withdrawn() -> bool:
            return all(cp.local_list.get(tag) == {"status": "Blocked"}
                       for tag in ("TAG-OK", "TAG-BLOCKED"))
        await until(withdrawn)
        assert cp.local_list["TAG-OTHER"]["status"] == "Accepted"  # as listed
