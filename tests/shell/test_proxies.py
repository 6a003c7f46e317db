"""CHARGEGRAPH_TRUSTED_PROXIES: behind a load balancer, clients keep their own addresses (the
sign-in limit counts per address), and only the named proxies are believed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette

from chargegraph.cli import _uvicorn
from chargegraph.settings import Settings
from domain.entities import Role
from domain.policy import SYSTEM

PROXY = "10.0.0.5"
LOGIN = """mutation($p: String!) { login(email: "victim@example.com", password: $p) {
             token errors { code } } }"""


def settings_for(tmp_path: Path, trusted_proxies: str) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/proxy.db", jwt_secret="p" * 40,  # type: ignore[arg-type]
                    ocpp_enabled=False, trusted_proxies=trusted_proxies)


def test_default_trusts_the_local_host_only(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHARGEGRAPH_TRUSTED_PROXIES", raising=False)
    assert Settings().trusted_proxies == "127.0.0.1,::1"  # uvicorn's own default


@pytest.mark.parametrize(("given", "kept"), [
    (" 10.0.0.1/8 , fd00::/8,192.0.2.7", "10.0.0.0/8,fd00::/8,192.0.2.7"),
    (" * ", "*"),
    ("", ""),  # no proxy is believed
])
def test_proxies_are_kept_in_the_form_uvicorn_matches(given: str, kept: str) -> None:
    assert Settings(trusted_proxies=given).trusted_proxies == kept


@pytest.mark.parametrize(("wrong", "message"), [
    ("loadbalancer", "IP addresses or networks"), ("10.0.0.300", "IP addresses or networks"),
    ("10.0.0.0/33", "IP addresses or networks"), ("10.0.0.5,*", "stands alone")])
def test_a_proxy_that_is_not_an_address_is_refused(wrong: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(trusted_proxies=wrong)


def test_the_setting_reaches_uvicorn(tmp_path: Path) -> None:
    server = _uvicorn(settings_for(tmp_path, trusted_proxies=f"{PROXY},fd00::/8"))
    assert server.config.proxy_headers
    assert server.config.forwarded_allow_ips == f"{PROXY},fd00::/8"


@pytest.mark.parametrize(("trusted", "victim_gets_in"), [(PROXY, True), ("127.0.0.1", False)])
async def test_a_guesser_behind_the_proxy_locks_only_themselves(
        tmp_path: Path, trusted: str, victim_gets_in: bool) -> None:
    config = _uvicorn(settings_for(tmp_path, trusted_proxies=trusted)).config
    config.load()  # wraps the app in uvicorn's proxy headers middleware, as serve does
    app: Starlette = config.app  # type: ignore[assignment]
    async with app.router.lifespan_context(app):
        await app.state.services.accounts.create_user(
            SYSTEM, email="victim@example.com", password="the right password",
            name="Victim", role=Role.DRIVER)
        transport = httpx.ASGITransport(app=config.loaded_app, client=(PROXY, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://cg") as client:
            async def login(forwarded_for: str, password: str) -> dict[str, object]:
                answer = await client.post("/graphql", headers={"x-forwarded-for": forwarded_for},
                                           json={"query": LOGIN, "variables": {"p": password}})
                return answer.json()["data"]["login"]  # type: ignore[no-any-return]

            for guess in range(5):
                await login("203.0.113.66", f"guess {guess}")
            victim = await login("198.51.100.7", "the right password")
    assert (victim["token"] is not None) == victim_gets_in, victim
