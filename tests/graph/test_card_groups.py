"""A card group (OCPP parentIdTag) is one company's (QA fleet finding 3): another
company's operator put their driver's card in the fleet's group id, and the driver took
the fleet's reservations and could end its group's transactions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Delete, Insert
from domain.services import fleet
from domain.services.base import stamp_new
from graph.ids import to_global_id
from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes
from tests.graph.world import PASSWORD, World


async def test_an_operator_cannot_join_another_companys_card_group(api: Api, world: World
                                                                   ) -> None:
    services = api.client._transport.app.services  # type: ignore[attr-defined]
    driver_b = await services.accounts.create_user(
        SYSTEM, email="driver_b@example.com", password=PASSWORD, name="Driver B",
        role=d.Role.DRIVER, company_id=world.companies["b"].id)
    fleet = await call(api, world, "op_a", "issueIdTag", {
        "tag": "FLEET-0001", "userId": to_global_id("user", world.users["driver_a"].id),
        "parentIdTag": "FLEETGRP"}, "idTag { id }")
    assert fleet["errors"] == []
    theirs = await call(api, world, "op_b", "issueIdTag", {
        "tag": "CARD-B1", "userId": to_global_id("user", driver_b.id)}, "idTag { id }")
    card_b = theirs["idTag"]["id"]

    # Neither the fleet's group id nor the fleet's card as a parent.
    for group in ("FLEETGRP", "fleet-0001"):
        assert codes(await call(api, world, "op_b", "updateIdTag",
                                {"id": card_b, "parentIdTag": group}, "idTag { id }")
                     ) == [("parentIdTag", "IN_USE")], group
        assert codes(await call(api, world, "op_b", "issueIdTag", {
            "tag": "CARD-B2", "userId": to_global_id("user", driver_b.id),
            "parentIdTag": group}, "idTag { id }")) == [("parentIdTag", "IN_USE")], group
    # Nor a card named as the group: presented, it would be the group's own id.
    assert codes(await call(api, world, "op_b", "issueIdTag", {
        "tag": "FLEETGRP", "userId": to_global_id("user", driver_b.id)}, "idTag { id }")
                 ) == [("tag", "IN_USE")]
    assert codes(await call(api, world, "driver1", "issueIdTag", {"tag": "FLEETGRP"},
                            "idTag { id }")) == [("tag", "IN_USE")]
    # The fleet's own operator adds cards to it; a group of b's own is b's.
    assert (await call(api, world, "op_a", "issueIdTag", {
        "tag": "FLEET-0002", "userId": to_global_id("user", world.users["driver_a"].id),
        "parentIdTag": "FLEETGRP"}, "idTag { id }"))["errors"] == []
    assert (await call(api, world, "op_b", "updateIdTag",
                       {"id": card_b, "parentIdTag": "BETA-GRP"}, "idTag { id }")
            )["errors"] == []

    # An admin may do anything (a roaming group across companies, say): the fleet's
    # reservations still serve only the fleet's cards.
    joined = await call(api, world, "admin", "updateIdTag",
                        {"id": card_b, "parentIdTag": "FLEETGRP"}, "idTag { parentIdTag }")
    assert joined["idTag"] == {"parentIdTag": "FLEETGRP"}
    # Connector 2: driver1's session holds connector 1 (a start there is IN_USE anyway).
    station = world.stations["A-001"]
    for reserved_for, maker in (("FLEET-0001", "op_a"), ("FLEETGRP", "op_a")):
        reservation = stamp_new(d.Reservation(
            reservation_id=await services.ctx.store.next_sequence("reservation"),
            station_id=station.id, cp_id=station.cp_id, connector_id=2,
            id_tag=reserved_for, expires_at=utcnow() + timedelta(hours=1),
            # As reserveNow records it: the holder of a known card, none for a bare id.
            user_id=world.users["driver_a"].id if reserved_for == "FLEET-0001" else None,
            state=d.ReservationState.ACTIVE, company_id=station.company_id),
            world.viewer(maker))
        await services.ctx.store.write([Insert(reservation)], [])
        start = """mutation($input: RemoteStartTransactionInput!) {
            remoteStartTransaction(input: $input) { status errors { field code } } }"""
        other = await api.gql(start, {"input": {"cpId": station.cp_id, "connectorId": 2,
                                                "idTag": "CARD-B1"}}, as_user=driver_b.id)
        assert codes(other["remoteStartTransaction"]) == [("connectorId", "IN_USE")], \
            reserved_for
        # The fleet's other card passes the reservation (then finds no charger here).
        mine = await api.gql(start, {"input": {"cpId": station.cp_id, "connectorId": 2,
                                               "idTag": "FLEET-0002"}},
                             as_user=world.users["driver_a"].id)
        assert codes(mine["remoteStartTransaction"]) == [(None, "CHARGER_OFFLINE")], \
            reserved_for
        await services.ctx.store.write([Delete(reservation)], [])


UPDATE_USER = "user { company { name } }"


async def test_a_member_of_a_card_group_is_not_moved_away_from_its_other_members(
        api: Api, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s20: a driver holding a card of Alpha's group GRP-A moved to Beta left the
    group two companies', and both companies' operators were then told the group is
    another company's. The move is refused (naming the card and the group) while other
    members stay, as a card's own parent or a member; once the card is out of the group,
    or its only members are the driver's own, the driver moves."""
    monkeypatch.setattr(fleet, "GROUP_BATCH", 1)  # the driver's cards read in batches
    services = api.client._transport.app.services  # type: ignore[attr-defined]
    alpha = world.companies["a"]
    other = await services.accounts.create_user(
        SYSTEM, email="driver_a2@example.com", password=PASSWORD, name="Driver A2",
        role=d.Role.DRIVER, company_id=alpha.id)
    driver, beta = world.users["driver_a"], to_global_id("company", world.companies["b"].id)

    async def issue(tag: str, holder: d.User, group: str | None) -> str:
        issued = await call(api, world, "op_a", "issueIdTag", {
            "tag": tag, "userId": to_global_id("user", holder.id), "parentIdTag": group},
            "idTag { id }")
        assert issued["errors"] == [], issued
        return str(issued["idTag"]["id"])

    async def move() -> dict[str, Any]:
        return await call(api, world, "admin", "updateUser", {
            "id": to_global_id("user", driver.id), "companyId": beta}, UPDATE_USER)

    mine = await issue("TAG-G1", driver, "GRP-A")
    theirs = await issue("TAG-G2", other, "GRP-A")
    refused = await move()
    assert codes(refused) == [("companyId", "IN_USE")]
    assert "TAG-G1" in refused["errors"][0]["message"]
    assert "GRP-A" in refused["errors"][0]["message"]
    [stored] = await services.ctx.store.get_many(d.User, [driver.id])
    assert stored is not None and stored.company_id == alpha.id

    # The driver's card as the group's parent: the same.
    assert (await call(api, world, "op_a", "updateIdTag",
                       {"id": theirs, "parentIdTag": "TAG-G1"}, "idTag { id }")
            )["errors"] == []
    assert (await call(api, world, "op_a", "updateIdTag",
                       {"id": mine, "parentIdTag": None}, "idTag { id }"))["errors"] == []
    refused = await move()
    assert codes(refused) == [("companyId", "IN_USE")]
    assert "TAG-G1" in refused["errors"][0]["message"]

    # Out of it, with a group of the driver's own cards only: moved, the group with them.
    assert (await call(api, world, "op_a", "updateIdTag",
                       {"id": theirs, "parentIdTag": None}, "idTag { id }"))["errors"] == []
    await issue("TAG-G3", driver, "TAG-G1")
    moved = await move()
    assert moved == {"user": {"company": {"name": "Beta Power"}}, "errors": []}
