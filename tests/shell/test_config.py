"""Settings, the JWT secret, password hashing and choosing the store from its URL."""

from __future__ import annotations

import logging
import os
import re
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from chargegraph.errors import ConfigError
from chargegraph.secrets import resolve_jwt_secret
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings, problems, unknown_variables
from chargegraph.stores import (
    check_database_url,
    database_location,
    open_store,
    remove_sqlite_database,
    sqlite_path,
)
from domain.services.retention import Retention
from store.mongo import MongoStore
from store.sqlite import SqliteStore


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in [n for n in os.environ if n.startswith("CHARGEGRAPH_")]:
        monkeypatch.delenv(name)
    settings = Settings()
    assert (settings.database_url, settings.pubsub_url) == ("sqlite:///chargegraph.db",
                                                            "memory://")
    assert (settings.host, settings.port, settings.ocpp_host, settings.ocpp_port) == (
        "127.0.0.1", 8000, "127.0.0.1", 9000)
    # Short-lived access tokens; apps keep signed in with 30-day refresh tokens.
    assert settings.jwt_secret is None and settings.jwt_ttl_minutes == 60
    assert settings.refresh_ttl_days == 30
    assert not settings.public_map and not settings.auto_register and settings.graphiql
    assert not settings.sign_up  # a CPO opens registration on purpose
    assert settings.heartbeat_interval == 300
    assert settings.resolved_state_dir() == Path(".chargegraph")
    assert not settings.retention.prunes  # everything kept, as always


def test_retention_settings_in_days(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_RETAIN_METER_SAMPLES_DAYS", "90")
    monkeypatch.setenv("CHARGEGRAPH_RETAIN_STATUS_EVENTS_DAYS", "0")
    monkeypatch.setenv("CHARGEGRAPH_RETAIN_CONNECTION_EVENTS_DAYS", "365")
    keep = Settings().retention
    assert keep.prunes
    assert (keep.meter_samples, keep.status_events, keep.connection_events) == (
        timedelta(days=90), None, timedelta(days=365))
    assert Retention(connection_events=timedelta(days=1)).prunes  # the sweep is wired


def test_settings_from_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CHARGEGRAPH_AUTO_REGISTER=true\nCHARGEGRAPH_PORT=1\n")
    monkeypatch.setenv("CHARGEGRAPH_PORT", "8123")  # the environment beats .env
    monkeypatch.setenv("CHARGEGRAPH_PUBLIC_MAP", "true")
    monkeypatch.setenv("CHARGEGRAPH_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "sqlite:///data/x.db")
    settings = Settings()
    assert settings.port == 8123 and settings.public_map and settings.auto_register
    assert settings.jwt_secret is not None and "s" * 40 not in repr(settings)
    assert settings.resolved_state_dir() == Path("data/.chargegraph")
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "sqlite:////srv/cg/x.db")
    assert Settings().resolved_state_dir() == Path("/srv/cg/.chargegraph")
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "mongodb://db:27017/cg")
    assert Settings().resolved_state_dir() == Path(".chargegraph")


def test_jwt_secret_generated_once_and_private(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    first = resolve_jwt_secret(settings)
    path = tmp_path / "state" / "jwt_secret"
    assert len(first) >= 32 and path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated" in caplog.text and str(path) in caplog.text
    assert [p.name for p in path.parent.iterdir()] == ["jwt_secret"]  # no temporary left
    caplog.clear()
    assert resolve_jwt_secret(settings) == first
    assert "generated" not in caplog.text
    assert resolve_jwt_secret(Settings(state_dir=tmp_path / "other")) != first


def test_configured_jwt_secret(tmp_path: Path) -> None:
    settings = Settings(jwt_secret="x" * 40, state_dir=tmp_path)  # type: ignore[arg-type]
    assert resolve_jwt_secret(settings) == "x" * 40
    assert not (tmp_path / "jwt_secret").exists()
    with pytest.raises(ConfigError, match="at least 32"):
        resolve_jwt_secret(Settings(jwt_secret="too-short"))  # type: ignore[arg-type]


def test_weak_stored_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "jwt_secret").write_text("weak")
    with pytest.raises(ConfigError, match="delete the file"):
        resolve_jwt_secret(Settings(state_dir=tmp_path))


