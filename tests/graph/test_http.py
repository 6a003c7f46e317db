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


def test_json_numbers_keep_their_digits() -> None:
    """Review s25: orjson reads a number with a fraction as a float, and a ``Decimal``
    argument read from it lost digits. Such a body is read again keeping each one's text;
    a ``Float`` argument still reads a float; what is JSON stays orjson's to say."""
    import math

    import orjson
    from graphql import GraphQLFloat

    from graph.exact_json import ExactFloat, encode_default, loads
    from graph.http import parse_params

    body = loads(b'{"query": "{ x }", "variables": {"a": 0.010000000000000001, '
                 b'"b": [1E2, {"c": -0.0}], "n": 3}}')
    a, (b, nested) = body["variables"]["a"], body["variables"]["b"]
    assert (type(a), a.text, a) == (ExactFloat, "0.010000000000000001", 0.01)
    assert (b.text, nested["c"].text, body["variables"]["n"]) == ("1E2", "-0.0", 3)
    assert type(GraphQLFloat.parse_value(a)) is float
    assert math.copysign(1, nested["c"]) == -1
    plain = loads(b'{"n": [1, "2.5"]}')  # no number with a fraction: orjson's reading
    assert plain == {"n": [1, "2.5"]}
    # A GET's (or a POST's) variables sent as a JSON-encoded string.
    _, variables, _ = parse_params({"query": "{ x }", "variables": '{"a": 1.10}'})
    assert variables is not None and variables["a"].text == "1.10"
    for bad in (b'{"a": 0.5, "b": NaN}', b'{"a": 0.5, "b": "\\ud800"}',
                b"[" * 1000 + b"0.5" + b"]" * 1000):
        try:
            loads(bad)
        except orjson.JSONDecodeError:
            continue
        raise AssertionError(bad[:40])
    # Written back (a subscription's variables key its render group) as they came.
    assert orjson.dumps({"a": a}, default=encode_default) == b'{"a":0.010000000000000001}'
