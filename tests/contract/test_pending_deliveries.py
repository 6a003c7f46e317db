"""Webhook deliveries stored (``PendingDelivery``), in both stores: kept byte for byte,
claimed oldest webhook first with all of that webhook's in order, and claimed once: the
guarded write fails for whoever comes second, also when two claim at the same moment.
Stored when queued, as their instance's: taken over only once that instance's lease has
expired (a crash), never while it lives, and written (tries, deletion) only by the
instance that has them."""

from __future__ import annotations

import asyncio
from dataclasses import replace as dataclasses_replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.entities import DeliveryClaim, InstanceLease, PendingDelivery
from domain.errors import Conflict
from domain.policy import SYSTEM, Policy
from domain.ports import Delete, Insert, Store, Update
from domain.query import ALL, Eq
from domain.services import ServiceContext
from domain.services.base import stamp_new
from domain.services.webhooks import CLAIM_STALE, LeaseTooShort, WebhookService
from tests.contract.factories import oid
from tests.helpers import FastHasher, MovedClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: A body as a receiver must get it again: the signature is over these bytes.
BODY = '{"id":"evt_1","type":"payment.captured","data":{"note":"Zahlung \u00e9 \u2713"}}'


def service(store: Store) -> WebhookService:
    return WebhookService(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))


def pending(webhook: int, number: int, *, tries: int = 0,
            instance: str | None = None) -> PendingDelivery:
    return PendingDelivery(webhook_id=oid(webhook), delivery_id=f"dlv_{webhook}_{number}",
                           event_type="payment.captured", body=BODY, event="{}",
                           tries_made=tries, due_at=T0 + timedelta(seconds=30),
                           queued_at=T0 + timedelta(seconds=number), instance_id=instance)


async def test_handed_over_deliveries_are_claimed_a_webhook_at_a_time_in_order(
        store: Store) -> None:
    webhooks = service(store)
    # Handed over by two instances, their deliveries of two webhooks interleaved in time.
    await webhooks.hand_over([pending(1, 2), pending(2, 1, tries=2), pending(1, 4)])
    await webhooks.hand_over([pending(2, 3), pending(1, 0)])

    first = await webhooks.claim_handed_over()
    assert first is not None
    assert [p.delivery_id for p in first] == ["dlv_1_0", "dlv_1_2", "dlv_1_4"]
    second = await webhooks.claim_handed_over()
    assert second is not None
    assert [(p.delivery_id, p.tries_made) for p in second] == [("dlv_2_1", 2),
                                                               ("dlv_2_3", 0)]
    assert second[0].body == BODY and second[0].due_at == T0 + timedelta(seconds=30)
    assert await webhooks.claim_handed_over() is None
    assert await store.find_all(PendingDelivery, ALL) == []


async def test_a_claim_is_a_guarded_delete_only_one_instance_wins(store: Store) -> None:
    delivery = pending(1, 0)
    await service(store).hand_over([delivery])
    claim = Delete(delivery, only_if=("delivery_id", delivery.delivery_id))
    await store.write([claim], [])
    with pytest.raises(Conflict):
        await store.write([claim], [])


async def test_a_batch_claim_another_instance_took_part_of_takes_nothing(
        store: Store) -> None:
    """All of a webhook's or none: the write fails as a whole, nothing half-claimed."""
    webhooks = service(store)
    deliveries = [pending(1, n) for n in range(3)]
    await webhooks.hand_over(deliveries)
    taken = deliveries[1]
    await store.write([Delete(taken, only_if=("delivery_id", taken.delivery_id))], [])
    with pytest.raises(Conflict):
        await store.write([Delete(d, only_if=("delivery_id", d.delivery_id))
                           for d in deliveries], [])
    assert len(await store.find_all(PendingDelivery, ALL)) == 2


