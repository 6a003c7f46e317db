"""`python -m chargegraph` as a user runs it: a real process on free loopback ports, stopped
with SIGTERM like a container runtime or systemd would."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
import pytest
from ocpp.routing import on
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from chargegraph import __version__
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from store.sqlite.migrations import MIGRATION_LOCK_WAIT_S, MIGRATIONS, apply_migrations
from tests.helpers import communicate, free_port, served_ports, until, wait_healthy

#: The checkout these tests belong to. An editable install may point `chargegraph` at
#: another checkout (a second git worktree, say); PYTHONPATH wins over it, so the process
#: runs the code under test.
CHECKOUT = Path(__file__).resolve().parents[2]


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The caller's CHARGEGRAPH_* variables stay out: the test decides the configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEGRAPH_")}
    path = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path,
            "CHARGEGRAPH_DATABASE_URL": f"sqlite:///{tmp_path}/data/svc.db"}


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:  # only when a test failed half-way
        if process.poll() is None:
            process.kill()
            process.wait()


def start(launch: list[subprocess.Popen[str]], tmp_path: Path, *args: str
          ) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "chargegraph", *args, "--port", "0", "--ocpp-port", "0"],
        cwd=tmp_path, env=clean_env(tmp_path), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    launch.append(process)
    url = f"http://127.0.0.1:{served_ports(process)[0]}"
    wait_healthy(process, url)
    return process, url


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    # 30 s against a hang only: a stop that never ends fails here, not a slow one.
    stdout, stderr = communicate(process, 30)
    assert process.returncode == 0, stderr  # graceful: 0, not -15
    return stdout, stderr


def graphql(url: str, query: str, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/graphql", json={"query": query}, headers=headers, timeout=10)


def test_serve_answers_and_stops_gracefully(launch: list[subprocess.Popen[str]],
                                            tmp_path: Path) -> None:
    process, url = start(launch, tmp_path, "serve")
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "store": "ok",
                                                  "version": __version__,
                                                  "schema": MIGRATIONS[-1][0]}
    answer = graphql(url, "{ __typename }")
    assert answer.status_code == 200 and answer.json() == {"data": {"__typename": "Query"}}
    _, stderr = stop(process)
    # Zero setup: the database and a private generated secret appeared beside each other.
    secret = tmp_path / "data" / ".chargegraph" / "jwt_secret"
    assert (tmp_path / "data" / "svc.db").exists()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # The database holds password hashes too; the ready line says which one it is.
    assert stat.S_IMODE((tmp_path / "data" / "svc.db").stat().st_mode) == 0o600
    assert f"database SQLite {(tmp_path / 'data').resolve()}/svc.db" in stderr
    assert "WARNING" in stderr and str(secret) in stderr
    assert secret.read_text() not in stderr


def admin_id(url: str) -> str:
    login = graphql(url, 'mutation { login(email: "admin@demo.chargegraph.dev", '
                         'password: "chargegraph-demo") { token } }').json()
    me = graphql(url, "{ me { id email role } }", login["data"]["login"]["token"]).json()
    assert me["data"]["me"]["role"] == "ADMIN", me
    return str(me["data"]["me"]["id"])


def test_demo_seeds_serves_and_stops(launch: list[subprocess.Popen[str]],
                                     tmp_path: Path) -> None:
    process, url = start(launch, tmp_path, "demo", "--no-chargers")
    stations = graphql(url, "{ stations { totalCount } }")  # the demo map is public
    assert stations.json() == {"data": {"stations": {"totalCount": 8}}}
    first_admin = admin_id(url)
    stdout, _ = stop(process)
    assert f"{url}/graphql" in stdout and "chargegraph-demo" in stdout
    assert "Simulated chargers  none (--no-chargers)" in stdout
    # Where the chargers keep their state, beside the database (QA s31: never said).
    state = (tmp_path / "data").resolve() / "svc.db.chargers.json"
    assert f"Chargers' state     {state} (kept across restarts;" in stdout
    # A second start keeps the world it finds.
    process, url = start(launch, tmp_path, "demo", "--no-chargers")
    assert admin_id(url) == first_admin
    stop(process)
    # --reset deletes it and seeds a new one.
    process, url = start(launch, tmp_path, "demo", "--no-chargers", "--reset")
    assert graphql(url, "{ stations { totalCount } }").json()["data"]["stations"][
        "totalCount"] == 8
    assert admin_id(url) != first_admin
    _, stderr = stop(process)
    assert "--reset: removed" in stderr


def demo_connector(url: str, cp_id: str, number: int) -> dict[str, Any] | None:
    """A demo station's connector as the public map shows it, once its charger is online."""
    station = graphql(url, f'{{ station(cpId: "{cp_id}") {{ online connectors {{ '
                           'connectorId status statusAt } } }').json()["data"]["station"]
    if not station["online"]:
        return None
    return next(c for c in station["connectors"] if c["connectorId"] == number)


