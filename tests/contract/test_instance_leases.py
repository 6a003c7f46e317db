"""Instance leases on every backend (``domain/services/instances.py``): a sweep deletes
only an expired lease as it read it, and a renewal never moves a lease's expiry back."""

from __future__ import annotations

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
