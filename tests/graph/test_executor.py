"""The lean execution context (graph/executor.py): plain attribute leaves are answered
without graphql-core's per-field machinery, and everything — data, its key order, errors
with their paths and locations — comes out as graphql-core's own executor gives it."""

from __future__ import annotations

import enum
from typing import Any

import pytest
import strawberry
from graphql import GraphQLObjectType
from graphql.execution.types import ExperimentalIncrementalExecutionResults
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graph import lean
from graph.executor import ATTRIBUTE_MARK, LeanExecutionContext
from graph.schema import schema as chargegraph_schema


@strawberry.enum
class Mood(enum.Enum):
    HAPPY = "happy"
    GRUMPY = "grumpy"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Pet(Named):  # implementing an interface gives Pet an ``is_type_of`` check
    age: int | None
    mood: Mood
    nickname: str  # non-null, but the data below has a None for one pet
    weight: int  # non-null Int, but one pet's weight does not fit into 32 bits

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    def greeting(self, word: str = "hi") -> str:
        return f"{word} {self.name}"

    @strawberry.field
    def friend(self) -> Pet | None:
        return PETS[1] if self is PETS[0] else None

    @strawberry.field
    async def later(self) -> str:
        return self.name + "!"

    @strawberry.field
    async def buddy(self) -> Pet:
        return PETS[1]

    @strawberry.field
    async def explode(self) -> str:  # non-null: its error nulls the nearest nullable parent
        raise ValueError(f"{self.name} exploded")

    @strawberry.field
    def toy(self) -> Toy:
        return Toy(label=f"{self.name}'s ball")


@strawberry.type
class Toy:
    label: str


PETS = [
    Pet(name="Rex", age=3, mood=Mood.HAPPY, nickname="R", weight=30),
    Pet(name="Tom", age=None, mood=Mood.GRUMPY, nickname="T", weight=4),
]
#: Data a field cannot answer: a None for the non-null ``nickname``, a mood that is no
#: Mood, a weight that does not fit into GraphQL's 32-bit Int.
STRAYS: list[Pet | None] = [
    Pet(name="Max", age=7, mood=Mood.HAPPY, nickname=None, weight=2),  # type: ignore[arg-type]
    Pet(name="Kit", age=1, mood="sleepy", nickname="K", weight=2**40),  # type: ignore[arg-type]
    Pet(name="Ada", age=None, mood=Mood.GRUMPY, nickname="A", weight=5),
]


@strawberry.type
class Query:
    @strawberry.field
    def pets(self) -> list[Pet]:
        return PETS

    @strawberry.field
    def pet(self) -> Pet:
        return PETS[0]

    @strawberry.field
    def strays(self) -> list[Pet | None]:
        return STRAYS

    # Objects the short path of object completion must leave to graphql-core: a value of
    # another type (its ``is_type_of`` says no), a None for a non-null object, a resolver
    # that raises, and a union (an abstract type).
    @strawberry.field
    def impostor(self) -> Pet | None:
        return Toy(label="not a pet")  # type: ignore[return-value]

    @strawberry.field
    def lost(self) -> Pet:
        return None  # type: ignore[return-value]

    @strawberry.field
    def broken(self) -> Pet | None:
        raise ValueError("no pet today")

    @strawberry.field
    def things(self) -> list[Pet | Toy]:
        return [PETS[0], Toy(label="rope")]

    @strawberry.field
    def lost_toy(self) -> Toy:  # Toy implements nothing: no ``is_type_of`` to say no
        return None  # type: ignore[return-value]


def _schema(context_class: type | None, extensions: list[Any] | None = None,
            config: StrawberryConfig | None = None) -> strawberry.Schema:
    built = strawberry.Schema(query=Query, execution_context_class=context_class,
                              extensions=extensions or [], config=config)
    lean.install(built)
    return built