def reported_since(url: str, since: datetime) -> dict[str, Any]:
    """BER-ALEX-01's connector 2 once its charger has reported it at or after ``since``
    (bounded, 90 s: eight chargers connect and boot)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        connector = demo_connector(url, "BER-ALEX-01", 2)
        if connector is not None and connector["statusAt"] is not None \
                and datetime.fromisoformat(connector["statusAt"]) >= since:
            return connector
        time.sleep(0.2)
    raise AssertionError("BER-ALEX-01 never reported connector 2")


def test_the_demos_chargers_keep_what_they_were_told_across_a_restart(
        launch: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """QA s30: a connector an operator made inoperative was reported Available again by
    the restarted demo's charger, the map and the server's record disagreeing with what
    the charger had been told. Kept in a file beside the database; a new world (--reset)
    starts with chargers told nothing."""
    began = datetime.now(UTC)
    process, url = start(launch, tmp_path, "demo")
    reported_since(url, began)
    login = graphql(url, 'mutation { login(email: "admin@demo.chargegraph.dev", '
                         'password: "chargegraph-demo") { token } }').json()
    told = graphql(url, 'mutation { changeAvailability(input: {cpId: "BER-ALEX-01", '
                        'connectorId: 2, type: INOPERATIVE}) { status errors { code } } }',
                   login["data"]["login"]["token"]).json()["data"]["changeAvailability"]
    # Scheduled if the fleet charges there: the charger stops it as the demo stops.
    assert told["status"] in ("ACCEPTED", "SCHEDULED"), told
    stop(process)
    assert (tmp_path / "data" / "svc.db.chargers.json").exists()
    restarted = datetime.now(UTC)
    process, url = start(launch, tmp_path, "demo")
    assert reported_since(url, restarted)["status"] == "UNAVAILABLE"
    stop(process)
    reset = datetime.now(UTC)
    process, url = start(launch, tmp_path, "demo", "--reset")
    assert reported_since(url, reset)["status"] == "AVAILABLE"
    stop(process)


def fails_to_start(tmp_path: Path, *args: str, ocpp_port: int | None = None
                   ) -> tuple[int, str]:
    process = subprocess.run(
        [sys.executable, "-m", "chargegraph", "serve", "--port", "0",
         "--ocpp-port", str(ocpp_port or 0), *args], cwd=tmp_path,
        env=clean_env(tmp_path), text=True, capture_output=True, timeout=60)
    return process.returncode, process.stderr


def test_a_taken_ocpp_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = fails_to_start(tmp_path, ocpp_port=port)
    assert code != 0
    assert f"cannot start the OCPP server on 127.0.0.1:{port}:" in stderr
    assert "address already in use" in stderr and "Traceback" not in stderr


def test_a_taken_graphql_port_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.run(
            [sys.executable, "-m", "chargegraph", "serve", "--port", str(port),
             "--ocpp-port", "0"], cwd=tmp_path, env=clean_env(tmp_path),
            text=True, capture_output=True, timeout=60)
    assert process.returncode == 3, process.stderr
    assert f"cannot start the GraphQL server on 127.0.0.1:{port}:" in process.stderr
    assert "Address already in use" in process.stderr and "Traceback" not in process.stderr
    # It used to start the OCPP server and log "ready" first, then fail to bind.
    assert "ChargeGraph ready" not in process.stderr
    assert "OCPP 1.6J central system" not in process.stderr


def test_one_port_for_graphql_and_ocpp_is_a_configuration_error(tmp_path: Path) -> None:
    """It used to log "ready" while the OCPP server took every connection to the port
    (/healthz answered 404 from it)."""
    port = 8765  # refused before anything binds it
    process = subprocess.run(
        [sys.executable, "-m", "chargegraph", "serve", "--port", str(port), "--ocpp-port",
         str(port)], cwd=tmp_path, env=clean_env(tmp_path), text=True,
        capture_output=True, timeout=60)
    assert process.returncode == 2, process.stderr
    assert process.stderr == (
        f"configuration error: CHARGEGRAPH_PORT and CHARGEGRAPH_OCPP_PORT are both {port} "
        f"on 127.0.0.1 and 127.0.0.1: give the GraphQL and the OCPP server a port each\n")


@pytest.mark.parametrize("name", ["CHARGEGRAPH_OCPP_HOST", "CHARGEGRAPH_HOST",
                                  "CHARGEGRAPH_STATE_DIR", "CHARGEGRAPH_OCPP_TLS_CERT"])
def test_an_empty_host_or_path_is_a_configuration_error(tmp_path: Path, name: str) -> None:
    """As compose's ``${VAR}`` passes an unset VAR: an empty OCPP host opened the port on
    every interface, an empty state dir wrote the JWT secret into the working folder."""
    process = subprocess.run(
        [sys.executable, "-m", "chargegraph", "serve", "--port", "0",
         "--ocpp-port", "0"], cwd=tmp_path,
        env={**clean_env(tmp_path), name: ""}, text=True, capture_output=True, timeout=60)
    assert process.returncode == 2, process.stderr
    assert process.stderr.startswith(f"configuration error: {name}: is empty"), \
        process.stderr
    assert list(tmp_path.iterdir()) == []  # no jwt_secret, no database


def image_command(instruction: str) -> list[str]:
    """The Dockerfile's ``CMD`` or ``HEALTHCHECK … CMD`` (exec form), run from this
    checkout: ``chargegraph`` as ``python -m chargegraph``, ``python`` as this one."""
    import json

    text = (CHECKOUT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(instruction + " "))
    command = json.loads(line[line.index("CMD ") + 4:])
    program = {"chargegraph": [sys.executable, "-m", "chargegraph"],
               "python": [sys.executable]}[command[0]]
    return [*program, *command[1:]]


def test_the_images_health_check_waits_out_the_longest_start() -> None:
    """QA s28: the image allowed 10 s to start, but an instance waits up to
    ``MIGRATION_LOCK_WAIT_S`` for another's SQLite migration before it listens, so Docker
    marked it unhealthy (and an orchestrator restarted it) while it rightly waited."""
    text = (CHECKOUT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK "))
    options = dict(option.removeprefix("--").split("=", 1)
                   for option in line[:line.index(" CMD ")].split()[1:])
    seconds = {"s": 1, "m": 60, "h": 3600}
    period = options["start-period"]
    assert int(period[:-1]) * seconds[period[-1]] >= MIGRATION_LOCK_WAIT_S
    assert "start-interval" in options  # a quick start is seen soon, not after 15 s


def test_the_images_health_check_and_command_follow_the_users_configuration(
        launch: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """The ports in /data/.env (the image's working folder), the host in the environment
    in place of the image's ENV: the health check used to read the port from the
    environment only (it asked 8000: unhealthy), and the command's ``--host 0.0.0.0``
    overrode the user's host."""
    # Chosen before the process exists, and so not 0: the health check is a process of
    # its own that reads the port from the same .env.
    port, ocpp_port = free_port(), free_port()
    (tmp_path / ".env").write_text(f"CHARGEGRAPH_PORT={port}\n"
                                   f"CHARGEGRAPH_OCPP_PORT={ocpp_port}\n")
    env = {**clean_env(tmp_path), "CHARGEGRAPH_HOST": "127.0.0.1",
           "CHARGEGRAPH_OCPP_HOST": "127.0.0.1"}
    process = subprocess.Popen(image_command("CMD"), cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    launch.append(process)
    wait_healthy(process, f"http://127.0.0.1:{port}")

    def health_check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(image_command("HEALTHCHECK"), cwd=tmp_path, env=env,
                              text=True, capture_output=True, timeout=60)

    healthy = health_check()
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout == f"healthy: http://127.0.0.1:{port}/healthz\n"
    _, stderr = stop(process)
    assert f"GraphQL on http://127.0.0.1:{port}/graphql" in stderr
    stopped = health_check()
    assert stopped.returncode == 1
    assert stopped.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: ")


def test_a_corrupt_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "svc.db").write_text("this is not a database\n" * 100)
    code, stderr = fails_to_start(tmp_path)
    assert code != 0
    assert "cannot start the store at sqlite:///" in stderr
    assert "file is not a database" in stderr and "Traceback" not in stderr


def test_the_process_runs_this_checkout(tmp_path: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import chargegraph; print(chargegraph.__file__)"],
        cwd=tmp_path, env=clean_env(tmp_path), text=True, capture_output=True, check=True)
    assert Path(found.stdout.strip()) == CHECKOUT / "chargegraph" / "__init__.py"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_demo_seeds_exits_0(launch: list[subprocess.Popen[str]],
                                             tmp_path: Path, stop_signal: signal.Signals
                                             ) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chargegraph", "demo", "--no-chargers", "--port", "0",
         "--ocpp-port", "0"], cwd=tmp_path,
        env=clean_env(tmp_path), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    launch.append(process)
    database = tmp_path / "data" / "svc.db"
    deadline = time.monotonic() + 30
    while not database.exists():  # the store is open: seeding (a dozen hashes) has begun
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr  # it used to be killed (-15) or raise
    assert "Stopped while seeding the demo" in stderr
    assert "Traceback" not in stderr and "Uvicorn running" not in stderr and stdout == ""
    # The next start completes the world the stop interrupted.
    process, url = start(launch, tmp_path, "demo", "--no-chargers")
    assert graphql(url, "{ stations { totalCount } }").json() == {
        "data": {"stations": {"totalCount": 8}}}
    admin_id(url)
    stop(process)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_waiting_for_another_instances_migration_exits_0(
        launch: list[subprocess.Popen[str]], tmp_path: Path, stop_signal: signal.Signals
        ) -> None:
    """Review r28-upgrade: a start waits (up to 30 minutes) for another process holding
    the SQLite write lock (an instance migrating the database), in the lifespan's
    start-up, which uvicorn does not cancel: an operator who read the "waiting" line and
    stopped the instance (Ctrl+C; `docker stop`, systemd: SIGTERM) got no answer until
    the lock came free. A stop cancels the start: it ends within the store's busy
    timeout, exits 0, and serves nothing."""
    database = tmp_path / "data" / "svc.db"
    database.parent.mkdir()

    async def older() -> None:
        async with aiosqlite.connect(database, isolation_level=None) as conn:
            await conn.execute("PRAGMA journal_mode = wal")
            await apply_migrations(conn, MIGRATIONS[:-1])

    asyncio.run(older())
    holder = sqlite3.connect(database, isolation_level=None)  # an instance migrating
    holder.execute("BEGIN IMMEDIATE")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "chargegraph", "serve", "--port", "0",
             "--ocpp-port", "0"], cwd=tmp_path, env=clean_env(tmp_path),
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        launch.append(process)
        assert process.stderr is not None
        seen, deadline = "", time.monotonic() + 30
        while "waiting for it" not in seen and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, (seen, process.communicate())
            seen += line
        assert "waiting for it" in seen, seen
        process.send_signal(stop_signal)
        # Against a hang only: a stop waiting for the lock (30 minutes) fails here; one
        # waiting out the store's busy timeout (5 s) on a loaded machine does not.
        stdout, stderr = process.communicate(timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert process.returncode == 0, seen + stderr
    assert "Stopped while starting" in stderr, seen + stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, seen + stderr
    assert "ChargeGraph ready" not in stderr and "Uvicorn running" not in stderr
    assert stdout == ""
    # Nothing migrated: the next start does it.
    with sqlite3.connect(database) as conn:
        assert conn.execute('SELECT MAX("version") FROM "schema_version"').fetchone() == (
            MIGRATIONS[-2][0],)


def test_every_log_line_has_the_apps_format(launch: list[subprocess.Popen[str]],
                                            tmp_path: Path) -> None:
    process, url = start(launch, tmp_path, "serve")
    assert graphql(url, "{ __typename }").status_code == 200
    stdout, stderr = stop(process)
    # uvicorn's own lines ("Started server process", access lines) used to be
    # "INFO:     …" without a time, the access lines on stdout.
    line = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|"
                      r"CRITICAL) [\w.]+: .+")
    assert [text for text in stderr.splitlines() if not line.fullmatch(text)] == []
    assert stdout == ""
    assert "INFO uvicorn.error: Started server process" in stderr
    assert 'INFO uvicorn.access: 127.0.0.1:' in stderr
    assert '"POST /graphql HTTP/1.1" 200' in stderr


