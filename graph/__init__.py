"""The GraphQL door into the domain: Strawberry schema, loaders, auth and HTTP transport.
It talks to ``domain`` only."""

from graph.app import create_graphql_app
from graph.auth import TokenService
from graph.schema import export_sdl

__all__ = ["TokenService", "create_graphql_app", "export_sdl"]
