"""A deploy loses no webhook delivery: the service (uvicorn, OCPP server, SQLite file) is
stopped while a delivery waits for its retry and another waits behind it, and started
again on its file. Both arrive after the restart, the retry with the delivery id, body
and signing secret of its first try, once due (the restarted service's clock moved past
its time), then the other. A real charger
over OCPP reports the statuses; the receiver listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

import chargegraph.app
import chargegraph.webhooks
from chargegraph.webhooks import WebhookDispatcher
from domain.clock import utcnow
from domain.entities import PendingDelivery, Webhook
from domain.query import ALL
from ocpp_bridge.simulator import basic_auth
from store.sqlite import SqliteStore
from tests.e2e.conftest import running_service
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD
from tests.webhooks.receiver import Received, Receiver

#: The wait before a retry in this test's service: an hour, never over during a stop and a
#: start however loaded the machine (4 s was a bound on their wall time); the restarted
#: service's clock is moved past it.
BACKOFF_S = 3600.0

CREATE = """mutation($url: String!) { createWebhook(input: {url: $url,
    events: [CONNECTOR_STATUS_CHANGED]}) { secret errors { code message } } }"""


async def call(ws: ClientConnection, unique_id: str, action: str, payload: dict[str, Any]
               ) -> Any:
    await ws.send(json.dumps([2, unique_id, action, payload]))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if frame[0] == 3 and frame[1] == unique_id:
            return frame[2]


def reports(receiver: Receiver, connector_id: int) -> list[Received]:
    return [r for r in receiver.requests if r.json["data"]["connectorId"] == connector_id
            and r.json["data"]["status"] == "Available"]


async def test_a_delivery_waiting_at_a_stop_arrives_after_the_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chargegraph.app, "WebhookDispatcher", functools.partial(
        WebhookDispatcher, tries=3, backoff=(BACKOFF_S,)))
    receiver = await Receiver(500, 200).start()
    try:
        async with running_service(tmp_path, webhooks_allow_private=True) as service:
            token = await service.token("admin")
            created = (await service.gql(CREATE, {"url": receiver.url}, token=token))[
                "createWebhook"]
            assert created["errors"] == []
            secret = created["secret"]
            async with connect(f"{service.ocpp_url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                               additional_headers=basic_auth("CP-1", STATION_PASSWORD)
                               ) as ws:
                await call(ws, "b", "BootNotification", {
                    "chargePointVendor": "Test", "chargePointModel": "Handover"})
                for connector_id in (1, 2):
                    await call(ws, f"s{connector_id}", "StatusNotification", {
                        "connectorId": connector_id, "status": "Available",
                        "errorCode": "NoError"})

                # Its failure recorded, not only posted: a stop before the answer came
                # back hands the delivery over with the try not counted.
                async def first_try_failed() -> bool:
                    [hook] = await service.services.ctx.store.find_all(Webhook, ALL)
                    return hook.last_attempt_at is not None
                await until(first_try_failed)
        stopped = utcnow()  # the lifespan ran to its end
        assert len(reports(receiver, 1)) == 1 and reports(receiver, 2) == []
        store = SqliteStore(str(tmp_path / "e2e.db"))
        await store.start()
        try:
            stored = await store.find_all(PendingDelivery, ALL)
        finally:
            await store.close()
        assert sorted(p.tries_made for p in stored) == [0, 1]
        [due_at] = [p.due_at for p in stored if p.tries_made == 1]
        # Handed over with its time: the backoff after its first try.
        [first_try] = reports(receiver, 1)
        assert first_try.at + timedelta(seconds=BACKOFF_S) <= due_at \
            <= stopped + timedelta(seconds=BACKOFF_S)

        # The restarted service's dispatcher an hour on: the retry is due.
        monkeypatch.setattr(chargegraph.webhooks, "utcnow",
                            lambda: utcnow() + timedelta(seconds=BACKOFF_S))
        async with running_service(tmp_path, seed_data=False, webhooks_allow_private=True):
            async def both_arrived() -> bool:
                return len(reports(receiver, 1)) == 2 and len(reports(receiver, 2)) == 1
            await until(both_arrived, attempts=1000)
    finally:
        await receiver.close()

    _, retry = reports(receiver, 1)  # after the first try, read before the restart
    [queued] = reports(receiver, 2)
    assert retry.headers["x-chargegraph-delivery"] == \
        first_try.headers["x-chargegraph-delivery"]
    assert retry.body == first_try.body
    assert first_try.signed_with(secret) and retry.signed_with(secret)
    assert queued.signed_with(secret)
    assert receiver.requests.index(retry) < receiver.requests.index(queued)
