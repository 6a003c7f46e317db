"""A graceful stop hands over what it still had to deliver: deliveries queued or waiting
for a retry are stored (``PendingDelivery``) and resumed by the next instance, on the
same SQLite file, as they were: the same body and ``X-ChargeGraph-Delivery``, the tries
left, the next one when it was due, each webhook's in order, and each by one instance
only. Receivers on 127.0.0.1; dispatchers over real SQLite stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import StoreUnavailable
from domain.events import ConnectorStatusChanged
from domain.ports import Update
from domain.query import ALL, Eq
from domain.services import Services
from pubsub.codec import encode
from tests.helpers import until
from tests.webhooks.conftest import World, two_instances
from tests.webhooks.receiver import DRIP, HeldReceiver, Receiver
from tests.webhooks.test_delivery import available

#: A retry waits this long: long enough to stop and hand over before it is due.
BACKOFF_S = 1.5


async def handed_over(world: World) -> list[d.PendingDelivery]:
    return await world.store.find_all(d.PendingDelivery, ALL)


async def requests_at_least(receiver: Receiver, count: int, attempts: int = 500) -> None:
    async def enough() -> bool:
        return len(receiver.requests) >= count
    await until(enough, attempts=attempts)


async def failure_recorded(world: World, webhook: d.Webhook) -> None:
    """Waits (bounded) until the first try's failure is recorded: the receiver having
    the request is not enough, as a stop before its answer came back hands the delivery
    over with the try not counted (a load-sensitive run, session 29)."""
    async def recorded() -> bool:
        return (await world.stored(webhook)).last_attempt_at is not None
    await until(recorded)


async def test_a_stop_hands_over_a_retry_and_the_queue_behind_it_to_the_next_instance(
        tmp_path: Path) -> None:
    """The receiver fails the first try of the first event; the instance stops while
    that retry waits and the second event waits behind it. The other instance, starting,
    posts the retry with the same delivery id and body (signed with the same secret),
    when it was due and not before, then the second event: in order, each once."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(500, 200)
        webhook, secret = await world.webhook("op", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, backoff=(BACKOFF_S,))
        await available(world)
        await available(world)
        await requests_at_least(receiver, 1)
        await failure_recorded(world, webhook)  # the retry waits (not the first try)
        await stopping.close()
        world.dispatchers.remove(stopping)

        stored = await handed_over(world)
        assert [(p.webhook_id, p.tries_made) for p in stored] == [(webhook.id, 1),
                                                                  (webhook.id, 0)]
        assert stored[0].due_at > utcnow()  # the retry was not due yet
        assert len(receiver.requests) == 1

        await world.dispatcher(second, backoff=(BACKOFF_S,))
        await requests_at_least(receiver, 3)
        await world.settled()
        assert await handed_over(world) == []  # claimed: gone from the store
        health = await world.stored(webhook)
    first_try, retry, queued = receiver.requests
    # On its schedule: not before the time it was handed over with (both on the wall
    # clock; a loaded machine only makes it later), a backoff after the first try.
    assert retry.at >= stored[0].due_at >= first_try.at + timedelta(seconds=BACKOFF_S)
    assert retry.headers["x-chargegraph-delivery"] == \
        first_try.headers["x-chargegraph-delivery"]
    assert retry.body == first_try.body and retry.signed_with(secret)
    assert queued.signed_with(secret) and queued.json["id"] != retry.json["id"]
    assert queued.headers["x-chargegraph-delivery"] != retry.headers[
        "x-chargegraph-delivery"]
    # Both events, in the order they happened.
    assert [r.json["data"]["status"] for r in (retry, queued)] == ["Available",
                                                                   "Preparing"]
    assert health.consecutive_failures == 0 and health.last_status == 200


