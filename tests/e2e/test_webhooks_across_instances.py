"""Webhooks on two instances sharing one database and one Redis: a webhook created or
changed through one instance routes the events of chargers on the other at once, not
only at the other's next periodic read of the webhooks (``REFRESH_S``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

import chargegraph.app
from chargegraph.webhooks import WebhookDispatcher
from ocpp_bridge.simulator import connected
from tests.e2e.conftest import running_service
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD
from tests.support.redis_server import RedisServer
from tests.webhooks.receiver import Receiver

CREATE = """mutation($url: String!) { createWebhook(input: {url: $url,
    events: [CONNECTOR_STATUS_CHANGED]}) { webhook { id } errors { code message } } }"""
UPDATE = """mutation($id: ID!) { updateWebhook(input: {id: $id,
    events: [CONNECTOR_STATUS_CHANGED, FAULT_REPORTED]}) { errors { code message } } }"""


def received(receiver: Receiver, kind: str) -> list[str]:
    return [r.json["type"] for r in receiver.requests if r.json["type"] == kind]


async def test_a_webhook_made_on_one_instance_gets_the_other_s_events_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The periodic read is the fallback: pushed out of the test's reach, what makes the
    # other instance route the webhook is the change's own announcement.
    monkeypatch.setattr(chargegraph.app, "WebhookDispatcher", functools.partial(
        WebhookDispatcher, refresh_s=3600.0))
    receiver = await Receiver(200).start()
    redis = RedisServer().start()
    try:
        kw: dict[str, Any] = {"pubsub_url": redis.url, "webhooks_allow_private": True}
        async with running_service(tmp_path / "a", **kw) as a, running_service(
                tmp_path / "b", database_url=a.settings.database_url, seed_data=False,
                **kw) as b:
            token = await b.token("admin")
            created = (await b.gql(CREATE, {"url": receiver.url}, token=token))[
                "createWebhook"]
            assert created["errors"] == []
            dispatcher = a.services.webhooks.sender
            assert isinstance(dispatcher, WebhookDispatcher)

            async def routed_on_a(kind: str) -> bool:  # the only webhook there is
                return bool(dispatcher._routes.get(kind))
            await until(lambda: routed_on_a("connector.status_changed"))
            async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
                await cp.status(1, "Available")

                async def delivered() -> bool:
                    return bool(received(receiver, "connector.status_changed"))
                await until(delivered)
                # An edit made on B reaches A's routing likewise.
                edited = await b.gql(UPDATE, {"id": created["webhook"]["id"]}, token=token)
                assert edited["updateWebhook"]["errors"] == []
                await until(lambda: routed_on_a("fault.reported"))
    finally:
        redis.cleanup()
        await receiver.close()
