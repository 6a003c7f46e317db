"""The command line through typer's runner (in process)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chargegraph.cli import NEW_DATABASE
from chargegraph.cli import app as cli
from graph import export_sdl
from tests.shell.guards import never_serve, never_simulate

PASSWORD = "long enough password"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    return CliRunner()


def test_version_is_the_packages(runner: CliRunner) -> None:
    """The package's version is ``chargegraph.__version__`` (pyproject reads it from
    there), so a build's metadata, ``--version`` and /healthz agree. The metadata of an
    editable install is the one written when it was installed: compared with it, this
    test failed after every version bump until the environment was reinstalled."""
    import tomllib

    from chargegraph import __version__

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "chargegraph.__version__"}
    shown = runner.invoke(cli, ["--version"])
    assert shown.exit_code == 0 and shown.stdout == f"chargegraph {__version__}\n"


def _subcommands() -> list[str]:
    import typer

    return sorted(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [[], *([name] for name in _subcommands())])
def test_help_shows_no_value_for_a_flag_and_no_unformatted_name(
        runner: CliRunner, command: list[str]) -> None:
    """QA s31: typer's help wrote ``<bool>`` beside every flag (``--help``, ``--version``,
    ``--force``), which takes no value, and backup's and restore's usage
    ``{path}``."""
    shown = runner.invoke(cli, [*command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "--help" in shown.stdout
    assert "<bool>" not in shown.stdout
    assert re.search(r"\{[^}]*\}", shown.stdout) is None, shown.stdout


ARGUMENTS = [("backup", "PATH"), ("restore", "PATH"), ("graphiql-assets", "FOLDER")]


def test_every_subcommand_with_an_argument_is_checked_below() -> None:
    import typer
    from typer.core import TyperArgument

    commands = typer.main.get_command(cli).commands  # type: ignore[attr-defined]
    assert sorted((name, param.name.upper()) for name, command in commands.items()
                  for param in command.params
                  if isinstance(param, TyperArgument)) == sorted(ARGUMENTS)


@pytest.mark.parametrize(("command", "name"), ARGUMENTS)
def test_an_argument_is_named_in_capitals_in_usage_help_and_when_missing(
        runner: CliRunner, command: str, name: str) -> None:
    """As the usage line names it, so do the Arguments panel and the message when it is
    missing (review s31: they said ``path <path>`` and ``Missing argument 'path'``)."""
    shown = runner.invoke(cli, [command, "--help"], env={"COLUMNS": "200"},
                          prog_name="chargegraph")
    assert f" Usage: chargegraph {command} [OPTIONS] {name} " in shown.stdout, shown.stdout
    [row] = [line for line in shown.stdout.splitlines() if "<path>" in line]
    assert re.search(rf"\* +{name} +<path> ", row), row
    missing = runner.invoke(cli, [command], env={"COLUMNS": "200"})
    assert missing.exit_code == 2
    assert f"Missing argument '{name}'." in missing.output, missing.output


def test_create_user(runner: CliRunner, tmp_path: Path) -> None:
    made = runner.invoke(cli, ["create-user", "--email", "root@example.com", "--password",
                               PASSWORD, "--role", "admin"])
    assert made.exit_code == 0, made.output
    assert re.fullmatch(r"[0-9a-f]{24}\n", made.stdout)  # only the id: scripts capture it
    assert (tmp_path / "cli.db").exists()
    op = runner.invoke(cli, ["create-user", "--email", "op@example.com", "--password",
                             PASSWORD, "--role", "operator", "--company", "Acme",
                             "--name", "Olga"])
    assert op.exit_code == 0, op.output
    assert re.fullmatch(r"[0-9a-f]{24}\n", op.stdout)


def test_create_user_builds_its_services_with_the_apps_card_key(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-f: the CLI built its services without the deployment's key, so a path
    of its freeing or checking a card number (``freed_tags``) would have digested it with
    an empty one, bypassing the hold. Its key is the app's: derived from the JWT secret
    kept in the state dir (made by this first command, read by `serve` after)."""
    import chargegraph.app
    from chargegraph.secrets import derived_key, resolve_jwt_secret
    from chargegraph.settings import Settings

    build = chargegraph.app.build_services
    keys: list[bytes] = []

    def keeping_the_key(*args: Any, **kwargs: Any) -> Any:
        services = build(*args, **kwargs)
        keys.append(services.ctx.digest_key)
        return services

    monkeypatch.setattr(chargegraph.app, "build_services", keeping_the_key)
    made = runner.invoke(cli, ["create-user", "--email", "root@example.com", "--password",
                               PASSWORD, "--role", "admin"])
    assert made.exit_code == 0, made.output
    assert keys == [derived_key(resolve_jwt_secret(Settings()), "freed card numbers")]


