"""The ASGI app behind ``/graphql``: GraphQL over HTTP, and GraphiQL for browsers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from domain.errors import Unauthenticated
from domain.policy import ANONYMOUS, Viewer
from domain.services import Services
from graph.auth import TokenService, bearer_token
from graph.context import GraphContext
from graph.http import GraphQLHTTPHandler
from graph.loaders import Loaders
from graph.schema import schema


async def resolve_viewer(services: Services, tokens: TokenService, authorization: str | None
                         ) -> Viewer:
    """Anonymous without a token; the token's user (read fresh) with one; a bad token or a
    deactivated user is an error, never a silent downgrade to anonymous."""
    token = bearer_token(authorization)
    if token is None:
        return ANONYMOUS
    viewer = await services.accounts.viewer_for(tokens.subject(token))
    if viewer is None:
        raise Unauthenticated("the account is not active", code="INVALID_TOKEN")
    return viewer


class SubscriptionEndpoint(GraphQL[GraphContext, None]):
    """Websocket subscriptions. The viewer comes from ``connection_init``'s
    ``{"authorization": "Bearer …"}``; a bad token closes the socket (4403)."""

    def __init__(self, services: Services, tokens: TokenService) -> None:
        super().__init__(schema, graphql_ide=None,
                         subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,
                                                 GRAPHQL_WS_PROTOCOL))
        self.services = services
        self.tokens = tokens

    async def get_context(self, request: Any, response: Any) -> GraphContext:
        return GraphContext.build(self.services, self.tokens, ANONYMOUS, request)

    async def on_ws_connect(self, context: GraphContext) -> Any:
        params = context.connection_params if isinstance(context.connection_params,
                                                         dict) else {}
        header = params.get("authorization") or params.get("Authorization")
        try:
            viewer = await resolve_viewer(self.services, self.tokens,
                                          str(header) if header else None)
        except Unauthenticated as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}
                                           ) from exc
        context.viewer = viewer
        context.loaders = Loaders(self.services.reads, viewer)
        return await super().on_ws_connect(context)


class GraphQLApp:
    def __init__(self, services: Services, tokens: TokenService, *, graphiql: bool) -> None:
        self.services = services
        self.tokens = tokens
        self.http = GraphQLHTTPHandler(schema, self.http_context, graphiql=graphiql)
        self.websocket = SubscriptionEndpoint(services, tokens)

    async def http_context(self, request: Request) -> GraphContext:
        viewer = await resolve_viewer(self.services, self.tokens,
                                      request.headers.get("authorization"))
        return GraphContext.build(self.services, self.tokens, viewer, request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self.http(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)


def create_graphql_app(services: Services, tokens: TokenService, *, graphiql: bool = True
                       ) -> ASGIApp:
    return GraphQLApp(services, tokens, graphiql=graphiql)
