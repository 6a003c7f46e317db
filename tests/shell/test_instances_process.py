"""Several `chargegraph` processes on one database with Redis, stopped with SIGTERM as a
container runtime does."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import communicate, served_ports, wait_healthy
from tests.shell.test_process import (
    clean_env,
    graphql,
    launch,
    reset,
    sign_in_and_create,
    stop,
    stop_while_a_reset_is_held,
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


def holder_and_asker(launch: list[subprocess.Popen[str]], tmp_path: Path,
                     redis: RedisServer, cp_id: str
                     ) -> tuple[subprocess.Popen[str], str, int, subprocess.Popen[str], str,
                                str]:
    """A ``demo`` instance to hold the chargers and a GraphQL-only ``serve`` to relay
    commands to them, on one database and Redis, station ``cp_id`` created: each process
    and URL, the holder's OCPP port and an admin's token."""
    holder, holder_url, ocpp_port = start_instance(launch, tmp_path, redis, "demo",
                                                   "--no-chargers")
    assert ocpp_port is not None
    asker, asker_url, _ = start_instance(launch, tmp_path, redis, "serve", ocpp=False)
    token = sign_in_and_create(asker_url, cp_id)
    return holder, holder_url, ocpp_port, asker, asker_url, token


async def test_stopping_the_instance_that_relayed_a_command_waits_for_its_answer(
        launch: list[subprocess.Popen[str]], tmp_path: Path, redis: RedisServer) -> None:
    """SIGTERM of a GraphQL-only instance while its relayed Reset waits for the charger on
    another instance: the request waits through the stop for the charger's answer and
    gets it (QA before: held 10 s then a bare 500; then answered at once "shutting down"
    though the charger had it)."""
    holder, holder_url, ocpp_port, asker, asker_url, token = await asyncio.to_thread(
        holder_and_asker, launch, tmp_path, redis, "RELAY-1")
    answer = await stop_while_a_reset_is_held(asker_url, token, ocpp_port, "RELAY-1", asker,
                                              asker_url, answer=True)
    assert answer == {"status": "ACCEPTED", "errors": []}, answer
    _, stderr = await asyncio.to_thread(communicate, asker, 60)
    assert asker.returncode == 0, stderr
    audit = graphql(holder_url, "{ auditLog(filter: {action: COMMAND}) { nodes { after } } }",
                    token).json()
    # Audited as it was sent and as it ended (stages SENT and ANSWERED, since QA s17).
    assert [n["after"]["stage"] for n in audit["data"]["auditLog"]["nodes"]] == [
        "ANSWERED", "SENT"], audit
    await asyncio.to_thread(stop, holder)


async def test_a_stopping_holder_carries_a_relayed_command_to_its_answer(
        launch: list[subprocess.Popen[str]], tmp_path: Path, redis: RedisServer) -> None:
    """SIGTERM of the instance holding the charger while another's relayed Reset waits
    for it: a new command for the charger is refused at once (CHARGER_OFFLINE, "shutting
    down"), the Reset the charger has gets its answer, then the holder exits 0."""
    holder, holder_url, ocpp_port, asker, asker_url, token = await asyncio.to_thread(
        holder_and_asker, launch, tmp_path, redis, "RELAY-2")
    refused: list[dict[str, Any]] = []

    async def new_command(client: httpx.AsyncClient) -> None:
        refused.append(await reset(client, asker_url, token, "RELAY-2"))

    answer = await stop_while_a_reset_is_held(asker_url, token, ocpp_port, "RELAY-2",
                                              holder, holder_url, answer=True,
                                              meanwhile=new_command)
    assert answer == {"status": "ACCEPTED", "errors": []}, answer
    [[error]] = [payload["errors"] for payload in refused]
    assert error["code"] == "CHARGER_OFFLINE" and "shutting down" in error["message"], error
    _, stderr = await asyncio.to_thread(communicate, holder, 60)
    assert holder.returncode == 0, stderr
    await asyncio.to_thread(stop, asker)
