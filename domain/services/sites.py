"""Sites: chargers behind one grid connection, and which stations charge behind which.

Keeping the records (audited like every record) is this module; sharing the site's power
among its sessions and telling the chargers is ``site_load.py``, asked to recompute after
every change here that can move a share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

from domain import validation as v
from domain.entities import (
    DEFAULT_PHASES,
    DEFAULT_VOLTAGE,
    ChargingRateUnit,
    Company,
    Site,
    Station,
    min_session_kw,
)
from domain.errors import Conflict, Forbidden, ValidationError
from domain.events import StationChanged
from domain.policy import Viewer, refuse_unless_staff
from domain.ports import Delete, Guard, Insert
from domain.query import Eq, all_of
from domain.services.base import UNSET, Service, owned_by, stamp_new
from domain.services.edits import edit, retried

#: A grid connection no site has: 100 MW.
MAX_SITE_KW = 100_000.0
MIN_VOLTAGE, MAX_VOLTAGE = 100.0, 1_000.0


def _power(value: Any, field: str) -> float:
    """A power in kW: a finite number above 0, at most ``MAX_SITE_KW``."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 < value <= MAX_SITE_KW:
        raise ValidationError(f"must be > 0 and ≤ {v.number(MAX_SITE_KW)} kW", field=field,
                              code="OUT_OF_RANGE")
    return float(value)