def test_argon2_hasher() -> None:
    hasher = Argon2Hasher.fast()
    digest = hasher.hash("a secret phrase")
    assert digest.startswith("$argon2id$") and "m=8192,t=1" in digest
    assert hasher.verify(digest, "a secret phrase")
    assert not hasher.verify(digest, "another phrase")
    assert not hasher.verify("garbage", "a secret phrase")
    assert not hasher.needs_rehash(digest) and not hasher.needs_rehash("garbage")
    # Hashes made with the test profile are upgraded by the production one on next login.
    assert Argon2Hasher().needs_rehash(digest)
    assert Argon2Hasher().verify(digest, "a secret phrase")


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     caplog: pytest.LogCaptureFixture) -> None:
    assert sqlite_path("sqlite:///chargegraph.db") == Path("chargegraph.db")
    assert sqlite_path("sqlite:////var/lib/cg.db") == Path("/var/lib/cg.db")
    assert sqlite_path("mongodb://localhost/x") is None
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="chargegraph"):
        store = open_store("sqlite:///nested/dir/a.db")  # relative to the working directory
        assert isinstance(store, SqliteStore) and (tmp_path / "nested" / "dir").is_dir()
        # QA s31: a typo in the folder served a new, empty database without a word.
        assert [r.getMessage() for r in caplog.records] == [
            f"created the folder {tmp_path.resolve()}/nested/dir for a new SQLite database: "
            "if you meant an existing one, check CHARGEGRAPH_DATABASE_URL"]
        caplog.clear()
        assert isinstance(open_store(f"sqlite:///{tmp_path}/b.db"), SqliteStore)  # absolute
        assert isinstance(open_store("sqlite:///chargegraph.db"), SqliteStore)  # the default
        assert isinstance(open_store("sqlite:///nested/dir/c.db"), SqliteStore)  # made now
        assert caplog.records == []  # folders that exist: nothing to say


def test_the_database_is_named_by_absolute_path_or_url_without_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """How create-user and the ready line name the database (QA, onboarding): the file a
    relative URL means here, a MongoDB URL without user, password or options."""
    monkeypatch.chdir(tmp_path)
    assert database_location("sqlite:///data/../cg.db") == f"SQLite {tmp_path.resolve()}/cg.db"
    assert database_location("sqlite:////var/lib/cg.db") == "SQLite /var/lib/cg.db"
    assert database_location(
        "mongodb://app:s3cret@m1:27017,m2:27017/cg?tlsCertificateKeyFilePassword=pw"
    ) == "MongoDB mongodb://m1:27017,m2:27017/cg"
    assert database_location("mongodb+srv://app:s3cret@cluster.example.net/cg"
                             ) == "MongoDB mongodb+srv://cluster.example.net/cg"


@pytest.mark.parametrize("url", [
    # A custom SRV service name (MongoDB's Kubernetes operator, self-hosted SRV records)
    "mongodb+srv://cg:secret@cluster0.example.invalid/chargegraph?srvServiceName=customname",
    # srvMaxHosts: a sharded cluster's mongos picked at random (Atlas documents it)
    "mongodb+srv://cg:secret@cluster0.example.invalid/chargegraph?srvMaxHosts=3",
    "mongodb+srv://cluster0.example.invalid/cg?retryWrites=true&w=majority"])
def test_a_valid_mongodb_srv_url_passes_the_check_without_dns(url: str) -> None:
    """Review r26-onboard: the check read a mongodb+srv:// URL as mongodb://, where PyMongo
    refuses the SRV-only options, so a valid URL with srvServiceName or srvMaxHosts
    stopped every command (exit 2). Checked by PyMongo's own SRV rules now, and without
    a DNS lookup (the host here resolves nowhere)."""
    check_database_url(url)


@pytest.mark.parametrize(("url", "said"), [
    ("mongodb+srv://cg:s3cret@cluster0.example.invalid:27017/cg", "must not include a port"),
    ("mongodb+srv://a.example.invalid,b.example.invalid/cg", "one, and only one, hostname"),
    ("mongodb://db.example.invalid/cg?srvMaxHosts=3", r"only allowed with 'mongodb\+srv://'")])
def test_a_mongodb_url_breaking_its_schemes_rules_is_a_configuration_error(
        url: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said) as refused:
        check_database_url(url)
    assert "s3cret" not in str(refused.value)