DOCUMENTS = [
    # Plain reads only, through an alias, a fragment, an inline fragment, __typename and
    # a repeated field; key order is the selection's.
    "{ pet { __typename mood n: name ...F ... on Pet { age name } } } fragment F on Pet { age }",
    "{ pets { shout name age friend { age name } } }",
    # Plain reads mixed with resolvers, arguments, a nested object and an async field.
    "{ pets { shout name greeting(word: \"yo\") friend { name age } later mood weight } }",
    "{ pets { name age } }",
    # A non-null None, an enum value that is not one, an Int that does not fit (each
    # error nulls its list item), and a nullable None beside them.
    "{ strays { name nickname age } }",
    "{ strays { mood name } }",
    "{ strays { age weight } }",
    # Directives decide what is selected.
    "query($yes: Boolean!) { pets { name @include(if: $yes) age @skip(if: $yes) } }",
    # Objects: nested, async, through a fragment, of a union; a value of the wrong type,
    # a non-null None and a raising resolver, beside answers that stand.
    "{ pet { buddy { name buddy { name } } toy { label } ... on Pet { friend { age } } } }",
    "{ things { __typename ... on Pet { name } ... on Toy { label } } }",
    "{ pets { name } impostor { name } }",
    "{ pets { name } lost { name } }",
    "{ pets { name } lostToy { label } }",
    "{ pet { name } broken { name } }",
    "{ strays { name buddy { nickname } } }",
    # A sync relation whose completion is awaitable and fails: the error stops at it.
    "{ pets { name friend { name explode } } }",
    "{ pet { buddy { explode } } }",
]


async def _run(built: strawberry.Schema, document: str) -> tuple[Any, list[Any]]:
    result = await built.execute(document, variable_values={"yes": True})
    errors = [(e.message, e.path, [(loc.line, loc.column) for loc in e.locations or []])
              for e in result.errors or []]
    return result.data, errors


def _ordered(data: Any) -> Any:
    """``data`` with every object as a list of pairs: dict equality ignores key order,
    and a response's key order is the selection's."""
    if isinstance(data, dict):
        return [(key, _ordered(value)) for key, value in data.items()]
    if isinstance(data, list):
        return [_ordered(item) for item in data]
    return data


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_answers_as_graphql_core_does(document: str) -> None:
    lean_data, lean_errors = await _run(_schema(LeanExecutionContext), document)
    data, errors = await _run(_schema(StrawberryGraphQLCoreExecutionContext), document)
    assert _ordered(lean_data) == _ordered(data)
    assert lean_errors == errors


async def test_errors_are_the_ones_graphql_core_reports() -> None:
    data, errors = await _run(_schema(LeanExecutionContext), "{ strays { name nickname } }")
    assert data == {"strays": [None, {"name": "Kit", "nickname": "K"},
                               {"name": "Ada", "nickname": "A"}]}
    assert [(message, path, locations) for message, path, locations in errors] == [
        ("Cannot return null for non-nullable field Pet.nickname.", ["strays", 0, "nickname"],
         [(1, 17)])]
    data, errors = await _run(_schema(LeanExecutionContext), "{ strays { age weight } }")
    assert data == {"strays": [{"age": 7, "weight": 2}, None, {"age": None, "weight": 5}]}
    assert [path for _, path, _ in errors] == [["strays", 1, "weight"]]


def _counting_resolvers(built: strawberry.Schema) -> dict[str, int]:
    """Wraps every marked attribute resolver of ``Pet`` in one that counts its calls and
    carries the same mark."""
    calls: dict[str, int] = {}
    pet = built._schema.type_map["Pet"]
    assert isinstance(pet, GraphQLObjectType)
    for name, field in pet.fields.items():
        attribute = getattr(field.resolve, ATTRIBUTE_MARK, None)
        if attribute is None:
            continue

        def counting(source: Any, info: Any, _inner: Any = field.resolve,
                     _name: str = name) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _inner(source, info)
        setattr(counting, ATTRIBUTE_MARK, attribute)
        field.resolve = counting
    return calls


