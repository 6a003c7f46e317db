"""Start-up failures the operator must fix outside the code (a Redis or MongoDB server that
does not answer, a port already taken, an unreadable database file) end ``chargegraph
serve`` with one line naming what failed, not with a traceback. (The OCPP certificate is
checked earlier, with the configuration: ``chargegraph/tls.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.errors import StoreUnavailable

if TYPE_CHECKING:
    from chargegraph.signals import StoppableStart


class StartupFailed(Exception):
    """A dependency of the service is unavailable at start; the message says which."""


def _environmental() -> tuple[type[BaseException], ...]:
    # OSError covers bind failures, missing files and the builtin ConnectionError the
    # Redis bus raises; sqlite3.Error a corrupt or locked database file.
    kinds: list[type[BaseException]] = [OSError, sqlite3.Error]
    with contextlib.suppress(ImportError):
        from pymongo.errors import PyMongoError

        kinds.append(PyMongoError)
    return tuple(kinds)


@contextlib.contextmanager
def starting(what: str, *, store: str = "the store") -> Iterator[None]:
    """Turns an environmental failure while starting ``what`` into ``StartupFailed``.

    A step that writes to the store (the OCPP server records every charger offline
    first) on a store that cannot write (a full disk, a read-only file) names the store
    as well, ``store`` being how: the step is only where it showed."""
    try:
        yield
    except StoreUnavailable as error:
        raise StartupFailed(f"cannot start {what}: {store} cannot write: {error.reason}"
                            ) from error
    except _environmental() as error:
        reason = str(error).strip() or type(error).__name__
        raise StartupFailed(f"cannot start {what}: {reason}") from error


class PlainStartupFailures:
    """ASGI middleware: when the lifespan fails with ``StartupFailed``, the server logs its
    one-line message instead of the traceback Starlette formats.

    Starlette sends ``lifespan.startup.failed`` from inside its ``except`` block, so the
    exception being handled is the lifespan's own failure; anything else keeps its
    traceback, since it is a bug to report. A start cancelled by a stop (``start``:
    ``signals.StoppableStart``) is no failure, and logs nothing."""

    def __init__(self, app: ASGIApp, start: StoppableStart | None = None) -> None:
        self.app = app
        self.start = start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_plainly(message: Message) -> None:
            failure = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" \
                    and isinstance(failure, StartupFailed):
                message = {**message, "message": str(failure)}
            elif message["type"] == "lifespan.startup.failed" \
                    and isinstance(failure, asyncio.CancelledError) \
                    and self.start is not None and self.start.stopped:
                # A stop signal cancelled the start: no failure (the server says so).
                message = {key: value for key, value in message.items()
                           if key != "message"}
            await send(message)

        await self.app(scope, receive, send_plainly)
