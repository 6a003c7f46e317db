"""Price lists. A tariff belongs to a company or to one station; the station's wins.
Setting a tariff adds a new version from ``valid_from`` on, so sessions keep the price
that was in force when they started."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from domain import validation as v
from domain.clock import utcnow
from domain.entities import (
    POWER_OF_PLUG,
    Company,
    ConnectorType,
    PowerType,
    Session,
    Station,
    Tariff,
)
from domain.errors import Forbidden, ValidationError
from domain.policy import Viewer, refuse_unless_staff
from domain.ports import Change, Guard, Insert, Store
from domain.query import Eq, Filter, In, NotSub, Range, Sort, all_of, any_of
from domain.services.base import UNSET, Service, stamp_new, still_in_books
from domain.services.edits import edit, removal, retried
from domain.tariff_bands import BandInput, checked_bands

#: How far before "now" an operator's validFrom may be (clocks of client and server).
BACKDATE_SLACK = timedelta(minutes=1)
#: The version in force is the latest ``valid_from``; of two with the same one, the one
#: set last (a correction of a typo made with the same start).
LATEST_VERSION_FIRST = (Sort("valid_from", descending=True),
                        Sort("created_at", descending=True),
                        Sort("id", descending=True))  # ids count up within a millisecond
#: The longest idle grace a tariff may give: a day (a longer one is a typo, or no idle fee).
MAX_IDLE_GRACE_MINUTES = 24 * 60
#: Versions of a station or company ``tariff_at`` reads at a close: a few, its scopes'
#: latest (more, and a scope none of them has is looked up alone).
VERSIONS_AT_ONCE = 8
#: How far past the latest session a version priced its end is put when that session's
#: receipt (our clock on another instance) is later than ours: the stores' precision,
#: so the session's instant is before the end (``Tariff.removed_by``).
AFTER_LAST_PRICED = timedelta(milliseconds=1)
#: Versions per station or company one batch reads (the latest before the newest start of
#: the batch); a session older than all of them is looked up alone.
VERSIONS_PER_BATCH = 50
#: Later versions of a scope ``_after`` reads at a time (the next one is nearly always the
#: first of them).
AFTER_PAGE = 16


def removal_end(tariff: Tariff, now: datetime, last_priced: datetime | None
                ) -> tuple[datetime | None, datetime]:
    """How a version is removed (``removeTariff``, a station's handover): ``None``, deleted
    (not in force yet by ``now``, and no session of its owner received since it begins:
    it priced none), or the instant it ends: ``now``, or just after the latest session of
    its owner received since it begins (``last_priced``, that session's ``created_at``;
    ``None``: none) when that is later by our clock (another instance's, ahead of ours,
    found it in force). And the instant from which no session of its owner may be
    received before the write (its ``Guard``): one that was may be priced by it."""
    priced = last_priced is not None and last_priced >= tariff.valid_from
    if tariff.valid_from > now and not priced:
        return None, tariff.valid_from
    until = max(now, last_priced + AFTER_LAST_PRICED) if priced and last_priced else now
    return until, until


@dataclass(frozen=True, slots=True)
class PricedAt:
    """What decides the tariff that prices a session: its station, the company whose books
    it is in, its start and its plug (``tariff_at(station, start, company_id=books,
    connector_type=plug)``). ``station_owner_id``: the rest of its books
    (``base.books_of``), which decides who sees that tariff through it, not which it is."""

    station_id: str
    company_id: str | None
    at: datetime
    connector_type: ConnectorType | None = None
    station_owner_id: str | None = None

    @classmethod
    def of(cls, session: Session) -> PricedAt:
        return cls(session.station_id, session.company_id, session.priced_at,
                   session.connector_type, session.station_owner_id)


#: A tariff's scope: (field, value) of one plug standard or one power type; None for
#: all plugs.
Scope = tuple[str, Any] | None


def scopes_for(plug: ConnectorType | None) -> tuple[Scope, ...]:
    """The scopes that price a session on ``plug``, most specific first: its standard,
    its power type (if it has one), all plugs. An owner's (station's, else company's)
    most specific scope with a version in force prices it; a station's tariff of any
    scope still wins over its company's, as it always did."""
    power = POWER_OF_PLUG.get(plug) if plug is not None else None
    return (*((("connector_type", plug),) if plug is not None else ()),
            *((("power_type", power),) if power is not None else ()), None)


def _in_scope(tariff: Tariff, scope: Scope) -> bool:
    if scope is None:
        return tariff.connector_type is None and tariff.power_type is None
    field, value = scope
    return bool(getattr(tariff, field) == value)


def _scope_filter(scope: Scope) -> Filter:
    if scope is None:
        return all_of(Eq("connector_type", None), Eq("power_type", None))
    return Eq(*scope)


async def tariffs_in_force(store: Store, wanted: Sequence[PricedAt]) -> list[Tariff | None]:
    """``tariff_at`` for many sessions at once (a page of them): one store call for their
    stations' versions, one for their companies' when a station has none in force. Not
    scoped: the tariff that priced a session whatever the viewer sees of it."""
    if not wanted:
        return []
    found = await _in_force(store, "station_id",
                            [(w.station_id, w.at, w.connector_type) for w in wanted])
    rest = [i for i, tariff in enumerate(found)
            if tariff is None and wanted[i].company_id is not None]
    if rest:
        by_company = await _in_force(store, "company_id", [
            (wanted[i].company_id, wanted[i].at, wanted[i].connector_type) for i in rest])
        for i, tariff in zip(rest, by_company, strict=True):
            found[i] = tariff
    return found


async def _in_force(store: Store, field: str,
                    wanted: list[tuple[Any, datetime, ConnectorType | None]]
                    ) -> list[Tariff | None]:
    """For each (owner, instant, plug): the version of the owner's tariffs (``field``:
    station or company) in force then for that plug (``_pick``)."""
    groups = await store.find_grouped(
        Tariff, field, list({key for key, _, _ in wanted}),
        Range("valid_from", lte=max(at for _, at, _ in wanted)), LATEST_VERSION_FIRST,
        VERSIONS_PER_BATCH)
    return [await _pick(store, field, key, at, plug, groups.get(key, []), VERSIONS_PER_BATCH)
            for key, at, plug in wanted]


async def _pick(store: Store, field: str, key: Any, at: datetime, plug: ConnectorType | None,
                versions: Sequence[Tariff], limit: int) -> Tariff | None:
    """Of the owner's latest ``versions`` (``LATEST_VERSION_FIRST``, from before the
    newest instant wanted, ``limit`` of them read), the one in force at ``at`` in the
    most specific scope that has one (``scopes_for``): in each scope the first in that
    order from before ``at`` not ended by then (``Tariff.removed_by``), the one a query
    of those alone, limited to one, would find. When ``limit`` versions were read, a
    scope none of them has may have older ones: it is looked up alone. A version a later
    one replaced ends where that one begins (``set_tariff``), one removed where it was
    removed; passed over, they let through only the version a removal reopened (the one
    the removed version had replaced, ``remove_tariff``)."""
    for scope in scopes_for(plug):
        hit = next((t for t in versions if t.valid_from <= at and _in_scope(t, scope)
                    and not t.removed_by(at)), None)
        if hit is None and len(versions) == limit:
            hit = await _latest(store, field, key, at, scope)  # older than those read
        if hit is not None:
            return hit
    return None


def open_at(at: datetime) -> Filter:
    """Versions not ended by ``at`` (``Tariff.removed_by``; on MongoDB a document written
    before removals has no ``valid_until``, which ``Eq(None)`` matches)."""
    return any_of(Eq("valid_until", None), Range("valid_until", gt=at))


async def _latest(store: Store, field: str, key: Any, at: datetime, scope: Scope
                  ) -> Tariff | None:
    """The owner's version in force at ``at`` in ``scope`` alone (``_pick``'s rule)."""
    found = await store.find_all(Tariff, all_of(Eq(field, key), Range("valid_from", lte=at),
                                                _scope_filter(scope), open_at(at)),
                                 LATEST_VERSION_FIRST, limit=1)
    return found[0] if found else None


async def _after(store: Store, field: str, key: Any, tariff: Tariff) -> Tariff | None:
    """The earliest version of ``tariff``'s owner and scope beginning after it (set for
    later, or an admin's dated back before it) that is not removed: where ``tariff``
    ends. A removed one (ended where no version begins: by a removal or a handover) is
    history, not the next price (QA s31: an admin's version dated back before one was
    ended at its start, and its scope was left without a price). Read ``AFTER_PAGE`` at
    a time in start order, stopping at the first not removed (review s31: a scope's
    every later version was read, however many years of them)."""
    where = all_of(Eq(field, key), _scope_filter(_scope_of(tariff)))
    past: Filter = Range("valid_from", gt=tariff.valid_from)
    while True:
        page = await store.find_all(Tariff, all_of(where, past),
                                    (Sort("valid_from"), Sort("id")), limit=AFTER_PAGE)
        starts = {version.valid_from for version in page}
        for version in page:
            # A version beginning where it ends may be on a later page (only if it ends
            # at or after this page's last start): asked alone.
            if (version.valid_until is None or version.valid_until in starts
                    or (len(page) == AFTER_PAGE and version.valid_until >= page[-1].valid_from
                        and await _replaced_at_its_end(store, field, key, version))):
                return version
        if len(page) < AFTER_PAGE:
            return None
        last = page[-1]  # the next page: after it in (start, id) order
        past = all_of(Range("valid_from", gte=last.valid_from),
                      any_of(Range("valid_from", gt=last.valid_from),
                             Range("id", gt=last.id)))


async def _replaced_at_its_end(store: Store, field: str, key: Any, tariff: Tariff) -> bool:
    """Whether a later version of ``tariff``'s owner and scope begins where it ends: it
    was replaced, not removed (QA s31: asked of the next version, a removed one read as
    the next and a version in force was refused as removed)."""
    return await store.find_one(
        Tariff, all_of(Eq(field, key), Eq("valid_from", tariff.valid_until),
                       _scope_filter(_scope_of(tariff)),
                       NotSub("id", Tariff.kind, Eq("id", tariff.id)))) is not None


async def _ending_as(store: Store, field: str, key: Any, tariff: Tariff) -> Tariff | None:
    """The version a new ``tariff`` replaces: of its owner and scope, the latest from
    before its start whose end is the new one's (open, or the next version's start), the
    one in force at its start in the usual case. One ending elsewhere keeps its end: one
    removed already keeps its removal (an admin's version dated back across it). Not
    necessarily the one in force there: a version dated inside a removed one's priced
    range, whose removal reopened the one it had replaced, replaces that one (review
    s31: it was left open beside the new one, two versions listed open). Ending it at
    the new one's start prices as before: from there on the new one, later in
    ``LATEST_VERSION_FIRST``'s order with the same end, prices what it would have."""
    found = await store.find_all(
        Tariff, _ending_filter(field, key, tariff, tariff.valid_until), LATEST_VERSION_FIRST,
        limit=1)
    return found[0] if found else None


def _replaced_filter(field: str, key: Any, tariff: Tariff) -> Filter:
    """Versions ``tariff`` replaced (``_replaced_by``), itself left out."""
    return all_of(_ending_filter(field, key, tariff, tariff.valid_from),
                  NotSub("id", Tariff.kind, Eq("id", tariff.id)))


def _ending_filter(field: str, key: Any, tariff: Tariff, end: datetime | None) -> Filter:
    """Versions of ``tariff``'s owner (``field`` is ``key``) and scope from no later than
    its start that end at ``end`` (``None``: open)."""
    return all_of(Eq(field, key), Range("valid_from", lte=tariff.valid_from),
                  _scope_filter(_scope_of(tariff)), Eq("valid_until", end))


async def _replaced_by(store: Store, field: str, key: Any, tariff: Tariff) -> list[Tariff]:
    """The versions ``tariff`` replaced (``set_tariff`` ended them where ``tariff``
    begins), latest first: the first is the one it replaced, of its owner and scope the
    latest ending at ``tariff``'s start; any other ended there before (a version a
    correction with the same start replaced, one removed at that instant). Empty: it
    replaced none (its scope had no version in force then, or one removed before). A
    few: versions ending at one instant."""
    return await store.find_all(Tariff, _replaced_filter(field, key, tariff),
                                LATEST_VERSION_FIRST)


def _owner(tariff: Tariff) -> tuple[str, Any]:
    return (("station_id", tariff.station_id) if tariff.station_id is not None
            else ("company_id", tariff.company_id))


def _scope_of(tariff: Tariff) -> Scope:
    """The scope a version prices (``scopes_for``)."""
    if tariff.connector_type is not None:
        return ("connector_type", tariff.connector_type)
    if tariff.power_type is not None:
        return ("power_type", tariff.power_type)
    return None


def _known_currency(currency: str) -> str | None:
    """``currency`` as stored when the tariffs take it, else None (its own field tells)."""
    try:
        return v.currency(currency)
    except ValidationError:
        return None


def _one_owner(company_id: str | None, station_id: str | None) -> None:
    if company_id is None and station_id is None:
        raise ValidationError("give exactly one of companyId and stationId",
                              field="stationId", code="REQUIRED")
    if company_id is not None and station_id is not None:
        # Both given is a combination refused, not a field missing: INVALID on the one
        # given second, as _one_scope and a page's first and last.
        raise ValidationError("give exactly one of companyId and stationId",
                              field="stationId", code="INVALID")


def _one_scope(connector_type: ConnectorType | None, power_type: PowerType | None) -> None:
    if connector_type is not None and power_type is not None:
        # One scope per version: "CCS2 and AC" prices nothing, "CCS2 and DC" is CCS2.
        raise ValidationError("give at most one of connectorType and powerType",
                              field="powerType", code="INVALID")


def _valid_from(valid_from: datetime, viewer: Viewer) -> datetime:
    """A version's start. A session is priced by the tariff in force when it started: a
    version dated back would re-price sessions under way (and their drivers agreed to
    the old price). Admins may correct history; operators price from now on. An
    operator's instant a little in the past (``BACKDATE_SLACK``: a client's clock behind
    ours, or "now" sent a moment ago) is taken as now: kept as given, it re-priced the
    sessions started in that minute (QA s21: 3.00 EUR billed 50.00)."""
    start = v.instant(valid_from, "validFrom")
    if viewer.is_admin:
        return start
    now = utcnow()
    if start < now - BACKDATE_SLACK:
        raise ValidationError("validFrom cannot be in the past", field="validFrom",
                              code="OUT_OF_RANGE")
    return max(start, now)


class TariffService(Service):
    # A set or a removal that met a change is run again after ``pause_to_retry``: an
    # admin's price dated back and a removal, both writing the version the removed one
    # replaced, each read the other's write in flight on MongoDB and met again in step
    # (review s31: CHANGED reached the client in a quarter of such races).

    async def set_tariff(self, viewer: Viewer, *, price_per_kwh: Decimal | str,
                         currency: str, company_id: str | None = None,
                         station_id: str | None = None,
                         price_per_minute: Decimal | str = Decimal(0),
                         session_fee: Decimal | str = Decimal(0),
                         tax_rate: Decimal | str = Decimal(0),
                         valid_from: datetime | None = None,
                         idle_price_per_minute: Decimal | str = Decimal(0),
                         idle_grace_minutes: int = 0,
                         idle_fee_cap: Decimal | str | None = None,
                         energy_bands: Sequence[BandInput] = (),
                         time_zone: str | None = None,
                         connector_type: ConnectorType | None = None,
                         power_type: PowerType | None = None,
                         checks: v.Checks | None = None) -> Tariff:
        """Every invalid field is reported at once (with the caller's ``checks``), before
        the station or company is looked up."""
        refuse_unless_staff(viewer, "set prices")
        checks = checks or v.Checks()
        checks(_one_owner, company_id, station_id)
        code = _known_currency(currency)  # prices are bounded in its minor units
        tariff = Tariff(
            company_id=company_id,
            station_id=station_id,
            price_per_kwh=checks(v.price, price_per_kwh, "pricePerKwh", code),
            currency=checks(v.currency, currency),
            price_per_minute=checks(v.price, price_per_minute, "pricePerMinute", code),
            session_fee=checks(v.price, session_fee, "sessionFee", code),
            tax_rate=checks(v.rate, tax_rate, "taxRate"),
            idle_price_per_minute=checks(v.price, idle_price_per_minute,
                                         "idlePricePerMinute", code),
            idle_grace_minutes=checks(v.whole, idle_grace_minutes, "idleGraceMinutes",
                                      max_value=MAX_IDLE_GRACE_MINUTES),
            idle_fee_cap=None if idle_fee_cap is None
            else checks(v.price, idle_fee_cap, "idleFeeCap", code),
        )
        if valid_from is not None:
            tariff.valid_from = checks(_valid_from, valid_from, viewer) or tariff.valid_from
        tariff.energy_bands, tariff.time_zone = checks(checked_bands, energy_bands,
                                                       time_zone, currency=code) or ([], None)
        checks(_one_scope, connector_type, power_type)
        tariff.connector_type, tariff.power_type = connector_type, power_type
        checks.done()
        return await retried(lambda: self._set(viewer, tariff), pause=self.pause_to_retry)

    async def _set(self, viewer: Viewer, tariff: Tariff) -> Tariff:
        """``set_tariff``'s check and write. A station's price is written only while the
        station is in the books it was checked in (``still_in_books``): a handover
        landing between the check and the write ended the station's prices before this
        one was written, which then priced the new company's sessions at the former
        company's price (review s26). Run again, the check reads the station as handed
        over: the former company's operator is refused (NOT_FOUND: they no longer see
        it), an admin's price is set on the station as it is now."""
        station = await self._may_price(viewer, tariff.company_id, tariff.station_id)
        stamp_new(tariff, viewer)
        field, key = _owner(tariff)
        after = await _after(self.store, field, key, tariff)
        tariff.valid_until = after.valid_from if after is not None else None
        replaced = await _ending_as(self.store, field, key, tariff)
        changes: list[tuple[Change, Any]] = [(Insert(tariff), None)]
        # The version it replaces ends at its start (the list shows what prices), on the
        # version read: a removal or another price meanwhile runs this again. That end is
        # what a removal of the new one gives back (``remove_tariff``).
        if replaced is not None:
            changes.append((edit(replaced, viewer, valid_until=tariff.valid_from), replaced))
        guards = [still_in_books(station)] if station is not None else []
        if after is not None:
            # It ends where the next version begins only while that one is there: one
            # called off meanwhile left it ending where nothing begins, and its scope fell
            # to the next one from then on (review s31). Run again, it is open.
            # And only while it is not removed meanwhile (ended now, review s31): the new
            # one ended at its start and nothing was left open.
            guards.append(Guard(Tariff, all_of(Eq("id", after.id),
                                               Eq("valid_until", after.valid_until))))
        await self.commit(viewer, changes, guards=guards)
        return tariff

    async def _may_price(self, viewer: Viewer, company_id: str | None,
                         station_id: str | None, field: str | None = None
                         ) -> Station | None:
        """The station (or company) exists for the viewer, who may set its prices.
        Answers the station read (``None`` for a company's prices)."""
        if station_id is not None:
            station = await self.visible(viewer, Station, station_id,
                                         field=field or "stationId")
            if not self.policy.may_manage_station(viewer, station):
                raise Forbidden("you may not price this station", field=field or "stationId")
            return station
        else:
            await self.visible(viewer, Company, company_id, field=field or "companyId")
            if not self.policy.may_manage_company(viewer, company_id):
                raise Forbidden("you may not price this company", field=field or "companyId")
            return None

    async def remove_tariff(self, viewer: Viewer, tariff_id: str,
                            checks: v.Checks | None = None) -> Tariff:
        """Removes a price list version, for whoever may set it (``set_tariff``'s rule).
        One that has priced no session, not in force yet, is deleted: the version before
        it goes on (a price change called off). One in force in its scope, or one a
        session was priced by already (an instance whose clock runs ahead of ours found
        it in force), ends instead (``Tariff.valid_until``): now, or just after the
        latest session it priced if that one came later by our clock; sessions starting
        from then on are priced by the next scope of its owner's (``scopes_for``: a
        plug standard's by its power type's, that by the all-plugs one), and a
        station's, having none left, by its company's; sessions started before keep
        it, and their receipts with it. Without a removal a station once priced on its
        own could never go back to its company's prices, nor a company's DC price list
        be given up. A version a later one replaced, or removed already, prices no new
        session: ``INVALID_STATE``. Answers the version as it was (deleted) or as it is
        now (ended). Written only onto the version read, and only while the sessions
        read are all there are (``_remove``, ``retried``)."""
        refuse_unless_staff(viewer, "remove prices", checks)
        return await retried(lambda: self._remove(viewer, tariff_id),
                             pause=self.pause_to_retry)

    async def _remove(self, viewer: Viewer, tariff_id: str) -> Tariff:
        """``remove_tariff``'s read, checks and write. A session links to the version
        that prices it by its owner (station, or company whose books it is in) and its
        instant (``Session.priced_at``, never after its receipt ``created_at``): a
        session of the owner received since the version's start may be priced by it.
        The write holds only while no such session came since the read (a ``Guard``):
        one that did fails it, and the removal runs again and ends the version after
        that session (review s25: an instance whose clock ran behind deleted a version
        that had priced a session already, which its close re-priced)."""
        tariff = await self.visible(viewer, Tariff, tariff_id)
        await self._may_price(viewer, tariff.company_id, tariff.station_id, field="id")
        now = self.now()
        field, key = _owner(tariff)
        if tariff.valid_until is not None:
            # Ended where a later version begins (``set_tariff``), or by a removal.
            if not await _replaced_at_its_end(self.store, field, key, tariff):
                raise ValidationError("it prices no new session already (removed)",
                                      field="id", code="INVALID_STATE")
            # Ending where it begins (a correction with its start replaced it), it prices
            # no session ever, whenever that is: refused as one replaced already is, not
            # deleted, so the list keeps the correction's history.
            if tariff.valid_until <= max(now, tariff.valid_from):
                raise ValidationError("it prices no new session already (replaced by a "
                                      "later version)", field="id", code="INVALID_STATE")
        since = all_of(Eq(field, key), Range("created_at", gte=tariff.valid_from))
        last = await self.store.find_all(Session, since, (Sort("created_at", descending=True),),
                                         limit=1)
        until, guarded = removal_end(tariff, now, last[0].created_at if last else None)
        # Nothing priced by it (deleted), or a session received from its end on, before
        # this write, would lose its price: the write holds while none comes.
        guards = [Guard(Session, all_of(Eq(field, key), Range("created_at", gte=guarded)),
                        exists=False)]
        # The version it replaced takes its place again, to where the removed one would
        # have ended (open, or a later version's start): removeTariff undoes setTariff.
        ending = await _replaced_by(self.store, field, key, tariff)
        reopened: list[tuple[Change, Any]] = [
            (edit(replaced, viewer, valid_until=tariff.valid_until), replaced)
            for replaced in ending[:1]]
        # No version set meanwhile before it, ending where it began (read as the next):
        # it would end where nothing begins (review s31); run again, the removal gives it
        # that end back. Only one new since the read: those ending there already stay as
        # they are (one a correction replaced, one removed there), and guarding on them
        # failed every try (CHANGED for ever).
        seen = tuple(version.id for version in ending)
        guards.append(Guard(Tariff, all_of(
            _replaced_filter(field, key, tariff),
            NotSub("id", Tariff.kind, In("id", seen)) if seen else None), exists=False))
        if until is None:
            await self.commit(viewer, [(removal(tariff), tariff), *reopened], guards=guards)
            return tariff
        latest = await _latest(self.store, field, key, until, _scope_of(tariff))
        if latest is None or latest.id != tariff.id:
            raise ValidationError("it prices no new session already (replaced by a later "
                                  "version)", field="id", code="INVALID_STATE")
        ended = edit(tariff, viewer, valid_until=until)
        await self.commit(viewer, [(ended, tariff), *reopened], guards=guards)
        return cast(Tariff, ended.record)

    async def in_force_beside(self, viewer: Viewer, tariff: Tariff) -> Tariff | None:
        """The version of ``tariff``'s owner and scope in force now (``_pick``'s rule in
        that scope alone): after a removal, the one it replaced, or None when the scope is
        left without a price. For the ``viewer`` who just set or removed one of them
        (``set_tariff``'s rule: who may set them sees them)."""
        refuse_unless_staff(viewer, "read prices")
        field, key = _owner(tariff)
        return await _latest(self.store, field, key, self.now(), _scope_of(tariff))

    async def tariff_at(self, station: Station, at: datetime, company_id: Any = UNSET,
                        connector_type: ConnectorType | None = None) -> Tariff | None:
        """The tariff in force for a session on ``station`` from ``at`` on a plug of
        ``connector_type``: the station's latest version from before ``at`` in the most
        specific scope that fits the plug (``scopes_for``), else its company's
        (``company_id``, default the station's now). One store call per owner asked."""
        company = station.company_id if company_id is UNSET else company_id
        for field, key in (("station_id", station.id), ("company_id", company)):
            if key is None:
                continue
            versions = await self.store.find_all(
                Tariff, all_of(Eq(field, key), Range("valid_from", lte=at)),
                LATEST_VERSION_FIRST, limit=VERSIONS_AT_ONCE)
            found = await _pick(self.store, field, key, at, connector_type, versions,
                                VERSIONS_AT_ONCE)
            if found is not None:
                return found
        return None
