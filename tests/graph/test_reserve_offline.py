"""A reserveNow its charger never got (offline: no connection to it, through the real
``OcppGateway``) leaves no reservation, on both stores (QA s31: it answered
CHARGER_OFFLINE and kept a REJECTED reservation, in the driver's ``reservations`` and
the audit log). The row stored before the send is removed, audited as such beside the
command's ANSWERED entry; a remote start to it writes nothing either."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain import entities as d
from domain.query import ALL, Eq
from domain.services import Services
from ocpp_bridge.gateway import OcppGateway
from tests.graph.conftest import Api
from tests.graph.world import World

RESERVE = """mutation($i: ReserveNowInput!) { reserveNow(input: $i) {
  commandId status reservation { id } errors { field code } } }"""
START = """mutation($i: RemoteStartTransactionInput!) { remoteStartTransaction(input: $i) {
  commandId status errors { field code } } }"""
MINE = "{ reservations(first: 5) { totalCount nodes { id } } }"


async def test_a_reservation_never_delivered_leaves_none(api: Api, world: World,
                                                         services: Services) -> None:
    services.attach_gateway(OcppGateway())  # no charger connected: offline
    driver = world.users["driver2"].id
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    answer = (await api.gql(RESERVE, {"i": {"cpId": "A-002", "connectorId": 1,
                                            "expiresAt": end}}, as_user=driver))["reserveNow"]
    assert [(e["field"], e["code"]) for e in answer["errors"]] == [
        ("cpId", "CHARGER_OFFLINE")], answer
    assert answer["reservation"] is None and answer["commandId"] is not None
    assert await services.ctx.store.find_all(d.Reservation, ALL) == []
    mine = (await api.gql(MINE, as_user=driver))["reservations"]
    assert mine == {"totalCount": 0, "nodes": []}
    # What the audit log keeps: one entry, the command not sent (QA s33: a SENT entry
    # came first, for a command the charger never got), and the reservation stored for
    # it and removed in that entry's write, not left REJECTED.
    entries = await services.ctx.store.find_all(d.AuditEntry, ALL)
    commands = [(e.after or {}) for e in entries if e.action is d.AuditAction.COMMAND]
    assert [(c["stage"], c["error"]) for c in commands] == [
        ("NOT_SENT", "CHARGER_OFFLINE")]
    made = [(e.action, e.entity) for e in entries if e.entity == "reservation"]
    assert sorted(made) == [(d.AuditAction.CREATE, "reservation"),
                            (d.AuditAction.DELETE, "reservation")], made

    # As a remote start to it: nothing stays (its hold on the card settled).
    start = (await api.gql(START, {"i": {"cpId": "A-002", "connectorId": 1}},
                           as_user=driver))["remoteStartTransaction"]
    assert [e["code"] for e in start["errors"]] == ["CHARGER_OFFLINE"], start
    held = await services.ctx.store.find_all(d.PendingStart, Eq("cp_id", "A-002"))
    assert [p.settled_at is not None for p in held] == [True]
