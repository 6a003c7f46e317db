"""How failures reach clients: expected ones as ``UserError`` in mutation payloads or as
GraphQL errors with a ``code`` extension; unexpected ones masked with an error id."""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.types.execution import ExecutionResult, PreExecutionError

from domain.errors import DomainError, Forbidden, Unauthenticated, each
from graph.request_errors import variable_refused

if TYPE_CHECKING:
    from graph.context import GraphContext

T = TypeVar("T")

log = logging.getLogger("chargegraph.graph")


#: Every code a mutation's payload may carry, for the clients that match on them (a code
#: written nowhere is one a client cannot handle; QA s26: LIMIT_REACHED, OVERLAP,
#: CHANGED, EXPIRED and the STORE_* codes were). README's "Mutations" lists them too;
#: those answered only over plain HTTP (an export's ERASED and TOO_MANY_REQUESTS) are
#: README's "HTTP answers", not here.
USER_ERROR_CODES = (
    "Stable machine-readable code; match on it, never on `message`. The input: INVALID, "
    "REQUIRED, TOO_SHORT, TOO_LONG, TOO_WEAK, OUT_OF_RANGE, TOO_MANY (more items than "
    "the list takes), OVERLAP (two price bands on one time), INVALID_ID (no id of its "
    "type), UNSUPPORTED, FORBIDDEN_ADDRESS (a webhook URL to a private address). The "
    "stored data: NOT_FOUND, DUPLICATE, IN_USE, INVALID_STATE (the record's state "
    "forbids it), EXPIRED (a card past its `expiresAt`), UNCHANGED (the new password is "
    "the old one), LIMIT_REACHED (a driver's one live reservation, the webhooks a "
    "company or owner may have), DECLINED (the payment provider refused: nothing "
    "moved), CHANGED (the record kept changing while it was "
    "written: send it again). Who you are: UNAUTHENTICATED, "
    "FORBIDDEN, INVALID_TOKEN, TOKEN_EXPIRED, TOKEN_REUSED, TOO_MANY_ATTEMPTS, "
    "SIGN_UP_DISABLED. A charger command: CHARGER_OFFLINE, CHARGER_BUSY, "
    "CHARGER_TIMEOUT, CHARGER_REJECTED, CHARGER_ERROR. The service: UNAVAILABLE (a part "
    "not running on this instance), STORE_BUSY (the database was locked, or too slow to "
    "take the write in time: not recorded, send it again), STORE_UNAVAILABLE (it cannot "
    "write now), STORE_OUTCOME_UNKNOWN (the database stopped answering in the middle of "
    "the write: part of it may stay; read before sending it again) and STORE_REFUSED "
    "(too large to store: the same request fails again); NOT_READ_BACK (the change was "
    "written, but what the payload reads after it could not be: read it with a query, "
    "do not send it again). "
    "After a charger command was sent or a payment asked of the provider, what the "
    "charger or provider did stands though these say it was not recorded: read it with a "
    "query before sending again.")


@strawberry.type(description="An expected failure of a mutation, tied to an input field.")
class UserError:
    field: str | None = strawberry.field(
        description="The input field at fault (camelCase, dotted for nested inputs)."
    )
    message: str = strawberry.field(description=(
        "What went wrong, in English, for people to read: a client decides by `code`, "
        "not by this."))
    code: str = strawberry.field(description=USER_ERROR_CODES)


#: The ``errors`` of every mutation payload.
PAYLOAD_ERRORS = ("Expected failures, each with the input field at fault and a stable "
                  "code; empty when the mutation succeeded.")


_SNAKE = re.compile(r"_([a-z0-9])")


def camel(field: str | None) -> str | None:
    """Domain (storage) field names to the API's camelCase: ``cp_id`` → ``cpId``;
    ``limit_2`` → ``limit2``, as the schema's names are made. Only the letter after an
    underscore changes: a path naming camelCase fields already
    (``energy_bands[0].startTime``) keeps them (strawberry's converter, which lowers the
    rest of each part, would say ``starttime``)."""
    if field is None:
        return None
    return _SNAKE.sub(lambda m: m.group(1).upper(), field)


