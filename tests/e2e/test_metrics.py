"""``GET /metrics``: scraped from a real ChargeGraph after OCPP traffic from chargers and
GraphQL requests, read back with a parser of the Prometheus text format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from chargegraph import __version__
from ocpp_bridge.simulator import connected
from tests.e2e.conftest import Running, running_service
from tests.e2e.wsclient import GraphQLWS
from tests.ocpp.conftest import STATION_PASSWORD

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, labels), and each family's TYPE; any line that breaks the text
    format (0.0.4) fails the test."""
    samples: Samples = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in types, line
            types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, raw_labels, value = match.groups()
        labels = _LABEL.findall(raw_labels or "")
        assert ",".join(f'{k}="{v}"' for k, v in labels) == (raw_labels or ""), line
        assert name in types, f"{name} has no TYPE line before it"
        unescaped = frozenset((k, v.replace('\\"', '"').replace("\\n", "\n")
                               .replace("\\\\", "\\")) for k, v in labels)
        assert (name, unescaped) not in samples, f"repeated: {line}"
        samples[(name, unescaped)] = float(value)
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(service: Running) -> tuple[Samples, dict[str, str]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{service.http_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def post(service: Running, query: str, token: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{service.http_url}/graphql", json={"query": query},
                                   headers=headers)
    return answer.json()  # type: ignore[no-any-return]


async def raw_call(ws: ClientConnection, unique_id: str, action: str,
                   payload: dict[str, Any]) -> list[Any]:
    await ws.send(json.dumps([2, unique_id, action, payload]))
    while True:  # the server may send CALLs of its own meanwhile
        frame = json.loads(await ws.recv())
        if frame[1] == unique_id:
            return frame  # type: ignore[no-any-return]


async def test_metrics_count_ocpp_graphql_and_commands(tmp_path: Path) -> None:
    async with running_service(tmp_path) as service:
        token = await service.token("op")  # one mutation: login
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await cp.heartbeat()
            await cp.heartbeat()
            ws = await connect(f"{service.ocpp_url}/CP-OPEN", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
            try:
                # Answered with CALLERRORs: an action nobody serves, a bad payload.
                assert (await raw_call(ws, "u1", "Invented.Action\n\"x", {}))[0] == 4
                assert (await raw_call(ws, "u2", "Authorize", {"idTag": 5}))[0] == 4
                assert (await raw_call(ws, "u3", "Heartbeat", {}))[0] == 3
                cleared = await post(service, 'mutation { clearCache(input: {cpId: '
                                     '"CP-1"}) { status errors { code } } }', token)
                assert cleared["data"]["clearCache"] == {"status": "ACCEPTED", "errors": []}
                refused = await post(service, 'mutation { changeConfiguration(input: {cpId: '
                                     '"CP-1", key: "NoSuchKey", value: "1"}) { status } }',
                                     token)
                assert refused["data"]["changeConfiguration"]["status"] == "NOT_SUPPORTED"
                assert (await post(service, "{ __typename }"))["data"]
                assert "errors" in await post(service, "{ nope }")  # refused: invalid
                samples, types = await scrape(service)
            finally:
                await ws.close()

    ocpp = "chargegraph_ocpp_messages_total"
    assert types[ocpp] == "counter"
    assert value(samples, ocpp, action="BootNotification", result="ok") == 1
    assert value(samples, ocpp, action="Heartbeat", result="ok") == 3
    assert value(samples, ocpp, action="Authorize", result="CALLERROR") == 1
    # An action the charger invented is no label of its own: the series stay bounded.
    assert value(samples, ocpp, action="other", result="CALLERROR") == 1
    assert not any("Invented" in dict(labels).get("action", "") for _, labels in samples)
    commands = "chargegraph_charger_commands_total"
    assert value(samples, commands, action="ClearCache", outcome="ok") == 1
    assert value(samples, commands, action="ChangeConfiguration", outcome="rejected") == 1
    requests = "chargegraph_graphql_requests_total"
    # login, clear, and the refused change (a charger's refusal is no GraphQL error)
    assert value(samples, requests, transport="http", operation="mutation", outcome="ok") == 3
    assert value(samples, requests, transport="http", operation="query", outcome="ok") == 1
    assert value(samples, requests, transport="http", operation="query", outcome="invalid") == 1

    assert value(samples, "chargegraph_build_info", version=__version__) == 1
    assert types["chargegraph_chargers_connected"] == "gauge"
    assert value(samples, "chargegraph_chargers_connected") == 2
    assert value(samples, "chargegraph_stations_online") == 2
    assert value(samples, "chargegraph_sessions_active") == 0
    assert value(samples, "chargegraph_store_up") == 1
    assert value(samples, "chargegraph_graphql_websockets") == 0
    assert value(samples, "chargegraph_graphql_websocket_operations") == 0
    assert value(samples, "chargegraph_webhook_queued_events") == 0
    assert (value(samples, "chargegraph_event_bus_subscribers") or 0) >= 1  # webhooks'
    assert value(samples, "chargegraph_event_bus_up") == 1
    assert (value(samples, "process_start_time_seconds") or 0) > 1.7e9


async def test_a_session_and_a_store_down_show_in_the_gauges(tmp_path: Path) -> None:
    async with running_service(tmp_path) as service, \
            connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.start_transaction(1, "TAG-OK")
        samples, _ = await scrape(service)
        assert value(samples, "chargegraph_sessions_active") == 1

        async def down() -> str | None:
            raise OSError("database gone")

        store = service.services.ctx.store
        store.health = down  # type: ignore[method-assign]
        samples, _ = await scrape(service)
    assert value(samples, "chargegraph_store_up") == 0
    assert value(samples, "chargegraph_sessions_active") is None  # not read: no guess


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    async with running_service(tmp_path, seed_data=False, metrics=False) as service, \
            httpx.AsyncClient() as client:
        assert (await client.get(f"{service.http_url}/metrics")).status_code == 404


async def answers(socket: GraphQLWS, op_id: str) -> list[str]:
    """The types of the messages of one operation sent over ``socket``, up to its end (its
    ``complete`` or ``error``)."""
    types: list[str] = []
    for _ in range(10):
        message = await socket.next()
        assert message["id"] == op_id, message
        types.append(message["type"])
        if message["type"] in ("complete", "error"):
            return types
    raise AssertionError(f"no end after {types}")


async def test_operations_over_the_websocket_are_counted_by_transport(
        tmp_path: Path) -> None:
    """Review s33: queries, mutations and subscriptions sent over the GraphQL websocket
    were not counted at all. Counted as over HTTP, by the same outcome rules, with
    ``transport="ws"``; a subscription once, as it starts, not per event."""
    status = "subscription { connectorStatusChanged { cpId status } }"
    async with running_service(tmp_path) as service:
        token = await service.token("op")  # over HTTP
        socket = await GraphQLWS.open(service.ws_url, token)
        try:
            query = await socket.subscribe("{ __typename }")
            assert await answers(socket, query) == ["next", "complete"]
            invalid = await socket.subscribe("{ nope }")
            assert await answers(socket, invalid) == ["error"]
            # Executed, and failed: a top-level error.
            failed = await socket.subscribe(
                '{ stations(filter: {search: "a\\u0001"}) { totalCount } }')
            assert await answers(socket, failed) == ["next", "complete"]
            # A payload's user error (the wrong password) is ok, as over HTTP.
            login = await socket.subscribe('mutation { login(email: "op@example.com", '
                                           'password: "wrong-pass-1") { errors { code } } }')
            assert await answers(socket, login) == ["next", "complete"]
            refused = await socket.subscribe(
                'subscription { commandCompleted(filter: {commandId: "nope"}) { cpId } }')
            assert await answers(socket, refused) == ["error"]
            nothing = await socket.subscribe("subscription { nope }")
            assert await answers(socket, nothing) == ["error"]
            live = await socket.subscribe(status)
            await service.until_subscribed(1)
            async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
                await cp.boot()
                for state in ("Preparing", "Charging"):
                    await cp.status(1, state)
                    event = await socket.next()
                    assert event["id"] == live
                    assert event["payload"]["data"]["connectorStatusChanged"]["status"] \
                        == state.upper()
            samples, _ = await scrape(service)
        finally:
            await socket.close()
    requests = "chargegraph_graphql_requests_total"

    def ws(operation: str, outcome: str) -> float | None:
        return value(samples, requests, transport="ws", operation=operation,
                     outcome=outcome)

    assert ws("query", "ok") == 1
    assert ws("query", "invalid") == 1
    assert ws("query", "error") == 1
    assert ws("mutation", "ok") == 1
    assert ws("subscription", "ok") == 1  # two events, one subscription
    assert ws("subscription", "error") == 1
    assert ws("subscription", "invalid") == 1
    assert value(samples, requests, transport="http", operation="mutation",
                 outcome="ok") == 1  # the sign-in
    assert sum(n for (name, labels), n in samples.items() if name == requests) == 8


async def test_a_variable_s_refused_value_is_counted_invalid_on_both_transports(
        tmp_path: Path) -> None:
    """Review s33: a subscription whose variable was refused was counted ``invalid`` and
    a query's or mutation's ``error`` (graphql-core refuses it before any field runs, as
    a plain result). One rule: the value is the client's, ``invalid``, over HTTP and the
    socket alike."""
    query = "query($b: Boolean!) { __typename @include(if: $b) }"
    mutation = 'mutation($p: String!) { login(email: "op@example.com", password: $p) { token } }'
    subscription = ("subscription($b: Boolean!) { connectorStatusChanged "
                    "{ cpId @include(if: $b) } }")
    async with running_service(tmp_path) as service:
        token = await service.token("op")  # over HTTP: the one mutation counted ok
        async with httpx.AsyncClient() as client:
            for document, variables in ((query, {"b": "x"}), (mutation, {"p": 5})):
                answer = await client.post(f"{service.http_url}/graphql", json={
                    "query": document, "variables": variables})
                assert "data" not in answer.json(), answer.text
        socket = await GraphQLWS.open(service.ws_url, token)
        try:
            for document, variables in ((query, {"b": "x"}), (mutation, {"p": 5}),
                                        (subscription, {"b": "x"})):
                op_id = await socket.subscribe(document, variables)
                assert (await answers(socket, op_id))[-1] in ("complete", "error")
            samples, _ = await scrape(service)
        finally:
            await socket.close()
    requests = "chargegraph_graphql_requests_total"
    for transport, operation in (("http", "query"), ("http", "mutation"), ("ws", "query"),
                                 ("ws", "mutation"), ("ws", "subscription")):
        assert value(samples, requests, transport=transport, operation=operation,
                     outcome="invalid") == 1, (transport, operation)
        assert value(samples, requests, transport=transport, operation=operation,
                     outcome="error") is None, (transport, operation)
