"""Refunds in revenue reports, on every backend: gross revenue stays what the payments
billed, refunds are a figure of their own booked when they were made (not when their
session ended), net is the one less the other, per bucket, per group and today, in the
same currency and seen as payments are (an operator's books, a driver's own).

Over the scripted history (``tests/support/history.py``): session A (driver1, S1 c1, A's
books) billed 2.10 EUR and session B (driver2, S1 c2) 6.60 EUR, both ending on the 29th
(Berlin); on the 30th, B is refunded 2.00 EUR in part and A in full."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain import entities as d
from domain.policy import SYSTEM, Viewer
from domain.ports import Store
from domain.query import ALL, Eq
from domain.services.analytics import GroupBy, Scope
from domain.timebuckets import Bucket
from tests.support.history import WINDOW_FROM, WINDOW_TO, History, build_history, utc

#: Berlin midnights of the window's three days (the 30th starts in summer time).
DAYS = [utc(27, 23), utc(28, 23), utc(29, 22)]


async def _refunded(h: History, driver: str, amount: Decimal | None) -> d.Payment:
    """Captures the payment of ``driver``'s session on S1 and refunds ``amount`` of it
    (all of it: ``None``) now, as an admin."""
    admin = h.viewer("admin")
    [payment] = await h.services.payments.store.find_all(
        d.Payment, Eq("user_id", h.users[driver].id))
    await h.services.payments.capture(admin, payment.id)
    return await h.services.payments.refund(admin, payment.id, amount)


@pytest.fixture
async def history(store: Store) -> History:
    h = await build_history(store)
    h.clock.now = utc(30, 10)
    await _refunded(h, "driver2", Decimal("2.00"))
    h.clock.now = utc(30, 21)  # 23:00 in Berlin: still the 30th there
    await _refunded(h, "driver1", None)
    return h


async def money(h: History, who: str, scope: Scope | None = None, currency: str | None = None
                ) -> list[tuple[int, int, int]]:
    """(gross, refunds, net) per Berlin day of the window."""
    buckets = await h.services.analytics.energy_trend(
        h.viewer(who), scope or Scope(), WINDOW_FROM, WINDOW_TO, Bucket.DAY,
        "Europe/Berlin", currency)
    assert [b.start for b in buckets] == DAYS
    return [(b.revenue_minor, b.refunds_minor, b.net_minor) for b in buckets]


async def test_a_refund_is_recorded_when_it_is_made(history: History) -> None:
    refunds = await history.services.payments.store.find_all(d.Refund, ALL)
    a = history.users["op_a"].company_id
    assert sorted((r.at, r.amount_minor, r.currency, r.cp_id, r.connector_id, r.company_id)
                  for r in refunds) == [
        (utc(30, 10), 200, "EUR", "S1", 2, a), (utc(30, 21), 210, "EUR", "S1", 1, a)]
    assert {r.user_id for r in refunds} == {history.users["driver1"].id,
                                            history.users["driver2"].id}


async def test_refunds_are_booked_the_day_they_are_made_and_gross_stays(
        history: History) -> None:
    """The billing lead's report: the 29th keeps its 8.70 EUR gross (what was billed),
    and the 30th, when the money went back, carries the 4.10 EUR of refunds: net -4.10."""
    assert await money(history, "admin") == [(0, 0, 0), (870, 0, 870), (0, 410, -410)]


async def test_refunds_are_seen_as_payments_are(history: History) -> None:
    # A's books: both sessions ran on S1 under A.
    assert await money(history, "op_a") == [(0, 0, 0), (870, 0, 870), (0, 410, -410)]
    # B keeps no book of them.
    assert await money(history, "op_b") == [(0, 0, 0)] * 3
    # Each driver their own: what they were billed, and paid back.
    assert await money(history, "driver1") == [(0, 0, 0), (210, 0, 210), (0, 210, -210)]
    assert await money(history, "driver2") == [(0, 0, 0), (660, 0, 660), (0, 200, -200)]


async def test_refunds_follow_the_books_after_a_hand_over(history: History) -> None:
    """S1 handed to B: the refunds stay in A's books, as the sessions and payments do."""
    b = history.users["op_b"].company_id
    await history.services.stations.update_station(SYSTEM, history.stations["S1"].id,
                                                   company_id=b)
    assert await money(history, "op_a") == [(0, 0, 0), (870, 0, 870), (0, 410, -410)]
    assert await money(history, "op_b") == [(0, 0, 0)] * 3


