"""Webhooks in both stores: who sees which (the policy's ``webhook`` scope, run as a
store query), the enabled ones delivery routes by, and guarded health writes."""

from __future__ import annotations

import pytest

from domain.entities import Role, Webhook
from domain.errors import Conflict
from domain.policy import Policy, Viewer
from domain.ports import Store, Update
from domain.query import Eq, all_of
from tests.contract.factories import oid, put

POLICY = Policy()
ADMIN = Viewer(user_id=oid(1), role=Role.ADMIN)
OP_A = Viewer(user_id=oid(2), role=Role.OPERATOR, company_id=oid(100))
OP_B = Viewer(user_id=oid(3), role=Role.OPERATOR, company_id=oid(200))
LONE_OP = Viewer(user_id=oid(4), role=Role.OPERATOR)
DRIVER = Viewer(user_id=oid(5), role=Role.DRIVER)


def hook(owner: Viewer, company: str | None, *, active: bool = True) -> Webhook:
    assert owner.user_id is not None
    return Webhook(url="https://hooks.example.com", events=["session.ended"], secret="s",
                   owner_id=owner.user_id, company_id=company, active=active)


async def seen_by(store: Store, viewer: Viewer) -> set[str]:
    found = await store.find_all(Webhook, POLICY.scope(viewer, "webhook"))
    return {w.id for w in found}


async def test_each_role_sees_the_webhooks_of_its_scope(store: Store) -> None:
    admins = hook(ADMIN, None)
    company_a = hook(OP_A, oid(100))
    company_a_by_admin_now = hook(ADMIN, oid(100))  # made by an operator since promoted
    company_b = hook(OP_B, oid(200))
    lone = hook(LONE_OP, None)
    await put(store, admins, company_a, company_a_by_admin_now, company_b, lone)

    assert await seen_by(store, ADMIN) == {admins.id, company_a.id,
                                           company_a_by_admin_now.id, company_b.id, lone.id}
    assert await seen_by(store, OP_A) == {company_a.id, company_a_by_admin_now.id}
    assert await seen_by(store, OP_B) == {company_b.id}
    # An operator of no company: their own of no company, never an admin's.
    assert await seen_by(store, LONE_OP) == {lone.id}
    assert await seen_by(store, DRIVER) == set()
    assert await seen_by(store, Viewer()) == set()


async def test_enabled_webhooks_are_found_by_their_flag(store: Store) -> None:
    on, off = hook(OP_A, oid(100)), hook(OP_A, oid(100), active=False)
    await put(store, on, off)
    assert [w.id for w in await store.find_all(Webhook, Eq("active", True))] == [on.id]
    assert await store.count(Webhook, all_of(Eq("company_id", oid(100)),
                                              Eq("active", False))) == 1


async def test_a_health_write_guarded_on_the_failure_count_fails_when_it_moved(
        store: Store) -> None:
    """Two instances counting failed deliveries of one webhook: the second write, made
    from a stale count, fails instead of undoing the first."""
    webhook = hook(OP_A, oid(100))
    await put(store, webhook)
    fields = frozenset({"consecutive_failures"})
    first = Webhook(**{**webhook.__dict__, "consecutive_failures": 1})
    await store.write([Update(first, fields, ("consecutive_failures", 0), required=True)], [])
    with pytest.raises(Conflict) as raised:
        await store.write([Update(first, fields, ("consecutive_failures", 0),
                                  required=True)], [])
    assert raised.value.code == "CHANGED"
    [stored] = await store.get_many(Webhook, [webhook.id])
    assert stored is not None and stored.consecutive_failures == 1
