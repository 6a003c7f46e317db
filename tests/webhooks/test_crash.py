"""A crash loses no delivery: each is stored when it is queued, as its instance's, its
tries written as they are made, and deleted once over; an instance whose lease has
expired (it crashed: no handover) has its deliveries taken over by one surviving
instance, which goes on with them as they were. Dispatchers over real SQLite stores on
one file; receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chargegraph.webhooks import WebhookDispatcher
from domain import entities as d
from domain.clock import utcnow
from domain.errors import StoreUnavailable
from domain.events import AccessChanged
from domain.policy import SYSTEM
from domain.ports import Delete
from domain.query import ALL
from domain.services import Services, erasure
from domain.services.base import patch
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.server import OcppServer
from tests.helpers import until
from tests.webhooks.conftest import World, two_instances
from tests.webhooks.receiver import DRIP, HeldReceiver, Receiver
from tests.webhooks.test_delivery import available
from tests.webhooks.test_handover import handed_over, requests_at_least

#: A retry waits this long: a crash and a takeover fit in it.
BACKOFF_S = 1.5
#: The crashing instance's lease: it expires soon after the crash.
LEASE_S = 0.6


async def crash(world: World, dispatcher: WebhookDispatcher) -> None:
    """As a SIGKILL leaves it: its tasks stop where they are, nothing is written after,
    its lease is no longer renewed (and expires)."""
    dispatcher._closed = True
    with contextlib.suppress(ValueError):
        dispatcher.services.ctx.published.remove(dispatcher.offer)
    tasks = [t for t in (dispatcher._refresher, dispatcher._persister,
                         dispatcher._lease_keeper, dispatcher._follower, dispatcher._sights,
                         dispatcher._writing,
                         *(c.task for c in dispatcher._channels.values())) if t is not None]
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    world.dispatchers.remove(dispatcher)


async def stored_tries(world: World) -> list[int]:
    return [p.tries_made for p in await handed_over(world)]


async def test_a_crashed_instances_deliveries_are_resumed_once_by_one_survivor(
        tmp_path: Path) -> None:
    """The receiver is down for the first try of the first of three events; the
    instance crashes while that retry waits and two more wait behind it. Two instances
    (one the crashed one started again, one that ran all along) look for deliveries to
    take over every 50 ms: once the lease has expired, one of them takes all three, and
    each arrives once, in order, the retry with the delivery id and body of its first
    try, signed with the webhook's secret."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(503, 200)
        webhook, secret = await world.webhook("op", receiver, "connector.status_changed")
        crashing = await world.dispatcher(first, backoff=(BACKOFF_S,), lease_s=LEASE_S)
        for _ in range(3):
            await available(world)
        await requests_at_least(receiver, 1)

        async def written() -> bool:  # the first try's outcome, and the two queued
            return sorted(await stored_tries(world)) == [0, 0, 1]
        await until(written)
        stored = await handed_over(world)
        assert {p.instance_id for p in stored} == {crashing.instance_id}
        await crash(world, crashing)

        survivors = [await world.dispatcher(services, backoff=(BACKOFF_S,), refresh_s=0.05)
                     for services in (first, second)]
        await requests_at_least(receiver, 4, attempts=800)
        await world.settled()
        await asyncio.sleep(0.3)  # more looks for deliveries to take over: nothing more
        assert await handed_over(world) == []  # delivered: gone from the store
        assert len(receiver.requests) == 4
        assert sum(1 for s in survivors for c in s._channels.values()
                   if c.webhook_id == webhook.id) <= 2
    first_try, retry, *queued = receiver.requests
    assert retry.headers["x-chargegraph-delivery"] == \
        first_try.headers["x-chargegraph-delivery"]
    assert retry.body == first_try.body and retry.signed_with(secret)
    assert [r.json["data"]["status"] for r in (retry, *queued)] == [
        "Available", "Preparing", "Available"]
    assert len({r.headers["x-chargegraph-delivery"] for r in (retry, *queued)}) == 3
    assert all(r.signed_with(secret) for r in queued)


