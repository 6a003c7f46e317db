"""GraphQL over HTTP: media types, status codes and request validation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.graph.conftest import Api

GQL_RESPONSE = "application/graphql-response+json"


async def test_post_json_default_media_type(api: Api) -> None:
    r = await api.client.post("/graphql", json={"query": "{ __typename }"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.json() == {"data": {"__typename": "Query"}}


async def test_graphql_response_media_type(api: Api) -> None:
    r = await api.client.post("/graphql", json={"query": "{ __typename }"},
                              headers={"accept": GQL_RESPONSE})
    assert r.status_code == 200
    assert r.headers["content-type"] == f"{GQL_RESPONSE}; charset=utf-8"


@pytest.mark.parametrize(("accept", "expected"), [
    (f"{GQL_RESPONSE}, application/json;q=0.9", GQL_RESPONSE),
    ("application/json", "application/json"),
    ("*/*", "application/json"),
    (f"application/json;q=0.5, {GQL_RESPONSE};q=0.1", "application/json"),
])
async def test_accept_negotiation(api: Api, accept: str, expected: str) -> None:
    r = await api.client.post("/graphql", json={"query": "{ __typename }"},
                              headers={"accept": accept})
    assert r.headers["content-type"].startswith(expected)


async def test_unacceptable_media_is_406(api: Api) -> None:
    r = await api.client.post("/graphql", json={"query": "{ __typename }"},
                              headers={"accept": "text/plain"})
    assert r.status_code == 406


@pytest.mark.parametrize(("media", "status"), [(GQL_RESPONSE, 400), ("application/json", 200)])
async def test_parse_and_validation_errors(api: Api, media: str, status: int) -> None:
    for query in ("{", "{ nope }", "query($x: Int!) { __typename }"):
        r = await api.client.post("/graphql", json={"query": query}, headers={"accept": media})
        assert r.status_code == status, query
        body = r.json()
        assert "data" not in body and body["errors"], query


@pytest.mark.parametrize("body", [
    "not json", "[]", '{"query": 1}', '{"variables": {}}', '{"query": "{ __typename }", '
    '"variables": []}', '{"query": "{ __typename }", "operationName": 3}',
    '{"query": "{ __typename }", "extensions": "x"}',
])
async def test_malformed_requests_are_400(api: Api, body: str) -> None:
    for media in (GQL_RESPONSE, "application/json"):
        r = await api.client.post("/graphql", content=body, headers={
            "content-type": "application/json", "accept": media})
        assert r.status_code == 400, body
        assert "data" not in r.json()


async def test_content_type_required(api: Api) -> None:
    r = await api.client.post("/graphql", content='{"query": "{ __typename }"}',
                              headers={"content-type": "text/plain"})
    assert r.status_code == 415


async def test_get_queries_and_no_mutations(api: Api) -> None:
    r = await api.client.get("/graphql", params={
        "query": "query($n: Int) { stations(first: $n) { totalCount } }",
        "variables": json.dumps({"n": 1})})
    assert r.status_code == 200 and r.json() == {"data": {"stations": {"totalCount": 0}}}
    r = await api.client.get("/graphql", params={
        "query": 'mutation { login(email: "a@b.cd", password: "x") { token } }'})
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


async def test_null_variables_and_extensions_allowed(api: Api) -> None:
    r = await api.client.post("/graphql", json={"query": "{ __typename }", "variables": None,
                                                "extensions": None, "operationName": None})
    assert r.status_code == 200


async def test_graphiql_for_browsers(api: Api) -> None:
    r = await api.client.get("/graphql", headers={"accept": "text/html"})
    assert r.status_code == 200 and "graphiql" in r.text.lower()


async def test_json_that_cannot_be_stored_is_a_bad_request(api: Api) -> None:
    """A lone surrogate is valid to Python's json but no UTF-8 database can store it; NaN
    is not JSON. Both are refused at the door instead of failing deep inside."""
    for body in (b'{"query": "{ __typename }", "variables": {"x": "\\ud800"}}',
                 b'{"query": "{ __typename }", "variables": {"x": NaN}}'):
        r = await api.client.post("/graphql", content=body,
                                  headers={"content-type": "application/json"})
        assert r.status_code == 400, body
        assert "not valid JSON" in r.json()["errors"][0]["message"]


async def test_several_operations_need_an_operation_name(api: Api) -> None:
    query = "query a { __typename } query b { __typename }"
    r = await api.post(query)
    assert r.json()["errors"][0]["message"] == \
        "Must provide operation name if query contains multiple operations."
    assert "data" not in r.json()
    named = await api.client.post("/graphql", json={"query": query, "operationName": "b"})
    assert named.json() == {"data": {"__typename": "Query"}}


async def test_every_refused_request_has_a_code(api: Api) -> None:
    """Clients switch on ``extensions.code``: the request-level refusals had only a
    message (QA s19), where the README promises a code on every top-level error."""
    post = api.client.post

    def code(r: Any) -> str:
        [error] = r.json()["errors"]
        return str(error["extensions"]["code"])

    several = "query a { __typename } query b { __typename }"
    assert code(await post("/graphql", json={"query": several})) \
        == "OPERATION_RESOLUTION_FAILURE"
    assert code(await post("/graphql", json={"query": several, "operationName": "z"})) \
        == "OPERATION_RESOLUTION_FAILURE"
    assert code(await post("/graphql", content="[]", headers={
        "content-type": "application/json"})) == "BAD_REQUEST"
    assert code(await post("/graphql", json={})) == "BAD_REQUEST"
    assert code(await post("/graphql", content="{}", headers={
        "content-type": "text/plain"})) == "BAD_REQUEST"  # 415
    assert code(await post("/graphql", json={"query": "{ __typename }"},
                           headers={"accept": "text/plain"})) == "BAD_REQUEST"  # 406
    assert code(await api.client.get("/graphql", params={
        "query": "mutation { signOut }"})) == "BAD_REQUEST"  # 405
    assert code(await api.client.put("/graphql", json={})) == "BAD_REQUEST"  # 405
    assert code(await post("/graphql", json={
        "query": "subscription { connectorStatusChanged { status } }"})) == "BAD_REQUEST"


async def test_bad_token_is_401(api: Api) -> None:
    r = await api.post("{ me { id } }", token="nonsense")
    assert r.status_code == 401
    assert r.json()["errors"][0]["extensions"]["code"] == "INVALID_TOKEN"
    r = await api.client.post("/graphql", json={"query": "{ __typename }"},
                              headers={"authorization": "Basic abc"})
    assert r.status_code == 401


async def test_limits(api: Api) -> None:
    deep = "company { name }"
    for _ in range(8):
        deep = f"company {{ users {{ nodes {{ {deep} }} }} }}"
    deep = f"{{ me {{ {deep} }} }}"
    r = await api.client.post("/graphql", json={"query": deep}, headers={"accept": GQL_RESPONSE})
    assert r.status_code == 400 and "depth" in r.text
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(40)) + " }"
    r = await api.client.post("/graphql", json={"query": aliases},
                              headers={"accept": GQL_RESPONSE})
    assert r.status_code == 400 and "alias" in r.text.lower()


async def test_unexpected_errors_are_masked(api: Api, world, services, monkeypatch, caplog
                                            ) -> None:
    async def boom(*args, **kwargs):
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(services.reads, "page", boom)
    token = api.token_for(world.users["admin"].id)
    r = await api.post("{ stations { totalCount } }", token=token)
    assert r.status_code == 200
    error = r.json()["errors"][0]
    assert error["message"] == "Internal server error"
    assert "hunter2" not in r.text
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["errorId"] in caplog.text
    # Logged once, under its id, not again by Strawberry.
    assert [r.levelname for r in caplog.records if "hunter2" in str(r.exc_info)] == ["ERROR"]


async def test_client_errors_do_not_fill_the_log(api: Api, world, caplog) -> None:
    """Syntax, validation, limit and domain errors are the client's: none is logged at
    WARNING or above (an anonymous client could flood the log with tracebacks)."""
    token = api.token_for(world.users["admin"].id)
    for query in ("{ stations {", "{ nope }", '{ stations(first: -1) { totalCount } }',
                  "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(40)) + " }"):
        await api.post(query, token=token)
    assert [r for r in caplog.records if r.levelno >= 30] == []


async def test_bad_cursor_is_a_coded_error(api: Api, world) -> None:
    r = await api.post('{ stations(after: "bogus") { totalCount } }',
                       token=api.token_for(world.users["admin"].id))
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_CURSOR"
    r = await api.post("{ stations(first: 1000) { totalCount } }",
                       token=api.token_for(world.users["admin"].id))
    assert r.json()["errors"][0]["extensions"] == {"code": "OUT_OF_RANGE", "field": "first"}


async def test_a_body_too_large_is_refused_without_reading_it_all(api: Api) -> None:
    declared = await api.client.post("/graphql", content=b"{}", headers={
        "content-type": "application/json", "content-length": "200000000"})
    assert declared.status_code == 413
    read = [0]

    async def chunks():  # no length declared: chunked, read only up to the cap
        for _ in range(400):
            read[0] += 1
            yield b" " * 10_000

    streamed = await api.client.post("/graphql", content=chunks(),
                                     headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert read[0] < 400  # the rest was never asked for


async def test_a_time_zone_name_no_zone_has_is_a_user_error(api: Api, world) -> None:
    token = api.token_for(world.users["admin"].id)
    for name in ("A" * 5000, "Europe/" + "x" * 300):
        r = await api.post("""query($z: String!) { overview(timeZone: $z) {
            stationsOnline } }""", {"z": name}, token)
        assert r.json()["errors"][0]["extensions"] == {"code": "INVALID", "field": "timeZone"}


def test_json_numbers_in_variables_keep_their_digits() -> None:
    """Review s25: orjson reads a number with a fraction as a float, and a ``Decimal``
    argument read from it lost digits. A request's variables (a websocket message's
    ``payload.variables``) are read again keeping each one's text; a ``Float`` argument
    still reads a float; what is JSON stays orjson's to say."""
    import math

    import orjson
    from graphql import GraphQLFloat

    from graph.exact_json import BODY, MESSAGE, ExactFloat, encode_default, loads
    from graph.http import parse_params

    body = loads(b'{"query": "{ x }", "variables": {"a": 0.010000000000000001, '
                 b'"b": [1E2, {"c": -0.0}], "n": 3}, "extensions": {"e": 0.10}}',
                 exact=BODY)
    a, (b, nested) = body["variables"]["a"], body["variables"]["b"]
    assert (type(a), a.text, a) == (ExactFloat, "0.010000000000000001", 0.01)
    assert (b.text, nested["c"].text, body["variables"]["n"]) == ("1E2", "-0.0", 3)
    assert type(GraphQLFloat.parse_value(a)) is float
    assert math.copysign(1, nested["c"]) == -1
    assert type(body["extensions"]["e"]) is float  # no argument there: not read again
    # A member given twice is the last one, as orjson reads it.
    twice = loads(b'{"variables": {"a": 1.5}, "variables": {"a": 2.50}}', exact=BODY)
    assert twice["variables"]["a"].text == "2.50"
    message = loads('{"id": "1", "type": "subscribe", "payload": {"query": "{ x }", '
                    '"variables": {"p": 0.5900}}}', exact=MESSAGE)
    assert message["payload"]["variables"]["p"].text == "0.5900"
    plain = loads(b'{"variables": {"n": [1, "2.5"]}}', exact=BODY)  # orjson's reading
    assert plain == {"variables": {"n": [1, "2.5"]}}
    # A GET's (or a POST's) variables sent as a JSON-encoded string.
    _, variables, _ = parse_params({"query": "{ x }", "variables": '{"a": 1.10}'})
    assert variables is not None and variables["a"].text == "1.10"
    for bad in (b'{"a": 0.5, "b": NaN}', b'{"a": 0.5, "b": "\\ud800"}'):
        try:
            loads(bad, exact=BODY)
        except orjson.JSONDecodeError:
            continue
        raise AssertionError(bad[:40])
    # Written back (a subscription's variables key its render group) as they came.
    assert orjson.dumps({"a": a}, default=encode_default) == b'{"a":0.010000000000000001}'


