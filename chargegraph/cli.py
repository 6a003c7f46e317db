"""The ``chargegraph`` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
import uvicorn
from pydantic import ValidationError
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from chargegraph import __version__, logs
from chargegraph.errors import ConfigError
from chargegraph.listening import listening_sockets, reachable_host
from chargegraph.runtime import raise_open_file_limit, tune_garbage_collector
from chargegraph.settings import ENV_FILE, Settings, environment_warnings, problems
from chargegraph.signals import StoppableStart, cancelled_by_signals
from chargegraph.startup import StartupFailed, starting
from chargegraph.stores import database_location, sqlite_path

if TYPE_CHECKING:
    # typer's own copy of click, whose types its commands take (not the click package).
    from typer._click import Context as ClickContext
    from typer._click import Parameter

    from chargegraph.demo import DemoSummary
    from ocpp_bridge.simulator import FleetPlan
    from ocpp_bridge.simulator_state import ChargerStates

def _valueless_flags(params: list[Parameter]) -> list[Parameter]:
    """A flag takes no value, but typer's Rich help wrote ``<bool>`` beside each
    (``--help``, ``--version``, ``--force``; QA s31): given an empty metavar, which that
    help writes as is, it shows none. An argument is given its name in capitals, as the
    usage line writes it (``Command``), for the help's Arguments panel and the message
    when it is missing too (review s31: they said ``path <path>`` and ``'path'``)."""
    for param in params:
        if isinstance(param, TyperOption) and (param.is_flag or param.count) \
                and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = (param.name or "").upper()
    return params


class Group(TyperGroup):
    """The command group, its help mended (``_valueless_flags``)."""

    def get_params(self, ctx: ClickContext) -> list[Parameter]:
        return _valueless_flags(super().get_params(ctx))


class Command(TyperCommand):
    """A command, its help mended: flags without a value (``_valueless_flags``), and
    each argument in the usage line by the name its help text gives it, in capitals
    (``backup [OPTIONS] PATH``), in brackets when optional. typer wrote a required one
    as ``{path}``, which reads as a template left unformatted (QA s31)."""

    def get_params(self, ctx: ClickContext) -> list[Parameter]:
        return _valueless_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: ClickContext) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not isinstance(param, TyperArgument):
                pieces += param.get_usage_pieces(ctx)
                continue
            name = param.display_name_raw.upper() + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
        return pieces


app = typer.Typer(help="ChargeGraph: an EV charging backend (OCPP 1.6J + GraphQL).",
                  no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  cls=Group)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"chargegraph {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_show_version,
        is_eager=True)] = False) -> None:
    """ChargeGraph: an EV charging backend (OCPP 1.6J + GraphQL)."""


class RoleName(StrEnum):
    admin = "admin"
    operator = "operator"
    driver = "driver"


def _logging(settings: Settings) -> None:
    logs.configure(settings.log_level)
    # Settings ignores CHARGEGRAPH_* names it does not know: a misspelt one would change
    # nothing without a word.
    for warning in environment_warnings(os.environ, ENV_FILE):
        logging.getLogger("chargegraph").warning("%s", warning)


#: What `serve` exits with when the lifespan fails (uvicorn's STARTUP_FAILURE); the other
#: commands use it for the same failures.
STARTUP_FAILURE = 3


@contextlib.contextmanager
def _plain_failures() -> Iterator[None]:
    """A mistake the user must fix outside the code is one line per problem, not a
    traceback: a configuration error exits 2; a store that cannot be opened exits 3, with
    the same "cannot start …" line `serve` logs for it."""
    try:
        yield
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        for problem in problems(exc):
            typer.echo(f"configuration error: {problem}", err=True)
        raise typer.Exit(2) from exc
    except StartupFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(STARTUP_FAILURE) from exc


def _settings(host: str | None, port: int | None, ocpp_port: int | None) -> Settings:
    """The settings with the flags given over the environment's and ``.env``'s. Those
    are validated first, whole: a malformed value stops the command though a flag
    replaces it (QA s31: ``CHARGEGRAPH_PORT=abc serve --port N`` served, the next start
    without the flag would not). Only a rule between settings (``_ports_apart``) waits
    for the flags, which may be what settles it."""
    overrides = {k: v for k, v in (("host", host), ("port", port), ("ocpp_port", ocpp_port))
                 if v is not None}
    try:
        environment = Settings()
    except ValidationError as exc:
        # pydantic checks a rule between settings only once each value is valid: an
        # error at no setting's name is one of those.
        if not overrides or any(problem["loc"] for problem in exc.errors()):
            raise
    else:
        if not overrides:
            return environment
    return Settings(**overrides)  # type: ignore[arg-type]


class GracefulServer(uvicorn.Server):
    """Exits 0 after a graceful shutdown on SIGTERM/SIGINT. Plain uvicorn re-raises the
    signal once it has shut down, which makes a clean stop look like a crash (exit -15)
    to supervisors and CI."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()

    #: Set while the app starts: what a stop signal calls (``_stoppably``).
    _stop_starting: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._stop_starting is not None:
            self._stop_starting()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is not None:
            self._bound_to(sockets)
            await self._stoppably(super().startup(sockets))
            return
        host, port = self.config.host, self.config.port
        try:
            with starting(f"the GraphQL server on {host}:{port}"):
                sockets = listening_sockets(host, port)
        except StartupFailed as failure:
            logging.getLogger("chargegraph").error("%s", failure)
            sys.exit(STARTUP_FAILURE)
        self._bound_to(sockets)
        if not await self._stoppably(super().startup(sockets)):
            for bound in sockets:
                bound.close()
            return
        # uvicorn names the address only for sockets it bound itself.
        self._log_started_message(sockets)

    def _bound_to(self, sockets: list[socket.socket]) -> None:
        """The port the sockets are bound to (all the same: ``listening_sockets``), the
        one asked for or, for 0, the one the system chose: told to the app before it
        starts, whose ready line names it (``app.state.port``)."""
        state = getattr(self.config.app, "state", None)
        if state is not None and sockets:
            state.port = sockets[0].getsockname()[1]

    async def _stoppably(self, startup: Coroutine[Any, Any, None]) -> bool:
        """Runs uvicorn's ``startup``, whose lifespan a stop signal cancels while the app
        starts (``signals.StoppableStart``): uvicorn only notes a signal then, and the
        start may wait long (a SQLite store for another instance's migration, up to 30
        minutes; review r28-upgrade: SIGTERM and SIGINT went unanswered meanwhile).
        ``False`` when stopped so: nothing served, and the process exits 0."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def exit_kept() -> SystemExit | None:
            # uvicorn's failed start is ``sys.exit``: raised here, in the server's task,
            # not out of a task of its own (the loop would let it through, traceback and
            # all).
            try:
                await startup
            except SystemExit as exit_:
                return exit_
            return None

        starting_up = asyncio.ensure_future(exit_kept())
        stopping = asyncio.ensure_future(stop.wait())

        def stop_starting() -> None:  # in a signal handler: handed to the loop
            loop.call_soon_threadsafe(stop.set)

        self._stop_starting = stop_starting
        if self.should_exit:  # a signal came before
            stop.set()
        try:
            await asyncio.wait([starting_up, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stop_starting = None
            stopping.cancel()
        start = getattr(getattr(self.config.app, "state", None), "start", None)
        if starting_up.done() or not isinstance(start, StoppableStart) or not start.stop():
            # Started, failed, or past the app's own start: uvicorn's own way from here
            # (a stop then is a shutdown).
            failed = await starting_up
            if failed is not None:
                raise failed
            return True
        # Not waiting for uvicorn's startup, which would log the cancelled start as a
        # failure: for the lifespan, unwinding (the store closes as on a failed start).
        starting_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting_up
        await self.lifespan.startup_event.wait()
        logging.getLogger("chargegraph").info(
            "Stopped while starting (nothing was served); the next start begins again")
        return False

    #: Run first when a shutdown begins, while everything still serves (the demo's
    #: simulated chargers end their transactions).
    before_shutdown: Callable[[], Awaitable[None]] | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.before_shutdown is not None:
            await self.before_shutdown()
        # Before uvicorn waits (up to CHARGEGRAPH_SHUTDOWN_GRACE_S) for requests in
        # flight: commands not sent to a charger yet are answered now, those sent are
        # given up on before the wait ends (``app.state.begin_shutdown``).
        state = getattr(self.config.app, "state", None)
        begin = getattr(state, "begin_shutdown", None)
        if callable(begin):
            begin()
        await super().shutdown(sockets)


def _uvicorn(settings: Settings) -> uvicorn.Server:
    from chargegraph.app import create_app
    from chargegraph.http_limits import HttpProtocol, WebSocketProtocol, log_refusals
    from graph.http import MAX_BODY

    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level=settings.log_level.lower(),
                            log_config=logs.uvicorn_log_config(), lifespan="on",
                            # Typed int, used as asyncio.timeout's delay (a float).
                            timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
                            proxy_headers=True,
                            forwarded_allow_ips=settings.trusted_proxies,
                            ws_ping_interval=20, ws_ping_timeout=20,
                            # A websocket message is at most what a request over HTTP may
                            # be: uvicorn's 16 MiB let thirty sockets hold half a gigabyte
                            # of connection_init payloads. Beyond it the socket is closed
                            # with 1009 (message too big) before the message is read.
                            ws_max_size=MAX_BODY,
                            # A request head not complete within 10 s closes its
                            # connection, and connections beyond the cap are answered
                            # 503: idle or half-sent sockets held for ever filled the
                            # open files this process shares with the chargers' sockets.
                            http=HttpProtocol,
                            # Lets the app drop a websocket whose client reads nothing
                            # (its close would wait for ever to be sent).
                            ws=WebSocketProtocol,
                            limit_concurrency=settings.max_connections)
    log_refusals(settings.max_connections)
    return GracefulServer(config)


HostOpt = Annotated[str | None, typer.Option(help="Interface for GraphQL (default 127.0.0.1).")]
# Ranged here as in Settings: a port above 65535 would otherwise wrap (70000 binds 4464).
PortOpt = Annotated[int | None, typer.Option(
    min=0, max=65535, help="GraphQL port (default 8000; 0: any free one, named in the "
                           "ready line).")]
OcppPortOpt = Annotated[int | None, typer.Option(
    min=0, max=65535, help="OCPP websocket port (default 9000; 0: any free one, named in "
                           "the OCPP server's line).")]


@app.command(cls=Command)
def serve(host: HostOpt = None, port: PortOpt = None, ocpp_port: OcppPortOpt = None) -> None:
    """Run the service: GraphQL on /graphql, OCPP on its own port, /healthz."""
    with _plain_failures():
        settings = _settings(host, port, ocpp_port)
        _logging(settings)
        server = _uvicorn(settings)
    tune_garbage_collector()
    raise_open_file_limit()
    server.run()


#: Said after create-user's line when the SQLite file it wrote did not exist before.
NEW_DATABASE = (" (a new database, created now: if you meant an existing one, set "
                "CHARGEGRAPH_DATABASE_URL to it, e.g. sqlite:////srv/chargegraph.db)")


@app.command("create-user", cls=Command)
def create_user(
    email: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option()],
    role: Annotated[RoleName, typer.Option()],
    name: Annotated[str | None, typer.Option()] = None,
    company: Annotated[str | None, typer.Option(help="Company name; created if needed.")] = None,
) -> None:
    """Create a user (prints its id)."""
    from domain.entities import Role
    from domain.errors import DomainError, each

    with _plain_failures():
        settings = Settings()
    _logging(settings)

    async def run() -> str:
        from chargegraph.app import build_services
        from chargegraph.secrets import secret_beside_database
        from chargegraph.security import Argon2Hasher
        from chargegraph.stores import new_database, started_store
        from domain.policy import SYSTEM

        fresh = new_database(settings.database_url)
        # The app's secret, for the key its services digest with (``build_services``).
        jwt_secret = secret_beside_database(settings)
        async with started_store(settings.database_url) as store:
            services = build_services(settings, store, Argon2Hasher(), jwt_secret)
            company_id = None
            if company:
                company_id = (await services.accounts.ensure_company(SYSTEM, company)).id
            user = await services.accounts.create_user(
                SYSTEM, email=email, password=password, name=name or email.split("@")[0],
                role=Role(role.value.upper()), company_id=company_id)
        # On stderr: stdout is only the id, for scripts. Run from another folder, the
        # default relative URL makes a new, empty database there, which `serve` started
        # elsewhere never reads: naming it, and saying it is new, shows the mistake.
        typer.echo(f"user written to {database_location(settings.database_url)}"
                   + (NEW_DATABASE if fresh else ""), err=True)
        return user.id

    try:
        with _plain_failures():
            typer.echo(asyncio.run(run()))
    except DomainError as exc:
        for one in each(exc):  # every invalid field, as the API reports them
            field = f" ({one.field})" if one.field else ""
            typer.echo(f"error{field}: {one.message}", err=True)
        raise typer.Exit(1) from exc


@app.command(cls=Command)
def backup(
    path: Annotated[Path, typer.Argument(help="The file to write (a new one).")],
    force: Annotated[bool, typer.Option(help="Overwrite PATH if it exists.")] = False,
) -> None:
    """Copy the SQLite database to PATH, consistently, also while the service runs."""
    from chargegraph.stores import backup_sqlite_database
    from store.sqlite.backup import BackupError

    with _plain_failures():
        settings = Settings()
        _logging(settings)
        try:
            report = backup_sqlite_database(settings.database_url, path, overwrite=force)
        except BackupError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"backed up to {report.target} ({report.size} bytes, schema version "
               f"{report.schema_version})")


@app.command(cls=Command)
def restore(
    path: Annotated[Path, typer.Argument(help="The backup to put back.")],
) -> None:
    """Put a backup in place of the SQLite database, with every instance stopped.

    The numbers it draws (transaction ids, ...) move a million ahead, so none a charger
    still holds is given again; the database replaced is gone (back it up first if
    unsure)."""
    from chargegraph.stores import restore_sqlite_database
    from store.sqlite.backup import BackupError

    with _plain_failures():
        settings = Settings()
        _logging(settings)
        try:
            report = restore_sqlite_database(settings.database_url, path)
        except BackupError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    numbers = ", ".join(f"{name} {value}" for name, value in sorted(report.sequences.items()))
    migrated = f", migrated to {report.migrated_to}" \
        if report.migrated_to > report.schema_version else ""
    typer.echo(f"restored {path} to {report.database} (schema version "
               f"{report.schema_version}{migrated}); next numbers: {numbers}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command(cls=Command)
def healthcheck(
    timeout: Annotated[float, typer.Option(min=0.1, max=60,
                                           help="Seconds to wait for the answer.")] = 2,
) -> None:
    """Exit 0 when the service answers GET /healthz with 200, else 1.

    For a container's HEALTHCHECK. It reads the settings `serve` reads, the working
    folder's .env included."""
    import urllib.request

    try:
        settings = Settings()
    except ValidationError as exc:
        # 1, not 2: Docker reserves exit code 2 of a health check.
        for problem in problems(exc):
            typer.echo(f"configuration error: {problem}", err=True)
        raise typer.Exit(1) from exc
    except ConfigError as exc:  # a .env that is not UTF-8
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if settings.port == 0:
        # The port the service chose is in its ready line only: asking port 0 fails
        # with a connection error that says nothing of why.
        typer.echo("unhealthy: CHARGEGRAPH_PORT is 0 (any free port), which this check "
                   "cannot know: give the service a port of its own to check it",
                   err=True)
        raise typer.Exit(1)
    url = f"http://{reachable_host(settings.host)}:{settings.port}/healthz"
    # No proxy: HTTP_PROXY in the container's environment is for the way out.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout):
            pass  # urlopen raises on 503 (the store down) and on any other error status
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        typer.echo(f"unhealthy: {url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"healthy: {url}")


@app.command("export-schema", cls=Command)
def export_schema() -> None:
    """Print the GraphQL SDL (schema.graphql equals it)."""
    from graph import export_sdl

    sys.stdout.write(export_sdl())


@app.command("graphiql-assets", cls=Command)
def graphiql_assets(
    folder: Annotated[Path, typer.Argument(help="Where to write the files.")],
    registry: Annotated[str, typer.Option(
        envvar="NPM_CONFIG_REGISTRY",
        help="npm registry, or a mirror of it, to fetch the packages from.")
    ] = "https://registry.npmjs.org",
) -> None:
    """Fetch the GraphiQL page's scripts into FOLDER, for sites that cannot reach unpkg.com.

    Copy FOLDER to the service's machine and set CHARGEGRAPH_GRAPHIQL_ASSETS to it."""
    from chargegraph.graphiql_assets import AssetError, fetch, page_assets

    try:
        written = fetch(folder, page_assets(), registry)
    except AssetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for path in written:
        typer.echo(f"wrote {path} ({path.stat().st_size} bytes)")
    typer.echo(f"set CHARGEGRAPH_GRAPHIQL_ASSETS={folder.resolve()} where the service runs")


@app.command(cls=Command)
def demo(host: HostOpt = None, port: PortOpt = None, ocpp_port: OcppPortOpt = None,
         chargers: Annotated[bool, typer.Option(help="Run simulated chargers.")] = True,
         reset: Annotated[bool, typer.Option(help="Delete the demo's database first (a "
                                                  "MongoDB one only if the demo made it) "
                                                  "and seed a fresh demo.")] = False,
         ) -> None:
    """Seed a demo world, serve it, and run simulated chargers against it."""
    from chargegraph.demo_database import refuse_early, reset_demo_mongo_database
    from chargegraph.stores import remove_sqlite_database

    with _plain_failures():
        settings = _settings(host, port, ocpp_port)
        if "public_map" not in settings.model_fields_set:
            # The demo map is public unless told otherwise, by the environment or .env.
            settings.public_map = True
        if "sign_up" not in settings.model_fields_set:
            # So is sign-up: the demo is where app developers try their sign-up screen.
            settings.sign_up = True
        _logging(settings)
        if chargers and not settings.ocpp_enabled:
            # They would knock at a port nothing listens on, every few seconds, for ever.
            raise ConfigError("the demo's simulated chargers need its OCPP server, which "
                              "CHARGEGRAPH_OCPP_ENABLED=false turns off: leave it on, or "
                              "pass --no-chargers")
        # Refused before anything is written: building the app keeps its JWT secret
        # beside the database (ops QA s32); --reset by its own refusals (review r32-e).
        asyncio.run(refuse_early(settings.database_url, reset=reset))
        # Built (and so checked) first: a configuration error deletes and seeds nothing.
        server = _uvicorn(settings)
        if reset and sqlite_path(settings.database_url) is not None:
            for path in remove_sqlite_database(settings.database_url):
                logging.getLogger("chargegraph").info("--reset: removed %s", path)
        elif reset and asyncio.run(reset_demo_mongo_database(settings.database_url)):
            # Only a database the demo marked as its own (review r26-onboard2: the
            # refusal advised --reset, which then said it worked on SQLite only).
            logging.getLogger("chargegraph").info(
                "--reset: dropped %s", database_location(settings.database_url))
    tune_garbage_collector()
    raise_open_file_limit()
    with _plain_failures():  # seeding opens the store outside the server's lifespan
        asyncio.run(_demo(settings, server, chargers))


async def _demo(settings: Settings, server: uvicorn.Server, chargers: bool) -> None:
    from chargegraph.app import build_services
    from chargegraph.demo import seed_demo
    from chargegraph.demo_database import own_database, prepare_demo_database
    from chargegraph.secrets import resolve_jwt_secret
    from chargegraph.security import Argon2Hasher
    from chargegraph.stores import started_store

    database = database_location(settings.database_url)

    async def seed() -> DemoSummary:
        # Decided before any store opens (and so migrates) the database: the demo's own,
        # made here (SQLite: built beside it and put in place once marked, so a demo
        # killed meanwhile leaves none) or found marked; any other is refused untouched.
        await prepare_demo_database(settings.database_url)
        async with started_store(settings.database_url) as store:
            # The secret its server's app resolved already (``_uvicorn``).
            services = build_services(settings, store, Argon2Hasher(),
                                      resolve_jwt_secret(settings))
            return await seed_demo(services, new=False, database=database,
                                   own=own_database(settings.database_url))

    # Seeding hashes a dozen passwords before uvicorn handles signals: a stop meanwhile
    # cancels it (the next start completes the world) and the command exits 0.
    seeding = asyncio.create_task(seed())
    with cancelled_by_signals(seeding):
        await asyncio.wait([seeding])
        if seeding.cancelled():
            logging.getLogger("chargegraph").info(
                "Stopped while seeding the demo; the next start completes it")
            return
        await _serve_demo(settings, server, seeding.result(), chargers)


def bound_ports(settings: Settings, server: uvicorn.Server) -> Settings:
    """``settings`` naming the ports a started server serves: those asked for, or for 0
    the ones the system chose (the app reads them back as it binds)."""
    state = getattr(server.config.app, "state", None)
    ports = {name: getattr(state, name) for name in ("port", "ocpp_port")
             if getattr(state, name, None) is not None}
    return settings.model_copy(update=ports)


def demo_urls(settings: Settings) -> tuple[str, str]:
    """Where, on this machine, the demo's GraphiQL page is opened and its simulated
    chargers connect (``/{cpId}`` follows): a wildcard host by its loopback and an IPv6
    address in brackets. QA s26: with ``::`` the chargers were given ``ws://:::9000/ocpp``,
    which no client can parse, and retried it for ever; the banner showed the same."""
    scheme = "wss" if settings.ocpp_tls_cert is not None else "ws"
    return (f"http://{reachable_host(settings.host)}:{settings.port}/graphql",
            f"{scheme}://{reachable_host(settings.ocpp_host)}:{settings.ocpp_port}/ocpp")


def demo_tls(settings: Settings) -> ssl.SSLContext | None:
    """How the demo's chargers trust its OCPP server's certificate (``wss://``): that
    certificate itself, whoever issued it, and whatever names it holds, since they
    connect to this machine's address (QA s26: they spoke plain ws:// to the TLS port,
    "did not receive a valid HTTP response", for ever)."""
    if settings.ocpp_tls_cert is None:
        return None
    context = ssl.create_default_context(cafile=str(settings.ocpp_tls_cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a CA-issued leaf, trusted alone
    context.check_hostname = False  # the very certificate is pinned: no name to match
    return context


def demo_fleet(settings: Settings, summary: DemoSummary,
               states: ChargerStates | None = None) -> FleetPlan:
    """The demo's simulated chargers, charging with its drivers' cards. Each card rests
    between its sessions, longer on average than a session lasts, so a driver who signs
    in finds their card free more often than not, to start or reserve with themself
    (QA s28: the fleet took a card back the moment it was free, and
    `remoteStartTransaction` answered `IN_USE`, "this card is charging at …", nearly
    every time). ``states``: what the chargers keep across a restart of the demo."""
    from chargegraph.demo import STATION_PASSWORD
    from domain import entities as d
    from ocpp_bridge.simulator import FleetPlan, Plug
    from ocpp_bridge.simulator_state import ChargerStates

    plugs = {cp_id: tuple(Plug(d.POWER_OF_PLUG.get(spec.type, d.PowerType.AC).value,
                               (spec.max_kw or 22) * 1000) for spec in specs)
             for cp_id, specs in summary.connectors.items()}
    return FleetPlan(url=demo_urls(settings)[1], cp_ids=summary.cp_ids,
                     password=STATION_PASSWORD, id_tags=summary.id_tags, plugs=plugs,
                     tls=demo_tls(settings), session_every_s=(15, 60),
                     session_length_s=(30, 120), rest_s=(60, 150), meter_interval_s=5,
                     states=states or ChargerStates())


async def _serve_demo(settings: Settings, server: uvicorn.Server, summary: DemoSummary,
                      chargers: bool) -> None:
    from chargegraph.demo import banner
    from chargegraph.demo_database import charger_state_file
    from ocpp_bridge.simulator import run_fleet
    from ocpp_bridge.simulator_state import ChargerStates

    stop = asyncio.Event()

    # QA s30: an operator's ChangeAvailability, configuration or local list was lost at
    # the demo's restart, the map showing an inoperative plug Available again. A world
    # seeded now (also after --reset) has chargers never told anything, with or without
    # --no-chargers: an older world's file would come back with them later.
    states = ChargerStates(charger_state_file(settings.database_url).resolve(),
                           fresh=summary.created)

    async def fleet() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no "listening" event
            await asyncio.sleep(0.1)
        served = bound_ports(settings, server)
        graphql_url, ocpp_url = demo_urls(served)
        typer.echo(banner(summary, graphql_url, ocpp_url, chargers=chargers,
                          state_file=states.path))
        if chargers:
            await run_fleet(demo_fleet(served, summary, states), stop)

    fleet_task = asyncio.create_task(fleet())

    async def stop_fleet() -> None:
        # While the server still answers: each charger stops what it charges first.
        stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(fleet_task), 10)

    if isinstance(server, GracefulServer):
        server.before_shutdown = stop_fleet
    try:
        await server.serve()
    finally:
        stop.set()
        fleet_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fleet_task


def _websocket_url(url: str) -> str:
    """Checked up front: each simulated charger retries a failed connection forever, which
    is right for a server that is down and wrong for a URL that can never work."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise typer.BadParameter(f"{url!r} is not a ws:// or wss:// URL, e.g. "
                                 "ws://127.0.0.1:9000/ocpp")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise typer.BadParameter(f"{url!r} has an invalid port") from None
    if not parts.hostname:
        raise typer.BadParameter(f"{url!r} names no host")
    return url


def _check_prefix(prefix: str, stations: int) -> None:
    """Checked up front, as the URL is: a prefix no charge point identity may hold (a
    space, a slash) had every station retried for ever under an HTTP error that named
    neither (QA s26: "InvalidMessage('did not receive a valid HTTP response')")."""
    from domain.errors import DomainError
    from domain.validation import cp_id

    try:
        cp_id(f"{prefix}-{stations:04d}")  # the longest identity it makes
    except DomainError as error:
        raise typer.BadParameter(f"{prefix!r} makes no charge point identity "
                                 f"({prefix}-{stations:04d}): {error}",
                                 param_hint="'--prefix'") from None


#: ``simulate --stations`` at most.
MAX_SIMULATED = 20_000


@app.command(cls=Command)
def simulate(
    url: Annotated[str, typer.Option(help="OCPP endpoint, e.g. ws://127.0.0.1:9000/ocpp",
                                     callback=_websocket_url)],
    stations: Annotated[int, typer.Option(min=1, max=MAX_SIMULATED)] = 1,
    connectors: Annotated[int, typer.Option(min=1, max=10)] = 2,
    prefix: Annotated[str, typer.Option(help="cpId prefix: PREFIX-0001 …")] = "SIM",
    password: Annotated[str | None, typer.Option(help="HTTP Basic password")] = None,
    id_tag: Annotated[list[str] | None, typer.Option(help="Tags to charge with")] = None,
    # At least a second: OCPP's MeterValueSampleInterval counts whole seconds, and 0 (which
    # OCPP reads as "no sampling") made the simulator flood the central system.
    meter_interval: Annotated[float, typer.Option(min=1, max=86_400,
                                                  help="Seconds between meter values")] = 10,
    state: Annotated[Path | None, typer.Option(
        help="JSON file where the chargers keep what they are told (availability, "
             "configuration, local list, firmware) across restarts; none: fresh chargers "
             "at every start")] = None,
) -> None:
    """Run simulated OCPP 1.6J charge points against a central system."""
    from ocpp_bridge.simulator import FleetPlan, run_fleet
    from ocpp_bridge.simulator_state import ChargerStates

    _check_prefix(prefix, stations)
    with _plain_failures():
        _logging(Settings())
    plan = FleetPlan(url=url, cp_ids=[f"{prefix}-{i:04d}" for i in range(1, stations + 1)],
                     password=password, connectors=connectors, id_tags=id_tag or [],
                     meter_interval_s=meter_interval, states=ChargerStates(state))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_fleet(plan, stop)

    asyncio.run(run())


def main() -> None:
    app()
