"""Price lists. A tariff belongs to a company or to one station; the station's wins.
Setting a tariff adds a new version from ``valid_from`` on, so sessions keep the price
that was in force when they started."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from domain import validation as v
from domain.clock import utcnow
from domain.entities import Company, Station, Tariff
from domain.errors import Forbidden, ValidationError
from domain.policy import Viewer
from domain.ports import Insert
from domain.query import Eq, Range, Sort, all_of
from domain.services.base import UNSET, Service, stamp_new

#: How far before "now" an operator's validFrom may be (clocks of client and server).
BACKDATE_SLACK = timedelta(minutes=1)
#: The version in force is the latest ``valid_from``; of two with the same one, the one
#: set last (a correction of a typo made with the same start).
LATEST_VERSION_FIRST = (Sort("valid_from", descending=True),
                        Sort("created_at", descending=True),
                        Sort("id", descending=True))  # ids count up within a millisecond


class TariffService(Service):
    async def set_tariff(self, viewer: Viewer, *, price_per_kwh: Decimal | str,
                         currency: str, company_id: str | None = None,
                         station_id: str | None = None,
                         price_per_minute: Decimal | str = Decimal(0),
                         session_fee: Decimal | str = Decimal(0),
                         tax_rate: Decimal | str = Decimal(0),
                         valid_from: datetime | None = None) -> Tariff:
        if (company_id is None) == (station_id is None):
            raise ValidationError("give exactly one of companyId and stationId",
                                  field="stationId", code="REQUIRED")
        if station_id is not None:
            station = await self.visible(viewer, Station, station_id, field="stationId")
            if not self.policy.may_manage_station(viewer, station):
                raise Forbidden("you may not price this station", field="stationId")
        else:
            await self.visible(viewer, Company, company_id, field="companyId")
            if not self.policy.may_manage_company(viewer, company_id):
                raise Forbidden("you may not price this company", field="companyId")
        tariff = Tariff(
            company_id=company_id,
            station_id=station_id,
            price_per_kwh=v.money(price_per_kwh, "pricePerKwh"),
            currency=v.currency(currency),
            price_per_minute=v.money(price_per_minute, "pricePerMinute"),
            session_fee=v.money(session_fee, "sessionFee"),
            tax_rate=v.rate(tax_rate, "taxRate"),
        )
        if valid_from is not None:
            tariff.valid_from = v.aware(valid_from, "validFrom") or tariff.valid_from
            # A session is priced by the tariff in force when it started: a version dated
            # back would re-price sessions under way (and their drivers agreed to the old
            # price). Admins may correct history; operators price from now on.
            if not viewer.is_admin and tariff.valid_from < utcnow() - BACKDATE_SLACK:
                raise ValidationError("validFrom cannot be in the past", field="validFrom",
                                      code="OUT_OF_RANGE")
        stamp_new(tariff, viewer)
        await self.commit(viewer, [(Insert(tariff), None)])
        return tariff

    async def tariff_at(self, station: Station, at: datetime, company_id: Any = UNSET
                        ) -> Tariff | None:
        """The tariff in force for ``station`` at ``at``: the station's latest version from
        before ``at``, else its company's (``company_id``, default the station's now)."""
        company = station.company_id if company_id is UNSET else company_id
        found = await self.store.find_all(
            Tariff, all_of(Eq("station_id", station.id), Range("valid_from", lte=at)),
            LATEST_VERSION_FIRST, limit=1,
        )
        if not found and company is not None:
            found = await self.store.find_all(
                Tariff, all_of(Eq("company_id", company), Range("valid_from", lte=at)),
                LATEST_VERSION_FIRST, limit=1,
            )
        return found[0] if found else None
