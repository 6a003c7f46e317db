"""The one place that wires everything: store, pubsub, domain services, the GraphQL app
and the OCPP central system, started and stopped in order in one lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from chargegraph import __version__, housekeeping
from chargegraph.cors import EXPORT_METHODS, cross_origin
from chargegraph.errors import ConfigError
from chargegraph.graphiql_assets import graphiql_assets_route
from chargegraph.headers import SecurityHeaders
from chargegraph.http_limits import HEALTHZ
from chargegraph.listening import addresses_of, loopback_only, url_host
from chargegraph.metrics import CONTENT_TYPE as METRICS_TYPE
from chargegraph.metrics import MetricsRegistry, Sources, scrape
from chargegraph.secrets import derived_key, secret_beside_database
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings
from chargegraph.signals import StoppableStart
from chargegraph.startup import PlainStartupFailures, starting
from chargegraph.stores import (
    check_database_url,
    database_location,
    new_database,
    started_store,
    store_label,
)
from chargegraph.tls import ocpp_ssl_context
from chargegraph.webhooks import WebhookDispatcher
from domain.events import SignInsCounted
from domain.ids import new_id
from domain.policy import Policy
from domain.ports import ChargerGateway, PasswordHasher, Store
from domain.services import ServiceContext, Services
from domain.services.throttle import Shared
from domain.services.throttle_sharing import ThrottleSharing
from graph import TokenService, create_graphql_app
from pubsub.command_relay import CommandRelay
from pubsub.factory import check_channel_prefix, check_event_bus_url, open_event_bus

if TYPE_CHECKING:  # imported when OCPP is enabled (an instance may serve only GraphQL)
    from ocpp_bridge.gateway import OcppGateway

log = logging.getLogger("chargegraph")

#: Logged at start when the OCPP server takes chargers' passwords unencrypted from
#: beyond this machine.
PLAIN_OCPP = ("the OCPP server listens on %s:%s without TLS (CHARGEGRAPH_OCPP_TLS_CERT "
              "unset): chargers' Basic-auth passwords travel unencrypted, unless a proxy "
              "in front of it terminates TLS (wss://); set CHARGEGRAPH_OCPP_TLS_CERT, or "
              "CHARGEGRAPH_OCPP_HOST=127.0.0.1 behind such a proxy on this machine")


def build_services(settings: Settings, store: Store, hasher: PasswordHasher,
                   jwt_secret: str, bus: Any = None) -> Services:
    """The services over ``store``, on every path that builds them (the app, the CLI's
    create-user and demo), keyed with keys derived from the deployment's ``jwt_secret``,
    the same everywhere, sharing or not: what the throttles count and chargers' known
    addresses (``KnownChargerAddress``) and freed card numbers (``FreedIdTag``) must be
    no unkeyed hash of an address or a short card UID (review s31: a lone instance
    digested with an empty key, so anyone holding the database and a cpId could try
    every IPv4 address; review r32-c: card numbers likewise; review r32-f: the CLI's had
    an empty key, so a path of its freeing or checking a card would have bypassed the
    hold)."""
    services = Services(
        ServiceContext(store=store, policy=Policy(public_map=settings.public_map),
                       hasher=hasher, bus=bus,
                       digest_key=derived_key(jwt_secret, "freed card numbers")),
        heartbeat_interval=settings.heartbeat_interval,
        auto_register=settings.auto_register,
        registrations_per_hour=settings.auto_register_per_hour,
        command_timeout=settings.command_timeout,
        webhooks_allow_private=settings.webhooks_allow_private,
        sign_up=settings.sign_up,
        refresh_ttl=timedelta(days=settings.refresh_ttl_days),
        auth_cache=timedelta(hours=settings.auth_cache_hours),
        charger_sign_ins=settings.charger_sign_ins,
        retention=settings.retention,
        max_cards_per_driver=settings.max_cards_per_driver,
    )
    throttle_key = derived_key(jwt_secret, "sign-in throttle")
    for throttle in shared_throttles(services):
        throttle.secret = throttle_key
    return services


def shared_throttles(services: Services) -> list[Shared]:
    """What the services count sign-ins and registrations with, across the instances
    when they share a Redis (``ThrottleSharing``)."""
    return [*services.accounts.throttles, *services.charging.sign_ins.shared,
            services.charging.registrations, *services.personal_data.throttles,
            *services.fleet.throttles]


#: A request before the lifespan built the services: 503 in each door's error shape.
STARTING = "starting up: try again in a moment"
GRAPHQL_STARTING = {"errors": [{"message": STARTING,
                                "extensions": {"code": "SERVICE_UNAVAILABLE"}}]}
#: The downloads' shape (README "HTTP answers"), where a download client reads ``code``
#: (review r26-api2: they answered /graphql's).
EXPORT_STARTING = {"errors": [{"field": None, "code": "SERVICE_UNAVAILABLE",
                               "message": STARTING}]}


class _LateBound:
    """The GraphQL app exists only once the lifespan has built the services; until then
    a request is answered 503 with ``starting``, the door's own error shape."""

    def __init__(self, starting: dict[str, Any] = GRAPHQL_STARTING) -> None:
        self.app: Any = None
        self.starting = starting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            response = JSONResponse(self.starting, status_code=503)
            if scope["type"] == "http":
                await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _settle(services: Services) -> None:
    services.charging.restore_checks.stop()
    services.charging.reboot_checks.stop()  # the store is closing; the boot time is stored
    # Its chargers are gone (the OCPP server stopped first): nothing left to tell them.
    await services.site_load.close()
    try:
        # Each use case's first, then what they set off in ``withdrawal``.
        await asyncio.wait_for(_settled_in_order(services), SETTLE_TIMEOUT_S)
    except TimeoutError:
        log.warning("background work of the services (deactivated users' and blocked "
                    "cards' withdrawal, accepted stations' boot requests, status requests "
                    "after a restore) still running "
                    "at stop")


