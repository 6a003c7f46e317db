"""Prometheus metrics at ``GET /metrics``, in the text exposition format (0.0.4), written
here rather than with ``prometheus_client``: a dozen series need no dependency, and the
counters the hot paths increment stay plain dicts of ints.

* Counters (``MetricsRegistry``, the ``domain.ports.Metrics`` the doors call): OCPP CALLs
  answered, by action and result; commands sent to chargers, by action and outcome;
  GraphQL requests over HTTP and operations over websockets, by operation type, outcome
  and transport; CSV exports, by export and
  outcome. Per process, from its start.
* Gauges, read only when scraped (``Sources``): nothing on any hot path keeps them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from domain.entities import Session, SessionState, Station
from domain.ports import Store
from domain.query import Eq

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: A scrape's store reads give up after this long: the store then counts as unhealthy
#: and its counts are left out, so a stuck database cannot hold scrapes (or pile them up).
STORE_TIMEOUT_S = 5.0
#: When this process (near enough: the app's module graph) started.
PROCESS_START = time.time()


class MetricsRegistry:
    """The counters. Each increment is a dict lookup and an int addition on a key of one
    or two strings from a small fixed set (the callers bound their labels); the OCPP one
    keys by action alone, to a two-slot list, so no tuple is built per message."""

    __slots__ = ("commands", "exports", "graphql", "ocpp")

    def __init__(self) -> None:
        #: action → [CALLRESULTs, CALLERRORs]
        self.ocpp: dict[str, list[int]] = {}
        self.commands: dict[tuple[str, str], int] = {}
        self.graphql: dict[tuple[str, str, str], int] = {}
        self.exports: dict[tuple[str, str], int] = {}

    def ocpp_message(self, action: str, ok: bool) -> None:
        slots = self.ocpp.get(action)
        if slots is None:
            slots = self.ocpp[action] = [0, 0]
        slots[0 if ok else 1] += 1

    def charger_command(self, action: str, outcome: str) -> None:
        key = (action, outcome)
        self.commands[key] = self.commands.get(key, 0) + 1

    def graphql_request(self, operation: str, outcome: str, transport: str = "http"
                        ) -> None:
        key = (operation, outcome, transport)
        self.graphql[key] = self.graphql.get(key, 0) + 1

    def export_request(self, export: str, outcome: str) -> None:
        key = (export, outcome)
        self.exports[key] = self.exports.get(key, 0) + 1


class Gateway(Protocol):
    def connected(self) -> list[str]: ...


class Bus(Protocol):
    @property
    def subscriber_count(self) -> int: ...

    @property
    def connected(self) -> bool: ...


class LiveCounts(Protocol):
    running: int
    connections: int


@dataclass
class Sources:
    """What the gauges read, attached while the lifespan builds the app (each stays
    ``None``, and its gauges out, until it exists or on an instance without it)."""

    version: str
    store: Store | None = None
    bus: Bus | None = None
    gateway: Gateway | None = None
    live: LiveCounts | None = None
    webhook_queues: Callable[[], list[int]] | None = None
    started: float = field(default=PROCESS_START)


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: Sequence[tuple[dict[str, str], float]]


def escape(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            text = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{{{text}}} {_number(value)}" if text
                         else f"{family.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def counters(registry: MetricsRegistry) -> list[Family]:
    ocpp = [({"action": action, "result": result}, count)
            for action, slots in sorted(registry.ocpp.items())
            for result, count in (("ok", slots[0]), ("CALLERROR", slots[1])) if count]
    commands = [({"action": a, "outcome": o}, n)
                for (a, o), n in sorted(registry.commands.items())]
    graphql = [({"operation": op, "outcome": o, "transport": t}, n)
               for (op, o, t), n in sorted(registry.graphql.items())]
    exports = [({"export": e, "outcome": o}, n)
               for (e, o), n in sorted(registry.exports.items())]
    return [
        Family("chargegraph_ocpp_messages_total", "counter",
               "CALLs from chargers answered by this instance, by action and result "
               "(ok: CALLRESULT)", ocpp),
        Family("chargegraph_charger_commands_total", "counter",
               "Commands sent to chargers connected to this instance, by action and "
               "outcome", commands),
        Family("chargegraph_graphql_requests_total", "counter",
               "GraphQL requests, by operation type, outcome (ok, error: executed with "
               "errors or a payload's service failure, STORE_*, UNAVAILABLE, "
               "NOT_READ_BACK; invalid: refused before execution; replayed) and "
               "transport (http; ws: an operation sent over a websocket, a subscription "
               "counted once as it starts)", graphql),
        Family("chargegraph_export_requests_total", "counter",
               "CSV and personal data exports over HTTP, by export and outcome (ok: every "
               "row sent, invalid: a malformed or unauthenticated request, forbidden, "
               "not_found, limited: refused so, error: failed, aborted: the client went "
               "away; export unknown: a file name that is no export)", exports),
    ]


async def _store_gauges(store: Store) -> list[Family]:
    """Health and the two counts, or health 0 alone when the store fails or is slow."""
    try:
        async with asyncio.timeout(STORE_TIMEOUT_S):
            healthy = await store.health() is None
            online = await store.count(Station, Eq("online", True)) if healthy else None
            active = await store.count(Session, Eq("state", SessionState.ACTIVE)) \
                if healthy else None
    except Exception:  # a scrape reports the failure as a 0; /healthz says why
        healthy, online, active = False, None, None
    families = [Family("chargegraph_store_up", "gauge",
                       "1 when the store answers and can take writes (as /healthz)",
                       [({}, 1 if healthy else 0)])]
    if online is not None and active is not None:
        families += [
            Family("chargegraph_stations_online", "gauge",
                   "Stations whose charger is connected (to any instance)", [({}, online)]),
            Family("chargegraph_sessions_active", "gauge",
                   "Charging sessions in progress (all instances)", [({}, active)])]
    return families


def _gauge(name: str, help_text: str, value: float) -> Family:
    return Family(name, "gauge", help_text, [({}, value)])


def local_gauges(sources: Sources) -> list[Family]:
    """What this process holds in memory: no I/O."""
    families = [
        Family("chargegraph_build_info", "gauge", "The running build's version; always 1",
               [({"version": sources.version}, 1)]),
        _gauge("process_start_time_seconds", "When the process started, in Unix seconds",
               sources.started)]
    if sources.gateway is not None:
        families.append(_gauge("chargegraph_chargers_connected",
                                "Chargers connected to this instance",
                                len(sources.gateway.connected())))
    if sources.live is not None:
        families += [
            _gauge("chargegraph_graphql_websockets", "GraphQL websockets open on this "
                   "instance", sources.live.connections),
            _gauge("chargegraph_graphql_websocket_operations", "Operations (subscriptions "
                   "mostly) running over this instance's websockets", sources.live.running)]
    if sources.bus is not None:
        families += [
            _gauge("chargegraph_event_bus_subscribers",
                   "Subscribers of this instance's event bus", sources.bus.subscriber_count),
            _gauge("chargegraph_event_bus_up", "1 while events and commands reach the "
                   "other instances (Redis subscribed; always 1 in-process), else 0",
                   int(sources.bus.connected))]
    if sources.webhook_queues is not None:
        lengths = sources.webhook_queues()
        families += [
            _gauge("chargegraph_webhook_queued_events", "Events waiting for delivery to "
                   "webhooks, all webhooks together", sum(lengths)),
            _gauge("chargegraph_webhook_queue_longest", "Events waiting for the webhook "
                   "with the most", max(lengths, default=0))]
    return families


async def scrape(registry: MetricsRegistry, sources: Sources) -> str:
    families = local_gauges(sources) + counters(registry)
    if sources.store is not None:
        families += await _store_gauges(sources.store)
    return render(families)