async def test_a_handed_over_delivery_keeps_the_tries_it_made(tmp_path: Path) -> None:
    """3 tries in all: one made before the stop leaves two after it, and the delivery
    failed for good counts once towards disabling the webhook."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(500)
        webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, backoff=(BACKOFF_S,))
        await available(world)
        await requests_at_least(receiver, 1)

        async def recorded() -> bool:
            # Its failure recorded, not only posted: a stop before the answer came hands
            # the delivery over with the try uncounted (a loaded run made four tries).
            return (await world.stored(webhook)).last_attempt_at is not None

        await until(recorded)
        await stopping.close()
        world.dispatchers.remove(stopping)
        await world.dispatcher(second, backoff=(0.01,))
        await requests_at_least(receiver, 3)
        await world.settled()
        await asyncio.sleep(0.1)
        assert len(receiver.requests) == 3
        assert len({r.headers["x-chargegraph-delivery"] for r in receiver.requests}) == 1
        assert (await world.stored(webhook)).consecutive_failures == 1


async def test_a_try_cut_short_by_the_stop_is_made_again_after_it(tmp_path: Path) -> None:
    """The receiver is still answering (slowly) when the instance stops: that try is
    handed over as not made, and posted again, with its delivery id, after the stop."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP, 200)
        await world.webhook("op", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, timeout=30.0)
        await available(world)
        await requests_at_least(receiver, 1)
        await asyncio.wait_for(stopping.close(), 5)
        world.dispatchers.remove(stopping)
        [stored] = await handed_over(world)
        assert stored.tries_made == 0
        await world.dispatcher(second)
        await requests_at_least(receiver, 2)
        await world.settled()
    cut_short, again = receiver.requests
    assert again.headers["x-chargegraph-delivery"] == \
        cut_short.headers["x-chargegraph-delivery"] and again.body == cut_short.body


async def test_what_a_removed_or_disabled_webhook_had_waiting_is_not_delivered(
        tmp_path: Path) -> None:
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(500)
        removed, _ = await world.webhook("op", receiver, "connector.status_changed")
        disabled, _ = await world.webhook("admin", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, backoff=(0.3,))
        await available(world)
        await requests_at_least(receiver, 2)
        await stopping.close()
        world.dispatchers.remove(stopping)
        assert len(await handed_over(world)) == 2
        await world.services.webhooks.remove_webhook(world.viewer("op"), removed.id)
        await world.services.webhooks.update_webhook(world.viewer("admin"), disabled.id,
                                                     active=False)
        resuming = await world.dispatcher(second, backoff=(0.01,))
        await world.settled()
        assert resuming.idle
        assert await handed_over(world) == []
        assert len(receiver.requests) == 2  # the first tries, before the stop


async def test_two_instances_starting_together_deliver_each_handed_over_one_once(
        tmp_path: Path) -> None:
    """Many deliveries of two webhooks handed over; two instances on the one SQLite file
    start at the same moment and claim from it: each delivery is posted once, by one of
    them, and each webhook's in order (one instance takes a webhook's together)."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver()
        operators, _ = await world.webhook("op", receiver, "connector.status_changed")
        admins, _ = await world.webhook("admin", receiver, "connector.status_changed")
        [plug] = await world.store.find_all(d.Connector, Eq("cp_id", "CP-1"))
        event = encode(ConnectorStatusChanged(
            station_id=plug.station_id, cp_id="CP-1", company_id=world.companies["volt"].id,
            connector_record_id=plug.id, connector_id=1, status="Available")).decode()
        await world.services.webhooks.hand_over(
            [_pending(webhook.id, n, event) for n in range(150)
             for webhook in (operators, admins)])
        assert len(await handed_over(world)) == 300

        await asyncio.gather(world.dispatcher(first), world.dispatcher(second))
        await requests_at_least(receiver, 300)
        await world.settled()
        await asyncio.sleep(0.1)
        assert await handed_over(world) == []
    delivered = [r.headers["x-chargegraph-delivery"] for r in receiver.requests]
    assert len(delivered) == 300 == len(set(delivered))
    for webhook in (operators, admins):
        assert [int(p.split("-")[1]) for p in delivered
                if p.startswith(webhook.id)] == list(range(150))


async def test_a_running_instance_takes_over_what_a_stopping_one_hands_over(
        tmp_path: Path) -> None:
    """Scaling down: no instance starts after the stop. The one still running looks
    every ``refresh_s`` and resumes the delivery."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(500, 200)
        await world.webhook("op", receiver, "connector.status_changed")
        await world.dispatcher(second, refresh_s=0.05, backoff=(0.2,))
        stopping = await world.dispatcher(first, backoff=(0.5,))
        # The event is published on the first instance only.
        await first.charging.status_notification("CP-1", 1, "Preparing", "NoError")
        await requests_at_least(receiver, 1)
        await stopping.close()
        world.dispatchers.remove(stopping)
        await requests_at_least(receiver, 2)
        await world.settled()
    first_try, retry = receiver.requests
    assert retry.headers["x-chargegraph-delivery"] == \
        first_try.headers["x-chargegraph-delivery"]


