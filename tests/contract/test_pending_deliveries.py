"""Webhook deliveries handed over at a graceful stop (``PendingDelivery``), in both
stores: kept byte for byte, claimed oldest webhook first with all of that webhook's in
order, and claimed once: the guarded delete fails for whoever comes second, also when
two claim at the same moment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.entities import DeliveryClaim, PendingDelivery
from domain.errors import Conflict
from domain.policy import Policy
from domain.ports import Delete, Insert, Store
from domain.query import ALL
from domain.services import ServiceContext
from domain.services.webhooks import CLAIM_STALE, WebhookService
from tests.contract.factories import oid
from tests.helpers import FastHasher

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: A body as a receiver must get it again: the signature is over these bytes.
BODY = '{"id":"evt_1","type":"payment.captured","data":{"note":"Zahlung \u00e9 \u2713"}}'


def service(store: Store) -> WebhookService:
    return WebhookService(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))


def pending(webhook: int, number: int, *, tries: int = 0) -> PendingDelivery:
    return PendingDelivery(webhook_id=oid(webhook), delivery_id=f"dlv_{webhook}_{number}",
                           event_type="payment.captured", body=BODY, event="{}",
                           tries_made=tries, due_at=T0 + timedelta(seconds=30),
                           queued_at=T0 + timedelta(seconds=number))


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
