"""The app factory: health, GraphQL through the wiring, configuration checked up front."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from chargegraph import __version__
from chargegraph.app import create_app
from chargegraph.errors import ConfigError
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings
from domain.services import Services
from store.sqlite.migrations import MIGRATIONS
from tests.graph.test_error_codes_documented import _bullet

#: The SQLite schema this build migrates to.
SCHEMA = MIGRATIONS[-1][0]


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"database_url": f"sqlite:///{tmp_path}/app.db",
                                 "ocpp_enabled": False, **overrides}
    return Settings(**values)  # type: ignore[arg-type]


def test_healthz_and_graphql_through_the_app(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    with TestClient(app) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "store": "ok", "version": __version__,
                                 "schema": SCHEMA}
        answer = client.post("/graphql", json={"query": "{ __typename }"})
        assert answer.status_code == 200
        assert answer.json() == {"data": {"__typename": "Query"}}
        assert client.get("/", follow_redirects=False).headers["location"] == "/graphql"
        assert isinstance(app.state.services, Services)
    assert (tmp_path / "app.db").exists()
    # The generated secret lives beside the SQLite file by default.
    assert (tmp_path / ".chargegraph" / "jwt_secret").exists()


@pytest.mark.parametrize("path", ["/export/me.json", "/export/users/x.json",
                                  "/export/sessions.csv"])
def test_a_download_while_starting_answers_as_the_http_answers_say(tmp_path: Path,
                                                                   path: str) -> None:
    """README "HTTP answers": the downloads carry ``{"errors": [{"field", "code",
    "message"}]}``, a 503 while the service is starting ``SERVICE_UNAVAILABLE``. Asked
    before the lifespan built the services, they answered /graphql's shape, with no
    ``code`` where a download client reads it (review r26-api2); /graphql keeps its own."""
    client = TestClient(create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast()))
    # Not entered: the lifespan has not run, as for a request during start-up.
    answer = client.get(path)
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["code"] == "SERVICE_UNAVAILABLE", answer.text
    assert "`SERVICE_UNAVAILABLE`" in _bullet("HTTP answers")
    graphql = client.post("/graphql", json={"query": "{ __typename }"})
    assert graphql.status_code == 503
    assert graphql.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


def test_the_ready_line_names_the_database(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """QA (onboarding): a `serve` started from another folder than create-user serves
    another database; the ready line says which, by absolute path, and that it is new
    when the start made it (QA s31: a typo served a new, empty database)."""
    for _ in range(2):
        with caplog.at_level(logging.INFO, logger="chargegraph"), \
                TestClient(create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())):
            pass
    ready = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("ChargeGraph ready")]
    line = ("ChargeGraph ready: GraphQL on http://127.0.0.1:8000/graphql, "
            f"database SQLite {tmp_path.resolve()}/app.db")
    assert ready == [f"{line} (new database, created now)", line]


def test_healthz_says_when_events_do_not_reach_the_other_instances(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA (s16, SRE): with Redis down /healthz said nothing, though events and commands
    between instances had stopped. Said (not a 503: every instance shares the outage)."""
    from pubsub.memory import MemoryEventBus

    app = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    with TestClient(app) as client:
        monkeypatch.setattr(MemoryEventBus, "connected", property(lambda self: False))
        health = client.get("/healthz")
        assert (health.status_code, health.json()["events"]) == (200, "unavailable")
        monkeypatch.undo()
        assert "events" not in client.get("/healthz").json()


def test_healthz_tells_the_database_schema_the_instance_runs_with(tmp_path: Path) -> None:
    """A rolling upgrade's operator reads each instance's build and schema: the version
    stayed 0.2.0 across schemas 23 to 29, and nothing told the schema."""
    import sqlite3

    with TestClient(create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())) as client:
        health = client.get("/healthz").json()
    with sqlite3.connect(tmp_path / "app.db") as database:
        [(migrated,)] = database.execute('SELECT MAX("version") FROM "schema_version"')
    assert health["schema"] == migrated == SCHEMA