@pytest.mark.parametrize("claimers", [2, 4])
async def test_instances_claiming_at_once_get_each_delivery_once(
        store: Store, claimers: int) -> None:
    await service(store).hand_over([pending(w, n) for w in range(1, 6) for n in range(20)])

    async def claim_all(webhooks: WebhookService) -> list[str]:
        mine: list[str] = []
        while (claimed := await webhooks.claim_handed_over()) is not None:
            mine += [p.delivery_id for p in claimed]
            await asyncio.sleep(0)
        return mine

    claimed = await asyncio.gather(*(claim_all(service(store)) for _ in range(claimers)))
    every = [delivery_id for mine in claimed for delivery_id in mine]
    assert len(every) == 100 == len(set(every))
    # Each webhook's went to one claimer, whole and in order.
    for w in range(1, 6):
        holders = [mine for mine in claimed if f"dlv_{w}_0" in mine]
        assert len(holders) == 1
        assert [d for d in holders[0] if d.startswith(f"dlv_{w}_")] == [
            f"dlv_{w}_{n}" for n in range(20)]


class _WritesTogether:
    """A store whose first ``count`` writes wait until all are under way: every claimer
    has read the deliveries before any takes them, the race a claim must survive."""

    def __init__(self, store: Store, count: int) -> None:
        self._store = store
        self._barrier = asyncio.Barrier(count)
        self._waiting = count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write(self, *args: Any, **kwargs: Any) -> None:
        if self._waiting:
            self._waiting -= 1
            await self._barrier.wait()
        await self._store.write(*args, **kwargs)


async def test_instances_that_read_the_same_deliveries_claim_them_once(
        store: Store) -> None:
    await service(store).hand_over([pending(1, n) for n in range(3)])
    racing = _WritesTogether(store, 2)
    claims = await asyncio.gather(*(service(racing).claim_handed_over()  # type: ignore[arg-type]
                                    for _ in range(2)))
    won = sorted(claims, key=lambda c: len(c or []))
    assert won[0] == [] and [p.delivery_id for p in won[1] or []] == [
        "dlv_1_0", "dlv_1_1", "dlv_1_2"]
    assert await service(store).claim_handed_over() is None


async def test_more_deliveries_of_a_webhook_than_one_write_takes_are_claimed_together(
        store: Store) -> None:
    """A stop hands over up to a full queue and the try under way (1,001): one claim
    takes every one of the webhook's, in order, however many writes it needs."""
    webhooks = service(store)
    await webhooks.hand_over([pending(1, n) for n in range(7)] + [pending(2, 99)])
    claimed = await webhooks.claim_handed_over(batch=3)
    assert [p.delivery_id for p in claimed or []] == [f"dlv_1_{n}" for n in range(7)]
    assert [p.webhook_id for p in await store.find_all(PendingDelivery, ALL)] == [oid(2)]


async def test_a_webhook_another_instance_is_claiming_is_left_to_it(store: Store) -> None:
    """While one instance takes a webhook's (its lock held), another takes none of
    them, but goes on to the next webhook's."""
    webhooks = service(store)
    await webhooks.hand_over([pending(1, n) for n in range(3)] + [pending(2, 5)])
    lock = DeliveryClaim(id=oid(1), claimant="another", claimed_at=T0)
    webhooks.ctx.clock = lambda: T0 + timedelta(seconds=1)
    await store.write([Insert(lock)], [])
    second = await webhooks.claim_handed_over()
    assert [p.delivery_id for p in second or []] == ["dlv_2_5"]
    assert await webhooks.claim_handed_over() is None
    assert len(await store.find_all(PendingDelivery, ALL)) == 3
    # The other instance died claiming: its lock lapses, and the webhook's are taken.
    webhooks.ctx.clock = lambda: T0 + CLAIM_STALE + timedelta(seconds=1)
    third = await webhooks.claim_handed_over()
    assert [p.delivery_id for p in third or []] == ["dlv_1_0", "dlv_1_1", "dlv_1_2"]
    assert await store.find_all(DeliveryClaim, ALL) == []