async def test_a_stop_does_not_hang_on_a_store_that_does_not_answer(
        tmp_path: Path) -> None:
    """The handover's write is bounded: a stuck store costs the stop ``handover_s``, and
    what it had is lost (said in the log), as a crash loses it."""
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(500)
        await world.webhook("op", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, backoff=(60.0,), handover_s=0.3)
        await available(world)
        await requests_at_least(receiver, 1)

        async def stuck(*_: Any, **__: Any) -> None:
            await asyncio.sleep(3600)
        first.webhooks.store.write = stuck  # type: ignore[method-assign]
        # Within its handover time (0.3 s), not the write's hour: 30 s against a hang only.
        await asyncio.wait_for(stopping.close(), 30)
        world.dispatchers.remove(stopping)


def deliveries_written(services: Services, then: Callable[[], Awaitable[None]]) -> None:
    """Each of ``services``' store writes of deliveries runs ``then()`` first (it may
    wait; raising, it fails the write)."""
    store = services.webhooks.store
    real_write = store.write

    async def write(changes: Any, audit: Any, *rest: Any) -> None:
        if any(isinstance(getattr(c, "record", None), d.PendingDelivery) for c in changes):
            await then()
        await real_write(changes, audit, *rest)
    store.write = write  # type: ignore[method-assign,assignment]


async def refused() -> None:
    raise StoreUnavailable("the store is out of reach", reason="test")


async def test_a_handover_the_store_refuses_is_given_up_and_said_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """QA s29: the delete of a stored delivery given up (its one try failed) fails, and
    so does the stop's write of it: given up for good (logged), not left waiting for a
    retry nobody makes, the stopped dispatcher has nothing unwritten."""
    async with two_instances(tmp_path) as (world, first, _):
        receiver = HeldReceiver(500)
        world.receivers.append(await receiver.start())
        webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, tries=1, handover_s=0.3)
        await available(world)

        async def stored() -> bool:
            return len(await handed_over(world)) == 1
        await until(stored)
        deliveries_written(first, refused)
        receiver.go.set()
        await failure_recorded(world, webhook)  # over: its record to be deleted
        with caplog.at_level(logging.ERROR, "chargegraph.webhooks"):
            await asyncio.wait_for(stopping.close(), 5)
        world.dispatchers.remove(stopping)
        # Review s30: nothing was left to hand over, only a delete failed: said so, not
        # as "handing over 0".
        assert "deleting the records of 1 finished webhook deliveries" in caplog.text
        assert "handing over" not in caplog.text
        assert stopping.persisted
        assert len(await handed_over(world)) == 1  # left: taken over once its lease ends


@pytest.mark.parametrize(("fails", "said"), [
    (True, "failed after this instance handed over"),
    (False, "refused after this instance handed over")], ids=["fails", "lands"])
async def test_a_batch_outliving_the_stop_s_wait_is_given_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, fails: bool, said: str) -> None:
    """A batch's write outlives the stop's wait for it (``handover_s``), then fails, or
    lands after the stop released the instance's lease, so that the store refuses its new
    deliveries for want of it (review r29): either way it is given up, said so, not kept
    as unwritten for a retry (or a lease renewal) nobody makes."""
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(500)
        await world.webhook("op", receiver, "connector.status_changed")
        answer = asyncio.Event()

        async def held() -> None:
            await answer.wait()
            if fails:
                await refused()
        deliveries_written(first, held)
        stopping = await world.dispatcher(first, backoff=(60.0,), handover_s=0.3)
        await available(world)

        async def writing() -> bool:
            return stopping._writing is not None and not stopping._writing.done()
        await until(writing)
        with caplog.at_level(logging.WARNING, "chargegraph.webhooks"):
            await asyncio.wait_for(stopping.close(), 5)
            world.dispatchers.remove(stopping)
            late = stopping._writing
            assert late is not None and not late.done()
            answer.set()
            assert await late is False
        assert said in caplog.text
        assert stopping.persisted