#: Codes of the service's own failures, not the request's: its own write did not happen
#: and the same request may succeed sent again (README). An answer carrying one is not
#: kept for its idempotency key (``graph.http``), so the client's retry with the key runs
#: it, unless the request reached outside the service first (a charger command, a
#: payment: ``domain.outside``), whose effect stands: then the answer is kept. Not
#: ``STORE_OUTCOME_UNKNOWN`` (a ``STORE_UNAVAILABLE`` before): part of the write may
#: stand, and a retry ran it again over it (a car added, then its retry refused as
#: ``DUPLICATE`` of itself), so its answer is kept and the client reads first.
RETRYABLE_CODES = frozenset({"STORE_BUSY", "STORE_UNAVAILABLE", "CHANGED", "UNAVAILABLE"})
#: The change was written, but what its payload reads after it could not be read (the
#: database out of reach a moment later): never a retryable code, a retry writes again.
NOT_READ_BACK = "NOT_READ_BACK"
#: Payload codes that are the service's own failure (the database, a part not running),
#: not the request's: ``/metrics`` counts such a request's outcome ``error``, as a
#: top-level error (QA s32: a ``login`` answered ``STORE_UNAVAILABLE`` with the disk full
#: counted ``ok``). A user error (the input, the stored data, who asks, a charger's
#: answer, ``CHANGED``) leaves it ``ok``: the service did its work; so does
#: ``STORE_REFUSED`` (a value too large to store: the same request fails again, the
#: request's fault; review r32-f).
SERVICE_FAILURE_CODES = frozenset({"STORE_BUSY", "STORE_UNAVAILABLE",
                                   "STORE_OUTCOME_UNKNOWN", "UNAVAILABLE", NOT_READ_BACK})
#: Set by ``graph.http`` around each request it executes (and ``graph.live_ws`` around
#: each query or mutation sent over a socket): the codes of its payload
#: errors (for an idempotency key, whether one is of ``RETRYABLE_CODES``; for the
#: metrics, of ``SERVICE_FAILURE_CODES``). Every payload error is made by ``user_error``,
#: whichever resolver makes it, so it is told here, whether or not the client selected
#: ``errors { code }``.
payload_codes: ContextVar[list[str] | None] = ContextVar("payload_codes", default=None)


def not_executed(result: ExecutionResult) -> bool:
    """Whether ``result`` was refused before any field ran: by strawberry (a
    ``PreExecutionError``: the document's syntax or validation) or by graphql-core's own
    start (a variable's value not coerced, as ``$n: Int!`` given "x", or no operation to
    run: a plain result, no data and no error at a path)."""
    return isinstance(result, PreExecutionError) or (
        result.data is None and bool(result.errors)
        and all(e.path is None for e in result.errors or ()))


def request_outcome(result: ExecutionResult, codes: Collection[str]) -> str:
    """A result's outcome as ``/metrics`` counts it, over HTTP and the sockets alike:
    ``invalid`` (refused before execution, ``not_executed``: the client's, a variable's
    value too, as a subscription's (``live_ws._subscribe``)), ``error`` (executed with
    errors, or a payload error of ``SERVICE_FAILURE_CODES`` among ``codes``,
    ``payload_codes``') or ``ok``."""
    if not_executed(result):
        return "invalid"
    return "error" if result.errors or not SERVICE_FAILURE_CODES.isdisjoint(codes) else "ok"


def user_error(error: DomainError) -> UserError:
    if (seen := payload_codes.get()) is not None:
        seen.append(error.code)
    return UserError(field=camel(error.field), message=error.message, code=error.code)