async def test_mongodb_urls() -> None:
    # The client connects lazily: nothing listens on port 1, and nothing needs to.
    store = open_store("mongodb://127.0.0.1:1/cg_test")
    assert isinstance(store, MongoStore)
    await store.close()


@pytest.mark.parametrize("url", ["postgres://db/x", "sqlite:///", "chargegraph.db", ""])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="sqlite:///"):
        open_store(url)


def test_remove_sqlite_database(tmp_path: Path) -> None:
    for name in ("d.db", "d.db-wal", "d.db-shm", "keep.db"):
        (tmp_path / name).write_text("x")
    removed = remove_sqlite_database(f"sqlite:///{tmp_path}/d.db")
    assert sorted(p.name for p in removed) == ["d.db", "d.db-shm", "d.db-wal"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.db"]
    assert remove_sqlite_database(f"sqlite:///{tmp_path}/d.db") == []
    with pytest.raises(ConfigError, match="SQLite"):
        remove_sqlite_database("mongodb://localhost/cg")


def test_a_state_dir_that_cannot_be_written_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"cannot keep the JWT secret in .*a-file/state/"
                                          r"jwt_secret: Not a directory: .*set "
                                          r"CHARGEGRAPH_JWT_SECRET"):
        resolve_jwt_secret(Settings(state_dir=tmp_path / "a-file" / "state"))


@pytest.mark.parametrize(("given", "kept"), [("debug", "DEBUG"), (" Warning ", "WARNING"),
                                             ("INFO", "INFO")])
def test_log_levels_in_any_case(given: str, kept: str) -> None:
    assert Settings(log_level=given).log_level == kept  # type: ignore[arg-type]


@pytest.mark.parametrize("wrong", ["verbose", "TRACE", "warn ing"])  # "": is empty, below
def test_unknown_log_levels_are_refused(wrong: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        Settings(log_level=wrong)  # type: ignore[arg-type]
    assert problems(refused.value) == [
        f"CHARGEGRAPH_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or "
        f"'CRITICAL' (got {wrong!r})"]


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("CHARGEGRAPH_JWT_TTL_MINUTES", "0", "Input should be greater than 0"),
    ("CHARGEGRAPH_JWT_TTL_MINUTES", "-5", "Input should be greater than 0"),
    ("CHARGEGRAPH_JWT_TTL_MINUTES", "9999999999", "Input should be less than or equal to "
                                                  "525600"),
    ("CHARGEGRAPH_HEARTBEAT_INTERVAL", "-1", "Input should be greater than 0"),
    ("CHARGEGRAPH_HEARTBEAT_INTERVAL", "0", "Input should be greater than 0"),
    ("CHARGEGRAPH_COMMAND_TIMEOUT", "-1", "Input should be greater than 0"),
    ("CHARGEGRAPH_COMMAND_TIMEOUT", "0", "Input should be greater than 0"),
    ("CHARGEGRAPH_INSTANCE_LEASE_SECONDS", "0", "Input should be greater than or equal to 1"),
    # A renewal every third of it: a write loop.
    ("CHARGEGRAPH_INSTANCE_LEASE_SECONDS", "0.0001",
     "Input should be greater than or equal to 1"),
    # This overflowed the lease's timedelta at start: a traceback and exit 3 (inf and
    # nan: ``test_no_float_setting_is_nan_or_infinite``).
    ("CHARGEGRAPH_INSTANCE_LEASE_SECONDS", "1e308",
     "Input should be less than or equal to 3600"),
    ("CHARGEGRAPH_HEARTBEAT_INTERVAL", "86401", "Input should be less than or equal to 86400"),
    ("CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S", "-1", "Input should be greater than or equal to 0"),
    # An hour is the most that pages in time.
    ("CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S", "3601",
     "Input should be less than or equal to 3600"),
    # uvicorn would not wait at all, and no command could be given up on before the end.
    ("CHARGEGRAPH_SHUTDOWN_GRACE_S", "0", "Input should be greater than 0"),
    ("CHARGEGRAPH_SHUTDOWN_GRACE_S", "-1", "Input should be greater than 0"),
    ("CHARGEGRAPH_SHUTDOWN_GRACE_S", "3601", "Input should be less than or equal to 3600"),
    ("CHARGEGRAPH_WS_KEEPALIVE_S", "-1", "Input should be greater than or equal to 0"),
    # A ping every few milliseconds on every socket: a busy loop.
    ("CHARGEGRAPH_WS_KEEPALIVE_S", "0.001",
     "give 0 (no keep-alives) or at least 1 second"),
    ("CHARGEGRAPH_WS_KEEPALIVE_S", "soon", "Input should be a valid number, unable to parse "
                                           "string as a number"),
    ("CHARGEGRAPH_RETAIN_METER_SAMPLES_DAYS", "-1",
     "Input should be greater than or equal to 0"),
    # Beyond a timedelta's reach at the sweep; a fraction of a day is no setting's.
    ("CHARGEGRAPH_RETAIN_METER_SAMPLES_DAYS", "99999999999",
     "Input should be less than or equal to 36500"),
    ("CHARGEGRAPH_RETAIN_STATUS_EVENTS_DAYS", "1.5",
     "Input should be a valid integer, unable to parse string as an integer"),
    ("CHARGEGRAPH_RETAIN_CONNECTION_EVENTS_DAYS", "-1",
     "Input should be greater than or equal to 0"),
])
def test_nonsense_durations_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        variable: str, value: str, message: str) -> None:
    from pydantic import ValidationError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert problems(refused.value) == [f"{variable}: {message} (got {value!r})"]


