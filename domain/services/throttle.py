"""Failed sign-ins per key, so a password cannot be guessed at the speed of the API.

After ``limit`` failures within ``window`` a key is locked for ``lockout``: further
attempts are refused without checking the password (a right guess during the lockout
learns nothing). ``AccountService`` keys one throttle by email and client address and
another, with a higher limit, by email alone; emails are counted whether or not the
account exists, so the answer never tells which are registered. A success clears the key.

Per process: behind a load balancer each instance counts its own attempts, so the limit
is per instance (still bounding a guesser to a handful of tries per lockout each).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Keys tracked at most; the least recently failed are forgotten first.
MAX_TRACKED = 100_000


@dataclass(slots=True)
class _Failures:
    times: list[datetime] = field(default_factory=list)
    locked_until: datetime | None = None


class SignInThrottle:
    def __init__(self, clock: Callable[[], datetime], *, limit: int = 5,
                 window: timedelta = timedelta(minutes=15),
                 lockout: timedelta = timedelta(minutes=15)) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def locked_for(self, key: str) -> timedelta | None:
        """How long ``key`` stays locked; ``None`` when it may try."""
        entry = self._failures.get(key)
        if entry is None or entry.locked_until is None:
            return None
        left = entry.locked_until - self.clock()
        if left <= timedelta(0):
            del self._failures[key]  # served its time: a fresh start
            return None
        return left

    def failed(self, key: str) -> None:
        now = self.clock()
        entry = self._failures.pop(key, None) or _Failures()
        entry.times = [t for t in entry.times if now - t < self.window] + [now]
        if len(entry.times) >= self.limit:
            entry.locked_until = now + self.lockout
        self._failures[key] = entry  # most recent last
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def forgive(self, key: str) -> None:
        """Take back the newest failure counted for ``key`` (an attempt counted before its
        check, which then succeeded), lifting a lock that failure set."""
        entry = self._failures.get(key)
        if entry is None or not entry.times:
            return
        entry.times.pop()
        if entry.locked_until is not None and len(entry.times) < self.limit:
            entry.locked_until = None
