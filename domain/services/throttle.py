"""Failed sign-ins per key, so a password cannot be guessed at the speed of the API.

After ``limit`` failures within ``window`` a key is locked for ``lockout``: further
attempts are refused without checking the password (a right guess during the lockout
learns nothing). ``AccountService`` keys one throttle by email and client address and
another, with a higher limit, by email alone; emails are counted whether or not the
account exists, so the answer never tells which are registered. A success clears the key.

Behind a load balancer the instances share what they count (``ThrottleSharing``): each
tells the others, over the event bus, every failure, success and forgiveness it counts,
so a guesser spreading tries over the instances meets one limit, not one per instance.
Keys are kept and shared as digests: the bus never carries an email or an address.
"""

from __future__ import annotations

import hashlib
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


#: What a throttle tells the other instances: its name, the operation and the key's digest.
Share = Callable[[str, str, str], None]

#: A digest's length in hex characters (``digest``).
DIGEST_CHARS = 32


def digest(key: str, secret: bytes = b"") -> str:
    """What a key is kept and shared as: short whatever its length, and keyed with the
    deployment's ``secret`` when the instances share their counts: an unkeyed digest of an
    email or an address is matched by anyone with a list of them, and forged by anyone
    who may publish on the bus (QA s18)."""
    return hashlib.blake2b(key.encode(), digest_size=DIGEST_CHARS // 2, key=secret
                           ).hexdigest()


class SignInThrottle:
    def __init__(self, clock: Callable[[], datetime], *, limit: int = 5,
                 window: timedelta = timedelta(minutes=15),
                 lockout: timedelta = timedelta(minutes=15), name: str = "") -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.lockout = lockout
        #: Which of a service's throttles this is, for the other instances.
        self.name = name
        #: Told each operation counted here (``ThrottleSharing``); ``None``: kept here.
        self.share: Share | None = None
        #: What keys are digested with (``digest``): set, with ``share``, before use.
        self.secret = b""
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._operations: dict[str, Callable[[str], None]] = {
            "failed": self._failed, "succeeded": self._succeeded, "forgive": self._forgive}

    def locked_for(self, key: str) -> timedelta | None:
        """How long ``key`` stays locked; ``None`` when it may try."""
        key = digest(key, self.secret)
        entry = self._failures.get(key)
        if entry is None or entry.locked_until is None:
            return None
        left = entry.locked_until - self.clock()
        if left <= timedelta(0):
            del self._failures[key]  # served its time: a fresh start
            return None
        return left

    def failed(self, key: str) -> None:
        self._count("failed", digest(key, self.secret))

    def succeeded(self, key: str) -> None:
        self._count("succeeded", digest(key, self.secret))

    def forgive(self, key: str) -> None:
        """Take back the newest failure counted for ``key`` (an attempt counted before its
        check, which then succeeded), lifting a lock that failure set."""
        self._count("forgive", digest(key, self.secret))

    def apply(self, operation: str, key_digest: str) -> None:
        """An operation another instance counted (``share``), for a key's digest; unknown
        operations (a newer instance's) are ignored."""
        counted = self._operations.get(operation)
        if counted is not None:
            counted(key_digest)

    def _count(self, operation: str, key: str) -> None:
        self._operations[operation](key)
        if self.share is not None:
            self.share(self.name, operation, key)

    def _failed(self, key: str) -> None:
        now = self.clock()
        entry = self._failures.pop(key, None) or _Failures()
        entry.times = [t for t in entry.times if now - t < self.window] + [now]
        if len(entry.times) >= self.limit:
            entry.locked_until = now + self.lockout
        self._failures[key] = entry  # most recent last
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def _succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _forgive(self, key: str) -> None:
        entry = self._failures.get(key)
        if entry is None or not entry.times:
            return
        entry.times.pop()
        if entry.locked_until is not None and len(entry.times) < self.limit:
            entry.locked_until = None
