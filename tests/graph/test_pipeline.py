"""The request pipeline extension (graph/pipeline.py): the document limits hold, parse and
validation run once per document text, and errors come out masked."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from graphql import parse as graphql_parse

from graph.pipeline import MAX_TOKENS
from graph.schema import schema


async def test_a_document_over_the_token_limit_is_refused_before_validation() -> None:
    fields = " ".join("__typename" for _ in range(MAX_TOKENS))
    result = await schema.execute("{ " + fields + " }")
    assert result.errors is not None and result.data is None
    assert [e.message for e in result.errors] == [
        f"Syntax Error: Document contains more than {MAX_TOKENS} tokens. Parsing aborted."]
    # A size limit like the others: one code for "make the query smaller".
    assert [e.extensions for e in result.errors] == [{"code": "QUERY_TOO_COMPLEX"}]
    bad = await schema.execute("{ __typename ")
    assert bad.errors is not None and bad.errors[0].extensions != {"code": "QUERY_TOO_COMPLEX"}


async def test_a_repeated_text_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(source: Any, **kwargs: Any) -> Any:
        calls.append(str(source))
        return graphql_parse(source, **kwargs)

    monkeypatch.setattr("graph.pipeline.parse", counting)
    document = "query ParsedOnceForTheCacheTest { __typename }"
    for _ in range(3):
        result = await schema.execute(document)
        assert result.errors is None and result.data == {"__typename": "Query"}
    assert calls == [document]


async def test_an_invalid_document_answers_its_validation_errors_every_time() -> None:
    for _ in range(2):
        result = await schema.execute("{ stations { nodes { noSuchField } } }")
        assert result.errors is not None
        assert [e.message for e in result.errors] == [
            "Cannot query field 'noSuchField' on type 'Station'."]


async def test_a_syntax_error_is_reported_as_such() -> None:
    result = await schema.execute("{ stations { ")
    assert result.errors is not None
    assert result.errors[0].message.startswith("Syntax Error")


INLINE_LITERALS = [
    ('{ sessions(filter: {from: "yesterday"}) { totalCount } }',
     "DateTime cannot represent 'yesterday'"),
    ('{ utilization(from: "2026-13-01", to: "2026-12-31T00:00:00Z") { cpId } }',
     "DateTime cannot represent '2026-13-01'"),
    ('mutation { setTariff(input: {pricePerKwh: "NaN", currency: "EUR"}) { errors { code } } }',
     "Decimal cannot represent 'NaN'"),
]


@pytest.mark.parametrize(("query", "reason"), INLINE_LITERALS)
async def test_a_literal_a_scalar_refuses_is_a_validation_error(
        query: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """Written in the query as given in a variable: the scalar's reason, nothing masked,
    nothing logged as an unexpected error."""
    for _ in range(2):  # the second from the validation cache
        result = await schema.execute(query)
        assert result.data is None and result.errors is not None
        [error] = result.errors
        assert reason in error.message and error.message.startswith("Expected value of type")
        assert error.locations and not (error.extensions or {}).get("errorId")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("document", "variables", "code", "field"), [
    ("{ stations(first: 1 { nodes { id } } }", None, "GRAPHQL_PARSE_FAILED", None),
    ("{ nosuch }", None, "GRAPHQL_VALIDATION_FAILED", None),
    ("{ sessions(filter: {state: NOPE}) { nodes { id } } }", None,
     "GRAPHQL_VALIDATION_FAILED", "filter.state"),
    ("{ stations(first: 2147483648) { nodes { id } } }", None, "GRAPHQL_VALIDATION_FAILED",
     "first"),
    ("{ stations(bogus: 1) { nodes { id } } }", None, "GRAPHQL_VALIDATION_FAILED", "bogus"),
    # A literal list's items by their index, as a variable's are (QA s21).
    ('{ nodes(ids: ["a", null]) { id } }', None, "GRAPHQL_VALIDATION_FAILED", "ids.1"),
    ("{ stations(filter: {connectorTypes: [CCS2, NOPE]}) { nodes { id } } }", None,
     "GRAPHQL_VALIDATION_FAILED", "filter.connectorTypes.1"),
    ("query($f: SessionFilter) { sessions(filter: $f) { nodes { id } } }",
     {"f": {"state": "NOPE"}}, "BAD_USER_INPUT", "f.state"),
    ("query($f: SessionFilter) { sessions(filter: $f) { nodes { id } } }",
     {"f": {"from": "0001-01-01T00:00:00+14:00"}}, "BAD_USER_INPUT", "f.from"),
    ("query($n: Int!) { stations(first: $n) { nodes { id } } }", {}, "BAD_USER_INPUT", "n"),
    ("query($i: [ID!]!) { nodes(ids: $i) { id } }", {"i": ["a", None]}, "BAD_USER_INPUT",
     "i.1"),
])
async def test_errors_graphql_itself_finds_carry_a_code_and_the_field_at_fault(
        document: str, variables: dict[str, Any] | None, code: str, field: str | None
) -> None:
    """The README promises every top-level error a code, and a field when an argument is
    at fault: these came with neither (QA s18)."""
    result = await schema.execute(document, variable_values=variables)
    assert result.errors is not None and result.data is None
    [error] = result.errors
    assert error.extensions == {"code": code, **({"field": field} if field else {})}


async def test_the_fields_of_many_validation_errors_come_from_one_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk of the document per error held the event loop half a second for a
    5,000-token document with 100 bad values (QA s18)."""
    from graph import request_errors

    walks: list[object] = []
    original = request_errors.visit

    def counting(document: Any, visitor: Any) -> Any:
        walks.append(document)
        return original(document, visitor)

    monkeypatch.setattr(request_errors, "visit", counting)
    bad = ", ".join(["1"] * 50)
    result = await schema.execute(
        '{ energyTrend(filter: {from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z", '
        f'cpIds: ["a", {bad}]}}, bucket: DAY) {{ start }} }}')
    assert result.errors is not None and len(result.errors) == 50
    assert [e.extensions["field"] for e in result.errors if e.extensions] == [
        f"filter.cpIds.{i}" for i in range(1, 51)]
    assert len(walks) == 1
