"""Review s29: an instance whose lease lapses while it holds stored deliveries (a claim of
many batches outliving it, a stall, the store out of reach) writes and posts nothing
another instance has taken over since. Two instances' services over one SQLite file;
their clocks moved by hand (``MovedClock``); receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chargegraph.webhooks import WebhookDispatcher
from domain import entities as d
from domain.clock import utcnow
from domain.errors import StoreUnavailable
from domain.ids import new_id
from domain.policy import SYSTEM
from domain.ports import Insert, InsertIfAbsent, Update
from domain.query import ALL
from domain.services import Services
from domain.services.base import patch
from tests.contract.test_pending_deliveries import stored_while_live
from tests.helpers import MovedClock, until
from tests.webhooks.conftest import World, two_instances
from tests.webhooks.test_delivery import available
from tests.webhooks.test_handover import handed_over, requests_at_least

#: Margin a claimer's lease must have left (a third of a 60 s lease).
MARGIN = timedelta(seconds=20)


async def lease(world: World, *, expires_in: timedelta) -> str:
    """A new instance's lease, expiring ``expires_in`` from now; its id."""
    instance_id, now = new_id(), utcnow()
    await world.store.write([Insert(d.InstanceLease(
        id=instance_id, host="h:1", started_at=now, expires_at=now + expires_in))], [])
    return instance_id


async def owners(world: World) -> dict[str, str | None]:
    return {p.delivery_id: p.instance_id
            for p in await world.store.find_all(d.PendingDelivery, ALL)}


def after_claim_writes(services: Services, then: Any) -> None:
    """Runs ``then()`` after each of ``services``' store writes that claims deliveries
    (before the next batch is read)."""
    store = services.webhooks.store
    real_write = store.write

    async def write(changes: Any, audit: Any, *rest: Any) -> None:
        await real_write(changes, audit, *rest)
        if any(isinstance(c, Update) and isinstance(c.record, d.PendingDelivery)
               for c in changes):
            await then()
    store.write = write  # type: ignore[method-assign,assignment]


async def test_a_claim_of_many_batches_stops_once_its_lease_is_near_its_end(
        tmp_path: Path) -> None:
    """A claim one delivery to a write: after its first write, the clocks pass the end
    of the claimer's lease. What it goes on to take would be orphaned as it lands (and
    another instance would claim and post it too): the claim stops there, the rest left
    to whoever claims next."""
    async with two_instances(tmp_path) as (world, first, second):
        crashed = await lease(world, expires_in=-timedelta(seconds=1))
        claimer = await lease(world, expires_in=timedelta(seconds=60))
        await stored_while_live(world.store, [pending(n, crashed) for n in range(3)])
        clocks = [MovedClock(first.ctx), MovedClock(second.ctx)]

        async def lease_ends() -> None:
            for clock in clocks:
                clock.by(timedelta(seconds=70))
        after_claim_writes(first, lease_ends)

        claimed = await first.webhooks.claim_handed_over(batch=1, instance_id=claimer,
                                                         margin=MARGIN)

        assert [p.delivery_id for p in claimed or []] == ["dlv_0"]
        assert await owners(world) == {"dlv_0": claimer, "dlv_1": crashed,
                                       "dlv_2": crashed}


async def test_a_claim_leaves_an_instance_that_renewed_its_lease_after_the_read(
        tmp_path: Path) -> None:
    """An instance's lease read expired (a stall), then renewed before the claim's write
    lands: its deliveries are its own again, posted by it, and stay so."""
    async with two_instances(tmp_path) as (world, first, second):
        stalled = await lease(world, expires_in=-timedelta(seconds=1))
        claimer = await lease(world, expires_in=timedelta(seconds=60))
        await stored_while_live(world.store, [pending(n, stalled) for n in range(2)])
        store = second.webhooks.store
        real_write = store.write

        async def write(changes: Any, audit: Any, *rest: Any) -> None:
            if any(isinstance(c, Update) and isinstance(c.record, d.PendingDelivery)
                   for c in changes):
                # The stall ends: the instance renews its lease as the claim writes.
                await first.instances.renew(stalled, "h:1", timedelta(seconds=60))
            await real_write(changes, audit, *rest)
        store.write = write  # type: ignore[method-assign,assignment]

        claimed = await second.webhooks.claim_handed_over(instance_id=claimer,
                                                          margin=MARGIN)

        assert claimed == []
        assert await owners(world) == {"dlv_0": stalled, "dlv_1": stalled}