def test_create_user_names_the_database_it_wrote_to(runner: CliRunner, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """QA (onboarding): run from another folder, the default relative URL made a new,
    empty database there without a word, and the admin could not sign in to `serve`. The
    database is named on stderr by absolute path (stdout stays the id), and a new one is
    said to be new."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "sqlite:///chargegraph.db")
    database = (tmp_path / "elsewhere").resolve() / "chargegraph.db"
    args = ["--password", PASSWORD, "--role", "admin"]
    first = runner.invoke(cli, ["create-user", "--email", "a@example.com", *args])
    assert first.exit_code == 0, first.output
    assert re.fullmatch(r"[0-9a-f]{24}\n", first.stdout)
    assert first.stderr.splitlines()[-1] == f"user written to SQLite {database}{NEW_DATABASE}"
    second = runner.invoke(cli, ["create-user", "--email", "b@example.com", *args])
    assert second.exit_code == 0, second.output
    assert second.stderr.splitlines()[-1] == f"user written to SQLite {database}"


def test_create_user_twice_is_an_error(runner: CliRunner) -> None:
    args = ["--password", PASSWORD, "--role", "driver"]
    assert runner.invoke(cli, ["create-user", "--email", "mia@example.com", *args]
                         ).exit_code == 0
    again = runner.invoke(cli, ["create-user", "--email", "MIA@example.com", *args])
    assert again.exit_code == 1
    assert again.stdout == "" and "email" in again.stderr


def test_create_user_names_every_invalid_field(runner: CliRunner) -> None:
    """A bad email and a short password are both said, one line each, as the API's
    payload lists both; nothing is written."""
    bad = runner.invoke(cli, ["create-user", "--email", "not-an-email", "--password",
                              "short", "--role", "admin"])
    assert bad.exit_code == 1 and bad.stdout == ""
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error (email): not a valid email address",
                      "error (password): at least 8 characters"]


def test_create_user_rejects_unknown_role(runner: CliRunner) -> None:
    wrong = runner.invoke(cli, ["create-user", "--email", "x@example.com", "--password",
                                PASSWORD, "--role", "superuser"])
    assert wrong.exit_code == 2


def test_configuration_errors_are_messages(runner: CliRunner,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "postgres://db/x")
    bad_url = runner.invoke(cli, ["create-user", "--email", "x@example.com", "--password",
                                  PASSWORD, "--role", "admin"])
    assert bad_url.exit_code == 2 and "unsupported database URL" in bad_url.stderr
    assert bad_url.exception is not None and "Traceback" not in bad_url.stderr
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "sqlite:///ok.db")
    monkeypatch.setenv("CHARGEGRAPH_JWT_SECRET", "short")
    weak = runner.invoke(cli, ["serve", "--port", "1"])  # fails before binding anything
    assert weak.exit_code == 2 and "at least 32" in weak.stderr
    monkeypatch.delenv("CHARGEGRAPH_JWT_SECRET")
    monkeypatch.setenv("CHARGEGRAPH_PORT", "not-a-port")
    port = runner.invoke(cli, ["demo"])
    assert port.exit_code == 2 and port.stderr == (
        "configuration error: CHARGEGRAPH_PORT: Input should be a valid integer, unable to "
        "parse string as an integer (got 'not-a-port')\n")


@pytest.mark.parametrize(("variable", "url", "said"), [
    ("CHARGEGRAPH_DATABASE_URL", "sqlite:///:memory:",
     "an in-memory SQLite database cannot be served: name a file"),
    ("CHARGEGRAPH_DATABASE_URL", "mongodb://cg:s3cret@db:27O17/cg",
     "CHARGEGRAPH_DATABASE_URL 'mongodb://cg:***@db:27O17/cg': Port contains non-digit"),
    ("CHARGEGRAPH_DATABASE_URL", "mongodb://cg:s3cret@[db/cg",
     "CHARGEGRAPH_DATABASE_URL: an IPv6 address literal must be enclosed in '[' and ']'"),
    ("CHARGEGRAPH_DATABASE_URL", "mongodb://db:99999/cg",
     "CHARGEGRAPH_DATABASE_URL 'mongodb://db:99999/cg': Port must be an integer between"),
    ("CHARGEGRAPH_PUBSUB_URL", "redis://:s3cret@redis:63790x/0",
     "the pubsub URL is malformed (Port could not be cast to integer value as '63790x')"),
    ("CHARGEGRAPH_PUBSUB_URL", "redis://:s3cret@[redis/0",
     "the pubsub URL is malformed (Invalid IPv6 URL)")])
@pytest.mark.parametrize("command", [["serve"], ["demo"], ["create-user", "--email",
                                                           "x@example.com", "--password",
                                                           PASSWORD, "--role", "admin"]])
def test_a_url_its_backend_cannot_read_is_a_configuration_error(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        variable: str, url: str, said: str, command: list[str]) -> None:
    """QA s26: a MongoDB or Redis URL whose port is no number (a typo, an O for a 0), a
    malformed host or an in-memory SQLite database passed the configuration check and
    ended `serve` with a lifespan traceback (exit 3) from PyMongo's, redis-py's or the
    store's ValueError. Each is one configuration line now, exit 2, its password hidden."""
    never_serve(monkeypatch)
    monkeypatch.setenv(variable, url)
    refused = runner.invoke(cli, command)
    if variable == "CHARGEGRAPH_PUBSUB_URL" and command[0] == "create-user":
        assert refused.exit_code == 0, refused.output  # it uses the database URL only
        return
    assert refused.exit_code == 2, refused.output
    [line] = refused.stderr.splitlines()[-1:]
    assert line.startswith(f"configuration error: {said}"), line
    assert "Traceback" not in refused.output and "s3cret" not in refused.output
    assert not list(tmp_path.glob("*.db"))  # nothing was made


@pytest.mark.parametrize(("content", "why"), [
    ("CHARGEGRAPH_PUBLIC_MAP=true\n".encode("utf-16"),
     "it is UTF-16, as Windows PowerShell's > writes it"),
    ("# Zähler\nCHARGEGRAPH_PORT=8001\n".encode("latin-1"), "byte 4 is not UTF-8")])
@pytest.mark.parametrize(("command", "exit_code"), [
    (["serve"], 2), (["demo"], 2), (["healthcheck"], 1), (["backup", "copy.db"], 2),
    (["create-user", "--email", "x@example.com", "--password", PASSWORD, "--role", "admin"],
     2), (["simulate", "--url", "ws://127.0.0.1:9/ocpp"], 2)])
def test_a_dotenv_that_is_not_utf8_is_one_line(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes,
        why: str, command: list[str], exit_code: int) -> None:
    """QA s26: a .env written by Windows PowerShell (`echo ... > .env`: UTF-16) or saved
    as Latin-1 stopped every command with pydantic-settings' UnicodeDecodeError
    traceback. It is one configuration line naming the file and what to do."""
    never_serve(monkeypatch)
    never_simulate(monkeypatch)
    (tmp_path / ".env").write_bytes(content)
    refused = runner.invoke(cli, command)
    assert refused.exit_code == exit_code, refused.output
    assert refused.stderr == (f"configuration error: {tmp_path}/.env is not UTF-8 text "
                              f"({why}): save it as UTF-8\n")
    assert not (tmp_path / "cli.db").exists()


def test_demo_reset_on_mongodb_reads_its_database_first(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r26-onboard2: --reset drops a MongoDB database the demo marked (the refusal
    of an unmarked one no longer advises it: ``test_demo``); it looks first, so a server
    that does not answer is the one `cannot start` line, and nothing is dropped."""
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "mongodb://127.0.0.1:1/cg")
    refused = runner.invoke(cli, ["demo", "--reset"])
    assert refused.exit_code == 3, (refused.exit_code, refused.stderr)
    assert "cannot start the store at mongodb://127.0.0.1:1/cg" in refused.stderr


@pytest.mark.parametrize(("kind", "args"), [("sqlite", []), ("mongo", []),
                                            ("mongo", ["--reset"])])
def test_demo_refuses_a_database_not_its_own_before_writing_anything(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        kind: str, args: list[str]) -> None:
    """Ops QA s32: `chargegraph demo` on a database it refuses ("it is left untouched")
    had first built its app, which made `.chargegraph/jwt_secret` beside it (MongoDB's:
    in the working directory). The refusal comes before anything is written; `--reset`'s
    too (review r32-e: it skipped the early check). A SQLite database not the demo's is
    one `--reset` deletes: its refusal is one in use
    (``test_demo_reset_refuses_a_database_an_instance_runs_on``)."""
    import asyncio

    from store.mongo import MongoStore
    from tests.support.mongomock_async import async_mongomock_database

    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp_path / "cli.db")) as conn, conn:
            conn.execute("CREATE TABLE accounts (name TEXT)")  # someone else's database
    else:
        db = async_mongomock_database("cg")
        asyncio.run(db["accounts"].insert_one({"name": "boss"}))  # someone else's

        def connect(cls: type[MongoStore], url: str, database: str | None = None
                    ) -> MongoStore:
            return MongoStore(db, sweep_every=None)

        monkeypatch.setattr(MongoStore, "connect", classmethod(connect))
        monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "mongodb://127.0.0.1:27017/cg")
    before = sorted(p.name for p in tmp_path.iterdir())
    never_serve(monkeypatch)
    refused = runner.invoke(cli, ["demo", *args])
    assert refused.exit_code == 2, refused.output
    assert "was not made by the demo" in refused.stderr, refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .chargegraph/


def test_demo_reset_refuses_a_database_an_instance_runs_on(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s24: a second `demo --reset` deleted the database of a demo still running (which
    then refused every write), and only after that found its ports taken. A live instance
    lease refuses the reset, as it refuses a restore, and nothing is deleted."""
    import asyncio
    import contextlib

    from store.sqlite import SqliteStore

    async def migrated() -> None:
        store = SqliteStore(str(tmp_path / "cli.db"))
        await store.start()
        await store.close()

    asyncio.run(migrated())
    with contextlib.closing(sqlite3.connect(tmp_path / "cli.db")) as conn, conn:
        far = 10**18  # a lease that expires in the far future: an instance runs
        conn.execute('INSERT INTO "instance_lease" VALUES (?, 0, 0, ?, ?, ?, 0, ?, 1)',
                     ("i1", "system", "system", "host", far))
    never_serve(monkeypatch)
    before = sorted(p.name for p in tmp_path.iterdir())
    refused = runner.invoke(cli, ["demo", "--reset"])
    assert refused.exit_code == 2, refused.output
    assert "an instance of the service runs on" in refused.stderr
    assert "stop every instance, then reset" in refused.stderr
    # Before anything is written (review r32-e): no .chargegraph/ beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "cli.db").exists()


def test_demo_reset_after_a_killed_demo_says_the_lease_may_be_stale(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r26-onboard: `demo --reset` within 30 s of a demo killed (kill -9, a closed
    terminal) said "an instance of the service runs ... stop every instance", though none
    ran. It says the lease may be stale, and when it lapses."""
    import asyncio
    import contextlib
    import time
    from datetime import UTC, datetime

    from store.sqlite import SqliteStore

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "sqlite:///cli.db")

    async def migrated() -> None:
        store = SqliteStore(str(tmp_path / "cli.db"))
        await store.start()
        await store.close()

    asyncio.run(migrated())
    expires = int(time.time() + 25) * 1_000_000  # the killed demo's lease, renewed 5 s ago
    with contextlib.closing(sqlite3.connect(tmp_path / "cli.db")) as conn, conn:
        conn.execute('INSERT INTO "instance_lease" VALUES (?, 0, 0, ?, ?, ?, 0, ?, 1)',
                     ("i1", "system", "system", "host", expires))
    never_serve(monkeypatch)
    refused = runner.invoke(cli, ["demo", "--reset"])
    assert refused.exit_code == 2, refused.output
    until = datetime.fromtimestamp(expires / 1_000_000, UTC)
    assert f"its lease is live until {until:%H:%M:%S} UTC, in " in refused.stderr
    assert re.search(r"in 2[0-5] s\)", refused.stderr), refused.stderr
    assert "if none runs (one was killed or crashed), its lease is stale: try again once " \
           "it lapses" in refused.stderr
    assert (tmp_path / "cli.db").exists()


def test_demo_reset_removes_a_corrupt_database(tmp_path: Path) -> None:
    """Ops QA s25: the check for another process reading it raised SQLite's "file is not
    a database" out of `demo --reset` as a traceback; a damaged file is what a reset (or
    a restore) is for."""
    from chargegraph.stores import remove_sqlite_database

    broken = tmp_path / "cli.db"
    broken.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    assert remove_sqlite_database(f"sqlite:///{broken}") == [broken]
    assert not broken.exists()


async def test_demo_reset_of_a_symlinked_database_removes_the_file_it_names(
        tmp_path: Path) -> None:
    """Review r-ops2: restore follows a symbolic link, but `demo --reset` unlinked the
    link only and reported it as the database removed: the database it names and its side
    files stayed, and the next start made a new file where the link was (on the link's
    volume, not the data volume it pointed to). It removes the file named and its side
    files (SQLite names them after the real path), and keeps the link."""
    from chargegraph.stores import remove_sqlite_database
    from domain.ports import Insert
    from store.sqlite import SqliteStore
    from tests.contract.factories import audit, company

    volume = tmp_path / "volume"
    volume.mkdir()
    real = volume / "chargegraph.db"
    store = SqliteStore(str(real))
    await store.start()
    made = company(name="Kept")
    await store.write([Insert(made)], [audit(made, "system")])
    await store.close()
    stale = volume / "chargegraph.db-journal"
    stale.write_bytes(b"")  # a stale (empty, so cold) rollback journal beside it
    link = tmp_path / "chargegraph.db"
    link.symlink_to(real)

    removed = remove_sqlite_database(f"sqlite:///{link}")

    assert sorted(removed) == [real, stale]
    assert not real.exists() and not stale.exists()
    assert link.is_symlink() and link.resolve() == real  # the link is kept, dangling


def test_demo_reset_refuses_a_database_open_in_another_process(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s24: a demo still seeding holds no lease yet, and a reset then deleted its
    database. A database another connection has open is refused too."""
    import asyncio
    import contextlib

    from store.sqlite import SqliteStore

    async def migrated() -> None:
        store = SqliteStore(str(tmp_path / "cli.db"))
        await store.start()
        await store.close()

    asyncio.run(migrated())
    never_serve(monkeypatch)
    with contextlib.closing(sqlite3.connect(tmp_path / "cli.db")) as seeding:
        seeding.execute('SELECT COUNT(*) FROM "company"').fetchall()  # open, no lease
        refused = runner.invoke(cli, ["demo", "--reset"])
    assert refused.exit_code == 2, refused.output
    assert "is open in another process" in refused.stderr
    assert (tmp_path / "cli.db").exists()


def test_export_schema(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEGRAPH_INTROSPECTION", "false")  # the server's, not this
    schema = runner.invoke(cli, ["export-schema"])
    assert schema.exit_code == 0
    assert schema.stdout == export_sdl() and "type Query" in schema.stdout


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "-1"], ["--ocpp-port", "-1"],
                                  ["--ocpp-port", "65536"]])
