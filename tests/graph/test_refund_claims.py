"""Refunds claimed in the store before the payment provider is asked (QA s27): refunds at
once (3.00, 2.00 and 1.50 EUR of a 4.00 capture) all reached a slow provider, 6.50 under
one idempotency key, and one was recorded. Each refund now reserves its amount against
what is left (``Payment.refunding``) under a key of its own; one that does not fit is
refused up front; a crash between the claim and the provider's answer leaves the claim,
shown on the payment and settled by the sweep under the same key. Over the GraphQL API,
on both stores, and with two instances on one SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import domain.entities as d
from domain.errors import PaymentDeclined, StoreBusy
from domain.ids import new_id
from domain.policy import Policy
from domain.ports import Insert, Update
from domain.query import MAX_PAGE_SIZE, Eq
from domain.services import ServiceContext, Services
from domain.services.payments import STALE_REFUND_CLAIM
from graph import TokenService, create_graphql_app
from graph.ids import to_global_id
from store.sqlite import SqliteStore
from tests.graph.conftest import SECRET, Api
from tests.graph.world import World, build_world
from tests.helpers import FastHasher

REFUND = """mutation($id: ID!, $amount: Decimal) { refundPayment(input: {id: $id,
  amount: $amount}) { payment { status refunded { amount } refunding { amount } }
  errors { field code } } }"""
READ = """query($id: ID!) { node(id: $id) { ... on Payment { status refunded { amount }
  refunding { amount } refunds { amount { amount } providerRef } } } }"""
ASKED = ("3.00", "2.00", "1.50")


class SlowAcquirer:
    """A provider that answers slowly and keeps the port's promise: asked again under a
    key it paid back, it pays nothing more and answers with the first refund."""

    name = "acquirer"

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.asked: list[tuple[str, int]] = []
        self.paid: dict[str, int] = {}

    async def capture(self, payment: d.Payment) -> str:
        return f"cap-{payment.id}"

    async def refund(self, payment: d.Payment, amount_minor: int, key: str) -> str:
        self.asked.append((key, amount_minor))
        await asyncio.sleep(self.delay)
        self.paid.setdefault(key, amount_minor)
        return f"ref-{key}"


async def _captured_400(services: Services, world: World) -> d.Payment:
    """s3 (A's books) billed 4.00 EUR and captured."""
    payment = world.payments["s3"]
    await services.ctx.store.write([Update(dataclasses.replace(payment, amount_minor=400),
                                           frozenset({"amount_minor"}))], [])
    return await services.payments.capture(world.viewer("op_a"), payment.id)


async def _stored(services: Services, payment_id: str) -> d.Payment:
    [payment] = await services.ctx.store.get_many(d.Payment, [payment_id])
    assert payment is not None
    return payment


async def _paid_back_once_within_the_capture(apis: list[Api], services: Services,
                                             world: World, acquirer: SlowAcquirer) -> None:
    payment = await _captured_400(services, world)
    gid, op = to_global_id("payment", payment.id), world.users["op_a"].id
    answers = await asyncio.gather(*(
        apis[i % len(apis)].gql(REFUND, {"id": gid, "amount": amount}, as_user=op)
        for i, amount in enumerate(ASKED)))
    results = [a["refundPayment"] for a in answers]
    # Never more asked of the provider than was captured, each refund under its own key.
    keys = [key for key, _ in acquirer.asked]
    assert len(set(keys)) == len(keys)
    asked = sum(amount for _, amount in acquirer.asked)
    assert 0 < asked <= 400
    # What was paid back is what is recorded: every refund the provider made, once.
    stored = await _stored(services, payment.id)
    assert (stored.refunded_minor, stored.refunding_minor, stored.refund_claims) == (
        asked, 0, None)
    records = await services.ctx.store.find_all(d.Refund, Eq("payment_id", payment.id))
    assert sorted((r.id, r.amount_minor) for r in records) == sorted(acquirer.paid.items())
    assert sorted(r.provider_ref or "" for r in records) == sorted(f"ref-{k}" for k in keys)
    # The others were refused up front, on the amount: it no longer fit what was left.
    made = [Decimal(a) for a, r in zip(ASKED, results, strict=True) if r["payment"]]
    refused = [r for r in results if not r["payment"]]
    assert sum(made) * 100 == asked
    assert refused and all(r["errors"] == [{"field": "amount", "code": "OUT_OF_RANGE"}]
                           for r in refused)


async def test_refunds_at_once_never_ask_the_provider_for_more_than_was_captured(
        api: Api, services: Services, world: World) -> None:
    acquirer = SlowAcquirer()
    services.payments.provider = acquirer
    await _paid_back_once_within_the_capture([api], services, world, acquirer)


@pytest.fixture
async def two_instances(tmp_path: Path) -> AsyncIterator[tuple[list[Services], list[Api]]]:
    """Two app instances, each with its store, on one SQLite file."""
    stores = [SqliteStore(str(tmp_path / "shared.db")) for _ in range(2)]
    for store in stores:
        await store.start()
    services = [Services(ServiceContext(store=store, policy=Policy(public_map=False),
                                        hasher=FastHasher())) for store in stores]
    tokens = TokenService(SECRET, timedelta(hours=1))
    apis = [Api(create_graphql_app(s, tokens), tokens) for s in services]
    yield services, apis
    for api in apis:
        await api.client.aclose()
    for store in stores:
        await store.close()


async def test_refunds_on_two_instances_of_one_store_never_ask_for_more_than_was_captured(
        two_instances: tuple[list[Services], list[Api]]) -> None:
    """A lock in one process would not cover the other: the claim is in the store."""
    services, apis = two_instances
    world = await build_world(services[0])
    acquirer = SlowAcquirer()
    for each in services:
        each.payments.provider = acquirer
    await _paid_back_once_within_the_capture(apis, services[0], world, acquirer)


async def test_a_refund_a_crash_interrupted_is_shown_reserved_and_settled_once_by_the_sweep(
        api: Api, services: Services, world: World) -> None:
    """The instance dies while the provider pays 3.00 back: the claim stays, the payment
    shows it being refunded and keeps it from being refunded again; the sweep asks the
    provider again under the same key, which pays nothing twice, and records it."""
    payment = await _captured_400(services, world)
    gid, op = to_global_id("payment", payment.id), world.users["op_a"].id
    acquirer = SlowAcquirer()
    asked = asyncio.Event()

    class Dying(SlowAcquirer):
        async def refund(self, paid: d.Payment, amount_minor: int, key: str) -> str:
            reference = await acquirer.refund(paid, amount_minor, key)  # money moved
            asked.set()
            await asyncio.Event().wait()  # the answer never gets back: a crash
            return reference

    services.payments.provider = Dying()
    request = asyncio.create_task(services.payments.refund(world.viewer("op_a"), payment.id,
                                                           Decimal("3.00")))
    await asyncio.wait_for(asked.wait(), 5)
    request.cancel()
    await asyncio.wait([request])
    [(key, amount)] = acquirer.paid.items()
    assert amount == 300
    shown = (await api.gql(READ, {"id": gid}, as_user=op))["node"]
    assert shown == {"status": "CAPTURED", "refunded": {"amount": "0.00"},
                     "refunding": {"amount": "3.00"}, "refunds": []}
    # Not lost: what is left is 1.00, not 4.00.
    services.payments.provider = acquirer
    refused = await api.gql(REFUND, {"id": gid, "amount": "2.00"}, as_user=op)
    assert refused["refundPayment"] == {
        "payment": None, "errors": [{"field": "amount", "code": "OUT_OF_RANGE"}]}
    # A claim still young may be waiting for its answer: the sweep leaves it.
    assert await services.payments.settle_stale_refunds() == 0
    real = services.ctx.clock
    services.ctx.clock = lambda: real() + STALE_REFUND_CLAIM + timedelta(seconds=1)
    assert await services.payments.settle_stale_refunds() == 1
    # Asked again under the same key: paid back once.
    assert [k for k, _ in acquirer.asked] == [key, key]
    assert acquirer.paid == {key: 300}
    shown = (await api.gql(READ, {"id": gid}, as_user=op))["node"]
    assert shown == {"status": "CAPTURED", "refunded": {"amount": "3.00"},
                     "refunding": {"amount": "0.00"},
                     "refunds": [{"amount": {"amount": "3.00"}, "providerRef": f"ref-{key}"}]}
    [record] = await services.ctx.store.find_all(d.Refund, Eq("payment_id", payment.id))
    assert (record.id, record.created_by) == (key, world.users["op_a"].id)
    # Settled once: another round finds nothing.
    assert await services.payments.settle_stale_refunds() == 0
    done = await api.gql(REFUND, {"id": gid}, as_user=op)
    assert done["refundPayment"]["payment"]["refunded"] == {"amount": "4.00"}


async def test_a_refund_the_provider_refuses_gives_its_amount_back(
        api: Api, services: Services, world: World) -> None:
    payment = await _captured_400(services, world)
    gid, op = to_global_id("payment", payment.id), world.users["op_a"].id

    class Refusing(SlowAcquirer):
        async def refund(self, paid: d.Payment, amount_minor: int, key: str) -> str:
            raise PaymentDeclined("the card was closed", field="id")

    services.payments.provider = Refusing()
    refused = await api.gql(REFUND, {"id": gid, "amount": "3.00"}, as_user=op)
    assert refused["refundPayment"] == {
        "payment": None, "errors": [{"field": "id", "code": "DECLINED"}]}
    stored = await _stored(services, payment.id)
    assert (stored.refunded_minor, stored.refunding_minor, stored.refund_claims) == (
        0, 0, None)
    services.payments.provider = SlowAcquirer(0)
    whole = await api.gql(REFUND, {"id": gid}, as_user=op)
    assert whole["refundPayment"]["payment"]["refunded"] == {"amount": "4.00"}




async def _stale_claims(services: Services, world: World, n: int) -> list[d.Payment]:
    """``n`` captured payments of 1.00 EUR, each with all of it claimed by a refund a
    crash interrupted well before the sweep's ``STALE_REFUND_CLAIM``; by id."""
    store = services.ctx.store
    claimed_at = services.ctx.clock() - STALE_REFUND_CLAIM - timedelta(minutes=5)
    payments: list[d.Payment] = []
    for _ in range(n):
        session = dataclasses.replace(
            world.sessions["s3"], id=new_id(),
            transaction_id=await store.next_sequence("transaction"),
            state=d.SessionState.COMPLETED)
        payment = dataclasses.replace(
            world.payments["s3"], id=new_id(), session_id=session.id,
            status=d.PaymentStatus.CAPTURED, amount_minor=100, refunded_minor=0,
            refunding_minor=100, refund_claims=[{"key": new_id(), "amount_minor": 100,
                                                 "at": claimed_at.isoformat(),
                                                 "by": world.users["op_a"].id}])
        await store.write([Insert(session), Insert(payment)], [])
        payments.append(payment)
    return sorted(payments, key=lambda p: p.id)


class Failing(SlowAcquirer):
    """Pays back the refunds of ``ok`` payments; fails on the others (an error of its
    own), or, ``hangs``, never answers them."""

    def __init__(self, ok: set[str], hangs: bool = False) -> None:
        super().__init__(delay=0)
        self.ok, self.hangs = ok, hangs
        self.failed: list[str] = []

    async def refund(self, payment: d.Payment, amount_minor: int, key: str) -> str:
        if payment.id not in self.ok:
            self.failed.append(payment.id)
            if self.hangs:
                await asyncio.Event().wait()
            raise RuntimeError("the provider's own error")
        return await super().refund(payment, amount_minor, key)


async def test_a_stale_claim_behind_a_page_of_failing_ones_is_still_settled(
        services: Services, world: World) -> None:
    """Review s27: the sweep read the first 100 payments being refunded and never paged
    on: behind 100 claims the provider keeps failing on, a claim was never asked again,
    its money shown being refunded and locked out of any refund for good."""
    *failing, last = await _stale_claims(services, world, MAX_PAGE_SIZE + 1)
    provider = Failing({last.id})
    services.payments.provider = provider
    for _ in range(3):  # three rounds: 15 minutes
        await services.payments.settle_stale_refunds()
    assert last.refund_claims
    assert provider.paid == {last.refund_claims[0]["key"]: 100}, "never asked again"
    stored = await _stored(services, last.id)
    assert (stored.refunded_minor, stored.refunding_minor) == (100, 0)
    assert {p.id for p in failing} <= set(provider.failed)


async def test_a_provider_that_never_answers_holds_the_sweep_no_longer_than_its_timeout(
        services: Services, world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A refund call that never returns held the sweep's loop for good, on every
    instance: each call is bounded, its claim left for the next round, and logged."""
    hung, answered = await _stale_claims(services, world, 2)
    provider = Failing({answered.id}, hangs=True)
    services.payments.provider = provider
    services.payments.refund_timeout_s = 0.05
    assert await asyncio.wait_for(services.payments.settle_stale_refunds(), 5) == 1
    assert (await _stored(services, answered.id)).refunded_minor == 100
    left = await _stored(services, hung.id)
    assert (left.refunded_minor, left.refunding_minor) == (0, 100)
    assert left.refund_claims == hung.refund_claims
    assert any(hung.id in r.getMessage() and "did not answer" in r.getMessage()
               for r in caplog.records)
    # The next round asks it again.
    assert await asyncio.wait_for(services.payments.settle_stale_refunds(), 5) == 0
    assert provider.failed == [hung.id, hung.id]


async def test_a_round_out_of_time_leaves_the_rest_to_the_next_which_goes_on_from_there(
        services: Services, world: World) -> None:
    """Each round's asking is bounded (``refund_sweep_budget_s``, one payment at
    least); the next goes on after the last it asked, not from the first again, and one
    that reached the end starts over."""
    payments = await _stale_claims(services, world, 3)
    provider = Failing(set())
    services.payments.provider = provider
    services.payments.refund_sweep_budget_s = 0
    for _ in range(4):
        await services.payments.settle_stale_refunds()
    assert provider.failed == [p.id for p in payments] + [payments[0].id]


KEYED_REFUND = """mutation($i: RefundPaymentInput!) { refundPayment(input: $i) {
    payment { refunded { amountMinor } } errors { code field } } }"""


async def test_a_refund_whose_recording_met_a_locked_database_is_paid_once_by_its_retry(
        api: Api, services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    payments = services.payments
    s3 = world.payments["s3"].id
    await payments.capture(world.viewer("op_a"), s3)
    paid: list[int] = []
    refund = payments.provider.refund

    async def counted(payment: Any, amount_minor: int, key: str) -> str:
        paid.append(amount_minor)
        return await refund(payment, amount_minor, key)

    settle = payments._settle_claim
    busy = [StoreBusy("the database is locked: try again")]

    async def locked(*args: Any, **kwargs: Any) -> Any:
        if busy:
            raise busy.pop()
        return await settle(*args, **kwargs)

    monkeypatch.setattr(payments.provider, "refund", counted)
    monkeypatch.setattr(payments, "_settle_claim", locked)
    token = api.token_for(world.users["op_a"].id)
    ask = {"i": {"id": to_global_id("payment", s3), "amount": "1.00"}}
    first = await api.post(KEYED_REFUND, ask, token, **{"idempotency-key": "refund-1"})
    assert paid == [100], first.text
    retry = await api.post(KEYED_REFUND, ask, token, **{"idempotency-key": "refund-1"})
    # The client sent one refund, twice: the provider must pay it once (review s27: the
    # STORE_BUSY answer released the key, and the retry paid a second refund). The
    # first answer is kept: the client reads the outcome with a query.
    assert paid == [100], (first.text, retry.text)
    assert retry.headers.get("idempotent-replayed") == "true"
    assert retry.content == first.content
