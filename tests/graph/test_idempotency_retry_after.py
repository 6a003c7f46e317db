"""A request whose Idempotency-Key is held by a running claim is answered 409 with a
``Retry-After`` that fits the claim (QA s32): a second while a request could still be
running, the rest of the lease once it is older (its instance most likely died), not a
second for five minutes. Over the ASGI app on both stores, the services' clock injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import ALL
from domain.services import Services
from domain.services.base import patch
from domain.services.idempotency import LEASE, RUNS_WITHIN
from tests.graph.conftest import Api
from tests.graph.world import World

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ADD_CAR = """mutation($plate: String!) { addVehicle(input: {licensePlate: $plate}) {
    vehicle { id } errors { code } } }"""


async def test_retry_after_is_the_rest_of_a_claim_older_than_a_request_runs(
        api: Api, world: World, services: Services) -> None:
    now = [T0]
    services.ctx.clock = lambda: now[0]
    token = api.token_for(world.users["driver1"].id)
    car = {"plate": "M-RA 1"}
    first = await api.post(ADD_CAR, car, token, **{"idempotency-key": "held"})
    assert first.json()["data"]["addVehicle"]["errors"] == []
    # Its instance died before the answer was kept: the claim stays running, held for
    # the lease from its request's start.
    store = services.ctx.store
    [kept] = await store.find_all(d.IdempotencyKey, ALL)
    await store.write([patch(kept, SYSTEM, state=d.IdempotencyState.RUNNING, response=None,
                             lease_until=T0 + LEASE)], [])

    def busy(answer: httpx.Response) -> str:
        assert answer.status_code == 409, answer.text
        assert answer.json()["errors"][0]["extensions"]["code"] \
            == "IDEMPOTENCY_KEY_IN_PROGRESS"
        return answer.headers["retry-after"]

    now[0] = T0 + timedelta(seconds=10)  # could still be running: in a moment
    assert busy(await api.post(ADD_CAR, car, token, **{"idempotency-key": "held"})) == "1"
    now[0] = T0 + RUNS_WITHIN + timedelta(seconds=30)  # older: when the lease lapses
    rest = LEASE - RUNS_WITHIN - timedelta(seconds=30)
    assert busy(await api.post(ADD_CAR, car, token, **{"idempotency-key": "held"})) \
        == str(int(rest.total_seconds()))
    now[0] = T0 + LEASE - timedelta(seconds=0.5)  # a part of a second is one
    assert busy(await api.post(ADD_CAR, car, token, **{"idempotency-key": "held"})) == "1"
    # After the hold the retry runs again (here into the car the first one added).
    now[0] = T0 + LEASE
    again = await api.post(ADD_CAR, car, token, **{"idempotency-key": "held"})
    assert "idempotent-replayed" not in again.headers
    assert again.json()["data"]["addVehicle"]["errors"] == [{"code": "DUPLICATE"}]