def test_ports_out_of_range_are_refused(runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                        args: list[str]) -> None:
    never_serve(monkeypatch)  # 70000 used to wrap around and bind 4464
    for command in ("serve", "demo"):
        refused = runner.invoke(cli, [command, *args])
        assert refused.exit_code == 2, refused.output
        assert f"Invalid value for '{args[0]}'" in refused.stderr


@pytest.mark.parametrize(("variable", "value"), [("CHARGEGRAPH_PORT", "70000"),
                                                 ("CHARGEGRAPH_OCPP_PORT", "-1")])
def test_ports_out_of_range_in_the_environment_are_refused(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    never_serve(monkeypatch)
    monkeypatch.setenv(variable, value)
    refused = runner.invoke(cli, ["serve"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith(f"configuration error: {variable}: ")


@pytest.mark.parametrize(("variable", "value", "flag"), [
    ("CHARGEGRAPH_PORT", "abc", ["--port", "8123"]),
    ("CHARGEGRAPH_PORT", "70000", ["--port", "8123"]),
    ("CHARGEGRAPH_OCPP_PORT", "abc", ["--ocpp-port", "9123"]),
    ("CHARGEGRAPH_OCPP_PORT", "-1", ["--ocpp-port", "9123"]),  # 0: any free port
    ("CHARGEGRAPH_HOST", " ", ["--host", "127.0.0.1"])])
@pytest.mark.parametrize("where", ["environment", ".env"])
def test_a_malformed_setting_stops_the_command_though_a_flag_replaces_it(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str,
        variable: str, value: str, flag: list[str]) -> None:
    """QA s31: ``CHARGEGRAPH_PORT=abc chargegraph serve --port N`` served; the same
    environment stops the command without the flag, and will at the next start."""
    never_serve(monkeypatch)
    if where == ".env":
        (tmp_path / ".env").write_text(f"{variable}={value}\n")
    else:
        monkeypatch.setenv(variable, value)
    for command in ("serve", "demo"):
        refused = runner.invoke(cli, [command, *flag])
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith(f"configuration error: {variable}: "), refused.stderr


def test_a_flag_settles_a_rule_between_settings(runner: CliRunner,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid values that clash (both servers on 9000) are not malformed: the flag that
    moves one of them is taken."""
    import chargegraph.cli
    from chargegraph.settings import Settings

    served: list[Settings] = []

    async def demo(settings: Settings, server: object, chargers: bool) -> None:
        served.append(settings)

    monkeypatch.setattr(chargegraph.cli, "_demo", demo)
    monkeypatch.setenv("CHARGEGRAPH_PORT", "9000")
    monkeypatch.setenv("CHARGEGRAPH_OCPP_PORT", "9000")
    assert runner.invoke(cli, ["demo"]).exit_code == 2
    started = runner.invoke(cli, ["demo", "--port", "8123"])
    assert started.exit_code == 0, started.output
    assert [(settings.port, settings.ocpp_port) for settings in served] == [(8123, 9000)]


@pytest.mark.parametrize("value", ["inf", "1e308", "0.0001"])
def test_an_instance_lease_out_of_bounds_is_a_configuration_error(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """inf and 1e308 overflowed the lease's timedelta when the OCPP server started (a
    traceback, exit 3); 0.0001 served, renewing the lease in a busy loop."""
    never_serve(monkeypatch)
    monkeypatch.setenv("CHARGEGRAPH_INSTANCE_LEASE_SECONDS", value)
    refused = runner.invoke(cli, ["serve"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith(
        "configuration error: CHARGEGRAPH_INSTANCE_LEASE_SECONDS: Input should be ")


@pytest.mark.parametrize("command", [
    ["serve"], ["demo"], ["create-user", "--email", "x@example.com", "--password", PASSWORD,
                          "--role", "admin"],
    ["simulate", "--url", "ws://127.0.0.1:1/ocpp"]])
def test_an_unknown_log_level_is_one_line(runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                          command: list[str]) -> None:
    never_serve(monkeypatch)
    never_simulate(monkeypatch)
    monkeypatch.setenv("CHARGEGRAPH_LOG_LEVEL", "verbose")
    refused = runner.invoke(cli, command)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr == (
        "configuration error: CHARGEGRAPH_LOG_LEVEL: Input should be 'DEBUG', 'INFO', "
        "'WARNING', 'ERROR' or 'CRITICAL' (got 'verbose')\n")


def test_every_invalid_setting_is_one_line(runner: CliRunner,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEGRAPH_PORT", "abc")
    monkeypatch.setenv("CHARGEGRAPH_OCPP_ENABLED", "maybe")
    monkeypatch.setenv("CHARGEGRAPH_JWT_SECRET", "s" * 40)
    refused = runner.invoke(cli, ["serve"])
    assert refused.exit_code == 2
    lines = refused.stderr.splitlines()
    assert [line.split(": ")[1] for line in lines] == ["CHARGEGRAPH_PORT",
                                                       "CHARGEGRAPH_OCPP_ENABLED"]
    assert all(line.startswith("configuration error: ") for line in lines)
    assert "errors.pydantic.dev" not in refused.stderr and "s" * 40 not in refused.stderr


def test_an_unusable_state_dir_is_one_line(runner: CliRunner, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    never_serve(monkeypatch)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("CHARGEGRAPH_STATE_DIR", str(tmp_path / "a-file" / "state"))
    refused = runner.invoke(cli, ["serve"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr == (
        f"configuration error: cannot keep the JWT secret in {tmp_path}/a-file/state/"
        f"jwt_secret: Not a directory: {tmp_path}/a-file/state; make CHARGEGRAPH_STATE_DIR "
        "a writable folder or set CHARGEGRAPH_JWT_SECRET\n")


@pytest.mark.parametrize("command", [
    ["create-user", "--email", "x@example.com", "--password", PASSWORD, "--role", "admin"],
    ["demo", "--no-chargers"]])
def test_a_store_that_cannot_be_opened_is_one_line(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    never_serve(monkeypatch)
    (tmp_path / "cli.db").write_text("this is not a database\n" * 100)
    corrupt = runner.invoke(cli, command)
    assert "Traceback" not in corrupt.output
    if command[0] == "demo":
        # The demo reads a file before any store opens it: one without its mark, a
        # file that is no database too, is refused untouched (review s26).
        assert corrupt.exit_code == 2, corrupt.output
        assert "left untouched" in corrupt.stderr.splitlines()[-1]
        assert (tmp_path / "cli.db").read_text() == "this is not a database\n" * 100
    else:
        assert corrupt.exit_code == 3, corrupt.output  # as `serve` exits on it
        assert corrupt.stderr.splitlines()[-1] == (
            f"cannot start the store at sqlite:///{tmp_path}/cli.db: file is not a database")
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db/x/cg.db")
    monkeypatch.setenv("CHARGEGRAPH_JWT_SECRET", "s" * 40)  # not beside that database
    unopenable = runner.invoke(cli, command)
    assert unopenable.exit_code == 3, unopenable.output
    assert unopenable.stderr.splitlines()[-1].startswith(
        f"cannot start the store at sqlite:///{tmp_path}/cli.db/x/cg.db: [Errno 20] Not a "
        "directory")


@pytest.mark.parametrize(("dotenv", "environment", "public"), [
    (None, None, True),  # the demo map is public by default
    ("false", None, False),  # told otherwise in .env
    (None, "false", False),  # or in the environment
    ("false", "true", True),  # the environment beats .env
])
def test_demo_public_map_follows_settings(runner: CliRunner, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, dotenv: str | None,
                                          environment: str | None, public: bool) -> None:
    import chargegraph.cli
    from chargegraph.settings import Settings

    served: list[Settings] = []

    async def demo(settings: Settings, server: object, chargers: bool) -> None:
        served.append(settings)

    monkeypatch.setattr(chargegraph.cli, "_demo", demo)
    monkeypatch.delenv("CHARGEGRAPH_PUBLIC_MAP", raising=False)
    if dotenv is not None:
        (tmp_path / ".env").write_text(f"CHARGEGRAPH_PUBLIC_MAP={dotenv}\n")
    if environment is not None:
        monkeypatch.setenv("CHARGEGRAPH_PUBLIC_MAP", environment)
    assert runner.invoke(cli, ["demo"]).exit_code == 0
    assert [settings.public_map for settings in served] == [public]


@pytest.mark.parametrize(("environment", "sign_up"), [(None, True), ("false", False)])
def test_demo_takes_sign_ups_unless_told_otherwise(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
        environment: str | None, sign_up: bool) -> None:
    import chargegraph.cli
    from chargegraph.settings import Settings

    served: list[Settings] = []

    async def demo(settings: Settings, server: object, chargers: bool) -> None:
        served.append(settings)

    monkeypatch.setattr(chargegraph.cli, "_demo", demo)
    monkeypatch.delenv("CHARGEGRAPH_SIGN_UP", raising=False)
    if environment is not None:
        monkeypatch.setenv("CHARGEGRAPH_SIGN_UP", environment)
    assert runner.invoke(cli, ["demo"]).exit_code == 0
    assert [settings.sign_up for settings in served] == [sign_up]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/ocpp", "notaurl", "ws://:9000/ocpp",
                                 "ws://127.0.0.1:port/ocpp", "127.0.0.1:9000"])
def test_simulate_refuses_a_url_that_can_never_work(runner: CliRunner, url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    never_simulate(monkeypatch)  # it used to retry such a URL forever
    refused = runner.invoke(cli, ["simulate", "--url", url])
    assert refused.exit_code == 2, refused.output
    assert "Invalid value for '--url'" in refused.stderr


@pytest.mark.parametrize(("prefix", "stations", "why"), [
    ("a b", "1", "'a b' makes no charge point identity (a b-0001): letters, digits"),
    ("x/y", "1", "'x/y' makes no charge point identity (x/y-0001): letters, digits"),
    ("A" * 43, "10000", f"'{'A' * 43}' makes no charge point identity ({'A' * 43}-10000): "
                         "at most 48 characters")])
def test_simulate_refuses_a_prefix_that_makes_no_charge_point_identity(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch, prefix: str, stations: str,
        why: str) -> None:
    """QA s26: `--prefix "a b"` retried every station for ever under
    "InvalidMessage('did not receive a valid HTTP response')", `x/y` under a 404 that
    blamed the URL: no server could ever take such an identity."""
    never_simulate(monkeypatch)
    refused = runner.invoke(cli, ["simulate", "--url", "ws://127.0.0.1:9000/ocpp",
                                  "--prefix", prefix, "--stations", stations])
    assert refused.exit_code == 2, refused.output
    boxed = " ".join(re.sub(r"[│╭╮╰╯─]", " ", refused.stderr).split())  # rich's box, wrapped
    assert f"Invalid value for '--prefix': {why}" in boxed


@pytest.mark.parametrize("url", ["ws://127.0.0.1:9000/ocpp", "wss://cs.example.com/ocpp",
                                 "ws://[::1]:9000"])
def test_simulate_takes_websocket_urls(runner: CliRunner, url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import ocpp_bridge.simulator

    planned: list[str] = []

    async def run_fleet(plan: ocpp_bridge.simulator.FleetPlan, stop: object) -> None:
        planned.append(plan.url)

    monkeypatch.setattr(ocpp_bridge.simulator, "run_fleet", run_fleet)
    assert runner.invoke(cli, ["simulate", "--url", url]).exit_code == 0
    assert planned == [url]


def test_simulate_keeps_its_chargers_state_in_the_file_given(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--state PATH`: the chargers start from it and keep what they are told there;
    without it they keep nothing (each start a fleet of fresh chargers)."""
    import json

    import ocpp_bridge.simulator

    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"SIM-0001": {"connectors": {"1": {"available": False}}}}))
    plans: list[ocpp_bridge.simulator.FleetPlan] = []

    async def run_fleet(plan: ocpp_bridge.simulator.FleetPlan, stop: object) -> None:
        plans.append(plan)

    monkeypatch.setattr(ocpp_bridge.simulator, "run_fleet", run_fleet)
    url = "ws://127.0.0.1:9000/ocpp"
    assert runner.invoke(cli, ["simulate", "--url", url, "--state", str(path)]).exit_code == 0
    assert runner.invoke(cli, ["simulate", "--url", url]).exit_code == 0
    kept, unkept = (plan.states for plan in plans)
    assert kept.path == path and kept.of("SIM-0001")["connectors"]["1"] == {"available": False}
    assert unkept.path is None


