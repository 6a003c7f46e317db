from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.errors import StoreBusy
from domain.policy import Policy
from domain.query import Filter
from domain.services import ServiceContext, Services
from graph import TokenService, create_graphql_app
from store.sqlite import SqliteStore
from tests.graph.world import World, build_world
from tests.helpers import FastHasher, is_filter

SECRET = "test-secret-that-is-long-enough-for-hs256-keys"


class CountingStore:
    """Wraps a store and counts calls of its public methods, keeping the filters they were
    given by kind (``asked``). A call about a kind named in ``failing`` is counted, then
    raises ``StoreBusy`` (that kind's table locked)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.detail: list[str] = []
        self.asked: list[tuple[str, Filter]] = []
        self.failing: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            kind = args[0].kind if args and hasattr(args[0], "kind") else ""
            self.detail.append(f"{name}:{kind}")
            self.asked += [(kind, arg) for arg in (*args, *kwargs.values())
                           if is_filter(arg)]
            if kind in self.failing:
                raise StoreBusy(f"the {kind} table is locked")
            return await attr(*args, **kwargs)

        return counted


class Api:
    """A GraphQL client over the real ASGI app (no network)."""

    def __init__(self, app: Any, tokens: TokenService) -> None:
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url="http://testserver")
        self.tokens = tokens

    def token_for(self, user_id: str) -> str:
        return self.tokens.issue(user_id).token

    async def post(self, query: str, variables: dict[str, Any] | None = None,
                   token: str | None = None, **headers: str) -> httpx.Response:
        h = {"content-type": "application/json", **headers}
        if token:
            h["authorization"] = f"Bearer {token}"
        return await self.client.post("/graphql", json={"query": query, "variables": variables},
                                      headers=h)

    async def gql(self, query: str, variables: dict[str, Any] | None = None,
                  as_user: str | None = None) -> dict[str, Any]:
        token = self.token_for(as_user) if as_user else None
        response = await self.post(query, variables, token)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[CountingStore]:
    """The graph runs over both backends: visibility must not depend on the store."""
    if request.param == "sqlite":
        inner = SqliteStore(str(tmp_path / "graph.db"))
        await inner.start()
        yield CountingStore(inner)
        await inner.close()
    else:
        from tests.support.mongo_backend import open_mongo_store

        async with open_mongo_store() as mongo:
            yield CountingStore(mongo)


@pytest.fixture
def services(store: CountingStore) -> Services:
    return Services(ServiceContext(store=store, policy=Policy(public_map=False),  # type: ignore[arg-type]
                                   hasher=FastHasher()))


@pytest.fixture
async def world(services: Services) -> World:
    return await build_world(services)


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    tokens = TokenService(SECRET, timedelta(hours=1))
    client = Api(create_graphql_app(services, tokens), tokens)
    yield client
    await client.client.aclose()
