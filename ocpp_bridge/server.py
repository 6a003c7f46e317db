"""The OCPP 1.6J central system's websocket server.

- Paths ``/ocpp/{cp_id}`` and ``/{cp_id}`` (percent-decoded).
- Subprotocol ``ocpp1.6``: chosen when offered; otherwise the handshake completes without
  the header and the connection is closed at once (OCPP-J 1.6 section 3.2).
- HTTP Basic auth with the station's password, user name = cp_id (security profile 1;
  profile 2 when a TLS certificate is configured). An unknown cp_id is answered as a
  station whose stored hash no password matches (``_decoy``): the same checks on the
  same path as a station's (counted as it arrives and locked out alike, shared across
  instances, one check per station and per address at a time, argon2 on the same
  threads, every refusal answered at least ``CHARGER_REFUSAL_DELAY_S`` after its
  arrival: ``_password_ok``), so ids cannot be enumerated; the log says why. With
  auto-registration on, it becomes a Pending station. Wrong passwords are counted and
  lock the guesser out (429, unchecked), not the charger at an address it is known to
  pass from (``domain.services.charger_sign_ins``).
- One live connection per charger: a new one replaces the old cleanly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import math
import os
import socket
import ssl
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from domain.entities import Station
from domain.errors import Conflict, DomainError, StoreBusy, StoreUnavailable, TooManyRequests
from domain.events import StationConnectionChanged, StationPasswordChanged, StationRemoved
from domain.ids import new_id
from domain.keyed_locks import KeyedLocks
from domain.ports import NO_METRICS, EventBus, Metrics
from domain.services.charger_sign_ins import ChargerSignIns, Limit, Lockout, address_key
from domain.services.charging import ChargingService
from domain.services.instances import InstanceService
from domain.validation import OCPP_PATH, cp_id_key
from ocpp_bridge.frames import MAX_SAMPLED_VALUES
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.handler import (
    CLOSE_PASSWORD_CHANGED,
    CLOSE_UNKNOWN_STATION,
    ChargePointHandler,
)
from ocpp_bridge.pacing import MAX_FRAME_BYTES, ChargerPacers
from ocpp_bridge.peers import TrustedProxies

log = logging.getLogger("chargegraph.ocpp")

SUBPROTOCOL = "ocpp1.6"
SUBPROTOCOL_HEADER = "Sec-WebSocket-Protocol"
#: Why a handshake for a cpId with no station was refused, in the log only: the charger
#: is answered as one with a wrong password (401), so cpIds cannot be enumerated.
UNKNOWN_CHARGE_POINT = "unknown charge point"
#: How much of the subprotocols a refused charger offered the log line shows.
SHOWN_OFFER = 100
#: How much of a cpId (or an address) log lines show (``shown_id``).
SHOWN_ID = 64
#: The largest frame read: websockets closes the socket with 1009 (message too big) as
#: soon as a frame's header says it is larger, before reading it, so an oversized frame
#: costs nothing (``pacing.MAX_FRAME_BYTES`` says why this size). What frames up to it
#: cost the loop is paced (``pacing.BYTE_RATE``). It reserves nothing: websockets buffers
#: at most ``max_queue``, 16, unread frames per connection before it stops reading.
MAX_MESSAGE = MAX_FRAME_BYTES
#: Seconds a connection the server closes waits for the charger's close frame before it
#: drops the TCP connection (websockets' default): a charger on a slow link answering a
#: hang-up (1008, 1013, a replaced connection) in a few seconds closes cleanly, and its
#: disconnect is recorded as heard, not as a lost link's 1006 (review s25).
CLOSE_TIMEOUT_S = 10.0
#: The same wait for the connections closed by ``OcppServer.stop`` (1001), set on each
#: as the stop begins. Chargers whose link went silent without a FIN (a cellular modem
#: out of coverage) never answer, and the stop waited the full ``CLOSE_TIMEOUT_S`` for
#: them, all `docker stop` waits before it kills the process (ops QA s25: the
#: disconnects and the lease release were never written). A charger that does answer
#: takes milliseconds. A close already under way when the stop begins (a replaced
#: connection, a 1013, a charger connected to another instance) is bounded by it too: its
#: socket is dropped when the stop's wait is over (review r-ops2: a charger that had just
#: reconnected, its old link silent, held the stop its old connection's 10 s).
STOP_CLOSE_TIMEOUT_S = 2.0
REALM = 'Basic realm="ChargeGraph OCPP", charset="UTF-8"'
#: Close code for a charger whose connection cannot be recorded now (1013: try again
#: later): it reconnects, as it does after any drop.
CLOSE_TRY_AGAIN_LATER = 1013
#: When a charger whose station could not be read (a store outage) is told to try its
#: handshake again (the 503's Retry-After; chargers retry by themselves anyway).
STORE_RETRY_AFTER_S = 10
#: What the counts of a cpId with no station are keyed by in place of its password hash
#: (``_limits``): the same on every instance, so they are shared as a station's are,
#: whereas the hash it is checked against (``_decoy``) is each instance's own.
UNKNOWN_KEY = "unknown charge point"
#: Password checks (argon2) pending on one instance, queued or running, their handshake
#: still there or dropped (a check runs to its end: ``_password_ok``). Beyond it, a
#: password that needs a check is answered 503 with ``Retry-After`` at once, counted
#: nowhere: dropped handshakes cannot pile up work without bound; most passwords sooner
#: (``KNOWN_SHARE_OF``).
MAX_PENDING_CHECKS = 256
#: One in this many of those (64 of 256) kept for a station's charger at an address it
#: passed the check from (``ChargerSignIns.passed_from``, known across instances for
#: ``KNOWN_FOR``): any other password is answered 503 once the rest (192) are pending. A scan
#: from 64 addresses or more (4 pending each) otherwise held all 256, and a known charger
#: that needed a check (its password changed, its instance gone) was answered 503 as long
#: as it went on (leftover of sessions 26 to 30). Not kept for every real cpId: with the
#: rest full, 401 for a real one against 503 for a made-up one would tell which exist; a
#: prober at a charger's own address already can (docs/architecture.md).
KNOWN_SHARE_OF = 4
#: Checks of one station's known addresses pending at once that the share above takes
#: (one runs at a time per station, ``_check``; one more is ready): beyond, they are any
#: other password's, so a scan of one real cpId from the many addresses its charger passed
#: from (a carrier's CGNAT pool) cannot take the share either.
KNOWN_SHARE_PER_STATION = 2
#: The ``Retry-After`` of that 503 (seconds), and of the 429 below.
CHECKS_BUSY_RETRY_AFTER_S = 2
#: Password checks pending on one instance for one client address (an IPv6 one by its
#: /64) at once, across cpIds, real or made up. Beyond, a password that needs a check
#: (any not known right: a connected station's wrong ones too) waits its turn in the
#: address's queue, first come first served, within the handshake timeout
#: (``_AddressTurns``): a scan from one address holds this many checks (review
#: r26-security4: it kept all ``MAX_PENDING_CHECKS`` taken, and chargers needing a check
#: were answered 503 while it went on), and a site's chargers behind one NAT reconnecting
#: at once after a restart are checked as fast as the threads go and let in on their
#: first try (review r26-security5: the fifth and later were answered 429 at once, and
#: came back only on their own reconnect timers, round after round). Four: both hashing
#: threads busy and one more check ready for each.
MAX_PENDING_PER_ADDRESS = 4
#: Handshakes waiting for one address's turn; beyond, 429 with ``Retry-After`` at once,
#: unchecked and counted nowhere (so one address cannot hold every handshake waiting).
MAX_WAITING_PER_ADDRESS = 64
#: Seconds the websockets server gives a handshake (TLS, HTTP request, ``process_request``
#: with its password check and refusal delay) before it drops the connection
#: (websockets' default, named here so the delay below is seen to fit well inside it).
HANDSHAKE_TIMEOUT_S = 10.0
#: Seconds after its arrival that every refused password is answered (401), at the
#: earliest, whatever refused it: argon2 (a connected station's wrong passwords too), a
#: cpId with no station (checked by argon2 against ``_decoy``'s hash as a station is).
#: Fixed, not measured: above one argon2 check with the default parameters on modest
#: hardware (0.05 to 0.5 s); a check that took longer (the hashing threads busy, the
#: station's checks queued) is answered when it is done, on the same path for a real
#: cpId and a made-up one. A sleep after the failure was counted and the station's turn
#: and the hashing thread were given back: no CPU, no lock. Review r26-security2: a
#: running average of the checks, timed from the station's lock, took in the queue,
#: reached several seconds after a reconnect storm and stayed there.
CHARGER_REFUSAL_DELAY_S = 1.0
assert CHARGER_REFUSAL_DELAY_S <= HANDSHAKE_TIMEOUT_S / 5
#: The share of the handshake timeout after a handshake's request arrived by which its
#: password's answer is due. Not known by then (its check queued behind its address's
#: others, ``MAX_PENDING_PER_ADDRESS``, or behind the hashing threads), it will evidently
#: not be in time: the charger is answered 503 with Retry-After, as when the checks
#: pending fill up, rather than dropped at the timeout with no answer at all (ops QA
#: s32: chargers restarting behind one address, "did not receive a valid HTTP
#: response", nothing in the log). Its check runs on, or, still queued for its address's
#: turn, keeps its place and runs when the turn comes (``OcppServer._cut``), so the
#: retry of a right password is let in from the cached digest. The rest of the timeout
#: is for the TLS and request before it and the answer after.
CHECK_DUE_SHARE = 0.75
#: Why such a handshake was answered early, and why one was dropped at the timeout
#: meanwhile (before the answer was due: its TLS or request was slow), for the log.
CHECK_NOT_DUE = ("its password check could not be done within the handshake timeout "
                 "(checks queued from there or on this instance): answered 503, try again")
CHECK_DROPPED = ("the handshake timed out waiting for its password check (checks queued "
                 "from there or on this instance): dropped")
#: Why a connection whose charger connected to another instance is closed (and its
#: commands failed, ``ChargePointHandler.superseded``).
ELSEWHERE = "connected to another instance"
#: The reasons a locked-out attempt is logged with (``RefusalLog``), by the limit that
#: locked it out (QA s31: a station's lockout was logged as its address's).
LOCKED_OUT = {
    Limit.ADDRESS: "too many wrong passwords from there: refused unchecked",
    Limit.STATION: "too many wrong passwords for this station from everywhere, and its "
                   "charger never passed from there: refused unchecked",
}


@dataclass(frozen=True, slots=True)
class Refused:
    """A handshake answered without its password checked: 429, locked out
    (``ChargerSignIns``) or another password from the same address still under way; 503,
    too many checks pending on this instance (``MAX_PENDING_CHECKS``)."""

    retry_after: int  # seconds
    message: str
    #: The limit that locked it out; ``None``: not a lockout.
    locked: Limit | None = None
    status: HTTPStatus = HTTPStatus.TOO_MANY_REQUESTS
    #: Why, for the log (``RefusalLog``), when it is worth a line.
    reason: str = ""
    #: Its line's level: WARNING for a charger turned away for want of capacity (the
    #: checks pending, its address's queue), which a right password meets too.
    level: int = logging.INFO


class _AddressTurns:
    """Per client address, at most ``MAX_PENDING_PER_ADDRESS`` turns held (a check
    pending) and at most ``MAX_WAITING_PER_ADDRESS`` handshakes waiting, first come first
    served. A turn freed is handed to the first waiter; a waiter cancelled (its handshake
    dropped) leaves the queue, or, woken already, hands its turn on. Addresses with
    nothing held or waiting are forgotten."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def take_now(self, key: str) -> bool:
        """A turn at once if one is free and nobody waits for it."""
        if self._waiting.get(key) or self.held(key) >= MAX_PENDING_PER_ADDRESS:
            return False
        self._held[key] = self.held(key) + 1
        return True

    def queue_full(self, key: str) -> bool:
        return len(self._waiting.get(key, ())) >= MAX_WAITING_PER_ADDRESS

    async def wait(self, key: str) -> None:
        """Returns holding a turn (handed over by ``release``); cancelled, holds none."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(key)  # woken, then dropped: the turn goes on
            else:
                queue = self._waiting.get(key)
                if queue is not None and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[key]
            raise

    def release(self, key: str) -> None:
        """A turn is over: handed to the first waiter, else freed."""
        queue = self._waiting.get(key)
        while queue:
            turn = queue.popleft()
            if not turn.done():
                turn.set_result(None)
                if not queue:
                    del self._waiting[key]
                return
        self._waiting.pop(key, None)
        left = self.held(key) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)


@dataclass(eq=False, slots=True)
class _UnderWay:
    """A password of one station under way from one address (``OcppServer._in_flight``):
    its check (argon2, a task no handshake's cancellation reaches; or an answer already
    known), and the handshakes waiting for it. The address's slot is free once the check
    is done and no handshake waits."""

    digest: bytes
    password_hash: str | None
    check: asyncio.Future[bool]
    handshakes: int = 0


def cp_id_from_path(path: str) -> str | None:
    path = path.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2 and parts[0] == OCPP_PATH:
        raw = parts[1]
    elif len(parts) == 1:
        raw = parts[0]
    else:
        return None
    return unquote(raw) or None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class RefusalTimer:
    """A refusal's time (``OcppServer._answer``): ``time.monotonic`` and
    ``asyncio.sleep``, in one place so that a test can run the refusal delay on a clock
    it moves itself (by order, not by how fast a loaded machine runs;
    tests/ocpp/test_password_lockout.py)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class OcppServer:
    def __init__(self, charging: ChargingService, gateway: OcppGateway, host: str, port: int,
                 *, ssl_context: ssl.SSLContext | None = None, ping_interval: float = 30,
                 response_timeout: float = 30, instances_bus: EventBus | None = None,
                 instances: InstanceService | None = None, lease_seconds: float = 30.0,
                 trusted_proxies: str = "127.0.0.1,::1", metrics: Metrics = NO_METRICS,
                 strict_schema: bool = False, instance_id: str | None = None,
                 refusal_delay: float = CHARGER_REFUSAL_DELAY_S,
                 max_sampled_values: int = MAX_SAMPLED_VALUES) -> None:
        # ``instances_bus``: the bus of the other instances sharing the database, ``None``
        # when this process is the only one. Alone, a station still marked online at
        # start-up lost its connection with the previous process; with others, it may be
        # connected to one of them and is left alone, and a charger that connects to
        # another instance after connecting here has left this socket
        # (``_watch_elsewhere``).
        self.instances_bus = instances_bus
        # ``instances``: the lease this instance holds while it serves chargers, and the
        # sweep for those of dead instances (``domain.services.instances``); ``None``
        # runs without (tests of a single server).
        self.instances = instances
        # Shared with the instance's webhook delivery, whose stored deliveries another
        # instance takes over once this lease expires.
        self.instance_id = instance_id or new_id()
        self.host_label = _host_label()
        self.lease = timedelta(seconds=lease_seconds)
        self._lease_keeper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._removals: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        # cp_id → the highest number another instance announced for it while this
        # instance was still recording its own (a handler's own: ``handler.number``).
        self._newer_elsewhere: dict[str, int] = {}
        #: A charge point's connections are taken one at a time (``_connection``).
        self._arriving = KeyedLocks()
        self.charging = charging
        self.gateway = gateway
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.ping_interval = ping_interval
        self.response_timeout = response_timeout
        self.strict_schema = strict_schema
        #: The most sampled values a charger's MeterValues may carry (``frames.bound``).
        self.max_sampled_values = max_sampled_values
        self._server: Server | None = None
        #: Set while ``stop`` closes the chargers' sockets.
        self._stopping = False
        #: Each charger's intake pace, kept across its connections to this instance
        #: (``pacing.ChargerPacers``).
        self.pacers = ChargerPacers()
        # cp_id → (password hash, digest of the password that matched it, the newer hash
        # that password was checked against and refused, if any): reconnect storms must
        # not cost an argon2 verification each, nor a charger retrying the password it
        # passed with before its station was given a new one (``_former_password``).
        # Only stations whose charger passed here have one. No other refusal is
        # remembered: a guess refused lately is checked again like any other, on the
        # same path for a real cpId and a made-up one (``_known_answer``).
        self._verified: dict[str, tuple[str, bytes, str | None]] = {}
        #: The hash a cpId with no station is checked against (``_decoy``), made at start.
        self._decoy_hash: str | None = None
        #: The argon2 checks pending (``MAX_PENDING_CHECKS``), and how many of them per
        #: client address as the limits count it, with the handshakes waiting for their
        #: turn (``MAX_PENDING_PER_ADDRESS``, ``_AddressTurns``).
        self._checks: set[asyncio.Task[bool]] = set()
        #: Handshakes answered 503 at their due time (``_password_in_time``) whose
        #: password's look goes on: queued for their address's turn, they keep their
        #: place (within ``MAX_WAITING_PER_ADDRESS``) and start their check then (within
        #: ``MAX_PENDING_CHECKS``), so the retry finds its digest; cancelled at ``stop``.
        self._cut: set[asyncio.Future[bool | Refused]] = set()
        self._turns = _AddressTurns()
        #: cp_id → its checks pending from addresses its charger passed from, while any
        #: are (``KNOWN_SHARE_PER_STATION``): at most ``MAX_PENDING_CHECKS`` entries.
        self._known_checks: dict[str, int] = {}
        #: Seconds after its arrival a refused password is answered
        #: (``CHARGER_REFUSAL_DELAY_S``; tests shorten it).
        self.refusal_delay = refusal_delay
        #: When a handshake arrived and how long its refusal still waits.
        self.refusal_timer = RefusalTimer()
        #: How long a handshake waits for its password's answer (``CHECK_DUE_SHARE``);
        #: a clock of its own, so that a test moves one without the other.
        self.handshake_timer = RefusalTimer()
        self._checking = KeyedLocks()  # one argon2 check per station at a time
        #: (cp_id, address as the limits count it: an IPv6 one by its /64) → the
        #: password being checked from there, or waiting for its refusal's answer.
        self._in_flight: dict[tuple[str, str], _UnderWay] = {}
        self.refusals = RefusalLog()
        #: A socket let in at its handshake → the id of the station it signed in as and
        #: that station's password hash then (``None``: none), until its handler takes
        #: them (``_connection``); and the station's cpId as stored, which the charger
        #: is known by from then on whatever the case it connected under (QA s28).
        self._signed_in: weakref.WeakKeyDictionary[
            ServerConnection, tuple[str, str | None, str]] = weakref.WeakKeyDictionary()
        self.proxies = TrustedProxies(trusted_proxies)
        #: Where every connection's handler counts the CALLs it answers (``/metrics``).
        self.metrics = metrics

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        await self._unmatchable_hash()  # once, before any handshake
        if self.instances_bus is None:
            # One instance: what is still online lost its connection with the previous
            # process. Unless another process serves chargers on this database too (its
            # lease is live): its stations stay its own, and without a shared event bus
            # neither instance's events or commands reach the other's chargers.
            alive = [lease for lease in (
                await self.instances.others_alive(self.instance_id)
                if self.instances is not None else []) if not _gone(lease.host)]
            for other in alive:
                log.error("another ChargeGraph instance (%s, lease until %s) serves chargers "
                          "on this database without a shared event bus: events and "
                          "commands will not reach across; run several instances with "
                          "CHARGEGRAPH_PUBSUB_URL=redis://…", other.host,
                          other.expires_at.isoformat())
            await self.charging.reset_connections({other.id for other in alive})
        # Where sessions a restore brought back open are (a restore runs with every
        # instance stopped): known before the first charger connects.
        await self.charging.load_restored()
        # Where chargers passed their password check from, on instances gone too: a
        # charger moved here by a rolling restart is known at its address (review s31).
        await self.charging.load_known_addresses()
        if self.instances is not None:
            await self.instances.renew(self.instance_id, self.host_label, self.lease)
        self._server = await serve(
            self._connection, self.host, self.port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            open_timeout=HANDSHAKE_TIMEOUT_S,
            compression=None,  # chargers rarely negotiate it; it costs CPU per frame
            max_size=MAX_MESSAGE,
            close_timeout=CLOSE_TIMEOUT_S,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            ssl=self.ssl_context,
            server_header="ChargeGraph",
        )
        # An IPv6 address in brackets, as a charger's URL writes it (ws://[::1]:9000).
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("OCPP 1.6J central system on %s://%s:%d/ocpp/{cpId}",
                 "wss" if self.ssl_context else "ws", host, self.bound_port)
        if self.instances_bus is not None:
            stream = self.instances_bus.subscribe([StationConnectionChanged.topic])
            self._watcher = asyncio.create_task(self._watch_elsewhere(stream),
                                                name="chargegraph-ocpp-elsewhere")
        if self.charging.ctx.bus is not None:
            removals = self.charging.ctx.bus.subscribe([StationRemoved.topic,
                                                        StationPasswordChanged.topic])
            self._removals = asyncio.create_task(self._watch_removals(removals),
                                                 name="chargegraph-ocpp-removals")
        # What other instances announce they changed reaches the charging use cases'
        # cache through the wiring's subscription, not this server's: every instance has
        # one, serving chargers or not (``chargegraph.housekeeping.following_changes``).
        self.charging.still_connected = self._still_connected
        if self.instances is not None:
            # Released by the stop, and kept while webhook delivery sharing the lease
            # still runs (``InstanceService.hold``).
            self.instances.hold(self.instance_id)
            self._lease_keeper = asyncio.create_task(self._keep_lease(),
                                                     name="chargegraph-ocpp-lease")

    async def stop(self) -> None:
        """Closes every connection (1001), each waiting ``STOP_CLOSE_TIMEOUT_S`` for its
        charger's answer rather than ``CLOSE_TIMEOUT_S`` (a silent one is dropped), as do
        the closes already under way, records the disconnects and releases the instance
        lease."""
        for task in (self._watcher, self._removals, self._lease_keeper):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        self._watcher = self._removals = self._lease_keeper = None
        if self.charging.still_connected == self._still_connected:
            self.charging.still_connected = None
        if self._server is None:
            return
        # The sockets closed from here on are this instance's outage, not their
        # chargers' leaving (``ChargingService.disconnect``).
        self._stopping = True
        for connection in self._server.all_connections:
            connection.close_timeout = STOP_CLOSE_TIMEOUT_S
        self._server.close()
        # A close begun before the stop (a replaced connection, 1013) had its deadline
        # set then, CLOSE_TIMEOUT_S ahead: what is still open when the stop's own wait is
        # over is dropped, as the stop's closes are.
        drop = asyncio.get_running_loop().call_later(
            STOP_CLOSE_TIMEOUT_S, self._drop_unclosed, self._server)
        try:
            await self._server.wait_closed()
        finally:
            drop.cancel()
        self._server = None
        # Handshakes gone: nobody waits for them. What their arrival counted is withdrawn
        # (``_check_ended``): a password never checked counts as nothing.
        for cut in list(self._cut):
            cut.cancel()
        if self._cut:
            await asyncio.wait(list(self._cut))
        for check in list(self._checks):
            check.cancel()
        if self._checks:
            await asyncio.wait(list(self._checks))
        self.refusals.flush()  # what the last minute held back is not lost
        self._stopping = False
        if self.instances is not None:
            try:
                await self.instances.release(self.instance_id)
            except StoreUnavailable as exc:  # the store said why, once, when it happened
                log.warning("could not release the instance lease (%s); it expires on "
                            "its own", exc.reason)
            except Exception:  # the store may be closing; the lease expires on its own
                log.exception("could not release the instance lease")

    @staticmethod
    def _drop_unclosed(server: Server) -> None:
        """Drops the TCP connection of every socket whose close is still not done (its
        charger never answered): the handlers then see it closed (1006) and record it."""
        for connection in server.all_connections:
            if connection.state is not State.CLOSED:
                connection.transport.abort()

    async def _keep_lease(self) -> None:
        """``upkeep`` a few times per lease period. A failed round (the database out of
        reach) is retried in the next one."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                await self.upkeep()
            except Exception:
                log.exception("instance lease upkeep failed")

    async def upkeep(self) -> list[str]:
        """One round: renews this instance's lease (had it lapsed, it may have been swept,
        so this instance's connections are recorded again), records offline the
        chargers of instances whose lease expired (returns their ids), and ends the
        unknown time of chargers that did not come back after the central system's own
        outage (``InstanceService.settle_outages``)."""
        if self.instances is None:
            return []
        lapsed = await self.instances.renew(self.instance_id, self.host_label, self.lease)
        # Every round, not only after a lapse: a connection recorded offline while its
        # socket is still here (a sweep while this instance stalled, a race lost to an
        # old socket's disconnect) is recorded again, if it is still the newest.
        held = self._held()
        lost, superseded = await self.instances.lost(held)
        if lost:
            log.warning("%d connections here were recorded offline%s: recording them "
                        "again", len(lost), " while the instance lease had lapsed"
                        if lapsed else "")
        await self._record_connections_again(lost)
        self._close_superseded(superseded, held)
        swept = await self.instances.sweep(self.instance_id)
        if swept:
            log.warning("recorded offline %d chargers of an instance that stopped renewing "
                        "its lease: %s", len(swept), ", ".join(swept[:20]))
        # After the sweep: chargers it found lost to a dead instance long ago are due.
        settled = await self.instances.settle_outages(self.instance_id)
        if settled:
            log.info("%d chargers did not come back after the central system's outage: "
                     "offline since it was up again: %s", len(settled),
                     ", ".join(settled[:20]))
        return swept

    def _held(self) -> dict[str, int | None]:
        """This instance's connections, each with its number (``None`` until recorded)."""
        held: dict[str, int | None] = {}
        for cp_id in self.gateway.connected():
            handler = self.gateway.handler_of(cp_id)
            held[cp_id] = handler.number if handler is not None else None
        return held

    def _close_superseded(self, cp_ids: list[str], held: dict[str, int | None]) -> None:
        """Closes this instance's sockets of ``cp_ids``, found superseded by a newer
        connection elsewhere whose announcement never came (the bus was away); not one
        that replaced them here while the store was read (``held``: the numbers read)."""
        for cp_id in cp_ids:
            handler = self.gateway.handler_of(cp_id)
            if handler is not None and handler.number == held[cp_id]:
                self._lost_to_elsewhere(handler)

    async def _record_connections_again(self, cp_ids: list[str]) -> None:
        for cp_id in cp_ids:
            await self._still_connected(cp_id)

    async def _still_connected(self, cp_id: str) -> None:
        """Records again this instance's connection of ``cp_id``, found recorded offline
        while its socket is open, unless it is no longer the station's newest (then this
        socket is stale, and closed)."""
        handler = self.gateway.handler_of(cp_id)
        number = handler.number if handler is not None else None
        if handler is None or number is None:
            return
        connected = await self.charging.connect(cp_id, instance=self.instance_id,
                                                number=number, again=True)
        if connected is None or self.gateway.handler_of(cp_id) is not handler:
            return
        if connected.newest:
            handler.connected_at = connected.at
        else:
            self._lost_to_elsewhere(handler)

    async def _watch_elsewhere(self, stream: Any) -> None:
        """With several instances: a charger that connected to another instance after
        it connected here has left this socket, even if it has not been noticed dead yet.
        Letting it go (``_let_go``: out of the gateway now, closed in the background)
        keeps commands from reaching the charger twice and frees the connection at once
        (its disconnect is not recorded: the newer connection is, see
        ``ChargingService.disconnect``). Newer is the higher connection number the store
        drew, not a later clock: two connections at one moment, or instances whose clocks
        are seconds apart, still have exactly one winner. An announcement heard while
        this instance is still recording its own connection is kept for when it is done
        (``_take``). This instance's own events carry its own number, drawn as its socket
        arrived (``_connection``), so a socket that waited its turn here is not taken
        for newer than one the charger opened elsewhere meanwhile."""
        async with contextlib.aclosing(stream):
            async for event in stream:
                if not isinstance(event, StationConnectionChanged) or not event.online:
                    continue
                handler = self.gateway.handler_of(event.cp_id)
                if handler is None:
                    continue
                if event.connection is None:
                    # From a version without numbers: by its clock, as it did.
                    if handler.connected_at is None or event.at <= handler.connected_at:
                        continue
                else:
                    mine = handler.number
                    if mine is None:
                        newest = self._newer_elsewhere.get(event.cp_id, 0)
                        self._newer_elsewhere[event.cp_id] = max(newest, event.connection)
                        continue
                    if event.connection <= mine:
                        continue
                self._lost_to_elsewhere(handler)

    def _lost_to_elsewhere(self, handler: ChargePointHandler) -> None:
        log.info("%s connected to another instance: closing its connection here",
                 handler.id)
        self._let_go(handler, ELSEWHERE, ELSEWHERE)

    def _let_go(self, handler: ChargePointHandler, left: str, reason: str) -> None:
        """``handler``'s connection is superseded by a newer one of its charger (here, or
        on another instance): it stops being the charger's connection at once, while its
        socket closes in the background. Left registered until that close was done (a
        dead peer's closing handshake takes the 10 s close timeout), it took this
        instance's commands and claimed relayed ones, which went to the dead socket and
        timed out (QA s24). Taken out of the gateway only if it is still the one there
        (a connection that replaced it here stays); its commands fail now
        (``ChargePointHandler.superseded``, saying the charger ``left``). Its close
        (1000, ``reason``) records no disconnect (``_connection``): the newer connection
        is the station's."""
        handler.superseded(left)
        self.gateway.unregister(handler)
        self._hang_up(handler, 1000, reason)

    async def _watch_removals(self, stream: Any) -> None:
        """A removed station's charger is hung up on at once, by whichever instance holds
        it; reconnecting, it meets the 401 of an unknown charge point. (Had this event
        been lost, its next message would still find the station gone.) Its connection
        stops being the charger's now, not once its close is done (a peer that does not
        answer it takes the 10 s close timeout): meanwhile the cpId created again had
        its commands sent to the closing socket, waiting out the command timeout, and
        what the socket still delivered was recorded on the new station, under the
        removed station's password (``ChargePointHandler.station_removed``). Only the
        connection that signed in as the removed station (``_signed_in_as``): matched by
        cpId, a removal delivered late (an instance lagging) after the cpId was created
        again and its charger connected let that connection go, the new station left
        online with no connection (review s25).

        A station given a new password (``StationPasswordChanged``) has the connection
        that signed in with the old one closed the same way (``_shut_out``); one not
        yet the gateway's when the event came is checked once it is (``_connection``)."""
        async with contextlib.aclosing(stream):
            async for event in stream:
                if not isinstance(event, StationRemoved | StationPasswordChanged):
                    continue
                handler = self.gateway.handler_of(event.cp_id)
                if handler is None or not _signed_in_as(handler, event.station_id):
                    continue
                if isinstance(event, StationPasswordChanged):
                    await self._shut_out(handler)
                    continue
                log.info("%s: its station was removed; closing", event.cp_id)
                handler.station_removed()
                # Its close then records no disconnect (``_connection``): the station
                # is gone, and one created again since was never this socket's.
                self.gateway.unregister(handler)
                self._hang_up(handler, CLOSE_UNKNOWN_STATION, "unknown charge point")

    async def _shut_out(self, handler: ChargePointHandler) -> None:
        """Closes ``handler``'s connection if its station's password, as stored now, is
        not the one it signed in with (a connection that signed in with the new one
        since stays): the charger must sign in again, and cannot without the new
        password. Its commands fail now; its close records its disconnect, as any
        (it stays the gateway's until then: no newer connection is the station's)."""
        if not handler.signed_in:
            return
        try:
            # As stored: this instance's cached copy may not have heard of the edit yet.
            changed = await self.charging.password_changed(
                handler.id, handler.signed_in_with, fresh=True)
        except StoreUnavailable as exc:
            # Its next message checks again, from the station as cached.
            log.warning("%s: could not check its password now: %s", handler.id, exc.reason)
            return
        except DomainError:
            return  # the station is gone: its removal hangs up
        if changed:
            log.info("%s: its station's password was changed; closing", handler.id)
            handler.password_changed()
            self._hang_up(handler, CLOSE_PASSWORD_CHANGED, "password changed")

    def _hang_up(self, handler: ChargePointHandler, code: int, reason: str) -> None:
        # In a task: the closing handshake with a dead peer may take a while.
        task = asyncio.create_task(handler.hang_up(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------- handshake
    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    async def _process_request(self, connection: ServerConnection, request: Request
                               ) -> Response | None:
        cp_id = cp_id_from_path(request.path)
        if cp_id is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "use /ocpp/{chargePointId}\n")
        peer = self._peer(connection, request)
        try:
            station = await self.charging.station_for_connection(cp_id, peer)
        except TooManyRequests as exc:  # auto-registration's limit: unknown ids only
            self.refusals.note(cp_id, peer, "too many new charge points from there: "
                                            "not registered")
            return _try_later(connection, HTTPStatus.TOO_MANY_REQUESTS,
                              "too many new charge points: try again later\n", exc.retry_after_s)
        except StoreUnavailable as exc:
            # The store is out (MongoDB unreachable, a full disk refusing a new
            # station): the charger is told to try again, as a connection that cannot be
            # recorded is (1013), not websockets' bare 500 for a handshake handler that
            # failed (review r26-api2).
            log.warning("%s: handshake refused, its station cannot be read or registered "
                        "now: %s", cp_id, exc.reason)
            return _try_later(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                              "the service is unavailable: try again later\n", STORE_RETRY_AFTER_S)
        except StoreBusy:
            # Another process (a CLI, a backup) held the SQLite database past the busy
            # timeout while a new station was registered: nothing was written, and the
            # charger's next try may simply succeed (review r26-api3).
            log.warning("%s: handshake refused, the database was locked by another "
                        "process: try again", cp_id)
            return _try_later(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                              "the service is busy: try again later\n", STORE_RETRY_AFTER_S)
        except Conflict:
            # Its station's insert (an operator's createStation, another handshake's
            # registration) is still in flight on MongoDB after the store's wait, and
            # may yet roll back: not signed in as it yet (session 29: websockets' bare
            # 500 for a handshake handler that failed).
            log.warning("%s: handshake refused, its station is still being stored: try "
                        "again", cp_id)
            return _try_later(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                              "the service is busy: try again later\n", STORE_RETRY_AFTER_S)
        unknown = station is None
        if station is None:
            # Answered as a station whose password nobody knows, not 404: a 404 here and
            # a 401 for a station's wrong password told anyone which cpIds exist (QA s26).
            station = await self._decoy(cp_id)
        if station.auth_password_hash is None:
            self._signed_in[connection] = (station.id, station.auth_password_hash,
                                           station.cp_id)
            return None  # security profile 0: the operator chose no password
        credentials = basic_credentials(request.headers.get("Authorization"))
        # A user name other than the cpId is refused before any password is looked at:
        # nothing about the password is learnt from it, so it is not counted either.
        verdict: bool | Refused = False
        # The user name is the charger's identity, a CiString as its cpId is: whatever
        # its case (QA s28), the station's, not the spelling of the path.
        if credentials is not None and cp_id_key(credentials[0]) == cp_id_key(station.cp_id):
            try:
                verdict = await self._password_in_time(station, credentials[1], peer)
            except asyncio.CancelledError:
                # The handshake timeout (or the server stopping) cut the wait: said, or
                # the charger's "no valid HTTP response" has nothing beside it here.
                if not self._stopping:
                    self.refusals.note(cp_id, peer, CHECK_DROPPED, level=logging.WARNING)
                raise
        if isinstance(verdict, Refused):
            if verdict.locked is not None:
                self.refusals.note(cp_id, peer, LOCKED_OUT[verdict.locked])
            elif verdict.reason:
                self.refusals.note(cp_id, peer, verdict.reason, level=verdict.level)
            return _try_later(connection, verdict.status, verdict.message, verdict.retry_after)
        if not verdict:
            self.refusals.note(cp_id, peer, UNKNOWN_CHARGE_POINT if unknown
                               else "no credentials" if credentials is None
                               else "wrong user name or password")
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "authentication failed\n")
            response.headers["WWW-Authenticate"] = REALM
            return response
        self._signed_in[connection] = (station.id, station.auth_password_hash, station.cp_id)
        return None

    async def _decoy(self, cp_id: str) -> Station:
        """What a cpId with no station is checked as (never stored): a station whose
        stored hash (``_unmatchable_hash``: argon2, the stations' parameters, made once)
        no password matches. From there on it is a station whose charger has not
        connected here: the same gate, turn per station, argon2 check on the same
        threads, counts (in tables of their own shared across instances,
        ``ChargerSignIns.unknown``, keyed by ``UNKNOWN_KEY``) and refusal delay
        (``_password_ok``), so neither the code path nor the time can tell it from a real
        cpId (review r26-security3: skipping argon2 for it, a burst of guesses at a real
        station was answered a queue of checks later, a made-up id's all at the delay).
        A scan's CPU is the guessers' budgets' (per address and per cpId), as a
        station's is."""
        return Station(cp_id=cp_id, name=cp_id,
                       auth_password_hash=await self._unmatchable_hash())

    async def _unmatchable_hash(self) -> str:
        if self._decoy_hash is None:
            self._decoy_hash = await self.charging.unmatchable_password_hash()
        return self._decoy_hash

    def _is_decoy(self, station: Any) -> bool:
        return self._decoy_hash is not None and station.auth_password_hash == self._decoy_hash

    def _limits(self, station: Any) -> tuple[ChargerSignIns, str]:
        """Where ``station``'s password checks are counted, and the hash their keys
        carry: made-up cpIds' in tables of their own (``ChargerSignIns.unknown``), by the
        same limits and clock, keyed by ``UNKNOWN_KEY`` (the same on every instance, so
        shared across instances as the stations' are)."""
        real = self.charging.sign_ins
        if not self._is_decoy(station):
            return real, station.auth_password_hash
        return (real.unknown if real.unknown is not None else real), UNKNOWN_KEY

    def _peer(self, connection: ServerConnection, request: Request) -> str:
        """The charger's address: behind a trusted proxy, from its X-Forwarded-For."""
        return self.proxies.client(
            connection.remote_address[0] if connection.remote_address else "",
            request.headers.get("X-Forwarded-For"))

    def _note_wrong_subprotocol(self, ws: ServerConnection) -> None:
        """Logs a charger refused for not offering ``ocpp1.6`` (one speaking OCPP 2.0.1
        only, or a client offering none) as the other refusals are, naming what it
        offered: otherwise the operator sees nothing while it is closed with 1002."""
        request = ws.request
        if request is None:  # not reached: the handler runs after a handshake
            return
        offered = [name.strip() for header in request.headers.get_all(SUBPROTOCOL_HEADER)
                   for name in header.split(",") if name.strip()]
        shown = ", ".join(offered) or "none"
        if len(shown) > SHOWN_OFFER:  # a header of any length must not make a long line
            shown = shown[:SHOWN_OFFER] + "…"
        self.refusals.note(cp_id_from_path(request.path) or "", self._peer(ws, request),
                           f"it does not offer the subprotocol {SUBPROTOCOL}",
                           f" (offered: {shown})")

    async def _password_in_time(self, station: Any, password: str, peer: str
                                ) -> bool | Refused:
        """``_password_ok``, or, when its answer is not known ``CHECK_DUE_SHARE`` of the
        handshake timeout after it arrived (on ``handshake_timer``), 503 with
        Retry-After (``CHECK_NOT_DUE``): its check runs on, and one still queued for
        its address's turn keeps its place and is checked when it comes (``_cut``;
        review r32-e: cancelled there, it never ran, and the retry needed a check of its
        own), its answer told to nobody but the digest cache."""
        verdict = asyncio.ensure_future(self._password_ok(station, password, peer))
        due = asyncio.ensure_future(
            self.handshake_timer.sleep(HANDSHAKE_TIMEOUT_S * CHECK_DUE_SHARE))
        try:
            await asyncio.wait({verdict, due}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            verdict.cancel()  # the handshake dropped: its wait goes with it
            raise
        finally:
            due.cancel()
        if not verdict.done():
            self._cut.add(verdict)
            verdict.add_done_callback(self._cut_done)
            return checks_busy(CHECK_NOT_DUE, "the password check did not finish in time: "
                                              "retry\n")
        return verdict.result()

    def _cut_done(self, verdict: asyncio.Future[bool | Refused]) -> None:
        self._cut.discard(verdict)
        if not verdict.cancelled() and verdict.exception() is not None:
            log.error("the password check of a handshake answered 503 failed",
                      exc_info=verdict.exception())

    async def _password_ok(self, station: Any, password: str, peer: str = "", *,
                           turn: bool = False, arrived: float | None = None
                           ) -> bool | Refused:
        """Whether ``password`` is the station's, counted (``ChargerSignIns``); ``Refused``
        (not checked) while ``peer`` is locked out of the station, or another password for
        the same station from the same address (an IPv6 one by its /64) is under way, or,
        for a password that needs a check, ``MAX_WAITING_PER_ADDRESS`` wait for their
        address's turn already (beyond ``MAX_PENDING_PER_ADDRESS`` pending, one waits its
        turn: ``_AddressTurns``), the address has spent its budget of unverified checks
        if it has one (``ChargerSignIns.checks``), or (503) ``MAX_PENDING_CHECKS`` checks
        are pending here, all but a share kept for known chargers unless its charger
        passed from ``peer`` (``_checks_refused``).

        Every password not known right is counted as it arrives, before anything checks
        or waits for it (one found right is taken back): a burst is held to the budget
        whatever the timing (review r26-security2). Its check runs as a task the
        handshake only awaits (``_check``): a handshake the websockets timeout drops
        while its check waits for the hashing threads leaves the check running, and a
        right password's count is taken back all the same (review r26-security3: the
        cancelled check never did, and five retries of a charger in a reconnect storm
        locked its own address out). A refusal is answered ``refusal_delay`` after its
        arrival at the earliest, the same for every cpId, real or made up
        (``_decoy``)."""
        if arrived is None:
            arrived = self.refusal_timer.now()
        holding = [turn]  # one of the address's turns, until a check task takes it over
        try:
            return await self._password_ok_holding(station, password, peer, holding,
                                                   arrived)
        finally:
            if holding[0]:
                self._turns.release(address_key(peer))

    async def _password_ok_holding(self, station: Any, password: str, peer: str,
                                   holding: list[bool], arrived: float) -> bool | Refused:
        """``_password_ok``; ``holding[0]``: one of the address's turns is held here
        (``_AddressTurns``), released by ``_password_ok`` unless a check took it over."""
        sign_ins, key = self._limits(station)
        # Before anything answers for the password, the cached digests too: they settled
        # guesses for free, thousands a second, once the charger had connected (QA s22).
        refused = self._locked_out(sign_ins, key, station.cp_id, peer)
        if refused is not None:
            return refused
        digest = hashlib.sha256(password.encode()).digest()
        # One password per station and address at a time, keyed as the limits count
        # addresses (review r26-security2: per raw address, one host of an IPv6 /64 sent
        # hundreds at once): while one is checked or waits for its refusal, another from
        # there is not looked at (429: come back), the right one too, before the cached
        # digest is compared (else a burst's every guess was compared with it while one
        # was counted). A flood from a few addresses is a few at a time, so a real
        # charger connecting from its own address is not held behind hundreds.
        slot = (station.cp_id, address_key(peer))
        under_way = self._in_flight.get(slot)
        if under_way is not None:
            if under_way.password_hash != station.auth_password_hash \
                    or not hmac.compare_digest(under_way.digest, digest):
                return Refused(1, "a password check from here is under way\n")
            # The same password again (its charger retrying a handshake the timeout
            # dropped while its check queued): that check's answer, not counted again
            # and no second check (review r26-security3: a reconnect storm).
            return await self._answer(station, peer, slot, under_way, arrived)
        # The password the charger passed with before the station's hash changed: its
        # charger, maybe not told yet of a new one (review s22: its retries counted
        # against the new password at its own address, and locked it out for up to the
        # longest lockout once it had it). Not counted. The current hash decides all the
        # same: the station may have been given the same password again, under a new
        # salt (QA s24: refused unchecked, the charger was locked out for good on every
        # instance it had passed on). Checked once per hash: its refusal is remembered
        # with the cached digest, a pass cached.
        former = self._former_password(station, digest)
        known = self._known_answer(station, digest)
        if known:
            # The password of the station's last accepted connection here: answered at
            # once, never counted, never queued (reconnect storms cost no argon2).
            return self._passed(station, peer)
        # Every other password is checked by argon2 within the same bounds, a connected
        # station's wrong ones too (``_known_answer``): otherwise a prober who spent its
        # address's budget (or kept four checks pending) read 401 for a connected station
        # and 429 for a made-up cpId.
        client = address_key(peer)
        if not holding[0]:
            if not self._turns.take_now(client):
                # The address has its checks pending: this one waits its turn, first
                # come first served, within the handshake timeout (dropped, it leaves the
                # queue having counted nothing), then is looked at afresh (a lockout, a
                # check of the same password or a cached digest may have come since).
                if self._turns.queue_full(client):
                    return Refused(CHECKS_BUSY_RETRY_AFTER_S,
                                   "too many password checks from here: try again later\n",
                                   reason="too many password checks waiting from there: "
                                          "not checked, not counted",
                                   level=logging.WARNING)
                await self._turns.wait(client)
                return await self._password_ok(station, password, peer, turn=True,
                                               arrived=arrived)
            holding[0] = True
        known_check = self._known_check(sign_ins, station.cp_id, peer)
        busy = self._checks_refused(peer, known_check)
        if busy is not None:
            return busy
        lockouts = [] if former else sign_ins.failed(station.cp_id, key, peer)
        if not former:  # the charger's former password spends no budget, as no count
            self.charging.sign_ins.check_started(peer)
        check: asyncio.Future[bool]
        if known is None:
            check = asyncio.create_task(
                self._check(station, password, digest, former, peer, lockouts),
                name="chargegraph-ocpp-password-check")
            self._checks.add(check)
            if known_check:
                self._known_checks[station.cp_id] = self._known_checks.get(station.cp_id, 0) + 1
            holding[0] = False  # the address's turn is the check's until it ends
            counted = None if former else sign_ins
            check.add_done_callback(lambda done: self._check_ended(
                done, client, station.cp_id, key, peer, counted, known_check))
        else:  # the charger's former password, refused by this hash already: no argon2
            check = asyncio.get_running_loop().create_future()
            check.set_result(False)
            self._turns.release(client)  # no check: the turn is not held for the delay
            holding[0] = False
        under_way = _UnderWay(digest, station.auth_password_hash, check)
        self._in_flight[slot] = under_way
        check.add_done_callback(lambda done: self._check_done(done, slot, under_way))
        return await self._answer(station, peer, slot, under_way, arrived)

    def _known_check(self, sign_ins: ChargerSignIns, cp_id: str, peer: str) -> bool:
        """Whether a check of ``cp_id``'s password from ``peer`` may take the share kept
        for known chargers (``KNOWN_SHARE_OF``): its charger passed from there (never a
        made-up id's: ``sign_ins`` is then their table, where nobody passes) and the
        station has fewer than ``KNOWN_SHARE_PER_STATION`` such checks pending."""
        return sign_ins.passed_from(cp_id, peer) \
            and self._known_checks.get(cp_id, 0) < KNOWN_SHARE_PER_STATION

    def _checks_refused(self, peer: str, known_check: bool = False) -> Refused | None:
        """Why a password not known right is not checked now, counted nowhere, once it
        has its address's turn: its address has spent its budget of unverified checks,
        if there is one (429: one address's work is bounded across cpIds, a real cpId's
        and a made-up one's alike); or ``MAX_PENDING_CHECKS`` are pending here (503:
        the instance's), or, unless ``known_check`` (``_known_check``), all but the share
        kept for known chargers (``KNOWN_SHARE_OF``)."""
        spent = self.charging.sign_ins.checks_refused_for(peer)
        if spent is not None:
            return Refused(max(1, math.ceil(spent.total_seconds())),
                           "too many password checks from here: try again later\n",
                           reason="too many password checks from there lately: not "
                                  "checked, not counted")
        kept = 0 if known_check else MAX_PENDING_CHECKS // KNOWN_SHARE_OF
        if len(self._checks) >= MAX_PENDING_CHECKS - kept:
            return checks_busy("too many password checks pending: not checked, not counted")
        return None

    def _check_ended(self, check: asyncio.Future[bool], client: str, cp_id: str, key: str,
                     peer: str, counted: ChargerSignIns | None, known_check: bool) -> None:
        """A check is over: its address has one fewer pending. Cancelled (``stop``: the
        instance goes, its handshakes with it), the password was never checked, so
        what its arrival counted is withdrawn, here and (shared) on the other instances:
        in ``counted`` (``None``: the charger's former password, never counted) the
        failure, which may have started a lockout, and the address's check (review
        r26-security4: a right password pending at a stop stayed counted as wrong)."""
        self._turns.release(client)
        if known_check:
            left = self._known_checks[cp_id] - 1
            if left:
                self._known_checks[cp_id] = left
            else:
                del self._known_checks[cp_id]
        if not check.cancelled():
            return
        if counted is not None:
            self.charging.sign_ins.check_given_back(peer)
            counted.forgive(cp_id, key, peer)

    async def _check(self, station: Any, password: str, digest: bytes, former: bool,
                     peer: str, lockouts: list[Lockout]) -> bool:
        """A password's argon2 check and what follows from it, whether or not its
        handshake still waits: remembered, and a right one's count taken back (a wrong
        one's stays, its lockouts logged). On the chargers' hashing threads (a few at a
        time) and one check per station at a time, so a flood against one station waits
        behind itself rather than taking every thread."""
        async with self._checking.one_at_a_time(station.cp_id):
            ok = await self.charging.station_password_ok(station, password)
        self._remember(station, digest, ok, former)
        sign_ins, key = self._limits(station)
        if ok:
            if not former:  # verified: neither a failure nor the address's budget's
                self.charging.sign_ins.check_given_back(peer)
                sign_ins.forgive(station.cp_id, key, peer)
        else:
            for lockout in lockouts:  # once, at WARNING: an operator should see an attack
                self._log_lockout(station.cp_id, peer, lockout,
                                  unknown=self._is_decoy(station))
        return ok

    def _check_done(self, check: asyncio.Future[bool], slot: tuple[str, str],
                    under_way: _UnderWay) -> None:
        if isinstance(check, asyncio.Task):
            self._checks.discard(check)
        if not check.cancelled() and check.exception() is not None and not under_way.handshakes:
            log.error("a password check failed with nobody waiting",
                      exc_info=check.exception())
        self._release(slot, under_way)

    def _release(self, slot: tuple[str, str], under_way: _UnderWay) -> None:
        if under_way.check.done() and not under_way.handshakes \
                and self._in_flight.get(slot) is under_way:
            del self._in_flight[slot]

    async def _answer(self, station: Any, peer: str, slot: tuple[str, str],
                      under_way: _UnderWay, arrived: float) -> bool:
        """``under_way``'s answer for a handshake: right at once; wrong not before
        ``refusal_delay`` after the handshake arrived (a sleep: no CPU, no turn of the
        station's, no hashing thread; only the address's slot is held). Cancelled (the
        handshake dropped), the check goes on."""
        under_way.handshakes += 1
        try:
            if await asyncio.shield(under_way.check):
                return self._passed(station, peer)
            timer = self.refusal_timer
            await timer.sleep(max(0.0, self.refusal_delay - (timer.now() - arrived)))
            return False
        finally:
            under_way.handshakes -= 1
            self._release(slot, under_way)

    def _locked_out(self, sign_ins: ChargerSignIns, key: str, cp_id: str, peer: str
                    ) -> Refused | None:
        lockout = sign_ins.lockout(cp_id, key, peer)
        if lockout is None:
            return None
        return Refused(max(1, math.ceil(lockout.lasts.total_seconds())),
                       "too many wrong passwords: try again later\n", locked=lockout.limit)

    def _former_password(self, station: Any, digest: bytes) -> bool:
        """Whether ``digest`` is of the password the station's charger passed with here
        before the station's hash changed: given another password, or the same one
        again (``_password_ok`` checks it against the new hash)."""
        cached = self._verified.get(station.cp_id)
        return cached is not None and cached[0] != station.auth_password_hash \
            and hmac.compare_digest(cached[1], digest)

    def _known_answer(self, station: Any, digest: bytes) -> bool | None:
        """What a password already checked against the station's hash was, from the
        station's cached digest (its charger passed here): right (reconnect storms cost
        no argon2); or the password it passed with before, already refused by the
        current hash (False). ``None``: it must be checked, any other wrong password
        too: told wrong by the digest at once, a connected station's guesses were
        answered at the refusal delay while a made-up id's (checked by argon2,
        ``_decoy``) waited for busy hashing threads, which told the two apart (session
        30). Checked, a wrong guess costs what it costs at any station or a made-up id,
        within the same bounds.

        Nothing else is answered from memory (review r26-security4: guesses refused
        lately were, skipping the pending bound, kept per station for a real cpId and in
        one table for all made-up ones; a prober pushed a made-up id's out and told it
        from a real one by 401 against 503; and that table held whole cpIds). A repeated
        wrong guess costs a check again, as the first did: the lockouts bound that (5
        per cpId and address, 20 per cpId, then refused unchecked) and the address's
        budget (``ChargerSignIns.checks``)."""
        cached = self._verified.get(station.cp_id)
        if cached is None:
            return None
        password_hash, matched, refused_by = cached
        if password_hash == station.auth_password_hash:
            # The password it was set to; another is checked.
            return True if hmac.compare_digest(matched, digest) else None
        if refused_by == station.auth_password_hash and hmac.compare_digest(matched, digest):
            return False  # its former password, checked against this hash already
        return None

    def _remember(self, station: Any, digest: bytes, ok: bool, former: bool) -> None:
        """A right password's digest cached; a former one refused by the new hash noted
        with it (only a station whose charger passed here has either)."""
        if ok:
            self._verified[station.cp_id] = (station.auth_password_hash, digest, None)
            return
        cached = self._verified.get(station.cp_id)
        if former and cached is not None and hmac.compare_digest(cached[1], digest):
            self._verified[station.cp_id] = (cached[0], cached[1], station.auth_password_hash)

    def _passed(self, station: Any, peer: str) -> bool:
        """The right password: its address's count is cleared and the address known for
        the station (``ChargerSignIns.succeeded``), here and stored. Only a real station
        passes: a made-up id is checked against a hash no password matches (``_decoy``)."""
        self.charging.charger_passed(station, station.auth_password_hash, peer)
        return True

    def _log_lockout(self, cp_id: str, peer: str, lockout: Lockout, *,
                     unknown: bool = False) -> None:
        limits = self.charging.sign_ins.limits
        window = _duration(limits.window)
        if lockout.limit is Limit.ADDRESS:
            # An unknown one said so: the operator has no such station to look for.
            log.warning("%scharge point %r: %d wrong passwords from %s within %s: that "
                        "address is refused unchecked for %s",
                        "unknown " if unknown else "", shown_id(cp_id),
                        limits.per_address, shown_id(peer) or "?", window,
                        _duration(lockout.lasts))
        else:
            log.warning("%scharge point %r: %d wrong passwords from all addresses within "
                        "%s: for %s only the addresses its charger passed from are "
                        "checked", "unknown " if unknown else "", shown_id(cp_id),
                        limits.per_station, window,
                        _duration(lockout.lasts))

    # ------------------------------------------------------------- connection
    def _newer_here(self, cp_id: str, number: int) -> bool:
        """Whether the connection this instance holds for ``cp_id`` is newer than the
        arrival numbered ``number``: an older socket never replaces a newer one (had it
        done so, it would also lose to it in the store, and both would be closed)."""
        current = self.gateway.handler_of(cp_id)
        held = current.number if current is not None else None
        return held is not None and held > number

    async def _take(self, handler: ChargePointHandler, number: int, peer: Any) -> bool:
        """Makes the arrival ``handler`` (numbered ``number``) the charger's connection
        here and records it; called holding the charge point's arrival lock, so the
        next arrival finds its number (``_newer_here``). False when its station is gone
        since the handshake (removed meanwhile, its ``StationRemoved`` heard before this
        connection was the gateway's to hang up), or is no longer the one the handshake
        signed it in as (removed and created again under the cpId meanwhile: session 30,
        it took the new station's charger, connection and commands, under the removed
        one's password check): nothing was recorded, and the arrival
        is let go as a removed station's (``ChargePointHandler.station_removed``), out
        of the gateway, so its close records nothing either; the caller hangs up."""
        cp_id = handler.id
        previous = self.gateway.register(handler)
        if previous is not None:
            # Closed in the background: a dead peer's closing handshake takes the full
            # close timeout, and the charger's new connection was not answered
            # meanwhile (its boot waited 10 s).
            log.info("%s reconnected: closing its previous connection", cp_id)
            self._let_go(previous, "reconnected", "replaced by a new connection")
        log.info("%s connected from %s", cp_id, peer)
        connected = await self.charging.connect(cp_id, instance=self.instance_id,
                                                number=number, station_id=handler.station_id)
        if connected is None:
            log.warning("%s: its station is gone since it signed in (removed meanwhile, "
                        "maybe created again): closing as an unknown charge point", cp_id)
            handler.station_removed()
            self.gateway.unregister(handler)
            return False
        handler.number = connected.number
        handler.connected_at = connected.at
        newer = self._newer_elsewhere.pop(cp_id, None)
        if not connected.newest or (newer is not None and newer > connected.number):
            # The charger connected to another instance after this socket arrived
            # there: this one goes.
            self._lost_to_elsewhere(handler)
        return True

    async def _connection(self, ws: ServerConnection) -> None:
        if ws.subprotocol != SUBPROTOCOL:
            self._note_wrong_subprotocol(ws)
            await ws.close(1002, "subprotocol ocpp1.6 required")
            return
        signed_in = self._signed_in.pop(ws, None)
        # Known by its station's cpId as stored: a charger connecting as ``cp-001`` is
        # station ``CP-001``'s (``ChargerConnections.station_whatever_case``), and every
        # record (sessions, connectors, the gateway's table) names it so.
        cp_id = signed_in[2] if signed_in is not None \
            else cp_id_from_path(ws.request.path if ws.request else "") or ""
        handler = ChargePointHandler(cp_id, ws, self.charging,
                                     response_timeout=self.response_timeout,
                                     metrics=self.metrics, strict_schema=self.strict_schema,
                                     pacer=self.pacers.of(cp_id),
                                     max_sampled_values=self.max_sampled_values)
        if signed_in is not None:
            handler.station_id, handler.signed_in_with, _ = signed_in
            handler.signed_in = True
        try:
            # The number ordering this connection among the charger's others (here and on
            # other instances) is drawn as the socket arrives, before it waits its turn:
            # drawn after the wait, an arrival queued here behind a slow one was numbered
            # after the charger's newer socket on another instance, recorded as the
            # newest, and that live socket was closed as superseded.
            number = await self.charging.draw_connection()
            # One arrival of a charge point at a time, from taking the gateway to its
            # connection recorded: a connection replaced while it waited for the one
            # before it to close was recorded after its replacement, as the newest: the
            # live one's disconnect was then refused, and the station stayed online
            # with no connection (QA s18, soak).
            async with self._arriving.one_at_a_time(cp_id):
                if ws.state is not State.OPEN:
                    return  # gone while it waited its turn: nothing to record (review s18)
                stale = self._newer_here(cp_id, number)
                gone = not stale and not await self._take(handler, number,
                                                          ws.remote_address)
            if gone:
                # Outside the lock, as below: its station was never recorded online.
                await ws.close(CLOSE_UNKNOWN_STATION, "unknown charge point")
                return
            if stale:
                # Its turn came after a newer arrival's (its number drawn first, it got
                # the lock last): the charger has left this socket. Closed outside the
                # lock: an abandoned socket's closing handshake takes the close timeout.
                log.info("%s: a newer connection arrived first: closing this one", cp_id)
                await ws.close(1000, "replaced by a new connection")
                return
            if self.gateway.handler_of(cp_id) is handler:
                # Now the station's connection, which ``StationPasswordChanged`` finds:
                # a new password that landed since its handshake (while it drew its
                # number, waited its turn, was recorded) was announced to no handler,
                # or to the one it replaced. Checked once as stored, it is shut out
                # now, not left connected until it chooses to send something (review
                # s26: a silent charger kept its station online and took its commands).
                await self._shut_out(handler)
            await handler.start()
        except ConnectionClosed:
            pass
        except StoreUnavailable as exc:
            # The connection cannot be recorded (a full disk): the charger is told to come
            # back later, as a server error; the store's own log line says why, once.
            log.warning("%s: closing, the store cannot write now (%s)", cp_id, exc.reason)
            await ws.close(CLOSE_TRY_AGAIN_LATER, "the central system cannot store now")
        finally:
            # Its charger's pace, no longer in use by this connection (``ChargerPacers``).
            self.pacers.release(cp_id)
            # First: a command waiting for this charger's answer fails now with
            # CHARGER_OFFLINE, not at its timeout.
            handler.connection_closed()
            recorded, handler.number = handler.number, None
            # Not if it was let go already (superseded, ``_let_go``), or replaced here.
            if self.gateway.unregister(handler):
                self._newer_elsewhere.pop(cp_id, None)
                log.info("%s disconnected (close code %s%s)", cp_id, ws.close_code,
                         f": {ws.close_reason!r}" if ws.close_reason else "")
                try:
                    # Only if this connection is still the station's newest.
                    # No close frame came (1006: a charger that lost power or
                    # network, or stopped answering pings): it was last heard at its
                    # last frame, not now (QA s21: lastSeen 70 s after its last word).
                    unheard = ws.close_code == CloseCode.ABNORMAL_CLOSURE
                    await self.charging.disconnect(
                        cp_id, number=recorded, instance=self.instance_id,
                        stopping=self._stopping, heard=not unheard,
                        last_heard=handler.heard_at)
                except StoreUnavailable as exc:
                    log.warning("%s: could not record the disconnect: %s", cp_id,
                                exc.reason)
                except Exception:  # the store may already be closing at shutdown
                    log.exception("%s: could not record the disconnect", cp_id)


def _signed_in_as(handler: ChargePointHandler, station_id: str | None) -> bool:
    """Whether ``handler``'s connection signed in as the station ``station_id`` (one not
    known on either side is taken as its: the cpId is all there is to go by)."""
    return handler.station_id is None or station_id is None \
        or handler.station_id == station_id


def shown_id(text: str) -> str:
    """A cpId (or an address) as log lines show it: at most ``SHOWN_ID`` characters, then
    "…": a scan's ids padded to 4,000 characters wrote megabytes a second (QA s22)."""
    return text if len(text) <= SHOWN_ID else text[:SHOWN_ID] + "…"


@dataclass(slots=True)
class _Minute:
    """One reason's minute of ``RefusalLog``: lines written, and those held back."""

    started: float
    written: int = 0
    held: int = 0
    #: Which charge points the held lines were about (bounded: beyond it, only counted).
    held_ids: set[str] = field(default_factory=set)
    #: The timer that writes the summary at the minute's end.
    timer: asyncio.TimerHandle | None = None
    #: The level of its lines (``RefusalLog.note``), the summary's.
    level: int = logging.INFO


class RefusalLog:
    """Logs refused handshakes (unknown cpId, bad credentials, locked out, no ``ocpp1.6``
    offered) so an operator can see why a charger does not connect; a charger retrying
    every few seconds, or a scan of made-up ids, must not flood the log:

    - a charge point and reason at most once a minute (a retrying charger);
    - a reason at most ``PER_REASON`` lines a minute in all (a scan: every made-up id is
      a new charge point, QA s22 wrote 3,000 lines for 3,000 handshakes). What is held
      back is summed up in one line, "N more charge points refused: reason", at the
      minute's end, or before the reason's next line, whichever comes first;
    - cpIds and addresses cut to ``SHOWN_ID`` characters (``shown_id``).
    Never the credentials themselves."""

    EVERY_S = 60.0
    PER_REASON = 5
    REMEMBERED = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        #: reason → its current minute. The reasons are few (their details, the
        #: subprotocols offered, are not part of the key): so is this.
        self._minutes: dict[str, _Minute] = {}

    def note(self, cp_id: str, peer: str, reason: str, detail: str = "", *,
             level: int = logging.INFO) -> None:
        """``detail`` follows the reason in the line (which subprotocols were offered):
        a charger offering something else logs again, but it counts in its reason's
        lines a minute, so varying it does not get a scan more lines. ``level``: INFO,
        or WARNING for a charger turned away for want of capacity (``Refused.level``);
        its reason's summary line has it too."""
        now = self.clock()
        shown = shown_id(cp_id)
        key = (shown, reason + detail)  # cut: 10,000 ids of 4,000 characters were 40 MB
        last = self._last.get(key)
        if last is not None and now - last < self.EVERY_S:
            return
        minute = self._minute(reason, now)
        minute.level = max(minute.level, level)
        if minute.written >= self.PER_REASON:
            self._hold(minute, reason, shown)
            return
        if len(self._last) >= self.REMEMBERED:
            self._last.clear()
        self._last[key] = now
        minute.written += 1
        log.log(level, "refused charge point %r from %s: %s%s", shown,
                shown_id(peer) or "?", reason, detail)

    def flush(self) -> None:
        """Writes every summary still held (the server stops)."""
        for reason in list(self._minutes):
            self._end(reason)

    def end_due(self) -> None:
        """Writes the summaries of the minutes that are over (their timers call it)."""
        now = self.clock()
        for reason, minute in list(self._minutes.items()):
            if now - minute.started >= self.EVERY_S:
                self._end(reason)

    def _minute(self, reason: str, now: float) -> _Minute:
        minute = self._minutes.get(reason)
        if minute is not None and now - minute.started >= self.EVERY_S:
            self._end(reason)  # its summary goes before this line
            minute = None
        if minute is None:
            minute = self._minutes[reason] = _Minute(started=now)
        return minute

    def _hold(self, minute: _Minute, reason: str, shown: str) -> None:
        minute.held += 1
        if len(minute.held_ids) < self.REMEMBERED:
            minute.held_ids.add(shown)
        if minute.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a tool): the next line writes it
                return
            left = self.EVERY_S - (self.clock() - minute.started)
            minute.timer = loop.call_later(max(left, 0.0), self.end_due)

    def _end(self, reason: str) -> None:
        minute = self._minutes.pop(reason)
        if minute.timer is not None:
            minute.timer.cancel()
        if not minute.held:
            return
        charge_points = len(minute.held_ids)
        attempts = "" if minute.held == charge_points else f" ({minute.held} attempts)"
        log.log(minute.level, "%d more charge points refused: %s%s", charge_points, reason,
                attempts)


