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