#: Every float setting, read from the model: one added later is covered too.
FLOAT_SETTINGS = sorted(name for name, info in Settings.model_fields.items()
                        if info.annotation in (float, float | None))


def test_the_float_settings_are_found() -> None:
    assert {"command_timeout", "instance_lease_seconds", "ws_keepalive_s",
            "offline_webhook_grace_s", "auth_cache_hours", "shutdown_grace_s"
            } <= set(FLOAT_SETTINGS)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_no_float_setting_is_nan_or_infinite(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path, name: str, value: str) -> None:
    """Ops QA s32: CHARGEGRAPH_COMMAND_TIMEOUT=nan was refused "less than or equal to
    3600": the bound named as the reason. A setting that is not a finite number is told
    so, whichever bound it has."""
    from pydantic import ValidationError

    monkeypatch.chdir(tmp_path)
    variable = f"CHARGEGRAPH_{name.upper()}"
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert problems(refused.value) == [
        f"{variable}: Input should be a finite number (got {value!r})"]


def test_sensible_durations_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for variable, value in (("CHARGEGRAPH_JWT_TTL_MINUTES", "1"),
                            ("CHARGEGRAPH_HEARTBEAT_INTERVAL", "86400"),
                            ("CHARGEGRAPH_COMMAND_TIMEOUT", "0.5"),
                            ("CHARGEGRAPH_INSTANCE_LEASE_SECONDS", "1")):
        monkeypatch.setenv(variable, value)
    settings = Settings()
    assert (settings.jwt_ttl_minutes, settings.heartbeat_interval,
            settings.command_timeout, settings.instance_lease_seconds) == (1, 86400, 0.5, 1)
    monkeypatch.setenv("CHARGEGRAPH_INSTANCE_LEASE_SECONDS", "3600")
    assert Settings().instance_lease_seconds == 3600
    assert Settings().offline_webhook_grace_s == 60  # the default
    for grace in ("0", "0.5", "3600"):  # 0: webhooks at once, as before the grace
        monkeypatch.setenv("CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S", grace)
        assert Settings().offline_webhook_grace_s == float(grace)
    assert Settings().ws_keepalive_s == 25  # the default
    for keepalive in ("0", "1", "2.5", "3600"):  # 0: no keep-alives
        monkeypatch.setenv("CHARGEGRAPH_WS_KEEPALIVE_S", keepalive)
        assert Settings().ws_keepalive_s == float(keepalive)
    assert Settings().shutdown_grace_s == 10  # the default


def test_the_shutdown_grace_bounds_uvicorns_wait_and_the_commands_given_up(
        tmp_path: Path) -> None:
    """uvicorn waits the grace for requests in flight; commands the chargers have are
    given up on a second before it ends (half of a grace under two seconds), for their
    answers to be written out."""
    from chargegraph.app import give_up_after
    from chargegraph.cli import _uvicorn

    settings = Settings(database_url=f"sqlite:///{tmp_path}/grace.db", shutdown_grace_s=2.5)
    assert _uvicorn(settings).config.timeout_graceful_shutdown == 2.5
    assert [give_up_after(grace) for grace in (10, 2.5, 1, 0.5)] == [9, 1.5, 0.5, 0.25]


