"""Delivering outgoing webhooks: events this instance publishes are POSTed, signed, to the
webhooks that asked for them (``domain/services/webhooks.py`` decides which, and what a
delivery's outcome does to the webhook).

* Each event is delivered by the instance that published it: the dispatcher listens on
  the services' local publish path (``ServiceContext.published``), not on a bus
  subscription, which every instance behind Redis would see.
* ``offer`` never waits (it runs on a charger's message path): events go into a bounded
  queue per webhook, and a full queue drops its oldest event (counted in the webhook's
  ``dropped_events``). One task per webhook with pending events posts them in order.
* A delivery is up to ``tries`` POSTs with backoff between them; before each, the
  webhook and its owner are read again, so a disabled or removed webhook, or a revoked
  owner, gets nothing more.
* ``station.offline`` waits out a grace (``offline_grace``, the setting
  ``CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S``) and ``station.online`` follows only an
  announced one (``domain/services/offline_notices.py``): a disconnect is stored as a
  pending notice, every instance looks for due ones (at start too, so a restart within
  the grace loses none) and the one that wins the notice delivers it; a connection
  settles the outage it ends. Grace 0 delivers both at once, as other events, and
  keeps no notice: a start with 0 closes those a grace left open, telling the offlines
  that still waited for it.
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
import socket
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from chargegraph import __version__
from domain.clock import utcnow
from domain.entities import Webhook, WebhookEvent
from domain.events import DomainEvent, StationConnectionChanged
from domain.ids import is_id
from domain.ports import Change, Delete, WebhookAttempt
from domain.services import Services
from domain.services.webhooks import ALLOW_PRIVATE, public_address, webhook_event
from domain.wire import rfc3339
from graph.ids import to_global_id

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
                       "on_map"})


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
        elif field.name == "requested_by" and is_id(value):
            value = to_global_id("user", value)  # else an actor: system, ocpp:<cpId>
        elif isinstance(value, datetime):
            value = rfc3339(value)  # as the body's ``at`` and the API write instants
        data[_camel(field.name)] = value
    return data


def payload(event_id: str, kind: str, at: datetime, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": event_id, "type": kind, "at": rfc3339(at), "data": data})


class _Channel:
    """One webhook's pending events and the task posting them."""

    __slots__ = ("dropped", "queue", "task", "webhook_id")

    def __init__(self, webhook_id: str) -> None:
        self.webhook_id = webhook_id
        self.queue: deque[tuple[str, DomainEvent]] = deque()
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None