async def test_a_live_instances_deliveries_are_not_taken_over(tmp_path: Path) -> None:
    """Another instance looking for deliveries to take over leaves alone those of an
    instance whose lease is live, waiting for their retry: posted once, by it."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(503, 200)
        await world.webhook("op", receiver, "connector.status_changed")
        await world.dispatcher(first, backoff=(0.8,), lease_s=LEASE_S)
        await world.dispatcher(second, refresh_s=0.05)
        await available(world)
        await requests_at_least(receiver, 2)
        await world.settled()
        await asyncio.sleep(0.3)
        assert len(receiver.requests) == 2
        assert await handed_over(world) == []


async def test_with_the_store_out_deliveries_still_go_out_from_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refusing every write of deliveries: they are delivered all the same
    (only not durable meanwhile), and what is stored once it answers again is right:
    nothing of those delivered."""
    # The failed batch is tried again well within settled's bound (review s30: a
    # comment had ``_to_write.set()`` skip the 2 s wait, which it does not).
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.05)
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(200)
        await world.webhook("op", receiver, "connector.status_changed")
        store = first.webhooks.store
        real_write = store.write
        out = True

        async def failing(changes: list[object], audit: object, *rest: object) -> None:
            if out and any(isinstance(getattr(c, "record", None), d.PendingDelivery)
                           for c in changes):
                raise StoreUnavailable("the store is out of reach", reason="out")
            await real_write(changes, audit, *rest)  # type: ignore[arg-type]
        store.write = failing  # type: ignore[method-assign,assignment]
        await world.dispatcher(first)
        await available(world)
        await available(world)
        await requests_at_least(receiver, 2)
        out = False
        await world.settled()  # the batch landed: one failing is not settled
        assert await world.store.find_all(d.PendingDelivery, ALL) == []


async def test_a_removed_webhooks_stored_deliveries_go_with_it(tmp_path: Path) -> None:
    """Removed while its deliveries wait (stored, their instance alive), the webhook's
    stored deliveries are deleted with it: no instance takes them over later."""
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(DRIP)
        webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
        await world.dispatcher(first, timeout=30.0)
        for _ in range(3):
            await available(world)
        await requests_at_least(receiver, 1)  # the first hangs, two wait

        async def stored() -> bool:
            return len(await handed_over(world)) == 3
        await until(stored)
        await first.webhooks.remove_webhook(world.viewer("op"), webhook.id)
        assert await handed_over(world) == []


async def test_an_erased_persons_removed_webhooks_stored_deliveries_go_with_it(
        tmp_path: Path) -> None:
    """Review r27: an erasure removes the person's own webhooks (of no company), and
    their stored deliveries stayed, to be claimed and dropped (or kept for good)."""
    async with two_instances(tmp_path) as (world, first, _):
        world.users["admin2"] = await first.accounts.create_user(
            SYSTEM, email="admin2@example.com", password="password-123", name="admin2",
            role=d.Role.ADMIN)
        receiver = await world.receiver(DRIP)
        await world.webhook("admin2", receiver, "connector.status_changed")
        await world.dispatcher(first, timeout=30.0)
        for _ in range(3):
            await available(world)
        await requests_at_least(receiver, 1)  # the first hangs, two wait

        async def stored() -> bool:
            return len(await handed_over(world)) == 3
        await until(stored)
        await first.erasure.erase_user(world.viewer("admin"), world.users["admin2"].id)
        assert await handed_over(world) == []