def test_healthz_tells_the_schema_on_mongodb_too(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s32: on MongoDB /healthz had no ``schema``, and README said the version told
    the builds apart, though it stayed 0.3.0 across some 54 migrations. The number is
    SQLite's, the one the store's start recorded (``claim_schema``)."""
    from chargegraph import stores
    from store.mongo import MongoStore
    from store.mongo.migrations import MIGRATIONS as RECORDS
    from tests.support.mongomock_async import async_mongomock_database

    database = async_mongomock_database()
    monkeypatch.setattr(stores, "open_store", lambda url: MongoStore(database,
                                                                     sweep_every=None))
    app = create_app(settings_for(tmp_path, database_url="mongodb://127.0.0.1:27017/cg"),
                     hasher=Argon2Hasher.fast())
    with TestClient(app) as client:
        health = client.get("/healthz").json()
        recorded = client.portal.call(  # type: ignore[union-attr]
            lambda: database[RECORDS].find_one({"_id": "schema"}))
    assert health["schema"] == recorded["version"] == SCHEMA


#: The last SQLite schema of each released version (add one at each release).
#: 0.3.0 then stayed through schemas 30 to 84 (QA s32: on MongoDB, whose /healthz said
#: no schema, nothing told those builds apart).
RELEASED_SCHEMAS = {"0.2.0": 22, "0.3.0": 29}


def test_the_webhooks_wait_the_offline_grace_set(tmp_path: Path) -> None:
    from datetime import timedelta

    for grace in (0.0, 12.5):
        app = create_app(settings_for(tmp_path, offline_webhook_grace_s=grace),
                         hasher=Argon2Hasher.fast())
        with TestClient(app):
            assert app.state.webhooks.offline_grace == timedelta(seconds=grace)


def test_a_newer_schema_is_a_newer_version() -> None:
    """A build whose schema is past a released version's does not carry that version's
    number: 0.2.0 stayed through schemas 23 to 29, and /healthz could not tell them apart."""
    assert [version for version, schema in RELEASED_SCHEMAS.items()
            if schema < SCHEMA and version == __version__] == []


def test_every_http_answer_carries_the_security_headers(tmp_path: Path) -> None:
    from chargegraph.headers import SECURITY_HEADERS

    with TestClient(create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())) as client:
        answers = [client.get("/healthz"), client.get("/graphql", headers={"accept":
                                                                            "text/html"}),
                   client.post("/graphql", json={"query": "{ __typename }"}),
                   client.post("/graphql", content=b"not json",
                               headers={"content-type": "application/json"})]
        for answer in answers:
            for name, value in SECURITY_HEADERS:
                assert answer.headers[name.decode()] == value.decode(), (answer.url, name)


def test_healthz_503_when_the_store_does_not_answer(tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())) as client:
        async def down() -> str | None:
            raise OSError("database gone")

        client.app.state.store.health = down  # type: ignore[attr-defined]
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "store": "unavailable",
                                 "reason": "the store does not answer",
                                 "version": __version__, "schema": SCHEMA}


def test_graphiql_follows_settings(tmp_path: Path) -> None:
    browser = {"accept": "text/html"}
    on = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    with TestClient(on) as client:
        assert "graphiql" in client.get("/graphql", headers=browser).text.lower()
    off = create_app(settings_for(tmp_path, graphiql=False), hasher=Argon2Hasher.fast())
    with TestClient(off) as client:
        assert "graphiql" not in client.get("/graphql", headers=browser).text.lower()


def test_introspection_off_refuses_schema_questions_on_both_doors(tmp_path: Path) -> None:
    """QA s26: introspection could not be switched off. ``CHARGEGRAPH_INTROSPECTION=false``
    refuses ``__schema`` and ``__type`` over HTTP and the websocket, leaves out the "Did
    you mean" suggestions that read the schema back a guess at a time, and GraphiQL;
    plain queries (``__typename`` too) still run. On by default."""
    schema_query = {"query": "{ __schema { queryType { name } } }"}
    typo = {"query": "{ stationz { totalCount } }"}
    with TestClient(create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())) as on:
        assert on.post("/graphql", json=schema_query).json() == {
            "data": {"__schema": {"queryType": {"name": "Query"}}}}
        assert "Did you mean 'station', 'stations'" in on.post("/graphql", json=typo).text
    off = create_app(settings_for(tmp_path, introspection=False, public_map=True),
                     hasher=Argon2Hasher.fast())
    with TestClient(off) as client:
        for query in (schema_query, {"query": '{ __type(name: "Station") { name } }'}):
            refused = client.post("/graphql", json=query).json()
            assert "data" not in refused
            assert "introspection has been disabled" in refused["errors"][0]["message"]
        refused = client.post("/graphql", json=typo).json()["errors"][0]["message"]
        assert refused == "Cannot query field 'stationz' on type 'Query'."
        bad_enum = client.post("/graphql", json={"query": "query($f: StationFilter) "
                                                          "{ stations(filter: $f) { totalCount } }",
                                                 "variables": {"f": {"cpIdz": "x"}}})
        assert "Did you mean" not in bad_enum.text and "cpIdz" in bad_enum.text
        assert client.post("/graphql", json={"query": "{ __typename }"}).json() == {
            "data": {"__typename": "Query"}}
        page = client.get("/graphql", headers={"accept": "text/html"})
        assert "graphiql" not in page.text.lower()
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": {}})
            assert ws.receive_json()["type"] == "connection_ack"
            ws.send_json({"id": "1", "type": "subscribe", "payload": schema_query})
            answer = ws.receive_json()
            assert answer["type"] == "error", answer
            assert "introspection has been disabled" in answer["payload"][0]["message"]


def test_the_websockets_errors_suggest_nothing_with_introspection_off(
        tmp_path: Path) -> None:
    """Review s26: over the websocket a subscription's variable errors (coerced by
    ``Executor.build``) were sent with their "Did you mean" suggestions, which HTTP left
    out. Both a variable's and a validation error's go without them on both doors."""
    subscription = ("subscription($f: StationEventFilter) "
                    "{ stationConnectionChanged(filter: $f) { __typename } }")
    off = create_app(settings_for(tmp_path, introspection=False, public_map=True),
                     hasher=Argon2Hasher.fast())
    with TestClient(off) as client, client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe",
                      "payload": {"query": subscription,
                                  "variables": {"f": {"cpIdz": ["CP-1"]}}}})
        answer = ws.receive_json()
        assert answer["type"] == "error", answer
        messages = " ".join(e["message"] for e in answer["payload"])
        assert "cpIdz" in messages and "Did you mean" not in messages, messages
        ws.send_json({"id": "2", "type": "subscribe",
                      "payload": {"query": "{ stationz { totalCount } }"}})
        answer = ws.receive_json()
        assert answer["type"] == "error", answer
        assert [e["message"] for e in answer["payload"]] == [
            "Cannot query field 'stationz' on type 'Query'."]


@pytest.mark.parametrize("overrides", [{"jwt_secret": "short"},
                                       {"database_url": "postgres://db/x"},
                                       {"pubsub_url": "kafka://broker:9092"},
                                       {"pubsub_url": "redis://r/0", "pubsub_prefix": "a b"}])
def test_bad_configuration_fails_before_serving(tmp_path: Path,
                                                overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        create_app(settings_for(tmp_path, **overrides))


async def startup_messages(app: object) -> list[dict[str, object]]:
    """What the server hears from the app's lifespan when it asks it to start."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    with pytest.raises(Exception):  # noqa: B017 - Starlette re-raises the failure
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},  # type: ignore[operator]
                  receive, send)
    return sent