class HoldsItsReset(SimulatedChargePoint):
    """A charger that says when it got a Reset (``got_reset``) and answers it Accepted
    only once told (``answer_reset``): never, unless the test sets it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.got_reset = asyncio.Event()
        self.answer_reset = asyncio.Event()

    @on(Action.reset)
    async def on_reset(self, type: str) -> result.Reset:
        self.got_reset.set()
        await self.answer_reset.wait()
        return result.Reset(status="Accepted")  # type: ignore[arg-type]


def demo_with_station(launch: list[subprocess.Popen[str]], tmp_path: Path, cp_id: str,
                      **env: str) -> tuple[subprocess.Popen[str], str, int, str]:
    """A ``demo --no-chargers`` process (``env`` added to its environment) with station
    ``cp_id`` created: the process, its GraphQL URL, its OCPP port and an admin's
    token."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chargegraph", "demo", "--no-chargers", "--port", "0",
         "--ocpp-port", "0"], cwd=tmp_path, env={**clean_env(tmp_path), **env}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    launch.append(process)
    port, ocpp_port = served_ports(process)
    assert ocpp_port is not None
    url = f"http://127.0.0.1:{port}"
    wait_healthy(process, url)
    token = sign_in_and_create(url, cp_id)
    return process, url, ocpp_port, token