def test_a_body_nested_deeper_than_the_standard_library_reads_is_still_json() -> None:
    """Review s26: orjson reads 1024 levels, the standard library fewer; the exact
    re-read of a deep body failed and the body was "not valid JSON". orjson says what is
    JSON: such variables keep orjson's reading (plain floats, which a ``Decimal``
    refuses)."""
    from graph.exact_json import BODY, VARIABLES, loads

    deep = b"[" * 1000 + b"0.5" + b"]" * 1000
    body = loads(b'{"query": "{ x }", "variables": {"a": ' + deep + b', "b": 0.10}}',
                 exact=BODY)
    assert type(body["variables"]["b"]) is float
    inner = body["variables"]["a"]
    while isinstance(inner, list):
        [inner] = inner
    assert inner == 0.5
    # Deep elsewhere in the body: JSON too, its variables orjson's reading.
    elsewhere = loads(b'{"extensions": {"d": ' + deep + b'}, "variables": {"b": 0.10}}',
                      exact=BODY)
    assert type(elsewhere["variables"]["b"]) is float
    assert type(loads(b'{"a": ' + deep + b"}", exact=VARIABLES)["a"]) is list


def _floats_body(n: int, query: str = "{ __typename }", extra: str = "") -> bytes:
    """A request whose variables hold ``n`` numbers with an exponent (``extra``: more
    variables)."""
    return (f'{{"query":{json.dumps(query)},"variables":{{{extra}"x":['.encode()
            + b",".join([b"1e5"] * n) + b"]}}")


