"""Expected failures of use cases. Adapters turn them into user errors (GraphQL) or
CALLERRORs (OCPP); anything else is an unexpected failure and gets masked."""

from __future__ import annotations

import math
from datetime import timedelta


class DomainError(Exception):
    """A failure the caller can act on. ``code`` is stable and machine-readable."""

    code = "INVALID"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class ValidationError(DomainError):
    code = "INVALID"


class ValidationErrors(ValidationError):
    """Several fields of one input failed their checks (``validation.Checks``), in the
    order they were checked: a form learns every field at fault at once instead of one
    per round trip. As a plain ``DomainError`` it reads as its first error, so a caller
    that reports one failure (an OCPP reply, a log line) still says something true."""

    def __init__(self, errors: list[ValidationError]) -> None:
        first = errors[0]
        super().__init__(first.message, field=first.field, code=first.code)
        self.errors = tuple(errors)


def each(error: DomainError) -> tuple[DomainError, ...]:
    """The failures ``error`` stands for: those of a ``ValidationErrors``, else itself."""
    return error.errors if isinstance(error, ValidationErrors) else (error,)


class NotFound(DomainError):
    """Missing, or hidden from the viewer: the two read the same so ids cannot be probed."""

    code = "NOT_FOUND"


class Forbidden(DomainError):
    """The viewer can see the object but may not do this to it."""

    code = "FORBIDDEN"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class Conflict(DomainError):
    """A uniqueness rule or a state rule would be broken (duplicate email, station in use)."""

    code = "CONFLICT"


class PaymentDeclined(Conflict):
    """The payment provider refused to move the money (a refund of a card closed since,
    a dispute): nothing moved. Raised by a ``PaymentProvider``."""

    code = "DECLINED"


class TooManyRequests(DomainError):
    """A limit on how often something may be done was reached: try again after
    ``retry_after`` (HTTP answers 429 with ``Retry-After``)."""

    code = "TOO_MANY_REQUESTS"

    def __init__(self, message: str, *, retry_after: timedelta, field: str | None = None
                 ) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after

    @property
    def retry_after_s(self) -> int:
        return retry_after_seconds(self.retry_after)


def retry_after_seconds(retry_after: timedelta) -> int:
    """Whole seconds, at least one (what ``Retry-After`` says)."""
    return max(1, math.ceil(retry_after.total_seconds()))


class UniqueViolation(Conflict):
    """Raised by stores when a unique index rejects a write; ``field`` names the rule."""

    code = "DUPLICATE"


class ChargerError(DomainError):
    """The command failed at the charger's end: an answer we could not read, or (as
    ``ChargerCallError``) a CALLERROR."""

    code = "CHARGER_ERROR"


class ChargerCallError(ChargerError):
    """The charger answered with a CALLERROR (its code is in the message): a definite
    "not done", unlike an answer we could not read."""


class ChargerNotSupported(ChargerCallError):
    """The charger's CALLERROR was NotSupported or NotImplemented: it cannot do this at
    all, as opposed to failing this once (InternalError: try again)."""


class ChargerOffline(ChargerError):
    code = "CHARGER_OFFLINE"


class ChargerUnclaimed(ChargerOffline):
    """A command relayed between instances that no instance took: none holds the charger's
    connection, or the one holding it cannot hear the relay right now (its event bus is
    reconnecting). Nothing was sent. Which of the two, the store's ``Station.online``
    says (``CommandService``)."""


class ChargerUnreachable(ChargerOffline):
    """A ``ChargerUnclaimed`` whose charger is recorded online: connected to an instance
    that cannot hear the relay right now; and a CancelReservation's ``ChargerOffline``
    while its charger is recorded online (the relay could not publish, the instance
    stopping). Not offline (its cancels are not owed for its return:
    ``CommandService``): try again in a moment."""


class ChargerBusy(ChargerError):
    """The command waited its turn behind others to the same charger (OCPP allows one
    at a time) until its time ran out: it was never sent."""

    code = "CHARGER_BUSY"


class ChargerTimeout(ChargerError):
    """No answer: the charger may have carried the command out (or may still)."""

    code = "CHARGER_TIMEOUT"


class ChargerLost(ChargerTimeout):
    """No answer, and none to be had: the command's way to the charger went after it
    may have reached it: the charger's socket closed (``OUTCOME_UNKNOWN``) or another
    connection of it took over, this service stopping, or (relayed) the instance holding
    the charger not heard from (killed, cut off). Its outcome is unknown as any
    timeout's, but the charger did not fail to answer: it says nothing of how the
    charger answers (``CommandService``'s list limits are asked again at the next list;
    review s26: a holder killed while asked was kept as the charger's silence)."""


#: A ``ChargerLost``'s message when the charger's socket closed after it got the
#: command (the local gateway, and a relay whose holder did not say more).
OUTCOME_UNKNOWN = ("the charger went offline after receiving the command; its outcome is "
                   "unknown")
#: A ``ChargerLost``'s message when this service's stop gave up waiting for the answer
#: of a command the charger already had (the grace's end, ``give_up_commands``): never
#: "try again", which would send it twice.
STOPPED_UNANSWERED = ("the service stopped before the charger answered; it may have acted "
                      "on the command: its outcome is unknown")


class ChargerRejected(ChargerError):
    """The charger answered, and its answer was no (Rejected, Occupied, Faulted, …)."""

    code = "CHARGER_REJECTED"


class StoreBusy(DomainError):
    """The database stayed locked by another process past the store's busy timeout:
    nothing was written, and the same request may simply be sent again."""

    code = "STORE_BUSY"


class StoreRefused(DomainError):
    """The database refused what the write would store, whatever the moment: a record past
    its size limit (MongoDB's 16 MiB document). Nothing was written, and sending the same
    request again fails the same way. ``reason`` says it in the database's own words,
    for logs."""

    code = "STORE_REFUSED"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreUnavailable(DomainError):
    """The database cannot take writes now (a full disk, an I/O error, a read-only file, a
    database file deleted under the running service): nothing was written. ``reason``
    says why in the database's own words, for start-up lines and logs."""

    code = "STORE_UNAVAILABLE"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreOutcomeUnknown(StoreUnavailable):
    """The database stopped answering in the middle of a write, and what stands of it is
    not known yet (MongoDB: a write batch whose rollback failed too, or whose committing
    journal deletion went unanswered, finished by a sweep within minutes). Unlike
    ``StoreUnavailable``, part of the write may stay: a request sent again could apply it
    twice, or be refused for its own first write (``DUPLICATE``), so the answer is kept
    for its idempotency key (not ``graph.errors.RETRYABLE_CODES``) and the caller reads
    before sending it again. A SQLite write is one transaction and never raises it."""

    code = "STORE_OUTCOME_UNKNOWN"
