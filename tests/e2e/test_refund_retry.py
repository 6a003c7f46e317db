"""A refund retried with its ``Idempotency-Key`` after the provider's answer was lost
pays back once (review s27: it paid back twice).

README ("Retries"): a mutation sent again after its answer was lost "must not run twice:
... a refund paid twice"; "an answer of the service's own failure is not kept, and the
retry with the key runs". Before the claims, the provider's key of a refund was the
payment with what it had refunded before: the retry asked the same key and the provider
paid back once. Now every run claims a new key (``new_id``): the provider paid 1.00 under
the first key and timed out on its answer (INTERNAL_SERVER_ERROR, not kept), the client
retried with the same Idempotency-Key, the retry claimed 1.00 more under a new key and
the provider paid again; the sweep then settles the first claim too: 2.00 paid back for
one refund of 1.00."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.services.charging import books_of
from domain.services.payments import STALE_REFUND_CLAIM
from graph.ids import to_global_id
from tests.e2e.conftest import Running

REFUND = """mutation($id: ID!, $amount: Decimal) { refundPayment(input: {id: $id,
  amount: $amount}) { payment { refunded { amount } refunding { amount } }
  errors { field code } } }"""


async def post(service: Running, variables: dict[str, Any], token: str, key: str
               ) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{service.http_url}/graphql",
                                 headers={"authorization": f"Bearer {token}",
                                          "idempotency-key": key},
                                 json={"query": REFUND, "variables": variables})


class LosesFirstAnswer:
    """Keeps the port's promise (one refund per key); its first answer never arrives."""

    name = "acquirer"

    def __init__(self) -> None:
        self.paid: dict[str, int] = {}
        self.lost = 1

    async def capture(self, payment: d.Payment) -> str:
        return f"cap-{payment.id}"

    async def refund(self, payment: d.Payment, amount_minor: int, key: str) -> str:
        self.paid.setdefault(key, amount_minor)  # money moved
        if self.lost:
            self.lost -= 1
            raise TimeoutError("the provider's answer was lost")
        return f"ref-{key}"


async def test_a_refund_retried_with_its_key_after_a_lost_answer_pays_back_once(
        service: Running) -> None:
    c, services = service.central, service.services
    station = c.stations["CP-1"]
    company_id, owner_id = books_of(station)
    start = utcnow() - timedelta(hours=1)
    session = d.Session(
        transaction_id=await services.ctx.store.next_sequence("transaction"),
        station_id=station.id, cp_id="CP-1", connector_id=1, id_tag="TAG-OK",
        user_id=c.users["driver"].id, start_time=start, meter_start_wh=0,
        energy_wh=10_000, company_id=company_id, station_owner_id=owner_id,
        state=d.SessionState.COMPLETED, end_time=start + timedelta(minutes=30),
        meter_stop_wh=10_000, cost_minor=400, currency="EUR")
    payment = d.Payment(session_id=session.id, station_id=station.id, amount_minor=400,
                        currency="EUR", user_id=session.user_id, company_id=company_id,
                        station_owner_id=owner_id, cp_id="CP-1", connector_id=1)
    await services.ctx.store.write([Insert(session), Insert(payment)], [])
    await services.payments.capture(SYSTEM, payment.id)
    provider = LosesFirstAnswer()
    services.payments.provider = provider

    token = await service.token("op")
    gid = to_global_id("payment", payment.id)
    first = await post(service, {"id": gid, "amount": "1.00"}, token, "refund-1")
    assert first.json().get("errors"), first.text  # the service's own failure
    retry = await post(service, {"id": gid, "amount": "1.00"}, token, "refund-1")
    assert retry.status_code in (200, 409, 422), retry.text
    # The sweep settles what the first run left claimed (after 10 minutes).
    real = services.ctx.clock
    services.ctx.clock = lambda: real() + STALE_REFUND_CLAIM + timedelta(seconds=1)
    await services.payments.settle_stale_refunds()
    [stored] = await services.ctx.store.get_many(d.Payment, [payment.id])
    assert stored is not None
    # One refund of 1.00 was asked for, under one Idempotency-Key.
    assert sum(provider.paid.values()) == 100, provider.paid
    assert stored.refunded_minor == 100
