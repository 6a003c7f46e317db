"""A demo world: two operators' networks around Berlin, drivers with cars and cards, and
simulated chargers that boot, report and charge."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from chargegraph.errors import ConfigError
from domain import entities as d
from domain.clock import utcnow
from domain.errors import Conflict, UniqueViolation
from domain.policy import SYSTEM, Viewer
from domain.query import Eq, Range, all_of
from domain.services import ConnectorSpec, Services
from domain.tariff_bands import BandInput

DEMO_PASSWORD = "chargegraph-demo"
STATION_PASSWORD = "demo-station-secret"
ADMIN_EMAIL = "admin@demo.chargegraph.dev"

COMPANIES = {
    "spree": ("Spree Charging GmbH", "ops@spree.demo.chargegraph.dev"),
    "havel": ("Havel Power AG", "ops@havel.demo.chargegraph.dev"),
}
DRIVERS = [
    ("Mia Driver", "mia@demo.chargegraph.dev", "B-MI 2024", "Volkswagen", "ID.4", 77.0),
    ("Jonas Driver", "jonas@demo.chargegraph.dev", "P-JO 77", "Tesla", "Model 3", 60.0),
    ("Lea Driver", "lea@demo.chargegraph.dev", "B-LE 123", "Renault", "Megane E-Tech", 60.0),
]
STATIONS = [
    ("spree", "BER-ALEX-01", "Alexanderplatz", 52.5219, 13.4132, "Alexanderplatz 1, 10178 Berlin"),
    ("spree", "BER-HBF-01", "Hauptbahnhof", 52.5251, 13.3694, "Europaplatz 1, 10557 Berlin"),
    ("spree", "BER-POTS-01", "Potsdamer Platz", 52.5096, 13.3759,
     "Potsdamer Platz 1, 10785 Berlin"),
    ("spree", "BER-KUDA-01", "Kurfürstendamm", 52.5040, 13.3310,
     "Kurfürstendamm 26, 10719 Berlin"),
    ("havel", "BER-TEMP-01", "Tempelhofer Feld", 52.4730, 13.4010,
     "Tempelhofer Damm 1, 12101 Berlin"),
    ("havel", "BER-SPAN-01", "Spandau Altstadt", 52.5370, 13.2030,
     "Carl-Schurz-Straße 2, 13597 Berlin"),
    ("havel", "PDM-SANS-01", "Potsdam Sanssouci", 52.4043, 13.0386,
     "Maulbeerallee 1, 14469 Potsdam"),
    ("havel", "BER-TXL-01", "Urban Tech Republic", 52.5597, 13.2877,
     "Flughafen Tegel 1, 13405 Berlin"),
]


def demo_emails() -> list[str]:
    """The e-mail addresses of every login the demo seeds."""
    return [ADMIN_EMAIL, *(email for _, email in COMPANIES.values()),
            *(email for _, email, *_ in DRIVERS)]


@dataclass
class DemoSummary:
    created: bool
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # role, email, password
    cp_ids: list[str] = field(default_factory=list)
    id_tags: list[str] = field(default_factory=list)
    #: Each station's connectors as seeded: its simulated charger charges as they are
    #: rated (a CCS2 plug at 150 kW DC, a Type 2 at up to 22 kW AC).
    connectors: dict[str, list[ConnectorSpec]] = field(default_factory=dict)


#: The demo's marks in a database it seeds (named counters, ``Store.next_sequence``, read
#: by ``sequence_value``): MADE, taken by the start that made the database before it
#: writes anything else (the first value is that start's: a second start at once is
#: refused), so a later start knows the database for the demo's; SEEDED, once the world
#: is complete. Not accounts found by e-mail (review r26-onboard: a database without
#: accounts passed for the demo's, a running GraphQL-only service's among them; the demo
#: admin renamed, as the README invites, a second start was refused).
DEMO_MADE = "chargegraph-demo"
DEMO_SEEDED = "chargegraph-demo-seeded"


#: How the demo is run on a database of its own, the advice of a refusal (SQLite's: the
#: shell gives each store's, ``demo_database.own_database``).
OWN_DATABASE = "CHARGEGRAPH_DATABASE_URL=sqlite:///demo.db chargegraph demo"
PUBLIC = (f"the demo seeds logins everyone knows (password {DEMO_PASSWORD}), so it runs "
          "only on a database of its own")


def not_the_demos(database: str, own: str = OWN_DATABASE) -> ConfigError:
    """The refusal of a database without the demo's mark: left untouched, and never
    advised to be deleted (``--reset``): it may be a deployment's (review r26-onboard2),
    unless it is at the demo's own name (``own`` then says so: ``own_database``)."""
    return ConfigError(f"{database} was not made by the demo: {PUBLIC}; it is left "
                       f"untouched: run the demo on a database of its own: {own}")