async def test_an_unreachable_redis_fails_start_up_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chargegraph.app
    from pubsub.redis import RedisEventBus
    from tests.helpers import loopback_socket

    monkeypatch.setattr(chargegraph.app, "open_event_bus",
                        lambda url, **_: RedisEventBus(url, start_timeout=0.3))
    with loopback_socket() as nothing:  # held: nothing else can listen there meanwhile
        url = f"redis://user:hunter2@127.0.0.1:{nothing.getsockname()[1]}/0"
        app = create_app(settings_for(tmp_path, pubsub_url=url), hasher=Argon2Hasher.fast())
        [failed] = await startup_messages(app)
    assert failed["type"] == "lifespan.startup.failed"
    # Ending with why the last attempt failed (QA: a wrong password was only in
    # the WARNINGs before this line).
    message = str(failed["message"])
    assert message.startswith(
        f"cannot start the event bus: cannot subscribe to Redis at "
        f"{url.replace('hunter2', '***')} within 0.3s: ConnectionError: Error 111 "
        "connecting to 127.0.0.1:")
    assert "hunter2" not in message


async def test_a_bug_at_start_up_keeps_its_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chargegraph.app

    def broken(url: str, **_: object) -> object:
        raise KeyError("a bug")

    monkeypatch.setattr(chargegraph.app, "open_event_bus", broken)
    app = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    [failed] = await startup_messages(app)
    assert "Traceback" in str(failed["message"]) and "KeyError" in str(failed["message"])


