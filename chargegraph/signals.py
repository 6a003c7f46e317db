"""Stopping cleanly on SIGTERM/SIGINT while the process is busy before or after uvicorn
handles them (demo's seeding)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def cancelled_by_signals(task: asyncio.Task[object]) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT cancel ``task`` instead of killing the process
    (exit -15) or raising ``KeyboardInterrupt`` wherever the main thread is.

    Installed with ``signal.signal``, as uvicorn installs its own: a server started inside
    stacks its handlers on these and restores them when it stops, so there is no moment in
    which a signal would kill the process. Must be entered in the main thread with
    ``task``'s loop running."""
    loop = asyncio.get_running_loop()

    def cancel(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the main thread, possibly inside
        # the loop's own code: hand the cancellation to the loop.
        loop.call_soon_threadsafe(task.cancel)

    previous = {sig: signal.signal(sig, cancel) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StoppableStart:
    """The app's start (its lifespan up to serving), which a stop ends: uvicorn only
    notes a signal while the lifespan starts, and a start may wait long (a SQLite store
    for another instance's migration, up to 30 minutes; a MongoDB server's selection).
    Review r28-upgrade: SIGTERM and SIGINT went unanswered until that wait ended.

    The lifespan calls ``begin`` first and ``end`` once started; the server calls
    ``stop`` on a signal (``cli.GracefulServer``), in the loop's thread. What the start
    was doing is cancelled, and what it opened closes as on any failed start: a
    migration interrupted is rolled back whole (SQLite) or goes on at the next start
    (MongoDB's steps)."""

    def __init__(self) -> None:
        self._task: asyncio.Task[object] | None = None
        #: A stop came before the start was over.
        self.stopped = False
        self._over = False

    def begin(self) -> None:
        if self.stopped:  # stopped before the lifespan began
            raise asyncio.CancelledError
        self._task = asyncio.current_task()
        self._over = False

    def end(self) -> None:
        self._task = None
        self._over = True

    def stop(self) -> bool:
        """Cancels the start; ``False`` when it is over (the server's shutdown stops the
        app then)."""
        if self._over:
            return False
        self.stopped = True
        if self._task is not None:
            self._task.cancel()
        return True
