"""The ports the domain needs from the outside world. Adapters implement them:
``store/`` the Store, ``pubsub/`` the EventBus, ``chargegraph/`` the PasswordHasher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.aggregation import Group, Metric
from domain.entities import AuditEntry, E, Record
from domain.query import ALL, Filter, Page, PageRequest, Sort


@dataclass(frozen=True, slots=True)
class Insert:
    record: Record


@dataclass(frozen=True, slots=True)
class InsertIfAbsent:
    """Insert unless a record with the same id exists (then do nothing). For telemetry
    with ids derived from its content, so a repeated charger message is a no-op."""

    record: Record


@dataclass(frozen=True, slots=True)
class Update:
    """Replace the stored record with the same id by ``record``; with ``fields``, write
    only those fields (and the update stamps), so a heartbeat's ``last_seen`` cannot undo
    an operator's rename that landed in between. With ``only_if`` (a field and a value,
    ``fields`` required) the write happens only while the stored record still holds that
    value, and is skipped without error otherwise: a charger's live energy must not land
    on a session another instance has just ended (an audit entry of it is an
    ``AuditIfApplied``, skipped with it). With ``required`` as well, a guard that
    no longer holds fails the whole write with ``Conflict`` (code ``CHANGED``): a state
    change two requests raced for (two captures of one payment) happens once.
    ``also_if``: more fields and values the guard holds on, with ``only_if`` (a station's
    handover written on the version of the record read and on the version of who sees it
    read: ``Station.sight``)."""

    record: Record
    fields: frozenset[str] | None = None
    only_if: tuple[str, Any] | None = None
    required: bool = False
    also_if: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # Refused when made, whichever store writes it: checked only where each store
        # read the conditions, an Update with ``also_if`` alone was refused by SQLite and
        # written unguarded by MongoDB, a Delete the other way round (review r26). A
        # plain test: every write of every charger message makes one.
        if self.also_if and self.only_if is None:
            raise ValueError("also_if needs only_if")

    def conditions(self) -> tuple[tuple[str, Any], ...]:
        """Every field and value the guard holds on (``only_if``, then ``also_if``)."""
        return _conditions(self.only_if, self.also_if)


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the stored record with ``record``'s id. With ``only_if`` (a field and a
    value) only while the stored record still holds that value: otherwise, or when it is
    gone already, the whole write fails with ``Conflict`` (code ``CHANGED``), as a
    ``required`` ``Update``'s guard does. A removal judged on the version it read (an
    erasure's cards: ``edits.removal``) must not take one changed since. ``also_if``:
    more fields and values, with ``only_if`` (a station removed as it was read online or
    not, and with the ownership its remover's rights were checked on: ``Station.sight``
    and its company, review r26-handover3)."""

    record: Record
    only_if: tuple[str, Any] | None = None
    also_if: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # Refused when made, whichever store writes it: checked only where each store
        # read the conditions, an Update with ``also_if`` alone was refused by SQLite and
        # written unguarded by MongoDB, a Delete the other way round (review r26). A
        # plain test: every write of every charger message makes one.
        if self.also_if and self.only_if is None:
            raise ValueError("also_if needs only_if")

    def conditions(self) -> tuple[tuple[str, Any], ...]:
        """Every field and value the delete holds on (``only_if``, then ``also_if``)."""
        return _conditions(self.only_if, self.also_if)


def _conditions(only_if: tuple[str, Any] | None, also_if: tuple[tuple[str, Any], ...]
                ) -> tuple[tuple[str, Any], ...]:
    if also_if and only_if is None:
        raise ValueError("also_if needs only_if")
    return () if only_if is None else (only_if, *also_if)


Change = Insert | InsertIfAbsent | Update | Delete


@dataclass(frozen=True, slots=True)
class AuditIfApplied:
    """An audit entry written only if ``change``, an ``Update`` of the same write (that
    very object), applied: one with ``only_if`` and without ``required`` is skipped
    silently when its guard no longer holds, and an entry of it would record a change
    the record never had, its after-image not the before-image of the record's next
    entry (QA: a firmware rollout's ``Requested`` the charger's ``Downloading`` had
    overtaken). Decided inside the write, so the entry stands or goes with its change."""

    entry: AuditEntry
    change: Update


