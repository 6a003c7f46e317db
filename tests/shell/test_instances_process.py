"""Several `chargegraph` processes on one database with Redis, stopped with SIGTERM as a
container runtime does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import served_ports, wait_healthy
from tests.shell.test_process import (
    clean_env,
    graphql,
    launch,
    reset_answered_by_a_stop,
    stop,
)
from tests.support.redis_server import RedisServer

__all__ = ["launch"]  # the fixture, used by name

SECRET = "instances-process-secret-0123456789abcdefghij"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def start_instance(launch: list[subprocess.Popen[str]], tmp_path: Path, redis: RedisServer,
                   *args: str, ocpp: bool = True
                   ) -> tuple[subprocess.Popen[str], str, int | None]:
    env = {**clean_env(tmp_path), "CHARGEGRAPH_PUBSUB_URL": redis.url,
           "CHARGEGRAPH_JWT_SECRET": SECRET,
           "CHARGEGRAPH_OCPP_ENABLED": "true" if ocpp else "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "chargegraph", *args, "--port", "0", "--ocpp-port", "0"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    launch.append(process)
    port, ocpp_port = served_ports(process)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(process, url, 60)
    return process, url, ocpp_port


def test_stopping_the_instance_that_relayed_a_command_answers_it_at_once(
        launch: list[subprocess.Popen[str]], tmp_path: Path, redis: RedisServer) -> None:
    """QA: SIGTERM of a GraphQL-only instance while its relayed Reset waited for a charger
    on another instance held the request 10 s, then a bare 500: its stop installed no
    ``begin_shutdown``, and the relay failed its commands only when it closed. Now the
    request gets its GraphQL answer when the stop begins: unanswered, "shutting down"
    (the charger has the command)."""
    holder, holder_url, ocpp_port = start_instance(launch, tmp_path, redis, "demo",
                                                   "--no-chargers")
    assert ocpp_port is not None
    asker, asker_url, _ = start_instance(launch, tmp_path, redis, "serve", ocpp=False)
    login = graphql(asker_url, 'mutation { login(email: "admin@demo.chargegraph.dev", '
                               'password: "chargegraph-demo") { token } }').json()
    token = login["data"]["login"]["token"]
    created = graphql(asker_url, 'mutation { createStation(input: {cpId: "RELAY-1", '
                                 'name: "Relay"}) { errors { code } } }', token).json()
    assert created["data"]["createStation"]["errors"] == [], created
    error = reset_answered_by_a_stop(asker_url, token, ocpp_port, "RELAY-1", asker)
    assert error["code"] == "CHARGER_TIMEOUT" and "shutting down" in error["message"]
    audit = graphql(holder_url, "{ auditLog(filter: {action: COMMAND}) { nodes { after } } }",
                    token).json()
    # Audited as it was sent and as it ended (stages SENT and ANSWERED, since QA s17).
    assert [n["after"]["stage"] for n in audit["data"]["auditLog"]["nodes"]] == [
        "ANSWERED", "SENT"], audit
    stop(holder)