def in_use(database: str, own: str = OWN_DATABASE) -> ConfigError:
    """The refusal of a demo database an instance of the service leases, complete or not
    (its logins are public)."""
    return ConfigError(
        f"{database} is in use by a running instance of the service: {PUBLIC}; stop it (an "
        "instance killed leaves its lease live until it lapses, 30 s by default: then try "
        f"again), or run the demo on a database of its own: {own}")


def another_demo(database: str) -> ConfigError:
    return ConfigError(f"{database} is being seeded by another demo started at the same "
                       "time: run one demo per database")


async def admit_demo(services: Services, *, new: bool,
                     database: str = "the database", own: str = OWN_DATABASE) -> bool:
    """Whether the demo's world is complete in this database already; marks it as the
    demo's (``DEMO_MADE``) when this start made it (``new``). `chargegraph demo` decides
    which database it may use before it opens one (``chargegraph.demo_database``: made and
    marked, or found marked); this is the same rule again, on the store: a database
    without the mark is refused untouched (``not_the_demos``, naming ``database``, advising
    ``own``), even without accounts (a deployment's service may run on it without the OCPP
    server, holding no lease): the seed would give it an admin whose password is in the
    README. Refused as well while an instance of the service leases it (a demo database
    ``serve`` or another demo runs on, complete or not), and when another start made it
    at the same time."""
    store = services.ctx.store
    # QA s26: `chargegraph demo` run where the service's settings apply (in its container,
    # or beside its .env) seeded the production database with the demo admin, then found
    # its ports taken and exited 3, leaving that admin able to sign in to the real service.
    marked = await store.sequence_value(DEMO_MADE) > 0
    if not marked and not new:
        raise not_the_demos(database, own)
    # Before the complete world's early return (review r26-onboard3: a second demo served
    # a complete demo database a running demo or service used, their chargers kicking
    # each other off).
    if await store.count(d.InstanceLease, Range("expires_at", gte=utcnow())):
        raise in_use(database, own)
    if await store.sequence_value(DEMO_SEEDED):
        return True
    if not marked and await store.next_sequence(DEMO_MADE) != 1:
        raise another_demo(database)
    return False


async def seed_demo(services: Services, *, new: bool, database: str = "the database",
                    own: str = OWN_DATABASE) -> DemoSummary:
    """Seeds the demo world through the domain services, as the system, in a database
    ``admit_demo`` admits (``new``, ``database``, ``own``: as there).

    Idempotent: once complete (``DEMO_SEEDED``), a later run returns at once, whatever
    the accounts were changed to; a run that was interrupted half-way completes the world
    on the next start, because every step skips what exists."""
    summary = DemoSummary(created=False)
    summary.cp_ids = [s[1] for s in STATIONS]
    summary.connectors = {s[1]: station_connectors(index) for index, s in enumerate(STATIONS)}
    summary.id_tags = [f"DEMO-{i + 1:04d}" for i in range(len(DRIVERS))]
    summary.logins = [("ADMIN", ADMIN_EMAIL, DEMO_PASSWORD)]
    summary.logins += [("OPERATOR", email, DEMO_PASSWORD) for _, email in COMPANIES.values()]
    summary.logins += [("DRIVER", email, DEMO_PASSWORD) for _, email, *_ in DRIVERS]
    if await admit_demo(services, new=new, database=database, own=own):
        return summary
    store = services.ctx.store
    summary.created = True
    try:
        await _world(services, summary)
    except Conflict as exc:
        # Two starts completing one interrupted seed at once: each step found nothing,
        # and the other's write came first (review r26-onboard: a UniqueViolation
        # traceback). The other goes on; this one says why it stops.
        raise ConfigError(f"{another_demo(database)} ({exc})") from None
    await store.next_sequence(DEMO_SEEDED)
    return summary


async def _world(services: Services, summary: DemoSummary) -> None:
    """Each part of the world that is missing: companies with their operators and
    tariffs, stations, the depot's site, drivers with a car and a card, the admin."""
    store = services.ctx.store
    operators: dict[str, d.User] = {}
    companies: dict[str, d.Company] = {}
    for key, (name, email) in COMPANIES.items():
        companies[key] = company = await services.accounts.ensure_company(SYSTEM, name)
        operators[key] = await _user(services, email, f"{name} Operations",
                                     d.Role.OPERATOR, company.id)
        if await store.find_one(d.Tariff, Eq("company_id", company.id)) is None:
            await _tariffs(services, key, company.id)
    for index, (network, cp_id, name, lat, lon, address) in enumerate(STATIONS):
        try:
            await services.stations.create_station(
                SYSTEM, cp_id=cp_id, name=name, company_id=companies[network].id,
                owner_id=operators[network].id, lat=lat, lon=lon, address=address,
                password=STATION_PASSWORD,
                connectors=station_connectors(index))
        except UniqueViolation:
            continue  # a station of that id exists already: keep it
    await _site(services, companies["havel"])
    for (name, email, plate, make, model, battery), tag in zip(DRIVERS, summary.id_tags,
                                                               strict=True):
        driver = await _user(services, email, name, d.Role.DRIVER, None)
        if await store.find_one(d.IdTag, Eq("tag", tag)) is not None:
            continue  # the card is issued last
        viewer = Viewer.of(driver)
        # A start stopped between the two left the car: its card is issued for it.
        vehicle = await store.find_one(d.Vehicle, all_of(
            Eq("owner_id", driver.id), Eq("license_plate", plate), Eq("removed_at", None))) \
            or await services.fleet.add_vehicle(viewer, license_plate=plate, make=make,
                                                model=model, battery_kwh=battery)
        await services.fleet.issue_id_tag(viewer, tag=tag, vehicle_id=vehicle.id)
    await _user(services, ADMIN_EMAIL, "Demo Admin", d.Role.ADMIN, None)


