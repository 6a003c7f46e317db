"""Simulated OCPP 1.6J charge points, built on the ``ocpp`` package as a client.

They boot, report status, charge with realistic meter values and answer every command a
central system can send — for the demo, for load benchmarks, and as the real charger in
end-to-end tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from http import HTTPStatus
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response

from ocpp_bridge.simulator_state import ChargerStates

log = logging.getLogger("chargegraph.simulator")
wire_log = logging.getLogger("chargegraph.simulator.wire")

VENDOR = "ChargeGraph"
#: What ``start_transaction`` reports for a start answered with a CALLERROR.
CALL_ERROR = "CallError"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Plug:
    """A connector's current and rating, as its station's record has them: an AC plug
    gives a car what its on-board charger takes, up to ``max_w``; a DC plug charges at
    ``max_w`` and tapers as the car's battery fills (``car_power_w``)."""
    kind: str = "AC"  # "AC" or "DC"
    max_w: float = 22_000.0

    @property
    def dc(self) -> bool:
        return self.kind == "DC"


#: What cars' on-board chargers take from an AC plug (W): single-phase 7.4 kW, 11 and
#: 22 kW on three phases.
ON_BOARD_CHARGERS_W = (7_400.0, 11_000.0, 22_000.0)
#: Usable battery capacities of the cars that arrive (Wh).
BATTERIES_WH = (40_000.0, 58_000.0, 77_000.0, 100_000.0)
#: What a car's battery is filled to when the car stops charging by itself (%).
FULL_SOC = 100.0


def dc_taper(soc: float) -> float:
    """The share of its rating a DC plug delivers at the car's State of Charge, as fast
    chargers' curves go: the full rating up to 50 %, half of it at 80 %, a trickle
    (8 %) at the top."""
    if soc <= 50.0:
        return 1.0
    if soc <= 80.0:
        return 1.0 - 0.5 * (soc - 50.0) / 30.0
    return max(0.08, 0.5 - 0.42 * (soc - 80.0) / 20.0)


@dataclass
class ConnectorState:
    status: str = "Available"
    error_code: str = "NoError"
    transaction_id: int | None = None
    id_tag: str | None = None
    meter_wh: float = 0.0
    power_w: float = 0.0
    soc: float = 20.0
    reservation_id: int | None = None
    #: The tags the reservation holds the connector for: its own, and its parent's.
    reserved_for: tuple[str, ...] = ()
    #: Operative (ChangeAvailability): an inoperative connector is Unavailable once idle
    #: and takes no start nor reservation.
    available: bool = True
    #: The availability a ChangeAvailability answered Scheduled asked for: applied when
    #: the transaction under way ends (OCPP 1.6, 5.2).
    scheduled: bool | None = None
    plug: Plug = field(default_factory=Plug)
    #: The car plugged in: its battery (Wh) and what it takes from the plug (W, before
    #: the plug's taper and the charging profiles' limits).
    battery_wh: float = 60_000.0
    car_max_w: float = 0.0

    def idle_status(self) -> str:
        """What the connector shows without a transaction."""
        if not self.available:
            return "Unavailable"
        return "Reserved" if self.reservation_id is not None else "Available"


class Disconnected(ConnectionError):
    """The charger cannot talk to the central system now: its connection closed (or it
    has a new one that has not yet delivered what the charger kept meanwhile)."""


def _kept(payload: Any) -> bool:
    """OCPP 1.6 transaction-related messages (4.7): a charger that cannot deliver them
    keeps them and sends them in order once connected again, so the central system still
    gets every transaction's meter values and its end."""
    return isinstance(payload, call.StopTransaction) or (
        isinstance(payload, call.MeterValues) and payload.transaction_id is not None)


def _dropped(payload: Any) -> bool:
    """Reports an offline charger does not keep: it reports its state anew once back
    (``report_all``), which says more than a backlog of old ones."""
    return isinstance(payload, call.StatusNotification | call.MeterValues) \
        and not _kept(payload)


def _report(cp_id: str, task: asyncio.Task[Any]) -> None:
    """Retrieves how a background task of a charger ended: none may end "never retrieved"
    (the asyncio ERROR lines a server restart used to print). A lost connection is what
    chargers live with; anything else is worth a warning."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, Disconnected):
        log.info("%s: %s", cp_id, error)
    elif error is not None:
        log.warning("%s: %s failed: %r", cp_id, task.get_name(), error)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Marks a failure as seen whose awaiting caller was cancelled meanwhile."""
    if not task.cancelled():
        task.exception()


#: Settings that, like on many real chargers, take effect only after a reboot.
REBOOT_KEYS = frozenset({"WebSocketPingInterval"})


def _valid_value(key: str, value: str) -> bool:
    """Whether a charger takes ``value`` for ``key``: a whole number of seconds or
    times (ASCII digits: review r28-sim, ``str.isdigit`` took "²", stored it, then
    ``int`` failed the handler), a boolean (``true``/``false``), anything for the
    others."""
    if key in INTEGER_KEYS:
        return value.isascii() and value.isdigit()
    if key in BOOLEAN_KEYS:
        return value.lower() in ("true", "false")
    if key in MEASURAND_KEYS:
        # A charger refuses to sample what it has no meter for (OCPP 1.6, 9.1).
        return all(m in MEASURANDS for m in _measurands(value))
    return True


def _flag(value: Any) -> bool:
    """A kept boolean, strictly: ``bool("false")`` is True."""
    if not isinstance(value, bool):
        raise TypeError(f"not a boolean: {value!r}")
    return value


def _measurands(value: str) -> list[str]:
    """The measurands a comma-separated list (``MeterValuesSampledData``, …) names."""
    return [m.strip() for m in value.split(",") if m.strip()]


@dataclass
class SimulatorConfig:
    connectors: int = 2
    max_power_w: float = 22_000.0
    meter_interval_s: float = 10.0
    vendor: str = VENDOR
    model: str = "SimCharger 2"
    firmware: str = "1.4.2"
    #: Each connector's plug, connector 1 first; connectors beyond them AC at
    #: ``max_power_w`` (``chargegraph simulate``'s stations).
    plugs: tuple[Plug, ...] = ()
    #: The State of Charge the cars arrive with (%, drawn between the two).
    arrival_soc: tuple[float, float] = (10.0, 50.0)
    #: Seconds an UpdateFirmware's download and installation take, each.
    firmware_step_s: float = 1.0

    def plug(self, connector_id: int) -> Plug:
        if connector_id <= len(self.plugs):
            return self.plugs[connector_id - 1]
        return Plug("AC", self.max_power_w)


#: OCPP 1.6's configuration keys the simulated charger holds (value, readonly), as a
#: Core, LocalAuthListManagement, Reservation, SmartCharging, FirmwareManagement and
#: RemoteTrigger charger has them; ``NumberOfConnectors`` and ``MeterValueSampleInterval``
#: are filled in from its config.
STANDARD_CONFIGURATION: dict[str, tuple[str, bool]] = {
    "AllowOfflineTxForUnknownId": ("false", False),
    "AuthorizationCacheEnabled": ("true", False),
    "AuthorizeRemoteTxRequests": ("false", False),
    "ClockAlignedDataInterval": ("900", False),
    "ConnectionTimeOut": ("60", False),
    "ConnectorPhaseRotation": ("0.RST", False),
    "GetConfigurationMaxKeys": ("50", True),
    "HeartbeatInterval": ("300", False),
    "LocalAuthorizeOffline": ("true", False),
    "LocalPreAuthorize": ("false", False),
    "MeterValuesAlignedData": ("Energy.Active.Import.Register", False),
    "MeterValuesSampledData": ("Energy.Active.Import.Register,Power.Active.Import,"
                               "Current.Import,Voltage,SoC", False),
    "ResetRetries": ("3", False),
    "StopTransactionOnEVSideDisconnect": ("true", False),
    "StopTransactionOnInvalidId": ("true", False),
    "StopTxnAlignedData": ("", False),
    "StopTxnSampledData": ("Energy.Active.Import.Register", False),
    "SupportedFeatureProfiles": ("Core,FirmwareManagement,LocalAuthListManagement,"
                                 "Reservation,SmartCharging,RemoteTrigger", True),
    "TransactionMessageAttempts": ("3", False),
    "TransactionMessageRetryInterval": ("60", False),
    "UnlockConnectorOnEVSideDisconnect": ("true", False),
    "LocalAuthListEnabled": ("true", False),
    "LocalAuthListMaxLength": ("1000", True),
    "SendLocalListMaxLength": ("100", True),
    # A ReserveNow for connector 0 is taken (it holds the first free connector).
    "ReserveConnectorZeroSupported": ("true", True),
    "ChargeProfileMaxStackLevel": ("10", True),
    "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True),
    "ChargingScheduleMaxPeriods": ("24", True),
    "MaxChargingProfilesInstalled": ("10", True),
    "WebSocketPingInterval": ("60", False),
}
#: Keys whose values are whole numbers (a ChangeConfiguration of anything else is
#: Rejected, as chargers check what they are sent), and those that are booleans.
INTEGER_KEYS = frozenset({
    "ClockAlignedDataInterval", "ConnectionTimeOut", "HeartbeatInterval",
    "MeterValueSampleInterval", "ResetRetries", "TransactionMessageAttempts",
    "TransactionMessageRetryInterval", "WebSocketPingInterval"})
