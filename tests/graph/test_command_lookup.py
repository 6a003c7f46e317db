"""A command's outcome read by its ``commandId``, as README has a client whose keyed
retry got the kept answer do ("read the outcome with a query (… its audit log)"), on
both stores (QA s33: ``AuditFilter`` had no ``commandId``; ``node(id:)`` is null for
it: a command is no record)."""

from __future__ import annotations

from typing import Any

from domain.services import Services
from ocpp_bridge.gateway import OcppGateway
from tests.graph.conftest import Api
from tests.graph.world import World
from tests.support.gateways import Accepting

RESET = """mutation($i: ResetInput!) { reset(input: $i) { commandId status
    errors { code } } }"""
BY_COMMAND = """query($c: ID!) { auditLog(first: 10, filter: {commandId: $c}) {
    nodes { action after } } }"""


async def by_command(api: Api, command_id: str, who: str) -> list[dict[str, Any]]:
    nodes = (await api.gql(BY_COMMAND, {"c": command_id}, as_user=who))["auditLog"]["nodes"]
    return [{"stage": n["after"]["stage"], "commandId": n["after"]["commandId"],
             "error": n["after"]["error"]} for n in nodes]


async def test_a_commands_entries_are_found_by_its_command_id(
        api: Api, world: World, services: Services) -> None:
    services.attach_gateway(Accepting())
    op, other = world.users["op_a"].id, world.users["op_b"].id
    token = api.token_for(op)
    soft = {"i": {"cpId": "A-001", "type": "SOFT"}}
    first = await api.post(RESET, soft, token, **{"idempotency-key": "reset-1"})
    again = await api.post(RESET, soft, token, **{"idempotency-key": "reset-1"})
    # The retry with the key is the kept answer, not a second command: its id tells
    # which command to read the outcome of.
    sent = first.json()["data"]["reset"]
    assert again.json()["data"]["reset"] == sent and sent["status"] == "ACCEPTED"
    unrelated = (await api.gql(RESET, {"i": {"cpId": "A-001", "type": "HARD"}},
                               as_user=op))["reset"]
    assert unrelated["commandId"] != sent["commandId"]

    assert await by_command(api, sent["commandId"], op) == [
        {"stage": "ANSWERED", "commandId": sent["commandId"], "error": None},
        {"stage": "SENT", "commandId": sent["commandId"], "error": None}]
    assert await by_command(api, sent["commandId"], other) == []  # not their books

    # One kept from a charger known offline: its one entry.
    services.attach_gateway(OcppGateway())
    offline = (await api.gql(RESET, {"i": {"cpId": "A-001", "type": "SOFT"}},
                             as_user=op))["reset"]
    assert [e["code"] for e in offline["errors"]] == ["CHARGER_OFFLINE"]
    assert await by_command(api, offline["commandId"], op) == [
        {"stage": "NOT_SENT", "commandId": offline["commandId"],
         "error": "CHARGER_OFFLINE"}]