async def _tariffs(services: Services, network: str, company_id: str) -> None:
    """Each network's prices, showing what tariffs can do: Spree bills idle time after
    30 minutes (capped) and has a DC price; Havel has a session fee and a weekday peak."""
    since = utcnow() - timedelta(days=365)
    common: dict[str, Any] = {"company_id": company_id, "currency": "EUR",
                              "tax_rate": Decimal("0.19"), "valid_from": since}
    if network == "spree":
        idle: dict[str, Any] = {"idle_price_per_minute": Decimal("0.10"),
                                "idle_grace_minutes": 30, "idle_fee_cap": Decimal("12")}
        await services.tariffs.set_tariff(SYSTEM, price_per_kwh=Decimal("0.49"),
                                          **idle, **common)
        await services.tariffs.set_tariff(SYSTEM, price_per_kwh=Decimal("0.69"),
                                          power_type=d.PowerType.DC, **idle, **common)
    else:
        peak = BandInput(days=["MON", "TUE", "WED", "THU", "FRI"], start="07:00",
                         end="20:00", price_per_kwh="0.55")
        await services.tariffs.set_tariff(
            SYSTEM, price_per_kwh=Decimal("0.45"), session_fee=Decimal("0.50"),
            energy_bands=[peak], time_zone="Europe/Berlin", **common)


def station_connectors(index: int) -> list[ConnectorSpec]:
    """The connectors of ``STATIONS[index]``: every other station has a CCS2 fast
    charger."""
    fast = index % 2 == 0
    return [ConnectorSpec(1, d.ConnectorType.CCS2 if fast else d.ConnectorType.TYPE2,
                          150 if fast else 22),
            ConnectorSpec(2, d.ConnectorType.TYPE2, 22)]


#: The demo's site: the Tegel depot's grid connection, shared by its two plugs (a
#: 150 kW CCS2 and a 22 kW Type 2) under site load management.
DEPOT = ("Tegel depot", "BER-TXL-01", 40.0)


async def _site(services: Services, havel: d.Company) -> None:
    """Havel's Tegel depot, one station behind a 40 kW connection: a session there gets
    the whole (its plug's rating at most), two share it (``Site.allocations``)."""
    name, cp_id, max_kw = DEPOT
    store = services.ctx.store
    station = await store.find_one(d.Station, Eq("cp_id", cp_id))
    if station is None or station.site_id is not None:
        return
    site = await store.find_one(d.Site, Eq("name", name)) or \
        await services.sites.create_site(SYSTEM, name=name, max_power_kw=max_kw,
                                         company_id=havel.id)
    await services.sites.assign_station(SYSTEM, station.id, site.id)


async def _user(services: Services, email: str, name: str, role: d.Role,
                company_id: str | None) -> d.User:
    existing = await services.ctx.store.find_one(d.User, Eq("email", email))
    return existing or await services.accounts.create_user(
        SYSTEM, email=email, password=DEMO_PASSWORD, name=name, role=role,
        company_id=company_id)


def banner(summary: DemoSummary, graphql_url: str, ocpp_url: str, *,
           chargers: bool = True, state_file: Path | None = None) -> str:
    """The box the demo prints once it serves; ``chargers``: whether it runs simulated
    chargers (``--no-chargers`` runs none, and the box must not promise eight);
    ``state_file``: where they keep what they were told (``charger_state_file``), named
    so that whoever finds it knows what it is and that a new world removes it (QA s31:
    the demo wrote it and said nothing)."""
    simulated = (f"{len(summary.cp_ids)} ({', '.join(summary.cp_ids[:3])}, …)" if chargers
                 else "none (--no-chargers)")
    lines = [
        "ChargeGraph demo",
        "",
        f"GraphQL + GraphiQL  {graphql_url}",
        f"OCPP 1.6J           {ocpp_url}/{{cpId}}",
        f"Simulated chargers  {simulated}",
        *([f"Chargers' state     {state_file} (kept across restarts; a new world, "
           "first start or --reset, removes it)"] if state_file is not None else []),
        "",
        "Logins (mutation { login(email, password) { token } }):",
        *(f"  {role:<9} {email:<34} {password}" for role, email, password in summary.logins),
    ]
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line:<{width}} |" for line in lines), rule])