async def test_an_instance_whose_lease_lapsed_leaves_what_another_took_over(
        tmp_path: Path) -> None:
    """The first try fails (503) and the retry is held just before it is posted; the
    instance's lease lapses meanwhile (a stall: no renewal, the store says expired), and
    another instance takes the delivery over and posts the retry (200). The first one,
    going on, renews its lease, finds the delivery no longer its own, and posts
    nothing: the receiver gets two requests, not three."""
    async with two_instances(tmp_path) as (world, first, second):
        lapsing, receiver, held, go = await lapsing_with_a_held_retry(world, first)
        await available(world)
        await asyncio.wait_for(held.wait(), 10)

        async def first_try_written() -> bool:
            return [p.tries_made for p in await handed_over(world)] == [1]
        await until(first_try_written)
        own = await first.instances._lease(lapsing.instance_id)
        assert own is not None
        await world.store.write([patch(own, SYSTEM,
                                       expires_at=utcnow() - timedelta(seconds=1))], [])
        lapsing._lease_until = 0.0
        await world.dispatcher(second, timeout=30.0)  # takes it over as it starts
        await requests_at_least(receiver, 2)

        go.set()
        await world.settled()

        assert len(receiver.requests) == 2, "posted again by the instance whose lease lapsed"
        assert len({r.headers["x-chargegraph-delivery"] for r in receiver.requests}) == 1


async def lapsing_with_a_held_retry(world: World, first: Services
                                    ) -> tuple[WebhookDispatcher, Any, asyncio.Event,
                                               asyncio.Event]:
    """The first services' dispatcher, its lease keeper stopped (a stall: no renewal but
    those the test makes), a webhook whose receiver fails the first try (503); the
    retry held just before it is posted until ``go`` is set (``held`` once it is).
    Returns ``(dispatcher, receiver, held, go)``."""
    receiver = await world.receiver(503, 200)
    await world.webhook("op", receiver, "connector.status_changed")
    lapsing = await world.dispatcher(first, timeout=30.0, refresh_s=600.0)
    assert lapsing._lease_keeper is not None
    lapsing._lease_keeper.cancel()
    real_deliverable = first.webhooks.deliverable
    tries, held, go = 0, asyncio.Event(), asyncio.Event()

    async def deliverable(webhook_id: str, event: Any) -> Any:
        nonlocal tries
        tries += 1
        if tries == 2:  # the retry, held
            held.set()
            await go.wait()
        return await real_deliverable(webhook_id, event)
    first.webhooks.deliverable = deliverable  # type: ignore[method-assign]
    return lapsing, receiver, held, go


def around_storing(services: Services, around: Any) -> None:
    """``services``' first store write storing a new delivery goes through
    ``around(write)``, ``write()`` making it; every other write as it is."""
    store = services.webhooks.store
    real_write = store.write
    hooked = False

    async def write(changes: Any, audit: Any, *rest: Any) -> None:
        nonlocal hooked
        if hooked or not any(isinstance(c, InsertIfAbsent)
                             and isinstance(c.record, d.PendingDelivery) for c in changes):
            return await real_write(changes, audit, *rest)
        hooked = True
        return await around(lambda: real_write(changes, audit, *rest))
    store.write = write  # type: ignore[method-assign,assignment]


async def lease_ended(world: World, instance_id: str,
                      ends_in: timedelta = -timedelta(seconds=1)) -> None:
    """``instance_id``'s lease in the store made to end ``ends_in`` from now (by default,
    a second ago)."""
    own = await world.services.instances._lease(instance_id)
    assert own is not None
    await world.store.write([patch(own, SYSTEM, expires_at=utcnow() + ends_in)], [])


