"""A request's loaded records go with the request (graph.pipeline.RequestPipeline): they
are not left in reference cycles for the garbage collector, whose pauses grew with every
row a request had loaded."""

from __future__ import annotations

from domain.entities import Record
from domain.policy import SYSTEM
from domain.services import Services
from graph.context import GraphContext
from graph.schema import schema
from tests.graph.world import World
from tests.support.garbage import left_to_the_collector

NESTED = """{ stations(first: 10) { nodes { cpId connectors { connectorId
  activeSession { transactionId user { name } vehicle { licensePlate } } } } } }"""


async def test_a_request_leaves_no_records_to_the_collector(services: Services,
                                                            world: World) -> None:
    context = GraphContext.build(services, None, SYSTEM)  # type: ignore[arg-type]
    with left_to_the_collector() as garbage:
        result = await schema.execute(NESTED, context_value=context)
        assert result.errors is None, result.errors
        assert result.data and result.data["stations"]["nodes"]
    assert [r for r in garbage if isinstance(r, Record)] == []
    assert context.loaders._loaders == {}  # the request's loaders are gone


async def test_the_context_loads_again_after_release(services: Services,
                                                     world: World) -> None:
    context = GraphContext.build(services, None, SYSTEM)  # type: ignore[arg-type]
    first = await schema.execute(NESTED, context_value=context)
    second = await schema.execute(NESTED, context_value=context)
    assert first.errors is None and first.data == second.data