def user_errors(error: DomainError, input: object | None = None) -> list[UserError]:
    """Every failure ``error`` stands for (all the fields an input check found at fault),
    in the order of ``input``'s fields when given: an id the door decoded and a name
    the use case checked come back as the form lists them."""
    errors = [user_error(one) for one in each(error)]
    if input is None or len(errors) < 2:
        return errors
    order = _field_order(input)
    return sorted(errors, key=lambda e: order.get((e.field or "").split(".")[0],
                                                  len(order)))


def _field_order(input: object) -> dict[str, int]:
    """An input type's fields (camelCase, as errors name them) by their place in it."""
    if not dataclasses.is_dataclass(input):
        return {}
    names: Sequence[str] = [camel(f.name) or f.name for f in dataclasses.fields(input)]
    return {name: index for index, name in enumerate(names)}


def graphql_error(error: DomainError) -> GraphQLError:
    """A domain error raised by a query field, as a GraphQL error with its code."""
    extensions = {"code": error.code}
    if error.field:
        extensions["field"] = camel(error.field) or error.field
    return GraphQLError(error.message, extensions=extensions)


#: Where graphql-core's messages begin their suggestions (``did_you_mean``).
SUGGESTION = " Did you mean "


def mask(error: GraphQLError, *, suggestions: bool = True) -> GraphQLError:
    """``error`` as a client may see it. Errors not raised on purpose (a bug, a database
    outage) get a generic message with an error id, and the exception is logged under that
    id, so clients learn nothing internal and operators can still find the cause. Domain
    errors carry their code (and field); syntax, validation and deliberate GraphQL errors
    pass unchanged, but for their "Did you mean …?" when not ``suggestions``
    (``CHARGEGRAPH_INTROSPECTION=false``). Every error a client sees goes through here, on
    both doors (HTTP's ``RequestPipeline``, the websocket's ``Connection._error``): review
    s26 found a subscription's variable errors sent with their suggestions."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        # A variable its type refused gets its code and path here, for both doors
        # (HTTP, and a subscription over the websocket).
        refused = variable_refused(error)
        return refused if suggestions else without_suggestions(refused)
    if isinstance(original, DomainError):
        return GraphQLError(
            original.message, nodes=error.nodes, path=error.path,
            extensions={"code": original.code,
                        **({"field": camel(original.field)} if original.field else {})},
        )
    error_id = uuid.uuid4().hex[:12]
    log.error("unexpected error %s at %s", error_id, error.path, exc_info=original)
    return GraphQLError(
        "Internal server error", nodes=error.nodes, path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "errorId": error_id},
    )


def without_suggestions(error: GraphQLError) -> GraphQLError:
    """``error`` without its "Did you mean …?" (a new error: validation errors are
    cached and shared)."""
    at = error.message.find(SUGGESTION)
    if at < 0:
        return error
    return GraphQLError(error.message[:at], error.nodes, error.source, error.positions,
                        error.path, error.original_error, error.extensions)


async def attempt(ctx: GraphContext, action: Callable[[], Awaitable[T]], *,
                  public: bool = False, input: object | None = None
                  ) -> tuple[T | None, list[UserError]]:
    """Run a use case; expected failures become user errors (all of an input's invalid
    fields, in ``input``'s field order: ``user_errors``), anything else propagates
    (and is masked with an error id). An anonymous caller is told to sign in, before
    anything runs unless the use case is ``public`` (signing in): otherwise the first
    check to fail spoke, and a signed-out driver app was told "no such user" on an
    ``ownerId`` it never sent, or about its input."""
    if ctx.viewer.anonymous and not public:
        return None, [UserError(field=None, message="sign in first",
                                code=Unauthenticated.code)]
    try:
        return await action(), []
    except Forbidden as exc:
        if ctx.viewer.anonymous:
            return None, [UserError(field=None, message="sign in first",
                                    code=Unauthenticated.code)]
        return None, [user_error(exc)]
    except DomainError as exc:
        return None, user_errors(exc, input)