async def test_a_delivery_whose_store_write_lands_after_the_lease_ended_is_kept_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s29: the write storing a new delivery is slow; the instance's lease ends
    (a stall) before it lands. Landed, it would be a dead instance's, which another
    instance starting then claims (and posts). The write is refused instead: nothing
    lands, the other instance takes nothing, and the delivery stays the first one's,
    posted by it from memory (503 then 200, one delivery id), stored once its lease is
    renewed."""
    # Its next batch (renewing the lease first) follows the refused one at once.
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.01)
    async with two_instances(tmp_path) as (world, first, second):
        lapsing, receiver, held, go = await lapsing_with_a_held_retry(world, first)
        taken: dict[str, str | None] = {}

        async def lands_late(write: Any) -> None:
            await asyncio.wait_for(held.wait(), 10)  # the first try was made (503)
            await lease_ended(world, lapsing.instance_id)
            lapsing._lease_until = 0.0  # the stall outlasted its trust too
            try:
                await write()
            finally:
                claimer = await world.dispatcher(second, timeout=30.0)  # claims at start
                taken.update({k: v for k, v in (await owners(world)).items()
                              if v == claimer.instance_id})
                go.set()
        around_storing(first, lands_late)
        await available(world)
        await asyncio.wait_for(go.wait(), 10)
        await world.settled()

        assert taken == {}, "landed as the dead instance's and claimed by another"
        assert len(receiver.requests) == 2
        assert await owners(world) == {}  # stored once renewed, deleted once delivered
        assert len({r.headers["x-chargegraph-delivery"] for r in receiver.requests}) == 1


async def test_an_instance_reads_again_a_delivery_taken_over_before_its_write_answered(
        tmp_path: Path) -> None:
    """Review s29: the write storing a new delivery lands while the lease lives, but its
    answer is slow: meanwhile the lease lapses, another instance takes the delivery over
    and posts it (200), and the first renews its lease (a lapse) before the answer comes.
    The first, going on with its retry, reads it again and leaves it: two requests, not
    three."""
    async with two_instances(tmp_path) as (world, first, second):
        lapsing, receiver, held, go = await lapsing_with_a_held_retry(world, first)

        async def answers_late(write: Any) -> None:
            await write()
            await asyncio.wait_for(held.wait(), 10)
            await lease_ended(world, lapsing.instance_id)
            await world.dispatcher(second, timeout=30.0)  # takes it over as it starts
            await requests_at_least(receiver, 2)
            assert await lapsing._renew_lease()
            go.set()
        around_storing(first, answers_late)
        await available(world)
        await asyncio.wait_for(go.wait(), 10)
        await world.settled()

        assert len(receiver.requests) == 2, "posted again by the instance whose lease lapsed"
        assert len({r.headers["x-chargegraph-delivery"] for r in receiver.requests}) == 1


async def test_an_instance_leaves_a_delivery_finished_by_another_before_its_write_answered(
        tmp_path: Path) -> None:
    """Review s29-hooks3: as above, but the other instance has delivered it and deleted
    its record when the first, its write's answer still to come, reads it again: gone,
    and only maybe stored by the first (it cannot tell whether its write landed). The
    first waits for the answer, which says stored, so gone means finished by another:
    left, two requests, not three."""
    async with two_instances(tmp_path) as (world, first, second):
        lapsing, receiver, held, go = await lapsing_with_a_held_retry(world, first)
        landed, answer = asyncio.Event(), asyncio.Event()

        async def answers_late(write: Any) -> None:
            await write()
            landed.set()
            await answer.wait()
        around_storing(first, answers_late)
        real_stored_delivery = first.webhooks.stored_delivery

        async def stored_delivery(record_id: str) -> d.PendingDelivery | None:
            record = await real_stored_delivery(record_id)
            answer.set()  # the answer comes once the first has read it again
            return record
        first.webhooks.stored_delivery = stored_delivery  # type: ignore[method-assign]
        await available(world)
        await asyncio.wait_for(asyncio.gather(held.wait(), landed.wait()), 10)
        await lease_ended(world, lapsing.instance_id)
        await world.dispatcher(second, timeout=30.0)  # takes it over as it starts

        async def finished_by_the_other() -> bool:
            return len(receiver.requests) == 2 and await owners(world) == {}
        await until(finished_by_the_other)
        assert await lapsing._renew_lease()
        go.set()
        await asyncio.wait_for(answer.wait(), 10)
        await world.settled()

        assert len(receiver.requests) == 2, "posted again by the instance whose lease lapsed"
        assert len({r.headers["x-chargegraph-delivery"] for r in receiver.requests}) == 1


async def test_a_delivery_whose_write_under_way_never_lands_is_posted_though_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s29-hooks3, what the test above must not cost: the same lapse, but the
    write storing the delivery, under way when it is read again (gone), is refused (the
    lease ended again before it). Never stored, nobody else has it: it is still posted
    (503 then 200, one delivery id), and stored once the lease is renewed, then deleted."""
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.01)
    async with two_instances(tmp_path) as (world, first, _second):
        lapsing, receiver, held, go = await lapsing_with_a_held_retry(world, first)
        read = asyncio.Event()

        async def refused_late(write: Any) -> None:
            await asyncio.wait_for(held.wait(), 10)  # the first try was made (503)
            await lease_ended(world, lapsing.instance_id)
            assert await lapsing._renew_lease()  # a lapse: read again before the retry
            await lease_ended(world, lapsing.instance_id)
            go.set()
            await asyncio.wait_for(read.wait(), 10)
            await write()
        around_storing(first, refused_late)
        real_stored_delivery = first.webhooks.stored_delivery

        async def stored_delivery(record_id: str) -> d.PendingDelivery | None:
            record = await real_stored_delivery(record_id)
            read.set()
            return record
        first.webhooks.stored_delivery = stored_delivery  # type: ignore[method-assign]
        await available(world)
        await asyncio.wait_for(go.wait(), 10)
        await requests_at_least(receiver, 2)
        await world.settled()

        assert len(receiver.requests) == 2
        assert len({r.headers["x-chargegraph-delivery"] for r in receiver.requests}) == 1
        assert await owners(world) == {}


