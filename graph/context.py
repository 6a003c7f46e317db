"""What every resolver gets as ``info.context``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from strawberry.extensions import SchemaExtension

from domain.clock import utcnow
from domain.policy import Viewer
from domain.services import Services
from graph.auth import TokenService
from graph.loaders import Loaders


@dataclass
class GraphContext:
    services: Services
    tokens: TokenService
    viewer: Viewer
    loaders: Loaders
    #: The HTTP request or websocket, for adapters that need headers.
    request: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The ``connection_init`` payload of a websocket (strawberry fills it in).
    connection_params: Any = None
    #: One "now" per request, so time-dependent relations (the tariff in force) agree and
    #: batch into one loader.
    now: datetime = field(default_factory=utcnow)

    @classmethod
    def build(cls, services: Services, tokens: TokenService, viewer: Viewer,
              request: Any = None) -> GraphContext:
        return cls(services, tokens, viewer, Loaders(services.reads, viewer), request)


class ReleaseLoaders(SchemaExtension):
    """Drops the request's loaders, and the records they hold, once the operation is done.

    graphql-core's executor is a reference cycle (its resolve-info helpers are bound
    methods of the executor) and holds the context, so everything a request loaded used
    to wait for the cyclic garbage collector: about 400 objects per ten-station nested
    page, a quarter of a millisecond per request in collector pauses
    (``python -m bench.nested_query``). Released here, they go with the request."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        if isinstance(context, GraphContext):
            context.loaders.release()
