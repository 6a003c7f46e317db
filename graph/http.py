"""GraphQL over HTTP (the GraphQL-over-HTTP specification), done by hand because the
framework's view predates ``application/graphql-response+json`` and its status codes.

- POST ``application/json`` bodies; GET with URL parameters (queries only: a mutation over
  GET is 405, so a link or prefetch can never change data).
- ``Accept`` picks the response type: ``application/graphql-response+json`` (request
  errors — unparsable, invalid, bad variables — are 400) or ``application/json`` (the
  legacy type: every well-formed request is 200). No Accept means ``application/json``;
  nothing acceptable is 406.
- Malformed requests (bad JSON, wrong parameter types) are 400 for both types; a bad
  bearer token is 401; a browser asking for HTML gets GraphiQL.
- ``Idempotency-Key`` on a POST of a mutation: run once per signed-in user and key
  (``domain.services.idempotency``); a retry with the key gets the first answer again
  (``Idempotent-Replayed: true``), see ``_once``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from strawberry.http.ides import get_graphql_ide_html
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from domain.errors import DomainError, StoreOutcomeUnknown, Unauthenticated
from domain.outside import outside_effects
from domain.ports import NO_METRICS, Metrics
from domain.services.idempotency import InProgress, Refusal, Replay
from graph import exact_json
from graph.context import GraphContext
from graph.errors import RETRYABLE_CODES, not_executed, payload_codes, request_outcome
from graph.pipeline import (
    mutation_fields,
    normalized,
    operation_type,
    operations_in,
    payload_fields,
)

log = logging.getLogger("chargegraph.graph")

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
MAX_BODY = 1_000_000
#: Where Strawberry's GraphiQL page loads its scripts and styles from.
IDE_CDN = "https://unpkg.com/"


def ide_page(assets_url: str | None) -> str:
    """The GraphiQL page; its scripts and styles from ``assets_url`` (a folder of the CDN's
    layout, served by the site itself) instead of the CDN when given."""
    html = get_graphql_ide_html("graphiql")
    if assets_url is None:
        return html
    return html.replace(IDE_CDN, assets_url.rstrip("/") + "/")

ContextFactory = Callable[[Request], Awaitable[GraphContext]]


#: The code of an error about the HTTP request itself (its method, media type, size or
#: shape), whatever its status: Apollo's name for it, which clients already handle.
BAD_REQUEST = "BAD_REQUEST"
#: The code of a document whose operation to run cannot be told (several and no
#: ``operationName``, or no operation of that name): Apollo's name again.
OPERATION_RESOLUTION_FAILURE = "OPERATION_RESOLUTION_FAILURE"


#: The header a client names a mutation request by, to send it again safely (Stripe's,
#: and the IETF's draft ``Idempotency-Key`` header field).
IDEMPOTENCY_KEY = "idempotency-key"
#: A key: 1 to 255 visible ASCII characters (a UUID is the usual choice).
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: The key came with another operation or other variables than its first request (422).
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
#: The key's first request is still running (409, ``Retry-After``: a second, or the
#: rest of its claim's lease once older than a request runs).
IDEMPOTENCY_KEY_IN_PROGRESS = "IDEMPOTENCY_KEY_IN_PROGRESS"
#: The key's request ran, but its answer is not given: an account it may name was erased
#: while it ran, its answer's keeping included (``IdempotencyService._unless_erased_since``,
#: ``_erased_while_kept``); not run again (410).
IDEMPOTENCY_ANSWER_WITHHELD = "IDEMPOTENCY_ANSWER_WITHHELD"
#: The key's request ran, but the caller's access (role, company) changed since: its kept
#: answer is not shown them, nor is it run again (403).
FORBIDDEN = "FORBIDDEN"
#: What a mutation with a key that failed unexpectedly after reaching a charger or the
#: payment provider answers (500), kept for the key.
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
REACHED_OUTSIDE = ("the request failed after it reached a charger or the payment provider:"
                   " it is not run again with this Idempotency-Key; read its outcome with a"
                   " query")
#: The mutations a key is refused for: they answer credentials shown this once (an access
#: and a refresh token), which the service keeps nowhere in clear, so there is no answer
#: to give again; and sending them again is safe (another sign-in).
KEYLESS_MUTATIONS = frozenset({"login", "signUp", "refreshToken", "changePassword"})
#: Answer fields that hold such credentials in other mutations' payloads
#: (``UserPayload.signedIn``): a key is refused for a request selecting one, as above.
CREDENTIAL_FIELDS = frozenset({"signedIn"})


class RequestError(Exception):
    """The request is not a well-formed GraphQL-over-HTTP request."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _media_ranges(header: str) -> list[tuple[str, float]]:
    ranges = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((media, quality))
    return ranges


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header, or None when nothing fits."""
    if not accept or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for media, quality in _media_ranges(accept):
        if quality <= 0:
            continue
        if media == GRAPHQL_RESPONSE:
            candidate = (quality, 2, GRAPHQL_RESPONSE)
        elif media in (JSON, "application/*", "*/*"):
            candidate = (quality, 1, JSON)
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "query" not in request.query_params


def _json_param(raw: Any, name: str) -> dict[str, Any] | None:
    """``variables``/``extensions``: a map, null, or (from GET) a JSON-encoded map."""
    if isinstance(raw, str):
        try:
            raw = exact_json.loads(raw, exact=exact_json.VARIABLES if name == "variables"
                                   else exact_json.NOTHING)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"'{name}' is not valid JSON") from exc
    if raw is not None and not isinstance(raw, dict):
        raise RequestError(f"'{name}' must be a map")
    return raw


def parse_params(params: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    if not isinstance(params, dict):
        raise RequestError("the request body must be a JSON object")
    query = params.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RequestError("'query' must be a non-empty string")
    operation_name = params.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError("'operationName' must be a string")
    variables = _json_param(params.get("variables"), "variables")
    _json_param(params.get("extensions"), "extensions")
    return query, variables, operation_name or None


async def _capped_body(request: Request) -> bytes:
    """The body, read no further than ``MAX_BODY``: a 200 MB post must not be held in
    memory just to be refused (a declared length too large is refused unread)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise RequestError("request body too large", status=413)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise RequestError("request body too large", status=413)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # The connection closed mid-body: the client left, or the server's body deadline
        # (``chargegraph.http_limits``, which answered 408 itself). No one reads this
        # answer; an exception would log a traceback for a client's doing.
        raise RequestError("the connection closed before the request body was complete",
                           status=408) from exc
    return b"".join(chunks)