async def _settled_in_order(services: Services) -> None:
    await asyncio.gather(services.accounts.settled(), services.stations.settled(),
                         services.fleet.settled(), services.erasure.settled(),
                         services.idempotency.settled(), services.charging.asking.settled(),
                         services.charging.keeping_known.settled())
    await services.withdrawal.settled()


def _detach(sources: Sources) -> None:
    """The lifespan ended: a scrape no longer reads a closed store or a stopped server."""
    sources.store = sources.bus = sources.gateway = sources.live = None
    sources.webhook_queues = None


#: How long a stop waits for background work of the services (their commands have
#: already been failed by ``begin_shutdown``, so this is short).
SETTLE_TIMEOUT_S = 5.0
#: Of a stop's grace (``CHARGEGRAPH_SHUTDOWN_GRACE_S``), what is left after commands the
#: chargers have are given up on: for their answers to be written out before uvicorn
#: cuts the requests off.
ANSWER_MARGIN_S = 1.0


def give_up_after(grace_s: float) -> float:
    """Seconds into a stop when commands still unanswered are given up on: the grace
    less ``ANSWER_MARGIN_S``, or half of a grace shorter than two margins."""
    return grace_s - min(ANSWER_MARGIN_S, grace_s / 2)


def schema_of() -> int:
    """The schema for /healthz: the highest SQLite migration this build applies, which
    its start brought the database to (or refused to start on a newer one), so instances
    answering different numbers run different schemas. MongoDB's is the same number: its
    start steps record it (``claim_schema``'s ``SCHEMA_VERSION``, SQLite's last
    migration) before their first write and when the start completes, and refuse a
    database a newer build recorded (QA s32: MongoDB said none, and the version, 0.3.0
    since schema 29, could not tell builds apart)."""
    from store.sqlite.migrations import MIGRATIONS

    return MIGRATIONS[-1][0]