async def test_mongo_a_claim_half_written_leaves_the_webhook_to_its_claimer(
        monkeypatch: Any) -> None:
    """MongoDB writes a claim's deletes one by one (a journaled batch, no transaction):
    another instance looking between them must not take the webhook's later ones
    first, which would post them before the earlier ones (review of the handover)."""
    from store.mongo import writes
    from tests.support.mongo_backend import open_mongo_store

    async with open_mongo_store() as store:
        await service(store).hand_over([pending(1, n) for n in range(3)])
        real_delete = writes.delete
        first_deleted, b_done = asyncio.Event(), asyncio.Event()

        async def pausing(db: Any, change: Any, *rest: Any) -> None:
            await real_delete(db, change, *rest)
            if isinstance(change.record, PendingDelivery) and not first_deleted.is_set():
                first_deleted.set()  # A's first delete: B looks now
                await asyncio.wait_for(b_done.wait(), 5)
        monkeypatch.setattr(writes, "delete", pausing)

        async def b() -> list[PendingDelivery] | None:
            await first_deleted.wait()
            try:
                return await service(store).claim_handed_over()
            finally:
                b_done.set()

        a_claim, b_claim = await asyncio.gather(service(store).claim_handed_over(), b())
        monkeypatch.setattr(writes, "delete", real_delete)
        later = await service(store).claim_handed_over()
        claims = [[p.delivery_id for p in c] for c in (a_claim, b_claim, later) if c]
        left = await store.find_all(PendingDelivery, ALL)
    assert claims == [["dlv_1_0", "dlv_1_1", "dlv_1_2"]] and left == [], claims


#: Instances (ids as the stores keep them).
ALIVE, CRASHED, SWEPT, ME, OTHER, B, C = (oid(n) for n in range(101, 108))


async def lease(store: Store, instance: str, *, expires_in: timedelta) -> None:
    now = datetime.now(UTC)
    await store.write([Insert(InstanceLease(id=instance, host="h:1", started_at=now,
                                            expires_at=now + expires_in))], [])


async def stored_while_live(store: Store, deliveries: list[PendingDelivery]) -> None:
    """``deliveries`` as their instance stored them while its lease lived (it lapsed, or
    was swept, since: ``keep_deliveries`` stores none as an instance's without it)."""
    await store.write([Insert(stamp_new(d, SYSTEM, T0)) for d in deliveries], [])


async def test_a_crashed_instances_deliveries_are_taken_over_a_live_ones_never(
        store: Store) -> None:
    """Stored when queued, each as its instance's: another instance takes over those
    whose instance's lease has expired (it crashed) or is gone (swept), and those handed
    over (none), as its own (they stay stored, now its, until delivered); never those
    of an instance whose lease is live, nor its own, of the same webhook or not."""
    webhooks = service(store)
    await lease(store, ALIVE, expires_in=timedelta(minutes=1))
    await lease(store, ME, expires_in=timedelta(minutes=1))
    await lease(store, CRASHED, expires_in=-timedelta(seconds=1))
    await webhooks.keep_deliveries(ALIVE, new=[pending(1, 0, instance=ALIVE),
                                                 pending(2, 9, instance=ALIVE)])
    await stored_while_live(store, [pending(1, 1, instance=CRASHED, tries=2),
                                    pending(1, 2, instance=SWEPT)])
    await webhooks.hand_over([pending(1, 3)])
    await webhooks.keep_deliveries(ME, new=[pending(1, 4, instance=ME)])

    claimed = await webhooks.claim_handed_over(instance_id=ME)
    assert [(p.delivery_id, p.tries_made, p.instance_id) for p in claimed or []] == [
        ("dlv_1_1", 2, ME), ("dlv_1_2", 0, ME), ("dlv_1_3", 0, ME)]
    assert await webhooks.claim_handed_over(instance_id=ME) is None
    assert await webhooks.claim_handed_over(instance_id=OTHER) is None  # ME lives
    held = {p.delivery_id: p.instance_id for p in await store.find_all(PendingDelivery, ALL)}
    assert held == {"dlv_1_0": ALIVE, "dlv_2_9": ALIVE, "dlv_1_1": ME,
                    "dlv_1_2": ME, "dlv_1_3": ME, "dlv_1_4": ME}
    assert claimed is not None and claimed[0].body == BODY


async def test_a_takeover_is_claimed_once_by_instances_racing(store: Store) -> None:
    """Two surviving instances (their leases live) take a crashed one's over at the same
    moment: one of them gets them all, in order, once."""
    await lease(store, CRASHED, expires_in=-timedelta(seconds=1))
    for survivor in (B, C):
        await lease(store, survivor, expires_in=timedelta(minutes=1))
    await stored_while_live(store, [pending(1, n, instance=CRASHED) for n in range(3)])
    racing = _WritesTogether(store, 2)
    claims = await asyncio.gather(*(
        service(racing).claim_handed_over(instance_id=name)  # type: ignore[arg-type]
        for name in (B, C)))
    won = sorted(claims, key=lambda c: len(c or []))
    assert won[0] == [] and [p.delivery_id for p in won[1] or []] == [
        "dlv_1_0", "dlv_1_1", "dlv_1_2"]
    owners = {p.instance_id for p in await store.find_all(PendingDelivery, ALL)}
    assert len(owners) == 1 and owners < {B, C}