def test_misspelt_variables_are_named_with_the_closest_setting() -> None:
    """QA (onboarding): CHARGEGRAPH_DB or CHARGEGRAPH_PUBLIC_MAPS changed nothing, without
    a word. Each CHARGEGRAPH_* name that is no setting is a warning, with a suggestion
    when one is close; settings (in any case) and the project's own variables are not."""
    warnings = unknown_variables({
        "the environment": ["CHARGEGRAPH_DB", "CHARGEGRAPH_PUBLIC_MAPS", "CHARGEGRAPH_PORT",
                            "chargegraph_log_level", "CHARGEGRAPH_REQUIRE_REDIS",
                            "CHARGEGRAPH_TEST_MONGODB_URL", "PATH", "CHARGEGRAPH_ZZZ"],
        ".env": ["CHARGEGRAPH_OCPP_HOSTNAME", "CHARGEGRAPH_HOST"]})
    assert warnings == [
        "CHARGEGRAPH_DB (in the environment) is not a setting and is ignored: did you mean "
        "CHARGEGRAPH_DATABASE_URL?",
        "CHARGEGRAPH_PUBLIC_MAPS (in the environment) is not a setting and is ignored: did "
        "you mean CHARGEGRAPH_PUBLIC_MAP?",
        "CHARGEGRAPH_ZZZ (in the environment) is not a setting and is ignored",
        "CHARGEGRAPH_OCPP_HOSTNAME (in .env) is not a setting and is ignored: did you mean "
        "CHARGEGRAPH_OCPP_HOST?"]


def test_every_variable_the_project_sets_is_known() -> None:
    """The code, CI and container files name no CHARGEGRAPH_* variable the start-up check
    would call misspelt (a new one read outside Settings belongs in NOT_SETTINGS)."""
    root = Path(__file__).resolve().parents[2]
    files = [path for pattern in ("**/*.py", ".ci/*", "scripts/*", "Dockerfile",
                                  "docker-compose.yml") for path in root.glob(pattern)
             if path.is_file() and ".venv" not in path.parts
             and path != Path(__file__).resolve()]
    names = {name for path in files
             for name in re.findall(r"CHARGEGRAPH_[A-Z0-9_]*[A-Z0-9]", path.read_text())}
    assert "CHARGEGRAPH_REQUIRE_REDIS" in names and "CHARGEGRAPH_DATABASE_URL" in names
    assert unknown_variables({"the repository": names}) == []


def test_the_cli_warns_of_misspelt_variables_at_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from typer.testing import CliRunner

    from chargegraph.cli import app as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("CHARGEGRAPH_PUBLIC_MAPS", "true")
    (tmp_path / ".env").write_text("CHARGEGRAPH_DB=sqlite:///other.db\n")
    made = CliRunner().invoke(cli, ["create-user", "--email", "a@example.com", "--password",
                                    "long enough password", "--role", "admin"])
    assert made.exit_code == 0, made.output
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "is not a setting" in r.getMessage()]
    assert warned == [
        "CHARGEGRAPH_PUBLIC_MAPS (in the environment) is not a setting and is ignored: did "
        "you mean CHARGEGRAPH_PUBLIC_MAP?",
        "CHARGEGRAPH_DB (in .env) is not a setting and is ignored: did you mean "
        "CHARGEGRAPH_DATABASE_URL?"]


