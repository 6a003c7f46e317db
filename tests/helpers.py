"""Small shared test helpers (no fixtures)."""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeGuard, get_args

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import Argon2Error, InvalidHashError

from domain.query import And, Filter, NotSub, Or, Sub

if TYPE_CHECKING:
    from chargegraph.settings import Settings


def is_filter(value: object) -> TypeGuard[Filter]:
    """Whether ``value`` is a filter of the query language."""
    return isinstance(value, get_args(Filter))


def subselects(where: Filter) -> list[Sub | NotSub]:
    """The sub-selects in ``where``: each a join of the store (a ``$lookup`` on MongoDB,
    a sub-query on SQLite)."""
    match where:
        case And(parts) | Or(parts):
            return [sub for part in parts for sub in subselects(part)]
        case Sub() | NotSub():
            return [where]
        case _:
            return []


class FastHasher:
    """Argon2 with test-sized costs; the product's hasher is chargegraph.security's."""

    def __init__(self) -> None:
        self._argon = _Argon2(time_cost=1, memory_cost=1024, parallelism=1)

    def hash(self, password: str) -> str:
        return self._argon.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon.verify(password_hash, password)
        except (Argon2Error, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return False


def free_port() -> int:
    """A port free a moment ago, for a server that must be told its port before it
    exists and cannot be handed a socket: redis-server's (its ``port 0`` turns TCP off,
    not "any port"). Another process may take it before the server binds it; an
    in-process server serves a ``loopback_socket()`` instead, a ``chargegraph`` process
    ``--port 0`` (``served_ports``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a port the system chose, held from the moment
    its port is known: a test's uvicorn serves it (``server.serve(sockets=[sock])``),
    so no other process can take the port before the server listens, as one could
    between ``free_port``'s close and the server's own bind (shared machines). Not
    listening, it also refuses connections: an address where nothing answers, for as
    long as the test holds it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def any_ocpp_port(settings: Settings) -> Settings:
    """``settings`` with the OCPP server on a port the system chooses as it binds (the
    app's ``state.ocpp_port`` tells which), as `serve --ocpp-port 0` asks."""
    return settings.model_copy(update={"ocpp_port": 0})


async def until_started(server: Any) -> None:
    """Waits (bounded, 20 s) until a ``uvicorn.Server`` serving in a task is listening:
    a service's start-up (its migrations, its seed) took 0.46 s on a loaded machine
    (session 30): a bound of 5 s left room for ten times that only."""
    for _ in range(800):
        if server.started:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("uvicorn did not start")


async def until(condition: Callable[[], Awaitable[Any]], attempts: int = 500,
                step: float = 0.01) -> None:
    """Waits (bounded: ``attempts`` × ``step`` seconds) until ``condition()`` holds."""
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition never held")


async def soon(holds: Callable[[], bool]) -> None:
    """Waits (bounded, 10 s) until ``holds()``: state of the test's own (a simulated
    charger's, a socket's), read without awaiting."""
    async def check() -> bool:
        return holds()

    await until(check, attempts=200, step=0.05)


def all_taken(bus: Any) -> bool:
    """Whether every subscriber of the in-process ``bus`` (a ``MemoryEventBus``) has
    taken what was published: one that acts on an event in the step that takes it
    (nothing awaited first) has acted on it. For ``soon``, instead of a pause."""
    return not any(queue.items for queue in bus._queues)


async def graphql_in_process(services: Any, tokens: Any, query: str,
                             variables: dict[str, Any] | None = None,
                             user_id: str | None = None) -> dict[str, Any]:
    """``query`` through the real GraphQL app over ASGI (no network), as ``user_id``
    (signed in with a token of ``tokens``) or anonymous; its data, asserting no errors."""
    import httpx

    from graph import create_graphql_app

    headers = {}
    if user_id is not None:
        headers["authorization"] = f"Bearer {tokens.issue(user_id).token}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(
            app=create_graphql_app(services, tokens)), base_url="http://test") as client:
        response = await client.post("/graphql", json={"query": query,
                                                        "variables": variables},
                                     headers=headers)
    body = response.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


def wait_healthy(process: Any, url: str, seconds: float = 90) -> None:
    """Waits (bounded) until the ``chargegraph`` process started as ``process`` answers
    ``{url}/healthz`` with 200; fails with its output if it exits first."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {process.communicate()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("never healthy")


#: What a ``chargegraph serve`` or ``demo`` process logs of the ports it serves: the
#: ready line the GraphQL port, the OCPP server's line its own.
READY_LINE = re.compile(r"ChargeGraph ready: GraphQL on http://\S+?:(\d+)/graphql")
OCPP_LINE = re.compile(r"OCPP 1\.6J central system on wss?://\S+?:(\d+)/ocpp")

#: What ``served_ports`` read of a process's stderr, given back by ``communicate``.
_said: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def served_ports(process: Any, seconds: float = 90) -> tuple[int, int | None]:
    """The GraphQL and OCPP ports (``None``: no OCPP server) of a ``chargegraph`` process
    started with ``--port 0 --ocpp-port 0``, read from its stderr (a pipe) until its ready
    line (bounded): the system chose them as the process bound them, so no other process
    could take them between a test's choice and the bind, as ``free_port``'s may. The
    GraphQL port serves a moment later (``wait_healthy``). Read from the pipe's descriptor,
    not its buffer: ``communicate(process)`` reads on from there and gives all back."""
    fd = process.stderr.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    said: list[str] = []

    def read() -> None:
        while not READY_LINE.search("".join(said)):
            chunk = os.read(fd, 65536)
            if not chunk:  # exited
                return
            said.append(decoder.decode(chunk))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    if reader.is_alive():  # never ready: stopped, which ends the read
        process.kill()
        reader.join(10)
    text = _said[process] = "".join(said)
    ready, ocpp = READY_LINE.search(text), OCPP_LINE.search(text)
    if ready is None:
        stdout, stderr = communicate(process, 10)
        raise AssertionError(f"no ready line (exit {process.returncode}): {stderr}{stdout}")
    return int(ready[1]), int(ocpp[1]) if ocpp is not None else None


def communicate(process: Any, timeout: float) -> tuple[str, str]:
    """``process.communicate(timeout=)``, its stderr with what ``served_ports`` read."""
    stdout, stderr = process.communicate(timeout=timeout)
    return stdout, _said.pop(process, "") + (stderr or "")


class MovedClock:
    """The services' clock (``ServiceContext.clock``) moved while a test runs: ``at(s)``
    makes it read ``s`` seconds after ``t0`` and run on from there; ``by(d)`` runs ``d``
    ahead of the real one. The real clock is put back on leaving the ``with``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.real: Callable[[], datetime] = ctx.clock
        self.t0 = self.real()

    def at(self, seconds: float) -> None:
        self.by(self.t0 + timedelta(seconds=seconds) - self.real())

    def by(self, ahead: timedelta) -> None:
        real = self.real
        self.ctx.clock = lambda: real() + ahead

    def __enter__(self) -> MovedClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ctx.clock = self.real
