"""Storing webhook deliveries when they are queued (``PendingDelivery``), on the
embedded store: what the enqueuer would wait for if every delivery awaited its own
write, against the batched writes the dispatcher makes (one per ``PERSIST_S``), and
against what queueing costs on the loop anyway (the body and the event encoded once per
event). Baseline in the same run: building one delivery's body.

    python -m bench.webhook_store [--deliveries 2000] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import report
from chargegraph.webhooks import event_data, payload
from domain.entities import InstanceLease, PendingDelivery
from domain.events import ConnectorStatusChanged
from domain.ids import new_id
from domain.policy import Policy
from domain.ports import Insert
from domain.services import ServiceContext
from domain.services.webhooks import WebhookService
from pubsub.codec import encode
from store.sqlite import SqliteStore
from tests.helpers import FastHasher

OWNER = new_id()


def event() -> ConnectorStatusChanged:
    return ConnectorStatusChanged(station_id=new_id(), cp_id="CP-1", company_id=new_id(),
                                  connector_record_id=new_id(), connector_id=1,
                                  status="Available")


def delivery(webhook_id: str) -> PendingDelivery:
    now = datetime.now(UTC)
    happened = event()
    body = payload("evt_" + new_id(), "connector.status_changed", happened.at,
                   event_data(happened))
    return PendingDelivery(webhook_id=webhook_id, delivery_id="dlv_" + new_id(),
                           event_type="connector.status_changed", body=body.decode(),
                           event=encode(happened).decode(), due_at=now, queued_at=now,
                           instance_id=OWNER)


def built(count: int) -> float:
    """µs per event to build its body and encode it (done at queueing now)."""
    happened = event()
    start = time.perf_counter()
    for _ in range(count):
        payload("evt_x", "connector.status_changed", happened.at, event_data(happened))
        encode(happened)
    return (time.perf_counter() - start) / count * 1e6


async def written(path: Path, count: int, batch: int) -> float:
    """µs per delivery to store ``count`` deliveries ``batch`` to a write, then delete
    them as delivered, the same way."""
    store = SqliteStore(str(path))
    await store.start()
    webhooks = WebhookService(ServiceContext(store=store, policy=Policy(),
                                             hasher=FastHasher()))
    # Stored as OWNER's only while its lease lives (as a running instance's are).
    now = datetime.now(UTC)
    await store.write([Insert(InstanceLease(id=OWNER, host="bench", started_at=now,
                                            expires_at=now + timedelta(hours=1)))], [])
    work = [delivery(new_id()) for _ in range(count)]
    start = time.perf_counter()
    for i in range(0, count, batch):
        await webhooks.keep_deliveries(OWNER, new=work[i:i + batch])
    for i in range(0, count, batch):
        await webhooks.keep_deliveries(OWNER, over=work[i:i + batch])
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed / count * 1e6


async def main(deliveries: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = built(deliveries)
        one = await written(Path(folder) / "one.db", deliveries, 1)
        many = await written(Path(folder) / "many.db", deliveries, batch)
    rows = [{"mode": "baseline: body and event built, per event", "us_per_delivery": base,
             "ratio": 1.0},
            {"mode": "each delivery its own write (stored, then deleted)",
             "us_per_delivery": one, "ratio": one / base},
            {"mode": f"batched, {batch} to a write (stored, then deleted)",
             "us_per_delivery": many, "ratio": many / base}]
    report("webhook_store", rows, {"deliveries": deliveries, "batch": batch})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.deliveries, args.batch))