@pytest.mark.parametrize("name", sorted(set(Settings.model_fields) - {
    "cors_origins", "trusted_proxies", "graphiql_assets"}))
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_value_is_refused_whatever_the_setting(name: str, empty: str) -> None:
    """Compose's ``${VAR}`` gives an empty value when VAR is unset: as a path it was the
    working directory (the JWT secret written there), as a host every interface."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        Settings(**{name: empty})  # type: ignore[arg-type]
    assert problems(refused.value)[0].startswith(
        f"CHARGEGRAPH_{name.upper()}: is empty: give a value, or leave the variable out "
        "for the default")


def test_empty_cors_origins_trusted_proxies_and_graphiql_assets_mean_none() -> None:
    """GraphiQL's assets empty meant unpkg.com before empty values were refused (review
    s23: a deployment setting it so stopped starting)."""
    settings = Settings(cors_origins="", trusted_proxies="", graphiql_assets="")
    assert (settings.cors_allowed_origins, settings.trusted_proxies,
            settings.graphiql_assets) == ([], "", None)


@pytest.mark.parametrize(("host", "ocpp_host"), [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "0.0.0.0"),
    ("::", "::1"), ("::1", "::"), ("localhost", "127.0.0.1")])
def test_one_port_for_graphql_and_ocpp_on_overlapping_hosts_is_refused(
        host: str, ocpp_host: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        Settings(host=host, ocpp_host=ocpp_host, port=9000, ocpp_port=9000)
    assert problems(refused.value) == [
        f"CHARGEGRAPH_PORT and CHARGEGRAPH_OCPP_PORT are both 9000 on {host} and "
        f"{ocpp_host}: give the GraphQL and the OCPP server a port each"]


def test_one_port_on_distinct_addresses_or_without_ocpp_is_kept() -> None:
    assert Settings(host="127.0.0.2", ocpp_host="127.0.0.1", port=9000).port == 9000
    # Review s23: IPv6 sockets are bound IPv6-only, so a wildcard covers its own family.
    assert Settings(host="0.0.0.0", ocpp_host="::1", port=9000).port == 9000
    assert Settings(host="::", ocpp_host="127.0.0.1", port=9000).port == 9000
    assert Settings(port=9000, ocpp_enabled=False).port == 9000


def test_auto_registrations_per_hour_reach_the_charging_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``CHARGEGRAPH_AUTO_REGISTER_PER_HOUR`` (review s26: 50 was fixed): 50 by default,
    0 for no limit."""
    from chargegraph.app import build_services
    from chargegraph.security import Argon2Hasher

    assert Settings().auto_register_per_hour == 50
    monkeypatch.setenv("CHARGEGRAPH_AUTO_REGISTER_PER_HOUR", "0")
    services = build_services(Settings(), store=None, hasher=Argon2Hasher.fast(),  # type: ignore[arg-type]
                              jwt_secret="s" * 32)
    assert services.charging.registrations.limit == 0


def test_the_cards_a_driver_may_hold_reach_the_fleet_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``CHARGEGRAPH_MAX_CARDS_PER_DRIVER`` (QA s33): 10 by default, 0 for no limit,
    validated as the other counts."""
    from pydantic import ValidationError

    from chargegraph.app import build_services

    assert Settings().max_cards_per_driver == 10
    monkeypatch.setenv("CHARGEGRAPH_MAX_CARDS_PER_DRIVER", "25")
    services = build_services(Settings(), store=None, hasher=Argon2Hasher.fast(),  # type: ignore[arg-type]
                              jwt_secret="s" * 32)
    assert services.fleet.max_cards_per_driver == 25
    for value, message in [("-1", "greater than or equal to 0"),
                           ("10001", "less than or equal to 10000"),
                           ("2.5", "valid integer")]:
        monkeypatch.setenv("CHARGEGRAPH_MAX_CARDS_PER_DRIVER", value)
        with pytest.raises(ValidationError) as caught:
            Settings()
        assert message in str(caught.value)


@pytest.mark.parametrize(("value", "message"), [
    ("99", "Input should be greater than or equal to 100"),
    ("0", "Input should be greater than or equal to 100"),
    ("-1000", "Input should be greater than or equal to 100"),
    # 4 MiB of the smallest sampled values holds 300,000: beyond, no bound at all.
    ("100001", "Input should be less than or equal to 100000"),
    ("1e6", "Input should be a valid integer, unable to parse string as an integer"),
    ("2000.5", "Input should be a valid integer, unable to parse string as an integer"),
    ("many", "Input should be a valid integer, unable to parse string as an integer"),
])
def test_a_nonsense_sampled_values_bound_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, message: str) -> None:
    from pydantic import ValidationError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert problems(refused.value) == [
        f"CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES: {message} (got {value!r})"]


def test_the_sampled_values_bound_defaults_to_the_ocpp_server_s(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES``: ``frames.MAX_SAMPLED_VALUES`` unless
    raised (chargers batching a backlog) or lowered."""
    from ocpp_bridge.frames import MAX_SAMPLED_VALUES

    monkeypatch.chdir(tmp_path)
    assert Settings().ocpp_max_sampled_values == MAX_SAMPLED_VALUES == 1000
    for value in ("100", "10000", "100000"):
        monkeypatch.setenv("CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES", value)
        assert Settings().ocpp_max_sampled_values == int(value)


