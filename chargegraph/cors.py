"""Cross-origin calls to ``/graphql`` and the CSV exports (``/export/…``) from browser
apps served elsewhere (a dev server on http://localhost:3000, a dashboard on its own
domain), allowed per origin by ``CHARGEGRAPH_CORS_ORIGINS``.

Credentials mode is never allowed: the API's credential is a bearer token the app puts in
``Authorization`` itself, not a cookie the browser would attach, so there is nothing for
``credentials: "include"`` to carry; and ``*`` is safe only without credentials."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

#: What a GraphQL client sends: queries over GET or POST (mutations over POST), JSON
#: bodies and a bearer token. Accept is safelisted by the CORS standard already.
METHODS = ("GET", "POST", "OPTIONS")
#: What the downloads (``/export/…``) take: GET, and HEAD to check one without reading
#: it. Their own, not /graphql's: a page's HEAD was refused by the preflight (400) and
#: its POST allowed, which the export then refused with 405 (review r26-api2).
EXPORT_METHODS = ("GET", "HEAD", "OPTIONS")
#: ``Idempotency-Key``: a page's retry of a mutation (``graph.http``).
HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
#: The headers of our answers a page may read beyond the safelisted ones (Content-Type,
#: Content-Length, Cache-Control…): without them listed, fetch() sees none of them. An
#: export's file name (Content-Disposition), why a token was refused (WWW-Authenticate:
#: a 401 of /graphql or an export), the methods a route takes (Allow: a 405) and when
#: to ask again (Retry-After: the personal data export's 429, an idempotency key in
#: progress), and whether an answer is one kept for an idempotency key
#: (Idempotent-Replayed).
EXPOSED = ("Content-Disposition", "WWW-Authenticate", "Allow", "Retry-After",
           "Idempotent-Replayed")
#: How long a browser may keep a preflight's answer (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_S = 600


def cross_origin(app: ASGIApp, origins: list[str],
                 methods: tuple[str, ...] = METHODS) -> ASGIApp:
    """``app`` answering preflights and marking answers for ``origins`` (``["*"]``: any),
    a preflight allowing ``methods`` (the route's own); ``app`` itself when there are no
    origins, so no CORS header is ever sent."""
    if not origins:
        return app
    return CORSMiddleware(app, allow_origins=origins, allow_methods=methods,
                          allow_headers=HEADERS, expose_headers=EXPOSED,
                          allow_credentials=False, max_age=PREFLIGHT_MAX_AGE_S)

