"""MongoDB outages as the domain's ``StoreUnavailable``, at the store's boundary.

A server that cannot be reached, a connection lost mid-operation, a primary that stepped
down, or a server out of disk is no bug of the request: callers get ``STORE_UNAVAILABLE``
(a GraphQL user error with that code; a charger connecting is told 1013, try again later,
by ``ocpp_bridge/server.py``), as from the SQLite store, instead of an unexpected error.
The driver's text, which names hosts, goes to ``reason`` (logs and start-up lines), not to
the message a client reads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

from domain.errors import StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

#: The server's error codes for "cannot write now" that no request can fix: out of disk.
CANNOT_WRITE_CODES = frozenset({14031})  # OutOfDiskSpace


def unavailable(error: PyMongoError) -> StoreUnavailable | None:
    """The domain error for an outage; ``None`` for anything else (a bug, a rule)."""
    if isinstance(error, ConnectionFailure):
        # Server selection timed out, a network error or timeout, not (any more) the
        # primary: all are AutoReconnect or ConnectionFailure in PyMongo.
        return _unavailable("the database does not answer now", error)
    if isinstance(error, BulkWriteError):
        codes = {e.get("code") for e in (error.details or {}).get("writeErrors") or []}
        if codes & CANNOT_WRITE_CODES:
            return _unavailable("the database cannot write now", error)
        return None
    if isinstance(error, OperationFailure) and error.code in CANNOT_WRITE_CODES:
        return _unavailable("the database cannot write now", error)
    return None


def _unavailable(what: str, error: PyMongoError) -> StoreUnavailable:
    reason = str(error).strip() or type(error).__name__
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