BOOLEAN_KEYS = frozenset({
    "AllowOfflineTxForUnknownId", "AuthorizationCacheEnabled", "AuthorizeRemoteTxRequests",
    "LocalAuthorizeOffline", "LocalPreAuthorize", "StopTransactionOnEVSideDisconnect",
    "StopTransactionOnInvalidId", "UnlockConnectorOnEVSideDisconnect",
    "LocalAuthListEnabled"})
#: What the simulated charger meters (a DC plug the SoC only: an AC one cannot know it),
#: and the keys naming measurands to report: a change naming another is Rejected.
MEASURANDS = frozenset({"Energy.Active.Import.Register", "Power.Active.Import",
                        "Current.Import", "Voltage", "SoC"})
MEASURAND_KEYS = frozenset({"MeterValuesSampledData", "MeterValuesAlignedData",
                            "StopTxnSampledData", "StopTxnAlignedData"})


class SimulatedChargePoint(ChargePoint):
    def __init__(self, cp_id: str, connection: Any, config: SimulatorConfig | None = None,
                 response_timeout: float = 30, states: ChargerStates | None = None) -> None:
        super().__init__(cp_id, connection, response_timeout=response_timeout,
                         logger=wire_log)
        self.config = config or SimulatorConfig()
        #: Where it keeps what it was told across a restart (``kept``); None: nowhere.
        self.states = states
        self.connectors = {i: ConnectorState(meter_wh=random.uniform(1e5, 5e6),
                                             plug=self.config.plug(i))
                           for i in range(1, self.config.connectors + 1)}
        self.configuration: dict[str, tuple[str, bool]] = {
            **STANDARD_CONFIGURATION,
            "MeterValueSampleInterval": (str(int(self.config.meter_interval_s)), False),
            "NumberOfConnectors": (str(self.config.connectors), True),
        }
        #: The charge point as a whole (connector 0) operative (ChangeAvailability), and
        #: what a ChangeAvailability for it asked while a connector still charges.
        self.available = True
        self._charger_operative: bool | None = None
        self.local_list_version = 0
        self.local_list: dict[str, dict[str, Any]] = {}
        # The values in force of keys changed RebootRequired since the last boot.
        self._until_boot: dict[str, str] = {}
        # The keys a ChangeConfiguration set (kept across a restart; the others follow
        # ``config``, e.g. ``simulate --meter-interval``).
        self._set_keys: set[str] = set()
        self.charging_profiles: dict[int, dict[str, Any]] = {}
        #: The last UpdateFirmware's location and retrieveDate, and its installation.
        self.firmware_update: tuple[str, str] = ("", now())
        self._firmware: asyncio.Future[Any] | None = None
        # The update downloaded and not yet rebooted into (``firmware_pending``), and the
        # one installing (Installing sent): no later update replaces that one.
        self._pending: asyncio.Task[Any] | None = None
        self._installing: asyncio.Task[Any] | None = None
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.heartbeat_interval = 300
        #: What its last BootNotification was answered (Accepted, Pending, Rejected).
        self.registration: str | None = None
        # The connector a RemoteStartTransaction was accepted for, started right after.
        self._remote_target: int | None = None
        # The connectors whose StartTransaction is under way (Preparing, unanswered).
        self._starting: set[int] = set()
        # The tags (upper case) taken here since ``cards_taken`` was last asked.
        self._taken: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._starts: set[asyncio.Future[tuple[int, str]]] = set()
        #: Transaction messages not delivered yet, oldest first (``_kept``).
        self.outbox: deque[Any] = deque()
        #: Set from a lost connection until the next one has booted and delivered the
        #: outbox (``flush``): transaction messages go to the outbox meanwhile.
        self.queueing = False
        # One transaction message at a time, so they arrive in the order they were made.
        self._kept_lock = asyncio.Lock()
        self._all_delivered = asyncio.Event()
        self._all_delivered.set()
        # Reads the connection ``attach`` gave; None while an owner runs ``start`` itself.
        self._receiving: asyncio.Task[None] | None = None
        if states is not None:
            self._restore(states.of(cp_id))

    # ------------------------------------------------------------- kept across restarts
    def kept(self) -> dict[str, Any]:
        """What it keeps across a reboot, as a real charger does (OCPP 1.6: availability
        5.2, local list 3.5, configuration 5.3), and the firmware it runs. A change
        Scheduled for a transaction's end is kept as made: a reboot ends the transaction.
        Reservations, transactions and charging profiles are not (the central system
        closes the transactions a reboot ends and asserts its profiles again at each
        connection)."""
        def made(now: bool, scheduled: bool | None) -> bool:
            return now if scheduled is None else scheduled

        return {
            "available": made(self.available, self._charger_operative),
            "connectors": {str(i): {"available": made(c.available, c.scheduled)}
                           for i, c in self.connectors.items()},
            "configuration": {k: self.configuration[k][0] for k in sorted(self._set_keys)},
            "local_list_version": self.local_list_version,
            "local_list": self.local_list,
            "firmware": self.config.firmware,
        }

    def _keep(self) -> None:
        if self.states is not None:
            self.states.keep(self.id, self.kept())

    def _restore(self, kept: dict[str, Any]) -> None:
        """Starts as ``kept`` says (``kept``'s shape). A state that does not parse is
        logged and ignored, whole: a fresh charger rather than half of one."""
        if not kept:
            return
        try:
            available = _flag(kept.get("available", True))
            connectors = {int(i): _flag(c["available"])
                          for i, c in dict(kept.get("connectors", {})).items()}
            configuration = {str(k): str(v)
                             for k, v in dict(kept.get("configuration", {})).items()}
            local_list = {str(t): dict(info)
                          for t, info in dict(kept.get("local_list", {})).items()}
            version = int(kept.get("local_list_version", 0))
            firmware = str(kept.get("firmware", self.config.firmware))
        except (KeyError, TypeError, ValueError) as error:
            log.warning("%s: ignoring its kept state, unreadable: %r", self.id, error)
            return
        self.available = available
        for connector_id, operative in connectors.items():
            state = self.connectors.get(connector_id)  # it may have fewer connectors now
            if state is not None:
                state.available = operative
                state.status = state.idle_status()  # what ``report_all`` says at boot
        for key, value in configuration.items():
            if self._refusal(key, value) is None:
                self._configure(key, value)
        self.local_list, self.local_list_version = local_list, version
        self.config = replace(self.config, firmware=firmware)

    # ------------------------------------------------------------- the connection
    def attach(self, connection: Any) -> asyncio.Task[None]:
        """Talks over ``connection`` from now on and reads it. The task returned ends
        when the connection does (with the reason), and every call waiting for an answer
        fails with ``Disconnected`` then, instead of waiting out the response timeout."""
        self._connection = connection
        # An answer owed on the last connection never comes; a late one must not be read
        # as one on this connection.
        self._response_queue: asyncio.Queue[Any] = asyncio.Queue()
        # A remote start whose Accepted could not be sent was never carried out (the
        # ocpp package runs no after-handler then): its plug is not busy with it.
        self._remote_target = None
        receiving = asyncio.create_task(self.start(), name=f"{self.id} receive")
        receiving.add_done_callback(self._lost)
        self._receiving = receiving
        return receiving

    def _lost(self, receiving: asyncio.Task[None]) -> None:
        if not receiving.cancelled():
            receiving.exception()  # retrieved: a connection that closes is no error here
        if receiving is self._receiving:
            self.queueing = True

    async def detach(self) -> None:
        """Stops reading the connection (its owner closes it). Calls fail from now on."""
        if self._receiving is not None:
            self._receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._receiving

    async def stop_follow_ups(self) -> None:
        """Cancels the background work commands started (metering a remote start, …)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def followed_up(self) -> None:
        """Waits for the follow-ups started so far (a reboot's boot and statuses, a status
        change's notification) to have been sent and answered; not for those they start
        (a remote start's metering runs until its stop). A reservation's expiry waits
        for its expiry: wait only for follow-ups that end."""
        await asyncio.gather(*self._tasks)

    async def call(self, payload: Any, suppress: bool = True, unique_id: Any = None,
                   skip_schema_validation: bool = False) -> Any:
        """``ChargePoint.call`` as a charger that may lose its connection: a transaction
        message it cannot deliver is kept (``outbox``) and answers None; a status report
        is dropped (None); anything else raises ``Disconnected``. A StartTransaction also
        waits for the outbox: a transaction starts after the ends the central system is
        owed, and none starts while they cannot be delivered."""
        send = partial(self._deliver, payload, suppress, unique_id, skip_schema_validation)
        if _kept(payload):
            return await self._keep_or_send(payload, send)
        if isinstance(payload, call.StartTransaction):
            async with self._kept_lock:
                if self.queueing:
                    raise Disconnected(f"offline: not starting a transaction on connector "
                                       f"{payload.connector_id}")
                return await send()
        if _dropped(payload) and self.queueing:
            return None
        try:
            return await send()
        except Disconnected:
            if _dropped(payload):
                return None
            raise

    async def _keep_or_send(self, payload: Any, send: Callable[[], Awaitable[Any]]) -> Any:
        async with self._kept_lock:
            if not self.queueing:
                try:
                    return await send()
                except Disconnected:
                    # Sent, perhaps, but unanswered: sent again (OCPP's delivery of
                    # transaction messages is at least once).
                    self.queueing = True
            self.outbox.append(payload)
            self._all_delivered.clear()
            return None

    async def flush(self) -> None:
        """Delivers the outbox, oldest first, over a connection that has booted; then
        transaction messages are sent at once again. What is not delivered stays for the
        next connection (``Disconnected`` is raised)."""
        async with self._kept_lock:
            while self.outbox:
                await self._deliver(self.outbox[0], True, None, False)
                self.outbox.popleft()
            self.queueing = False
            self._all_delivered.set()

    async def delivered(self) -> None:
        """Waits until the central system has every transaction message made so far."""
        await self._all_delivered.wait()

    async def _deliver(self, payload: Any, suppress: bool, unique_id: Any,
                       skip_schema_validation: bool) -> Any:
        """``ChargePoint.call``, failing with ``Disconnected`` as soon as the connection
        ends (a closed socket, or one closing while the answer is awaited)."""
        receiving = self._receiving
        sending = super().call(payload, suppress, unique_id, skip_schema_validation)
        try:
            if receiving is None:  # its owner reads the connection: plain ChargePoint
                return await sending
            if receiving.done():
                sending.close()
                raise Disconnected("the connection is closed")
            calling = asyncio.ensure_future(sending)
            try:
                await asyncio.wait({calling, receiving}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not calling.done():  # the connection ended first (or we were cancelled)
                    calling.cancel()
            if not calling.done():  # cancelling: it ends at the loop's next turn
                raise Disconnected(f"the connection closed before {type(payload).__name__} "
                                   "was answered")
            return calling.result()
        except ConnectionClosed as closed:
            raise Disconnected(f"the connection closed: {closed}") from closed

    # ------------------------------------------------------------- charger → central system
    async def boot(self) -> result.BootNotification:
        self._until_boot.clear()  # booted: the values set RebootRequired are in force
        response = await self.call(call.BootNotification(
            charge_point_vendor=self.config.vendor, charge_point_model=self.config.model,
            charge_point_serial_number=f"SIM-{self.id}", firmware_version=self.config.firmware))
        self.heartbeat_interval = int(response.interval) or 300
        self.registration = str(response.status)
        return response

    async def heartbeat(self) -> result.Heartbeat:
        return await self.call(call.Heartbeat())

    async def status(self, connector_id: int, status: str | None = None,
                     error_code: str | None = None, info: str | None = None) -> None:
        if connector_id:
            state = self.connectors[connector_id]
            state.status = status or state.status
            state.error_code = error_code or state.error_code
            status, error_code = state.status, state.error_code
        await self.call(call.StatusNotification(
            connector_id=connector_id, error_code=error_code or "NoError",
            status=status or "Available", info=info, timestamp=now()))

    async def report_all(self) -> None:
        """Every connector's status, the charge point's own (connector 0) first: without
        it a station's status stayed null on the map for as long as it was connected."""
        await self.status(0, "Available" if self.available else "Unavailable")
        for connector_id in self.connectors:
            await self.status(connector_id)

    async def authorize(self, id_tag: str) -> str:
        response = await self.call(call.Authorize(id_tag=id_tag))
        return str(response.id_tag_info["status"])

    async def start_transaction(self, connector_id: int, id_tag: str,
                                timestamp: str | None = None,
                                reservation_id: int | None = None) -> tuple[int, str]:
        self._starting.add(connector_id)
        try:
            await self.status(connector_id, "Preparing")
        except BaseException:
            self._starting.discard(connector_id)
            raise
        # Shielded: a session cancelled while its start is being answered (the station
        # switching off) still learns the transaction the central system opened, so
        # ``_stop_transactions`` stops it instead of leaving it open there.
        starting = asyncio.ensure_future(
            self._start(connector_id, id_tag, timestamp, reservation_id))
        self._starts.add(starting)
        starting.add_done_callback(self._starts.discard)
        starting.add_done_callback(_retrieve)
        return await asyncio.shield(starting)

    async def starts_answered(self) -> None:
        """Waits for the StartTransactions under way."""
        if self._starts:
            await asyncio.wait(set(self._starts))

    async def _start(self, connector_id: int, id_tag: str, timestamp: str | None,
                     reservation_id: int | None) -> tuple[int, str]:
        state = self.connectors[connector_id]
        try:
            response = await self.call(call.StartTransaction(
                connector_id=connector_id, id_tag=id_tag, meter_start=int(state.meter_wh),
                timestamp=timestamp or now(), reservation_id=reservation_id))
        except Disconnected:
            # No transaction: the plug is free again (reported once connected). A start
            # the central system got but could not answer is closed there as lost, once
            # this connector is reported Available after the next boot.
            self._not_started(connector_id)
            await self.status(connector_id, state.idle_status())
            raise
        except BaseException:
            self._starting.discard(connector_id)
            raise
        if response is None:
            # A CALLERROR (the station is not accepted, the central system failed): no
            # transaction; the plug is free again. It used to crash the charging task.
            self._not_started(connector_id)
            await self.status(connector_id, state.idle_status())
            return 0, CALL_ERROR
        status = str(response.id_tag_info["status"])
        state.transaction_id = int(response.transaction_id)
        self._starting.discard(connector_id)
        state.id_tag = id_tag
        self._taken.add(id_tag.upper())
        state.reservation_id, state.reserved_for = None, ()
        await self.status(connector_id, "Charging")
        return state.transaction_id, status

    async def meter_values(self, connector_id: int, seconds: float | None = None) -> None:
        """One MeterValues after charging ``seconds`` at the connector's power, carrying
        the measurands its ``MeterValuesSampledData`` lists, in its order, of energy,
        power, current, voltage and, on a DC plug only, the car's State of Charge (only
        a DC charger learns it from the car). It used to send all of them whatever the
        key said, a change of it Accepted and ignored. None listed: none sent."""
        state = self.connectors[connector_id]
        power = self.drawn_w(connector_id)
        if seconds:
            state.meter_wh += power * seconds / 3600
            state.soc = min(FULL_SOC, state.soc + power * seconds / 36 / state.battery_wh)
        measured: dict[str, dict[str, str]] = {
            # Whole Wh as the start and stop send them (truncated): a rounded reading
            # ended a session 1 Wh above its meterStop.
            "Energy.Active.Import.Register": {
                "value": str(int(state.meter_wh)), "unit": "Wh",
                "context": "Sample.Periodic"},
            "Power.Active.Import": {"value": f"{power:.0f}", "unit": "W"}}
        if state.plug.dc:
            # The battery's voltage, rising as it fills (a 400 V pack).
            volts = 360.0 + 0.6 * state.soc
            measured |= {
                "Current.Import": {"value": f"{power / volts:.1f}", "unit": "A"},
                "Voltage": {"value": f"{volts:.1f}", "unit": "V"},
                "SoC": {"value": f"{state.soc:.0f}", "unit": "Percent"}}
        else:
            measured |= {
                "Current.Import": {"value": f"{power / (3 * 230):.1f}", "unit": "A",
                                   "phase": "L1"},
                "Voltage": {"value": "230.0", "unit": "V", "phase": "L1-N"}}
        wanted = self.in_force("MeterValuesSampledData")  # a charger without it: all
        listed = list(measured) if wanted is None else _measurands(wanted)
        sampled = [{**measured[m], "measurand": m} for m in dict.fromkeys(listed)
                   if m in measured]
        if not sampled:
            return
        await self.call(call.MeterValues(
            connector_id=connector_id, transaction_id=state.transaction_id,
            meter_value=[{"timestamp": now(), "sampledValue": sampled}]))

    def plug_in(self, connector_id: int, power_w: float | None = None) -> None:
        """A car arrives at the connector: its battery, its State of Charge, and what it
        takes (``power_w``, else its on-board charger's on an AC plug up to the plug's
        rating, the plug's rating on a DC one)."""
        state = self.connectors[connector_id]
        state.battery_wh = random.choice(BATTERIES_WH)
        state.soc = random.uniform(*self.config.arrival_soc)
        if power_w:
            state.car_max_w = power_w
        elif state.plug.dc:
            state.car_max_w = state.plug.max_w
        else:
            state.car_max_w = min(state.plug.max_w, random.choice(ON_BOARD_CHARGERS_W))
        state.power_w = self.car_power_w(connector_id)

    def car_power_w(self, connector_id: int) -> float:
        """What the car asks for now: nothing once full; on a DC plug its rating
        tapering as the battery fills (``dc_taper``)."""
        state = self.connectors[connector_id]
        if state.soc >= FULL_SOC:
            return 0.0
        return state.car_max_w * (dc_taper(state.soc) if state.plug.dc else 1.0)

    async def charging_step(self, connector_id: int, seconds: float) -> bool:
        """A meter interval of a session under way: the car's power for ``seconds``
        reported; False once the car is full (it has reported SuspendedEV then, and
        the session is for its driver to end)."""
        state = self.connectors[connector_id]
        await self.meter_values(connector_id, seconds)
        state.power_w = self.car_power_w(connector_id)
        if state.power_w > 0:
            return True
        if state.status != "SuspendedEV":
            await self.status(connector_id, "SuspendedEV")
        return False

    def drawn_w(self, connector_id: int) -> float:
        """What the connector draws: its car's power, within the charging profiles it
        holds (W, or A on its phases at 230 V) as OCPP 1.6 (3.13.2) composes them: its
        transaction's TxProfile overrules any TxDefaultProfile (the connector's, else
        connector 0's), the highest stack level of a purpose wins, and a
        ChargePointMaxProfile caps the whole. So a site's fallback governs a session
        only until its share arrives."""
        state = self.connectors[connector_id]
        limits: dict[str, tuple[int, int, float]] = {}  # purpose: (level, own plug, limit)
        for profile in self.charging_profiles.values():
            purpose = str(profile.get("charging_profile_purpose"))
            plug = profile.get("connector_id")
            if plug not in (connector_id, 0) or (
                    purpose == "TxProfile" and profile.get("transaction_id")
                    not in (None, state.transaction_id)):
                continue  # a TxProfile is its transaction's only
            limit = _first_limit_w(profile)
            if limit is None:
                continue
            rank = (int(profile.get("stack_level") or 0), int(plug == connector_id), limit)
            if purpose not in limits or rank[:2] > limits[purpose][:2]:
                limits[purpose] = rank
        power = state.power_w
        transaction = limits.get("TxProfile") or limits.get("TxDefaultProfile")
        for chosen in (transaction, limits.get("ChargePointMaxProfile")):
            if chosen is not None:
                power = min(power, chosen[2])
        return power

    async def stop_transaction(self, connector_id: int, reason: str = "Local") -> None:
        state = self.connectors[connector_id]
        if state.transaction_id is None:
            return
        transaction_id = state.transaction_id
        state.transaction_id = None
        state.power_w = 0.0
        # OCPP 1.6 (3.13.4): a transaction's TxProfiles end with it (review s16: the
        # next session on the plug drew its predecessor's limit, 0 for a paused one).
        self.charging_profiles = {
            pid: p for pid, p in self.charging_profiles.items()
            if not (p.get("charging_profile_purpose") == "TxProfile"
                    and p.get("connector_id") == connector_id)}
        await self.status(connector_id, "Finishing")
        await self.call(call.StopTransaction(
            meter_stop=int(state.meter_wh), timestamp=now(), transaction_id=transaction_id,
            reason=reason, id_tag=state.id_tag))
        self._apply_scheduled(connector_id)
        await self.status(connector_id, state.idle_status())

    def _apply_scheduled(self, connector_id: int) -> None:
        """Applies the ChangeAvailability that waited for the connector's transaction (or
        its start) to end, if one did."""
        state = self.connectors[connector_id]
        if state.scheduled is not None:
            state.available, state.scheduled = state.scheduled, None
            self._charger_availability_settled()

    def _not_started(self, connector_id: int) -> None:
        """A start that made no transaction: the plug is idle, and a ChangeAvailability
        that waited for it is made now."""
        self._starting.discard(connector_id)
        self._apply_scheduled(connector_id)

    def _busy(self, connector_id: int) -> bool:
        """Whether a transaction runs on the connector or one is starting there: a remote
        start accepted for it, or its StartTransaction not answered yet. (A Preparing of
        a car plugged in before any start is not: a remote start is what it waits for.)"""
        state = self.connectors[connector_id]
        return state.transaction_id is not None or self._remote_target == connector_id \
            or connector_id in self._starting

    async def charge(self, connector_id: int, id_tag: str, *, duration_s: float,
                     step_s: float | None = None, power_w: float | None = None) -> int:
        """A whole session: a car plugged in (``plug_in``), start, meter values every
        ``step_s`` (by default its MeterValueSampleInterval, as it is at each sample)
        for ``duration_s`` or until the car is full, stop. A start the central
        system does not accept (ConcurrentTx, Blocked, …) is stopped at once, as chargers
        do (``StopTransactionOnInvalidId``)."""
        self.plug_in(connector_id, power_w)
        transaction_id, status = await self.start_transaction(connector_id, id_tag)
        if status != "Accepted":
            await self.stop_transaction(connector_id, "DeAuthorized")
            return transaction_id
        await self._meter(connector_id, transaction_id, step_s, duration_s)
        if self.connectors[connector_id].transaction_id == transaction_id:
            await self.stop_transaction(connector_id)
        return transaction_id

    async def meter_until_stopped(self, connector_id: int, transaction_id: int) -> None:
        """Meter values every MeterValueSampleInterval while the transaction runs: one started
        remotely ends by a remote stop, or once its car is full (SuspendedEV for an
        interval, then its driver ends it: Finishing, StopTransaction). It used to go on
        drawing nothing for ever, the plug Charging on the map."""
        await self._meter(connector_id, transaction_id, None)
        if self.connectors[connector_id].transaction_id == transaction_id:
            await self.stop_transaction(connector_id)

    async def _meter(self, connector_id: int, transaction_id: int, step: float | None,
                     duration_s: float = float("inf")) -> None:
        """``charging_step`` every ``step`` (None: the MeterValueSampleInterval at each
        sample, ``config.meter_interval_s``) for ``duration_s``, until the transaction
        ends otherwise (remotely, by a reset), or an interval after its car is full."""
        state = self.connectors[connector_id]
        elapsed, full = 0.0, False
        while elapsed < duration_s:
            step_s = step or self.config.meter_interval_s
            await asyncio.sleep(step_s)
            elapsed += step_s
            if state.transaction_id != transaction_id or full:
                return
            full = not await self.charging_step(connector_id, step_s)

    def cards_in_use(self) -> set[str]:
        """The tags charging here, the one a remote start was accepted for and is about
        to start (or starting: Preparing), and those a reservation holds a plug for."""
        tags = {c.id_tag for c in self.connectors.values() if c.id_tag is not None
                and (c.transaction_id is not None or c.status == "Preparing")}
        tags.update(tag for c in self.connectors.values() for tag in c.reserved_for)
        if self._remote_target is not None:
            pending = self.connectors[self._remote_target].id_tag
            if pending is not None:
                tags.add(pending)
        return tags

    def cards_taken(self) -> set[str]:
        """The tags (upper case) ``cards_in_use`` has come to hold since the last call (a
        remote start accepted, a transaction started, a reservation made), whether it
        still holds them or not: a fleet that looks now and then learns of a hold that
        began and ended between two looks."""
        taken, self._taken = self._taken, set()
        return taken

    def _later(self, coro: Any) -> asyncio.Future[Any]:
        """Run a follow-up message after answering: never call the central system from
        inside a handler (the receive loop would wait on itself)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(partial(_report, self.id))
        return task

    # ------------------------------------------------------------- central system → charger
    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                        charging_profile: dict[str, Any] | None = None
                        ) -> result.RemoteStartTransaction:
        self.received.append(("RemoteStartTransaction", {"id_tag": id_tag,
                                                         "connector_id": connector_id}))
        target = connector_id or next((i for i, c in self.connectors.items()
                                       if c.status == "Available" and not self._busy(i)),
                                      None)
        if target is None or target not in self.connectors or self._busy(target) \
                or not (self.available and self.connectors[target].available) \
                or self.firmware_pending:
            # Nor on an inoperative connector or charger (ChangeAvailability): it used
            # to start a transaction on a plug the map showed Unavailable. Nor while a
            # firmware update waits to install (review r28-sim: the reboot ended it).
            return result.RemoteStartTransaction(status="Rejected")  # type: ignore[arg-type]
        reserved = self.connectors[target].reserved_for
        if reserved and id_tag.upper() not in reserved:
            # OCPP 1.6 (5.13): a reserved connector serves its tag (or parent's) only.
            return result.RemoteStartTransaction(status="Rejected")  # type: ignore[arg-type]
        self.connectors[target].id_tag = id_tag
        self._remote_target = target
        self._taken.add(id_tag.upper())
        return result.RemoteStartTransaction(status="Accepted")  # type: ignore[arg-type]

    @after(Action.remote_start_transaction)
    def after_remote_start(self, id_tag: str, **_: Any) -> None:
        # The ocpp package runs an async after-handler as a task nobody awaits: its
        # failure (the connection lost meanwhile) was never retrieved.
        self._later(self._start_remotely(id_tag))

    async def _start_remotely(self, id_tag: str) -> None:
        target, self._remote_target = self._remote_target, None
        if target is not None and self.connectors[target].transaction_id is None:
            state = self.connectors[target]
            # The start names the reservation it takes up (OCPP 1.6: reservationId).
            held = state.reservation_id if state.reserved_for else None
            self.plug_in(target)
            transaction_id, status = await self.start_transaction(target, id_tag,
                                                                  reservation_id=held)
            if status != "Accepted":
                await self.stop_transaction(target, "DeAuthorized")
                return
            self._later(self.meter_until_stopped(target, transaction_id))

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> result.RemoteStopTransaction:
        self.received.append(("RemoteStopTransaction", {"transaction_id": transaction_id}))
        for connector_id, state in self.connectors.items():
            if state.transaction_id == transaction_id:
                self._later(self.stop_transaction(connector_id, "Remote"))
                return result.RemoteStopTransaction(status="Accepted")  # type: ignore[arg-type]
        return result.RemoteStopTransaction(status="Rejected")  # type: ignore[arg-type]

    @on(Action.reset)
    def on_reset(self, type: str) -> result.Reset:
        self.received.append(("Reset", {"type": type}))
        # OCPP 1.6 (5.14): its transactions end with the reset's reason (a hard reset's
        # too: it used to be told SoftReset), then it reboots.
        self._later(self._reboot("HardReset" if type == "Hard" else "SoftReset"))
        return result.Reset(status="Accepted")  # type: ignore[arg-type]

    async def _reboot(self, reason: str) -> None:
        """Ends what charges with ``reason``, then boots anew (BootNotification and every
        connector's status, connector 0's first). What it was told to be (availability,
        configuration, the local list) outlives the reboot, as OCPP 1.6 wants."""
        await asyncio.sleep(0.05)
        for connector_id, state in self.connectors.items():
            if state.transaction_id is not None:
                await self.stop_transaction(connector_id, reason)
        await self.boot()
        await self.report_all()

    @on(Action.unlock_connector)
    def on_unlock(self, connector_id: int) -> result.UnlockConnector:
        self.received.append(("UnlockConnector", {"connector_id": connector_id}))
        state = self.connectors.get(connector_id)
        if state is None:
            return result.UnlockConnector(status="NotSupported")  # type: ignore[arg-type]
        if state.transaction_id is not None:
            # OCPP 1.6 (5.18): a transaction on it ends first (reason UnlockCommand): the
            # cable released, the car charges no more.
            self._later(self.stop_transaction(connector_id, "UnlockCommand"))
        return result.UnlockConnector(status="Unlocked")  # type: ignore[arg-type]

    @on(Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str
                               ) -> result.ChangeAvailability:
        self.received.append(("ChangeAvailability", {"connector_id": connector_id,
                                                     "type": type}))
        targets = list(self.connectors) if connector_id == 0 else [connector_id]
        if any(t not in self.connectors for t in targets):
            return result.ChangeAvailability(status="Rejected")  # type: ignore[arg-type]
        operative = type == "Operative"
        if connector_id == 0:
            self._charger_operative = operative
        # OCPP 1.6 (5.2): a connector charging changes once its transaction ends (it
        # used to answer Scheduled and never change), and so does one a start is under
        # way on (review r28-sim: answered Accepted, then its transaction ran on the
        # plug just said to be inoperative; a start that fails applies it too); the
        # others change now.
        scheduled = False
        for t in targets:
            state = self.connectors[t]
            if self._busy(t) and state.available != operative:
                state.scheduled, scheduled = operative, True
                continue
            state.available, state.scheduled = operative, None
            if not self._busy(t):
                self._later(self.status(t, state.idle_status()))
        if connector_id == 0:
            self._charger_availability_settled()
        self._keep()  # "Connector set to Unavailable shall persist a reboot" (5.2)
        status = "Scheduled" if scheduled else "Accepted"
        return result.ChangeAvailability(status=status)  # type: ignore[arg-type]

    def _charger_availability_settled(self) -> None:
        """Connector 0 follows a ChangeAvailability for it once none of its connectors
        waits for a transaction's end any more: Unavailable, or Available again."""
        target = self._charger_operative
        if target is None or target == self.available \
                or any(c.scheduled is not None for c in self.connectors.values()):
            return
        self.available, self._charger_operative = target, None
        self._later(self.status(0, "Available" if target else "Unavailable"))

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> result.ChangeConfiguration:
        self.received.append(("ChangeConfiguration", {"key": key, "value": value}))
        refusal = self._refusal(key, value)
        if refusal is not None:
            return result.ChangeConfiguration(status=refusal)  # type: ignore[arg-type]
        reboot = key in REBOOT_KEYS
        if reboot:
            self._until_boot.setdefault(key, self.configuration[key][0])
        self._configure(key, value)
        self._keep()  # a RebootRequired one too: in force from the next boot, a restart's
        return result.ChangeConfiguration(  # type: ignore[arg-type]
            status="RebootRequired" if reboot else "Accepted")

    def _refusal(self, key: str, value: str) -> str | None:
        """Why ``value`` is not taken for ``key`` (NotSupported, Rejected), or None."""
        if key not in self.configuration:
            return "NotSupported"
        if self.configuration[key][1] or not _valid_value(key, value):
            return "Rejected"
        return None

    def _configure(self, key: str, value: str) -> None:
        """Sets a key ``_refusal`` takes, and what it governs."""
        self.configuration[key] = (value, False)
        self._set_keys.add(key)
        if key == "HeartbeatInterval" and int(value) > 0:
            self.heartbeat_interval = int(value)
        if key == "MeterValueSampleInterval" and int(value) > 0:
            # Review r28-sim: Accepted, yet its sessions went on sampling at the old one.
            self.config = replace(self.config, meter_interval_s=float(value))

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> result.GetConfiguration:
        self.received.append(("GetConfiguration", {"key": key}))
        wanted = key or list(self.configuration)
        known = [{"key": k, "readonly": self.configuration[k][1],
                  "value": self.configuration[k][0]} for k in wanted if k in self.configuration]
        unknown = [k for k in wanted if k not in self.configuration]
        return result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.clear_cache)
    def on_clear_cache(self) -> result.ClearCache:
        self.received.append(("ClearCache", {}))
        return result.ClearCache(status="Accepted")  # type: ignore[arg-type]

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None
                           ) -> result.TriggerMessage:
        self.received.append(("TriggerMessage", {"requested_message": requested_message,
                                                 "connector_id": connector_id}))
        follow_ups = {
            "Heartbeat": self.heartbeat,
            "BootNotification": self.boot,
            "StatusNotification": lambda: self.status(connector_id) if connector_id
            else self.report_all(),
            "MeterValues": lambda: self.meter_values(connector_id or 1),
            "FirmwareStatusNotification": lambda: self.call(
                call.FirmwareStatusNotification(status="Idle")),
            "DiagnosticsStatusNotification": lambda: self.call(
                call.DiagnosticsStatusNotification(status="Idle")),
        }
        action = follow_ups.get(requested_message)
        if action is None:
            return result.TriggerMessage(status="NotImplemented")  # type: ignore[arg-type]
        self._later(action())
        return result.TriggerMessage(status="Accepted")  # type: ignore[arg-type]

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                         data: str | None = None) -> result.DataTransfer:
        self.received.append(("DataTransfer", {"vendor_id": vendor_id, "data": data}))
        if vendor_id != VENDOR:
            return result.DataTransfer(status="UnknownVendorId")  # type: ignore[arg-type]
        return result.DataTransfer(status="Accepted", data=data)  # type: ignore[arg-type]

    @on(Action.reserve_now)
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str,
                       reservation_id: int, parent_id_tag: str | None = None
                       ) -> result.ReserveNow:
        self.received.append(("ReserveNow", {"connector_id": connector_id,
                                             "reservation_id": reservation_id,
                                             "parent_id_tag": parent_id_tag}))
        target = connector_id or next((i for i, c in self.connectors.items()
                                       if c.status == "Available"), 0)
        state = self.connectors.get(target)
        if state is None or self.firmware_pending:
            # Nor while a firmware update waits to install, as it takes no start then
            # (``on_remote_start``): the reservation's start would be Rejected.
            return result.ReserveNow(status="Rejected")  # type: ignore[arg-type]
        if state.error_code != "NoError":
            return result.ReserveNow(status="Faulted")  # type: ignore[arg-type]
        if not (self.available and state.available):
            return result.ReserveNow(status="Unavailable")  # type: ignore[arg-type]
        if state.transaction_id is not None or state.reservation_id is not None:
            return result.ReserveNow(status="Occupied")  # type: ignore[arg-type]
        state.reservation_id = reservation_id
        state.reserved_for = tuple(t.upper() for t in (id_tag, parent_id_tag) if t)
        self._taken.update(state.reserved_for)
        self._later(self.status(target, "Reserved"))
        self._later(self._expire_reservation(target, reservation_id, expiry_date))
        return result.ReserveNow(status="Accepted")  # type: ignore[arg-type]

    async def _expire_reservation(self, connector_id: int, reservation_id: int,
                                  expiry_date: str) -> None:
        """OCPP 1.6 (5.13): a reservation not used by its expiryDate ends there, and the
        charger frees the plug itself; the central system sends nothing. QA s28: the
        simulated charger held it for ever, so the demo's map showed the plug RESERVED
        (not free) long after the reservation had expired, and refused it to everyone."""
        expires = datetime.fromisoformat(expiry_date.replace("Z", "+00:00"))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()))
        state = self.connectors[connector_id]
        if state.reservation_id == reservation_id:
            state.reservation_id, state.reserved_for = None, ()
            if state.status == "Reserved":  # not charging, nor made unavailable since
                await self.status(connector_id, state.idle_status())

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int) -> result.CancelReservation:
        self.received.append(("CancelReservation", {"reservation_id": reservation_id}))
        for connector_id, state in self.connectors.items():
            if state.reservation_id == reservation_id:
                state.reservation_id, state.reserved_for = None, ()
                self._later(self.status(connector_id, state.idle_status()))
                return result.CancelReservation(status="Accepted")  # type: ignore[arg-type]
        return result.CancelReservation(status="Rejected")  # type: ignore[arg-type]

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]
                                ) -> result.SetChargingProfile:
        self.received.append(("SetChargingProfile", {"connector_id": connector_id,
                                                      "profile": cs_charging_profiles}))
        profile_id = int(cs_charging_profiles["charging_profile_id"])
        # OCPP 1.6 (3.13.2): a new profile replaces the one with its id, and the one of
        # its stackLevel and purpose on its connector.
        for held_id, held in list(self.charging_profiles.items()):
            if held_id == profile_id or (
                    held["connector_id"] == connector_id
                    and held["stack_level"] == cs_charging_profiles["stack_level"]
                    and held["charging_profile_purpose"]
                    == cs_charging_profiles["charging_profile_purpose"]):
                del self.charging_profiles[held_id]
        self.charging_profiles[profile_id] = {"connector_id": connector_id,
                                              **cs_charging_profiles}
        return result.SetChargingProfile(status="Accepted")  # type: ignore[arg-type]

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, id: int | None = None,
                                  connector_id: int | None = None,
                                  charging_profile_purpose: str | None = None,
                                  stack_level: int | None = None
                                  ) -> result.ClearChargingProfile:
        self.received.append(("ClearChargingProfile", {"id": id}))
        doomed = [pid for pid, p in self.charging_profiles.items()
                  if (id is None or pid == id)
                  and (connector_id is None or p["connector_id"] == connector_id)
                  and (charging_profile_purpose is None
                       or p["charging_profile_purpose"] == charging_profile_purpose)
                  and (stack_level is None or p["stack_level"] == stack_level)]
        for pid in doomed:
            del self.charging_profiles[pid]
        status = "Accepted" if doomed else "Unknown"
        return result.ClearChargingProfile(status=status)  # type: ignore[arg-type]

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id: int, duration: int,
                                  charging_rate_unit: str | None = None
                                  ) -> result.GetCompositeSchedule:
        self.received.append(("GetCompositeSchedule", {"connector_id": connector_id}))
        if connector_id not in self.connectors and connector_id != 0:
            return result.GetCompositeSchedule(status="Rejected")  # type: ignore[arg-type]
        limit = min((float(p["charging_schedule"]["charging_schedule_period"][0]["limit"])
                     for p in self.charging_profiles.values()
                     if p["connector_id"] in (0, connector_id)), default=32.0)
        return result.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=now(),  # type: ignore[arg-type]
            charging_schedule={"duration": duration,
                               "chargingRateUnit": charging_rate_unit or "A",
                               "chargingSchedulePeriod": [{"startPeriod": 0,
                                                           "limit": limit}]})

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self) -> result.GetLocalListVersion:
        self.received.append(("GetLocalListVersion", {}))
        return result.GetLocalListVersion(list_version=self.local_list_version)

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version: int, update_type: str,
                           local_authorization_list: list[dict[str, Any]] | None = None
                           ) -> result.SendLocalList:
        self.received.append(("SendLocalList", {"list_version": list_version,
                                                "update_type": update_type,
                                                "entries": local_authorization_list}))
        entries = local_authorization_list or []
        if len(entries) > self._limit("SendLocalListMaxLength"):
            # OCPP 1.6, 5.15: a list longer than the charger takes in one message.
            return result.SendLocalList(status="Failed")  # type: ignore[arg-type]
        if update_type == "Differential" and list_version <= self.local_list_version:
            return result.SendLocalList(status="VersionMismatch")  # type: ignore[arg-type]
        after = {} if update_type == "Full" else dict(self.local_list)
        for entry in entries:
            if entry.get("id_tag_info") is None:
                after.pop(entry["id_tag"], None)
            else:
                after[entry["id_tag"]] = entry["id_tag_info"]
        adds = update_type == "Full" or not after.keys() <= self.local_list.keys()
        if adds and len(after) > self._limit("LocalAuthListMaxLength"):
            # Nor one leaving it more tags than its list holds (9.1), changing nothing:
            # it used to take them all, past the limit it reports. A Differential adding
            # no tag is taken, on a list over a limit lowered since too, as the central
            # system judges lists (``CommandService._check_list_fits``).
            return result.SendLocalList(status="Failed")  # type: ignore[arg-type]
        self.local_list, self.local_list_version = after, list_version
        self._keep()  # OCPP 1.6 (3.5): kept across reboots and power outages
        return result.SendLocalList(status="Accepted")  # type: ignore[arg-type]

    def _limit(self, key: str) -> float:
        """A list limit in force (``in_force``); none without the key (some chargers do
        not have it, and tests take it away to be one)."""
        value = self.in_force(key)
        return int(value) if value is not None else float("inf")

    def in_force(self, key: str) -> str | None:
        """The value of ``key`` the charger runs with: a change answered RebootRequired
        counts from its next boot (GetConfiguration shows the value set already)."""
        if key in self._until_boot:
            return self._until_boot[key]
        held = self.configuration.get(key)
        return held[0] if held is not None else None

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **options: Any) -> result.GetDiagnostics:
        self.received.append(("GetDiagnostics", {"location": location, **options}))
        self._later(self._upload_diagnostics())
        return result.GetDiagnostics(file_name=f"diagnostics-{self.id}.log")

    async def _upload_diagnostics(self) -> None:
        for status in ("Uploading", "Uploaded"):
            await self.call(call.DiagnosticsStatusNotification(status=status))

    @on(Action.update_firmware)
    def on_update_firmware(self, location: str, retrieve_date: str, **options: Any
                           ) -> result.UpdateFirmware:
        self.received.append(("UpdateFirmware", {"location": location,
                                                 "retrieve_date": retrieve_date}))
        self.firmware_update = (location, retrieve_date)
        if self._firmware is not None and self._firmware is not self._installing:
            # Review r28-sim: a later update replaces one still waiting (for its
            # retrieveDate, its download, or the cars to leave); each used to run on,
            # the earlier rebooting the charger again, into the older version.
            self._firmware.cancel()
        self._firmware = self._later(self._install_firmware(location, retrieve_date,
                                                            self._installing))
        return result.UpdateFirmware()

    @property
    def firmware_pending(self) -> bool:
        """Whether an update downloaded waits to install, or installs: from then until
        its reboot the charger takes no new start (a RemoteStart is Rejected, the fleet
        leaves it alone), and it installs once none runs."""
        return self._pending is not None

    async def _install_firmware(self, location: str, retrieve_date: str,
                                after: asyncio.Task[Any] | None) -> None:
        """OCPP 1.6 (6.4): once the installation under way (``after``) is over, from its
        retrieveDate on, downloads; then takes no new start (``firmware_pending``) and
        installs once no car charges or starts to, as chargers do: a session is not cut
        short by an update; saying so, then reboots into the new firmware (its
        BootNotification says which: the version in the file's name, when it has one).
        It used to stop at Installed, its boot still naming the old firmware; review
        r28-sim: it still took starts while installing, and its reboot ended them."""
        try:
            if after is not None:
                await asyncio.wait({after})
            begins = datetime.fromisoformat(retrieve_date.replace("Z", "+00:00"))
            if begins.tzinfo is None:
                begins = begins.replace(tzinfo=UTC)
            await asyncio.sleep(max(0.0, (begins - datetime.now(UTC)).total_seconds()))
            await self.call(call.FirmwareStatusNotification(status="Downloading"))
            await asyncio.sleep(self.config.firmware_step_s)
            await self.call(call.FirmwareStatusNotification(status="Downloaded"))
            self._pending = asyncio.current_task()
            await self._idle()
            self._installing = self._pending
            await self.call(call.FirmwareStatusNotification(status="Installing"))
            await asyncio.sleep(self.config.firmware_step_s)
            await self.call(call.FirmwareStatusNotification(status="Installed"))
            version = re.search(r"\d+(?:\.\d+)+", location.rsplit("/", 1)[-1])
            if version is not None:
                self.config = replace(self.config, firmware=version.group())
                self._keep()  # a restart boots the firmware installed
            await self._idle()  # a start that slipped in (a fleet's, decided before)
            await self._reboot("Reboot")
        finally:
            if self._pending is asyncio.current_task():
                self._pending = self._installing = None

    async def _idle(self) -> None:
        """Waits until no transaction runs or starts on any connector (``_busy``)."""
        while any(self._busy(i) for i in self.connectors):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.1)  # marks a session's end


