"""Delivering outgoing webhooks: events this instance publishes are POSTed, signed, to the
webhooks that asked for them (``domain/services/webhooks.py`` decides which, and what a
delivery's outcome does to the webhook).

* Each event is delivered by the instance that published it: the dispatcher listens on
  the services' local publish path (``ServiceContext.published``), not on a bus
  subscription, which every instance behind Redis would see.
* ``offer`` never waits (it runs on a charger's message path): events go into a bounded
  queue per webhook, and a full queue drops its oldest event (counted in the webhook's
  ``dropped_events``), never one taken over from a stopped instance. One task per
  webhook with pending events posts them in order.
* A delivery is up to ``tries`` POSTs with backoff between them; before each, the
  webhook and its owner are read again, so a disabled or removed webhook, or a revoked
  owner, gets nothing more.
* Each delivery is stored when it is queued (``PendingDelivery``: its body, delivery
  id, tries made, next try's time, and this instance's id), its tries written as they
  change, and deleted once delivered or given up: writes batched, one store write per
  ``persist_s`` at most (``_persist_loop``), never on ``offer``'s path. The instance
  holds a lease (``InstanceLease``, shared with its OCPP server, which each holds:
  the last to stop releases it) while it runs. A graceful stop (``close``) writes
  what is still queued or waiting for a retry as handed over (no instance), and
  deletes every delivery whose outcome is known (one whose final outcome is being
  written is waited for briefly), the stop bounded by ``HANDOVER_S`` in all; a crash
  leaves them as they were last written, this instance's, until its lease expires.
  Any instance (at its start, and every ``refresh_s``, while its own lease is known
  live: what it claims is written as its own) claims such deliveries, with
  all of its webhook's that no live instance delivers (under the webhook's
  ``DeliveryClaim``, which one instance wins; each row's owner written by a guarded
  update), and resumes them where they were: the same body and delivery id, the tries
  left, the next one when it was due; a full queue never drops one taken over. A crash
  loses what it queued within its last ``persist_s`` (and the write under way), and
  resends a try whose outcome it had not written yet; with the store out of reach,
  deliveries still go out from memory and nothing new is durable until it answers,
  but one stored as this instance's waits for its lease to be live (and, a webhook's
  deliveries going in order, those queued behind it wait with it), and once the lease
  may have lapsed it is posted only if it is still this instance's (``_still_mine``:
  another instance may have taken it over); a new one is stored as its own only while
  the lease lasts the margin (``keep_deliveries``' guard), else kept in memory and
  stored once the lease is renewed.
* ``station.offline`` waits out a grace (``offline_grace``, the setting
  ``CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S``) and ``station.online`` follows only an
  announced one (``domain/services/offline_notices.py``): a disconnect is stored as a
  pending notice, every instance looks for due ones (at start too, so a restart within
  the grace loses none) and the one that wins the notice delivers it; a connection
  settles the outage it ends. Grace 0 delivers both at once, as other events, and
  keeps no notice: a start with 0 closes those a grace left open, telling the offlines
  that still waited for it.
* Events judged by their station's ownership are judged as ordered against the
  station's handovers and removals (``domain.services.live.SightOrder``, the live
  feeds' model): the dispatcher hears them from this instance's publish path and, from
  other instances, over the bus. An event goes by the newer of its own read of the
  station's ownership and the newest heard, by version (``Station.sight``): offered
  after a handover was heard, one that read the station before it is the company's
  that has the station now (QA s26: a disconnect or a plug's report that read the
  station before a handover on another instance and was published after it went to
  the company that had left it), and one whose read is newer than anything heard goes
  by its read, so a handover the dispatcher missed (lost in a Redis outage, or its
  publish failed on the instance that made it) cannot hold the station for the
  company that handed it back (review s26). Sessions' and payments' events go by
  their books.
* Names are resolved here, and a name resolving to a non-public address is refused
  unless private addresses are allowed; the request then goes to the address checked
  (TLS still verifies the name), so the name cannot resolve elsewhere in between.
  Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from chargegraph import __version__
from domain.clock import utcnow
from domain.entities import PendingDelivery, Webhook, WebhookEvent
from domain.events import (
    DomainEvent,
    StationConnectionChanged,
    StationRemoved,
    StationSightChanged,
    WebhookChanged,
)
from domain.ids import new_id
from domain.ports import Change, Delete, WebhookAttempt
from domain.services import Services
from domain.services.live import SightOrder
from domain.services.webhooks import (
    ALLOW_PRIVATE,
    LeaseTooShort,
    public_address,
    webhook_event,
)
from domain.wire import rfc3339
from graph.ids import shown_actor, to_global_id
from pubsub.codec import decode, encode

log = logging.getLogger("chargegraph.webhooks")

#: Tries of one delivery, and the waits between them: about 4 minutes in all (220 s of
#: waits, plus the tries themselves).
TRIES = 5
BACKOFF_S: tuple[float, ...] = (10.0, 30.0, 60.0, 120.0)
#: One POST, the name lookup and connecting included.
TIMEOUT_S = 5.0
#: Events a webhook may have waiting before its oldest are dropped.
QUEUE_SIZE = 1000
#: The enabled webhooks one instance routes (the store's read of them is bounded).
MAX_ROUTED = 10_000
#: Threads for name lookups (each webhook posts one event at a time).
RESOLVER_THREADS = 4
#: How often the enabled webhooks are read again: changes made on another instance
#: reach this one's routing within this time (this instance's own at once).
REFRESH_S = 10.0
#: Of a receiver's answer to a failed delivery, what is kept as its error.
ERROR_BODY_BYTES = 200
#: How often, at most, an instance looks for outages whose offline webhook is due; a
#: quarter of the grace when that is shorter, so a short one is kept about as set.
SWEEP_S = 5.0
#: ...and at least: a grace of a few milliseconds would be a read loop.
MIN_SWEEP_S = 0.05
#: How long a stop waits for the store to take what it hands over: a store that does
#: not answer must not hold the stop. It comes after uvicorn's wait for requests in
#: flight (``CHARGEGRAPH_SHUTDOWN_GRACE_S``), in the app's shutdown: a supervisor's stop
#: timeout needs room for both (README).
HANDOVER_S = 5.0
#: How long queued deliveries, and their tries, gather before one store write stores
#: them (a crash loses what was queued within it: ``docs/performance.md``).
PERSIST_S = 0.05
#: After a failed store write of deliveries, the wait before the next (they still go
#: out from memory meanwhile).
PERSIST_RETRY_S = 2.0
#: The lease this instance holds for its stored deliveries when no OCPP server holds it
#: (``CHARGEGRAPH_INSTANCE_LEASE_SECONDS``): another instance takes them over once it
#: has expired.
LEASE_S = 30.0
#: The share of the lease, from the start of its last renewal, during which this instance
#: counts it live (stores and claims deliveries as its own): what it writes then has a
#: third of the lease left before another instance may take it over (review
#: r27-durable2: counted live to the lease's very end, a row written in its last instant
#: was orphaned as it landed). The renewals, every third of it, keep it so.
LEASE_TRUSTED = 2 / 3
#: While renewing the lease keeps failing (the database out of reach), how often at most
#: it is said again: the first failure is logged with its traceback, the rest as one line
#: with their count at most this often, the recovery as one line.
RENEW_LOG_S = 60.0
#: The types whose events wait for an outage to be settled instead of being queued.
_DEBOUNCED = (WebhookEvent.STATION_OFFLINE.value, WebhookEvent.STATION_ONLINE.value)

#: Event fields holding record ids, and the kind each names: payloads carry the API's
#: global ids, so a receiver can ask ``node(id:)`` for more.
_ID_FIELDS = {"station_id": "station", "session_id": "session", "user_id": "user",
              "vehicle_id": "vehicle", "connector_record_id": "connector",
              "reservation_record_id": "reservation", "payment_record_id": "payment",
              "session_record_id": "session"}
#: The ownership snapshot every event carries for visibility (a reservation's books
#: too), not for receivers.
_INTERNAL = frozenset({"company_id", "owner_id", "at", "books_company_id",
                       "books_station_owner_id",
                       # A command's raw answer (a configuration's values, a DataTransfer's
                       # data) leaves the service nowhere, as the subscription leaves it out.
                       "result",
                       # Which connection is a charger's newest, between instances only.
                       "connection",
                       # Whether the map shows the station: visibility, decided already.
                       "on_map",
                       # The version of that ownership (``Station.sight``): for judging it;
                       # and the build before's number of a handover.
                       "version", "sight",
                       # A removal told to live maps, which no webhook carries.
                       "removed_offline"})


class Refused(Exception):
    """The webhook's host is not to be posted to (it resolves to a non-public address,
    or not at all)."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-ChargeGraph-Signature`` value: HMAC-SHA256 of ``<timestamp>.<body>`` with
    the webhook's secret, as Stripe signs (``t=<unix seconds>,v1=<hex>``). A receiver
    recomputes it and refuses old timestamps (replays)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                      hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