def test_every_setting_has_a_row_in_the_readme_s_table() -> None:
    """Each setting's variable starts a row of the README's settings table, whole or as
    a ``/ `_SUFFIX``` after a sibling's (``CHARGEGRAPH_OCPP_TLS_CERT` / `_KEY``)."""
    readme = Path(__file__).resolve().parents[2] / "README.md"
    cells = [line.split(" | ")[0] for line in readme.read_text(encoding="utf-8").splitlines()
             if line.startswith("| `CHARGEGRAPH_")]
    named = [re.findall(r"`([A-Z0-9_]+)`", cell) for cell in cells]

    def sibling(whole: str, suffix: str) -> str:
        # A whole name names itself. A ``_SUFFIX`` takes the place of the row's last
        # word (``A_TLS_CERT`` / ``_KEY``: ``A_TLS_KEY``), or of the words it ends with
        # (``A_LOCKOUT_S`` / ``_MAX_LOCKOUT_S``: ``A_MAX_LOCKOUT_S``).
        if suffix.startswith("CHARGEGRAPH_"):
            return suffix
        words, tail = whole.split("_"), suffix.split("_")[1:]
        shared = max((n for n in range(1, len(tail) + 1) if words[-n:] == tail[-n:]),
                     default=1)
        return "_".join(words[:-shared] + tail)

    def has_a_row(variable: str) -> bool:
        return any(variable == whole or any(variable == sibling(whole, suffix)
                                            for suffix in suffixes)
                   for whole, *suffixes in named)

    assert [f"CHARGEGRAPH_{name.upper()}" for name in Settings.model_fields
            if not has_a_row(f"CHARGEGRAPH_{name.upper()}")] == []


def test_the_folder_of_a_new_database_is_told_before_the_secret_beside_it_is_made(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """QA s31: without CHARGEGRAPH_JWT_SECRET, the secret's state folder (beside the
    database by default) was made first, parents and all, and the database's folder was
    then found made: no warning named it."""
    from chargegraph.app import create_app
    from tests.helpers import FastHasher

    folder = tmp_path / "no" / "such"
    settings = Settings(database_url=f"sqlite:///{folder}/a.db", jwt_secret=None)
    with caplog.at_level(logging.WARNING, logger="chargegraph"):
        create_app(settings, hasher=FastHasher())
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == (f"created the folder {folder.resolve()} for a new SQLite database: "
                       "if you meant an existing one, check CHARGEGRAPH_DATABASE_URL")
    assert any("generated one and stored it" in line for line in said[1:])


def test_ocpp_port_0_on_a_host_of_several_addresses_stops_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31: asyncio gives each address of the OCPP host a free port of its own,
    and the banner and chargers are told one: a host resolving to IPv4 and IPv6
    (``localhost`` on many machines) is refused with port 0, one address is served."""
    import socket

    from chargegraph.app import create_app
    from tests.helpers import FastHasher

    real = socket.getaddrinfo

    def both(host: str, *args: object, **kwargs: object) -> list[tuple]:  # type: ignore[type-arg]
        if host == "dual.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0))]
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", both)
    values = {"database_url": f"sqlite:///{tmp_path}/a.db", "jwt_secret": "s" * 40}
    with pytest.raises(ConfigError, match=r"^CHARGEGRAPH_OCPP_PORT 0 \(any free port\) "
                                          r"needs a host of one address; 'dual.example'"):
        create_app(Settings(ocpp_host="dual.example", ocpp_port=0, **values),
                   hasher=FastHasher())
    create_app(Settings(ocpp_host="127.0.0.1", ocpp_port=0, **values), hasher=FastHasher())
    create_app(Settings(ocpp_host="dual.example", ocpp_port=9123, **values),
               hasher=FastHasher())
