"""Instance leases on every backend (``domain/services/instances.py``): a sweep deletes
only an expired lease as it read it, and a renewal never moves a lease's expiry back."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from domain.clock import utcnow
from domain.entities import InstanceLease, Station
from domain.policy import SYSTEM, Policy
from domain.ports import Store
from domain.query import ALL
from domain.services.base import ServiceContext, patch
from domain.services.charging import ChargingService
from domain.services.instances import InstanceService
from tests.helpers import FastHasher


def instances(store: Store) -> InstanceService:
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    return InstanceService(ctx, ChargingService(ctx))


async def test_a_sweep_leaves_a_lease_renewed_after_it_read_it_expired(
        store: Store) -> None:
    service = instances(store)
    await service.renew("a" * 24, "host:1", timedelta(seconds=30))
    lease = await service._lease("a" * 24)
    assert lease is not None
    await store.write([patch(lease, SYSTEM, expires_at=utcnow() - timedelta(seconds=1))],
                      [])
    real_find_all = store.find_all
    renewed = False

    async def find_all(kind: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal renewed
        if kind is Station and not renewed:  # the lease read expired: renewed now
            renewed = True
            assert await service.renew("a" * 24, "host:1", timedelta(seconds=30))
        return await real_find_all(kind, *args, **kwargs)
    store.find_all = find_all  # type: ignore[method-assign]
    try:
        assert await instances(store).sweep("b" * 24) == []
    finally:
        store.find_all = real_find_all  # type: ignore[method-assign]
    assert renewed
    kept = await service._lease("a" * 24)
    assert kept is not None and kept.expires_at > utcnow()


async def test_a_sweep_deletes_an_expired_lease_left_as_it_read_it(store: Store) -> None:
    service = instances(store)
    await service.renew("a" * 24, "host:1", timedelta(seconds=30))
    lease = await service._lease("a" * 24)
    assert lease is not None
    await store.write([patch(lease, SYSTEM, expires_at=utcnow() - timedelta(seconds=1))],
                      [])
    await instances(store).sweep("b" * 24)
    assert await service._lease("a" * 24) is None


async def test_a_renewal_never_moves_a_leases_expiry_back(store: Store) -> None:
    service = instances(store)
    await service.renew("a" * 24, "host:1", timedelta(seconds=300))
    longer = await service._lease("a" * 24)
    assert longer is not None
    assert not await service.renew("a" * 24, "host:1", timedelta(seconds=30))
    after = await service._lease("a" * 24)
    assert after is not None and after.expires_at == longer.expires_at
    assert await store.find_all(InstanceLease, ALL) == [after]


async def test_both_parts_renewing_a_swept_lease_at_once_both_renew(store: Store) -> None:
    """The OCPP server and the webhook delivery of one instance both find its lease swept
    and start it again: the second renews the first's (review r27-durable5: it failed
    with a UniqueViolation, skipping that round's upkeep)."""
    service = instances(store)
    real_get_many = store.get_many
    both_read = asyncio.Barrier(2)
    reads = 0

    async def get_many(kind: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        found = await real_get_many(kind, *args, **kwargs)
        if kind is InstanceLease and reads < 2:
            # The lease swept: both parts read it gone before either writes (their
            # first reads only: a renewal reading again goes on at once).
            reads += 1
            async with asyncio.timeout(2):
                await both_read.wait()
        return found
    store.get_many = get_many  # type: ignore[method-assign]
    try:
        server, dispatcher = await asyncio.gather(
            service.renew("a" * 24, "host:1", timedelta(seconds=30)),
            service.renew("a" * 24, "host:1", timedelta(seconds=30),
                          serves_chargers=False),
            return_exceptions=True)
    finally:
        store.get_many = real_get_many  # type: ignore[method-assign]
    assert not isinstance(server, BaseException), f"the server's renewal: {server!r}"
    assert not isinstance(dispatcher, BaseException), \
        f"the dispatcher's renewal: {dispatcher!r}"
    assert len(await store.find_all(InstanceLease, ALL)) == 1
