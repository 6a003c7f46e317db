"""``Payment.refunds``: a payment's refund ledger in the API (each refund is a record dated
when it was made, session 18), newest first, seen exactly by whoever sees the payment,
one store call for a page of payments, on both stores."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.policy import SYSTEM
from domain.services import Services
from graph.ids import to_global_id
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World, _session

LEDGER = """query($n: Int) { payments(first: $n) { nodes { id refunded { amountMinor }
  refunds { amount { amountMinor currency amount } at createdAt createdBy
            createdByUser { name } providerRef } } } }"""


async def _refunded(services: Services, world: World) -> None:
    """s3 (A's books, driver2): captured, 1.00 paid back by op_a, then 0.50 by op_a2.
    s2 (B's books, driver1): captured and paid back whole by op_b."""
    payments = services.payments
    s3, s2 = world.payments["s3"].id, world.payments["s2"].id
    await payments.capture(world.viewer("op_a"), s3)
    await payments.refund(world.viewer("op_a"), s3, Decimal("1.00"))
    await payments.refund(world.viewer("op_a2"), s3, Decimal("0.50"))
    await payments.capture(world.viewer("op_b"), s2)
    await payments.refund(world.viewer("op_b"), s2)


def _ledgers(data: dict[str, Any]) -> dict[str, list[tuple[int, str | None]]]:
    """Each payment listed: its refunds' amounts and who made them, in the order given."""
    return {p["id"]: [(r["amount"]["amountMinor"], (r["createdByUser"] or {}).get("name"))
                      for r in p["refunds"]]
            for p in data["payments"]["nodes"]}


async def test_a_payment_lists_its_refunds_newest_first(api: Api, services: Services,
                                                        world: World) -> None:
    await _refunded(services, world)
    data = await api.gql(LEDGER, {"n": 10}, as_user=world.users["op_a"].id)
    [payment] = data["payments"]["nodes"]
    assert payment["id"] == to_global_id("payment", world.payments["s3"].id)
    assert payment["refunded"] == {"amountMinor": 150}
    newest, oldest = payment["refunds"]
    assert newest["amount"] == {"amountMinor": 50, "currency": "EUR", "amount": "0.50"}
    assert oldest["amount"] == {"amountMinor": 100, "currency": "EUR", "amount": "1.00"}
    assert (newest["createdBy"], newest["createdByUser"]) == (
        to_global_id("user", world.users["op_a2"].id), {"name": "Op_A2"})
    assert oldest["createdBy"] == to_global_id("user", world.users["op_a"].id)
    assert newest["at"] >= oldest["at"] and newest["createdAt"] >= oldest["createdAt"]
    # The ledger adds up to what the payment says was paid back.
    assert sum(r["amount"]["amountMinor"] for r in payment["refunds"]) == 150
    assert newest["providerRef"].startswith("manual:refund:")


class Acquirer:
    """Another payment provider than the one that captured (``manual``)."""

    name = "acquirer"

    async def capture(self, payment: Any) -> str:
        return f"cap-{payment.id}"

    async def refund(self, payment: Any, amount_minor: int, key: str) -> str:
        return f"ref-{key}"


async def test_a_refund_names_the_provider_that_paid_it_back(
        api: Api, services: Services, world: World) -> None:
    """The payment's provider is its capture's; each refund's is its own (s32: the
    refund had only a reference, its provider read as the capture's)."""
    s3 = world.payments["s3"].id
    await services.payments.capture(world.viewer("op_a"), s3)  # manual
    services.payments.provider = Acquirer()  # the provider configured changed since
    await services.payments.refund(world.viewer("op_a"), s3, Decimal("1.00"))
    q = """query($id: ID!) { node(id: $id) { ... on Payment { provider providerRef
        refunds { provider providerRef } } } }"""
    data = await api.gql(q, {"id": to_global_id("payment", s3)},
                         as_user=world.users["op_a"].id)
    [refund] = data["node"]["refunds"]
    assert data["node"]["provider"] == "manual"
    assert data["node"]["providerRef"].startswith("manual:capture:")
    assert refund["provider"] == "acquirer" and refund["providerRef"].startswith("ref-")


async def test_refunds_are_seen_exactly_by_whoever_sees_the_payment(
        api: Api, services: Services, world: World) -> None:
    await _refunded(services, world)
    s3 = to_global_id("payment", world.payments["s3"].id)
    s2 = to_global_id("payment", world.payments["s2"].id)
    in_a = [(50, "Op_A2"), (100, "Op_A")]
    expected = {"admin": {s3: in_a, s2: [(420, "Op_B")]},
                "op_a": {s3: in_a}, "op_a2": {s3: in_a},
                "op_b": {s2: [(420, "Op_B")]},
                # Their own payments; an operator's name where the driver may see them.
                "driver2": {s3: [(50, None), (100, None)]},
                "driver1": {s2: [(420, None)]},
                "driver_a": {}}
    for who, ledgers in expected.items():
        data = await api.gql(LEDGER, {"n": 10}, as_user=world.users[who].id)
        assert _ledgers(data) == ledgers, who
    # Through the session too: the same ledger, and none of a session the viewer does not
    # see (the session, its payment and its refunds are all hidden).
    via = """query($id: ID!) { node(id: $id) { ... on Session {
        payment { refunds { amount { amountMinor } } } } } }"""
    session = to_global_id("session", world.sessions["s3"].id)
    seen = await api.gql(via, {"id": session}, as_user=world.users["driver2"].id)
    assert seen["node"]["payment"]["refunds"] == [{"amount": {"amountMinor": 50}},
                                                  {"amount": {"amountMinor": 100}}]
    hidden = await api.gql(via, {"id": session}, as_user=world.users["op_b"].id)
    assert hidden["node"] is None


async def test_a_page_of_payments_reads_its_refunds_in_one_call(
        api: Api, services: Services, world: World, store: CountingStore) -> None:
    """No N+1: the refunds of every payment on the page come from one grouped read,
    and their authors from one more, for 2 payments as for 8."""
    await _refunded(services, world)
    admin = world.users["admin"].id

    async def calls(n: int) -> tuple[list[str], int]:
        store.calls.clear()
        store.detail.clear()
        data = await api.gql(LEDGER, {"n": n}, as_user=admin)
        return list(store.detail), sum(len(p["refunds"]) for p in data["payments"]["nodes"])

    few, few_refunds = await calls(2)
    for i in range(6):
        await _session(services, world, f"extra{i}", "driver1", "B-001", 1, active=False)
        paid = world.payments[f"extra{i}"].id
        await services.payments.capture(SYSTEM, paid)
        await services.payments.refund(SYSTEM, paid, Decimal("0.10"))
        await services.payments.refund(world.viewer("op_b"), paid, Decimal("0.20"))
    many, many_refunds = await calls(8)
    assert (few_refunds, many_refunds) == (3, 3 + 12)
    assert few == many
    assert many.count("find_grouped:refund") == 1
