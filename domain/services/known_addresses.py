"""Where stations' chargers passed their password check from, kept in the store
(``KnownChargerAddress``) beside the instances' memory (``charger_sign_ins.KnownAddresses``).

In memory alone, a pair reached the other instances only as it was told (at most once a
day per pair), and an instance starting learnt none: after a rolling restart a charger
whose instance then went landed on one where its address was unknown, and a scan holding
the checks not kept for known chargers had it answered 503 there (review s31). Each
instance reads them once as it starts (``stored``, a page at a time): the newest
``MAX_TRACKED`` of the last ``charger_sign_ins.KNOWN_FOR``. Not on a miss: a handshake
never reads the store for them, so a scan naming real cpIds from new addresses costs no
store read whatever its size, and a pair passing after an instance started is told to
it (``ThrottleSharing``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from domain.entities import KnownChargerAddress, Station
from domain.errors import Conflict, NotFound, UniqueViolation
from domain.policy import SYSTEM
from domain.ports import Change, Delete, Guard, Insert, Store
from domain.query import Eq, Range
from domain.services.base import pages, patch, stamp_new, sweep_expired
from domain.services.throttle import MAX_TRACKED

#: Records read or deleted at once.
BATCH = 500
#: Records read at once as an instance starts (``stored``): a few MB of records a page.
LOAD_PAGE = 2_000


async def keep(store: Store, station_id: str, pair: str, at: datetime,
               forgotten: Callable[[list[str]], None] | None = None) -> None:
    """Stores that the pair (``KnownAddresses``' digest) passed ``at``, for the station
    (only while it exists: a removed station's pairs are deleted with it). One row per
    pair, its id derived from it; a write racing another instance's of the same pair, or
    the station's removal, leaves what that wrote. A row found is given this station: the
    pair (cpId, address) may have passed for a station of that cpId removed since whose
    rows were left (its removal's ``forget`` failed), and kept under that station it
    would outlive this one's removal (review s31). ``forgotten``: told the pair when the
    station is gone by the write (the instances' memory, ``KnownAddresses.forget``): a
    check that ended just after the removal had it told as passed to every instance,
    which would take the address as the charger's for ``KNOWN_FOR`` (review r32-b)."""
    record = KnownChargerAddress(id=pair[:24], station_id=station_id, pair=pair,
                                 passed_at=at)
    [found] = await store.get_many(KnownChargerAddress, [record.id])
    change: Change = Insert(stamp_new(record, SYSTEM, at)) if found is None else patch(
        found, SYSTEM, station_id=station_id, passed_at=at)
    try:
        await store.write([change], [], guards=[Guard(Station, Eq("id", station_id))])
    except (NotFound, UniqueViolation):
        # First, UniqueViolation being a Conflict: another instance's write of the pair
        # landed first (the station is there, the pair stored), or the row was deleted
        # meanwhile (by the sweep, or by the removal's ``forget``, which forgets it in
        # memory after, the pass told before). Neither is a pair to forget (review r32-f:
        # the race's loser told every instance "forgot").
        pass
    except Conflict:
        # The guard's: the station is gone. Its removal's ``forget`` forgot in memory the
        # pairs it deleted, not one told after it read them.
        if forgotten is not None:
            forgotten([pair])


async def stored(store: Store, since: datetime
                 ) -> AsyncIterator[list[tuple[str, datetime]]]:
    """The pairs that passed after ``since`` (``KNOWN_FOR`` ago), the newest
    ``MAX_TRACKED`` (as many as memory keeps), newest first (``KnownAddresses.load``), a
    page at a time: read whole at once, the records of a full table took some 97 MB
    and 3 s before the OCPP server started (review s31); a page's records are let go
    as the next is read."""
    read = 0
    async for page in pages(store, KnownChargerAddress, Range("passed_at", gt=since),
                            LOAD_PAGE, newest_by="passed_at"):
        yield [(known.pair, known.passed_at) for known in page[:MAX_TRACKED - read]]
        read += len(page)
        if read >= MAX_TRACKED:
            return


async def sweep(store: Store, before: datetime) -> int:
    """Deletes the pairs that last passed at ``before`` (``KNOWN_FOR`` ago) or earlier
    (one passing again meanwhile stays); how many."""
    return await sweep_expired(store, KnownChargerAddress, Range("passed_at", lte=before),
                               "passed_at", BATCH, oldest_by="passed_at")


async def forget(store: Store, station_id: str,
                 forgotten: Callable[[list[str]], None] | None = None) -> None:
    """Deletes a removed station's pairs (where its charger connected from is the
    station's: not kept past it). After the removal's write: a pair passing meanwhile is
    not written once the station is gone (``keep``'s guard), one swept meanwhile is
    gone already. Each row only while it is still the station's: a station made again
    with its cpId whose charger passed from the same address since the page was read
    was given it (``keep``: its id is the pair's), and it is that station's now, in the
    store and in memory (review r32-b: deleted, and forgotten on every instance).
    ``forgotten``: told each pair of the station's as its row goes (the instances'
    memory, ``KnownAddresses.forget``). A deletion failing otherwise (the store gone)
    ends the deletions and is raised, the pair and the rest of the page read still
    forgotten in memory, their rows left to the sweep (review r32-f: each remembered on
    every instance up to ``KNOWN_FOR``); the pages not yet read are not."""
    async for page in pages(store, KnownChargerAddress, Eq("station_id", station_id), BATCH):
        for index, known in enumerate(page):
            try:
                await store.write([Delete(known, only_if=("station_id", station_id))], [])
            except (Conflict, NotFound):
                continue  # another station's now, or swept meanwhile
            except BaseException:
                # Cancelled too: whether the write landed is unknown, the memory's
                # forgetting safe either way.
                if forgotten is not None:
                    forgotten([left.pair for left in page[index:]])
                raise
            if forgotten is not None:
                forgotten([known.pair])