def _count_exact_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The numbers ``exact_json`` reads again, as they are read."""
    from graph import exact_json

    read: list[str] = []

    def counted(text: str) -> exact_json.ExactFloat:
        read.append(text)
        return exact_json.ExactFloat(text)

    monkeypatch.setattr(exact_json, "_EXACT", json.JSONDecoder(parse_float=counted))
    return read


def test_the_exact_re_read_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s26: every body holding a float was read a second time by the standard
    library, an ``ExactFloat`` per number (~30x orjson's cost), before any
    authentication or a websocket's ``connection_init``: 1 MB of floats held the event
    loop ~250 ms. Only the variables of a small message with few such numbers are read
    again; beyond that they stay orjson's plain floats."""
    from graph.exact_json import (
        BODY,
        EXACT_MAX_NUMBERS,
        EXACT_MAX_SIZE,
        MESSAGE,
        VARIABLES,
        ExactFloat,
        loads,
    )

    read = _count_exact_reads(monkeypatch)
    # Within both bounds: those numbers, and none of the rest of the body.
    few = loads(b'{"extensions": {"e": [' + b",".join([b"0.5"] * 2000) + b"]}, "
                b'"variables": {"x": [1e5, 2.50]}}', exact=BODY)
    assert read == ["1e5", "2.50"] and type(few["extensions"]["e"][0]) is float
    read.clear()
    # Too many such numbers in the variables, or too large a body: none read again.
    for many in (_floats_body(EXACT_MAX_NUMBERS + 1),
                 _floats_body(1, extra=f'"pad":"{"x" * EXACT_MAX_SIZE}",')):
        parsed = loads(many, exact=BODY)
        assert not isinstance(parsed["variables"]["x"][0], ExactFloat)
    huge = _floats_body(240_000)  # MAX_BODY (and ``ws_max_size``): 1 MB
    assert len(huge) < 1_000_000
    assert type(loads(huge, exact=BODY)["variables"]["x"][-1]) is float
    variables = huge[huge.index(b'"variables":') + len(b'"variables":'):-1]
    message = b'{"type":"subscribe","payload":{"variables":' + variables + b"}}"
    assert type(loads(message, exact=MESSAGE)["payload"]["variables"]["x"][0]) is float
    assert type(loads(variables, exact=VARIABLES)["x"][0]) is float
    assert read == []
    # At the bound exactly, still read.
    assert len(loads(_floats_body(EXACT_MAX_NUMBERS), exact=BODY)["variables"]["x"]
               ) == len(read) == EXACT_MAX_NUMBERS


async def test_an_anonymous_post_of_a_megabyte_of_floats_is_not_read_twice(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s26, through the HTTP door, no token: a body of floats nobody reads as a
    ``Decimal`` costs what orjson costs, as one of integers does."""
    read = _count_exact_reads(monkeypatch)
    r = await api.client.post("/graphql", content=_floats_body(240_000),
                              headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"__typename": "Query"}}
    assert read == []
