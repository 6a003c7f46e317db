"""Failed password checks of chargers' handshakes (HTTP Basic, OCPP security profiles 1
and 2), so a station's password cannot be guessed at the speed of the network (QA s22:
6,000 guesses in 2.3 s once the charger had connected once).

Two limits, as for people's sign-ins (``AccountService``), neither of which lets a
guesser lock the real charger out at an address it is known to pass from (what they
cannot protect is in docs/architecture.md: a station no charger passed yet on this
instance, a new address, a spoofable ``X-Forwarded-For``):

- per station and client address (``ChargerSignInLimits.per_address`` failures within
  ``window``): that address is refused, unchecked, for ``lockout``, twice as long for
  each further lockout up to ``max_lockout`` (``SignInThrottle``'s backoff). A charger
  connecting from its own address is not held up by failures counted for others;
- per station across all addresses (``per_station``, a guesser with many addresses):
  while it is locked only the addresses the station's charger has passed the check from
  (``KnownAddresses``) are checked; the others are refused unchecked.

The keys carry the station's password hash: a new password (``updateStation``) starts
every count of the station afresh, so a charger locked out for a password it had not yet
been given is let in as soon as it has it (and its retries with the former one are not
counted against the new one: ``OcppServer._former_password``). A right password clears
its address's count, never the station's (the real charger reconnecting must not reset
a guesser's budget).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from functools import lru_cache

from domain.services.accounts import client_key
from domain.services.throttle import MAX_TRACKED, RollingLimit, Share, SignInThrottle, digest

#: How long an address a charger passed the check from stays known for its station.
KNOWN_FOR = timedelta(days=30)
#: A known address passing again is told to the other instances at most this often (a
#: charger reconnecting every minute must not cost an event every time).
RETOLD_AFTER = timedelta(days=1)
#: The window of the budget of unverified password checks per client address (an IPv6
#: one by its /64), across all cpIds, real or made up (``ChargerSignIns.checks``), when
#: it is on (``ChargerSignInLimits.checks_per_minute``, ``Settings.charger_checks_per_minute``):
#: each check is counted as it is started and given back when its password is found
#: right, so a site's chargers reconnecting with their own passwords hold only the checks
#: under way, while a scan from there, one guess per cpId, which no per-cpId count ever
#: stops, gets that many checks a minute, then 429 unchecked. Off by default (review
#: r26-security5): one client behind a carrier's CGNAT address spent that address's budget
#: as fast as it freed and kept every restarted charger behind the address out; the
#: per-address bound on pending checks (``OcppServer``'s queue) bounds a scan's CPU.
CHECKS_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ChargerSignInLimits:
    """``Settings.ocpp_password_*``: see the module docstring."""

    per_address: int = 5
    per_station: int = 20
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=1)
    max_lockout: timedelta = timedelta(hours=1)
    #: Unverified password checks per client address a minute (``CHECKS_WINDOW``);
    #: 0: no budget (the default).
    checks_per_minute: int = 0


class Limit(Enum):
    """Which limit a failure reached (``ChargerSignIns.failed``)."""

    ADDRESS = "address"
    STATION = "station"


@dataclass(frozen=True, slots=True)
class Lockout:
    """A lockout a failure started, and how long it lasts."""

    limit: Limit
    lasts: timedelta


class KnownAddresses:
    """(station, address) pairs a charger passed the password check from within
    ``KNOWN_FOR``, as digests (shared across instances like a throttle's counts)."""

    def __init__(self, clock: Callable[[], datetime], name: str) -> None:
        self.clock = clock
        self.name = name
        self.share: Share | None = None
        self.secret = b""
        self._passed: OrderedDict[str, datetime] = OrderedDict()  # digest → last passed

    def knows(self, pair: str) -> bool:
        passed = self._passed.get(digest(pair, self.secret))
        return passed is not None and self.clock() - passed < KNOWN_FOR

    def passed(self, pair: str) -> str | None:
        """Remembers that the pair passed now; its digest when that is news to tell (and
        to store: ``ChargingService.charger_passed``), at most once per ``RETOLD_AFTER``."""
        key = digest(pair, self.secret)
        last = self._passed.get(key)
        if last is not None and self.clock() - last < RETOLD_AFTER:
            return None  # known and fresh: nothing new to remember or tell
        self._remember(key)
        if self.share is not None:
            self.share(self.name, "passed", key)
        return key

    def apply(self, operation: str, key_digest: str) -> None:
        """What another instance told (``ThrottleSharing``); unknown operations ignored."""
        if operation == "passed":
            self._remember(key_digest)
        elif operation == "forgot":
            self._passed.pop(key_digest, None)

    def forget(self, keys: Iterable[str]) -> None:
        """A removed station's pairs (their digests, as stored: ``known_addresses.forget``)
        dropped here and told to the other instances, which would otherwise take the
        station's former addresses as its charger's for up to ``KNOWN_FOR``, a station
        made again with its cpId included (only an instance started since read none)."""
        for key in keys:
            self._passed.pop(key, None)
            if self.share is not None:
                self.share(self.name, "forgot", key)

    def load(self, stored: Iterable[tuple[str, datetime]]) -> None:
        """Pairs (digest, when last passed) an instance kept in the store, newest first
        (its pages as they are read), remembered as of then: an instance starting after
        the ones that saw them pass knows them too (told to nobody: each instance loads
        them). Each is older than the pairs remembered already, told over the bus since
        the instance subscribed (before the load): placed before them, the oldest end
        that a full table forgets first, and none once the table is full. A pair told
        so keeps its later time: the stored one would end it up to a day early (review
        s31)."""
        for key, passed_at in stored:
            known = self._passed.get(key)
            if known is not None:
                if known < passed_at:
                    self._passed[key] = passed_at  # its place kept
                continue
            if len(self._passed) >= MAX_TRACKED:
                return
            self._passed[key] = passed_at
            self._passed.move_to_end(key, last=False)  # the oldest end

    def _remember(self, key: str) -> None:
        self._passed.pop(key, None)
        self._passed[key] = self.clock()  # most recent last
        while len(self._passed) > MAX_TRACKED:
            self._passed.popitem(last=False)


class ChargerSignIns:
    def __init__(self, clock: Callable[[], datetime],
                 limits: ChargerSignInLimits = ChargerSignInLimits(), *,
                 for_unknown: bool = False) -> None:
        self.limits = limits
        prefix = "unknown_charger" if for_unknown else "charger"
        self.by_address = SignInThrottle(
            clock, limit=limits.per_address, window=limits.window, lockout=limits.lockout,
            max_lockout=limits.max_lockout, name=f"{prefix}_address")
        self.by_station = SignInThrottle(
            clock, limit=limits.per_station, window=limits.window, lockout=limits.lockout,
            max_lockout=limits.max_lockout, name=f"{prefix}_station")
        self.known = KnownAddresses(clock, name=f"{prefix}_known")
        #: Where the password checks of cpIds with no station are counted
        #: (``OcppServer._decoy``), by the same limits: tables of their own, each bounded
        #: as these are, so a scan of made-up ids never pushes a real station's counts
        #: out; shared across instances as these are (``shared``), so a lockout reads
        #: the same for a made-up id as for a real one behind a load balancer (review
        #: s26: kept per instance, 20 guesses over two instances locked a real station
        #: and not a made-up one). ``None`` in that table itself.
        self.unknown: ChargerSignIns | None = None if for_unknown else ChargerSignIns(
            clock, limits, for_unknown=True)
        #: Unverified password checks per client address, across cpIds (one budget for a
        #: real cpId's and a made-up one's: ``limits.checks_per_minute``, 0: none);
        #: shared across instances as the counts are. Unused in the made-up ids' table.
        self.checks_on = limits.checks_per_minute > 0
        self.checks = RollingLimit(clock, limit=max(1, limits.checks_per_minute),
                                   window=CHECKS_WINDOW, name=f"{prefix}_checks")

    @property
    def shared(self) -> list[SignInThrottle | KnownAddresses | RollingLimit]:
        """What the instances share (``ThrottleSharing``): the unknown ids' tables too
        (never a known address: no charger passes as one)."""
        if self.unknown is None:
            return [self.by_address, self.by_station]
        return [self.by_address, self.by_station, self.known, self.checks,
                *self.unknown.shared]

    def checks_refused_for(self, address: str) -> timedelta | None:
        """How long ``address`` is refused password checks (its budget of unverified
        ones spent, ``ChargerSignInLimits.checks_per_minute``); ``None``: it may have
        one (always, with no budget)."""
        if not self.checks_on:
            return None
        return self.checks.refused_for(address_key(address))

    def check_started(self, address: str) -> None:
        """Counts a password check started for ``address`` against its budget (if any)."""
        if self.checks_on:
            self.checks.take(address_key(address))

    def check_given_back(self, address: str) -> None:
        """A check counted for ``address`` that is not to count: its password was right,
        or it was never done (its server stopped)."""
        if self.checks_on:
            self.checks.give_back(address_key(address))

    def lockout(self, cp_id: str, password_hash: str, address: str) -> Lockout | None:
        """The lockout refusing ``address`` (unchecked) this station's password, and
        which limit set it (the refusal's log line says which, QA s31); ``None``: check
        it."""
        client = address_key(address)
        station, pair = _keys(cp_id, password_hash, client)
        locked = self.by_address.locked_for(pair)
        if locked is not None:
            return Lockout(Limit.ADDRESS, locked)
        locked = self.by_station.locked_for(station)
        if locked is not None and not self.passed_from(cp_id, address):
            return Lockout(Limit.STATION, locked)
        return None

    def passed_from(self, cp_id: str, address: str) -> bool:
        """Whether the station's charger passed the check from ``address`` (an IPv6 one by
        its /64) within ``KNOWN_FOR``, here or on another instance (``KnownAddresses``)."""
        return self.known.knows(_known_key(cp_id, address_key(address)))

    def failed(self, cp_id: str, password_hash: str, address: str) -> list[Lockout]:
        """Counts a wrong password; the lockouts it started (each is logged once)."""
        station, pair = _keys(cp_id, password_hash, address_key(address))
        started = []
        for limit, throttle, key in ((Limit.ADDRESS, self.by_address, pair),
                                     (Limit.STATION, self.by_station, station)):
            if throttle.failed(key):
                started.append(Lockout(limit, throttle.locked_for(key) or timedelta(0)))
        return started

    def forgive(self, cp_id: str, password_hash: str, address: str) -> None:
        """Takes back a failure counted as its password arrived (``failed``), found right
        by its check since, lifting a lockout that count set (``OcppServer._password_ok``
        counts every password it has to check before checking it)."""
        station, pair = _keys(cp_id, password_hash, address_key(address))
        self.by_address.forgive(pair)
        self.by_station.forgive(station)

    def succeeded(self, cp_id: str, password_hash: str, address: str) -> str | None:
        """The right password: its address's count is cleared (only counted when there is
        one: the connection-density path stays a few digests and lookups) and the address
        is known for the station; the known pair's digest when that is news
        (``KnownAddresses.passed``)."""
        client = address_key(address)
        _, pair = _keys(cp_id, password_hash, client)
        if self.by_address.tracks(pair):
            self.by_address.succeeded(pair)
        return self.known.passed(_known_key(cp_id, client))


@lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """What the limits count an address as: ``client_key`` (an IPv6 address by its /64),
    cached: parsing an address costs more than the rest of a right password's counting,
    and chargers reconnect from the same."""
    return client_key(address) or ""


def _keys(cp_id: str, password_hash: str, client: str) -> tuple[str, str]:
    """The station's key and the (station, client) key, both of this password."""
    station = f"{cp_id}\n{password_hash}"
    return station, f"{station}\n{client}"


def _known_key(cp_id: str, client: str) -> str:
    """Known addresses outlive a password change: a station's charger given a new
    password still connects from where it did."""
    return f"{cp_id}\n{client}"
