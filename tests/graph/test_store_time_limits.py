"""A mutation whose MongoDB write batch ran out of time (a server too slow to take it
within ``journal.BATCH_DEADLINE_S``) is answered as SQLite answers a write its lock timed
out: the ``STORE_BUSY`` user error, nothing written, send it again (QA s28 mongo2: a
top-level INTERNAL_SERVER_ERROR, logged as an unexpected error)."""

from __future__ import annotations

import pytest

from domain import entities as d
from domain.query import Eq
from store.mongo import MongoStore, journal
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World


async def test_a_mutation_whose_batch_ran_out_of_time_answers_store_busy(
        api: Api, world: World, store: CountingStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if not isinstance(store.inner, MongoStore):
        pytest.skip("SQLite's lock timeout: tests/store/test_sqlite_specific.py")
    monkeypatch.setattr(journal, "BATCH_DEADLINE_S", 0.0)

    answer = await api.gql(
        """mutation($input: CreateCompanyInput!) { createCompany(input: $input) {
          company { id } errors { field message code } } }""",
        {"input": {"name": "Slow GmbH"}}, as_user=world.users["admin"].id)

    payload = answer["createCompany"]
    assert payload["company"] is None
    assert [e["code"] for e in payload["errors"]] == ["STORE_BUSY"]
    assert "nothing was written" in payload["errors"][0]["message"]
    monkeypatch.undo()
    assert await store.inner.find_all(d.Company, Eq("name", "Slow GmbH")) == []
