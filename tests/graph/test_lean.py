"""Lean resolvers (graph/lean.py) and the schema's validation cache: the fast paths must
answer exactly as Strawberry's own resolvers, and keep its wrapper wherever it has work."""

from __future__ import annotations

import enum
from typing import Any

import pytest
import strawberry
from graphql import GraphQLField, GraphQLObjectType
from graphql import validate as graphql_validate
from strawberry import relay
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig

from graph import lean
from graph.schema import schema as chargegraph_schema


class Deny(BasePermission):
    message = "denied"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return False


@strawberry.type
class Item:
    name: str
    _secret: strawberry.Private[str]

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    def where(self, info: strawberry.Info) -> str:
        return f"{info.path.key}:{info.context['suffix']}"

    @strawberry.field
    def tagged(self, *, info: strawberry.Info) -> str:  # ``info`` by keyword only
        return f"{self.name}{info.context['suffix']}"

    @strawberry.field
    async def later(self, info: strawberry.Info) -> str:
        return self.name + info.context["suffix"]

    @strawberry.field
    def repeat(self, times: int = 2) -> str:
        return self.name * times

    @strawberry.field(permission_classes=[Deny])
    def secret(self) -> str | None:
        return self._secret


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return [Item(name="a", _secret="x"), Item(name="b", _secret="y")]


def _schema(with_lean: bool) -> strawberry.Schema:
    built = strawberry.Schema(query=Query)
    if with_lean:
        lean.install(built)
    return built


DOCUMENT = "{ items { name shout where tagged later repeat(times: 3) secret } }"


async def _run(built: strawberry.Schema) -> tuple[Any, list[str]]:
    result = await built.execute(DOCUMENT, context_value={"suffix": "!"})
    return result.data, [e.message for e in result.errors or []]


async def test_lean_resolvers_answer_as_strawberry_does() -> None:
    assert await _run(_schema(True)) == await _run(_schema(False))
    data, errors = await _run(_schema(True))
    assert data == {"items": [
        {"name": "a", "shout": "A", "where": "where:!", "tagged": "a!", "later": "a!",
         "repeat": "aaa", "secret": None},
        {"name": "b", "shout": "B", "where": "where:!", "tagged": "b!", "later": "b!",
         "repeat": "bbb", "secret": None},
    ]}
    assert errors == ["denied", "denied"]


def test_only_fields_without_extensions_are_replaced() -> None:
    replaced = set(lean.install(_schema(False)))
    assert {"Item.name", "Item.shout", "Item.where", "Item.tagged", "Item.later",
            "Item.repeat", "Query.items"} <= replaced
    # Permission extensions keep Strawberry's wrapper.
    assert "Item.secret" not in replaced


@strawberry.enum
class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


@strawberry.input
class Range:
    low: int
    high: int | None = None
    size: Size = Size.SMALL


@strawberry.type
class Arguments:
    @strawberry.field
    def echo(self, info: strawberry.Info, count: int = 1, label: str | None = "x",
             ratio: float | None = None, flag: bool = False, size: Size | None = None,
             numbers: list[int] | None = None, window: Range | None = None,
             windows: list[Range] | None = None, node_id: strawberry.ID | None = None,
             relay_id: relay.GlobalID | None = None,
             maybe_note: strawberry.Maybe[str | None] = None) -> str:
        return repr((info.path.key, count, label, ratio, flag, size, numbers, window,
                     windows, node_id, relay_id, maybe_note))


@strawberry.type
class ArgumentsQuery:
    @strawberry.field
    def arguments(self) -> Arguments:
        return Arguments()


ARGUMENT_DOCUMENTS = [
    "{ arguments { echo } }",  # every default
    "{ arguments { echo(count: 3, label: null, ratio: 1, flag: true, size: LARGE) } }",
    "{ arguments { echo(numbers: [1, 2], window: {low: 1}, "
    "windows: [{low: 2, high: 3, size: LARGE}]) } }",
    "{ arguments { echo(nodeId: 7, relayId: \"U3RhdGlvbjox\", maybeNote: null) } }",
    "{ arguments { echo(maybeNote: \"hi\") } }",
    "query($c: Int, $w: Range) { arguments { echo(count: $c, window: $w) } }",
    "{ arguments { echo(relayId: \"not a global id\") } }",  # a conversion that fails
]


@pytest.mark.parametrize("document", ARGUMENT_DOCUMENTS)
async def test_arguments_reach_the_resolver_as_strawberry_passes_them(document: str) -> None:
    answers = []
    for with_lean in (True, False):
        built = strawberry.Schema(query=ArgumentsQuery)
        if with_lean:
            assert "Arguments.echo" in lean.install(built)
        result = await built.execute(document,
                                     variable_values={"c": 5, "w": {"low": 4, "size": "LARGE"}})
        answers.append((result.data, [e.message for e in result.errors or []]))
    assert answers[0] == answers[1]


def _field(type_name: str, field_name: str) -> GraphQLField:
    graphql_type = chargegraph_schema._schema.type_map[type_name]
    assert isinstance(graphql_type, GraphQLObjectType)
    return graphql_type.fields[field_name]


def test_the_nested_page_fields_are_lean_in_our_schema() -> None:
    for type_name, field_name in [("Station", "connectors"), ("Connector", "activeSession"),
                                  ("Session", "user"), ("Session", "vehicle"),
                                  ("Station", "cpId"), ("Station", "id")]:
        resolve = _field(type_name, field_name).resolve
        assert resolve is not None and resolve.__module__ == "graph.lean", (type_name,
                                                                             field_name)
    # Paged relations and the root lists take arguments: lean too.
    for type_name, field_name in [("Station", "sessions"), ("Query", "stations")]:
        resolve = _field(type_name, field_name).resolve
        assert resolve is not None and resolve.__module__ == "graph.lean"


async def test_a_repeated_document_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The depth and alias limits are built once: with per-request rule classes the
    validation cache never hit and every request was validated again."""
    calls: list[object] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return graphql_validate(*args, **kwargs)

    monkeypatch.setattr("strawberry.schema.schema.validate", counting)
    document = "query RepeatedForTheCacheTest { __typename }"
    for _ in range(3):
        result = await chargegraph_schema.execute(document)
        assert result.errors is None
    assert len(calls) <= 1


def test_a_custom_default_resolver_keeps_strawberrys_attribute_reads() -> None:
    def dict_or_attribute(source: Any, name: str) -> Any:
        return source[name] if isinstance(source, dict) else getattr(source, name)

    built = strawberry.Schema(query=Query,
                              config=StrawberryConfig(default_resolver=dict_or_attribute))
    replaced = set(lean.install(built))
    assert "Item.name" not in replaced
    assert "Item.shout" in replaced