#: Event fields whose receiver name is not their camelCase: a payment's own id and its
#: session's read ``paymentId`` and ``sessionId``, as ``session.ended`` names its session
#: (``…RecordId`` tells the record from an OCPP number only where an event has both: a
#: connector's ``connectorId``, a reservation's ``reservationId``).
_RECEIVER_NAMES = {"payment_record_id": "paymentId", "session_record_id": "sessionId"}


def _camel(name: str) -> str:
    renamed = _RECEIVER_NAMES.get(name)
    if renamed is not None:
        return renamed
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def event_data(event: DomainEvent) -> dict[str, Any]:
    """An event's fields for receivers: camelCase, ids as global ids, instants as the API
    writes them, without the ownership snapshot (who may see it was decided already)."""
    data: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        if field.name in _INTERNAL:
            continue
        value = getattr(event, field.name)
        if field.name == "cp_id" and not value:
            continue  # an event of no charger (a payment's)
        if field.name in _ID_FIELDS and value is not None:
            value = to_global_id(_ID_FIELDS[field.name], value)
        elif field.name == "requested_by":
            value = shown_actor(value)
        elif isinstance(value, datetime):
            value = rfc3339(value)  # as the body's ``at`` and the API write instants
        data[_camel(field.name)] = value
    return data


def payload(event_id: str, kind: str, at: datetime, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": event_id, "type": kind, "at": rfc3339(at), "data": data})


@dataclasses.dataclass(slots=True)
class _Delivery:
    """One event on its way to one webhook. Its ``body`` and ``delivery_id`` are made
    when its first try begins (or came with it, handed over), and stay the same for
    every try, before and after a handover."""

    event: DomainEvent
    kind: str
    event_id: str
    queued_at: datetime
    body: bytes | None = None
    delivery_id: str | None = None
    tries_made: int = 0
    #: When the next try may be made (None: at once).
    due_at: datetime | None = None
    #: Its outcome is final (succeeded, or failed its last try): nothing to hand over.
    settled: bool = False
    #: Taken over from another instance (claimed), so never dropped by a full queue.
    resumed: bool = False
    #: The event as instances carry it between them (``pubsub/codec.py``), as stored.
    encoded: str | None = None
    #: Its ``PendingDelivery``'s id.
    record_id: str = dataclasses.field(default_factory=new_id)
    #: Its record is in the store (written, and not deleted since).
    stored: bool = False
    #: A write storing it is under way or failed: it may have landed (a MongoDB batch
    #: half-written, an answer lost or not come yet), so once over it is deleted too, if
    #: it is there, and a lapse of the lease meanwhile has it read again (``_lapsed``).
    maybe_stored: bool = False
    #: Delivered, given up or dropped: its record goes.
    over: bool = False
    #: Stored as this instance's when its lease may have lapsed since (``_lapsed``):
    #: another instance may have taken it over, read again before it is posted.
    recheck: bool = False

    @property
    def on_record(self) -> bool:
        """Its record is or may be in the store (``stored``, ``maybe_stored``)."""
        return self.stored or self.maybe_stored

    def ended(self, handing_over: bool) -> bool:
        """Whether its record goes: over, or (``handing_over``) settled, its outcome
        final, a stop cutting the rest short."""
        return self.over or (handing_over and self.settled)

    def begun(self) -> tuple[bytes, str]:
        if self.body is None or self.delivery_id is None:
            self.body = payload(self.event_id, self.kind, self.event.at,
                                event_data(self.event))
            self.delivery_id = "dlv_" + uuid.uuid4().hex  # receivers dedupe by it
        return self.body, self.delivery_id

    def handed_over(self, webhook_id: str, instance_id: str | None = None
                    ) -> PendingDelivery:
        """Its record, as ``instance_id``'s (None: handed over)."""
        body, delivery_id = self.begun()  # one still queued gets its body now
        if self.encoded is None:
            self.encoded = encode(self.event).decode()
        return PendingDelivery(id=self.record_id, webhook_id=webhook_id,
                               delivery_id=delivery_id, event_type=self.kind,
                               body=body.decode(), event=self.encoded,
                               tries_made=self.tries_made,
                               due_at=self.due_at or self.queued_at,
                               queued_at=self.queued_at, instance_id=instance_id)


class _Channel:
    """One webhook's pending events and the task posting them."""

    __slots__ = ("current", "dropped", "queue", "task", "webhook_id")

    def __init__(self, webhook_id: str) -> None:
        self.webhook_id = webhook_id
        self.queue: deque[_Delivery] = deque()
        #: The delivery being tried, or waiting for its next try.
        self.current: _Delivery | None = None
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None

    def unfinished(self) -> list[_Delivery]:
        """What a stop hands over: the delivery under way (unless its outcome is final),
        then the queue, in order."""
        current = [self.current] if self.current is not None \
            and not self.current.settled else []
        return [*current, *self.queue]


class WebhookDispatcher:
    """Delivers the events ``services`` publish to the webhooks that asked for them. Also
    the domain's ``WebhookSender`` (``testWebhook``'s ping)."""

    def __init__(self, services: Services, *, allow_private: bool = False,
                 tries: int = TRIES, backoff: Sequence[float] = BACKOFF_S,
                 timeout: float = TIMEOUT_S, queue_size: int = QUEUE_SIZE,
                 refresh_s: float = REFRESH_S, offline_grace: float = 0.0,
                 sweep_s: float | None = None, handover_s: float = HANDOVER_S,
                 instance_id: str | None = None, lease_s: float = LEASE_S,
                 serves_chargers: bool = False, persist_s: float = PERSIST_S,
                 lease_clock: Callable[[], float] | None = None) -> None:
        if tries < 1 or queue_size < 1 or not backoff:
            raise ValueError("tries and queue_size must be positive, backoff not empty")
        if offline_grace < 0:
            raise ValueError("offline_grace must not be negative")
        self.services = services
        self.allow_private = allow_private
        self.tries = tries
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self.queue_size = queue_size
        self.refresh_s = refresh_s
        self.handover_s = handover_s
        #: Which instance this is (its ``InstanceLease``, shared with its OCPP server):
        #: the deliveries it stores are its own until it stops or its lease expires.
        self.instance_id = instance_id or new_id()
        self.lease = timedelta(seconds=lease_s)
        #: The clock the lease's renewals are timed on (seconds, the loop's by default):
        #: a test moves it into the lease's last third, which a loaded machine's sleep
        #: may overshoot.
        self._lease_clock = lease_clock
        self.serves_chargers = serves_chargers
        self.persist_s = persist_s
        #: Deliveries whose record is to be written (stored, updated or deleted) by the
        #: next batch, by record id.
        self._unwritten: dict[str, tuple[str, _Delivery]] = {}
        self._to_write = asyncio.Event()
        self._persister: asyncio.Task[None] | None = None
        #: The batch being written (``close`` waits for it).
        self._writing: asyncio.Task[bool] | None = None
        self._persist_failing = False
        #: The lease guard refuses the batches' new deliveries (logged once, and when
        #: it stops: review s30, a warning every ``PERSIST_RETRY_S`` while it lasted).
        self._persist_refused = False
        self._lease_keeper: asyncio.Task[None] | None = None
        #: Until when (``_lease_now``) this instance's lease is known live, by its last
        #: renewal (``LEASE_TRUSTED`` of it): nothing is stored nor claimed as its own
        #: past it.
        self._lease_until = 0.0
        #: When (``_lease_now``) the lease ends at the latest by this instance's last
        #: renewal: one renewal begun later may follow a lapse (``_lapsed``).
        self._lease_end = 0.0
        #: Renewals failed since the last that worked (0: it works), those not yet
        #: logged, and when (``_lease_now``) they may be said again.
        self._renew_failures = 0
        self._renew_unlogged = 0
        self._next_renew_log = 0.0
        #: How long a charger stays offline before its ``station.offline`` is delivered
        #: (0: at once, and ``station.online`` always).
        self.offline_grace = timedelta(seconds=offline_grace)
        self.sweep_s = sweep_s if sweep_s is not None else max(
            MIN_SWEEP_S, min(SWEEP_S, offline_grace / 4))
        #: Outages being recorded or settled, and due ones being announced: awaited by
        #: ``close`` (a pending notice must be stored before the process stops).
        self._settling: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        #: Webhook ids by the event type they asked for (enabled ones only).
        self._routes: dict[str, tuple[str, ...]] = {}
        self._channels: dict[str, _Channel] = {}
        self._client: httpx.AsyncClient | None = None
        # Name lookups on threads of their own: one whose nameserver never answers holds
        # its thread for the resolver's whole timeout, and on the loop's default pool it
        # would hold what SQLite's checkpoints and the MongoDB driver also need.
        self._resolver = ThreadPoolExecutor(RESOLVER_THREADS,
                                            thread_name_prefix="chargegraph-webhook-dns")
        self._refresher: asyncio.Task[None] | None = None
        #: The refresher's look for handed-over deliveries, left to finish by ``close``
        #: (what it claimed is deleted from the store: it must reach a queue, and so
        #: the handover, not vanish with a cancelled task).
        self._resuming: asyncio.Task[int] | None = None
        #: Set once ``close`` has taken what it hands over: a claim landing after that
        #: puts back what it took instead of queueing it where nobody sends it.
        self._handed_over = False
        #: Route changes made while ``refresh`` reads (None when it does not): each
        #: webhook's id and the event types it is routed for (none: not routed).
        self._meanwhile: list[tuple[str, Sequence[str]]] | None = None
        #: Follows the webhooks changed on any instance (``WebhookChanged``).
        self._follower: asyncio.Task[None] | None = None
        #: The stations' handovers and removals heard so far, in the order heard, which
        #: judge whose every event offered is (``_judged``).
        self.order = SightOrder()
        self._sights: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        # Redirects are not followed: a public receiver could send us on to an
        # internal address after the check.
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        ctx = self.services.ctx
        # Subscribed before the first read: a webhook changed on another instance while
        # it runs is routed by its announcement, not 10 s later by the next read.
        if ctx.bus is not None:
            changes = ctx.bus.subscribe([WebhookChanged.topic])
            self._follower = asyncio.create_task(self._follow(changes),
                                                 name="chargegraph-webhook-changes")
        if ctx.bus is not None:
            # Subscribed before the first event is offered: another instance's handover
            # published from now on orders what this one publishes after hearing it.
            stream = ctx.bus.subscribe([StationSightChanged.topic, StationRemoved.topic])
            self._sights = asyncio.create_task(self._hear_sights(stream),
                                               name="chargegraph-webhook-sights")
        # Held before anything is stored as this instance's: without a live lease its
        # deliveries would be any instance's to take over.
        await self._renew_lease()
        # Its own hold on the lease: an OCPP server sharing it stops first, and its
        # release must not leave this instance's deliveries to others while they are
        # still posted from here (review r27); the last to release it deletes it.
        self.services.instances.hold(self.instance_id)
        self._lease_keeper = asyncio.create_task(self._keep_lease(),
                                                 name="chargegraph-webhook-lease")
        self._persister = asyncio.create_task(self._persist_loop(),
                                              name="chargegraph-webhook-store")
        await self.refresh()
        ctx.published.append(self.offer)
        ctx.committed.append(self._committed)
        self.services.webhooks.sender = self
        # What stopped instances handed over is resumed before this one serves (its own
        # events follow it in each webhook's queue).
        await self.resume_handed_over()
        self._refresher = asyncio.create_task(self._refresh_loop(),
                                              name="chargegraph-webhook-routes")
        if self.offline_grace:
            # Outages due while no instance ran (this one restarting) are announced
            # before this instance serves chargers, whose connections settle them.
            await self.announce_due()
            self._sweeper = asyncio.create_task(self._sweep_loop(),
                                                name="chargegraph-webhook-outages")
        else:
            # The grace was switched back to 0: what waited for it is told now.
            await self.release_held()

    async def close(self) -> None:
        """Stops delivering, and hands over what is still queued or waiting for a retry
        (``resume_handed_over`` on the next instance), within ``handover_s`` in all: a
        claim under way is waited for half of it at most (what it took is handed over
        with the rest), the handover's write gets what is left."""
        self._closed = True
        loop = asyncio.get_running_loop()
        ctx = self.services.ctx
        with contextlib.suppress(ValueError):
            ctx.published.remove(self.offer)
        with contextlib.suppress(ValueError):
            ctx.committed.remove(self._committed)
        if self.services.webhooks.sender is self:
            self.services.webhooks.sender = None
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._settling:
            # The disconnects of this instance's stop are stored as pending outages, for
            # the next start (or another instance) to announce if they last the grace.
            await asyncio.wait(set(self._settling))
        deadline = loop.time() + self.handover_s
        if self._resuming is not None and not self._resuming.done():
            # It stops after its claim, queueing what it took for the handover below;
            # one the store holds longer puts it back itself once it lands.
            await asyncio.wait([self._resuming], timeout=self.handover_s / 2)
        recording = [c.task for c in self._channels.values() if c.task is not None
                     and c.current is not None and c.current.settled]
        if recording:
            # A final outcome (a 200, or the last try failed) being written: its health
            # is worth half of what is left (the drain ends after it: closed).
            await asyncio.wait(recording,
                               timeout=max(0.0, deadline - loop.time()) / 2)
        tasks = [t for t in (self._refresher, self._sweeper, self._follower, self._sights,
                             self._persister, self._lease_keeper,
                             *(c.task for c in self._channels.values())) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for channel in self._channels.values():
            # Review r27: one whose outcome is known but whose write the stop cut is
            # over all the same: its record goes with the handover's write, wherever
            # (whichever batch) it was stored, not left as this instance's for the
            # next one to post again.
            if channel.current is not None and channel.current.settled:
                self._finished(channel.webhook_id, channel.current)
        if self._writing is not None and not self._writing.done():
            # The batch under way: what it stores decides what the handover updates.
            await asyncio.wait([self._writing], timeout=max(0.0, deadline - loop.time()))
        unfinished = [(channel.webhook_id, delivery)
                      for channel in self._channels.values()
                      for delivery in channel.unfinished()]
        self._channels.clear()
        self._handed_over = True
        await self._hand_over(unfinished, max(0.0, deadline - loop.time()))
        await self._release_lease()
        if self._resuming is not None and not self._resuming.done():
            log.warning("a claim of handed-over webhook deliveries is still waiting for "
                        "the store: it puts back what it takes if it lands before the "
                        "process ends")
        if self._client is not None:
            await self._client.aclose()
        # A lookup still waiting on its nameserver is not waited for.
        self._resolver.shutdown(wait=False, cancel_futures=True)

    @property
    def idle(self) -> bool:
        """Nothing waits or is being delivered, and no outage is being recorded or
        settled (tests wait on it; a pending outage waiting out its grace is idle)."""
        return not self._settling and all(c.task is None and not c.queue
                                          for c in self._channels.values()) \
            and self.persisted

    @property
    def persisted(self) -> bool:
        """Every delivery's record is written as it is now: no batch waits and none is
        being written. A batch whose write failed (or waits for the lease) is not: it
        waits for its next try, the store still holding what it held before (QA s29:
        counted as written, ``idle`` held while a delivered one's record was still
        there). Only the stop gives a batch up for good, and says so (``_hand_over``)."""
        return not self._unwritten and (self._writing is None or self._writing.done())

    def queue_lengths(self) -> list[int]:
        """How many events each webhook with a queue has waiting (``/metrics``)."""
        return [len(c.queue) for c in self._channels.values()]

    # ------------------------------------------------------------- routing
    async def refresh(self) -> None:
        """Reads the enabled webhooks again and routes by what they asked for. A change
        made here while the read ran is applied again over it: the read may be older
        (a MongoDB read yields the loop), and a webhook created meanwhile must not miss
        events until the next refresh."""
        self._meanwhile = []
        try:
            found = await self.services.webhooks.active_webhooks(MAX_ROUTED)
            meanwhile = self._meanwhile
        finally:
            self._meanwhile = None
        if len(found) >= MAX_ROUTED:
            log.warning("%d enabled webhooks or more: only the first %d are routed",
                        MAX_ROUTED, MAX_ROUTED)
        routes: dict[str, list[str]] = {}
        for webhook in found:
            for kind in webhook.events:
                routes.setdefault(kind, []).append(webhook.id)
        self._routes = {kind: tuple(ids) for kind, ids in routes.items()}
        for webhook_id, events in meanwhile:
            self._route(webhook_id, events)
        routed = {i for ids in self._routes.values() for i in ids}
        for webhook_id, channel in list(self._channels.items()):
            if webhook_id not in routed and channel.task is None:
                del self._channels[webhook_id]

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("reading the webhooks failed; retrying in %gs", self.refresh_s)
            # An instance stopping while this one runs (scaling down, a rolling deploy
            # whose new instances started first) hands over to whoever looks.
            self._resuming = asyncio.create_task(self.resume_handed_over())
            await asyncio.shield(self._resuming)

    def _committed(self, changes: Sequence[Change]) -> None:
        """A webhook created, edited, disabled or removed here: routed by at once (the
        next event may follow at once); other instances' changes come with ``refresh``."""
        for change in changes:
            if isinstance(change.record, Webhook):
                self._route(change.record.id, _routed_for(
                    change.record, gone=isinstance(change, Delete)))

    async def _follow(self, changes: Any) -> None:
        """Routes by each webhook announced changed (``WebhookChanged``), on whichever
        instance, as stored now (QA s26: one created on another instance got none of
        this instance's events until the next ``refresh``, up to 10 s; an outage that
        began meanwhile never delivered its ``station.offline``). This instance's own
        come back too (routed already by ``_committed``): read again, no harm. Lost
        announcements (a Redis outage) are made up for by ``refresh``."""
        async with contextlib.aclosing(changes):
            async for event in changes:
                if not isinstance(event, WebhookChanged):
                    continue
                try:
                    [webhook] = await self.services.ctx.store.get_many(
                        Webhook, [event.webhook_id])
                except Exception:
                    log.exception("reading webhook %s after its change failed; routed by "
                                  "the next read in %gs", event.webhook_id, self.refresh_s)
                    continue
                self._route(event.webhook_id, _routed_for(webhook, gone=webhook is None))

    def _route(self, webhook_id: str, events: Sequence[str]) -> None:
        """Routes the webhook for ``events`` (none: for nothing)."""
        if self._meanwhile is not None:
            self._meanwhile.append((webhook_id, events))
        routes = {kind: tuple(i for i in ids if i != webhook_id)
                  for kind, ids in self._routes.items()}
        for kind in events:
            routes[kind] = (*routes.get(kind, ()), webhook_id)
        self._routes = routes

    async def _hear_sights(self, stream: Any) -> None:
        """Keeps ``order`` with the handovers and removals published on any instance. One
        it misses (lost in a Redis outage, or its publish failed on the instance that
        made it) leaves nothing wrong for good: each event is judged by the newer of its
        own read and what was heard, by version (``SightOrder``, review s26)."""
        try:
            async for event in stream:
                self.order.read(event)
        finally:
            await stream.aclose()

    def _judged(self, event: DomainEvent) -> DomainEvent | None:
        """``event`` with the ownership of its station as ordered against the handovers
        heard (``SightOrder``); ``None``: the map's news of a station removed before it,
        told to nobody."""
        return self.order.shape(event)

    def _judge_offline(self, event: StationConnectionChanged) -> StationConnectionChanged:
        """``_judged`` for an outage's ``station.offline`` built from a read of its
        station (``OfflineNotices``), which records the ownership it was told to."""
        judged = self.order.owned(event)
        assert isinstance(judged, StationConnectionChanged)
        return judged

    def offer(self, event: Any) -> None:
        """Queues ``event`` for every webhook that asked for its type; never waits.
        Whether each may see it is decided when it is delivered, by the ownership it
        has as judged here, in the order this instance heard of handovers."""
        if self._closed or not isinstance(event, DomainEvent):
            return
        if isinstance(event, StationSightChanged | StationRemoved):
            self.order.shape(event)  # before what this instance publishes next
            return
        if webhook_event(event) is None:
            return  # live meter updates, what passes between instances
        judged = self._judged(event)
        if judged is None:
            return
        event = judged
        if self.offline_grace and isinstance(event, StationConnectionChanged):
            self._debounce(event)
            return
        self._enqueue(event)

    def _enqueue(self, event: DomainEvent) -> None:
        kind = webhook_event(event)
        targets = self._routes.get(kind.value, ()) if kind is not None else ()
        if self._closed or not targets:
            return
        assert kind is not None  # it has targets
        event_id = "evt_" + uuid.uuid4().hex  # the same for every webhook it goes to
        queued_at = utcnow()
        # Built now, once for every webhook: stored as it will be posted.
        body = payload(event_id, kind.value, event.at, event_data(event))
        encoded = encode(event).decode()
        for webhook_id in targets:
            self._queue(webhook_id, _Delivery(
                event, kind.value, event_id, queued_at, body=body,
                delivery_id="dlv_" + uuid.uuid4().hex, encoded=encoded))

    def _queue(self, webhook_id: str, delivery: _Delivery) -> None:
        channel = self._channels.get(webhook_id)
        if channel is None:
            channel = self._channels[webhook_id] = _Channel(webhook_id)
        if len(channel.queue) >= self.queue_size and not delivery.resumed:
            # Full: its oldest event is dropped, never one taken over (the queue may
            # hold more of those than its size; then the new event is dropped).
            channel.dropped += 1
            oldest = next((n for n, d in enumerate(channel.queue) if not d.resumed), None)
            if oldest is None:
                return
            self._finished(webhook_id, channel.queue[oldest])
            del channel.queue[oldest]
        channel.queue.append(delivery)
        if not delivery.stored:
            self._note(webhook_id, delivery)
        if channel.task is None and not self._closed:  # closing: handed over instead
            channel.task = asyncio.get_running_loop().create_task(
                self._drain(channel), name=f"chargegraph-webhook-{webhook_id}")

    # ------------------------------------------------------------- storing
    def _note(self, webhook_id: str, delivery: _Delivery) -> None:
        """``delivery``'s record is to be written as it is now, by the next batch."""
        self._unwritten[delivery.record_id] = (webhook_id, delivery)
        self._to_write.set()

    def _finished(self, webhook_id: str, delivery: _Delivery) -> None:
        """``delivery`` is over (delivered, given up, dropped): its record goes."""
        delivery.over = True
        self._note(webhook_id, delivery)

    async def _persist_loop(self) -> None:
        """Writes what deliveries did, a batch at a time: at most one write per
        ``persist_s``, and one at a time (each batch sees what the one before stored)."""
        while True:
            await self._to_write.wait()
            await asyncio.sleep(self.persist_s)
            self._to_write.clear()
            # Shielded: a stop waits for the write under way instead of cutting it.
            self._writing = asyncio.get_running_loop().create_task(self._persist())
            if not await asyncio.shield(self._writing):
                await asyncio.sleep(PERSIST_RETRY_S)
                self._to_write.set()

    async def _persist(self, *, handing_over: bool = False,
                       unfinished: Sequence[tuple[str, _Delivery]] = ()) -> bool:
        """One write of the deliveries noted since the last (new ones stored, tries
        written, finished ones deleted); ``handing_over``: and ``unfinished`` written as
        handed over. False, with the batch kept for the next, when the store fails."""
        if not handing_over and not await self._lease_live():
            # Review r27: stored as this instance's without a live lease, they were any
            # instance's to take over and post while this one posted them too.
            if not self._persist_failing:
                self._persist_failing = True
                log.warning("this instance holds no live lease: its webhook deliveries "
                            "are not stored until it does (they still go out from "
                            "memory, but not past one stored before, which waits for "
                            "it); trying again every %gs", PERSIST_RETRY_S)
            return False
        batch, self._unwritten = self._unwritten, {}
        mine = self.instance_id
        new: list[_Delivery] = []
        records: dict[str, list[PendingDelivery]] = {"new": [], "progressed": [],
                                                     "over": []}
        kept: dict[str, tuple[str, _Delivery]] = {}
        #: What this write deletes, as decided now: one that ends while the write is
        #: under way (noted again, for the next batch) is judged by what was written,
        #: not by what it is when the write returns.
        deleted: list[_Delivery] = []
        for key, (webhook_id, delivery) in batch.items():
            if delivery.ended(handing_over):
                if delivery.on_record:
                    records["over"].append(delivery.handed_over(webhook_id, mine))
                    kept[key] = (webhook_id, delivery)
                    deleted.append(delivery)
            elif not handing_over:
                owner = mine
                if delivery.stored:
                    records["progressed"].append(delivery.handed_over(webhook_id, owner))
                else:
                    records["new"].append(delivery.handed_over(webhook_id, owner))
                    new.append(delivery)
                kept[key] = (webhook_id, delivery)
        for webhook_id, delivery in unfinished:
            # Handed over: no instance's, any instance's to resume.
            records["progressed" if delivery.stored else "new"].append(
                delivery.handed_over(webhook_id, None))
        # Under way, they may land (and be taken over) before the answer comes: a lapse
        # noticed meanwhile reads them again before their next try (``_lapsed``).
        unsure = {delivery.record_id for delivery in new if not delivery.maybe_stored}
        for delivery in new:
            delivery.maybe_stored = True
        try:
            refused = await self.services.webhooks.keep_deliveries(
                mine, margin=self._margin, **records)
        except Exception as failure:
            if handing_over:
                raise  # given up for good, as the stop says (``_hand_over``)
            if self._handed_over:
                # Written after the stop's handover (which gave up waiting for it):
                # nothing tries it again.
                log.warning("storing %d webhook deliveries failed after this instance "
                            "handed over (%s): given up", len(kept), failure)
                return False
            for key, entry in kept.items():
                self._unwritten.setdefault(key, entry)
            if not self._persist_failing:
                self._persist_failing = True
                log.warning("storing webhook deliveries failed (%s): they still go out "
                            "from memory, but a crash of this instance loses them; "
                            "trying again every %gs", failure, PERSIST_RETRY_S,
                            exc_info=True)
            return False
        # Review r27: a delivery stored by this write that ended meanwhile is stored
        # (its record landed): the next batch, which it is noted for, deletes it.
        not_stored = {record.id for record in refused}
        for delivery in new:
            if delivery.record_id not in not_stored:
                delivery.stored = True
            elif delivery.record_id in unsure:
                delivery.maybe_stored = False  # the guard left nothing of the write
        for delivery in deleted:
            delivery.stored = delivery.maybe_stored = False
        if refused and self._handed_over:
            # Landed after the stop released the lease (which gave up waiting for it):
            # nothing renews it, nor tries these again (review r29).
            log.warning("storing %d webhook deliveries was refused after this instance "
                        "handed over (its lease released): given up", len(refused))
            return False
        if refused:
            # Review s29: the lease did not last the margin, the write landing late: as
            # stored, they would have been another's to claim and post too. Kept in
            # memory (nobody else has them) and stored again once the lease is renewed.
            for key in not_stored:
                self._unwritten.setdefault(key, kept[key])
            self._lease_until = 0.0
            if not self._persist_refused:
                self._persist_refused = True
                log.warning("this instance's lease ended before %d webhook deliveries "
                            "were stored: they go out from memory, stored once it is "
                            "renewed (tried again every %gs)", len(refused),
                            PERSIST_RETRY_S)
            return False
        if self._persist_failing:
            self._persist_failing = False
            log.info("storing webhook deliveries works again")
        if self._persist_refused and not handing_over:
            # Over with any batch the guard took (review s30: only with one storing new
            # deliveries, so refused ones that ended first left it set, and the next
            # refusals unsaid): the refused ones still going were among its new ones,
            # and those over since have nothing left to store.
            self._persist_refused = False
            if new:
                log.info("this instance's lease lasts again: its new webhook deliveries "
                         "are stored")
            else:
                log.info("the webhook deliveries this instance's lease refused to store "
                         "ended first: none is left to store")
        return True

    async def _renew_lease(self) -> bool:
        """Whether the lease was renewed. A failure is logged with its traceback the
        first time, then as one line at most every ``RENEW_LOG_S`` while they go on (the
        keeper and every waiting batch retry within ``PERSIST_RETRY_S``: review
        r27-durable2, a traceback a second during an outage), and the recovery once."""
        began = self._lease_now()
        try:
            lapsed = await self.services.instances.renew(
                self.instance_id, _host_label(), self.lease,
                serves_chargers=self.serves_chargers)
        except Exception as failure:
            self._renew_failures += 1
            now = self._lease_now()
            if self._renew_failures == 1:
                self._next_renew_log = now + RENEW_LOG_S
                log.exception("renewing this instance's lease for its webhook deliveries "
                              "failed (retried within %gs): once it is not known live, "
                              "nothing is stored or claimed as this instance's, and "
                              "another instance may take over what is", PERSIST_RETRY_S)
            else:
                self._renew_unlogged += 1
                if now >= self._next_renew_log:
                    self._next_renew_log = now + RENEW_LOG_S
                    log.warning("renewing this instance's lease for its webhook deliveries "
                                "still fails (%d more failures, the last: %s: %s)",
                                self._renew_unlogged, type(failure).__name__, failure)
                    self._renew_unlogged = 0
            return False
        if lapsed or began >= self._lease_end:
            # No lease, or none renewed by this instance for its whole length (an OCPP
            # server sharing it may have renewed it, or not): what is stored as its own
            # may be another's now.
            self._lapsed()
        self._lease_until = max(self._lease_until,
                                began + self.lease.total_seconds() * LEASE_TRUSTED)
        self._lease_end = max(self._lease_end, began + self.lease.total_seconds())
        if self._renew_failures:
            log.info("renewing this instance's lease for its webhook deliveries works "
                     "again (after %d failures)", self._renew_failures)
            self._renew_failures = self._renew_unlogged = 0
        return True

    def _lapsed(self) -> None:
        """The lease may have lapsed: every delivery stored as this instance's is read
        again before its next try (``_still_mine``)."""
        for channel in self._channels.values():
            for delivery in (channel.current, *channel.queue):
                if delivery is not None and delivery.on_record:
                    delivery.recheck = True

    async def _still_mine(self, delivery: _Delivery) -> bool:
        """Whether ``delivery`` is still this instance's to post (review s29: one
        instance posted what another had taken over once its lease lapsed, a stall or
        the store out of reach, and both posted it). One stored as its own waits for a
        live lease (renewed once past its trusted part: ``_lease_live``); if it may
        have lapsed since, the record is read again, and one another instance took over
        or finished is given up (not posted, its record left to that one). Gone while
        only maybe stored, the write storing it under way, its answer is waited for
        and the record read again: gone once stored, another finished it (review
        s29-hooks3: both posted it). Gone after a write that failed, it is posted: it
        may never have landed, and a batch storing it again would not tell either."""
        if not delivery.on_record:
            return True  # in this instance's memory only: nobody else can take it
        while not await self._lease_live():
            if self._closed:
                return False
            await asyncio.sleep(PERSIST_RETRY_S)  # the keeper tries too meanwhile
        if not delivery.recheck:
            return True
        record = await self.services.webhooks.stored_delivery(delivery.record_id)
        writing = self._writing
        if record is None and not delivery.stored and writing is not None \
                and not writing.done():
            # Landed, taken over and finished, or not landed yet: its answer tells.
            await asyncio.wait([writing])  # not cancelled with this task (a stop)
            record = await self.services.webhooks.stored_delivery(delivery.record_id)
        if (record is None and delivery.stored) or (
                record is not None and record.instance_id != self.instance_id):
            log.info("webhook delivery %s was taken over by another instance while this "
                     "one's lease had lapsed: left to it", delivery.delivery_id)
            delivery.stored = delivery.maybe_stored = False  # its record is not ours
            return False
        delivery.recheck = False
        return True

    @property
    def _margin(self) -> timedelta:
        """What the lease must last past a write of rows as this instance's (a claim, a
        new delivery stored): what it keeps beyond its trusted part, before another
        instance may take them over."""
        return self.lease * (1 - LEASE_TRUSTED)

    def _lease_now(self) -> float:
        if self._lease_clock is not None:
            return self._lease_clock()
        return asyncio.get_running_loop().time()

    async def _lease_live(self) -> bool:
        """Whether the lease is live now, as this instance last renewed it, with a
        margin (``LEASE_TRUSTED``); renewed now if not (its first renewal failed, or the
        store was out of reach past it)."""
        if self._lease_now() < self._lease_until:
            return True
        return await self._renew_lease()

    async def _keep_lease(self) -> None:
        """Renews the lease a few times per lease period: without it, another instance
        takes this one's stored deliveries over (an OCPP server sharing it renews it too;
        either keeps it). A failed renewal is tried again within ``PERSIST_RETRY_S``."""
        period = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            if not await self._renew_lease():
                period = min(self.lease.total_seconds() / 3, PERSIST_RETRY_S)
            else:
                period = self.lease.total_seconds() / 3

    async def _release_lease(self) -> None:
        """At the end of a stop, with the deliveries handed over: this instance's hold
        on the lease let go, and the lease deleted unless an OCPP server sharing it still
        holds it (it stops first, so this is normally the last hold)."""
        try:
            async with asyncio.timeout(self.handover_s):
                await self.services.instances.release(self.instance_id)
        except Exception:
            log.warning("releasing this instance's lease failed; it expires on its own",
                        exc_info=True)

    # ------------------------------------------------------------- handing over
    async def _hand_over(self, unfinished: list[tuple[str, _Delivery]],
                         within: float) -> None:
        """Writes what this stopping instance still had to deliver as handed over, for
        another to resume at once, and what ended since the last batch; a store that does
        not take it ``within`` seconds does not hold the stop (what was stored stays
        this instance's, taken over once its lease expires; what was not is lost)."""
        if not unfinished and not self._unwritten:
            return
        # The stored records of those over, which the write deletes.
        ending = sum(1 for _, delivery in self._unwritten.values()
                     if delivery.ended(True) and delivery.on_record)
        try:
            async with asyncio.timeout(within):
                await self._persist(handing_over=True, unfinished=unfinished)
        except Exception:  # TimeoutError included
            if unfinished:
                log.exception("handing over %d webhook deliveries for the next instance "
                              "failed (given up): those stored are taken over once this "
                              "instance's lease expires, the others are lost",
                              len(unfinished))
            elif ending:
                # Review s30: said as "handing over 0" when only deletes failed.
                log.exception("deleting the records of %d finished webhook deliveries as "
                              "this instance stopped failed (given up): the instance "
                              "that takes them over once this one's lease expires posts "
                              "them again", ending)
            else:
                # Review s30: swallowed unsaid. With nothing to hand over or delete no
                # store call is made, so this is a fault of the code's own: said.
                log.exception("the last write of webhook deliveries as this instance "
                              "stopped failed, with nothing to hand over or delete")
            return
        if unfinished:
            log.info("handed over %d webhook deliveries for the next instance",
                     len(unfinished))

    async def resume_handed_over(self) -> int:
        """Claims the deliveries stopped instances handed over, oldest first, and queues
        each for its webhook where it was (body, delivery id, tries left, next try's
        time); how many. One whose webhook was removed meanwhile is dropped at its try,
        as one whose webhook was disabled, like any queued one. A store failing is
        logged: they stay stored for the next look."""
        resumed = 0
        try:
            # Review r27-durable2: claimed without a live lease, they were written as
            # this instance's and so orphaned at once: another instance claimed and
            # posted them too. Nothing is claimed until the lease is live (as nothing is
            # stored, ``_persist``); checked before each claim, the next look tries again.
            while not self._closed and await self._lease_live() and (
                    claimed := await self.services.webhooks.claim_handed_over(
                        instance_id=self.instance_id, margin=self._margin)) is not None:
                if self._handed_over:
                    # Landed after the stop took what it hands over: nobody would send
                    # these nor hand them over, so they go back to the store.
                    await self._put_back(claimed)
                    break
                unreadable: list[PendingDelivery] = []
                for record in claimed:
                    delivery = _resumed(record)
                    if delivery is not None:
                        self._queue(record.webhook_id, delivery)
                        resumed += 1
                    else:
                        unreadable.append(record)
                if unreadable:  # not left to be claimed again for ever
                    await self.services.webhooks.keep_deliveries(self.instance_id,
                                                                 over=unreadable)
        except LeaseTooShort:
            # Review s29-hooks3: the store's lease ends sooner than this instance trusts
            # it (its wall clock stepped ahead, its row swept): each look would fail so
            # until it is renewed, which the next look (and batch) now does first.
            self._lease_until = 0.0
            log.warning("this instance's lease does not last long enough to claim "
                        "handed-over webhook deliveries; renewed before the next look")
        except Exception:
            log.exception("resuming handed-over webhook deliveries failed; looking again "
                          "in %gs", self.refresh_s)
        if resumed:
            log.info("resumed %d webhook deliveries of an instance that stopped (or "
                     "crashed: its lease expired)", resumed)
        return resumed

    async def _put_back(self, claimed: list[PendingDelivery]) -> None:
        if not claimed:
            return
        try:
            async with asyncio.timeout(self.handover_s):
                # They are this instance's in the store now: handed over again.
                await self.services.webhooks.keep_deliveries(
                    self.instance_id,
                    progressed=[dataclasses.replace(c, instance_id=None) for c in claimed])
        except Exception:
            log.exception("putting back %d handed-over webhook deliveries claimed as "
                          "this instance stopped failed: they may be lost", len(claimed))
            return
        log.info("put back %d handed-over webhook deliveries claimed as this instance "
                 "stopped", len(claimed))

    # ------------------------------------------------------------- outages
    def _debounce(self, event: StationConnectionChanged) -> None:
        """A disconnect is stored as a pending outage (when this instance routes either
        type: without a webhook for them there is nothing to decide), a connection
        settles the outages it ends (always: the outage may have been recorded by an
        instance whose webhooks this one does not know yet)."""
        if event.online:
            self._settle_in_background(self._settle(event))
        elif any(self._routes.get(kind) for kind in _DEBOUNCED):
            self._settle_in_background(self._hold(event))

    def _settle_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _hold(self, event: StationConnectionChanged) -> None:
        try:
            await self.services.offline_notices.hold(event)
        except Exception:
            log.exception("recording %s offline for its webhooks failed", event.cp_id)

    async def _settle(self, event: StationConnectionChanged) -> None:
        try:
            for settled in await self.services.offline_notices.settle(
                    event, self.offline_grace, judge=self._judge_offline):
                self._enqueue(settled)
        except Exception:
            log.exception("settling %s's outage for its webhooks failed", event.cp_id)

    async def announce_due(self) -> None:
        """Delivers the ``station.offline`` of every outage that has lasted the grace and
        that this instance wins (another may be announcing it at the same moment)."""
        notices = self.services.offline_notices
        for notice in await notices.due(self.offline_grace):
            offline = await notices.announce(notice, judge=self._judge_offline)
            if offline is not None:
                self._enqueue(offline)

    async def release_held(self) -> None:
        """With no grace, nothing is held: the outages a grace left open (it was switched
        back to 0) are closed before this instance serves chargers, each charger still
        gone since waiting for the grace getting its ``station.offline`` now, dated at
        its disconnect, so the ``station.online`` its connection delivers follows one.
        Left open, nobody would ever close them (no look, no settling, with no grace)."""
        notices = self.services.offline_notices
        released: set[str] = set()
        while batch := [n for n in await notices.open() if n.id not in released]:
            for notice in batch:
                offline = await notices.release(notice, judge=self._judge_offline)
                released.add(notice.id)  # one another instance keeps moving: not again
                if offline is not None:
                    self._enqueue(offline)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.announce_due()
            except Exception:
                log.exception("announcing outages failed; retrying in %gs", self.sweep_s)

    async def _drain(self, channel: _Channel) -> None:
        try:
            while channel.queue and not self._closed:
                channel.current = delivery = channel.queue.popleft()
                try:
                    await self._deliver(channel, delivery)
                except Exception:
                    log.exception("delivering %s to webhook %s failed", delivery.event_id,
                                  channel.webhook_id)
                # Not on a cancellation (a stop): the delivery under way is handed over.
                channel.current = None
                self._finished(channel.webhook_id, delivery)
        finally:
            channel.task = None

    # ------------------------------------------------------------- delivery
    async def _deliver(self, channel: _Channel, delivery: _Delivery) -> None:
        """One event to one webhook: up to ``tries`` POSTs, each outcome recorded. A
        handed-over delivery goes on from the tries it had made (at least one more)."""
        body, delivery_id = delivery.begun()
        tries = max(self.tries, delivery.tries_made + 1)
        webhooks = self.services.webhooks
        for attempt in range(delivery.tries_made + 1, tries + 1):
            if delivery.due_at is not None:
                wait = (delivery.due_at - utcnow()).total_seconds()
                if wait > 0:
                    await asyncio.sleep(wait)
            # Read again before every try: disabled, removed, or its owner revoked
            # meanwhile means nothing more is sent.
            webhook = await webhooks.deliverable(channel.webhook_id, delivery.event)
            if webhook is None or not await self._still_mine(delivery):
                return
            outcome = await self.post(webhook, delivery.kind, delivery_id, body)
            final = outcome.ok or attempt == tries
            # Counted once posted: a stop while the outcome is written hands over the
            # tries left, or (final) nothing.
            delivery.tries_made, delivery.settled = attempt, final
            if not final:
                delivery.due_at = utcnow() + timedelta(
                    seconds=self.backoff[min(attempt, len(self.backoff)) - 1])
                self._note(channel.webhook_id, delivery)  # a crash resumes the tries left
            dropped, channel.dropped = channel.dropped, 0
            written = await webhooks.record_attempt(webhook, outcome, final=final,
                                                    dropped=dropped)
            if written is None or not written.active:
                for waiting in channel.queue:  # removed or disabled: what waits goes too
                    self._finished(channel.webhook_id, waiting)
                channel.queue.clear()
                return
            if final:
                return

    async def ping(self, webhook: Any) -> WebhookAttempt:
        body = payload("evt_" + uuid.uuid4().hex, "ping", utcnow(), {
            "webhookId": to_global_id("webhook", webhook.id),
            "message": "ChargeGraph webhook test"})
        return await self.post(webhook, "ping", "dlv_" + uuid.uuid4().hex, body)

    async def post(self, webhook: Webhook, kind: str, delivery_id: str, body: bytes
                   ) -> WebhookAttempt:
        """One signed POST of ``body``, the name lookup included in its time; never
        raises for what the receiver (or its nameserver) does."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(webhook, kind, delivery_id, body)
        except TimeoutError:
            return WebhookAttempt(ok=False, status=None,
                                  error=f"no answer within {self.timeout:g} s", at=utcnow())

    async def _post(self, webhook: Webhook, kind: str, delivery_id: str, body: bytes
                    ) -> WebhookAttempt:
        try:
            url, host_header, extensions = await self._target(webhook.url)
        except Refused as refused:
            return WebhookAttempt(ok=False, status=None, error=str(refused), at=utcnow())
        headers = {
            "content-type": "application/json",
            "user-agent": f"ChargeGraph-Webhooks/{__version__}",
            "host": host_header,
            "x-chargegraph-event": kind,
            "x-chargegraph-delivery": delivery_id,
            "x-chargegraph-signature": sign(webhook.secret, int(time.time()), body),
        }
        assert self._client is not None, "start() the dispatcher first"
        try:
            # httpx's timeout bounds each read and write; this bounds the whole exchange,
            # so a receiver dripping its answer a byte at a time cannot hold the queue.
            async with asyncio.timeout(self.timeout), self._client.stream(
                    "POST", url, content=body, headers=headers,
                    extensions=extensions) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return WebhookAttempt(ok=True, status=status, error=None, at=utcnow())
                return WebhookAttempt(ok=False, status=status,
                                      error=await _error_text(response), at=utcnow())
        except (httpx.TimeoutException, TimeoutError):
            error = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as failure:
            error = f"could not post: {type(failure).__name__}"
        return WebhookAttempt(ok=False, status=None, error=error, at=utcnow())

    async def _target(self, url: str) -> tuple[str, str, dict[str, Any]]:
        """The URL to post to, with its host replaced by the address checked, the Host
        header the receiver expects, and the TLS name to verify."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        # ``is None``: port 0, written explicitly, is not the scheme's default (it was
        # posted to 80; such a URL is refused now, but may be stored from before).
        port = parts.port if parts.port is not None \
            else (443 if parts.scheme.lower() == "https" else 80)
        address = await self._address(host, port)
        shown = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{shown}:{parts.port}" if parts.port is not None else shown
        extensions: dict[str, Any] = {}
        if parts.scheme.lower() == "https":
            extensions["sni_hostname"] = host  # TLS verifies the name, not the address
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        return pinned, parts.netloc, extensions

    async def _address(self, host: str, port: int
                       ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                found = await asyncio.get_running_loop().run_in_executor(
                    self._resolver, partial(socket.getaddrinfo, host, port,
                                            type=socket.SOCK_STREAM))
            except OSError:
                raise Refused(f"{host} does not resolve") from None
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0])
                         for info in found]
        if not addresses:
            raise Refused(f"{host} does not resolve")
        if not self.allow_private and not all(public_address(a) for a in addresses):
            # Every address, not only the first: a name with one public and one internal
            # address would otherwise be a way in.
            raise Refused(f"{host} resolves to a loopback, private or reserved address"
                          f"{ALLOW_PRIVATE}")
        return addresses[0]