def sign_in_and_create(url: str, cp_id: str) -> str:
    """The demo admin's token, station ``cp_id`` created by it."""
    login = graphql(url, 'mutation { login(email: "admin@demo.chargegraph.dev", '
                         'password: "chargegraph-demo") { token } }').json()
    token: str = login["data"]["login"]["token"]
    created = graphql(url, f'mutation {{ createStation(input: {{cpId: "{cp_id}", '
                           'name: "Stop"}) { errors { code } } }', token).json()
    assert created["data"]["createStation"]["errors"] == [], created
    return token


async def reset(client: httpx.AsyncClient, url: str, token: str, cp_id: str
                ) -> dict[str, Any]:
    """``reset`` of ``cp_id`` asked of ``url``: its payload (a GraphQL answer, never a
    bare 500)."""
    response = await client.post(
        f"{url}/graphql", headers={"authorization": f"Bearer {token}"},
        json={"query": f'mutation {{ reset(input: {{cpId: "{cp_id}", type: SOFT}}) {{'
                       " status errors { code message } } }"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["data"]["reset"]
    return answer


async def until_refused(url: str) -> None:
    """Until ``url`` takes no new connection: its stop began (uvicorn closes its
    listening socket once ``begin_shutdown`` was called)."""
    async def refused() -> bool:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                await client.get(f"{url}/healthz")
        except httpx.TransportError:
            return True
        return False

    await until(refused, attempts=300, step=0.05)


async def stop_while_a_reset_is_held(
        url: str, token: str, ocpp_port: int, cp_id: str, stopped: subprocess.Popen[str],
        stopped_url: str, answer: bool,
        meanwhile: Callable[[httpx.AsyncClient], Awaitable[None]] | None = None
        ) -> dict[str, Any]:
    """A Reset asked of ``url`` for ``cp_id``, a ``HoldsItsReset`` charger connected to
    ``ocpp_port``; once the charger has it, ``stopped`` (serving ``stopped_url``) is sent
    SIGTERM and, its stop begun, ``meanwhile`` runs and the charger answers if
    ``answer``. The reset's payload."""
    async with connected(f"ws://127.0.0.1:{ocpp_port}/ocpp", cp_id,
                         charge_point=HoldsItsReset) as charger:
        assert isinstance(charger, HoldsItsReset)
        async with httpx.AsyncClient(timeout=60) as client:
            asking = asyncio.create_task(reset(client, url, token, cp_id))
            await asyncio.wait_for(charger.got_reset.wait(), 30)
            stopped.send_signal(signal.SIGTERM)
            await until_refused(stopped_url)
            if meanwhile is not None:
                await meanwhile(client)
            if answer:
                charger.answer_reset.set()
            return await asyncio.wait_for(asking, 60)


async def test_a_stop_waits_for_the_answer_of_a_command_the_charger_has(
        launch: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """SIGTERM while an operator's Reset waits for a charger that has it: the request
    waits through the stop for the charger's answer and gets it (before: CHARGER_TIMEOUT
    "shutting down: try again in a moment" at once, though the charger may act)."""
    process, url, ocpp_port, token = await asyncio.to_thread(
        demo_with_station, launch, tmp_path, "SHUT-1")
    answer = await stop_while_a_reset_is_held(url, token, ocpp_port, "SHUT-1", process, url,
                                              answer=True)
    assert answer == {"status": "ACCEPTED", "errors": []}, answer
    _, stderr = await asyncio.to_thread(communicate, process, 60)
    assert process.returncode == 0, stderr


async def test_a_stop_gives_up_on_a_silent_charger_before_its_grace_ends(
        launch: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """A charger that never answers, a 2 s grace: the request gets CHARGER_TIMEOUT saying
    the charger may have acted (never "try again": it has the command), written out
    before the process exits."""
    process, url, ocpp_port, token = await asyncio.to_thread(
        demo_with_station, launch, tmp_path, "SHUT-2", CHARGEGRAPH_SHUTDOWN_GRACE_S="2")
    answer = await stop_while_a_reset_is_held(url, token, ocpp_port, "SHUT-2", process, url,
                                              answer=False)
    [error] = answer["errors"]
    assert error["code"] == "CHARGER_TIMEOUT", answer
    assert "may have acted" in error["message"] and "try again" not in error["message"]
    _, stderr = await asyncio.to_thread(communicate, process, 60)
    assert process.returncode == 0, stderr
    assert "timeout graceful shutdown exceeded" not in stderr, stderr


def test_backup_while_the_service_takes_writes(launch: list[subprocess.Popen[str]],
                                               tmp_path: Path) -> None:
    """`chargegraph backup` next to a running `serve` that creates users all along: the
    copy has every user whose creation was answered before the backup began, each with
    its audit entry (whole transactions), though they are still in the WAL, which a
    plain `cp` of the database file misses."""
    import contextlib
    import sqlite3
    import threading

    env = clean_env(tmp_path)
    cli = [sys.executable, "-m", "chargegraph"]
    subprocess.run([*cli, "create-user", "--email", "root@example.com", "--password",
                    "root-pass-123", "--role", "admin"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=60)
    process, url = start(launch, tmp_path, "serve")
    token = graphql(url, 'mutation { login(email: "root@example.com", password: '
                         '"root-pass-123") { token } }').json()["data"]["login"]["token"]
    created: list[str] = []
    refused: list[object] = []
    stopping = threading.Event()

    def create_users() -> None:
        while not stopping.is_set():
            email = f"driver{len(created)}@example.com"
            answer = graphql(url, f'mutation {{ createUser(input: {{email: "{email}", '
                                  f'password: "driver-pass-123", name: "D"}}) '
                                  "{ user { id } errors { code } } }", token).json()
            if answer.get("data", {}).get("createUser", {}).get("errors") != []:
                refused.append(answer)
                return
            created.append(email)

    writer = threading.Thread(target=create_users)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while len(created) < 20:
            assert not refused and time.monotonic() < deadline, refused
            time.sleep(0.01)
        answered_before = list(created)
        made = subprocess.run([*cli, "backup", "backup.db"], cwd=tmp_path, env=env,
                              text=True, capture_output=True, timeout=60)
    finally:
        stopping.set()
        writer.join()
    assert made.returncode == 0, made.stderr
    assert not refused, refused
    assert made.stdout.startswith("backed up to backup.db (")
    with contextlib.closing(sqlite3.connect(tmp_path / "backup.db")) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        emails = {row[0] for row in copy.execute('SELECT "email" FROM "user"')}
        audited = copy.execute('SELECT COUNT(*) FROM "audit_entry" WHERE "entity" = '
                               "'user' AND \"action\" = 'CREATE'").fetchone()[0]
    assert set(answered_before) <= emails
    assert audited == len(emails)  # the admin's too: create-user audits as well
    stop(process)