async def test_a_database_folder_that_cannot_be_made_fails_start_up_with_one_line(
        tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    url = f"sqlite:///{tmp_path}/a-file/data/app.db"
    app = create_app(settings_for(tmp_path, database_url=url, jwt_secret="j" * 40),
                     hasher=Argon2Hasher.fast())
    [failed] = await startup_messages(app)
    assert failed["message"] == (f"cannot start the store at {url}: [Errno 20] Not a "
                                 f"directory: '{tmp_path}/a-file/data'")


def test_a_stop_lets_background_releases_finish_on_an_open_store(tmp_path: Path) -> None:
    """What a deactivation releases in the background (the user's reservations) finishes
    before the store closes, not against a closed one."""
    import asyncio

    app = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    finished: list[bool] = []
    with TestClient(app) as client:
        accounts = app.state.services.accounts

        async def release() -> None:
            await asyncio.sleep(0.2)
            finished.append(await app.state.store.ping())

        async def start() -> None:
            accounts._releasing.run(release(), "release", "releasing failed")

        client.portal.call(start)  # type: ignore[union-attr]
    assert finished == [True]


def _sign_in_admin(client: TestClient, app: object) -> str:
    from domain.entities import Role
    from domain.policy import SYSTEM

    services = app.state.services  # type: ignore[attr-defined]

    async def make() -> None:
        await services.accounts.create_user(SYSTEM, email="root@example.com",
                                            password="root-pass-123", name="Root",
                                            role=Role.ADMIN)

    client.portal.call(make)  # type: ignore[union-attr]
    answer = client.post("/graphql", json={"query": 'mutation { login(email: '
                                                    '"root@example.com", password: '
                                                    '"root-pass-123") { token } }'})
    return str(answer.json()["data"]["login"]["token"])


def test_a_database_file_deleted_while_serving_is_a_503_and_refused_writes(
        tmp_path: Path) -> None:
    """Health said ok and every write was acknowledged into the unlinked file, all of it
    gone at the next start. Now health names the problem and writes are refused."""
    app = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    create = ('mutation { createUser(input: {email: "new@example.com", password: '
              '"driver-pass-123", name: "New"}) { user { id } errors { field message code } } }')
    with TestClient(app) as client:
        token = _sign_in_admin(client, app)
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"app.db{suffix}").unlink(missing_ok=True)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "store": "unavailable",
                                 "reason": "the database file was deleted while the "
                                           "service ran: writes are refused",
                                 "version": __version__, "schema": SCHEMA}
        answer = client.post("/graphql", json={"query": create},
                             headers={"authorization": f"Bearer {token}"}).json()
        assert answer == {"data": {"createUser": {"user": None, "errors": [
            {"field": None, "code": "STORE_UNAVAILABLE",
             "message": "the store cannot write now (the database file was deleted while "
                        "the service ran): nothing was written"}]}}}