async def test_progress_and_deletion_are_written_only_by_the_instance_holding_them(
        store: Store) -> None:
    """One write for all: new ones stored, tries written, finished ones deleted; a
    delivery another instance took over meanwhile (this one's lease had lapsed) or
    deleted (its webhook removed) is skipped, the rest written."""
    webhooks = service(store)
    await lease(store, ME, expires_in=timedelta(minutes=1))
    kept = [pending(1, n, instance=ME) for n in range(4)]
    await webhooks.keep_deliveries(ME, new=kept[:3])
    # Taken over by another instance meanwhile, and one deleted.
    await store.write([Delete(kept[2])], [])
    taken = dataclasses_replace(kept[1], instance_id=OTHER)
    await store.write([Update(taken, frozenset({"instance_id"}))], [])

    progressed = dataclasses_replace(kept[0], tries_made=3, due_at=T0 + timedelta(hours=1))
    await webhooks.keep_deliveries(
        ME, new=[kept[3]], progressed=[progressed, dataclasses_replace(kept[1], tries_made=4)],
        over=[kept[2]])
    stored = {p.delivery_id: (p.tries_made, p.instance_id, p.due_at)
              for p in await store.find_all(PendingDelivery, ALL)}
    assert stored == {"dlv_1_0": (3, ME, T0 + timedelta(hours=1)),
                      "dlv_1_1": (0, OTHER, T0 + timedelta(seconds=30)),
                      "dlv_1_3": (0, ME, T0 + timedelta(seconds=30))}
    # Handed over at a graceful stop: no instance's; finished: deleted.
    await webhooks.keep_deliveries(ME, progressed=[dataclasses_replace(
        kept[0], instance_id=None)], over=[kept[3], kept[1]])
    left = {p.delivery_id: p.instance_id for p in await store.find_all(PendingDelivery, ALL)}
    assert left == {"dlv_1_0": None, "dlv_1_1": OTHER}
    # Stored again (a write retried after a failure that had landed): no error, no twin.
    await webhooks.keep_deliveries(ME, new=[kept[3], kept[3]])
    assert await store.count(PendingDelivery, Eq("delivery_id", "dlv_1_3")) == 1


async def test_a_removed_webhooks_stored_deliveries_are_forgotten(store: Store) -> None:
    webhooks = service(store)
    await lease(store, ME, expires_in=timedelta(minutes=1))
    await webhooks.keep_deliveries(ME, new=[pending(1, n, instance=ME) for n in range(5)]
                                   + [pending(2, 0, instance=ME)])
    await webhooks.hand_over([pending(1, 7)])
    await webhooks.forget_deliveries(oid(1))
    assert [p.delivery_id for p in await store.find_all(PendingDelivery, ALL)] == ["dlv_2_0"]


async def test_a_claim_takes_nothing_as_an_instance_whose_lease_ends_within_its_margin(
        store: Store) -> None:
    """Review s29: what a claim writes as its instance's must outlast the write by the
    margin asked for (else it is orphaned as it lands, for another instance to claim and
    post too); within it, nothing is taken, and the claim says its lease is why
    (review s29-hooks3: told from "none taken, look again", its caller looked again at
    once and failed alike, a busy loop), as it does with no lease row at all."""
    webhooks = service(store)
    await lease(store, CRASHED, expires_in=-timedelta(seconds=1))
    await lease(store, ME, expires_in=timedelta(seconds=10))
    await stored_while_live(store, [pending(1, n, instance=CRASHED) for n in range(2)])
    with pytest.raises(LeaseTooShort):
        await webhooks.claim_handed_over(instance_id=ME, margin=timedelta(seconds=30))
    with pytest.raises(LeaseTooShort):
        await webhooks.claim_handed_over(instance_id=OTHER)  # no lease row
    assert {p.instance_id for p in await store.find_all(PendingDelivery, ALL)} == {CRASHED}
    assert await store.count(DeliveryClaim, ALL) == 0  # the lock given back
    claimed = await webhooks.claim_handed_over(instance_id=ME, margin=timedelta(seconds=5))
    assert [p.delivery_id for p in claimed or []] == ["dlv_1_0", "dlv_1_1"]