class WebhookDispatcher:
    """Delivers the events ``services`` publish to the webhooks that asked for them. Also
    the domain's ``WebhookSender`` (``testWebhook``'s ping)."""

    def __init__(self, services: Services, *, allow_private: bool = False,
                 tries: int = TRIES, backoff: Sequence[float] = BACKOFF_S,
                 timeout: float = TIMEOUT_S, queue_size: int = QUEUE_SIZE,
                 refresh_s: float = REFRESH_S, offline_grace: float = 0.0,
                 sweep_s: float | None = None) -> None:
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
        #: Route changes made while ``refresh`` reads (None when it does not).
        self._meanwhile: list[tuple[Webhook, bool]] | None = None
        self._closed = False

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        # Redirects are not followed: a public receiver could send us on to an
        # internal address after the check.
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        await self.refresh()
        ctx = self.services.ctx
        ctx.published.append(self.offer)
        ctx.committed.append(self._committed)
        self.services.webhooks.sender = self
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
        """Stops delivering: events still queued are lost (delivery is at most once)."""
        self._closed = True
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
        tasks = [t for t in (self._refresher, self._sweeper,
                             *(c.task for c in self._channels.values())) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._channels.clear()
        if self._client is not None:
            await self._client.aclose()
        # A lookup still waiting on its nameserver is not waited for.
        self._resolver.shutdown(wait=False, cancel_futures=True)

    @property
    def idle(self) -> bool:
        """Nothing waits or is being delivered, and no outage is being recorded or
        settled (tests wait on it; a pending outage waiting out its grace is idle)."""
        return not self._settling and all(c.task is None and not c.queue
                                          for c in self._channels.values())

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
        for webhook, gone in meanwhile:
            self._route(webhook, gone=gone)
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

    def _committed(self, changes: Sequence[Change]) -> None:
        """A webhook created, edited, disabled or removed here: routed by at once (the
        next event may follow at once); other instances' changes come with ``refresh``."""
        for change in changes:
            if isinstance(change.record, Webhook):
                self._route(change.record, gone=isinstance(change, Delete))

    def _route(self, webhook: Webhook, *, gone: bool) -> None:
        if self._meanwhile is not None:
            self._meanwhile.append((webhook, gone))
        routes = {kind: tuple(i for i in ids if i != webhook.id)
                  for kind, ids in self._routes.items()}
        if webhook.active and not gone:
            for kind in webhook.events:
                routes[kind] = (*routes.get(kind, ()), webhook.id)
        self._routes = routes

    def offer(self, event: Any) -> None:
        """Queues ``event`` for every webhook that asked for its type; never waits.
        Whether each may see it is decided when it is delivered."""
        if self._closed or not isinstance(event, DomainEvent):
            return
        if self.offline_grace and isinstance(event, StationConnectionChanged):
            self._debounce(event)
            return
        self._enqueue(event)

    def _enqueue(self, event: DomainEvent) -> None:
        kind = webhook_event(event)
        targets = self._routes.get(kind.value, ()) if kind is not None else ()
        if self._closed or not targets:
            return
        event_id = "evt_" + uuid.uuid4().hex  # the same for every webhook it goes to
        for webhook_id in targets:
            channel = self._channels.get(webhook_id)
            if channel is None:
                channel = self._channels[webhook_id] = _Channel(webhook_id)
            if len(channel.queue) >= self.queue_size:
                channel.queue.popleft()
                channel.dropped += 1
            channel.queue.append((event_id, event))
            if channel.task is None:
                channel.task = asyncio.get_running_loop().create_task(
                    self._drain(channel), name=f"chargegraph-webhook-{webhook_id}")

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
            for settled in await self.services.offline_notices.settle(event,
                                                                      self.offline_grace):
                self._enqueue(settled)
        except Exception:
            log.exception("settling %s's outage for its webhooks failed", event.cp_id)

    async def announce_due(self) -> None:
        """Delivers the ``station.offline`` of every outage that has lasted the grace and
        that this instance wins (another may be announcing it at the same moment)."""
        notices = self.services.offline_notices
        for notice in await notices.due(self.offline_grace):
            offline = await notices.announce(notice)
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
                offline = await notices.release(notice)
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
                event_id, event = channel.queue.popleft()
                try:
                    await self._deliver(channel, event_id, event)
                except Exception:
                    log.exception("delivering %s to webhook %s failed", event_id,
                                  channel.webhook_id)
        finally:
            channel.task = None

    # ------------------------------------------------------------- delivery
    async def _deliver(self, channel: _Channel, event_id: str, event: DomainEvent) -> None:
        """One event to one webhook: up to ``tries`` POSTs, each outcome recorded."""
        kind = webhook_event(event)
        assert kind is not None  # routed by it
        body = payload(event_id, kind.value, event.at, event_data(event))
        delivery_id = "dlv_" + uuid.uuid4().hex  # the same for each try: receivers dedupe
        webhooks = self.services.webhooks
        for attempt in range(1, self.tries + 1):
            # Read again before every try: disabled, removed, or its owner revoked
            # meanwhile means nothing more is sent.
            webhook = await webhooks.deliverable(channel.webhook_id, event)
            if webhook is None:
                return
            outcome = await self.post(webhook, kind.value, delivery_id, body)
            final = outcome.ok or attempt == self.tries
            dropped, channel.dropped = channel.dropped, 0
            written = await webhooks.record_attempt(webhook, outcome, final=final,
                                                    dropped=dropped)
            if written is None or not written.active:
                channel.queue.clear()  # removed or disabled: what waits goes too
                return
            if final:
                return
            await asyncio.sleep(self.backoff[min(attempt, len(self.backoff)) - 1])

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