def test_a_mutation_answered_a_store_failure_counts_as_an_error_in_metrics(
        tmp_path: Path) -> None:
    """QA s32: with the disk full, ``login`` answered ``errors: [{code:
    STORE_UNAVAILABLE}]`` in its payload and /metrics counted it ``ok``. A payload's
    user error (a wrong password) stays ``ok``, as README documents; a store failure in
    it is the service's, an ``error``. Here the database file is deleted under the
    service, which refuses every write so."""
    from tests.e2e.test_metrics import parse, value

    app = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    login = ('mutation { login(email: "root@example.com", password: "%s") '
             '{ token errors { code } } }')
    requests = "chargegraph_graphql_requests_total"
    with TestClient(app) as client:
        _sign_in_admin(client, app)
        wrong = client.post("/graphql", json={"query": login % "wrong-pass-123"}).json()
        assert wrong["data"]["login"]["errors"][0]["code"] != "STORE_UNAVAILABLE"
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"app.db{suffix}").unlink(missing_ok=True)
        failed = client.post("/graphql", json={"query": login % "root-pass-123"}).json()
        assert failed["data"]["login"]["errors"] == [{"code": "STORE_UNAVAILABLE"}]
        samples, _ = parse(client.get("/metrics").text)
    # The first sign-in and the wrong password: ok; the store's failure: an error.
    assert value(samples, requests, operation="mutation", transport="http",
                 outcome="ok") == 2
    assert value(samples, requests, operation="mutation", transport="http",
                 outcome="error") == 1


def test_a_mutation_answered_store_refused_counts_as_ok_in_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-f: ``STORE_REFUSED`` (too large to store: the same request fails again)
    is the request's fault, as a user error is, and was counted ``error``. Here the
    store refuses the sign-in's write as MongoDB refuses a document over 16 MiB."""
    from domain.errors import StoreRefused
    from tests.e2e.test_metrics import parse, value

    app = create_app(settings_for(tmp_path), hasher=Argon2Hasher.fast())
    login = ('mutation { login(email: "root@example.com", password: "root-pass-123") '
             '{ token errors { code } } }')
    requests = "chargegraph_graphql_requests_total"

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise StoreRefused("the write was refused: too large", reason="too large")

    with TestClient(app) as client:
        _sign_in_admin(client, app)
        monkeypatch.setattr(app.state.store, "write", refused)
        answer = client.post("/graphql", json={"query": login}).json()
        monkeypatch.undo()  # the service's stop writes
        assert answer["data"]["login"]["errors"] == [{"code": "STORE_REFUSED"}]
        samples, _ = parse(client.get("/metrics").text)
    assert value(samples, requests, operation="mutation", transport="http",
                 outcome="ok") == 2
    assert value(samples, requests, operation="mutation", transport="http",
                 outcome="error") is None


async def test_a_store_that_cannot_write_at_start_up_is_named_in_the_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The OCPP server's start writes first (every charger recorded offline). On a full
    disk that was "cannot start the OCPP server on …: database or disk is full", as if
    the port were at fault. Here the file refuses writes as a read-only mount would."""
    from store.sqlite import SqliteStore
    from tests.helpers import loopback_socket

    started = SqliteStore.start

    async def read_only(self: SqliteStore) -> None:
        await started(self)
        assert self._writer is not None and self._writer.conn is not None
        self._writer.conn.execute("PRAGMA query_only = 1")  # SQLITE_READONLY on writes

    monkeypatch.setattr(SqliteStore, "start", read_only)
    url = f"sqlite:///{tmp_path}/app.db"
    with loopback_socket() as held:  # only named in the line: the store fails first
        port = held.getsockname()[1]
        app = create_app(settings_for(tmp_path, ocpp_enabled=True, ocpp_port=port),
                         hasher=Argon2Hasher.fast())
        [failed] = await startup_messages(app)
    assert failed["message"] == (f"cannot start the OCPP server on 127.0.0.1:{port}: the "
                                 f"store at {url} cannot write: attempt to write a readonly "
                                 "database")



def _webhook_to_loopback(tmp_path: Path, allowed: bool) -> str | None:
    """An admin's webhook to 127.0.0.1 through the app's services: its URL, or the code
    of the refusal; and delivery stops with the app."""
    from domain.entities import Role
    from domain.errors import DomainError
    from domain.policy import SYSTEM, Viewer

    app = create_app(settings_for(tmp_path, webhooks_allow_private=allowed),
                     hasher=Argon2Hasher.fast())
    with TestClient(app) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        assert services.webhooks.sender is not None  # testWebhook can ping
        run = client.portal.call  # type: ignore[union-attr]
        admin = Viewer.of(run(lambda: services.accounts.create_user(
            SYSTEM, email="admin@example.com", password="password-123", name="Admin",
            role=Role.ADMIN)))
        try:
            created = run(lambda: services.webhooks.create_webhook(
                admin, url="http://127.0.0.1:9/in", events=["session.ended"]))
            outcome: str | None = created.webhook.url
        except DomainError as refused:
            outcome = refused.code
    assert services.webhooks.sender is None  # stopped with the app
    return outcome


def test_the_app_delivers_webhooks_and_refuses_private_urls_by_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wired in the lifespan; private addresses refused unless
    CHARGEGRAPH_WEBHOOKS_ALLOW_PRIVATE says otherwise."""
    assert Settings().webhooks_allow_private is False
    monkeypatch.setenv("CHARGEGRAPH_WEBHOOKS_ALLOW_PRIVATE", "true")
    assert Settings().webhooks_allow_private is True
    assert _webhook_to_loopback(tmp_path / "off", False) == "FORBIDDEN_ADDRESS"
    assert _webhook_to_loopback(tmp_path / "on", True) == "http://127.0.0.1:9/in"


