"""Events between ChargeGraph instances through Redis pub/sub.

One Redis subscription per process, not one per subscriber: a single listener task holds
the only pub/sub connection, subscribed to the channels of every topic, and fans each
event out locally through a ``MemoryEventBus`` (bounded queues, drop-oldest, the same
``EventsDropped`` contract). Events this process publishes come back through Redis as
well, so every instance and every subscriber sees one order: the server's.

Redis pub/sub is at-most-once: events published while the listener is disconnected are
lost, and nobody can count them. So when the connection breaks, and again when it is
back, every local subscriber gets ``EventsDropped(0, interrupted=True)`` at once: whoever
shows live state reads it afresh (twice, so the second read sees what the outage hid).
Meanwhile this process's own events reach its own subscribers directly (``publish``).
The listener reconnects on its own, with backoff, and logs both the loss and the recovery.

Not every loss is told: an event whose PUBLISH fails here (this process's own link to
Redis drops or times out: ``publish`` raises, or a publish tried in the background
fails) is lost to the other instances, whose subscriptions never broke: they get no
marker. So the markers tell a client to read again; nothing that must be right for
good rests on them (live feeds and webhooks judge ownership by the stations' versions,
``domain.services.live.SightOrder``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.events import EVENT_TYPES, DomainEvent
from pubsub.codec import UndecodableEvent, decode, encode
from pubsub.memory import DEFAULT_QUEUE_SIZE, EventStream, MemoryEventBus

log = logging.getLogger("chargegraph.pubsub")

CHANNEL_PREFIX = "chargegraph:"
MIN_BACKOFF_S = 0.1
#: Publishes in flight at once while the listener is down; more are not tried.
MAX_BACKGROUND_PUBLISHES = 64
#: The least time between two log lines counting an outage's failures (events that did
#: not reach Redis, attempts to subscribe again that failed; ``_Tally``): an outage is
#: said once when it starts, then at most once a minute with a count, not once per event
#: or attempt (QA s32: a line a second per instance, ~5,000 an hour); what is left
#: unsaid when it ends, in the line saying so.
OUTAGE_LOG_INTERVAL_S = 60.0
#: The longest ``close()`` waits for each of its steps (the listener to end, each client
#: to close): a stop must end whatever Redis does.
CLOSE_TIMEOUT_S = 5.0


class RedisEventBus:
    """``domain.ports.EventBus`` across processes.

    ``queue_size``: each local subscriber's queue (see ``MemoryEventBus``).
    ``channel_prefix``: channels are ``<prefix><topic>``; pub/sub ignores the database
    number in the URL, so deployments sharing one Redis need different prefixes.
    ``publish_timeout``: connect and write timeout of ``publish``, which the domain awaits
    on a charger's message path; an unreachable Redis must fail fast, not stall chargers
    (and once one publish failed, the next ones do not wait: ``_refused``).
    ``health_interval``: after this much silence the listener PINGs; silence for another
    interval means the connection is dead (a half-open TCP connection never errors).
    ``start_timeout``: how long ``start()`` waits for the first subscription.
    ``max_backoff``: the longest wait between the listener's reconnect attempts. A second:
    until it is back, commands relayed to this instance's chargers find no one to take
    them (5 s made them fail for up to 5 s after Redis returned); an attempt a second is
    nothing for Redis. Attempts are not logged one by one (``_Tally``).
    ``clock``: monotonic seconds, for the log's pace (the loop's time unless given).
    """

    def __init__(self, url: str, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 channel_prefix: str = CHANNEL_PREFIX, publish_timeout: float = 1.0,
                 health_interval: float = 5.0, max_backoff: float = 1.0,
                 start_timeout: float = 10.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.url = url
        self.local = MemoryEventBus(queue_size)
        self.channel_prefix = channel_prefix
        self.publish_timeout = publish_timeout
        self.health_interval = health_interval
        self.max_backoff = max_backoff
        self.start_timeout = start_timeout
        self._channels = {self._channel(topic): topic for topic in EVENT_TYPES}
        self._publisher: aioredis.Redis | None = None
        self._subscriber: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()  # the first subscription, for start()
        self._healthy = False  # the current connection has been subscribed
        #: A publish failed or timed out since the listener subscribed: Redis is taken for
        #: away (``connected`` is False, publishes go to the background) until a publish
        #: goes through, the listener's PING is answered or it subscribes again.
        self._refused = False
        #: A SUBSCRIBE has been sent on the current connection: from then on Redis may
        #: send this process's own events back, so ``publish`` no longer delivers them
        #: locally (both: a duplicate at every reconnect, review s19).
        self._subscribing = False
        self._reconnecting = False
        self._closed = False
        #: Publishes tried in the background while the listener is down (``publish``).
        self._background: set[asyncio.Task[None]] = set()
        self._clock = clock
        #: Events that could not reach Redis, and attempts to subscribe that failed.
        self._unsent = _Tally()
        self._failed = _Tally()
        #: Why the last attempt to subscribe failed: named when ``start`` gives up.
        self._last_failure: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect and subscribe; raises ``ConnectionError`` when Redis cannot be reached
        within ``start_timeout`` (a misconfigured URL stops the service at start)."""
        if self._listener is not None or self._closed:
            raise RuntimeError("a RedisEventBus starts once")
        self._publisher = aioredis.Redis.from_url(
            self.url, socket_timeout=self.publish_timeout,
            socket_connect_timeout=self.publish_timeout,
            # One retry: a pooled connection may be stale after a Redis restart.
            retry=Retry(NoBackoff(), 1))
        self._subscriber = aioredis.Redis.from_url(
            self.url, socket_timeout=self.health_interval,
            socket_connect_timeout=self.health_interval,
            # No retries inside redis-py: the listener reconnects itself, so it can back
            # off, log, and wait for the subscription to be confirmed again.
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._listener = asyncio.create_task(self._listen(), name="chargegraph-redis-events")
        try:
            # ``timeout``, not ``wait_for``: see ``_session``.
            async with asyncio.timeout(self.start_timeout):
                await self._subscribed.wait()
        except TimeoutError:
            await self.close()
            # The cause (a wrong password, a refused connection) was otherwise only in
            # the WARNINGs before this line, which is the one an operator reads.
            cause = f": {self._last_failure}" if self._last_failure else ""
            raise ConnectionError(f"cannot subscribe to Redis at {redacted(self.url)} "
                                  f"within {self.start_timeout:g}s{cause}") from None

    async def close(self) -> None:
        """Stop the listener, close both connections, end every local stream. Each step
        is bounded (``CLOSE_TIMEOUT_S``): the service's stop waits on this (QA s21: an
        instance stopped with Redis never finished stopping)."""
        self._closed = True  # the listener's loop ends on it even if a cancel is lost
        for task in list(self._background):
            task.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            # wait(), not `await listener`: its CancelledError is expected, and suppressing
            # that would also swallow a cancellation of close() itself.
            done, _ = await asyncio.wait([listener], timeout=CLOSE_TIMEOUT_S)
            if not done:
                log.warning("the Redis listener did not stop within %gs; left behind",
                            CLOSE_TIMEOUT_S)
        for client in (self._publisher, self._subscriber):
            if client is not None:
                await _close_client(client)
        self._publisher = self._subscriber = None
        await self.local.close()

    @property
    def subscriber_count(self) -> int:
        return self.local.subscriber_count

    @property
    def connected(self) -> bool:
        """Whether events reach the other instances now: subscribed at Redis on the
        current connection, and no publish failed since Redis last answered
        (``/healthz``'s ``events``, the ``event_bus_up`` gauge)."""
        return self._healthy and not self._refused and not self._closed

    @property
    def receiving(self) -> bool:
        """Whether the other instances' events reach this process now: the listener is
        subscribed. When it subscribes again after an outage every subscriber is told
        (``EventsDropped(interrupted=True)``), so a subscription opened while this is
        False is told so at its start (``LiveService``) and learns of the return too."""
        return self._healthy and not self._closed

    # ------------------------------------------------------------------ the port
    async def publish(self, event: DomainEvent) -> None:
        """``PUBLISH <prefix><topic> <json>``. Raises on any failure while the listener is
        subscribed (the domain logs it and carries on: the change itself has committed);
        while it is not, or once a publish failed (``_refused``), the publish is tried in
        the background (``_publish_later``) and this returns at once.

        While the listener is not subscribed, the event would not come back through
        Redis: this process's own subscribers get it directly, so a live map on this
        instance still shows its own chargers during an outage, and a subscription
        opened meanwhile is not silent (QA s19). Not once a SUBSCRIBE is on its way:
        Redis may then send it back, and an event published while the subscription is
        confirmed is in the window the reconnect's ``EventsDropped`` covers. What other
        instances publish meanwhile is lost, as this process's subscribers are told at
        once and again at the reconnect (``EventsDropped(interrupted=True)``). An event
        this publish fails to hand to Redis is lost to the other instances without a
        marker there (see the module's docstring)."""
        if self._publisher is None:
            raise RuntimeError("RedisEventBus.publish() before start() or after close()")
        if not self._healthy and not self._subscribing:
            self.local.deliver(event)
        if not self._healthy or self._refused:
            # Redis is away or not answering: awaited here, each publish held the
            # charger's answer for its timeout and retry (2 s a message while Redis hung:
            # QA s19, soak). Tried in the background instead, a bounded number at once.
            self._publish_later(event)
            return
        payload = encode(event)  # an event it cannot encode says nothing about Redis
        try:
            await self._publisher.publish(self._channel(event.topic), payload)
        except Exception as exc:
            # At once, not when the listener's PING goes unanswered (twice
            # ``health_interval``): until then every charger message waited 2 s for its
            # event, and /healthz said ok (QA s21).
            self._refuse(exc)
            raise

    def _refuse(self, exc: BaseException) -> None:
        if not self._refused:
            self._refused = True
            log.warning("Redis at %s did not take an event (%s); events are published in "
                        "the background until it answers", redacted(self.url),
                        _describe(exc))

    def _answered(self) -> None:
        """Redis took a publish or answered a PING: publishes are awaited again."""
        if self._refused:
            self._refused = False
            log.info("Redis at %s takes events again", redacted(self.url))

    def _publish_later(self, event: DomainEvent) -> None:
        if len(self._background) >= MAX_BACKGROUND_PUBLISHES:
            self._unsent.add()  # Redis is not taking them: one more would fail alike
            return
        task = asyncio.get_running_loop().create_task(self._try_publish(event))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _try_publish(self, event: DomainEvent) -> None:
        assert self._publisher is not None
        try:
            await self._publisher.publish(self._channel(event.topic), encode(event))
            self._answered()
        except Exception as exc:
            # Said once a minute with the count, not once per event with its traceback:
            # the listener already logs the outage and its end.
            self._unsent.add()
            unsent = self._unsent.due(self._now())
            if unsent:
                log.warning("%s could not reach the other instances while Redis is away "
                            "(%s)", _counted(unsent, "event"), _describe(exc))

    def subscribe(self, topics: Iterable[str]) -> EventStream:
        return self.local.subscribe(topics)

    # ------------------------------------------------------------------ the listener
    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _channel(self, topic: str) -> str:
        return self.channel_prefix + topic

    async def _listen(self) -> None:
        backoff = MIN_BACKOFF_S
        # Not ``while True``: a cancel that some await below drops (``wait_for`` in
        # Python 3.11, or a library) must not keep reconnecting for ever after close().
        while not self._closed:
            self._healthy = False
            try:
                await self._session()
            except Exception as exc:  # whatever it was, the listener must live on
                self._reconnecting = True
                was_healthy, self._healthy = self._healthy, False
                if was_healthy:
                    self.local.interrupt()
                    backoff = MIN_BACKOFF_S
                    log.warning("Redis pub/sub connection to %s lost (%s); events published "
                                "until it is back are lost", redacted(self.url), _describe(exc))
                    # The attempts that follow are counted from here, said a minute on.
                    self._failed.said(self._now())
                else:
                    self._failed.add()
                    failed = self._failed.due(self._now())
                    if failed:
                        log.warning("cannot subscribe at Redis %s (%s)%s", redacted(self.url),
                                    _describe(exc), "" if failed == 1 else
                                    f"; {_counted(failed, 'attempt')} failed since the last "
                                    "report")
                self._last_failure = _describe(exc)
            # Jitter, so instances do not reconnect in lockstep after a Redis restart.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.max_backoff)

    async def _session(self) -> None:
        """One connection's life: subscribe, confirm, receive until it fails."""
        assert self._subscriber is not None
        pubsub = self._subscriber.pubsub()
        try:
            self._subscribing = True
            await pubsub.subscribe(*self._channels)
            await self._confirm(pubsub)
            if self._reconnecting:
                log.info("Redis pub/sub at %s subscribed again%s", redacted(self.url),
                         self._unsaid())
                # The next outage is said at once again, counted from nothing: the
                # events left unsaid were reported in the next outage (review r32-c).
                self._failed, self._unsent = _Tally(), _Tally()
                self.local.interrupt()
            self._healthy, self._reconnecting = True, False
            self._answered()  # a new subscription: Redis answers again
            self._subscribed.set()
            await self._receive(pubsub)
        finally:
            self._subscribing = False
            # ``timeout``, not ``wait_for``: in Python 3.11, ``wait_for`` returns the
            # result of an awaitable that finished in the step its caller was cancelled,
            # dropping the cancel. A stop that came as a refused attempt's connection
            # closed then left the listener reconnecting for ever (QA s21).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.health_interval):
                    await pubsub.aclose()

    def _unsaid(self) -> str:
        """The outage's counts since their last line, for the line saying it is over
        (review r32-c: the attempts of its last minute were never said)."""
        counts = [f"{_counted(self._failed.count, 'attempt')} to subscribe failed"
                  if self._failed.count else "",
                  f"{_counted(self._unsent.count, 'event')} could not reach the other "
                  "instances" if self._unsent.count else ""]
        said = " and ".join(count for count in counts if count)
        return f"; since the last report, {said}" if said else ""

    async def _confirm(self, pubsub: PubSub) -> None:
        """Wait until the server confirmed every channel. ``subscribe()`` only sends the
        command: without this, an event published right after ``start()`` (on the other
        connection) could reach Redis before the subscription does, and be lost."""
        pending = set(self._channels)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.health_interval
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RedisTimeoutError("Redis did not confirm the subscription")
            message = await pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            if message["type"] == "subscribe":
                pending.discard(_text(message["channel"]))
            elif message["type"] == "message":
                self._dispatch(message)

    async def _receive(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged = False  # a PING after silence, unanswered
        probed = False  # a PING since a publish Redis did not take, unanswered
        while True:
            message = await pubsub.get_message(timeout=self.health_interval)
            now = loop.time()
            if message is not None:
                heard, pinged = now, False
                if message["type"] == "message":
                    self._dispatch(message)
                elif message["type"] == "pong":
                    probed = False
                    self._answered()
            elif now - heard >= self.health_interval:
                if pinged:
                    raise RedisConnectionError(f"no answer to PING for {now - heard:.1f}s")
                await pubsub.ping()
                pinged = True
            if self._refused and not probed:
                # Its answer says Redis is back: publishes are awaited again without
                # waiting for an event to get through in the background.
                await pubsub.ping()
                probed = True

    def _dispatch(self, message: dict[str, Any]) -> None:
        """One message to the local subscribers; a bad one is logged and skipped."""
        channel = _text(message["channel"])
        try:
            event = decode(message["data"])
        except UndecodableEvent as exc:
            log.warning("skipped a message on %s: %s", channel, exc)
            return
        except Exception:
            log.exception("skipped a message on %s", channel)
            return
        if self._channels.get(channel) != event.topic:
            log.warning("skipped a %r event that arrived on %s", event.topic, channel)
            return
        self.local.deliver(event)


class _Tally:
    """Failures of one kind during an outage, said at most once per
    ``OUTAGE_LOG_INTERVAL_S``: the first at once, then the count since the last line."""

    __slots__ = ("count", "next_at")

    def __init__(self) -> None:
        self.count = 0
        self.next_at: float | None = None  # None: nothing said yet, the next is due

    def add(self) -> None:
        self.count += 1

    def due(self, now: float) -> int:
        """The count to say now (then counted afresh), or 0 if a line was said less than
        the interval ago."""
        if self.next_at is not None and now < self.next_at:
            return 0
        count, self.count = self.count, 0
        self.said(now)
        return count

    def said(self, now: float) -> None:
        """A line about it was just logged (elsewhere): the next one waits its turn."""
        self.next_at = now + OUTAGE_LOG_INTERVAL_S


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


async def _close_client(client: aioredis.Redis) -> None:
    """Closes ``client``'s connections, giving up after ``CLOSE_TIMEOUT_S`` (a Redis that
    hangs) or on an error (one already gone): nothing is left to tell it."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await client.aclose()
    except Exception as exc:
        log.debug("closing a Redis client: %s", _describe(exc))


def redacted(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _text(value: bytes | str) -> str:
    # Bytes unless the URL asks for ``decode_responses`` (URL options beat our kwargs).
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
