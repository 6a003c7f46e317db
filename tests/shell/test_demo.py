"""The demo world: seeded through the domain, complete, idempotent, and able to log in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from chargegraph import cli
from chargegraph.app import build_services, create_app
from chargegraph.demo import (
    ADMIN_EMAIL,
    DEMO_MADE,
    DEMO_PASSWORD,
    DemoSummary,
    admit_demo,
    banner,
    seed_demo,
)
from chargegraph.demo_database import (
    admit_mongo_database,
    drop_demo_mongo_database,
    own_database,
    prepare_demo_database,
    sqlite_marked,
)
from chargegraph.errors import ConfigError
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings
from chargegraph.stores import database_location, started_store
from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM, Viewer
from domain.ports import Delete, Insert
from domain.query import ALL, Eq
from domain.services import Services
from store.sqlite import SqliteStore
from store.sqlite.migrations import MIGRATIONS, apply_migrations
from tests.support.mongo_backend import open_mongo_store

#: The deployment's secret the services' keys derive from (``build_services``).
SECRET = "demo-test-secret-long-enough-for-hs256"


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    store = SqliteStore(str(tmp_path / "demo.db"))
    await store.start()
    try:
        yield build_services(Settings(), store, Argon2Hasher.fast(), SECRET)
    finally:
        await store.close()


async def counts(services: Services) -> dict[str, int]:
    store = services.ctx.store
    kinds = (d.Company, d.User, d.Station, d.Connector, d.Tariff, d.Vehicle, d.IdTag,
             d.Site)
    return {kind.__name__: await store.count(kind, ALL) for kind in kinds}


async def test_seed_demo_builds_the_world_once(services: Services) -> None:
    first = await seed_demo(services, new=True)
    assert first.created
    world = await counts(services)
    assert world == {"Company": 2, "User": 6, "Station": 8, "Connector": 16, "Tariff": 3,
                     "Vehicle": 3, "IdTag": 3, "Site": 1}
    [depot] = await services.ctx.store.find_all(d.Site, ALL)
    assert [s.cp_id for s in await services.ctx.store.find_all(
        d.Station, Eq("site_id", depot.id))] == ["BER-TXL-01"]
    again = await seed_demo(services, new=False)
    assert not again.created and again.logins == first.logins
    assert await counts(services) == world
    stations = await services.ctx.store.find_all(d.Station, ALL)
    assert all(s.lat is not None and s.lon is not None and s.address
               and 52.3 < s.lat < 52.7 and 12.9 < s.lon < 13.8 for s in stations)
    assert {c.type for c in await services.ctx.store.find_all(d.Connector, ALL)} == {
        d.ConnectorType.TYPE2, d.ConnectorType.CCS2}


async def test_every_demo_login_works(services: Services) -> None:
    summary = await seed_demo(services, new=True)
    roles = {role for role, *_ in summary.logins}
    assert roles == {"ADMIN", "OPERATOR", "DRIVER"}
    for role, email, password in summary.logins:
        user = await services.accounts.authenticate(email, password)
        assert user.role.value == role
        if role == "OPERATOR":
            assert user.company_id is not None


async def test_an_interrupted_seed_is_completed(services: Services,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = services.ctx.store
    issue = services.fleet.issue_id_tag
    issued = 0

    async def stopped_at_the_second_card(*args: Any, **kwargs: Any) -> d.IdTag:
        nonlocal issued
        issued += 1
        if issued == 2:  # as if the demo was stopped here: no second card, no admin
            raise asyncio.CancelledError
        return await issue(*args, **kwargs)

    monkeypatch.setattr(services.fleet, "issue_id_tag", stopped_at_the_second_card)
    with pytest.raises(asyncio.CancelledError):
        await seed_demo(services, new=True)
    assert await store.find_one(d.User, Eq("email", ADMIN_EMAIL)) is None
    monkeypatch.undo()
    # The next start finds the database there, marked as the demo's, and completes it.
    assert (await seed_demo(services, new=False)).created
    assert await counts(services) == {"Company": 2, "User": 6, "Station": 8, "Connector": 16,
                                      "Tariff": 3, "Vehicle": 3, "IdTag": 3, "Site": 1}
    assert (await services.accounts.authenticate(ADMIN_EMAIL, DEMO_PASSWORD)).role.value == (
        "ADMIN")
    assert not (await seed_demo(services, new=False)).created


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


def test_the_banner_says_where_the_chargers_keep_their_state(tmp_path: Path) -> None:
    """QA s31: the demo kept its chargers' state in a file it never mentioned."""
    url, ocpp = "http://127.0.0.1:8000/graphql", "ws://127.0.0.1:9000/ocpp"
    state = tmp_path / "demo.db.chargers.json"
    shown = banner(seed_summary(), url, ocpp, state_file=state).splitlines()
    assert len({len(line) for line in shown}) == 1  # still a rectangle
    [line] = [line for line in shown if "Chargers' state" in line]
    assert line.startswith(f"| Chargers' state     {state} (")
    assert "a new world, first start or --reset, removes it" in line
    assert "Chargers' state" not in banner(seed_summary(), url, ocpp)


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
    with pytest.raises(ConfigError, match=r"^SQLite /srv/cg\.db was not made by the demo: "
                                          r".*sqlite:///demo\.db") as refused:
        await seed_demo(services, new=False, database="SQLite /srv/cg.db")
    assert "--reset" not in str(refused.value)  # never told to delete a deployment's file
    assert await counts(services) == before  # nothing written, no company either
    assert await services.ctx.store.find_one(d.User, Eq("email", ADMIN_EMAIL)) is None
    assert await services.ctx.store.sequence_value(DEMO_MADE) == 0  # not marked either