def _duration(span: timedelta) -> str:
    """A lockout or window as a log line says it: "90 s", "15 min", "1.5 h"."""
    seconds = round(span.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    return f"{round(seconds / 60, 1):g} min" if seconds < 7200 \
        else f"{round(seconds / 3600, 1):g} h"


def _gone(host: str) -> bool:
    """Whether the process holding a lease is known to be gone: one of this host whose
    pid no longer runs, or is ours (a container restarted gets pid 1 again). Such a lease
    is a crashed predecessor's, still unexpired, not another live instance. Of another
    host nothing is known: it is taken as alive."""
    name, _, pid = host.rpartition(":")
    if name != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it runs, as another user
        return False
    return False


def _host_label() -> str:
    """Which process holds a lease, for an operator reading the store."""
    return f"{socket.gethostname()}:{os.getpid()}"


def checks_busy(reason: str,
                message: str = "too many password checks pending: try again later\n"
                ) -> Refused:
    """503 with Retry-After: no password check can be done for the handshake in time
    (the checks pending here are full, or its own is not done by the time it is due);
    logged at WARNING with ``reason``."""
    return Refused(CHECKS_BUSY_RETRY_AFTER_S, message,
                   status=HTTPStatus.SERVICE_UNAVAILABLE, reason=reason,
                   level=logging.WARNING)


def _try_later(connection: ServerConnection, status: HTTPStatus, body: str,
               retry_after_s: int) -> Response:
    """A handshake refused for now (a limit, the store out or busy): ``status`` with
    ``Retry-After``, which chargers honour before trying again."""
    response = connection.respond(status, body)
    response.headers["Retry-After"] = str(retry_after_s)
    return response