def _voltage(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not MIN_VOLTAGE <= value <= MAX_VOLTAGE:
        raise ValidationError(f"must be within {v.number(MIN_VOLTAGE)}..{v.number(MAX_VOLTAGE)} V",
                              field="voltage", code="OUT_OF_RANGE")
    return float(value)


def _phases(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2, 3):
        raise ValidationError("1, 2 or 3", field="phases", code="OUT_OF_RANGE")
    return value


def _unit(value: Any) -> ChargingRateUnit:
    try:
        return ChargingRateUnit(value)
    except ValueError:
        raise ValidationError("W or A", field="unit", code="INVALID") from None


def _min_within(min_kw: float, max_kw: float, unit: ChargingRateUnit, voltage: float,
                phases: int, *, floor_checked: bool = True) -> None:
    """The per-session minimum: not above the limit and, for limits in amperes (AC
    chargers), not below 6 A on each phase (``min_session_kw``), which a charger cannot
    charge at: 1.4 kW shared on three phases was sent as 2.0 A."""
    if min_kw > max_kw:
        raise ValidationError("the per-session minimum cannot exceed the site's limit",
                              field="minPowerKw", code="OUT_OF_RANGE")
    floor = min_session_kw(voltage, phases)
    if floor_checked and unit is ChargingRateUnit.A and min_kw < floor - 1e-9:
        raise ValidationError(f"at least {v.number(floor)} kW: 6 A on each of {phases} "
                              f"phase(s) at {v.number(voltage)} V, the least an AC charger "
                              "charges at",
                              field="minPowerKw", code="OUT_OF_RANGE")


def _edit(checks: v.Checks, value: Any, field: str, check: Callable[..., Any],
          *args: Any) -> Any:
    """A site edit's field: UNSET when left out, else refused when null (REQUIRED) or
    when ``check(value, *args)`` fails, the failure kept in ``checks``."""
    if value is UNSET:
        return UNSET
    if value is None:
        return checks(v.present, value, field, "cannot be empty")
    return checks(check, value, *args)


def _new_minimum(min_kw: float | None, max_kw: float, unit: ChargingRateUnit,
                 voltage: float, phases: int) -> float:
    """A new site's per-session minimum: the one given, else 6 A on each phase
    (``min_session_kw``), within the limit (``_min_within``)."""
    if min_kw is None:
        min_kw = _power(min_session_kw(voltage, phases), "minPowerKw")
        if min_kw > max_kw:
            raise ValidationError(
                f"the default per-session minimum, 6 A on each of {phases} phase(s) "
                f"({v.number(min_kw)} kW), is above the site's limit: give phases (1 for a "
                "single-phase connection) or minPowerKw", field="minPowerKw",
                code="OUT_OF_RANGE")
    _min_within(min_kw, max_kw, unit, voltage, phases)
    return min_kw


class SiteService(Service):
    #: Set by ``Services``: asked to recompute a site's shares (``SiteLoad.request_site``).
    recompute: Callable[[str], None] | None = None

    def _recompute(self, *site_ids: str | None) -> None:
        for site_id in site_ids:
            if site_id is not None and self.recompute is not None:
                self.recompute(site_id)

    async def managed_site(self, viewer: Viewer, site_id: str, field: str = "id") -> Site:
        site = await self.visible(viewer, Site, site_id, field=field)
        if not self.policy.may_manage_company(viewer, site.company_id):
            raise Forbidden("you may not change this site", field=field)
        return site

    async def create_site(self, viewer: Viewer, *, name: str, max_power_kw: float,
                          company_id: str | None = None,
                          min_power_kw: float | None = None,
                          unit: ChargingRateUnit | str = ChargingRateUnit.W,
                          voltage: float | None = None, phases: int | None = None,
                          checks: v.Checks | None = None) -> Site:
        """A site of a company: an operator's own company's (the default), any for
        admins. Every invalid field is reported at once (with the caller's ``checks``),
        before the company is looked up; the per-session minimum is judged against the
        limit, unit, voltage and phases once they passed their own checks."""
        refuse_unless_staff(viewer, "create sites")
        if viewer.is_operator:
            company_id = company_id or viewer.company_id
        checks = checks or v.Checks()
        company_id = checks(v.present, company_id, "companyId", "a site belongs to a company")
        name = checks(v.name, name)
        max_kw = checks(_power, max_power_kw, "maxPowerKw")
        if min_power_kw is not None:
            min_power_kw = checks(_power, min_power_kw, "minPowerKw")
        rate_unit = checks(_unit, unit)
        volts = checks(_voltage, DEFAULT_VOLTAGE if voltage is None else voltage)
        lines = checks(_phases, DEFAULT_PHASES if phases is None else phases)
        min_kw = 0.0
        if not checks.failed("maxPowerKw", "minPowerKw", "unit", "voltage", "phases"):
            min_kw = checks(_new_minimum, min_power_kw, max_kw, rate_unit, volts, lines)
        checks.done()
        await self.visible(viewer, Company, company_id, field="companyId")
        if not self.policy.may_manage_company(viewer, company_id):
            raise Forbidden("operators create sites for their own company",
                            field="companyId")
        site = stamp_new(Site(
            name=name, company_id=company_id, max_power_kw=max_kw,
            min_power_kw=min_kw, unit=rate_unit, voltage=volts, phases=lines), viewer)
        await self.commit(viewer, [(Insert(site), None)])
        return site

    async def update_site(self, viewer: Viewer, site_id: str, *, name: Any = UNSET,
                          max_power_kw: Any = UNSET, min_power_kw: Any = UNSET,
                          unit: Any = UNSET, voltage: Any = UNSET, phases: Any = UNSET,
                          checks: v.Checks | None = None) -> Site:
        """Edits a site; a new limit, minimum or unit is sent to its chargers at once.
        The fields given are checked together (with the caller's ``checks``) before the
        site is read; the minimum against the limit after, with what is stored."""
        refuse_unless_staff(viewer, "change sites")
        checks = checks or v.Checks()
        name = _edit(checks, name, "name", v.name)
        max_power_kw = _edit(checks, max_power_kw, "maxPowerKw", _power, "maxPowerKw")
        min_power_kw = _edit(checks, min_power_kw, "minPowerKw", _power, "minPowerKw")
        unit = _edit(checks, unit, "unit", _unit)
        voltage = _edit(checks, voltage, "voltage", _voltage)
        phases = _edit(checks, phases, "phases", _phases)
        checks.done()

        async def once() -> Site:
            site = await self.managed_site(viewer, site_id)
            max_kw = site.max_power_kw if max_power_kw is UNSET else max_power_kw
            min_kw = site.min_power_kw if min_power_kw is UNSET else min_power_kw
            rate_unit = site.unit if unit is UNSET else unit
            volts = site.voltage if voltage is UNSET else voltage
            lines = site.phases if phases is UNSET else phases
            # The 6 A floor is judged when the edit touches what it is made of: a rename of
            # a site stored with a lower minimum is not refused over a field it did not
            # send.
            _min_within(min_kw, max_kw, rate_unit, volts, lines, floor_checked=any(
                given is not UNSET for given in (min_power_kw, unit, voltage, phases)))
            update = edit(site, viewer, name=name, max_power_kw=max_power_kw,
                          min_power_kw=min_power_kw, unit=unit, voltage=voltage, phases=phases)
            await self.commit(viewer, [(update, site)])
            return cast(Site, update.record)

        updated = await retried(once)
        self._recompute(updated.id)
        return updated

    async def remove_site(self, viewer: Viewer, site_id: str,
                          checks: v.Checks | None = None) -> Site:
        """Removes a site, refused while stations are assigned to it: unassigning them is
        a decision about each station's chargers (they leave the site's limit), not a
        side effect of tidying up."""
        refuse_unless_staff(viewer, "remove sites", checks)

        async def once() -> Site:
            site = await self.managed_site(viewer, site_id)
            if await self.store.find_one(Station, Eq("site_id", site.id)) is not None:
                raise Conflict("stations are assigned to this site: unassign them first",
                               field="id", code="IN_USE")
            # A station assigned on another instance meanwhile fails the write; run
            # again, the check above says so.
            await self.commit(viewer, [(Delete(site), site)], guards=[
                Guard(Station, Eq("site_id", site.id), exists=False)])
            return site

        site = await retried(once)
        self._recompute(site.id)  # forgets what shares it still records
        return site

    async def assign_station(self, viewer: Viewer, station_id: str, site_id: str | None,
                             checks: v.Checks | None = None) -> Station:
        """Puts a station behind a site of its own company (``None``: behind none). Both
        sites' shares are recomputed: the one it left and the one it joined."""
        refuse_unless_staff(viewer, "put stations behind sites", checks)
        station, updated = await retried(lambda: self._assign(viewer, station_id, site_id))
        if updated is station:
            return station
        # Other instances drop their cached copy of the station (as any station edit).
        await self.publish(StationChanged(**owned_by(updated)))
        self._recompute(station.site_id, site_id)
        return updated

    async def _assign(self, viewer: Viewer, station_id: str, site_id: str | None
                      ) -> tuple[Station, Station]:
        """``assign_station``'s read, checks and write (``retried``): the station as read
        and as written (the same object when it was behind that site already). The site
        must still be there, its company's, when the write is: removed on another
        instance meanwhile, the station would be left behind a site nobody sees."""
        station = await self.visible(viewer, Station, station_id, field="stationId")
        if not self.policy.may_manage_station(viewer, station):
            raise Forbidden("you may not change this station", field="stationId")
        guards = []
        if site_id is not None:
            site = await self.managed_site(viewer, site_id, field="siteId")
            if station.company_id != site.company_id:
                raise ValidationError("a station joins only a site of its own company",
                                      field="siteId", code="INVALID")
            guards.append(Guard(Site, all_of(Eq("id", site.id),
                                             Eq("company_id", site.company_id))))
        if station.site_id == site_id:
            return station, station
        # On the station as read: moved to another company meanwhile, it is checked again.
        update = edit(station, viewer, site_id=site_id)
        await self.commit(viewer, [(update, station)], guards=guards)
        return station, cast(Station, update.record)