async def test_a_database_without_accounts_the_demo_did_not_make_is_not_seeded(
        services: Services) -> None:
    """Review r26-onboard: the rule was "no account the demo did not make", which a new
    deployment's database passes before its first account is made."""
    with pytest.raises(ConfigError, match="was not made by the demo"):
        await seed_demo(services, new=False)
    assert (await counts(services))["User"] == 0
    assert await services.ctx.store.sequence_value(DEMO_MADE) == 0


async def test_the_database_a_graphql_only_service_runs_on_is_not_seeded(
        tmp_path: Path) -> None:
    """Review r26-onboard: the lease check only sees instances that run the OCPP server:
    a deployment's GraphQL-only instance (CHARGEGRAPH_OCPP_ENABLED=false, README "several
    instances") holds no lease, so `chargegraph demo --no-chargers` in its container,
    before the first account was made, seeded the live database with the public demo
    admin (then found port 8000 taken, exit 3)."""
    url = f"sqlite:///{tmp_path}/prod.db"
    settings = Settings(_env_file=None, database_url=url,  # type: ignore[call-arg]
                        jwt_secret="p" * 40, ocpp_enabled=False)
    app = create_app(settings, hasher=Argon2Hasher.fast())
    async with app.router.lifespan_context(app):  # the service, up and serving
        with pytest.raises(ConfigError, match="was not made by the demo"):
            await prepare_demo_database(url)  # as `chargegraph demo` looks before it opens
        async with started_store(url) as store:
            services = build_services(settings, store, Argon2Hasher.fast(), SECRET)
            try:
                with pytest.raises(ConfigError, match="was not made by the demo"):
                    await seed_demo(services, new=False)
            finally:
                seeded = await store.find_one(d.User, Eq("email", ADMIN_EMAIL))
                marked = await store.sequence_value(DEMO_MADE)
        assert seeded is None, "the running service's database got the demo admin"
        assert not marked


async def test_a_demo_database_a_running_service_uses_is_not_seeded(
        services: Services) -> None:
    """QA s26: the lease check stays for a database the demo marked, half-seeded, that
    an instance of the service now runs on."""
    now = utcnow()
    await services.ctx.store.next_sequence(DEMO_MADE)  # the demo made it, then stopped
    await services.ctx.store.write([Insert(d.InstanceLease(
        id="instance-1", host="web-1", started_at=now, expires_at=now + timedelta(seconds=30)))],
        [])
    with pytest.raises(ConfigError, match=r"^the database is in use by a running instance "
                                          r"of the service: the demo seeds logins"):
        await seed_demo(services, new=False)
    assert (await counts(services))["User"] == 0
    lapsed = await services.ctx.store.find_one(d.InstanceLease, Eq("id", "instance-1"))
    assert lapsed is not None
    await services.ctx.store.write([Delete(lapsed)], [])  # it stopped: the demo may seed
    assert (await seed_demo(services, new=False)).created