# ------------------------------------------------------------------ running simulators
def basic_auth(cp_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{cp_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _open(url: str, cp_id: str, password: str | None,
                tls: ssl.SSLContext | None = None) -> ClientConnection:
    headers = basic_auth(cp_id, password) if password else None
    # ``ssl`` only for wss:// (websockets refuses it with ws://); None there: the
    # system's trusted certificates.
    options: dict[str, Any] = {"ssl": tls} if tls is not None else {}
    return await connect(f"{url.rstrip('/')}/{cp_id}",
                         subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                         additional_headers=headers, compression=None, open_timeout=30,
                         **options)


@contextlib.asynccontextmanager
async def connected(url: str, cp_id: str, *, password: str | None = None,
                    config: SimulatorConfig | None = None, response_timeout: float = 30,
                    charge_point: type[SimulatedChargePoint] = SimulatedChargePoint,
                    states: ChargerStates | None = None
                    ) -> AsyncIterator[SimulatedChargePoint]:
    """A simulated charge point connected to ``{url}/{cp_id}``, its receive loop running
    (``charge_point``: a subclass behaving otherwise, as some real charger does; ``states``:
    where it keeps what it is told, and starts from)."""
    ws = await _open(url, cp_id, password)
    cp = charge_point(cp_id, ws, config, response_timeout=response_timeout, states=states)
    cp.attach(ws)
    try:
        yield cp
    finally:
        await cp.detach()
        await cp.stop_follow_ups()
        await ws.close()


@dataclass
class FleetPlan:
    url: str
    cp_ids: list[str]
    password: str | None = None
    connectors: int = 2
    id_tags: list[str] = field(default_factory=list)
    #: How a wss:// server is trusted (the demo trusts its own certificate); None: the
    #: system's certificates.
    tls: ssl.SSLContext | None = None
    session_every_s: tuple[float, float] = (20.0, 90.0)
    session_length_s: tuple[float, float] = (30.0, 180.0)
    meter_interval_s: float = 10.0
    #: The first delay before connecting again and the longest (``Backoff``).
    reconnect_s: tuple[float, float] = (1.0, 30.0)
    #: How long a card rests after its session before the fleet charges it again (its
    #: driver drove off), the fleet's own or its driver's, and after a reservation that
    #: held it: the demo's drivers sign in with these cards, and a card the fleet charged
    #: again the moment it was free left them nothing to remote-start or reserve with
    #: (QA s28: ``IN_USE`` nearly every time). (0, 0): at once.
    rest_s: tuple[float, float] = (0.0, 0.0)
    #: The cards charging now, across the plan's stations.
    charging: set[str] = field(default_factory=set)
    #: When each card that has charged may charge again (the loop's clock, ``rest_s``).
    resting: dict[str, float] = field(default_factory=dict)
    #: The cards (upper case) the plan's chargers held at the fleet's last look
    #: (``SimulatedChargePoint.cards_in_use``): one no longer held rests from then on.
    held: set[str] = field(default_factory=set)
    #: Each station's plugs by cpId (``SimulatorConfig.plugs``): the demo's as it seeded
    #: them; a station not named has ``connectors`` AC plugs of 22 kW.
    plugs: dict[str, tuple[Plug, ...]] = field(default_factory=dict)
    #: The plan's chargers by cpId, as ``run_station`` made them (they outlive their
    #: connections).
    chargers: dict[str, SimulatedChargePoint] = field(default_factory=dict)
    #: What the chargers keep across a restart of the fleet (``simulate --state``, the
    #: demo's file beside its database); by default nothing.
    states: ChargerStates = field(default_factory=ChargerStates)


@dataclass
class Backoff:
    """Delays between connection attempts: ``first`` doubling up to ``cap``, each drawn
    between half and all of it, so a fleet that lost its server at once does not come
    back in lockstep."""
    first: float
    cap: float
    attempts: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * 2.0 ** self.attempts)
        self.attempts = min(self.attempts + 1, 32)  # 2.0 ** n stays a float
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0


async def run_station(plan: FleetPlan, cp_id: str, stop: asyncio.Event) -> None:
    """One simulated station living until ``stop``: connects, boots, delivers what it kept
    while offline, reports, heartbeats and now and then charges a car with one of the
    plan's id tags. A connection that ends is noticed at once (its reading ends) and
    retried after ``plan.reconnect_s``'s growing delays; transactions go on meanwhile,
    their messages kept for the next connection, as a real charger's."""
    plugs = plan.plugs.get(cp_id, ())
    cp = SimulatedChargePoint(cp_id, None, SimulatorConfig(
        connectors=len(plugs) or plan.connectors,
        meter_interval_s=plan.meter_interval_s, plugs=plugs), states=plan.states)
    plan.chargers[cp_id] = cp
    sessions: set[asyncio.Task[None]] = set()
    delays = Backoff(*plan.reconnect_s)
    try:
        while not stop.is_set():
            try:
                async with _online(plan, cp) as receiving:
                    await cp.boot()
                    await cp.flush()
                    await cp.report_all()
                    delays.reset()
                    await _station_life(cp, plan, stop, receiving, sessions)
            except Exception as exc:  # refused, lost, unanswered: a real charger retries
                delay = delays.next()
                log.warning("%s, reconnecting in %.1f s", _why(cp_id, plan.url, exc), delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
    finally:
        await _cancel(sessions)
        await cp.stop_follow_ups()
        _left_behind(cp)


def _why(cp_id: str, url: str, error: Exception) -> str:
    """Why a connection attempt failed, in words a person can act on. A refused handshake
    is retried like any failure (the station may be created, or its password set, while
    the simulator runs), but said plainly: its repr was a ``Response(...)`` dump."""
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if status == HTTPStatus.NOT_FOUND:
            return f"{cp_id}: no OCPP endpoint at {url} (HTTP 404): use ws://host:port/ocpp"
        if status == HTTPStatus.UNAUTHORIZED:
            # The server answers an unknown cpId as a wrong password (ids must not be
            # probed); its log tells the two apart.
            return (f"{cp_id}: the server refused its credentials (HTTP 401): the station "
                    "must exist (createStation, or CHARGEGRAPH_AUTO_REGISTER=true) and "
                    "--password be its password; the server's log says which")
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            return _held_off(cp_id, error.response)
        return f"{cp_id}: the server refused the connection (HTTP {status})"
    return f"{cp_id}: {error}" if isinstance(error, Disconnected) else f"{cp_id}: {error!r}"


def _held_off(cp_id: str, response: Response) -> str:
    """Why the server answered a handshake 429, by the text it sent (the reason phrase
    and ``Retry-After`` are the same for every limit). QA s28 (`simulate` started before
    its stations existed) read a bare "HTTP 429"; review r28-firstrun: the line then
    blamed every 429 on refused attempts and sent the user checking passwords, also for
    a server with CHARGEGRAPH_AUTO_REGISTER=true that had registered its hourly limit of
    new stations from this address, where no password is wrong."""
    after = response.headers.get("Retry-After")
    status = "HTTP 429" + (f", Retry-After {after} s" if after else "")
    text = bytes(response.body).decode("utf-8", "replace").strip()
    said = text.lower()
    if "new charge point" in said:
        # OcppServer: an unknown cpId beyond CHARGEGRAPH_AUTO_REGISTER_PER_HOUR
        # auto-registrations from one address; a station that exists is not held.
        return (f"{cp_id}: the server registers no more new charge points from this "
                f"address for now ({status}): it has auto-registered its hourly limit "
                "from here (CHARGEGRAPH_AUTO_REGISTER_PER_HOUR on the server, 50 by "
                "default); the station gets in as the hour moves on, or at once once "
                "created (createStation)")
    if "wrong password" in said:
        # ChargerSignIns: a lockout of this station's password from this address (or
        # from every address its charger never passed from); other stations are checked.
        return (f"{cp_id}: the server locks this station out from this address for now "
                f"({status}): too many refused attempts of it from here (a station the "
                "server does not know, a wrong --password); other stations are not held "
                "off; it gets in once it exists, its password is right and the lockout is "
                "over")
    if "password check" in said:
        # A check of this station's from here under way, or this address's checks
        # queued or their budget (CHARGEGRAPH_CHARGER_CHECKS_PER_MINUTE) spent.
        return (f"{cp_id}: the server is busy with password checks from this address "
                f"({status}): it tries again")
    # Another server's, or a proxy's: its own words, if any.
    return (f"{cp_id}: the server holds the station off for now ({status})"
            + (f": {text}" if text else "") + "; it tries again")


@contextlib.asynccontextmanager
async def _online(plan: FleetPlan, cp: SimulatedChargePoint
                  ) -> AsyncIterator[asyncio.Task[None]]:
    """``cp`` on a new connection; yields the task reading it, which ends with it."""
    ws = await _open(plan.url, cp.id, plan.password, plan.tls)
    receiving = cp.attach(ws)
    try:
        yield receiving
    finally:
        await cp.detach()
        await ws.close()


async def _station_life(cp: SimulatedChargePoint, plan: FleetPlan, stop: asyncio.Event,
                        receiving: asyncio.Task[None], sessions: set[asyncio.Task[None]]
                        ) -> None:
    """Heartbeats and cars charging on one connection, until ``stop`` (what still charges
    is stopped, as a charger switched off does) or until the connection ends
    (``Disconnected``; what charges goes on, for the next connection to report)."""
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + cp.heartbeat_interval
    while True:
        await _pause(stop, receiving, random.uniform(*plan.session_every_s))
        if stop.is_set():
            await _cancel(sessions)
            await _stop_transactions(cp)
            return
        if receiving.done():
            raise Disconnected("the connection closed")
        if loop.time() >= next_beat:
            await cp.heartbeat()
            next_beat += cp.heartbeat_interval
        free = [] if cp.firmware_pending else [
            i for i, c in cp.connectors.items()
            if c.transaction_id is None and c.status == "Available"]
        cards = _cards_free(plan, loop.time())
        if cards and free:
            tag = random.choice(cards)
            plan.charging.add(tag)
            task = asyncio.create_task(_session(cp, plan, random.choice(free), tag),
                                       name=f"session with {tag}")
            sessions.add(task)
            task.add_done_callback(sessions.discard)
            task.add_done_callback(partial(_report, cp.id))


def _cards_free(plan: FleetPlan, now: float) -> list[str]:
    """The plan's cards the fleet may charge with now. A card charges one car at a time:
    not one the fleet charges, nor one resting after its session (``rest_s``), nor one
    its driver started themself on one of the plan's chargers (a remote start accepted,
    or its transaction running), which the central system would refuse as ConcurrentTx,
    nor one a reservation there holds a plug for (its driver is on the way to it).

    A card the chargers held at the last look and hold no more (its driver's session
    ended, a reservation cancelled, expired, or used and its session over) starts its
    rest now, as after the fleet's own sessions: review r28-firstrun, only those rested,
    and the fleet took a driver's card at its next look, ~5 s after the driver stopped,
    their next start or reservation refused IN_USE. Told at the look, before any station
    may take it, whichever way the hold ended, also one that began and ended between
    two looks (``SimulatedChargePoint.cards_taken``)."""
    taken = {tag for charger in plan.chargers.values() for tag in charger.cards_taken()}
    own = {tag.upper() for charger in plan.chargers.values()
           for tag in charger.cards_in_use()}
    released, plan.held = (plan.held | taken) - own, own
    for tag in plan.id_tags:
        if tag.upper() in released:
            plan.resting[tag] = max(plan.resting.get(tag, now),
                                    now + random.uniform(*plan.rest_s))
    return [tag for tag in plan.id_tags if tag not in plan.charging
            and plan.resting.get(tag, now) <= now and tag.upper() not in own]


async def _pause(stop: asyncio.Event, receiving: asyncio.Task[None], seconds: float) -> None:
    """Waits ``seconds``, or less when ``stop`` is set or the connection ends meanwhile:
    the station used to notice a closed socket only at its next heartbeat or session."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, receiving}, timeout=seconds,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


async def _session(cp: SimulatedChargePoint, plan: FleetPlan, connector_id: int,
                   tag: str) -> None:
    """A car charging with ``tag``, through lost connections. Its card is free again once
    the central system has the session's end: started elsewhere before, it would be
    refused as still charging."""
    try:
        await cp.charge(connector_id, tag, duration_s=random.uniform(*plan.session_length_s))
        await cp.delivered()
    finally:
        plan.resting[tag] = asyncio.get_running_loop().time() + random.uniform(*plan.rest_s)
        plan.charging.discard(tag)


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _stop_transactions(cp: SimulatedChargePoint) -> None:
    """Stops what still charges before the station goes (a charger switched off ends its
    transactions): left open, a demo restarted found its cards busy with sessions the
    old chargers no longer had, and refused their next starts as ConcurrentTx until the
    reboot check closed them."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cp.starts_answered(), 5)
    for connector_id, state in cp.connectors.items():
        if state.transaction_id is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cp.stop_transaction(connector_id, "Local"), 5)


def _left_behind(cp: SimulatedChargePoint) -> None:
    """Stopped while offline, a station cannot end its transactions: says what the
    central system was not told (its sessions stay open there)."""
    open_transactions = [c.transaction_id for c in cp.connectors.values()
                         if c.transaction_id is not None]
    if open_transactions or cp.outbox:
        log.warning("%s: stopped without a connection: transactions %s left open, "
                    "%d messages not delivered", cp.id, open_transactions, len(cp.outbox))


async def run_fleet(plan: FleetPlan, stop: asyncio.Event) -> None:
    await asyncio.gather(*(run_station(plan, cp_id, stop) for cp_id in plan.cp_ids))


def expiry(minutes: int) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def _first_limit_w(profile: dict[str, Any]) -> float | None:
    """A held profile's first period's limit in W (A on its phases at 230 V)."""
    schedule = profile.get("charging_schedule") or {}
    periods = schedule.get("charging_schedule_period") or []
    if not periods:
        return None
    limit = float(periods[0]["limit"])
    if schedule.get("charging_rate_unit") == "A":
        limit *= 230 * int(periods[0].get("number_phases") or 3)
    return limit