@pytest.mark.parametrize(("url", "file"), [
    ("sqlite:///data/demo.db", "data/demo.db.chargers.json"),
    ("mongodb://db:27017/chargegraph-demo", "chargegraph-demo.chargers.json"),
    ("mongodb://db:27017", "chargegraph.chargers.json")])
def test_the_demos_chargers_keep_their_state_beside_its_database(url: str, file: str) -> None:
    from chargegraph.demo_database import charger_state_file

    assert charger_state_file(url) == Path(file)


@pytest.mark.parametrize("interval", ["0", "-1", "0.01", "100000"])
def test_simulate_refuses_a_meter_interval_that_floods_or_never_samples(
        runner: CliRunner, interval: str, monkeypatch: pytest.MonkeyPatch) -> None:
    never_simulate(monkeypatch)  # 0 used to send meter values in a tight loop
    refused = runner.invoke(cli, ["simulate", "--url", "ws://127.0.0.1:9000/ocpp",
                                  "--meter-interval", interval])
    assert refused.exit_code == 2, refused.output
    assert "Invalid value for '--meter-interval'" in refused.stderr


def test_backup_copies_the_database_and_keeps_an_existing_file_unless_forced(
        runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(cli, ["create-user", "--email", "root@example.com", "--password",
                               PASSWORD, "--role", "admin"]).exit_code == 0
    made = runner.invoke(cli, ["backup", "copy.db"])
    assert made.exit_code == 0, made.output
    assert re.fullmatch(r"backed up to copy\.db \(\d+ bytes, schema version \d+\)\n",
                        made.stdout)
    again = runner.invoke(cli, ["backup", "copy.db"])
    assert again.exit_code == 1
    assert again.stderr == "error: copy.db exists: pass --force to overwrite it\n"
    assert runner.invoke(cli, ["backup", "copy.db", "--force"]).exit_code == 0
    # The copy serves as the database: the user is there.
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        assert conn.execute('SELECT "email" FROM "user"').fetchall() == [
            ("root@example.com",)]


def test_restore_puts_a_backup_back(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(cli, ["create-user", "--email", "root@example.com", "--password",
                               PASSWORD, "--role", "admin"]).exit_code == 0
    assert runner.invoke(cli, ["backup", "copy.db"]).exit_code == 0
    assert runner.invoke(cli, ["create-user", "--email", "later@example.com", "--password",
                               PASSWORD, "--role", "admin"]).exit_code == 0
    put_back = runner.invoke(cli, ["restore", "copy.db"])
    assert put_back.exit_code == 0, put_back.output
    assert put_back.stdout.startswith(f"restored copy.db to {tmp_path}/cli.db (schema ")
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        assert conn.execute('SELECT "email" FROM "user"').fetchall() == [
            ("root@example.com",)]
    missing = runner.invoke(cli, ["restore", "nope.db"])
    assert (missing.exit_code, missing.stderr) == (1, "error: there is no backup at nope.db\n")


def test_restore_where_there_is_no_database_in_a_folder_of_roots_warns(
        runner: CliRunner, tmp_path: Path) -> None:
    """Review r-ops2: a restore onto a fresh volume gives the file its folder's owner;
    a folder of root's names no service user, and the output says who must own it."""
    assert runner.invoke(cli, ["create-user", "--email", "root@example.com", "--password",
                               PASSWORD, "--role", "admin"]).exit_code == 0
    assert runner.invoke(cli, ["backup", "copy.db"]).exit_code == 0
    (tmp_path / "cli.db").unlink()
    put_back = runner.invoke(cli, ["restore", "copy.db"])
    assert put_back.exit_code == 0, put_back.output
    if tmp_path.stat().st_uid == 0:
        assert put_back.stderr.startswith(f"warning: {tmp_path} is root's"), put_back.stderr
        assert "the service's user must own" in put_back.stderr
    else:
        assert "warning" not in put_back.stderr


def test_backup_of_no_database_creates_none(runner: CliRunner, tmp_path: Path) -> None:
    missing = runner.invoke(cli, ["backup", "copy.db"])
    assert missing.exit_code == 1
    assert missing.stderr == f"error: there is no database at {tmp_path}/cli.db\n"
    assert not (tmp_path / "cli.db").exists() and not (tmp_path / "copy.db").exists()


def test_backup_of_mongodb_points_to_mongodump(runner: CliRunner,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "mongodb://127.0.0.1:1/cg")
    refused = runner.invoke(cli, ["backup", "copy.db"])
    assert refused.exit_code == 2 and "mongodump" in refused.stderr


@pytest.mark.parametrize(("host", "asked"), [
    ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("10.1.2.3", "10.1.2.3"),
    ("localhost", "localhost")])
def test_healthcheck_asks_where_the_server_listens(host: str, asked: str) -> None:
    from chargegraph.listening import reachable_host

    assert reachable_host(host) == asked


@pytest.mark.parametrize(("host", "graphql", "ocpp"), [
    ("127.0.0.1", "http://127.0.0.1:8000/graphql", "ws://127.0.0.1:9000/ocpp"),
    ("0.0.0.0", "http://127.0.0.1:8000/graphql", "ws://127.0.0.1:9000/ocpp"),
    ("::", "http://[::1]:8000/graphql", "ws://[::1]:9000/ocpp"),
    ("::1", "http://[::1]:8000/graphql", "ws://[::1]:9000/ocpp")])
def test_the_demo_connects_its_chargers_where_the_server_listens(
        host: str, graphql: str, ocpp: str) -> None:
    """QA s26: `demo --host ::` with CHARGEGRAPH_OCPP_HOST=:: gave its chargers
    ws://:::9000/ocpp (InvalidURI, retried for ever) and printed http://:::8000/graphql."""
    from urllib.parse import urlsplit

    from chargegraph.cli import demo_urls
    from chargegraph.settings import Settings

    urls = demo_urls(Settings(host=host, ocpp_host=host))
    assert urls == (graphql, ocpp)
    assert all(urlsplit(url).hostname for url in urls)


def test_the_demo_leaves_its_drivers_cards_free_more_often_than_not() -> None:
    """QA s28: the demo's fleet charged every driver's card back to back, so a driver
    signing in to try `remoteStartTransaction` or `reserveNow` got `IN_USE` nearly every
    time. Each card now rests between its sessions, longer on average than one lasts."""
    from chargegraph.cli import demo_fleet
    from chargegraph.demo import DemoSummary
    from chargegraph.settings import Settings

    plan = demo_fleet(Settings(), DemoSummary(created=True, cp_ids=["A"], id_tags=["T"]))

    def mean(span: tuple[float, float]) -> float:
        return sum(span) / 2

    assert mean(plan.rest_s) > mean(plan.session_length_s)
    assert plan.url == "ws://127.0.0.1:9000/ocpp" and plan.id_tags == ["T"]


def test_the_demos_chargers_charge_as_its_plugs_are_rated() -> None:
    """QA s28: every demo plug drew 13-22 kW, the 150 kW CCS2 ones too: the fleet now
    charges each station's plugs as the demo seeded them (DC at 150 kW, AC at 22)."""
    from chargegraph.cli import demo_fleet
    from chargegraph.demo import STATIONS, DemoSummary, station_connectors
    from chargegraph.settings import Settings
    from ocpp_bridge.simulator import Plug

    fast, slow = STATIONS[0][1], STATIONS[1][1]
    summary = DemoSummary(created=True, cp_ids=[fast, slow], id_tags=["T"],
                          connectors={fast: station_connectors(0),
                                      slow: station_connectors(1)})
    plan = demo_fleet(Settings(), summary)
    assert plan.plugs == {fast: (Plug("DC", 150_000), Plug("AC", 22_000)),
                          slow: (Plug("AC", 22_000), Plug("AC", 22_000))}


def test_the_demo_refuses_chargers_without_its_ocpp_server(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s26: with CHARGEGRAPH_OCPP_ENABLED=false the demo's eight chargers knocked at a
    closed port every few seconds, for ever, under a banner promising them."""
    import chargegraph.cli

    served: list[bool] = []

    async def demo(settings: object, server: object, chargers: bool) -> None:
        served.append(chargers)

    monkeypatch.setattr(chargegraph.cli, "_demo", demo)
    monkeypatch.setenv("CHARGEGRAPH_OCPP_ENABLED", "false")
    refused = runner.invoke(cli, ["demo"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr == (
        "configuration error: the demo's simulated chargers need its OCPP server, which "
        "CHARGEGRAPH_OCPP_ENABLED=false turns off: leave it on, or pass --no-chargers\n")
    assert runner.invoke(cli, ["demo", "--no-chargers"]).exit_code == 0
    assert served == [False]


def test_healthcheck_of_a_broken_configuration_is_unhealthy_not_2(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker reserves a health check's exit code 2."""
    monkeypatch.setenv("CHARGEGRAPH_PORT", "80x")
    result = runner.invoke(cli, ["healthcheck"])
    assert result.exit_code == 1
    assert "configuration error: CHARGEGRAPH_PORT: Input should be a valid integer" \
        in result.output


def test_healthcheck_of_port_0_says_it_cannot_know_the_port(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Port 0 serves on a port the system chooses, named in the service's ready line
    only: asking port 0 itself failed with a connection error that said nothing of why."""
    monkeypatch.setenv("CHARGEGRAPH_PORT", "0")
    result = runner.invoke(cli, ["healthcheck"])
    assert result.exit_code == 1
    assert result.stderr == (
        "unhealthy: CHARGEGRAPH_PORT is 0 (any free port), which this check cannot know: "
        "give the service a port of its own to check it\n")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run the reset as another user")
@pytest.mark.parametrize("unwritable", ["the database", "its shared-memory file"])
def test_demo_reset_by_a_user_who_cannot_write_the_database_is_refused_while_it_is_open(
        unwritable: str) -> None:
    """Review s26, a regression of s25: the check for another process took only BUSY or
    LOCKED for "open", and any other error (SQLITE_IOERR_LOCK for a user who may not
    write the -shm of a database in use, a read-only file) for a damaged file, so `demo
    --reset` deleted the database of a demo still seeding (no lease yet). An error that
    proves no damage refuses, naming the user to run it as."""
    import asyncio
    import subprocess
    import sys
    import tempfile

    from store.sqlite import SqliteStore

    folder = Path(tempfile.mkdtemp(prefix="chargegraph-reset-"))
    try:
        os.chmod(folder, 0o777)  # a shared data folder
        database = folder / "chargegraph.db"

        async def seeding() -> None:
            store = SqliteStore(str(database))  # a demo still seeding (no lease yet)
            await store.start()
            try:
                if unwritable == "the database":
                    os.chmod(database, 0o644)
                else:
                    os.chmod(database, 0o666)
                    os.chmod(f"{database}-shm", 0o644)
                script = ("from chargegraph.stores import remove_sqlite_database; "
                          f"print(remove_sqlite_database('sqlite:///{database}'))")
                run = await asyncio.to_thread(
                    subprocess.run,
                    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     sys.executable, "-c", script],
                    capture_output=True, text=True, timeout=60,
                    env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
                assert database.exists(), run.stdout
                assert "open in another process" in run.stderr, run.stderr
                assert "run the reset as the service's user" in run.stderr, run.stderr
                assert await store.health() is None
            finally:
                await store.close()

        asyncio.run(seeding())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_backup_and_restore_into_a_folder_they_may_not_write_say_so(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore QA s27: a backup into a folder this user may not write (a backup mount
    of another user's, read-only) ended in a traceback of tempfile's PermissionError,
    as did a restore into a database folder so; each is one line now, exit code 1."""
    import tempfile

    assert runner.invoke(cli, ["create-user", "--email", "root@example.com", "--password",
                               PASSWORD, "--role", "admin"]).exit_code == 0
    assert runner.invoke(cli, ["backup", "copy.db"]).exit_code == 0

    def refused(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir")))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    made = runner.invoke(cli, ["backup", "other.db"])
    assert (made.exit_code, made.stderr) == (
        1, f"error: cannot write the backup in {Path('other.db').parent}: Permission "
           "denied\n"), made.output
    put_back = runner.invoke(cli, ["restore", "copy.db"])
    assert (put_back.exit_code, put_back.stderr) == (
        1, f"error: cannot write the restored database in {tmp_path}: Permission "
           "denied\n"), put_back.output