async def test_an_erasure_revokes_sockets_before_its_stored_deliveries_are_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r27-durable2: deleting the erased person's removed webhooks' stored
    deliveries ran before their open sockets were revoked (``AccessChanged``), so a
    slow store held the revocation back."""
    async with two_instances(tmp_path) as (world, first, _):
        world.users["admin2"] = await first.accounts.create_user(
            SYSTEM, email="admin2@example.com", password="password-123", name="admin2",
            role=d.Role.ADMIN)
        receiver = await world.receiver(DRIP)
        await world.webhook("admin2", receiver, "connector.status_changed")
        await world.dispatcher(first, timeout=30.0)
        await available(world)
        await requests_at_least(receiver, 1)

        async def stored() -> bool:
            return len(await handed_over(world)) == 1
        await until(stored)
        store_answers = asyncio.Event()
        real_forget = erasure.forget_deliveries

        async def slow_forget(*args: Any) -> None:
            await store_answers.wait()
            await real_forget(*args)
        monkeypatch.setattr(erasure, "forget_deliveries", slow_forget)
        access = world.bus.subscribe([AccessChanged.topic])
        erasing = asyncio.create_task(first.erasure.erase_user(
            world.viewer("admin"), world.users["admin2"].id))
        try:
            revoked = await asyncio.wait_for(anext(access), 2.0)
            assert isinstance(revoked, AccessChanged)
            assert revoked.user_id == world.users["admin2"].id
        finally:
            store_answers.set()
            await erasing
        assert await handed_over(world) == []

async def test_a_store_write_that_landed_but_failed_leaves_no_delivery_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write storing a delivery lands, but its answer is an error (a MongoDB batch
    half-written, a connection lost after the commit): once the delivery is over it is
    deleted all the same, not left in the store as this instance's, to be posted again
    by whoever takes it over after this instance stops."""
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.05)  # within settled
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(DRIP)  # no answer: its one try times out
        webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
        store = first.webhooks.store
        real_write = store.write
        failures = 1

        async def landed_then_failed(changes: list[object], audit: object,
                                     *rest: object) -> None:
            nonlocal failures
            await real_write(changes, audit, *rest)  # type: ignore[arg-type]
            if failures and any(isinstance(getattr(c, "record", None), d.PendingDelivery)
                                for c in changes):
                failures -= 1
                raise StoreUnavailable("the answer was lost", reason="lost")
        store.write = landed_then_failed  # type: ignore[method-assign,assignment]
        await world.dispatcher(first, timeout=0.5, tries=1)
        await available(world)

        async def over() -> bool:  # its one try failed: given up
            return (await world.stored(webhook)).last_error is not None
        await until(over, attempts=300)
        await world.settled()  # the batch landed: one failing is not settled
        assert failures == 0
        assert await handed_over(world) == []



