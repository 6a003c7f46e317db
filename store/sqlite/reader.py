"""Short reads inline on the event loop; long ones on a worker thread.

Nearly every read the API and the OCPP bridge make is an indexed lookup of a page or a
batch (a DataLoader's ``IN (…)``) that SQLite answers in well under a millisecond.
Sending each to aiosqlite's thread cost more than the query: a hop there and back, and
the GIL convoy the writer module describes (the thread waits for the loop at every row
it steps). So a read first runs **inline** on its own connection, under a time budget
that SQLite enforces through its progress handler: a query that has used ``budget_s`` of
the loop thread's CPU time is interrupted (nothing was changed, it is a read) and runs
again on the thread, where an analytics scan over a million rows may take what it needs
without stalling the loop. A statement that overran goes to the thread directly for the
next minute (then it may try again: the first run may only have been slow on a cold
cache).

The budget is CPU time, not wall-clock time: on a busy host the scheduler preempts the
process for a few milliseconds now and then, and a wall-clock budget took any short read
caught by that for a slow one and sent it to the thread for a minute (seen under a
profiler, which pauses the process the same way). A read that waits instead of computing
(pages from a cold disk) is still bounded, by a wall-clock ceiling of ``wall_s``.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from store.sqlite.writer import connect

#: Loop-thread CPU time a read may use: longer than a page or a batch lookup takes, short
#: enough not to stall the event loop.
INLINE_BUDGET_S = 0.005
#: Wall-clock ceiling of an inline read: above a scheduler's time slice on a busy host.
INLINE_WALL_S = 0.020
#: SQLite VM instructions between two budget checks (each check is a Python call).
_CHECK_EVERY = 2_000
#: Statements remembered as too slow for the inline path, and for how long.
_SLOW_STATEMENTS = 256
_SLOW_FOR_S = 60.0

# The two clocks (tests stand in for them).
_cpu_clock = time.thread_time
_wall_clock = time.perf_counter


class InlineReader:
    """A read connection used from the event loop thread only."""

    def __init__(self, conn: sqlite3.Connection, *, budget_s: float = INLINE_BUDGET_S,
                 wall_s: float = INLINE_WALL_S) -> None:
        self.conn = conn
        self.budget_s = budget_s
        self.wall_s = wall_s
        self._deadline = 0.0  # on the CPU clock
        self._wall_deadline = 0.0
        # Until then neither budget can be used up, and the CPU clock (a system call,
        # unlike the wall clock) need not be read.
        self._first_check = 0.0
        self._slow: OrderedDict[str, float] = OrderedDict()  # statement -> until when
        # The handler runs inside sqlite3_step; a non-zero answer interrupts the statement.
        conn.set_progress_handler(self._over_budget, _CHECK_EVERY)

    def _over_budget(self) -> int:
        wall = _wall_clock()
        if wall < self._first_check:
            return 0  # less time has passed than either budget: neither can be used up
        return 1 if wall > self._wall_deadline or _cpu_clock() > self._deadline else 0

    def try_read(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        """The rows, or ``None`` when the statement is too slow (or the file busy) to run
        on the loop: the caller runs it on the thread instead."""
        now = _wall_clock()
        if sql in self._slow:
            if now < self._slow[sql]:
                return None
            del self._slow[sql]
        self._deadline = _cpu_clock() + self.budget_s
        self._wall_deadline = now + self.wall_s
        self._first_check = now + min(self.budget_s, self.wall_s)
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            code = getattr(error, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_INTERRUPT:
                self._remember_slow(sql, now + _SLOW_FOR_S)
                return None
            if code == sqlite3.SQLITE_BUSY or "database is locked" in str(error):
                return None
            raise

    def _remember_slow(self, sql: str, until: float) -> None:
        self._slow[sql] = until
        if len(self._slow) > _SLOW_STATEMENTS:
            self._slow.popitem(last=False)

    def close(self) -> None:
        self.conn.close()


def open_inline_reader(path: str, functions: Sequence[tuple[str, int, Callable[..., Any]]],
                       *, budget_s: float = INLINE_BUDGET_S) -> InlineReader:
    conn = connect(path)  # the writer's settings: autocommit, usable from the loop
    try:
        # Never wait for a lock on the loop: a busy file sends the read to the thread.
        conn.execute("PRAGMA busy_timeout = 0")
        for name, arity, function in functions:
            conn.create_function(name, arity, function, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return InlineReader(conn, budget_s=budget_s)