async def test_refunds_answer_the_same_filters_as_revenue(history: History) -> None:
    users, a = history.users, history.users["op_a"].company_id
    assert await money(history, "admin", Scope(user_id=users["driver2"].id)) == [
        (0, 0, 0), (660, 0, 660), (0, 200, -200)]
    assert await money(history, "admin", Scope(company_id=a)) == [
        (0, 0, 0), (870, 0, 870), (0, 410, -410)]
    assert await money(history, "admin", Scope(company_id=users["op_b"].company_id)) == [
        (0, 0, 0)] * 3
    assert await money(history, "admin", Scope(cp_ids=("S2",))) == [(0, 0, 0)] * 3
    # Another currency: neither the EUR gross nor the EUR refunds.
    assert await money(history, "admin", currency="USD") == [(0, 0, 0)] * 3
    # A driver learns from no refund who runs a station (a company filter is hidden).
    assert await money(history, "driver1", Scope(company_id=a)) == [(0, 0, 0)] * 3


async def test_a_window_of_refunds_only_is_shown_in_their_currency(history: History) -> None:
    [day] = await history.services.analytics.energy_trend(
        history.viewer("admin"), Scope(), utc(29, 22), utc(30, 22), Bucket.DAY,
        "Europe/Berlin")
    assert (day.currency, day.refunds_minor) == ("EUR", 410)


async def test_grouped_refunds_have_their_own_rows(history: History) -> None:
    """On the 30th, S1 billed nothing and metered nothing (it was offline): its row is
    there for its refunds; per connector, each refund is its session's plug's."""
    async def rows(who: str, group_by: GroupBy) -> dict[Any, tuple[int, int, int]]:
        found = await history.services.analytics.energy_trend(
            history.viewer(who), Scope(), utc(29, 22), utc(30, 22), Bucket.DAY,
            "Europe/Berlin", "EUR", group_by=group_by)
        return {(r.cp_id, r.connector_id): (r.energy_wh, r.refunds_minor, r.net_minor)
                for r in found}

    assert await rows("admin", GroupBy.STATION) == {
        ("S1", None): (0, 410, -410), ("S2", None): (5000, 0, 0)}
    assert await rows("admin", GroupBy.CONNECTOR) == {
        ("S1", 1): (0, 210, -210), ("S1", 2): (0, 200, -200), ("S2", 1): (5000, 0, 0)}
    assert await rows("driver2", GroupBy.CONNECTOR) == {("S1", 2): (0, 200, -200)}
    assert await rows("op_b", GroupBy.STATION) == {("S2", None): (5000, 0, 0)}


@pytest.mark.parametrize(("who", "refunds"), [
    ("admin", {"EUR": 410}), ("op_a", {"EUR": 410}), ("op_b", {}),
    ("driver1", {"EUR": 210}), ("driver2", {"EUR": 200})])
async def test_the_overview_shows_refunds_today_and_net(history: History, who: str,
                                                        refunds: dict[str, int]) -> None:
    history.clock.now = utc(30, 21, 30)  # the 30th in Berlin: no session ended priced
    today = await history.services.analytics.overview(history.viewer(who), Scope(),
                                                      "Europe/Berlin")
    assert today.revenue_today == {}
    assert today.refunds_today == refunds
    assert today.net_revenue_today == {k: -v for k, v in refunds.items()}
    history.clock.now = utc(29, 20)  # the 29th: the gross, no refund yet
    yesterday = await history.services.analytics.overview(history.viewer(who), Scope(),
                                                          "Europe/Berlin")
    assert yesterday.refunds_today == {}
    assert yesterday.net_revenue_today == yesterday.revenue_today


async def test_nobody_else_reads_refunds(history: History) -> None:
    stranger = Viewer(user_id=history.users["driver1"].id)  # no role
    policy = history.services.payments.policy
    assert await history.services.payments.store.count(
        d.Refund, policy.scope(stranger, "refund")) == 0