async def test_a_stop_with_a_full_queue_is_taken_over_by_one_instance_together(
        tmp_path: Path) -> None:
    """A try under way and a full queue (1,000) behind it: 1,001 handed over, all of
    them taken by one claim, none left for another instance to post side by side,
    out of order (review of the handover)."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP)
        webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, timeout=30.0)
        await available(world)  # its try hangs on the receiver: the delivery under way
        await requests_at_least(receiver, 1)
        [plug] = await world.store.find_all(d.Connector, Eq("cp_id", "CP-1"))
        for n in range(1000):  # the queue behind it, full (queue_size 1000)
            stopping.offer(ConnectorStatusChanged(
                station_id=plug.station_id, cp_id="CP-1",
                company_id=world.companies["volt"].id, connector_record_id=plug.id,
                connector_id=1, status="Available", info=str(n)))
        await asyncio.wait_for(stopping.close(), 10)
        world.dispatchers.remove(stopping)
        assert await world.store.count(d.PendingDelivery, ALL) == 1001

        claimed = await second.webhooks.claim_handed_over()
        left = await world.store.count(d.PendingDelivery, Eq("webhook_id", webhook.id))
        assert (len(claimed or []), left) == (1001, 0)


async def test_a_claim_still_running_when_the_stop_gives_up_puts_back_what_it_took(
        tmp_path: Path) -> None:
    """A running instance's claim is held by a slow store past the stop's wait for it
    (``handover_s``): what it then takes is handed over again, for the next
    instance, not into queues nobody sends nor hands over (review of the handover); or
    it takes nothing, its lease released by the stop (review s29)."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver()
        webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
        running = await world.dispatcher(second, refresh_s=0.05, handover_s=0.2)
        store = second.webhooks.store
        real_write = store.write
        claiming, claimed = asyncio.Event(), asyncio.Event()

        async def slow_claims(changes: Any, audit: Any, *rest: Any) -> None:
            # The claim: its guarded writes of the deliveries' instance.
            if changes and all(isinstance(c, Update) and c.required for c in changes) \
                    and isinstance(changes[0].record, d.PendingDelivery):
                claiming.set()
                await asyncio.sleep(1.0)  # slower than handover_s
                try:
                    await real_write(changes, audit, *rest)
                finally:
                    # Landed, or refused: the stop released the lease its writes are
                    # guarded on (review s29), and they stay handed over as they were.
                    claimed.set()
                return
            await real_write(changes, audit, *rest)
        store.write = slow_claims  # type: ignore[method-assign,assignment]

        [plug] = await world.store.find_all(d.Connector, Eq("cp_id", "CP-1"))
        event = encode(ConnectorStatusChanged(
            station_id=plug.station_id, cp_id="CP-1", company_id=world.companies["volt"].id,
            connector_record_id=plug.id, connector_id=1, status="Available")).decode()
        await first.webhooks.hand_over([_pending(webhook.id, n, event) for n in range(3)])
        await asyncio.wait_for(claiming.wait(), 5)
        await asyncio.wait_for(running.close(), 5)
        world.dispatchers.remove(running)
        await asyncio.wait_for(claimed.wait(), 5)  # the claim's deletes land after it

        async def put_back() -> bool:  # handed over again: no instance's
            return await world.store.count(d.PendingDelivery, Eq("instance_id", None)) == 3
        await until(put_back)
        stored = await handed_over(world)
        assert [p.delivery_id for p in stored] == [f"{webhook.id}-{n}" for n in range(3)]
        assert receiver.requests == []