async def test_a_second_start_after_the_admin_changed_its_email(services: Services) -> None:
    """Review r26-onboard: the demo admin, trying the API the README shows, changed its
    email (updateUser); the next `chargegraph demo` read the demo's own admin as a
    stranger's account and refused its own database ("holds accounts the demo did not
    make"). The demo knows its database by its marks, not its accounts' e-mails."""
    store = services.ctx.store
    assert (await seed_demo(services, new=True)).created
    world = await counts(services)
    admin = await store.find_one(d.User, Eq("email", ADMIN_EMAIL))
    assert admin is not None
    await services.accounts.update_user(Viewer.of(admin), admin.id, email="me@example.org",
                                        current_password=DEMO_PASSWORD)
    again = await seed_demo(services, new=False)
    assert not again.created
    assert await counts(services) == world  # no second admin made under the old e-mail


async def test_a_database_signed_up_to_stays_the_demos(services: Services) -> None:
    """The demo turns sign-up on: a driver's own account keeps the database the demo's."""
    await seed_demo(services, new=True)
    await services.accounts.create_user(
        SYSTEM, email="tester@example.org", password="Tester-pass-1", name="Tester",
        role=d.Role.DRIVER, company_id=None)
    assert not (await seed_demo(services, new=False)).created


async def test_two_demos_started_together_on_a_new_database(tmp_path: Path) -> None:
    """Review r26-onboard: two `chargegraph demo` started at once on a new database both
    seeded it, and the second ended in a UniqueViolation traceback. One seeds; the other
    is one configuration line."""
    stores = [SqliteStore(str(tmp_path / "demo.db")) for _ in range(2)]
    for store in stores:
        await store.start()
    try:
        outcomes = await asyncio.gather(
            *(seed_demo(build_services(Settings(), store, Argon2Hasher.fast(), SECRET),
                        new=True)
              for store in stores), return_exceptions=True)
    finally:
        for store in stores:
            await store.close()
    [seeded] = [o for o in outcomes if isinstance(o, DemoSummary)]
    [refused] = [o for o in outcomes if not isinstance(o, DemoSummary)]
    assert seeded.created
    assert isinstance(refused, ConfigError), refused
    assert "being seeded by another demo started at the same time" in str(refused)


async def test_two_demos_completing_one_interrupted_seed_together(tmp_path: Path) -> None:
    """Both find the database the demo's (an interrupted seed) and complete it at once:
    one writes each missing part, the other stops with one line, not a UniqueViolation."""
    stores = [SqliteStore(str(tmp_path / "demo.db")) for _ in range(2)]
    for store in stores:
        await store.start()
    try:
        await stores[0].next_sequence(DEMO_MADE)  # made, then stopped before any write
        outcomes = await asyncio.gather(
            *(seed_demo(build_services(Settings(), store, Argon2Hasher.fast(), SECRET),
                        new=False)
              for store in stores), return_exceptions=True)
        services = build_services(Settings(), stores[0], Argon2Hasher.fast(), SECRET)
        failures = [o for o in outcomes if not isinstance(o, DemoSummary)]
        assert all(isinstance(o, ConfigError) and "being seeded by another demo" in str(o)
                   for o in failures), failures
        if failures:  # the one that stopped: the next start completes what is left
            await seed_demo(services, new=False)
        assert (await counts(services))["User"] == 6
    finally:
        for store in stores:
            await store.close()


# Review r26-onboard2: which database the demo may use is decided before any store opens
# (and so migrates) it (``chargegraph.demo_database``).

