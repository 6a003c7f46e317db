"""The command line through typer's runner (in process)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargegraph.cli import app as cli
from graph import export_sdl
from tests.shell.guards import never_serve

PASSWORD = "long enough password"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    return CliRunner()


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


def test_create_user_twice_is_an_error(runner: CliRunner) -> None:
    args = ["--password", PASSWORD, "--role", "driver"]
    assert runner.invoke(cli, ["create-user", "--email", "mia@example.com", *args]
                         ).exit_code == 0
    again = runner.invoke(cli, ["create-user", "--email", "MIA@example.com", *args])
    assert again.exit_code == 1
    assert again.stdout == "" and "email" in again.stderr


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
    assert port.exit_code == 2 and "port" in port.stderr


def test_demo_reset_refuses_mongodb(runner: CliRunner,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", "mongodb://127.0.0.1:1/cg")
    refused = runner.invoke(cli, ["demo", "--reset"])
    assert refused.exit_code == 2 and "SQLite databases only" in refused.stderr


def test_export_schema(runner: CliRunner) -> None:
    schema = runner.invoke(cli, ["export-schema"])
    assert schema.exit_code == 0
    assert schema.stdout == export_sdl() and "type Query" in schema.stdout


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "-1"], ["--ocpp-port", "0"],
                                  ["--ocpp-port", "65536"]])
def test_ports_out_of_range_are_refused(runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                        args: list[str]) -> None:
    never_serve(monkeypatch)  # 70000 used to wrap around and bind 4464
    for command in ("serve", "demo"):
        refused = runner.invoke(cli, [command, *args])
        assert refused.exit_code == 2, refused.output
        assert f"Invalid value for '{args[0]}'" in refused.stderr


@pytest.mark.parametrize(("variable", "value"), [("CHARGEGRAPH_PORT", "70000"),
                                                 ("CHARGEGRAPH_OCPP_PORT", "0")])
def test_ports_out_of_range_in_the_environment_are_refused(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    never_serve(monkeypatch)
    monkeypatch.setenv(variable, value)
    refused = runner.invoke(cli, ["serve"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith("configuration error:")
    assert variable.removeprefix("CHARGEGRAPH_").lower() in refused.stderr
