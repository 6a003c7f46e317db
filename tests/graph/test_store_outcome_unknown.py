"""A keyed mutation whose MongoDB write batch ended with its outcome unknown (the driver
gave up on an answer and the rollback failed too, or the journal's deletion that commits
the batch timed out: ``batch.OutcomeUnknown``) keeps its answer for the key. It was
``STORE_UNAVAILABLE``, whose answer is released (``graph.errors.RETRYABLE_CODES``), so
the retry with the key ran again while the first write stood, committed or waiting for
the sweep: a car added whose retry answered ``DUPLICATE`` (kept for the key, and wrong
once the sweep rolled the first write back), a company's name taken by itself. Now
``STORE_OUTCOME_UNKNOWN``: the retry gets the same answer and the client reads first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pymongo.errors import NetworkTimeout

from domain import entities as d
from domain.query import Eq
from graph import mutation
from store.mongo import MongoStore, journal
from store.mongo.journal import JOURNAL
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World
from tests.store.test_mongo_time_limits import answer_lost

ADD_CAR = """mutation($plate: String!) { addVehicle(input: {licensePlate: $plate}) {
    vehicle { id } errors { code message } } }"""


async def not_answering(*args: Any, **kwargs: Any) -> Any:
    raise NetworkTimeout("timed out")


@pytest.mark.parametrize("lost", ["rollback", "commit"])
async def test_a_keyed_mutation_whose_write_outcome_is_unknown_is_not_run_again(
        api: Api, world: World, store: CountingStore, monkeypatch: pytest.MonkeyPatch,
        lost: str) -> None:
    if not isinstance(store.inner, MongoStore):
        pytest.skip("a SQLite write is one transaction: its outcome is always known")
    mongo = store.inner
    if lost == "rollback":  # the car's insert landed unanswered, its rollback failed
        answer_lost(monkeypatch, "vehicle", "insert_many")
        monkeypatch.setattr(journal, "roll_back", not_answering)
    else:  # every change written, the journal's deletion landed unanswered
        answer_lost(monkeypatch, JOURNAL, "delete_one")
    token = api.token_for(world.users["driver1"].id)
    car = {"plate": "M-UK 1"}

    first = await api.post(ADD_CAR, car, token, **{"idempotency-key": "car-1"})
    payload = first.json()["data"]["addVehicle"]
    assert [e["code"] for e in payload["errors"]] == ["STORE_OUTCOME_UNKNOWN"]
    assert "read before sending it again" in payload["errors"][0]["message"]
    monkeypatch.undo()  # the database answers again
    cars = await mongo.find_all(d.Vehicle, Eq("license_plate", "M-UK 1"))
    assert len(cars) == 1  # the first write stands, committed or until a sweep
    assert mongo.db.sync()[JOURNAL].count_documents({}) == (lost == "rollback")

    # The retry with the key does not run again (it answered DUPLICATE, its own car).
    retry = await api.post(ADD_CAR, car, token, **{"idempotency-key": "car-1"})
    assert retry.headers.get("idempotent-replayed") == "true", retry.text
    assert retry.content == first.content
    assert await mongo.find_all(d.Vehicle, Eq("license_plate", "M-UK 1")) == cars

    # The client reads; what the sweep leaves is what it finds, and a new key adds it.
    await journal.sweep(mongo.db, stale_after=timedelta(0))
    standing = await mongo.find_all(d.Vehicle, Eq("license_plate", "M-UK 1"))
    assert standing == ([] if lost == "rollback" else cars)
    again = await api.post(ADD_CAR, car, token, **{"idempotency-key": "car-2"})
    assert [e["code"] for e in again.json()["data"]["addVehicle"]["errors"]] == (
        [] if lost == "rollback" else ["DUPLICATE"])
    assert len(await mongo.find_all(d.Vehicle, Eq("license_plate", "M-UK 1"))) == 1


async def test_an_outcome_unknown_surfacing_top_level_keeps_the_key_too(
        api: Api, world: World, store: CountingStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No resolver lets a domain error through today (``attempt`` makes it a payload
    error), but one that did made it a top-level error, which released the key: the
    retry then ran over the first try's write. Kept, as the payload's is."""
    if not isinstance(store.inner, MongoStore):
        pytest.skip("a SQLite write is one transaction: its outcome is always known")

    async def letting_it_through(ctx: Any, action: Any, **kwargs: Any) -> Any:
        return await action(), []

    monkeypatch.setattr(mutation, "attempt", letting_it_through)
    answer_lost(monkeypatch, JOURNAL, "delete_one")  # the batch committed, unanswered
    token = api.token_for(world.users["driver1"].id)
    car = {"plate": "M-UK 2"}

    first = await api.post(ADD_CAR, car, token, **{"idempotency-key": "car-top"})
    errors = first.json()["errors"]
    assert [(e["path"], e["extensions"]["code"]) for e in errors] == [
        (["addVehicle"], "STORE_OUTCOME_UNKNOWN")]
    monkeypatch.undo()
    cars = await store.inner.find_all(d.Vehicle, Eq("license_plate", "M-UK 2"))
    assert len(cars) == 1

    retry = await api.post(ADD_CAR, car, token, **{"idempotency-key": "car-top"})
    assert retry.headers.get("idempotent-replayed") == "true", retry.text
    assert retry.content == first.content
