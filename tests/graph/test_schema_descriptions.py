"""The root fields and their arguments stay described: they are what GraphiQL users
start from (scripts/schema_doc_coverage.py counts the rest)."""

from graphql import GraphQLObjectType

from graph.schema import schema


def undescribed_root_coordinates() -> list[str]:
    built = schema._schema
    roots: list[GraphQLObjectType | None] = [built.query_type, built.mutation_type,
                                             built.subscription_type]
    missing: list[str] = []
    for root in roots:
        assert root is not None
        if not root.description:
            missing.append(root.name)
        for name, field in root.fields.items():
            if not (field.description or "").strip():
                missing.append(f"{root.name}.{name}")
            missing += [f"{root.name}.{name}({arg}:)" for arg, argument in field.args.items()
                        if not (argument.description or "").strip()]
    return missing


def test_every_root_field_and_argument_is_described() -> None:
    assert undescribed_root_coordinates() == []
