"""Webhooks through GraphQL: the secret shown once, the list through the policy's one
read path, delivery health for the owner, pings, and user errors with fields."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from graph import TokenService
from graph.ids import to_global_id
from tests.helpers import graphql_in_process
from tests.webhooks.conftest import World

SECRET = "webhook-test-secret-long-enough-for-hs256"
TOKENS = TokenService(SECRET, timedelta(hours=1))

CREATE = """mutation($url: String!, $events: [WebhookEvent!]!) {
  createWebhook(input: {url: $url, events: $events, description: "billing"}) {
    secret webhook { id url events active description owner { name } }
    errors { field code message } } }"""
NODE = "query($id: ID!) { node(id: $id) { ... on Webhook { url } } }"
LIST = """{ webhooks { totalCount nodes { id url active disabledReason
  health { lastStatus lastError consecutiveFailures droppedEvents lastSuccessAt } } } }"""


async def gql(world: World, query: str, as_user: str | None,
              **variables: Any) -> dict[str, Any]:
    return await graphql_in_process(world.services, TOKENS, query, variables,
                                    world.users[as_user].id if as_user else None)


async def test_the_secret_is_shown_once_and_the_list_follows_the_policy(
        world: World) -> None:
    created = (await gql(world, CREATE, "op", url="https://hooks.example.com/in",
                         events=["SESSION_ENDED", "STATION_OFFLINE"]))["createWebhook"]
    assert created["errors"] == []
    assert created["secret"].startswith("whsec_")
    webhook = created["webhook"]
    assert webhook["events"] == ["SESSION_ENDED", "STATION_OFFLINE"]
    assert webhook["active"] and webhook["owner"] == {"name": "op"}

    # Nothing reads the secret afterwards: no field has it.
    seen = await gql(world, LIST, "op2")
    assert seen["webhooks"]["totalCount"] == 1
    assert created["secret"] not in str(seen)
    node = await gql(world, NODE, "op", id=webhook["id"])
    assert node["node"] == {"url": "https://hooks.example.com/in"}

    for outsider in ("op_other", "driver", None):
        assert (await gql(world, LIST, outsider))["webhooks"]["totalCount"] == 0
        assert (await gql(world, NODE, outsider, id=webhook["id"]))["node"] is None
    assert (await gql(world, LIST, "admin"))["webhooks"]["totalCount"] == 1


async def test_drivers_and_bad_urls_get_user_errors(world: World) -> None:
    world.services.webhooks.allow_private = False
    refused = (await gql(world, CREATE, "driver", url="https://hooks.example.com",
                         events=["SESSION_ENDED"]))["createWebhook"]
    assert refused["webhook"] is None and refused["secret"] is None
    assert [e["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    anonymous = (await gql(world, CREATE, None, url="https://hooks.example.com",
                           events=["SESSION_ENDED"]))["createWebhook"]
    assert [e["code"] for e in anonymous["errors"]] == ["UNAUTHENTICATED"]
    internal = (await gql(world, CREATE, "op", url="http://169.254.169.254/",
                          events=["SESSION_ENDED"]))["createWebhook"]
    assert [(e["field"], e["code"]) for e in internal["errors"]] == [
        ("url", "FORBIDDEN_ADDRESS")]


async def test_update_remove_and_health_as_the_owner_sees_it(world: World) -> None:
    world.services.webhooks.disable_after = 1
    await world.dispatcher()
    receiver = await world.receiver(500)
    webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
    global_id = to_global_id("webhook", webhook.id)
    await world.services.charging.status_notification("CP-1", 1, "Available", "NoError")
    await world.settled()

    [shown] = (await gql(world, LIST, "op"))["webhooks"]["nodes"]
    assert not shown["active"] and "fix the receiver" in shown["disabledReason"]
    assert shown["health"] == {"lastStatus": 500, "lastError": "HTTP 500: receiver says no",
                               "consecutiveFailures": 1, "droppedEvents": 0,
                               "lastSuccessAt": None}

    update = """mutation($id: ID!) { updateWebhook(input: {id: $id, active: true,
      events: [FAULT_REPORTED]}) { webhook { active events disabledReason
      health { consecutiveFailures } } errors { code } } }"""
    updated = (await gql(world, update, "op2", id=global_id))["updateWebhook"]
    assert updated == {"webhook": {"active": True, "events": ["FAULT_REPORTED"],
                                   "disabledReason": None,
                                   "health": {"consecutiveFailures": 0}}, "errors": []}
    hidden = (await gql(world, update, "op_other", id=global_id))["updateWebhook"]
    assert [e["code"] for e in hidden["errors"]] == ["NOT_FOUND"]

    remove = """mutation($id: ID!) { removeWebhook(input: {id: $id}) {
      webhook { url } errors { code } } }"""
    assert (await gql(world, remove, "op", id=global_id))["removeWebhook"]["errors"] == []
    assert (await gql(world, LIST, "op"))["webhooks"]["totalCount"] == 0


async def test_a_ping_is_posted_signed_at_once(world: World) -> None:
    await world.dispatcher()
    receiver = await world.receiver(200, 418)
    webhook, secret = await world.webhook("admin", receiver, "session.ended")
    ping = """mutation($id: ID!) { testWebhook(input: {id: $id}) {
      delivery { ok status error } errors { code } } }"""
    global_id = to_global_id("webhook", webhook.id)

    first = (await gql(world, ping, "admin", id=global_id))["testWebhook"]
    assert first == {"delivery": {"ok": True, "status": 200, "error": None}, "errors": []}
    [request] = receiver.requests
    assert request.signed_with(secret) and request.headers["x-chargegraph-event"] == "ping"
    assert request.json["type"] == "ping"
    assert request.json["data"]["webhookId"] == global_id

    second = (await gql(world, ping, "admin", id=global_id))["testWebhook"]
    assert second["delivery"] == {"ok": False, "status": 418,
                                  "error": "HTTP 418: receiver says no"}
    # A ping counts for nothing: the webhook's health is as it was.
    stored = await world.stored(webhook)
    assert (stored.last_status, stored.consecutive_failures) == (None, 0)
    refused = (await gql(world, ping, "op", id=global_id))["testWebhook"]
    assert [e["code"] for e in refused["errors"]] == ["NOT_FOUND"]