async def test_an_instance_stores_no_new_delivery_as_its_own_past_its_lease(
        store: Store) -> None:
    """Review s29: a write storing new deliveries as an instance's holds on its lease
    lasting the margin asked for, as a claim's does (landing on an ended lease, they were
    another instance's to claim and post too). Refused, they are returned, none stored;
    the same write's deletes and tries are written all the same, and a delete of one
    another instance took is skipped as before. With the lease lasting, they are
    stored."""
    webhooks = service(store)
    await lease(store, ME, expires_in=timedelta(seconds=10))
    kept = [pending(1, n, instance=ME) for n in range(5)]
    assert await webhooks.keep_deliveries(ME, new=kept[:3]) == []
    taken = dataclasses_replace(kept[2], instance_id=OTHER)
    await store.write([Update(taken, frozenset({"instance_id"}))], [])

    refused = await webhooks.keep_deliveries(
        ME, new=kept[3:], progressed=[dataclasses_replace(kept[1], tries_made=2)],
        over=[kept[0], kept[2]], margin=timedelta(seconds=30))

    assert [p.delivery_id for p in refused] == ["dlv_1_3", "dlv_1_4"]
    left = {p.delivery_id: (p.instance_id, p.tries_made)
            for p in await store.find_all(PendingDelivery, ALL)}
    assert left == {"dlv_1_1": (ME, 2), "dlv_1_2": (OTHER, 0)}
    # Without the deletes to fail the first write, the guard alone refuses it too.
    assert len(await webhooks.keep_deliveries(ME, new=kept[3:],
                                              margin=timedelta(seconds=30))) == 2
    assert await webhooks.keep_deliveries(ME, new=kept[3:],
                                          margin=timedelta(seconds=5)) == []
    assert {p.delivery_id for p in await store.find_all(PendingDelivery, ALL)} == {
        "dlv_1_1", "dlv_1_2", "dlv_1_3", "dlv_1_4"}


class _LandsLate:
    """A store whose guarded writes land ``late`` after they begin: the services' clock
    (``MovedClock``) is moved on by it as each one starts, before the store checks it."""

    def __init__(self, store: Store, clock: MovedClock, late: timedelta) -> None:
        self._store, self._clock, self._late = store, clock, late
        self._ahead = timedelta(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write(self, changes: Any, audit: Any, guards: Any = ()) -> None:
        if guards:
            self._ahead += self._late
            self._clock.by(self._ahead)
        await self._store.write(changes, audit, guards)


async def test_a_write_as_an_instances_own_holds_on_its_lease_as_it_lands(
        store: Store) -> None:
    """Review s30: the lease guard of a write storing or claiming deliveries as an
    instance's was judged at the clock's time the write began, so one landing more than
    the margin later (waiting for SQLite's lock, a slow MongoDB batch) was taken on a
    lease that had ended as it landed: its rows orphaned, for another instance to claim
    and post too. Judged as it lands, such a write is refused: new ones returned
    unstored, a claim taking nothing (the lease is why)."""
    webhooks = service(store)
    await lease(store, ME, expires_in=timedelta(seconds=60))
    await lease(store, CRASHED, expires_in=-timedelta(seconds=1))
    await stored_while_live(store, [pending(2, 0, instance=CRASHED)])
    with MovedClock(webhooks.ctx) as clock:
        webhooks.store = _LandsLate(store, clock, timedelta(seconds=50))  # type: ignore[assignment]
        # Begun with 60 s of lease left, landing with 10 s: less than the margin.
        refused = await webhooks.keep_deliveries(ME, new=[pending(1, 0, instance=ME)],
                                                 margin=timedelta(seconds=20))
        assert [p.delivery_id for p in refused] == ["dlv_1_0"]
        clock.by(timedelta(0))
        webhooks.store = _LandsLate(store, clock, timedelta(seconds=50))  # type: ignore[assignment]
        with pytest.raises(LeaseTooShort):
            await webhooks.claim_handed_over(instance_id=ME, margin=timedelta(seconds=20))
    assert {p.delivery_id: p.instance_id
            for p in await store.find_all(PendingDelivery, ALL)} == {"dlv_2_0": CRASHED}
