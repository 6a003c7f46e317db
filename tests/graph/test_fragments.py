"""Fragments spread many times cost their size once: the limits (graph/limits.py), the
size estimate (graph/cost.py), the look-ahead (graph/nodes.py: wants) and the execution
look into each fragment a bounded number of times, however often it is spread. A chain
of fragments each spreading the next twice, 21 deep (856 characters), used to hold the
event loop for 15 s."""

from __future__ import annotations

import pytest

from tests.graph.conftest import Api
from tests.graph.world import World
from tests.support.fragments import counting_parser, doubling

LEVELS = 16  # 2^16 reads of the deepest fragment when every spread is walked again
#: Reads of one fragment's selections: a few per validation rule and step, whatever
#: the number of spreads.
BOUND = 100


async def test_a_chain_of_doubled_fragments_is_answered_looking_into_each_once(
        api: Api, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = counting_parser(monkeypatch)
    query = doubling(LEVELS, "Query", "__typename", "query Doubled { ...F0 }")
    assert await api.gql(query) == {"__typename": "Query"}
    assert len(reads) == LEVELS and max(reads.values()) <= BOUND, reads


async def test_doubled_fragments_inside_a_page_are_read_once_per_question(
        api: Api, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below a page, the look-ahead asks whether the stations' connectors and sessions
    are wanted, and the estimate sizes the page: each looks into a fragment once."""
    reads = counting_parser(monkeypatch)
    query = doubling(LEVELS, "Station", "cpId",
                     "query DoubledStations { stations(first: 2, orderBy: {field: CP_ID}) {"
                     " nodes { ...F0 } } }")
    data = await api.gql(query, as_user=world.users["admin"].id)
    assert data["stations"]["nodes"] == [{"cpId": "A-001"}, {"cpId": "A-002"}]
    assert len(reads) == LEVELS and max(reads.values()) <= BOUND, reads


async def test_the_limits_count_through_fragments_as_before() -> None:
    """Each spread counts its fragment's aliases again, and a fragment's depth adds to
    where it is spread (the numbers and messages of Strawberry's limiters)."""
    from graph.schema import schema

    aliased = " ".join(f"a{i}: __typename" for i in range(16))
    result = await schema.execute(
        f"query Twice {{ ...A ...A }} fragment A on Query {{ {aliased} }}")
    assert [e.message for e in result.errors or []] == ["32 aliases found. Allowed: 30"]
    assert [e.extensions for e in result.errors or []] == [{"code": "QUERY_TOO_COMPLEX"}]
    result = await schema.execute(
        f"query Once {{ ...A }} fragment A on Query {{ {aliased} }}")
    assert result.errors is None

    pages = "company { stations { nodes { "  # three levels
    deep = ("query Deep { stations { nodes { company { stations { nodes { ...S } } } } } } "
            f"fragment S on Station {{ {pages * 3} connectors {{ station {{ cpId }} }}"
            f"{' } } }' * 3} }}")
    result = await schema.execute(deep)  # 5 levels, then 11 in the fragment
    assert [(e.message, e.extensions) for e in result.errors or []] == [
        ("'Deep' exceeds maximum operation depth of 15", {"code": "QUERY_TOO_COMPLEX"})]
    result = await schema.execute(deep.replace("station { cpId }", "connectorId"))
    assert not any("depth" in e.message for e in result.errors or []), result.errors