#: A `chargegraph demo` (the CLI's own ``_demo``) that stops for good once its first store
#: has started (made and migrated its file), before anything else: where a kill -9 or a
#: second demo finds it.
STALLED_DEMO = """
import asyncio, contextlib, sys
import chargegraph.stores as stores
from chargegraph.settings import Settings

started = stores.started_store

@contextlib.asynccontextmanager
async def stalled(url):
    async with started(url) as store:
        print("started", flush=True)
        await asyncio.sleep(3600)
        yield store

stores.started_store = stalled
from chargegraph import cli
settings = Settings(_env_file=None, database_url=sys.argv[1], jwt_secret="p" * 40)
asyncio.run(cli._demo(settings, None, False))
"""


def demo_settings(url: str) -> Settings:
    return Settings(_env_file=None, database_url=url,  # type: ignore[call-arg]
                    jwt_secret="p" * 40)


@contextlib.contextmanager
def stalled_demo(url: str) -> Iterator[subprocess.Popen[str]]:
    """A demo process stalled just after its store started; killed (SIGKILL) on exit."""
    process = subprocess.Popen([sys.executable, "-c", STALLED_DEMO, url],
                               stdout=subprocess.PIPE, text=True, cwd=Path.cwd(),
                               env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started", "the demo did not start"
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


async def past_admission(url: str) -> None:
    """`chargegraph demo`'s seeding, as the CLI runs it, admitted: a ConfigError is a
    refusal; any other failure comes after (no server is given: serving is not tested)."""
    try:
        await cli._demo(demo_settings(url), None, False)  # type: ignore[arg-type]
    except ConfigError:
        raise
    except Exception:
        pass


async def test_a_demo_killed_while_its_store_starts_leaves_no_database(
        tmp_path: Path) -> None:
    """Review r26-onboard2: a demo killed (kill -9, docker kill) after its store made and
    migrated the file, before the mark, left an unmarked file that every later demo
    refused ("was not made by the demo"), only --reset helping. The demo now builds its
    database beside it and puts it in place once marked: killed meanwhile, there is none,
    and the next demo makes it (and clears what the killed one left)."""
    url = f"sqlite:///{tmp_path}/demo.db"
    with stalled_demo(url):
        pass  # killed right after its store started
    assert not (tmp_path / "demo.db").exists()
    await past_admission(url)
    async with started_store(url) as store:
        assert await store.sequence_value(DEMO_MADE) == 1
        assert await store.find_one(d.User, Eq("email", ADMIN_EMAIL)) is not None
    assert sorted(os.listdir(tmp_path)) == ["demo.db"]  # the killed demo's build cleared


async def test_a_database_refused_is_not_migrated_first(tmp_path: Path) -> None:
    """Review r26-onboard2: the store started (migrating the database) before the mark was
    read, so `chargegraph demo` from a newer ChargeGraph, run where a deployment's
    settings apply, upgraded the deployment's database and only then refused it (the
    service, older, then stopped on a newer schema). README: refused untouched."""
    path = tmp_path / "prod.db"
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode = WAL")
        await apply_migrations(conn, MIGRATIONS[:-1])  # the service's (older) schema
    finally:
        await conn.close()
    with sqlite3.connect(path) as db:
        before = db.execute('SELECT MAX("version") FROM "schema_version"').fetchone()[0]
    with pytest.raises(ConfigError, match="was not made by the demo") as refused:
        await cli._demo(demo_settings(f"sqlite:///{path}"), None, False)  # type: ignore[arg-type]
    assert "--reset" not in str(refused.value)  # a deployment's file: never told to delete it
    with sqlite3.connect(path) as db:
        after = db.execute('SELECT MAX("version") FROM "schema_version"').fetchone()[0]
    assert after == before, f"refused, yet migrated from schema {before} to {after}"


async def test_a_second_demo_while_the_first_starts_its_store_is_told_so(
        tmp_path: Path) -> None:
    """Review r26-onboard2: two `chargegraph demo` at once on a fresh clone: the second,
    looking after the first's store made the file but before its mark, was told the
    demo's own new file "was not made by the demo" (and offered --reset), not the one
    line promised for it."""
    url = f"sqlite:///{tmp_path}/chargegraph.db"
    # The first demo: its store started, not yet marked.
    with stalled_demo(url), pytest.raises(ConfigError) as refused:
        await cli._demo(demo_settings(url), None, False)  # type: ignore[arg-type]
    assert "being seeded by another demo started at the same time" in str(refused.value), \
        str(refused.value)


async def test_two_demos_making_one_new_database_at_once(tmp_path: Path) -> None:
    """The build is put in place only if nothing took the name: one demo makes the
    database, the other is the one line (never a database replaced under the first)."""
    url = f"sqlite:///{tmp_path}/demo.db"
    outcomes = await asyncio.gather(prepare_demo_database(url), prepare_demo_database(url),
                                    return_exceptions=True)
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 1 and "another demo" in str(refused[0]), outcomes
    assert [name for name in os.listdir(tmp_path) if "demo-build" in name] == []
    assert sqlite_marked(tmp_path / "demo.db", "d") == 1


async def test_the_refusal_of_a_mongodb_database_advises_what_works() -> None:
    """Review r26-onboard2: on MongoDB the refusal advised `chargegraph demo --reset`,
    which answered "--reset works on SQLite databases only". A database without the
    demo's mark is refused untouched with MongoDB's advice, never --reset (it may be a
    deployment's); --reset drops only a database the demo marked."""
    url = "mongodb://user:secret@mongo:27017/chargegraph"
    database, own = database_location(url), own_database(url)
    async with open_mongo_store() as store:  # a deployment's, or an older demo's: no mark
        services = build_services(Settings(), store, Argon2Hasher.fast(), SECRET)
        for refusal in (admit_mongo_database(store.db, database, own),
                        admit_demo(services, new=False, database=database, own=own)):
            with pytest.raises(ConfigError, match="was not made by the demo") as refused:
                await refusal
            assert "--reset" not in str(refused.value), refused.value
            assert "CHARGEGRAPH_DATABASE_URL=mongodb://mongo:27017/chargegraph-demo" in str(
                refused.value)
        with pytest.raises(ConfigError, match=r"--reset: .* not dropped"):
            await drop_demo_mongo_database(store.db, database, own)
        assert await store.sequence_value(DEMO_MADE) == 0  # untouched
        assert await store.db.list_collection_names()
        await store.next_sequence(DEMO_MADE)  # the demo's
        assert await drop_demo_mongo_database(store.db, database, own)
        assert await store.db.list_collection_names() == []
        await admit_mongo_database(store.db, database, own)  # empty: marked, first write
        assert await store.sequence_value(DEMO_MADE) == 1


# Review r26-onboard3.

#: `chargegraph demo` where Python has no ``fcntl`` (as on Windows).
WITHOUT_FCNTL = """
import asyncio, sys
sys.modules["fcntl"] = None  # as on Windows: there is no fcntl module
from chargegraph import cli
from chargegraph.settings import Settings
settings = Settings(_env_file=None, database_url=sys.argv[1], jwt_secret="p" * 40)
try:
    asyncio.run(cli._demo(settings, None, False))
except AttributeError:  # no server given: seeding done, serving not tested
    print("seeded")
"""


def test_the_demo_runs_where_python_has_no_fcntl(tmp_path: Path) -> None:
    """Review r26-onboard3: `chargegraph/demo_database.py` imported ``fcntl`` (POSIX only)
    at module level, so on Windows every demo, SQLite or MongoDB, ended in
    ModuleNotFoundError before anything. The build's lock is portable now."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL, f"sqlite:///{tmp_path}/demo.db"],
        capture_output=True, text=True, timeout=300, cwd=Path.cwd(),
        env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert "seeded" in result.stdout, result.stderr[-600:]
    assert sorted(os.listdir(tmp_path)) == ["demo.db"]  # its build and lock file removed


def test_without_fcntl_a_build_lock_tells_a_live_demo_from_a_killed_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``fcntl`` the build's lock file holds its demo's process id: a build whose
    demo is gone (a process id no process has) is cleared; one whose demo runs is
    another demo building."""
    from chargegraph import demo_database

    monkeypatch.setattr(demo_database, "_fcntl", lambda: None)
    path = tmp_path / "demo.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    killed = tmp_path / f".demo.db{demo_database.BUILD}killed"
    killed.write_bytes(b"half a database")
    (tmp_path / f"{killed.name}.lock").write_text(dead)
    assert not demo_database._found(path, "d", "own")  # the killed demo's build cleared
    assert sorted(os.listdir(tmp_path)) == []
    building = demo_database._locked(tmp_path / f".demo.db{demo_database.BUILD}live.lock")
    try:
        assert (tmp_path / f".demo.db{demo_database.BUILD}live.lock").read_text() == str(
            os.getpid())
        with pytest.raises(ConfigError, match="being seeded by another demo"):
            demo_database._found(path, "d", "own")
    finally:
        demo_database._release(Path(building.name), building)
    assert sorted(os.listdir(tmp_path)) == []


async def test_the_refusal_of_demo_db_advises_another_name_and_deleting_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r26-onboard3: the refusal's only advice was "run the demo on a database of
    its own (CHARGEGRAPH_DATABASE_URL=sqlite:///demo.db chargegraph demo)": refusing
    demo.db itself (an older demo's, without the mark), it advised the very command just
    refused. It now names another file, and, demo.db being the demo's own name, says an
    old demo database there can be deleted; for another name it never says so."""
    monkeypatch.chdir(tmp_path)
    for name in ("demo.db", "prod.db"):
        conn = await aiosqlite.connect(str(tmp_path / name), isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            await apply_migrations(conn, MIGRATIONS)  # an older demo's file: no mark
        finally:
            await conn.close()
    with pytest.raises(ConfigError, match="was not made by the demo") as refused:
        await prepare_demo_database("sqlite:///demo.db")
    assert "sqlite:///demo.db chargegraph demo" not in str(refused.value), refused.value
    assert "CHARGEGRAPH_DATABASE_URL=sqlite:///demo-2.db chargegraph demo" in str(
        refused.value)
    assert "delete it" in str(refused.value) and "--reset" in str(refused.value)
    with pytest.raises(ConfigError, match="was not made by the demo") as refused:
        await prepare_demo_database("sqlite:///prod.db")
    assert str(refused.value).endswith(
        "run the demo on a database of its own: "
        "CHARGEGRAPH_DATABASE_URL=sqlite:///demo.db chargegraph demo"), refused.value
    assert "delete" not in str(refused.value) and "--reset" not in str(refused.value)


def test_the_refusal_of_chargegraph_demo_on_mongodb_advises_another_name() -> None:
    """MongoDB's own name as well: never the refused database, and dropping it is by
    hand (``--reset`` drops only a marked database)."""
    own = own_database("mongodb://user:secret@mongo:27017/chargegraph-demo?authSource=admin")
    assert own.startswith("CHARGEGRAPH_DATABASE_URL=mongodb://mongo:27017/chargegraph-demo-2 "
                          "chargegraph demo; or, if chargegraph-demo is an older demo's"), own
    assert "db.dropDatabase()" in own
    assert own_database("mongodb://mongo/prod") == (
        "CHARGEGRAPH_DATABASE_URL=mongodb://mongo/chargegraph-demo chargegraph demo")


def micros(moment: Any) -> int:
    return int(moment.timestamp() * 1_000_000)


async def test_a_demo_database_a_running_service_uses_is_refused_before_it_is_migrated(
        tmp_path: Path) -> None:
    """Review r26-onboard3, README: "... is refused untouched (not even migrated), and so
    is a demo database a running service uses". A demo database (marked, its seed
    interrupted) an older `chargegraph serve` runs on (a live lease): the demo found the
    mark, started the store, which migrated the running service's database, and only
    then read the lease and refused. The lease is now read as the mark is (mode=ro)."""
    path = tmp_path / "chargegraph.db"
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode = WAL")
        await apply_migrations(conn, MIGRATIONS[:-1])  # the running service's schema
        await conn.execute('INSERT INTO "sequence" VALUES (?, 1)', (DEMO_MADE,))
        now = utcnow()
        await conn.execute(
            # Columns named: later migrations add some with defaults (72).
            'INSERT INTO "instance_lease" ("id", "created_at", "updated_at", "created_by", '
            '"updated_by", "host", "started_at", "expires_at") '
            'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            ("instance-1", micros(now), micros(now), "system", "system", "web-1",
             micros(now), micros(now + timedelta(minutes=5))))
    finally:
        await conn.close()
    with sqlite3.connect(path) as db:
        before = db.execute('SELECT MAX("version") FROM "schema_version"').fetchone()[0]
    with pytest.raises(ConfigError, match="in use by a running instance"):
        await cli._demo(demo_settings(f"sqlite:///{path}"), None, False)  # type: ignore[arg-type]
    with sqlite3.connect(path) as db:
        after = db.execute('SELECT MAX("version") FROM "schema_version"').fetchone()[0]
    assert after == before, (f"refused as in use by a running service, yet its database "
                             f"was migrated from schema {before} to {after} first")


async def test_a_complete_demo_database_a_running_service_uses_is_refused(
        tmp_path: Path) -> None:
    """Review r26-onboard3: a complete demo database a running demo or service leases was
    not refused (the complete world returned before the lease was read), and a second demo
    served on it, its simulated chargers and the first's kicking each other off."""
    from chargegraph.demo import DEMO_SEEDED

    url = f"sqlite:///{tmp_path}/chargegraph.db"
    async with started_store(url) as store:
        await store.next_sequence(DEMO_MADE)
        await store.next_sequence(DEMO_SEEDED)
        now = utcnow()
        await store.write([Insert(d.InstanceLease(
            id="instance-1", host="web-1", started_at=now,
            expires_at=now + timedelta(minutes=5)))], [])
        services = build_services(Settings(), store, Argon2Hasher.fast(), SECRET)
        with pytest.raises(ConfigError, match="in use by a running instance"):
            await admit_demo(services, new=False)  # the rule on the store as well
    with pytest.raises(ConfigError, match="in use by a running instance"):
        await prepare_demo_database(url)  # before any store opens it
    with pytest.raises(ConfigError, match="in use by a running instance"):
        await cli._demo(demo_settings(url), None, False)  # type: ignore[arg-type]


async def test_a_mongodb_demo_database_a_running_service_uses_is_refused_unopened() -> None:
    """MongoDB's parity: the lease read with the mark, by the plain client, before the
    store starts."""
    url = "mongodb://mongo:27017/chargegraph-demo"
    database, own = database_location(url), own_database(url)
    async with open_mongo_store() as store:
        await store.next_sequence(DEMO_MADE)
        await admit_mongo_database(store.db, database, own)  # the demo's, nobody on it
        now = utcnow()
        await store.write([Insert(d.InstanceLease(
            id="0123456789abcdef01234567", host="web-1", started_at=now,
            expires_at=now + timedelta(minutes=5)))], [])
        with pytest.raises(ConfigError, match="in use by a running instance") as refused:
            await admit_mongo_database(store.db, database, own)
        assert "chargegraph-demo-2" in str(refused.value)


async def test_a_marked_mongodb_database_a_service_took_over_is_not_seeded() -> None:
    """Review r26-onboard3: MongoDB's mark is the first write, before the store starts; a
    start that then failed left an empty database marked, on which a service may since
    run (no lease: GraphQL only). Its seed never completed, so it holds only the demo's
    logins if it is the demo's: with anyone else's account it is refused, untouched."""
    from chargegraph.demo import DEMO_SEEDED

    url = "mongodb://mongo:27017/chargegraph"
    database, own = database_location(url), own_database(url)
    async with open_mongo_store() as store:
        services = build_services(Settings(), store, Argon2Hasher.fast(), SECRET)
        await store.next_sequence(DEMO_MADE)  # a demo marked it, then failed to start
        await services.accounts.create_user(  # an interrupted seed: the demo's logins
            SYSTEM, email="mia@demo.chargegraph.dev", password=DEMO_PASSWORD,
            name="Mia Driver", role=d.Role.DRIVER, company_id=None)
        await admit_mongo_database(store.db, database, own)
        await services.accounts.create_user(
            SYSTEM, email="boss@corp.example", password="S3cure-prod-pass", name="Boss",
            role=d.Role.ADMIN, company_id=None)
        with pytest.raises(ConfigError, match="was not made by the demo"):
            await admit_mongo_database(store.db, database, own)
        await store.next_sequence(DEMO_SEEDED)  # complete: signed-up accounts are the demo's
        await admit_mongo_database(store.db, database, own)