#: What ``Store.write`` appends to the audit log: an entry, or one that depends on its
#: change (``AuditIfApplied``).
Audit = AuditEntry | AuditIfApplied


@dataclass(frozen=True, slots=True)
class Guard:
    """A condition a whole write depends on: records of ``kind`` matching ``where`` exist
    (``exists``), or none do (``exists=False``). Checked inside the write, on the store as
    the write's own changes leave it; one that does not hold fails the whole write with
    ``Conflict`` (code ``CHANGED``), as an ``Update`` that is ``required`` does, and
    nothing of it stays. It writes nothing itself. What a use case checked by a read
    before its write (no session active on a station it removes, an owner who may own
    stations) may have changed by the write on another instance sharing the store: the
    guard makes the check part of the write (``docs/architecture.md``, "Several
    instances on one store").

    ``where`` may be a function making the filter: called when the guard is checked,
    as the write lands, for a condition on the time then (stores know no time of their
    own): a write of rows as an instance's holds on its lease lasting past the write's
    landing, not its start (a slow write landed on a lease that had ended)."""

    kind: type[Record]
    where: Filter | Callable[[], Filter]
    exists: bool = True

    def condition(self) -> Filter:
        """The filter to check now."""
        return self.where() if callable(self.where) else self.where

#: Uniqueness rules every store enforces with a unique index, by entity kind. The name of
#: the rule's first field is what ``UniqueViolation.field`` carries. A record whose rule
#: field may be and is ``None`` is under no rule (SQL's NULLs never clash).
UNIQUE_RULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "user": (("email",),),
    # How people (and ``create-user --company``) tell companies apart: by the name's
    # identity (``Company.name_identity``: "BÄCKEREI X" is "Bäckerei X"), where it has
    # one (a field's ``None`` clashes with nothing, as SQL's NULL), and by the name.
    "company": (("name",), ("name_identity",)),
    "id_tag": (("tag",),),
    "station": (("cp_id",),),
    "connector": (("cp_id", "connector_id"),),
    "session": (("transaction_id",),),
    "reservation": (("reservation_id",),),
    "payment": (("session_id",),),
    # A refresh token is found by its hash: two alike would be one token for two families.
    "refresh_token": (("token_hash",),),
    # What a station's local list holds for a tag is one thing.
    "local_list_entry": (("station_id", "tag"),),
    # A charger's configuration key is one whatever its case (OCPP CiString).
    "configuration_key": (("station_id", "folded_key"),),
}
#: Partial unique rules: (fields, (condition field, value)), held among the records whose
#: condition field has that value (``None``: has none). One ACTIVE session per
#: connector; completed sessions on the same connector are history, not duplicates. A
#: partial rule is reported by its first field, as a rule is; the session's by its
#: connector, which is what is taken.
PARTIAL_UNIQUE_RULES: dict[str, tuple[tuple[tuple[str, ...], tuple[str, str | None]], ...]] = {
    "session": ((("cp_id", "connector_id"), ("state", "ACTIVE")),),
    # Per owner: a family car is registered by each driver who charges it. On the plate's
    # key, not on the plate as entered: "B-MI 2024" and "BMI2024" are one car. Among the
    # cars kept: one removed stays as its sessions' car, and its plate may be added again.
    "vehicle": ((("plate_key", "owner_id"), ("removed_at", None)),),
}


