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

With ``max_lockout`` above ``lockout`` the lockouts back off: each one a key earns before
it has been quiet for ``max_lockout`` since its last lockout ended lasts twice the one
before, up to ``max_lockout`` (chargers' password checks, ``charger_sign_ins``); a
guesser who waits out a lockout gets ``limit`` more tries, then a longer wait.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from domain.errors import DomainError, Unauthenticated

#: Keys tracked at most; the least recently failed are forgotten first.
MAX_TRACKED = 100_000


#: Doublings of a lockout at most (``max_lockout`` caps it anyway; this keeps the
#: multiplication small whatever the count of lockouts).
MAX_DOUBLINGS = 32


@dataclass(slots=True)
class _Failures:
    times: list[datetime] = field(default_factory=list)
    locked_until: datetime | None = None
    #: Lockouts in a row (backoff); when the last one ends (``max_lockout`` of quiet
    #: after it forgets them).
    strikes: int = 0
    last_lock_end: datetime | None = None


#: What a throttle tells the other instances: its name, the operation and the key's digest.
Share = Callable[[str, str, str], None]


class Shared(Protocol):
    """What ``ThrottleSharing`` shares across instances: a throttle, or anything counted
    the same way (keys as ``digest``, operations applied by name)."""

    name: str
    share: Share | None
    secret: bytes

    def apply(self, operation: str, key_digest: str) -> None: ...


#: A digest's length in hex characters (``digest``).
DIGEST_CHARS = 32


def digest(key: str, secret: bytes = b"") -> str:
    """What a key is kept and shared as: short whatever its length, and keyed with the
    deployment's ``secret`` (``chargegraph.app.build_services`` keys every instance's):
    an unkeyed digest of an email or an address is matched by anyone with a list of
    them, and forged by anyone who may publish on the bus (QA s18)."""
    return hashlib.blake2b(key.encode(), digest_size=DIGEST_CHARS // 2, key=secret
                           ).hexdigest()


class SignInThrottle:
    def __init__(self, clock: Callable[[], datetime], *, limit: int = 5,
                 window: timedelta = timedelta(minutes=15),
                 lockout: timedelta = timedelta(minutes=15),
                 max_lockout: timedelta | None = None, name: str = "") -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.lockout = lockout
        #: The longest lockout; above ``lockout``, lockouts back off (module docstring).
        self.max_lockout = max(lockout, max_lockout or lockout)
        #: Which of a service's throttles this is, for the other instances.
        self.name = name
        #: Told each operation counted here (``ThrottleSharing``); ``None``: kept here.
        self.share: Share | None = None
        #: What keys are digested with (``digest``): set before use (the deployment's
        #: key, by ``chargegraph.app.build_services``).
        self.secret = b""
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._operations: dict[str, Callable[[str], bool | None]] = {
            "failed": self._failed, "succeeded": self._succeeded, "forgive": self._forgive}

    def locked_for(self, key: str) -> timedelta | None:
        """How long ``key`` stays locked; ``None`` when it may try."""
        key = digest(key, self.secret)
        entry = self._failures.get(key)
        if entry is None or entry.locked_until is None:
            return None
        left = entry.locked_until - self.clock()
        if left <= timedelta(0):
            if not self._backs_off:
                del self._failures[key]  # served its time: a fresh start
            else:  # a fresh count, but the lockouts it earned are remembered
                entry.times, entry.locked_until = [], None
            return None
        return left

    def tracks(self, key: str) -> bool:
        """Whether ``key`` has failures (or a lockout) counted: a success of a key that has
        none need not be counted, nor told to the other instances."""
        return digest(key, self.secret) in self._failures

    def failed(self, key: str) -> bool:
        """Counts a failure; whether it started a lockout (it was not locked before)."""
        return bool(self._count("failed", digest(key, self.secret)))

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

    def _count(self, operation: str, key: str) -> bool | None:
        outcome = self._operations[operation](key)
        if self.share is not None:
            self.share(self.name, operation, key)
        return outcome

    @property
    def _backs_off(self) -> bool:
        return self.max_lockout > self.lockout

    def _failed(self, key: str) -> bool:
        now = self.clock()
        entry = self._failures.pop(key, None) or _Failures()
        if entry.locked_until is not None and entry.locked_until <= now:
            # Served its time (``locked_for`` was not asked since: counts another instance
            # shared): a fresh count, as there.
            entry.times, entry.locked_until = [], None
        if entry.last_lock_end is not None and now - entry.last_lock_end >= self.max_lockout:
            entry.strikes = 0  # quiet long enough since its last lockout: forgiven
        entry.times = [t for t in entry.times if now - t < self.window] + [now]
        started = False
        if len(entry.times) >= self.limit:
            started = entry.locked_until is None
            entry.strikes += started
            entry.locked_until = entry.last_lock_end = now + self._lockout(entry.strikes)
        self._failures[key] = entry  # most recent last
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)
        return started

    def _lockout(self, strikes: int) -> timedelta:
        """The ``strikes``-th lockout in a row: ``lockout``, doubled for each one before it
        when backing off, up to ``max_lockout``."""
        doublings = min(max(strikes - 1, 0), MAX_DOUBLINGS) if self._backs_off else 0
        return min(self.lockout * (2 ** doublings), self.max_lockout)

    def _succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _forgive(self, key: str) -> None:
        entry = self._failures.get(key)
        if entry is None or not entry.times:
            return
        entry.times.pop()
        if entry.locked_until is not None and len(entry.times) < self.limit:
            entry.locked_until = None
            entry.strikes = max(entry.strikes - 1, 0)  # the lockout it set did not happen


