"""The ASGI app behind ``/graphql``: GraphQL over HTTP, GraphiQL for browsers, and
subscriptions over websockets (the viewer comes from ``connection_init``'s
``{"authorization": "Bearer …"}``; a bad token closes the socket with 4403); and the CSV
exports (``export``, served at ``/export/{name}``), which know their viewer the same way."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from domain.errors import Unauthenticated
from domain.policy import ANONYMOUS, Viewer
from domain.ports import NO_METRICS, Metrics
from domain.services import Services
from graph.auth import TokenService, bearer_token
from graph.context import GraphContext
from graph.csv_export import CsvExports
from graph.data_export import PersonalDataExport
from graph.http import GraphQLHTTPHandler
from graph.live_ws import KEEPALIVE, LiveEndpoint
from graph.schema import schema


async def resolve_caller(services: Services, tokens: TokenService, authorization: str | None
                         ) -> tuple[Viewer, str | None]:
    """Anonymous without a token; the token's user (read fresh) with one; a bad token or a
    deactivated user is an error, never a silent downgrade to anonymous. With the viewer,
    the device the token was issued to (``GraphContext.device_id``), read in the same
    decoding."""
    token = bearer_token(authorization)
    if token is None:
        return ANONYMOUS, None
    subject = tokens.subject(token)
    viewer = await services.accounts.viewer_for(subject.user_id, subject.epoch)
    if viewer is None:
        raise Unauthenticated("the account is not active or the token was revoked",
                              code="INVALID_TOKEN")
    return viewer, subject.family_id


async def resolve_viewer(services: Services, tokens: TokenService, authorization: str | None
                         ) -> Viewer:
    """``resolve_caller``'s viewer."""
    viewer, _ = await resolve_caller(services, tokens, authorization)
    return viewer


class GraphQLApp:
    def __init__(self, services: Services, tokens: TokenService, *, graphiql: bool,
                 metrics: Metrics = NO_METRICS, graphiql_assets: str | None = None,
                 ws_keep_alive: timedelta = KEEPALIVE, introspection: bool = True) -> None:
        self.services = services
        self.tokens = tokens
        #: Off, ``__schema`` and ``__type`` are refused on both doors and GraphiQL (which
        #: reads the schema by introspection) is not served (``graph.pipeline``).
        self.introspection = introspection
        self.http = GraphQLHTTPHandler(schema, self.http_context,
                                       graphiql=graphiql and introspection,
                                       metrics=metrics, graphiql_assets=graphiql_assets)
        # Subscriptions (and anything else sent over the socket): our own protocol
        # handling with shared fan-out, see graph/live_ws.py.
        self.websocket = LiveEndpoint(services, tokens, schema, self.bearer_viewer,
                                      keep_alive=ws_keep_alive, introspection=introspection,
                                      metrics=metrics)
        # The same viewer from the same token, the same services and metrics: an export
        # sees exactly what the GraphQL lists show.
        self.export = CsvExports(services, self.bearer_viewer, metrics)
        # A person's copy of their data (``/export/me.json``, ``/export/users/{id}.json``).
        self.personal_data = PersonalDataExport(services, self.bearer_viewer, metrics)

    async def bearer_viewer(self, authorization: str | None) -> Viewer:
        return await resolve_viewer(self.services, self.tokens, authorization)

    async def http_context(self, request: Request) -> GraphContext:
        viewer, device_id = await resolve_caller(self.services, self.tokens,
                                                 request.headers.get("authorization"))
        return GraphContext.build(self.services, self.tokens, viewer, request,
                                  introspection=self.introspection, device_id=device_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self.http(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)


def create_graphql_app(services: Services, tokens: TokenService, *, graphiql: bool = True,
                       metrics: Metrics = NO_METRICS, graphiql_assets: str | None = None,
                       ws_keep_alive: timedelta = KEEPALIVE, introspection: bool = True
                       ) -> GraphQLApp:
    """The app; its ``websocket.hub`` tells how many sockets and operations run (the
    ``/metrics`` gauges read it at scrape time), its ``export`` serves the CSV exports.
    ``graphiql_assets``: where the GraphiQL page loads its files from instead of the CDN
    (``graph.http.ide_page``). ``ws_keep_alive``: the websockets' keep-alive interval
    (``live_ws.Connection.keep_alive``), zero for none. ``introspection``: off
    (``CHARGEGRAPH_INTROSPECTION=false``), no ``__schema``/``__type`` and no GraphiQL."""
    return GraphQLApp(services, tokens, graphiql=graphiql, metrics=metrics,
                      graphiql_assets=graphiql_assets, ws_keep_alive=ws_keep_alive,
                      introspection=introspection)