class Store(Protocol):
    """Persistence for every entity kind.

    Reads take a ``where`` filter, which always includes the viewer's scope from
    ``domain.policy``, so visibility is decided inside the same database query.
    """

    #: Whether reads started together overlap: a database over the network answers two
    #: at once. An embedded one whose reads run on the event loop (SQLite) says False,
    #: and callers with several independent reads await them one by one instead of
    #: paying for tasks and loop turns that could not overlap anything.
    overlapping_reads: bool
    #: Whether a read may see a write still in flight, which may yet be rolled back
    #: (MongoDB: no multi-document transactions). False (SQLite): every record read is
    #: committed, and ``get_committed`` of it would only read it again.
    reads_in_flight: bool

    async def start(self) -> None:
        """Open connections, run migrations / create indexes, finish interrupted writes."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the database answers (``health()`` finds nothing wrong)."""

    async def health(self) -> str | None:
        """None when the database answers and can take writes, else why not, in words
        for operators (``/healthz`` shows them): no paths, hosts or credentials."""

    async def get_many(
        self, kind: type[E], ids: Sequence[str], where: Filter = ALL
    ) -> list[E | None]:
        """One query for many ids. The result is aligned with ``ids``: ``None`` where a
        record is missing or does not match ``where``."""

    async def find_one(self, kind: type[E], where: Filter) -> E | None: ...

    async def get_committed(self, kind: type[E], ids: Sequence[str]) -> list[E | None]:
        """``get_many`` as committed: each record as stored once no write still in
        flight wrote it last, ``None`` where none is stored then. A store whose reads
        see only committed writes (SQLite) reads at once; on MongoDB, whose reads see a
        batch in flight (no multi-document transactions), a record such a batch wrote
        (inserted) may yet be rolled back: this waits for that batch to commit or roll
        back, a few seconds at most, and raises ``Conflict`` (code ``CHANGED``) when it
        has not by then. For a read whose record is handed on to be kept (a charger
        given the station it signs in as: review r28-batch)."""

    async def find_page(
        self, kind: type[E], where: Filter, sort: Sequence[Sort], page: PageRequest
    ) -> Page[E]:
        """Keyset pagination in the requested order (``id`` is the final tie-breaker)."""

    async def find_all(
        self, kind: type[E], where: Filter, sort: Sequence[Sort] = (), limit: int = 1000
    ) -> list[E]:
        """A bounded list, for use cases that need a handful of records."""

    async def count(self, kind: type[E], where: Filter) -> int: ...

    async def find_grouped(
        self,
        kind: type[E],
        key_field: str,
        keys: Sequence[Any],
        where: Filter,
        sort: Sequence[Sort],
        limit: int,
    ) -> dict[Any, list[E]]:
        """For each key, the first ``limit`` records with ``key_field == key`` (in ``sort``
        order) — one query for a whole DataLoader batch of nested lists. Keys without
        records are absent from the result."""

    async def count_grouped(
        self, kind: type[E], key_field: str, keys: Sequence[Any], where: Filter
    ) -> dict[Any, int]: ...

    async def write(self, changes: Sequence[Change], audit: Sequence[Audit],
                    guards: Sequence[Guard] = ()) -> None:
        """Apply the changes and append the audit entries, all or nothing, if every one
        of ``guards`` holds once they are applied. An ``AuditIfApplied`` is appended
        only if its change applied (``ValueError`` when its change is not one of
        ``changes``, or is given there more than once).

        Raises ``UniqueViolation`` when a unique rule rejects a change, ``NotFound``
        when an ``Update``/``Delete`` names a missing record and ``Conflict`` (code
        ``CHANGED``) when a guard does not hold; nothing is left half-written.
        """

    async def next_sequence(self, name: str) -> int:
        """Atomically increment and return the named counter (first value 1)."""

    async def sequence_value(self, name: str) -> int:
        """The named counter's value, 0 while it was never incremented; changes nothing
        (a marker is read without writing to a database that may not be ours)."""

    async def scrub(self) -> None:
        """Overwrites what the database's files still hold of records as they were before
        the last writes (an erasure's): old page images of an embedded database. Returns
        once done or, when other readers keep it from finishing now, once it is left to
        try again in the background (owed in the store itself, so that any instance
        finishes it, also after this one stops); never raises for that. A no-op where
        nothing of the kind outlives a write."""

    async def aggregate(self, kind: type[E], where: Filter, group: Sequence[Group],
                        metrics: Mapping[str, Metric]) -> list[dict[str, Any]]:
        """One row per group: keys ``g0``, ``g1``, … (domain values; ``ByTime`` gives int
        bucket keys) and one key per metric (``Count``/``Sum``: numbers, ``Min``/``Max``:
        domain values, ``OverlapSeconds``: float seconds). Computed in the database.
        A record whose ``ByTime`` field is null is in no time bucket: it is left out of
        such an aggregate (not counted in bucket 0 or the last)."""


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class ChargerGateway(Protocol):
    """Commands to connected chargers (implemented by the OCPP bridge). Payloads and
    answers use OCPP 1.6 JSON field names."""

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        """Whether the charger is connected to this instance; with ``newest`` (as
        ``call``'s), by a connection not older than it: an older one was superseded on
        another instance."""
        ...

    def connected(self) -> list[str]:
        """The cpIds of the chargers connected to this instance."""
        ...

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        """The charger's answer. Raises ``ChargerOffline``, ``ChargerTimeout`` or
        ``ChargerError`` (a CALLERROR or a malformed answer). ``newest``: the station's
        newest connection as the store recorded it (``Station.connection``, read for the
        command): a connection here older than it was superseded on another instance,
        whose announcement this one never heard (the bus between instances out), and is
        not sent on (``ChargerUnclaimed``: nothing sent)."""


