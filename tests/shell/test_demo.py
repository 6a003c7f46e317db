"""The demo world: seeded through the domain, complete, idempotent, and able to log in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from chargegraph.app import build_services
from chargegraph.demo import ADMIN_EMAIL, DEMO_PASSWORD, DemoSummary, banner, seed_demo
from chargegraph.errors import ConfigError
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings
from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Delete, Insert
from domain.query import ALL, Eq
from domain.services import Services
from store.sqlite import SqliteStore


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    store = SqliteStore(str(tmp_path / "demo.db"))
    await store.start()
    try:
        yield build_services(Settings(), store, Argon2Hasher.fast())
    finally:
        await store.close()


async def counts(services: Services) -> dict[str, int]:
    store = services.ctx.store
    kinds = (d.Company, d.User, d.Station, d.Connector, d.Tariff, d.Vehicle, d.IdTag,
             d.Site)
    return {kind.__name__: await store.count(kind, ALL) for kind in kinds}


async def test_seed_demo_builds_the_world_once(services: Services) -> None:
    first = await seed_demo(services)
    assert first.created
    world = await counts(services)
    assert world == {"Company": 2, "User": 6, "Station": 8, "Connector": 16, "Tariff": 3,
                     "Vehicle": 3, "IdTag": 3, "Site": 1}
    [depot] = await services.ctx.store.find_all(d.Site, ALL)
    assert [s.cp_id for s in await services.ctx.store.find_all(
        d.Station, Eq("site_id", depot.id))] == ["BER-TXL-01"]
    again = await seed_demo(services)
    assert not again.created and again.logins == first.logins
    assert await counts(services) == world
    stations = await services.ctx.store.find_all(d.Station, ALL)
    assert all(s.lat is not None and s.lon is not None and s.address
               and 52.3 < s.lat < 52.7 and 12.9 < s.lon < 13.8 for s in stations)
    assert {c.type for c in await services.ctx.store.find_all(d.Connector, ALL)} == {
        d.ConnectorType.TYPE2, d.ConnectorType.CCS2}


async def test_every_demo_login_works(services: Services) -> None:
    summary = await seed_demo(services)
    roles = {role for role, *_ in summary.logins}
    assert roles == {"ADMIN", "OPERATOR", "DRIVER"}
    for role, email, password in summary.logins:
        user = await services.accounts.authenticate(email, password)
        assert user.role.value == role
        if role == "OPERATOR":
            assert user.company_id is not None


async def test_an_interrupted_seed_is_completed(services: Services) -> None:
    await seed_demo(services)
    world = await counts(services)
    store = services.ctx.store
    # As if the last run stopped half-way: the admin (written last) and a driver's card and
    # car are missing.
    for kind, field, value in ((d.User, "email", ADMIN_EMAIL), (d.IdTag, "tag", "DEMO-0002"),
                               (d.Vehicle, "license_plate", "P-JO 77")):
        record = await store.find_one(kind, Eq(field, value))
        assert record is not None, (kind, value)
        await store.write([Delete(record)], [])
    assert (await seed_demo(services)).created
    assert await counts(services) == world
    assert (await services.accounts.authenticate(ADMIN_EMAIL, DEMO_PASSWORD)).role.value == (
        "ADMIN")


def test_banner_is_a_box_with_every_login() -> None:
    summary_lines = banner(seed_summary(), "http://127.0.0.1:8000/graphql",
                           "ws://127.0.0.1:9000/ocpp").splitlines()
    assert len({len(line) for line in summary_lines}) == 1  # a rectangle
    text = "\n".join(summary_lines)
    assert "http://127.0.0.1:8000/graphql" in text and ADMIN_EMAIL in text
    assert text.count(DEMO_PASSWORD) == 6


def test_the_banner_promises_no_chargers_without_them() -> None:
    """QA (onboarding): `demo --no-chargers` still said "Simulated chargers 8 (...)"."""
    url, ocpp = "http://127.0.0.1:8000/graphql", "ws://127.0.0.1:9000/ocpp"
    running = banner(seed_summary(), url, ocpp)
    assert "| Simulated chargers  4 (A, B, C, …)" in running
    without = banner(seed_summary(), url, ocpp, chargers=False)
    assert "| Simulated chargers  none (--no-chargers)" in without
    assert "(A, B, C" not in without


def seed_summary() -> DemoSummary:
    from chargegraph.demo import COMPANIES, DRIVERS

    logins = [("ADMIN", ADMIN_EMAIL, DEMO_PASSWORD)]
    logins += [("OPERATOR", email, DEMO_PASSWORD) for _, email in COMPANIES.values()]
    logins += [("DRIVER", email, DEMO_PASSWORD) for _, email, *_ in DRIVERS]
    return DemoSummary(created=True, logins=logins, cp_ids=["A", "B", "C", "D"])


async def test_a_database_the_demo_did_not_make_is_not_seeded(services: Services) -> None:
    """QA s26: `chargegraph demo` run with the service's settings (in its container, or
    beside its .env) seeded the production database with the demo admin, whose password
    the README prints, and only then found its ports taken (exit 3): that admin signed in
    to the real service."""
    await services.accounts.create_user(
        SYSTEM, email="boss@corp.example", password="S3cure-prod-pass", name="Boss",
        role=d.Role.ADMIN, company_id=None)
    before = await counts(services)
    with pytest.raises(ConfigError, match=r"SQLite /srv/cg\.db holds accounts the demo "
                                          r"did not make"):
        await seed_demo(services, database="SQLite /srv/cg.db")
    assert await counts(services) == before  # nothing written, no company either
    assert await services.ctx.store.find_one(d.User, Eq("email", ADMIN_EMAIL)) is None


async def test_a_database_a_running_service_uses_is_not_seeded(services: Services) -> None:
    """QA s26: `chargegraph demo` run in a new deployment's container (no account made
    yet) seeded the database the service ran on, whose sign-in then took the demo
    admin's public password; the demo itself only found its ports taken (exit 3)."""
    now = utcnow()
    await services.ctx.store.write([Insert(d.InstanceLease(
        id="instance-1", host="web-1", started_at=now, expires_at=now + timedelta(seconds=30)))],
        [])
    with pytest.raises(ConfigError, match=r"^the database is in use by a running instance "
                                          r"of the service: the demo seeds logins"):
        await seed_demo(services)
    assert (await counts(services))["User"] == 0
    lapsed = await services.ctx.store.find_one(d.InstanceLease, Eq("id", "instance-1"))
    assert lapsed is not None
    await services.ctx.store.write([Delete(lapsed)], [])  # it stopped: the demo may seed
    assert (await seed_demo(services)).created