async def test_plain_reads_skip_the_resolver() -> None:
    built = _schema(LeanExecutionContext)
    calls = _counting_resolvers(built)
    await _run(built, "{ pets { name age mood } }")
    assert calls == {}
    # The same reads through graphql-core's executor call the resolver per object.
    plain = _schema(StrawberryGraphQLCoreExecutionContext)
    plain_calls = _counting_resolvers(plain)
    await _run(plain, "{ pets { name age mood } }")
    assert plain_calls == {"name": 2, "age": 2, "mood": 2}
    # Only where the plain case does not hold — Max's nickname is None, Kit's mood is no
    # Mood — graphql-core's path runs, for that object only.
    await _run(built, "{ strays { name nickname mood } }")
    assert calls == {"nickname": 1, "mood": 1}


class CountingObjects(LeanExecutionContext):
    """Counts the objects that reach graphql-core's ``complete_object_value``."""

    completed: list[str] = []

    def complete_object_value(self, return_type: Any, *args: Any) -> Any:
        CountingObjects.completed.append(return_type.name)
        return super().complete_object_value(return_type, *args)


async def test_objects_skip_graphql_cores_completion_unless_it_has_something_to_say() -> None:
    CountingObjects.completed = []
    built = _schema(CountingObjects)
    data, errors = await _run(built, "{ pets { friend { name } toy { label } } pet { name } }")
    assert not errors and data["pets"][0] == {"friend": {"name": "Tom"},
                                              "toy": {"label": "Rex's ball"}}
    assert CountingObjects.completed == []
    # A value its type rejects goes graphql-core's way, which reports it.
    _, errors = await _run(built, "{ impostor { name } }")
    assert CountingObjects.completed == ["Pet"]
    assert [message for message, _, _ in errors] == [
        "Expected value of type 'Pet' but got: <Toy instance>."]


async def _incremental(context_class: type, document: str) -> list[Any]:
    built = _schema(context_class,
                    config=StrawberryConfig(enable_experimental_incremental_execution=True))
    result = await built.execute(document)
    assert isinstance(result, ExperimentalIncrementalExecutionResults), result
    parts = [result.initial_result.formatted]
    parts += [later.formatted async for later in result.subsequent_results]
    return _ordered(parts)


@pytest.mark.parametrize("document", [
    "{ pets { name ... @defer { buddy { name } } } }",
    "{ pet { ... @defer(label: \"more\") { toy { label } friend { name } } name } }",
    # The same object in the first answer and in a deferred part, with more fields there.
    "{ pet { buddy { name } ... @defer { buddy { name age buddy { mood } } } } }",
])
async def test_deferred_parts_come_as_graphql_core_sends_them(document: str) -> None:
    parts = await _incremental(LeanExecutionContext, document)
    assert parts == await _incremental(StrawberryGraphQLCoreExecutionContext, document)
    assert len(parts) > 1  # something was deferred


class Shouting(SchemaExtension):
    """Middleware on every resolver: plain reads must then take the general path."""

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        value = _next(root, info, *args, **kwargs)
        return value.upper() if isinstance(value, str) else value


async def test_middleware_wrapped_fields_take_the_general_path() -> None:
    data, _ = await _run(_schema(LeanExecutionContext, [Shouting]), "{ pet { name } }")
    assert data == {"pet": {"name": "REX"}}


def test_chargegraph_schema_runs_with_it() -> None:
    assert chargegraph_schema.execution_context_class is LeanExecutionContext
    station = chargegraph_schema._schema.type_map["Station"]
    assert isinstance(station, GraphQLObjectType)
    assert getattr(station.fields["cpId"].resolve, ATTRIBUTE_MARK) == "cp_id"


def test_enum_reads_coerce_as_the_enum_type_does() -> None:
    from graph.executor import _coercion

    mood_type = _schema(LeanExecutionContext)._schema.type_map["Mood"]
    coerce = _coercion(mood_type)  # type: ignore[arg-type]
    assert coerce is not mood_type.coerce_output_value  # type: ignore[attr-defined]
    for member in Mood:
        assert coerce(member) == mood_type.coerce_output_value(member)  # type: ignore[attr-defined]
    for stray in ("sleepy", 3):
        with pytest.raises(Exception) as ours:
            coerce(stray)
        with pytest.raises(Exception) as theirs:
            mood_type.coerce_output_value(stray)  # type: ignore[attr-defined]
        assert str(ours.value) == str(theirs.value)