class PaymentProvider(Protocol):
    """Where money is actually moved (a card acquirer, an invoicing system)."""

    name: str

    async def capture(self, payment: Any) -> str:
        """Collect the payment's amount; returns the provider's reference. Asked again for
        the same payment (a retried or raced request), it must not move money twice:
        the payment's id and the step are the idempotency key."""

    async def refund(self, payment: Any, amount_minor: int, key: str) -> str:
        """Pay ``amount_minor`` of a captured payment back (all or part of what is left);
        returns the provider's reference. ``key`` is this refund's idempotency key, its
        own (claimed in the store before the provider is asked: ``Payment.refund_claims``):
        asked again with the same key (a sweep settling a refund a crash interrupted), it
        must not pay back twice and answers with the first refund's reference; two
        refunds, even of the same amount at the same moment, have two keys. Raises
        ``PaymentDeclined`` when it refuses to pay back (nothing moved: the claim is
        released); any other failure leaves the claim for the sweep."""


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """How one POST to a webhook went: ``ok`` for a 2xx answer; ``status`` None when
    none came (refused address, timeout, connection error), ``error`` then says why."""

    ok: bool
    status: int | None
    error: str | None
    at: datetime


class WebhookSender(Protocol):
    """Posts to webhooks (implemented beside the app, ``chargegraph/webhooks.py``)."""

    async def ping(self, webhook: Any) -> WebhookAttempt:
        """One signed ``ping`` delivery, at once, without retries."""


class EventBus(Protocol):
    """Delivery of domain events (``domain.events``) after their change committed."""

    async def publish(self, event: Any) -> None: ...

    def subscribe(self, topics: Sequence[str]) -> AsyncIterator[Any]: ...

    @property
    def receiving(self) -> bool:
        """Whether events other instances publish reach this process now: False while
        the bus between instances is out (its return is told to every subscriber as an
        interrupted ``EventsDropped``); always True in one process."""
        ...


class Metrics(Protocol):
    """Counters the two doors increment (implemented by ``chargegraph/metrics.py``, which
    renders them at ``/metrics``). Each call is O(1) and must never fail or wait: they run
    on the OCPP hot path. Label values come from small fixed sets, never from what a
    client may invent, so a scrape stays a bounded size."""

    def ocpp_message(self, action: str, ok: bool) -> None:
        """A charger's CALL answered: with a CALLRESULT (``ok``) or a CALLERROR."""

    def charger_command(self, action: str, outcome: str) -> None:
        """A command sent to a charger ended: ``ok`` or the failure's kind."""

    def graphql_request(self, operation: str, outcome: str, transport: str = "http"
                        ) -> None:
        """A GraphQL request answered: ``query``/``mutation``/``subscription``/``unknown``
        and ``ok``, ``error`` (executed, with errors) or ``invalid`` (refused before
        execution); ``transport`` ``http``, or ``ws`` for an operation sent over a
        websocket (a subscription counted once, as it starts)."""

    def export_request(self, export: str, outcome: str) -> None:
        """A CSV export over HTTP ended: its name (``sessions``, ``payments``, ``energy``,
        ``audit``) and ``ok`` (every row sent), ``invalid`` (refused: unauthenticated,
        bad parameters), ``error`` (failed, before or while streaming) or ``aborted``
        (the client went away)."""


class NoMetrics:
    """Counts nothing: the doors' default when nothing is wired (tests, benchmarks), so
    their hot paths call a method instead of testing for ``None``."""

    __slots__ = ()

    def ocpp_message(self, action: str, ok: bool) -> None:
        return None

    def charger_command(self, action: str, outcome: str) -> None:
        return None

    def graphql_request(self, operation: str, outcome: str, transport: str = "http"
                        ) -> None:
        return None

    def export_request(self, export: str, outcome: str) -> None:
        return None


NO_METRICS: Metrics = NoMetrics()