async def test_what_is_queued_behind_a_delivery_waiting_for_the_lease_waits_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s29-hooks3: a webhook's deliveries go in order (README), so one never
    stored (the lease not live, nothing is), queued behind a stored one whose retry
    waits for the lease (renewals failing: the store out of reach), waits with it; once
    the lease is renewed, both go, in order."""
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.01)
    async with two_instances(tmp_path) as (world, first, _second):
        lapsing, receiver, held, go = await lapsing_with_a_held_retry(world, first)
        await available(world)  # Available: 503, its retry held
        await asyncio.wait_for(held.wait(), 10)

        async def first_try_written() -> bool:
            return [p.tries_made for p in await handed_over(world)] == [1]
        await until(first_try_written)
        real_renew, renewals = first.instances.renew, 0

        async def renew(*args: Any, **kwargs: Any) -> bool:
            nonlocal renewals
            renewals += 1
            raise StoreUnavailable("out of reach", reason="test")
        first.instances.renew = renew  # type: ignore[method-assign]
        lapsing._lease_until = 0.0
        await available(world)  # Preparing: behind it, not stored
        go.set()

        async def waited() -> bool:  # each loop (batch, retry) renews every 10 ms
            return renewals >= 20
        await until(waited)
        [channel] = lapsing._channels.values()
        assert channel.current is not None and channel.current.tries_made == 1
        assert [q.stored for q in channel.queue] == [False]
        assert len(receiver.requests) == 1
        first.instances.renew = real_renew  # type: ignore[method-assign]
        await requests_at_least(receiver, 3)
        await world.settled()

        ids = [r.headers["x-chargegraph-delivery"] for r in receiver.requests]
        assert ids[0] == ids[1] != ids[2]
        assert [r.json["data"]["status"] for r in receiver.requests] == [
            "Available", "Available", "Preparing"]
        assert await owners(world) == {}  # settled: the batch deleting them landed


async def test_a_look_stops_at_a_claim_refused_for_the_lookers_own_lease(
        tmp_path: Path) -> None:
    """Review s29-hooks3: the store's lease of an instance ends within the claim's margin
    while the instance still trusts it by its last renewal (its wall clock stepped ahead
    of its monotonic one; its row swept). A claim then takes nothing, and the look stops
    there: one claim, not one after another, each locking, reading and writing, until the
    trust ran out. The next look renews the lease first, and takes them."""
    async with two_instances(tmp_path) as (world, first, _second):
        looking = await world.dispatcher(first, refresh_s=600.0)
        assert looking._lease_keeper is not None
        looking._lease_keeper.cancel()  # no renewal but those the looks make
        crashed = await lease(world, expires_in=-timedelta(seconds=1))
        await stored_while_live(world.store, [pending(n, crashed) for n in range(2)])
        await lease_ended(world, looking.instance_id, ends_in=timedelta(seconds=1))
        real_claim = first.webhooks.claim_handed_over
        #: Each claim's outcome: the deliveries it took, None, or what it raised.
        claims: list[list[str] | str | None] = []

        async def claim(*args: Any, **kwargs: Any) -> list[d.PendingDelivery] | None:
            if len(claims) == 3:  # bounds the loop that looked again with nothing changed
                raise AssertionError("claimed again at once, its lease as short as before")
            try:
                taken = await real_claim(*args, **kwargs)
            except Exception as refused:
                claims.append(type(refused).__name__)
                raise
            claims.append(None if taken is None else [p.delivery_id for p in taken])
            return taken
        first.webhooks.claim_handed_over = claim  # type: ignore[method-assign]

        await looking.resume_handed_over()

        assert claims == ["LeaseTooShort"]
        assert await owners(world) == {"dlv_0": crashed, "dlv_1": crashed}
        await looking.resume_handed_over()
        assert claims == ["LeaseTooShort", ["dlv_0", "dlv_1"], None]
        renewed = await first.instances._lease(looking.instance_id)
        assert renewed is not None and renewed.expires_at > utcnow() + MARGIN


def pending(number: int, instance_id: str, webhook_id: str = "0" * 24
            ) -> d.PendingDelivery:
    now = utcnow()
    return d.PendingDelivery(webhook_id=webhook_id, delivery_id=f"dlv_{number}",
                             event_type="payment.captured", body="{}", event="{}",
                             tries_made=1, due_at=now,
                             queued_at=now + timedelta(seconds=number),
                             instance_id=instance_id)


async def test_a_lease_refusing_batch_after_batch_is_said_once_and_its_end_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Review s30: while the store's lease ends sooner than the instance trusts it (each
    renewal's row cut short here: its wall clock ahead, a sweep), every batch storing a
    new delivery is refused by the lease guard and tried again every
    ``PERSIST_RETRY_S``; the warning came with each. Said once while it lasts, and once
    when a batch is stored again."""
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.01)
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(500)  # its retry a minute away: still to store
        await world.webhook("op", receiver, "connector.status_changed")
        real_renew = first.instances.renew
        renewals, cut = 0, True

        async def renew(instance_id: str, *args: Any, **kwargs: Any) -> bool:
            nonlocal renewals
            lapsed = await real_renew(instance_id, *args, **kwargs)
            if cut:
                renewals += 1
                await lease_ended(world, instance_id, timedelta(seconds=1))
            return lapsed
        first.instances.renew = renew  # type: ignore[method-assign]
        caplog.set_level(logging.INFO, logger="chargegraph.webhooks")
        dispatcher = await world.dispatcher(first, backoff=(60.0,), timeout=30.0)
        await available(world)
        await requests_at_least(receiver, 1)

        async def refused_again() -> bool:  # each retried batch renews first
            return renewals >= 5
        await until(refused_again)
        said = [r for r in caplog.records if "lease ended before" in r.getMessage()]
        assert len(said) == 1
        cut = False

        async def stored() -> bool:
            return list((await owners(world)).values()) == [dispatcher.instance_id]
        await until(stored)
        assert [r for r in caplog.records if "lease lasts again" in r.getMessage()]
        assert len([r for r in caplog.records
                    if "lease ended before" in r.getMessage()]) == 1