async def read_post(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    media, *options = [p.strip().lower() for p in content_type.split(";")]
    if media != JSON:
        raise RequestError("send 'Content-Type: application/json'", status=415)
    for option in options:
        name, _, value = option.partition("=")
        if name == "charset" and value.strip('"') not in ("utf-8", "utf8"):
            raise RequestError("only utf-8 is accepted", status=415)
    body = await _capped_body(request)
    try:
        # orjson, not json: it refuses lone surrogates ("\ud800"), which no database can
        # store as UTF-8, and NaN/Infinity, which are not JSON. ``exact_json``: a JSON
        # number in ``variables`` keeps its digits for a ``Decimal`` argument (a small
        # body only: see there).
        parsed = exact_json.loads(body, exact=exact_json.BODY)
    except orjson.JSONDecodeError as exc:
        raise RequestError("the request body is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise RequestError("the request body must be a JSON object")
    return parsed


def _key_refusal(key: str, context: GraphContext, fields: list[str],
                 answers: set[str]) -> str | None:
    """Why an ``Idempotency-Key`` cannot be taken with this request (its root ``fields``,
    the fields ``answers`` selects in their payloads), if it cannot."""
    if not _KEY.fullmatch(key):
        return "an Idempotency-Key is 1 to 255 visible ASCII characters (a UUID)"
    if context.viewer.anonymous:
        return "an Idempotency-Key is kept per user: sign in first"
    if len(fields) != 1:
        return "an Idempotency-Key covers one mutation: send each in a request of its own"
    if fields[0] in KEYLESS_MUTATIONS:
        return f"{fields[0]} takes no Idempotency-Key: its answer holds credentials that " \
               "are never kept; send it again without one"
    if answers & CREDENTIAL_FIELDS:
        return f"{', '.join(sorted(answers & CREDENTIAL_FIELDS))} takes no " \
               "Idempotency-Key: it holds credentials that are never kept; send it " \
               "again without one"
    return None


def _response(payload: dict[str, Any], status: int, media: str,
              headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status, media_type=f"{media}; charset=utf-8",
                    headers=headers)


def _error_body(message: str, code: str = BAD_REQUEST) -> dict[str, Any]:
    """Every top-level error has a code (the README promises it): clients switch on
    ``extensions.code``, not on messages."""
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


class GraphQLHTTPHandler:
    def __init__(self, schema: Any, context_factory: ContextFactory, *, graphiql: bool,
                 metrics: Metrics = NO_METRICS, graphiql_assets: str | None = None):
        self.schema = schema
        self.context_factory = context_factory
        self.graphiql = graphiql
        self.metrics = metrics

        self._ide_html = ide_page(graphiql_assets) if graphiql else ""

    async def __call__(self, request: Request) -> Response:
        media = negotiate(request.headers.get("accept"))
        if request.method not in ("GET", "POST"):
            # The method first, whatever the Accept (QA s31: a HEAD or DELETE from a
            # browser, Accept: text/html, was told 406, as if another media type would
            # do). A CORS preflight never gets here: the middleware answers it.
            self.metrics.graphql_request("unknown", "invalid")
            return _response(_error_body("use GET or POST"), 405, media or JSON,
                             {"Allow": "GET, POST"})
        if request.method == "GET" and self.graphiql and wants_html(request):
            return HTMLResponse(self._ide_html)  # a page, not a request: not counted
        if media is None:
            self.metrics.graphql_request("unknown", "invalid")
            return _response(_error_body(f"accept {GRAPHQL_RESPONSE} or {JSON}"), 406, JSON)
        try:
            if request.method == "GET":
                params: Any = dict(request.query_params)
                allowed = {OperationType.QUERY}
            else:
                params = await read_post(request)
                allowed = {OperationType.QUERY, OperationType.MUTATION}
            query, variables, operation_name = parse_params(params)
        except RequestError as exc:
            self.metrics.graphql_request("unknown", "invalid")
            return _response(_error_body(str(exc)), exc.status, media, exc.headers)
        try:
            context = await self.context_factory(request)
        except Unauthenticated as exc:
            self.metrics.graphql_request(operation_type(query, operation_name), "invalid")
            return _response(_error_body(exc.message, exc.code), 401, media,
                             {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        key = request.headers.get(IDEMPOTENCY_KEY)
        if key is not None and request.method == "POST" \
                and operation_type(query, operation_name) == "mutation":
            # A key on a query is ignored: a query runs again harmlessly.
            return await self._once(key, query, variables, operation_name, allowed,
                                    context, media)
        return await self.execute(query, variables, operation_name, allowed, context, media,
                                  request.method)

    async def _once(self, key: str, query: str, variables: dict[str, Any] | None,
                    operation_name: str | None, allowed: set[OperationType],
                    context: GraphContext, media: str) -> Response:
        """A mutation with an idempotency key: run if the key is new, else its first
        answer again, or a refusal. The key covers the request, so it must hold one
        mutation (the unit a retry repeats; with two, one failing for the service's
        reasons could not be released without running the other again); credentials
        are never kept (``KEYLESS_MUTATIONS``); keys are kept per signed-in user. An
        answer is kept unless the service failed before anything outside it was
        attempted: a top-level error (an unexpected failure, the database out of reach
        as it ran; never ``STORE_OUTCOME_UNKNOWN``, whose write may stand) or a payload
        error of ``RETRYABLE_CODES`` releases the key (the retry runs) only while no
        charger command, payment or ping went out (``domain.outside``); after one, the
        service cannot know what the outside did, so whatever the answer is, it is kept
        (Stripe keeps its 500s too) and the client reads the outcome with a query."""
        refused = _key_refusal(key, context, mutation_fields(query, operation_name),
                               payload_fields(query, operation_name))
        if refused is not None:
            self.metrics.graphql_request("mutation", "invalid")
            return _response(_error_body(refused), 400, media)
        # Keyed by the service's secret: the variables may hold a password (updateUser,
        # eraseMyAccount, a charger's), which a plain hash kept for a day would let a
        # copy of the database test guesses against at a hash's speed.
        fingerprint = context.tokens.keyed_digest("idempotency-fingerprint", json.dumps(
            [normalized(query), operation_name, variables or {}], sort_keys=True,
            separators=(",", ":"), ensure_ascii=False, default=str).encode())
        idempotency = context.services.idempotency
        try:
            begun = await idempotency.begin(context.viewer, key, fingerprint)
        except DomainError as exc:  # the database out of reach: nothing ran
            self.metrics.graphql_request("mutation", "error")
            return _response(_error_body(exc.message, exc.code), 503, media)
        if isinstance(begun, Replay):
            self.metrics.graphql_request("mutation", "replayed")
            return Response(begun.response, status_code=200,
                            media_type=f"{media}; charset=utf-8",
                            headers={"Idempotent-Replayed": "true"})
        if begun is Refusal.REUSED:
            self.metrics.graphql_request("mutation", "invalid")
            return _response(_error_body(
                "this Idempotency-Key was sent with another operation or other variables:"
                " use a new key for a new request", IDEMPOTENCY_KEY_REUSED), 422, media)
        if begun is Refusal.ACCESS_CHANGED:
            self.metrics.graphql_request("mutation", "invalid")
            return _response(_error_body(
                "your access changed since the request with this Idempotency-Key ran: it "
                "ran once and is not run again; read its outcome with a query",
                FORBIDDEN), 403, media)
        if begun is Refusal.WITHHELD:
            self.metrics.graphql_request("mutation", "invalid")
            return _response(_error_body(
                "the request with this Idempotency-Key ran once and is not run again, but "
                "an account its answer may name was erased while it ran; its answer is not "
                "given: read its outcome with a query", IDEMPOTENCY_ANSWER_WITHHELD), 410,
                media)
        if isinstance(begun, InProgress):
            # A second while the claim is young; the rest of its lease once it is older
            # than a request runs (its instance most likely died mid-request).
            self.metrics.graphql_request("mutation", "invalid")
            return _response(_error_body(
                "a request with this Idempotency-Key is still running, or its instance "
                "stopped while it ran and the key is held until it lapses: send it again "
                "after Retry-After seconds", IDEMPOTENCY_KEY_IN_PROGRESS), 409, media,
                {"Retry-After": str(begun.retry_after_s)})
        reached: list[str] = []
        outside = outside_effects.set(reached)
        try:
            response, outcome, ran, codes = await self._execute(
                query, variables, operation_name, allowed, context, media, "POST")
        except Exception:
            if not reached:
                await idempotency.release(begun)
                raise
            # Reached only by a failure outside GraphQL execution (of this door's own
            # code): execution catches a resolver's, a use case's bug included, and
            # ``_execute`` returns it as a masked top-level ``INTERNAL_SERVER_ERROR``
            # with HTTP 200, kept below as any answer once the outside was reached
            # (review r27-idem2: README said such a failure was this 500). A charger or
            # the payment provider was reached: not run again, even so.
            log.exception("a mutation with an idempotency key failed after it reached "
                          "outside the service (%s); its answer is kept", ", ".join(reached))
            response, outcome, ran, codes = _response(_error_body(
                REACHED_OUTSIDE, INTERNAL_SERVER_ERROR), 500, media), "error", False, []
        finally:
            outside_effects.reset(outside)
        # Cancelled (the client gone, the service stopping) it stays claimed: whether the
        # mutation ran is not known, so the key lapses (``LEASE``) rather than run again.
        self.metrics.graphql_request("mutation", outcome)
        if reached or (ran and RETRYABLE_CODES.isdisjoint(codes)):
            await idempotency.finish(begun, bytes(response.body).decode())
        else:
            await idempotency.release(begun)
        return response

    async def execute(self, query: str, variables: dict[str, Any] | None,
                      operation_name: str | None, allowed: set[OperationType],
                      context: GraphContext, media: str, method: str) -> Response:
        response, outcome, _, _ = await self._execute(query, variables, operation_name,
                                                      allowed, context, media, method)
        self.metrics.graphql_request(operation_type(query, operation_name), outcome)
        return response

    async def _execute(self, query: str, variables: dict[str, Any] | None,
                       operation_name: str | None, allowed: set[OperationType],
                       context: GraphContext, media: str, method: str
                       ) -> tuple[Response, str, bool, list[str]]:
        """The response, its outcome for the metrics (``ok``, ``error``: executed, with
        errors or a payload error of ``SERVICE_FAILURE_CODES``, or ``invalid``: refused
        before execution), whether the operation's root fields all completed, and the
        codes of its payload errors (``payload_codes``). An error is a root field's own
        (its use case failed, path ``[field]``) or one of a field read for its answer
        after it ran (``[field, …]``). ``_once`` keeps the answer of a mutation that ran, whatever
        failed in reading its answer: released, the retry ran the mutation again (QA: a
        car added twice, DUPLICATE). One whose write's outcome is unknown
        (``STORE_OUTCOME_UNKNOWN``, top-level too) counts as ran: part of it may stand."""
        if operation_name is None and operations_in(query) > 1:
            # Strawberry would run the first one; the GraphQL spec asks for an error.
            return self._request_failure(
                "Must provide operation name if query contains multiple operations.",
                media, OPERATION_RESOLUTION_FAILURE), "invalid", False, []
        codes: list[str] = []
        marker = payload_codes.set(codes)
        try:
            result = await self.schema.execute(
                query, variable_values=variables, context_value=context,
                operation_name=operation_name, allowed_operation_types=allowed,
            )
        except InvalidOperationTypeError as exc:
            if method == "GET" and exc.operation_type is OperationType.MUTATION:
                return _response(_error_body("mutations need POST"), 405, media,
                                 {"Allow": "POST"}), "invalid", False, codes
            return self._request_failure(
                "subscriptions run over the websocket endpoint", media, BAD_REQUEST), \
                "invalid", False, codes
        except CannotGetOperationTypeError as exc:  # no operation of that name
            return self._request_failure(exc.as_http_error_reason(), media,
                                         OPERATION_RESOLUTION_FAILURE), "invalid", False, codes
        finally:
            payload_codes.reset(marker)
        errors = [e.formatted for e in result.errors] if result.errors else None
        no_data = not_executed(result)
        payload: dict[str, Any] = {} if no_data else {"data": result.data}
        if errors:
            payload["errors"] = errors
        if result.extensions:
            payload["extensions"] = result.extensions
        status = 400 if no_data and media == GRAPHQL_RESPONSE else 200
        outcome = request_outcome(result, codes)
        ran = not no_data and not any(e.path is None or len(e.path) < 2
                                      for e in result.errors or ())
        # A write whose outcome is unknown may stand, in part: its answer is kept as a
        # ran mutation's, wherever its error surfaced (a payload's, or top-level from a
        # resolver that let it through), for its retry would run over the first try.
        ran = ran or any((e.extensions or {}).get("code") == StoreOutcomeUnknown.code
                         for e in result.errors or ())
        return _response(payload, status, media), outcome, ran, codes

    @staticmethod
    def _request_failure(message: str, media: str, code: str) -> Response:
        status = 400 if media == GRAPHQL_RESPONSE else 200
        return _response({"errors": [GraphQLError(message, extensions={"code": code})
                                     .formatted]}, status, media)