def _routed_for(webhook: Webhook | None, *, gone: bool) -> Sequence[str]:
    """The event types ``webhook`` is routed for: those it asked for while enabled."""
    if webhook is None or gone or not webhook.active:
        return ()
    return webhook.events


def _resumed(record: PendingDelivery) -> _Delivery | None:
    """A delivery taken over as this instance goes on with it (None, logged, for one
    this version cannot read)."""
    body = record.body.encode()
    try:
        event = decode(record.event)
        event_id = str(orjson.loads(body)["id"])
    except (ValueError, KeyError, TypeError):  # UndecodableEvent, or a body not ours
        log.exception("a handed-over delivery %s to webhook %s cannot be read: dropped",
                      record.delivery_id, record.webhook_id)
        return None
    return _Delivery(event, record.event_type, event_id, record.queued_at, body=body,
                     delivery_id=record.delivery_id, tries_made=record.tries_made,
                     due_at=record.due_at, resumed=True, encoded=record.event,
                     # Claimed as this instance's, it stays stored until it is over.
                     record_id=record.id, stored=record.instance_id is not None)


async def _error_text(response: httpx.Response) -> str:
    """``HTTP <status>`` and the start of the receiver's answer (read no further)."""
    head = b""
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) >= ERROR_BODY_BYTES:
            break
    text = head[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
    text = "".join(c if c.isprintable() else " " for c in text)
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def _host_label() -> str:
    """Which process holds a lease, for an operator reading the store (as the OCPP
    server labels its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"
