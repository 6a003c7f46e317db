"""What every resolver gets as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

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
    #: What a websocket's ``connection_init`` payload gave that is used: its
    #: ``authorization`` (``graph.live_ws``), not the whole payload.
    connection_params: Any = None
    #: One "now" per request, so time-dependent relations (the tariff in force) agree and
    #: batch into one loader.
    now: datetime = field(default_factory=utcnow)
    #: Whether ``__schema`` and ``__type`` may be asked (``CHARGEGRAPH_INTROSPECTION``;
    #: ``graph.pipeline``).
    introspection: bool = True
    #: The device (refresh family) the caller's access token was issued to, kept when the
    #: token is checked (HTTP's ``Authorization``, the socket's ``connection_init``);
    #: ``None`` without one or for a token naming none (``TokenSubject.family_id``).
    device_id: str | None = None

    @classmethod
    def build(cls, services: Services, tokens: TokenService, viewer: Viewer,
              request: Any = None, *, introspection: bool = True,
              device_id: str | None = None) -> GraphContext:
        return cls(services, tokens, viewer, Loaders(services.reads, viewer), request,
                   introspection=introspection, device_id=device_id)

    def renewed(self) -> GraphContext:
        """This connection's context for one more execution (a socket's query, a live
        event's render): the same caller, fresh loaders, its own "now" and ``extra``
        (analytics keeps a request's budget there)."""
        return replace(self, loaders=Loaders(self.services.reads, self.viewer),
                       now=utcnow(), extra={})