async def test_a_refusal_after_the_refused_deliveries_ended_is_said_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Review s30: the refusal's warning was said again only after a batch stored new
    deliveries. A refused delivery that ends before any batch stores it (given up,
    delivered) leaves nothing to store: the next batch, which the guard takes, stores
    none, and the next episode of refusals was not said at all. Each is said once."""
    monkeypatch.setattr("chargegraph.webhooks.PERSIST_RETRY_S", 0.01)
    async with two_instances(tmp_path) as (world, first, _):
        receiver = await world.receiver(503)
        await world.webhook("op", receiver, "connector.status_changed")
        real_renew = first.instances.renew

        async def renew(instance_id: str, *args: Any, **kwargs: Any) -> bool:
            lapsed = await real_renew(instance_id, *args, **kwargs)
            await lease_ended(world, instance_id, timedelta(seconds=1))  # each cut short
            return lapsed
        first.instances.renew = renew  # type: ignore[method-assign]
        real_keep, refusals = first.webhooks.keep_deliveries, 0

        async def keep(*args: Any, **kwargs: Any) -> Any:
            nonlocal refusals
            refused = await real_keep(*args, **kwargs)
            refusals += bool(refused)
            return refused
        first.webhooks.keep_deliveries = keep  # type: ignore[method-assign]
        real_deliverable, post = first.webhooks.deliverable, asyncio.Event()

        async def deliverable(webhook_id: str, event: Any) -> Any:
            await asyncio.wait_for(post.wait(), 10)  # posted once its store was refused
            return await real_deliverable(webhook_id, event)
        first.webhooks.deliverable = deliverable  # type: ignore[method-assign]
        caplog.set_level(logging.INFO, logger="chargegraph.webhooks")
        dispatcher = await world.dispatcher(first, tries=1, timeout=30.0)

        def refused_again(at_least: int) -> Callable[[], Awaitable[bool]]:
            async def refused() -> bool:
                return refusals >= at_least
            return refused

        def warned() -> int:
            return len([r for r in caplog.records
                        if "lease ended before" in r.getMessage()])
        for episode in (1, 2):
            await available(world)
            await until(refused_again(refusals + 1))
            assert warned() == episode
            post.set()  # its one try fails: given up, never stored
            await requests_at_least(receiver, episode)
            post.clear()
            await world.settled()  # a batch taken by the guard, with nothing to store
        assert await owners(world) == {}
        assert dispatcher.idle