async def test_settled_waits_for_a_failing_batch_to_land(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s29: a batch whose write kept failing counted as written (``persisted``), so
    ``settled`` returned while the store still held a delivered one's record, its delete
    failing. The delete fails three times, then the store answers: settled only once it
    landed. (Each retry waits longer than ``until``'s step, so a failing batch counted
    as written is seen.)"""
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.05)
    async with two_instances(tmp_path) as (world, first, _):
        receiver = HeldReceiver(200)  # answers once the delivery is stored
        world.receivers.append(await receiver.start())
        await world.webhook("op", receiver, "connector.status_changed")
        store = first.webhooks.store
        real_write = store.write
        failures = 3

        async def failing_deletes(changes: list[object], audit: object,
                                  *rest: object) -> None:
            nonlocal failures
            if failures and any(isinstance(c, Delete) and isinstance(
                    c.record, d.PendingDelivery) for c in changes):
                failures -= 1
                raise StoreUnavailable("the store is out of reach", reason="out")
            await real_write(changes, audit, *rest)  # type: ignore[arg-type]
            if any(isinstance(getattr(c, "record", None), d.PendingDelivery)
                   for c in changes):
                receiver.go.set()  # stored: answered now, its record to be deleted
        store.write = failing_deletes  # type: ignore[method-assign,assignment]
        await world.dispatcher(first)
        await available(world)

        await world.settled()

        assert failures == 0
        assert len(receiver.requests) == 1
        assert await handed_over(world) == []


class SlowReceiver(Receiver):
    """Answers after 0.1 s (an ordinary receiver on the internet)."""

    async def _handle(self, reader, writer):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.1)
        await super()._handle(reader, writer)


async def delivered_while_stored(world: World, services: Services) -> Receiver:
    """A delivery answered 200 while the batch storing it is still being written."""
    receiver = await SlowReceiver(200).start()
    world.receivers.append(receiver)
    await world.webhook("op", receiver, "connector.status_changed")
    store = services.webhooks.store
    real_write = store.write

    async def slow(changes, audit, *rest):  # type: ignore[no-untyped-def]
        if any(isinstance(getattr(c, "record", None), d.PendingDelivery) for c in changes):
            await asyncio.sleep(0.2)  # the write storing it is under way
        await real_write(changes, audit, *rest)
    store.write = slow  # type: ignore[method-assign]
    return receiver


async def test_a_delivery_delivered_while_its_record_is_written_is_deleted_after(
        tmp_path: Path) -> None:
    """Review r27: seen over once the write storing it returned, it was taken for never
    stored, and its record stayed, this instance's, for good."""
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await delivered_while_stored(world, first)
        await world.dispatcher(first)
        await available(world)
        await world.settled()
        assert len(receiver.requests) == 1
        assert await handed_over(world) == []


async def test_a_delivery_delivered_while_its_record_is_written_is_not_resent_after_a_stop(
        tmp_path: Path) -> None:
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await delivered_while_stored(world, first)
        stopping = await world.dispatcher(first)
        await available(world)
        await world.settled()
        assert len(receiver.requests) == 1
        await stopping.close()  # a rolling restart
        world.dispatchers.remove(stopping)
        await world.dispatcher(second, refresh_s=0.05)
        await asyncio.sleep(0.5)
        await world.settled()
        assert len(receiver.requests) == 1


async def test_the_ocpp_servers_stop_leaves_the_lease_to_the_webhook_delivery_sharing_it(
        tmp_path: Path) -> None:
    """Review r27: as ``create_app`` wires them, the OCPP server shares its lease with the
    instance's webhook delivery and stops first; its release orphaned every delivery the
    dispatcher still posted, and another instance took them over and posted them too."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(503, 200)
        await world.webhook("op", receiver, "connector.status_changed")
        running = await world.dispatcher(first, backoff=(0.8,), serves_chargers=True)
        server = OcppServer(first.charging, OcppGateway(), "127.0.0.1", 0,
                            instances=first.instances, instance_id=running.instance_id)
        await server.start()
        await available(world)
        await requests_at_least(receiver, 1)

        async def written() -> bool:
            return await stored_tries(world) == [1]
        await until(written)
        await world.dispatcher(second, refresh_s=0.05)
        await server.stop()  # the dispatcher's close comes later
        await asyncio.sleep(1.2)  # the retry is due meanwhile
        await world.settled()
        assert len(receiver.requests) == 2, "the retry was posted by both instances"
        await running.close()
        world.dispatchers.remove(running)
        # The last to let the lease go deletes it.
        assert await world.store.get_many(d.InstanceLease, [running.instance_id]) == [None]


async def test_nothing_is_stored_as_an_instances_own_before_its_lease_is_live(
        tmp_path: Path) -> None:
    """Review r27: the first renewal of the lease failing was only logged, and the
    deliveries stored meanwhile as this instance's (no live lease) were any instance's
    to take over and post while this one posted them too."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP)
        await world.webhook("op", receiver, "connector.status_changed")
        real_renew = first.instances.renew
        failed: list[bool] = []

        async def renew(*args: Any, **kwargs: Any) -> bool:
            if not failed:
                failed.append(True)
                raise StoreUnavailable("the database is out of reach", reason="test")
            return await real_renew(*args, **kwargs)
        first.instances.renew = renew  # type: ignore[method-assign]
        await world.dispatcher(first, timeout=30.0)
        await world.dispatcher(second, refresh_s=0.05)
        await available(world)
        await requests_at_least(receiver, 1)
        await asyncio.sleep(0.5)  # the second instance looks ten times meanwhile
        assert len(receiver.requests) == 1, "posted by both instances"
        assert [p.instance_id for p in await handed_over(world)] == [
            world.dispatchers[0].instance_id]


async def test_nothing_is_claimed_as_an_instances_own_before_its_lease_is_live(
        tmp_path: Path) -> None:
    """Review r27-durable2: the claim of handed-over deliveries wrote them as this
    instance's while its lease was not live (its first renewal failed): another instance
    found them orphaned, claimed them too, and posted them while this one posted them."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP)
        await world.webhook("op", receiver, "connector.status_changed")
        # An instance that stops while posting hands its delivery over.
        stopping = await world.dispatcher(first, timeout=30.0)
        await available(world)
        await requests_at_least(receiver, 1)
        await stopping.close()
        world.dispatchers.remove(stopping)
        [record] = await handed_over(world)
        assert record.instance_id is None

        real_renew = second.instances.renew
        failed: list[bool] = []

        async def renew(*args: Any, **kwargs: Any) -> bool:
            if not failed:  # one transient failure, at the start
                failed.append(True)
                raise StoreUnavailable("the database is out of reach", reason="test")
            return await real_renew(*args, **kwargs)
        second.instances.renew = renew  # type: ignore[method-assign]
        claimer = await world.dispatcher(second, timeout=30.0)
        await requests_at_least(receiver, 2)  # resumed, posted by the claimer
        [record] = await handed_over(world)
        assert record.instance_id == claimer.instance_id
        # Another instance running meanwhile looks for orphaned deliveries.
        await world.dispatcher(first, refresh_s=0.05, timeout=30.0)
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 2, "the resumed delivery was posted by both"


async def test_nothing_is_stored_as_an_instances_own_near_the_end_of_its_lease(
        tmp_path: Path) -> None:
    """Review r27-durable2: the lease counted live up to its very end, so a delivery
    stored in its last instant was orphaned as it landed. It counts live for two thirds
    of the lease from its last renewal: past that, with renewals failing, a new delivery
    goes out from memory and is not stored as this instance's. The lease's renewals
    are timed on a clock the test moves into the window (a sleep into it may overshoot
    on a loaded machine), the lease long in real time: the store's guard takes a write."""
    lease_s = 60.0
    clock = [0.0]  # the lease's clock (WebhookDispatcher's lease_clock)
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(DRIP)
        await world.webhook("op", receiver, "connector.status_changed")
        real_renew = first.instances.renew
        renewed: list[float] = []

        async def renew(*args: Any, **kwargs: Any) -> bool:
            if renewed:  # the first works, every later one fails
                raise StoreUnavailable("the database is out of reach", reason="test")
            renewed.append(clock[0])
            return await real_renew(*args, **kwargs)
        first.instances.renew = renew  # type: ignore[method-assign]
        dispatcher = await world.dispatcher(first, timeout=30.0, lease_s=lease_s,
                                            lease_clock=lambda: clock[0])
        # Between two thirds of the lease and its end.
        clock[0] = renewed[0] + lease_s * 5 / 6
        await available(world)
        await requests_at_least(receiver, 1)  # delivered from memory

        async def batch_tried() -> bool:  # refused for want of a live lease, or stored
            return dispatcher._persist_failing or bool(await handed_over(world))
        await until(batch_tried)
        assert await handed_over(world) == [], "stored as its own as the lease lapsed"


async def test_a_lease_renewal_failing_for_long_is_logged_once_and_its_recovery_too(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review r27-durable2: with the store out past the lease, the lease keeper and every
    retried batch logged each failed renewal with its traceback (about one a second).
    The first failure has its traceback, later ones a line at most once a minute, the
    recovery one line."""
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(DRIP)
        await world.webhook("op", receiver, "connector.status_changed")
        real_renew = first.instances.renew
        out = False

        async def renew(*args: Any, **kwargs: Any) -> bool:
            if out:
                raise StoreUnavailable("the database is out of reach", reason="test")
            return await real_renew(*args, **kwargs)
        first.instances.renew = renew  # type: ignore[method-assign]
        caplog.set_level(logging.INFO, logger="chargegraph.webhooks")
        # Renewed every 0.1 s, and its batches retried, while the store is out.
        await world.dispatcher(first, timeout=30.0, lease_s=0.3)
        out = True
        await available(world)
        await requests_at_least(receiver, 1)
        await asyncio.sleep(1.0)
        renewals = [r for r in caplog.records if "lease" in r.getMessage()
                    and "renewing" in r.getMessage()]
        assert len(renewals) == 1 and renewals[0].exc_info, [
            r.getMessage() for r in renewals]
        out = False

        async def recovered() -> bool:
            return any("works again" in r.getMessage() and "lease" in r.getMessage()
                       for r in caplog.records)
        await until(recovered)
        assert len([r for r in caplog.records if r.exc_info]) == 1


async def _lapse_and_renew_during_a_sweep(world: World, first: Services, second: Services,
                                          dispatcher: WebhookDispatcher) -> None:
    """``dispatcher``'s lease lapsed (its store out of reach past it); another instance's
    sweep reads it expired, then looks for its stations, and meanwhile the instance
    renews it (its store answers again); then the sweep goes on."""
    lease = await first.instances._lease(dispatcher.instance_id)
    assert lease is not None
    await world.store.write([patch(lease, SYSTEM,
                                   expires_at=utcnow() - timedelta(seconds=1))], [])
    dispatcher._lease_until = 0.0
    store = second.instances.store
    real_find_all = store.find_all
    reading = asyncio.Event()
    go_on = asyncio.Event()

    async def find_all(kind: Any, *args: Any, **kwargs: Any) -> Any:
        if kind is d.Station and not go_on.is_set():
            reading.set()
            await go_on.wait()
        return await real_find_all(kind, *args, **kwargs)
    store.find_all = find_all  # type: ignore[method-assign]
    try:
        sweeping = asyncio.create_task(second.instances.sweep("other-instance"))
        await reading.wait()
        assert await dispatcher._renew_lease()
        go_on.set()
        await sweeping
    finally:
        store.find_all = real_find_all  # type: ignore[method-assign]


async def test_a_sweep_leaves_a_lease_renewed_after_it_read_it_expired(
        tmp_path: Path) -> None:
    """Review r27-durable3: the sweep's deletion held on nothing, and took the lease its
    instance had just renewed and counted live."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP)
        await world.webhook("op", receiver, "connector.status_changed")
        mine = await world.dispatcher(first, timeout=30.0)
        await _lapse_and_renew_during_a_sweep(world, first, second, mine)

        assert await mine._lease_live()
        assert await first.instances._lease(mine.instance_id) is not None


async def test_a_delivery_stored_after_a_sweep_raced_a_renewal_is_posted_once(
        tmp_path: Path) -> None:
    """Review r27-durable3: with its lease deleted under it, the instance stored a
    delivery as its own under an id with no lease row, and another instance claimed and
    posted it too."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP)
        await world.webhook("op", receiver, "connector.status_changed")
        mine = await world.dispatcher(first, timeout=30.0)
        await _lapse_and_renew_during_a_sweep(world, first, second, mine)

        await world.dispatcher(second, refresh_s=0.05, timeout=30.0)  # looks every 50 ms
        await available(world)  # stored as this instance's: its lease counts live
        await requests_at_least(receiver, 1)
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 1, "posted by both instances"


async def test_a_late_renewal_never_moves_the_shared_lease_back(tmp_path: Path) -> None:
    """Review r27-durable3: the OCPP server and the webhook delivery renew one lease, and
    the dispatcher counts it live from its own last renewal. The server's renewal, its
    write held up past the dispatcher's, wrote its older expiry under it: a delivery
    stored as the dispatcher's then was claimed and posted by another instance too."""
    lease_s = 3.0
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver(DRIP)
        await world.webhook("op", receiver, "connector.status_changed")
        loop = asyncio.get_running_loop()
        mine = await world.dispatcher(first, timeout=30.0, lease_s=lease_s)
        assert mine._lease_keeper is not None
        mine._lease_keeper.cancel()  # its renewals made by hand below
        store = second.instances.store
        real_write = store.write
        held = asyncio.Event()
        go_on = asyncio.Event()

        async def write(changes: Any, *args: Any, **kwargs: Any) -> Any:
            if not go_on.is_set() and any(
                    getattr(getattr(c, "record", None), "kind", None)
                    == d.InstanceLease.kind for c in changes):
                held.set()
                await go_on.wait()
            return await real_write(changes, *args, **kwargs)
        store.write = write  # type: ignore[method-assign]
        try:
            began = loop.time()
            server = asyncio.create_task(second.instances.renew(
                mine.instance_id, "host:1", timedelta(seconds=lease_s)))
            await held.wait()
            await asyncio.sleep(lease_s / 2)
            assert await mine._renew_lease()  # the dispatcher's renewal, meanwhile
            renewed = await first.instances._lease(mine.instance_id)
            assert renewed is not None
            go_on.set()
            await server  # the server's held-up write lands
        finally:
            store.write = real_write  # type: ignore[method-assign]
        lease = await first.instances._lease(mine.instance_id)
        assert lease is not None and lease.expires_at >= renewed.expires_at

        await world.dispatcher(second, refresh_s=0.05, timeout=30.0)
        await asyncio.sleep(began + lease_s + 0.1 - loop.time())
        assert await mine._lease_live(), "still counted live by the dispatcher"
        await available(world)
        await requests_at_least(receiver, 1)
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 1, "posted by both instances"