def create_app(settings: Settings | None = None, *, hasher: PasswordHasher | None = None
               ) -> Starlette:
    settings = settings or Settings()
    # Configuration is checked before the server binds: a bad URL or a weak secret stops
    # `chargegraph serve` with a message instead of a traceback from the lifespan.
    check_database_url(settings.database_url)
    try:
        check_event_bus_url(settings.pubsub_url)
        if settings.pubsub_prefix is not None:
            check_channel_prefix(settings.pubsub_prefix)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    # An instance that runs no OCPP server needs no certificate (GraphQL-only instances
    # behind a load balancer often have none mounted).
    ocpp_ssl = ocpp_ssl_context(settings) if settings.ocpp_enabled else None
    if settings.ocpp_enabled and settings.ocpp_port == 0 \
            and addresses_of(settings.ocpp_host) > 1:
        # The OCPP server binds through websockets (asyncio's create_server), which gives
        # each address a free port of its own, and only one can be named to chargers
        # (review s31); GraphQL's sockets are bound here, on one port for all.
        raise ConfigError(f"CHARGEGRAPH_OCPP_PORT 0 (any free port) needs a host of one "
                          f"address; {settings.ocpp_host!r} resolves to several: give "
                          f"a port, or one address as CHARGEGRAPH_OCPP_HOST")
    # A folder that would leave the page blank stops the start, naming what is wrong.
    assets_route, assets_url = graphiql_assets_route(settings)
    jwt_secret = secret_beside_database(settings)
    tokens = TokenService(jwt_secret, timedelta(minutes=settings.jwt_ttl_minutes))
    graphql = _LateBound()
    exports = _LateBound(EXPORT_STARTING)  # the CSV exports, built with the GraphQL app
    personal_data = _LateBound(EXPORT_STARTING)  # a person's copy of their data, likewise
    # Counters live as long as the app (a test's second lifespan keeps counting); the
    # gauges' sources are attached as the lifespan builds them.
    metrics = MetricsRegistry()
    sources = Sources(version=__version__)

    # A stop while the lifespan starts cancels the start (``cli.GracefulServer``).
    start = StoppableStart()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        start.begin()
        async with AsyncExitStack() as stack:
            fresh = new_database(settings.database_url)  # before the start makes it
            # Opening is inside `starting` too: making the SQLite file's folder can fail.
            store = await stack.enter_async_context(started_store(settings.database_url))
            bus = open_event_bus(settings.pubsub_url, prefix=settings.pubsub_prefix)
            with starting("the event bus"):
                await bus.start()
            stack.push_async_callback(bus.close)
            services = build_services(settings, store, hasher or Argon2Hasher(), jwt_secret,
                                      bus)
            try:
                # Accounts that took an erased account's email before such emails were
                # refused, for an admin to fix (review s25); never a reason not to start.
                await services.erasure.warn_of_held_placeholders()
            except Exception:
                log.exception("looking for accounts holding erased accounts' emails failed")
            app.state.services = services
            app.state.store = store
            sources.store, sources.bus = store, bus
            stack.callback(_detach, sources)
            # Left after the OCPP server stops, before the bus and the store close: what
            # deactivations release in the background finishes (or fails) on an open store.
            stack.push_async_callback(_settle, services)
            # Delivers what this instance publishes (each event from one instance); it
            # stops after the OCPP server, before the store closes.
            # One id for this instance: its OCPP server's lease is the one its stored
            # webhook deliveries live by (a GraphQL-only instance holds one for them).
            # Each holds it (``InstanceService.hold``): the OCPP server stops first, and
            # the lease stays until the dispatcher, stopping after it, has handed over.
            instance_id = new_id()
            webhooks = WebhookDispatcher(services,
                                         allow_private=settings.webhooks_allow_private,
                                         offline_grace=settings.offline_webhook_grace_s,
                                         instance_id=instance_id,
                                         lease_s=settings.instance_lease_seconds,
                                         serves_chargers=settings.ocpp_enabled)
            with starting("webhook delivery"):
                await webhooks.start()
            stack.push_async_callback(webhooks.close)
            sources.webhook_queues = webhooks.queue_lengths
            app.state.webhooks = webhooks
            graphql.app = create_graphql_app(
                services, tokens, graphiql=settings.graphiql, metrics=metrics,
                graphiql_assets=assets_url,
                ws_keep_alive=timedelta(seconds=settings.ws_keepalive_s),
                introspection=settings.introspection)
            sources.live = graphql.app.websocket.hub
            exports.app = graphql.app.export
            personal_data.app = graphql.app.personal_data
            local: OcppGateway | None = None
            if settings.ocpp_enabled:
                from ocpp_bridge.gateway import OcppGateway

                local = sources.gateway = OcppGateway(metrics)
                # Left after the OCPP server stops (registered before it): the stop's
                # second stage, if still due, is cancelled.
                stack.callback(local.close)
            # With Redis, several instances share the database: a command reaches the
            # charger wherever it is connected, also from an instance that serves only
            # GraphQL.
            instances_bus = bus if check_event_bus_url(settings.pubsub_url) == "redis" \
                else None
            gateway: ChargerGateway | None = local
            stoppable: OcppGateway | CommandRelay | None = local
            relay: CommandRelay | None = None
            if instances_bus is not None:
                gateway = stoppable = relay = CommandRelay(instances_bus, local)
                with starting("the command relay"):
                    await relay.start()
                # Closed after the OCPP server stops: it answers for this instance's
                # chargers until they are gone.
                stack.push_async_callback(relay.close)
                # One sign-in limit across the instances: each tells the others what
                # its throttles count, chargers' password checks included (and where
                # chargers passed them from: a station locked by guesses on one instance
                # still checks its charger's own address on another).
                sharing = ThrottleSharing(instances_bus, shared_throttles(services))
                await stack.enter_async_context(housekeeping.subscribed(
                    instances_bus, [SignInsCounted.topic], sharing.follow, "sign-in-counts"))
            if stoppable is not None:
                # Called by the server when a stop begins, before it waits for requests
                # in flight (``cli.GracefulServer``): a command not sent yet to a charger,
                # here or (through the relay, also on a GraphQL-only instance) on another
                # instance, then answers at once and new ones are refused; one the
                # charger has waits for its answer until a margin before the grace ends,
                # then answers unanswered, never cut off with a bare 500.
                stop_commands = stoppable.stop_commands
                app.state.begin_shutdown = lambda: stop_commands(
                    "the service is shutting down: try again in a moment",
                    give_up_in=give_up_after(settings.shutdown_grace_s))
            # What other instances announce they changed reaches the services through
            # one subscription, on every instance: its chargers' cache drops it at
            # once, and an instance serving the API alone (whose chargers' cache stays
            # empty) still has its site load forget a charger's stack level and units,
            # read through the instance holding it, once the charger connects again
            # there, not an hour later (``SiteLoad.followed``). Entered before the OCPP
            # server starts, left after it stops: its chargers never go unfollowed.
            await stack.enter_async_context(housekeeping.following_changes(
                services.charging, bus))
            if local is not None:
                from ocpp_bridge.server import OcppServer

                # Its start writes (every charger recorded offline): a store that cannot
                # write is named in the line, not only the OCPP server.
                with starting(f"the OCPP server on {settings.ocpp_host}:{settings.ocpp_port}",
                              store=store_label(settings.database_url)):
                    server = OcppServer(services.charging, local, settings.ocpp_host,
                                        settings.ocpp_port, ssl_context=ocpp_ssl,
                                        response_timeout=settings.command_timeout,
                                        instances_bus=instances_bus,
                                        instances=services.instances,
                                        lease_seconds=settings.instance_lease_seconds,
                                        trusted_proxies=settings.trusted_proxies,
                                        metrics=metrics,
                                        strict_schema=settings.ocpp_strict_schema,
                                        max_sampled_values=settings.ocpp_max_sampled_values,
                                        instance_id=instance_id)
                    await server.start()
                if ocpp_ssl is None and not loopback_only(settings.ocpp_host):
                    # Chargers sign in with Basic auth: over plain ws:// from beyond this
                    # machine their passwords travel readable, unless a proxy in front
                    # terminates TLS (no setting tells, so the line says it).
                    log.warning(PLAIN_OCPP, settings.ocpp_host, server.bound_port)
                # Registered after the store's close: stopped first, so every charger's
                # disconnect is still written.
                stack.push_async_callback(server.stop)
                if relay is not None:
                    # Before it: commands carried out for other instances' requests get
                    # their chargers' answers through a stop (uvicorn waits only for
                    # this instance's requests).
                    stack.push_async_callback(relay.settle)
                app.state.ocpp_port = server.bound_port
            if gateway is not None:
                services.attach_gateway(gateway)
            # Entered last, left first: no sweep runs while the store closes.
            await stack.enter_async_context(housekeeping.every(
                housekeeping.RESERVATION_SWEEP_S, services.commands.expire_reservations,
                "reservation-expiry"))
            # Remote starts whose window ended without a StartTransaction (every check
            # ignores them already): deleted.
            await stack.enter_async_context(housekeeping.every(
                housekeeping.RESERVATION_SWEEP_S, services.commands.forget_pending_starts,
                "pending-start-expiry"))
            # Cancels owed to the chargers connected here (one owed just after its
            # charger came back, which its connection's send did not find) are sent.
            await stack.enter_async_context(housekeeping.every(
                housekeeping.OWED_CANCEL_SWEEP_S, services.commands.sweep_owed_cancels,
                "owed-cancels"))
            # Cards whose expiry passed are withdrawn from the chargers' local lists.
            await stack.enter_async_context(housekeeping.every(
                housekeeping.CARD_EXPIRY_SWEEP_S, services.withdrawal.sweep_expired,
                "card-expiry"))
            # During a rolling upgrade, instances of the version before migration 41
            # still open payments without their session's charger fields.
            await stack.enter_async_context(housekeeping.every(
                housekeeping.PAYMENT_CHARGER_FIELDS_S,
                services.payments.fill_charger_fields, "payment-charger-fields"))
            # Where chargers passed their password check from, 30 days after they last
            # did (each instance reads the rest as it starts: the table stays bounded).
            await stack.enter_async_context(housekeeping.every(
                housekeeping.KNOWN_ADDRESS_SWEEP_S, services.charging.sweep_known_addresses,
                "known-address-expiry"))
            # Card numbers freed, held back from drivers, once past their 30 days.
            await stack.enter_async_context(housekeeping.every(
                housekeeping.FREED_TAG_SWEEP_S, services.fleet.sweep_freed_tags,
                "freed-tag-expiry"))
            # Clients' idempotency keys past their 24 hours are deleted (a claim finds
            # one as a fresh key anyway: this keeps the table from growing).
            await stack.enter_async_context(housekeeping.every(
                housekeeping.IDEMPOTENCY_SWEEP_S, services.idempotency.sweep,
                "idempotency-key-expiry"))
            # Meter samples, status reports and connection events past their retention
            # (when set) are deleted, a batch per write (``RetentionService``).
            if services.retention.keep.prunes:
                await stack.enter_async_context(housekeeping.every(
                    housekeeping.RETENTION_SWEEP_S, services.retention.sweep, "retention"))
            # Refunds a crash left claimed and unsettled are settled under their key.
            await stack.enter_async_context(housekeeping.every(
                housekeeping.REFUND_CLAIM_SWEEP_S, services.payments.settle_stale_refunds,
                "refund-claims"))
            # The database by absolute path: a relative SQLite URL started from another
            # folder serves another (new, empty) database, which its users see first.
            log.info("ChargeGraph ready: GraphQL on http://%s:%d/graphql, database %s%s",
                     url_host(settings.host), app.state.port,
                     database_location(settings.database_url),
                     " (new database, created now)" if fresh else "")
            start.end()
            try:
                yield
            finally:
                graphql.app = exports.app = personal_data.app = None

    # The version and the schema: which build a load balancer's instance runs, and with
    # which database schema (rolling upgrades).
    build = {"version": __version__, "schema": schema_of()}

    async def healthz(request: Request) -> Response:
        store: Store | None = getattr(request.app.state, "store", None)
        try:
            problem = "the store is not open" if store is None else await store.health()
        except Exception:
            problem = "the store does not answer"
        if problem is None:
            # An event bus out of touch (Redis down) is said, not made a 503: this
            # instance still serves its chargers and clients, and every instance shares
            # the outage, so a load balancer taking them out would leave none.
            bus = sources.bus
            events = {} if bus is None or bus.connected else {"events": "unavailable"}
            return JSONResponse({"status": "ok", "store": "ok", **events, **build})
        # The reason tells an operator what to fix (a full disk, a deleted database file).
        return JSONResponse({"status": "unavailable", "store": "unavailable",
                             "reason": problem, **build}, status_code=503)

    async def home(request: Request) -> Response:
        return RedirectResponse("/graphql")

    async def metrics_page(request: Request) -> Response:
        return Response(await scrape(metrics, sources), media_type=METRICS_TYPE)

    routes: list[BaseRoute] = [
        Route("/", home), Route(HEALTHZ, healthz),
        # Every method reaches the handler, which refuses all but GET and POST itself:
        # as JSON with the API's error code, and an Allow header that offers no HEAD
        # (the router's own 405 is plain text and offers the HEAD it adds to GET).
        Route("/graphql", cross_origin(graphql, settings.cors_allowed_origins),
              methods=None),
        WebSocketRoute("/graphql", graphql),
        # A person's copy of their data (graph/data_export.py), before ``{name}``,
        # which ``me.json`` would match too. The exports, like /graphql, take every
        # method and refuse all but GET and HEAD themselves (``ExportDoor``): as the
        # JSON 405 README documents, `METHOD_NOT_ALLOWED` (QA s26: the router answered
        # first, in plain text), a CORS preflight answered by the middleware before,
        # offering GET and HEAD alone (`EXPORT_METHODS`).
        *(Route(path, cross_origin(personal_data, settings.cors_allowed_origins,
                                   EXPORT_METHODS), methods=None)
          for path in ("/export/me.json", "/export/users/{user}.json")),
        # ``name`` is ``sessions.csv`` and the like (graph/csv_export.py), callable from
        # the browser apps /graphql is (a back office's download button).
        Route("/export/{name}", cross_origin(exports, settings.cors_allowed_origins,
                                             EXPORT_METHODS), methods=None)]
    if settings.metrics:
        routes.append(Route("/metrics", metrics_page))
    if assets_route is not None:
        routes.append(assets_route)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(PlainStartupFailures, start=start),
                    Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    app.state.start = start
    # The port served, for the ready line: the server that binds the sockets tells the
    # one bound, the system's choice for 0 (``cli.GracefulServer``).
    app.state.port = settings.port
    return app
