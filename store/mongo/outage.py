"""MongoDB outages as the domain's ``StoreUnavailable``, at the store's boundary.

A server that cannot be reached, a connection lost mid-operation, a primary that stepped
down, or a server out of disk is no bug of the request: callers get ``STORE_UNAVAILABLE``
(a GraphQL user error with that code; a charger connecting is told 1013, try again later,
by ``ocpp_bridge/server.py``), as from the SQLite store, instead of an unexpected error.
The driver's text, which names hosts, goes to ``reason`` (logs and start-up lines), not to
the message a client reads.

A document the server refuses whatever the moment (past its 16 MiB, or a value bson
cannot encode) is ``StoreRefused`` (``STORE_REFUSED``) the same way: nothing was written
(a batch rolls back what it wrote), and it is no outage to wait out.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from bson.errors import InvalidDocument
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
)

from domain.errors import StoreRefused, StoreUnavailable

log = logging.getLogger("chargegraph.store.mongo")

P = ParamSpec("P")
T = TypeVar("T")

#: The server's error codes for "cannot write now" that no request can fix: out of disk.
CANNOT_WRITE_CODES = frozenset({14031})  # OutOfDiskSpace
#: The server's error codes for a document past its size limit (16 MiB): BSONObjectTooLarge,
#: an update whose result would be (a ``$set`` growing a document), and an upsert
#: inserting one (17420; 7655103 in later servers).
TOO_LARGE_CODES = frozenset({10334, 17419, 17420, 7655103})
#: BadValue: what the server answers an insert of a document past 16 MiB ("object to
#: insert too large"). PyMongo sends one in an acknowledged ``insert_many`` whatever its
#: size, and in an ``insert_one`` up to 16 KiB past the limit (its command overhead),
#: leaving the refusal to the server. BadValue is every other bad value too, so only
#: with that message.
BAD_VALUE = 2
TOO_LARGE_TO_INSERT = "too large"
#: MaxTimeMSExpired: the server stopped an operation at the time limit it was sent with
#: (PyMongo's ``ExecutionTimeout``; PyMongo raises it with this code too before sending
#: one whose time is already up). Not a write concern timeout (64): that write landed,
#: only its replication was not confirmed.
TIME_LIMIT = 50


def unavailable(error: PyMongoError) -> StoreUnavailable | StoreRefused | None:
    """The domain error for an outage or a document the server refuses as too large;
    ``None`` for anything else (a bug, a rule)."""
    if isinstance(error, ConnectionFailure):
        # Server selection timed out, a network error or timeout, not (any more) the
        # primary: all are AutoReconnect or ConnectionFailure in PyMongo.
        return _unavailable("the database does not answer now", error)
    errors = _server_errors(error)
    if any(code in CANNOT_WRITE_CODES for code, _ in errors):
        return _unavailable("the database cannot write now", error)
    if any(_too_large(code, message) for code, message in errors):
        return refused(error)
    return None


def _server_errors(error: PyMongoError) -> list[tuple[int | None, str]]:
    """The server's (code, message) of each write ``error`` reports: one per document of
    a bulk write that failed, else the operation's own."""
    if isinstance(error, BulkWriteError):
        return [(e.get("code"), str(e.get("errmsg") or ""))
                for e in (error.details or {}).get("writeErrors") or []]
    if isinstance(error, OperationFailure):
        return [(error.code, str((error.details or {}).get("errmsg") or error))]
    return []


def at_time_limit(error: PyMongoError) -> bool:
    """Whether the server (or PyMongo, before sending) stopped an operation, or a write of
    a bulk one, at the time limit it carried: only a write batch's operations carry one
    (``batch.py``, which answers it as its own deadline, ``batch.BatchTimeout``)."""
    return any(code == TIME_LIMIT for code, _ in _server_errors(error))


def answer_timed_out(error: BaseException) -> bool:
    """Whether the driver gave up waiting for an operation's answer (``NetworkTimeout``:
    its socket timed out, under a batch's ``pymongo.timeout`` or the URL's
    ``socketTimeoutMS``), the server's own time limit (``at_time_limit``) not having
    answered first: what the operation did is not known from its answer. Not a server
    that cannot be selected (``ServerSelectionTimeoutError``: nothing was sent)."""
    return isinstance(error, NetworkTimeout)


def _too_large(code: int | None, message: str) -> bool:
    return code in TOO_LARGE_CODES or (code == BAD_VALUE
                                       and TOO_LARGE_TO_INSERT in message.lower())


def reason_of(error: BaseException) -> str:
    """What the driver said of ``error``, for the domain error's ``reason`` and the log:
    its text, or its type's name when it has none."""
    return str(error).strip() or type(error).__name__


def refused(error: Exception) -> StoreRefused:
    """A document the database will not store: past the server's 16 MiB (the server's
    refusal, ``unavailable``; or PyMongo's ``DocumentTooLarge``, raised before sending a
    single-document command more than 16 KiB past the limit, which is a bson
    ``InvalidDocument``, no ``PyMongoError``: it was an internal error, and a
    StopTransaction failing so was sent again for ever), or a value bson cannot encode
    (a bug: logged with its trace). Waiting fixes neither, so it is no outage."""
    reason = reason_of(error)
    if isinstance(error, InvalidDocument) and not isinstance(error, DocumentTooLarge):
        log.error("the database cannot encode a write: %s", reason, exc_info=error)
        what = "a record holds a value the database cannot store"
    else:
        log.warning("the database refused a write: %s", reason)
        what = "a record is too large for the database (over 16 MiB)"
    return StoreRefused(f"the write was refused: {what}; nothing was written", reason=reason)


def _unavailable(what: str, error: PyMongoError) -> StoreUnavailable:
    reason = reason_of(error)
    return StoreUnavailable(f"{what}: try again later", reason=reason)


def mapping_outages(method: Callable[P, Coroutine[Any, Any, T]]
                    ) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wraps a store method so an outage leaves it as ``StoreUnavailable``."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except PyMongoError as error:
            mapped = unavailable(error)
            if mapped is None:
                raise
            raise mapped from error
        except InvalidDocument as error:
            raise refused(error) from error

    return wrapper


def client_options(url: str) -> dict[str, Any]:
    """Timeouts for a client on ``url``, unless the URL sets them (PyMongo lets keyword
    arguments win over the URL's options, so only the ones it leaves out are given):
    PyMongo waits 30 s to select a server and 20 s to connect, and a request (a charger's
    message) waited that long before failing when the database was down."""
    query = url.partition("?")[2]
    given = {pair.partition("=")[0].lower() for pair in query.replace(";", "&").split("&")}
    return {name: value for name, value in DEFAULT_TIMEOUTS_MS.items()
            if name.lower() not in given}


#: A few seconds, not the driver's 30: a request fails with ``STORE_UNAVAILABLE`` while
#: its client (a charger, a browser) still waits for the answer. A replica set whose
#: elections take longer sets ``serverSelectionTimeoutMS`` in the URL.
DEFAULT_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000}
