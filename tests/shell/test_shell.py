"""Settings, secrets, hashing, store selection, the app's health check and the CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from chargegraph.app import create_app
from chargegraph.cli import app as cli
from chargegraph.secrets import resolve_jwt_secret
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings
from chargegraph.stores import open_store
from graph import export_sdl
from store.sqlite import SqliteStore


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEGRAPH_PORT", "8123")
    monkeypatch.setenv("CHARGEGRAPH_PUBLIC_MAP", "true")
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "sqlite:///data/x.db")
    settings = Settings()
    assert settings.port == 8123 and settings.public_map
    assert settings.resolved_state_dir() == Path("data/.chargegraph")


def test_jwt_secret_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    first = resolve_jwt_secret(settings)
    path = tmp_path / "state" / "jwt_secret"
    assert len(first) >= 32 and path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_jwt_secret(settings) == first
    with pytest.raises(ValueError):
        resolve_jwt_secret(Settings(jwt_secret="too-short"))  # type: ignore[arg-type]
    assert resolve_jwt_secret(Settings(jwt_secret="x" * 40)) == "x" * 40  # type: ignore[arg-type]


def test_argon2_hasher() -> None:
    hasher = Argon2Hasher.fast()
    digest = hasher.hash("a secret phrase")
    assert digest.startswith("$argon2id$")
    assert hasher.verify(digest, "a secret phrase")
    assert not hasher.verify(digest, "another phrase")
    assert not hasher.verify("garbage", "a secret phrase")


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.db"), SqliteStore)
    with pytest.raises(ValueError):
        open_store("postgres://nope")
    with pytest.raises(ValueError):
        open_store("sqlite:///")


def test_healthz_and_graphql_through_the_app(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/app.db", ocpp_enabled=False,
                        state_dir=tmp_path / "state")
    with TestClient(create_app(settings, hasher=Argon2Hasher.fast())) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok", "store": "ok"}
        answer = client.post("/graphql", json={"query": "{ __typename }"})
        assert answer.json() == {"data": {"__typename": "Query"}}
        assert client.get("/", follow_redirects=False).headers["location"] == "/graphql"


def test_cli_create_user_and_export_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    runner = CliRunner()
    made = runner.invoke(cli, ["create-user", "--email", "root@example.com", "--password",
                               "long enough password", "--role", "admin"])
    assert made.exit_code == 0, made.output
    assert len(made.stdout.strip()) == 24
    again = runner.invoke(cli, ["create-user", "--email", "ROOT@example.com", "--password",
                                "long enough password", "--role", "operator", "--company",
                                "Acme"])
    assert again.exit_code == 1 and "email" in again.stderr
    op = runner.invoke(cli, ["create-user", "--email", "op@example.com", "--password",
                             "long enough password", "--role", "operator", "--company", "Acme",
                             "--name", "Olga"])
    assert op.exit_code == 0
    schema = runner.invoke(cli, ["export-schema"])
    assert schema.exit_code == 0 and schema.stdout == export_sdl()
    assert os.path.exists(tmp_path / "cli.db")