class RollingLimit:
    """At most ``limit`` uses of a key within any ``window`` (a rolling window): a use is
    refused while the window ending now holds ``limit`` of them, until the oldest of those
    leaves it (``refused_for``), not for a lockout counted from the last (review s26: one
    copy at 08:00 and nine at 08:59 refused a copy at 09:01 until 09:59, though the hour
    before it held nine). Shared across instances as ``SignInThrottle`` is (``Shared``:
    ``took`` and ``gave_back`` by the key's digest, applied at the time they arrive); each
    key keeps its newest ``2 * limit`` times only, and at most ``MAX_TRACKED`` keys are
    kept, the least recently used forgotten first."""

    def __init__(self, clock: Callable[[], datetime], *, limit: int, window: timedelta,
                 name: str = "") -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.name = name
        self.share: Share | None = None
        self.secret = b""
        self._uses: OrderedDict[str, list[datetime]] = OrderedDict()
        self._operations: dict[str, Callable[[str], None]] = {
            "took": self._took, "gave_back": self._gave_back}

    def refused_for(self, key: str) -> timedelta | None:
        """How long until ``key`` may be used again; ``None``: now."""
        times = self._current(digest(key, self.secret))
        if len(times) < self.limit:
            return None
        return times[-self.limit] + self.window - self.clock()

    def take(self, key: str) -> None:
        """Counts a use of ``key`` now (whether or not it was refused: ask first)."""
        self._count("took", digest(key, self.secret))

    def give_back(self, key: str) -> None:
        """Takes back the newest use counted for ``key`` (it did not happen after all)."""
        self._count("gave_back", digest(key, self.secret))

    def apply(self, operation: str, key_digest: str) -> None:
        """An operation another instance counted (``share``); unknown ones ignored."""
        counted = self._operations.get(operation)
        if counted is not None:
            counted(key_digest)

    def _count(self, operation: str, key: str) -> None:
        self._operations[operation](key)
        if self.share is not None:
            self.share(self.name, operation, key)

    def _current(self, key: str) -> list[datetime]:
        """``key``'s uses within the window ending now (the older ones dropped)."""
        times = self._uses.get(key)
        if times is None:
            return []
        now = self.clock()
        times[:] = [t for t in times if now - t < self.window]
        if not times:
            del self._uses[key]
        return times

    def _took(self, key: str) -> None:
        times = self._current(key)
        self._uses.pop(key, None)
        # Most recent last; bounded, with room for uses given back (or counted by two
        # instances at once) beyond the limit.
        self._uses[key] = [*times, self.clock()][-2 * self.limit:]
        while len(self._uses) > MAX_TRACKED:
            self._uses.popitem(last=False)

    def _gave_back(self, key: str) -> None:
        times = self._current(key)
        if times:
            times.pop()


@contextmanager
def counting_probes(limit: RollingLimit, key: str | None, too_many: str,
                    told: Callable[[DomainError], bool]) -> Iterator[None]:
    """An attempt whose refusal may tell ``key`` (a user) whether something exists (an
    email with an account, a card number): refused ``TOO_MANY_ATTEMPTS`` while ``limit``
    is spent, *before* anything is read (the refusal cannot leak), and counted only
    when its refusal ``told`` them (the ``DomainError`` raised). Attempts already under
    way when it runs out still get their answer (each counted as it ends): a caller
    sending many at once learns at most that many more, and every one is theirs,
    signed in. ``key`` ``None``: not counted (admins: they see everything anyway).
    ``too_many`` says what ran out, the minutes to wait follow it."""
    if key is None:
        yield
        return
    wait = limit.refused_for(key)
    if wait is not None:
        minutes = max(1, round(wait.total_seconds() / 60))
        raise Unauthenticated(f"{too_many}; try again in {minutes} min",
                              code="TOO_MANY_ATTEMPTS")
    try:
        yield
    except DomainError as exc:
        if told(exc):
            limit.take(key)
        raise