def test_the_sampled_values_bound_reaches_the_ocpp_server(tmp_path: Path) -> None:
    """``CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES`` through the app to each charger's handler:
    raised to 2,000, a MeterValues of 1,500 values (refused by default) passes the bound
    and reaches the next check (this auto-registered station is pending: SecurityError),
    one of 2,001 is refused by the bound (OccurenceConstraintViolation)."""
    import json

    from websockets.asyncio.client import connect

    from ocpp_bridge import frames
    from tests.helpers import any_ocpp_port

    app = create_app(any_ocpp_port(settings_for(tmp_path, ocpp_enabled=True,
                                                auto_register=True,
                                                ocpp_max_sampled_values=2000)),
                     hasher=Argon2Hasher.fast())

    def meter_values(count: int) -> str:
        return json.dumps([2, f"mv{count}", "MeterValues", {"connectorId": 1, "meterValue": [
            {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}] * count}]}])

    async def answers() -> list[str]:
        port = app.state.ocpp_port  # bound as the app started
        async with connect(f"ws://127.0.0.1:{port}/ocpp/NEW-CP-1",
                           subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            codes = []
            for count in (1500, 2001):
                await ws.send(meter_values(count))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert answer[:2] == [4, f"mv{count}"], answer
                codes.append(answer[2])
            return codes

    assert frames.MAX_SAMPLED_VALUES < 1500
    with TestClient(app) as client:
        codes = client.portal.call(answers)  # type: ignore[union-attr]
    assert codes == [frames.SECURITY_ERROR, frames.OCCURENCE_CONSTRAINT_VIOLATION]


def test_the_retention_set_has_the_app_delete_what_is_older(tmp_path: Path) -> None:
    """The retention settings through the app to its housekeeping: the sweep runs
    as the service starts (then hourly) and deletes the meter samples, status reports and
    connection events (session 33) older than their retention, the newer ones kept (QA
    s32: nothing was ever deleted)."""
    import sqlite3
    import time
    from datetime import UTC, datetime, timedelta

    from domain.entities import ConnectionEvent
    from store.sqlite import SqliteStore
    from tests.contract.factories import meter_sample, put, station, status_event

    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)

    async def seed() -> None:
        store = SqliteStore(str(tmp_path / "app.db"))
        await store.start()
        try:
            cp = station()
            await put(store, cp, meter_sample(cp, None, at=old),
                      meter_sample(cp, None, at=recent), status_event(cp, at=old),
                      status_event(cp, at=recent, connector_id=2),
                      *[ConnectionEvent(station_id=cp.id, cp_id=cp.cp_id, online=True, at=at)
                        for at in (old, recent)])
        finally:
            await store.close()

    def counts() -> tuple[int, ...]:
        with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as db:
            return tuple(db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                         for table in ("meter_sample", "status_event", "connection_event"))

    asyncio.run(seed())
    assert counts() == (2, 2, 2)
    app = create_app(settings_for(tmp_path, retain_meter_samples_days=30,
                                  retain_status_events_days=30,
                                  retain_connection_events_days=30),
                     hasher=Argon2Hasher.fast())
    with TestClient(app):
        for _ in range(1000):  # bounded: 10 s
            if counts() == (1, 1, 1):
                break
            time.sleep(0.01)
        assert counts() == (1, 1, 1)
