"""Card numbers freed lately (``FreedIdTag``): held back from drivers for ``HELD_FOR``.

A removed card (``removeIdTag``) or an erased account's cards left their numbers free at
once, and any driver issuing one then had the physical card's sessions booked to them:
they saw where and when it was used, and paid for it (QA s32). The card is still in
someone's hand, and chargers may still take it (a local list, an offline start). So a
number freed is refused to a driver for ``HELD_FOR`` (``IN_USE`` on ``tag``), unless it
goes back to whose card it was (a lost card found again); staff who manage its company
(its operators, admins) may issue it at once, handing out the cards themselves. Kept in
the store (each freeing in the write that frees it), so a restart or another instance
knows it, and keyed by a digest of the tag keyed with the deployment's key
(``ServiceContext.digest_key``): a card's UID is short, an unkeyed hash of it is undone by
trying them all. Swept once past the hold-back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from domain.entities import FreedIdTag, IdTag
from domain.errors import Conflict
from domain.policy import Policy, Viewer
from domain.ports import Change, Guard, Insert, Store
from domain.query import Eq, Filter, Range, Sort, all_of
from domain.services.base import stamp_new, sweep_expired
from domain.services.throttle import digest as keyed

#: How long a freed number is held back from drivers.
HELD_FOR = timedelta(days=30)
#: Records deleted at once by the sweep.
BATCH = 500


def digest(tag: str, key: bytes) -> str:
    """What a freed tag is kept as: the tag as stored (upper case) digested with ``key``
    (``ServiceContext.digest_key``, every instance's), as chargers' known addresses are."""
    return keyed(tag, key)


def freed(viewer: Viewer, cards: Sequence[IdTag], company_id: str | None, at: datetime,
          key: bytes) -> list[Change]:
    """The records of ``cards`` (of one holder, of ``company_id``) freed ``at``: written
    in the commit that removes them, before its other changes (``commit``'s ``first``)."""
    return [Insert(stamp_new(FreedIdTag(tag_digest=digest(card.tag, key),
                                        holder_id=card.user_id, company_id=company_id,
                                        freed_at=at), viewer, at))
            for card in cards]


def _held(tag: str, since: datetime, key: bytes) -> Filter:
    return all_of(Eq("tag_digest", digest(tag, key)), Range("freed_at", gt=since))


async def hold_back(store: Store, policy: Policy, viewer: Viewer, tag: str, holder_id: str,
                    now: datetime, key: bytes) -> Guard | None:
    """Refuses ``viewer`` issuing ``tag`` to ``holder_id`` (``IN_USE``) when its latest
    freeing within ``HELD_FOR`` was from another holder and the viewer does not manage
    the company it was freed from. Otherwise the guard the issue's write carries (none
    for such staff): a freeing written meanwhile (on another instance) fails the write,
    and the issue, read again, is judged by it."""
    since = now - HELD_FOR
    found = await store.find_all(FreedIdTag, _held(tag, since, key),
                                 [Sort("freed_at", descending=True)], limit=1)
    latest = found[0] if found else None
    if latest is not None and policy.may_manage_company(viewer, latest.company_id):
        return None
    if latest is not None and latest.holder_id != holder_id:
        # Who may issue it now (``may_manage_company``): a company card's staff; a
        # driver's own card (no company) has none, only the days (QA s33).
        now_by = "" if latest.company_id is None else ", or by the company's staff now"
        raise Conflict("this card number was in use recently: it can be issued again "
                       f"{HELD_FOR.days} days after it was freed{now_by}",
                       field="tag", code="IN_USE")
    after = since if latest is None else max(since, latest.freed_at)
    return Guard(FreedIdTag, _held(tag, after, key), exists=False)


async def sweep(store: Store, before: datetime) -> int:
    """Deletes the freeings at ``before`` (``HELD_FOR`` ago) or earlier; how many."""
    return await sweep_expired(store, FreedIdTag, Range("freed_at", lte=before), "freed_at",
                               BATCH, oldest_by="freed_at")