async def test_a_full_queue_never_drops_a_delivery_taken_over(tmp_path: Path) -> None:
    """Taken over, a delivery is stored nowhere else: a queue full of them drops the new
    event instead (counted), and a new event never pushes one of them out."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP)
        webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
        [plug] = await world.store.find_all(d.Connector, Eq("cp_id", "CP-1"))
        event = encode(ConnectorStatusChanged(
            station_id=plug.station_id, cp_id="CP-1", company_id=world.companies["volt"].id,
            connector_record_id=plug.id, connector_id=1, status="Available")).decode()
        await first.webhooks.hand_over([_pending(webhook.id, n, event) for n in range(4)])
        taking = await world.dispatcher(second, timeout=30.0, queue_size=2)
        await requests_at_least(receiver, 1)  # the first hangs; three wait
        [channel] = taking._channels.values()
        assert len(channel.queue) == 3
        taking.offer(ConnectorStatusChanged(
            station_id=plug.station_id, cp_id="CP-1", company_id=world.companies["volt"].id,
            connector_record_id=plug.id, connector_id=1, status="Faulted"))
        assert [p.delivery_id for p in channel.queue] == [
            f"{webhook.id}-{n}" for n in range(1, 4)]
        assert channel.dropped == 1



async def answered_then_stopped(world: World, services: Any, outcome_s: float,
                                **options: Any) -> Receiver:
    """A delivery stored by one batch and answered 200, then a stop while that
    outcome's write (``record_attempt``) takes ``outcome_s``; the next instance runs."""
    receiver = await world.receiver(200)
    await world.webhook("op", receiver, "connector.status_changed")
    store = services.webhooks.store
    real_write = store.write

    async def slow_outcome(changes, audit, *rest):  # type: ignore[no-untyped-def]
        if receiver.requests and any(isinstance(getattr(c, "record", None), d.Webhook)
                                     for c in changes):
            await asyncio.sleep(outcome_s)
        await real_write(changes, audit, *rest)
    store.write = slow_outcome
    stopping = await world.dispatcher(services, **options)
    await available(world)

    async def stored() -> bool:
        return len(await handed_over(world)) == 1 and len(receiver.requests) == 1
    await until(stored)
    await asyncio.sleep(0.2)
    await stopping.close()  # SIGTERM while the 200's outcome is written
    world.dispatchers.remove(stopping)
    return receiver


async def test_a_delivery_answered_before_a_stop_is_not_posted_again(tmp_path: Path) -> None:
    """Review r27: the stop cut the write of its outcome, and its record (stored by an
    earlier batch) stayed, as this instance's, for the next instance to post again. The
    outcome's write is waited for (within the stop's bound), so its health is kept."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await answered_then_stopped(world, first, 1.0)
        assert await handed_over(world) == []
        assert (await world.stored((await world.store.find_all(d.Webhook, ALL))[0])
                ).last_status == 200
        await world.dispatcher(second, refresh_s=0.05)
        await asyncio.sleep(0.5)
        await world.settled()
        assert len(receiver.requests) == 1


async def test_a_delivery_answered_before_a_stop_that_cannot_wait_for_its_outcome_is_deleted(
        tmp_path: Path) -> None:
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await answered_then_stopped(world, first, 5.0, handover_s=1.0)
        assert await handed_over(world) == []
        await world.dispatcher(second, refresh_s=0.05)
        await asyncio.sleep(0.5)
        await world.settled()
        assert len(receiver.requests) == 1


def _pending(webhook_id: str, number: int, event: str) -> d.PendingDelivery:
    now = utcnow()
    body = (f'{{"id":"evt_{webhook_id}_{number}","type":"connector.status_changed",'
            f'"at":"2026-01-01T00:00:00Z","data":{{}}}}')
    return d.PendingDelivery(
        webhook_id=webhook_id, delivery_id=f"{webhook_id}-{number}",
        event_type="connector.status_changed", body=body, event=event, tries_made=0,
        due_at=now, queued_at=now + timedelta(microseconds=number))


async def test_a_stop_s_last_write_failing_with_nothing_to_hand_over_is_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review s30: the stop's write failing was logged only when it had deliveries to
    hand over or records to delete; otherwise it was swallowed, no line at all. A
    delivery delivered before any batch stored it leaves a note with nothing to write;
    the stop's write of it failing (a fault of the code's own: no store call is made
    for nothing) is said, with its traceback."""
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(200)
        await world.webhook("op", receiver, "connector.status_changed")
        stopping = await world.dispatcher(first, persist_s=600.0)  # no batch of its own
        await available(world)

        async def delivered_unwritten() -> bool:
            notes = list(stopping._unwritten.values())
            return bool(notes) and all(delivery.over for _, delivery in notes)
        await until(delivered_unwritten)

        async def faulty(**_: Any) -> bool:
            raise RuntimeError("a fault of the handover's own")
        stopping._persist = faulty  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, "chargegraph.webhooks"):
            await asyncio.wait_for(stopping.close(), 5)
        world.dispatchers.remove(stopping)
        assert "with nothing to hand over or delete" in caplog.text
        assert "a fault of the handover's own" in caplog.text  # its traceback
        assert "handing over" not in caplog.text
