"""A real ChargeGraph (uvicorn, OCPP server, SQLite file) on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from chargegraph.app import create_app
from chargegraph.settings import Settings
from domain.services import Services
from tests.helpers import FastHasher, any_ocpp_port, loopback_socket, soon, until_started
from tests.ocpp.conftest import Central, seed
from tests.support.redis_server import RedisServer


@dataclass
class Running:
    settings: Settings
    services: Services
    http_url: str
    ws_url: str
    ocpp_url: str
    central: Central

    async def gql(self, query: str, variables: dict[str, Any] | None = None,
                  token: str | None = None) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.http_url}/graphql", headers=headers,
                                         json={"query": query, "variables": variables})
        body = response.json()
        assert "errors" not in body, body
        return body["data"]  # type: ignore[no-any-return]

    async def token(self, name: str) -> str:
        data = await self.gql("""mutation($e: String!) { login(email: $e,
            password: "password-123") { token } }""", {"e": f"{name}@example.com"})
        return str(data["login"]["token"])

    async def until_subscribed(self, count: int) -> None:
        """Waits until this instance watches ``count`` subscriptions (a subscribe message
        is not answered, so a client cannot know when the server has registered it)."""
        live = self.services.live
        # As long as ``soon`` waits (10 s), not 200 polls of 10 ms: a new service's first
        # subscription took 0.25 s on a loaded machine (session 30), an eighth of that.
        try:
            await soon(lambda: live.watching >= count)
        except AssertionError:
            raise AssertionError(f"only {live.watching} subscriptions") from None


@contextlib.asynccontextmanager
async def running_service(tmp_path: Path, *, seed_data: bool = True, **overrides: Any
                          ) -> AsyncIterator[Running]:
    # Both ports held from the start (no free port closed and bound again): GraphQL's
    # socket bound here, the OCPP server's port chosen as it binds.
    sock = loopback_socket()
    with sock:  # closed however the start ends (uvicorn owns it only once serving)
        port = sock.getsockname()[1]
        values: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path}/e2e.db",
                                  "state_dir": tmp_path / "state", "jwt_secret": "e" * 40,
                                  **overrides}
        settings = any_ocpp_port(Settings(port=port, heartbeat_interval=60, **values))
        app = create_app(settings, hasher=FastHasher())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await until_started(server)
        # The port the OCPP server bound (none without one: its URL is then never used).
        ocpp_port: int = app.state.ocpp_port if settings.ocpp_enabled else 0
        settings = settings.model_copy(update={"ocpp_port": ocpp_port})
        services: Services = app.state.services
        central = Central(services, services.ctx.store, None, None,  # type: ignore[arg-type]
                          f"ws://127.0.0.1:{ocpp_port}/ocpp", None)  # type: ignore[arg-type]
        if seed_data:
            await seed(central)
        try:
            yield Running(settings, services, f"http://127.0.0.1:{port}",
                          f"ws://127.0.0.1:{port}/graphql", central.url, central)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_service(tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def two_instances(tmp_path: Path, redis: RedisServer | None = None,
                        **b_settings: Any) -> AsyncIterator[tuple[Running, Running]]:
    """Instances A (with the demo data) and B, sharing A's database and one Redis (the
    test's own ``redis`` if given, to stop and start: it cleans it up); B's settings
    overridden by ``b_settings`` (``ocpp_enabled=False``: the API alone)."""
    own = redis is None
    redis = RedisServer().start() if redis is None else redis
    try:
        # B needs A's database URL, so the two cannot share one `with`.
        async with running_service(tmp_path / "a", pubsub_url=redis.url) as a:  # noqa: SIM117
            async with running_service(tmp_path / "b", pubsub_url=redis.url,
                                       database_url=a.settings.database_url,
                                       seed_data=False, **b_settings) as b:
                yield a, b
    finally:
        if own:
            redis.cleanup()
