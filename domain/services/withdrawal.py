"""Cards withdrawn at the chargers: what a blocked, expired, removed or deactivated card
still holds there is taken back.

A charger decides on its own with what it keeps: its local authorization list (OCPP 1.6,
3.5: filled by SendLocalList) and its authorization cache. So the service remembers what
each station's list holds, as far as the chargers' answers tell (``record_local_list``,
called for every SendLocalList a charger accepted: a Full list replaces, a Differential
adds, updates and removes), and for each tag the card it named then
(``LocalListEntry.card_id``). When a card stops being usable, every list holding that
card (by id: a tag string is nobody's) as Accepted is sent a Differential
(``listVersion`` + 1; several, each its own version, when they are more than the
charger's ``SendLocalListMaxLength`` takes) marking it so (``Withdrawal``), in the
background: the change that caused it never waits on chargers. What a charger did not
accept (it was offline, it failed) stays wanted (``LocalListEntry.wanted``) and is sent
when it boots, as the card's state is then. A blocked card's, or a deactivated driver's,
session under way is stopped (RemoteStopTransaction) and its live reservations
cancelled: only the sessions and reservations that were the card's; a reservation whose
charger was offline then is cancelled when it boots (``charger_back``).
A card usable again (unblocked, its expiry moved later or cleared, its holder
reactivated) has what its withdrawals changed put back the same way (``restore_card``,
``restore_user``): each entry a withdrawal of ours had the charger accept
(``LocalListEntry.restore``) is wanted Accepted and sent as the card is now (its expiry
and parentIdTag), or removed again where the withdrawal may have added it; with the
same marks in the card's commit, the same boot check and the same re-derivation from
the card's state when sent. An entry the list's sender set (Blocked by the operator, a
Full list since) is theirs and never touched: only a list of ours (``push``) leaves a
``restore`` mark, and anyone else's list clears it on the entries it names.
Every list a charger accepted is judged, entry by entry, by the cards' state when it is
recorded, not by what was wanted when it was sent: a card blocked again while its
restoration was in flight is withdrawn again at once, one unblocked while its
withdrawal was is put back (``CommandService.on_list_wanting`` pushes). A restoration
marked and maybe in flight is not taken for held when its card is blocked again: the
withdrawal is sent again (``_to_send``). One push at a time per station in a process;
across instances the list version orders them, and a VersionMismatch's resend reads
and judges what is wanted again, after whatever list moved the charger's version. A
list (ours or an operator's) sent and not answered is kept pending (``hold_pending``:
each of them, in the order sent, the last ``MAX_PENDING``, within ``PENDING_BYTES``)
and, once the charger's
version is learnt (``settle_pending``), recorded as accepted if the charger took it as
far as its version tells (``_taken``), or dropped, before anything is judged against
the record.
The cache needs no command: its entries expire (``ChargingService.authorize`` bounds
every answer's ``expiryDate``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from domain.entities import (
    LIVE_RESERVATION_STATES,
    IdTag,
    IdTagStatus,
    LocalList,
    LocalListEntry,
    Reservation,
    Session,
    SessionState,
    Station,
    User,
)
from domain.errors import ChargerNotSupported, DomainError
from domain.events import StationConnectionChanged
from domain.ids import new_id
from domain.keyed_locks import KeyedLocks
from domain.policy import SYSTEM, Viewer, live_reservations
from domain.ports import Change, Delete, Insert, Store
from domain.query import ALL, Eq, Filter, In, Range, Sort, all_of, any_of
from domain.services.background import Background
from domain.services.base import Service, ServiceContext, pages, patch, stamp_new
from domain.services.edits import retried
from domain.wire import rfc3339, wire_json

if TYPE_CHECKING:
    from domain.services.commands import CommandService

log = logging.getLogger("chargegraph.withdrawal")
T = TypeVar("T")

#: The most entries of one station's list read at once: far above what chargers hold
#: (``LocalAuthListMaxLength`` is in the hundreds or low thousands).
MAX_LIST = 100_000
#: How far back the first expiry sweep of a process looks (later ones look back to the
#: previous sweep): cards that expired while no instance ran. A charger's list that
#: missed an older one is corrected when the charger boots (``charger_back``).
EXPIRY_LOOKBACK = timedelta(days=7)
#: The most cards one expiry sweep handles (the next sweep takes the rest).
EXPIRY_BATCH = 500
#: The most cards (or tags) read in one query.
BATCH = 500
#: How many live reservations ``cancel_reservations`` reads at a time.
CANCEL_PAGE = 100
ACCEPTED = "Accepted"
#: What a withdrawal wants a list entry to hold (OCPP AuthorizationStatus).
WITHDRAWN = ("Blocked", "Expired", "Invalid")
#: Everything an entry may be wanted as: withdrawn, or put back (``restore``).
WANTED = (*WITHDRAWN, ACCEPTED)
#: ``LocalListEntry.restore``: the list held the card Accepted before our withdrawal.
RESTORE_ACCEPTED = "Accepted"
#: ``LocalListEntry.restore``: our withdrawal added the tag (the record did not hold it:
#: ``record_local_list``); taken out again. Until review s26 written for any withdrawal
#: landing above a list that had moved on without our record.
RESTORE_REMOVED = "Removed"
RESTORES = (RESTORE_ACCEPTED, RESTORE_REMOVED)
#: How many chargers an expiry sweep pushes what is marked to at once: one that does
#: not answer (each push waits up to the command timeout) holds up no other (review
#: s26: one at a time, before the expired cards' reservations were cancelled).
SWEEP_PUSHES_AT_ONCE = 4
#: How long the expiry sweeps leave a charger that refused our list (Failed,
#: NotSupported) before sending it again, doubled at each refusal up to
#: ``REFUSED_BACKOFF_MAX``; its boot, or a list it accepts, starts it over. Pushes for
#: a card's change, a connection or a boot are sent whatever the wait (review s26: it
#: was sent again at every 5-minute sweep, two audit rows, a command.completed webhook
#: and a WARNING each time, ~288 a day).
REFUSED_BACKOFF = timedelta(minutes=10)
REFUSED_BACKOFF_MAX = timedelta(hours=24)
#: How many stations' marked entries one query reads (``_stations_marked``).
MARKED_BATCH = 200
#: How many entries one SendLocalList holds when the charger does not say how many it
#: takes (no such key, no answer): few enough for the chargers we know of.
DEFAULT_SEND_MAX = 20
#: The most unanswered SendLocalLists kept pending per station (``hold_pending``), the
#: oldest dropped past it: the charger's version tells which it took, of these.
MAX_PENDING = 8
#: The most the lists kept pending at a station may weigh together, as compact JSON
#: (``_bounded``), the oldest dropped past it as past ``MAX_PENDING``. They are kept in
#: the station's one ``LocalList`` record, written guarded on the value read: on MongoDB
#: an update carries them twice (the guard's filter and the ``$set``) within the
#: server's 16 MiB, and BSON takes up to about 1.6 times compact JSON's bytes (removals
#: of one-letter tags): 3 MB is at most ~10 MB so. Eight lists of what an operator may
#: send (``graph.http.MAX_BODY``, 1 MB) passed it, and so may one push to a charger
#: taking many entries per list (QA s29 mongo). A list weighing more alone is not
#: kept, nor any older one: as lists dropped past ``MAX_PENDING``, none is taken for
#: held, so what ours carried stays wanted against the record and is pushed again by
#: the next expiry sweep, push or boot, not at ``settle_pending`` (it finds none pending).
PENDING_BYTES = 3_000_000
#: How many times a write of the pending lists meeting another instance's is tried.
PENDING_ATTEMPTS = 5


def list_status(status: IdTagStatus) -> str:
    """A card's status as a charger's list spells it (OCPP AuthorizationStatus)."""
    return {IdTagStatus.ACCEPTED: "Accepted", IdTagStatus.BLOCKED: "Blocked",
            IdTagStatus.EXPIRED: "Expired"}.get(status, "Invalid")


def wanted_of(entry: LocalListEntry, card_status: str | None) -> str | None:
    """What ``entry`` should be sent, its card's status being ``card_status`` now (as a
    list spells it; ``None``: an entry of no card, the sender's own): a card not usable
    withdrawn where the list accepts it, or holds what a withdrawal put there; a card
    usable put back where a withdrawal of ours changed it (``restore``), and only there;
    ``None`` when the charger holds what it should, or the entry is not ours to change."""
    if card_status is None:
        return None
    ours = entry.restore is not None
    if card_status == ACCEPTED:
        return ACCEPTED if ours and entry.status != ACCEPTED else None
    if card_status == entry.status or not (ours or entry.status == ACCEPTED):
        return None
    return card_status


def _restore_after(entry: LocalListEntry, status: str, card_id: str | None) -> str | None:
    """``entry.restore`` once the charger accepted ``status`` for it from a list of ours
    (``Withdrawal.push``; an operator's own list clears the mark, ``record_local_list``):
    a withdrawal of the same card keeps what was to be put back, or learns it from what
    the list's sender's list says the entry is (``entry.status``, as recorded):
    Accepted where it held the card Accepted (a tag the record did not hold is marked
    Removed where it is inserted, ``record_local_list``). The record is followed
    exactly, whether or not our Differential followed the version recorded: a list
    sent and never answered is recorded once the charger's version shows it took it
    (``LocalList.pending``, ``settle_pending``), before a VersionMismatch's resend is
    judged (review s26: an operator's Full list that dropped the tag, its answer lost,
    had the withdrawal add it back and the put-back make it Accepted; and before that,
    guessing Removed for any list moved on without us took the operator's entry out
    when the list that moved it was our own unanswered withdrawal). Whether anything is
    still wanted of it is
    not asked either: a withdrawal sent twice (two pushes at once), or accepted after
    its card was unblocked meanwhile, still changed the list, and only the mark lets it
    be put back. A restoration done has nothing to undo."""
    if status not in WITHDRAWN or card_id != entry.card_id:
        return None
    if entry.restore is not None:  # withdrawn again (expired, then blocked): as at first
        return entry.restore
    if entry.status != ACCEPTED:
        return None
    return RESTORE_ACCEPTED


def _recorded(entry: LocalListEntry, status: str, card_id: str | None, restore: str | None,
              card_status: str | None) -> str | None:
    """What is wanted of ``entry`` once the charger holds ``status`` for it (naming
    ``card_id``, ``restore`` learnt), judged by its card's state now (``card_status``),
    not by what was wanted when the list was sent: a card blocked again while its
    restoration was in flight is withdrawn again, one unblocked while its withdrawal
    was is put back."""
    return wanted_of(replace(entry, status=status, card_id=card_id, restore=restore),
                     card_status)


async def forget_local_list(store: Store, station: Station) -> list[Change]:
    """The deletions of what a removed station's charger was known to hold in its local
    list: left, a later withdrawal of one of its cards would find a list to push to a
    station that no longer exists (its cpId may be given to a new station)."""
    where = Eq("station_id", station.id)
    entries = await store.find_all(
        LocalListEntry, where, limit=max(1, await store.count(LocalListEntry, where)))
    lists = await store.find_all(LocalList, where, limit=10)
    return [*(Delete(entry) for entry in entries), *(Delete(held) for held in lists)]


def _pendings(current: LocalList | None) -> list[dict[str, Any]]:
    """The lists pending at a station (``LocalList.pending``), oldest first."""
    held: Any = current.pending if current is not None else None
    if held is None:
        return []
    if isinstance(held, dict):  # one list, as kept before review r26-multi3 (unreleased)
        return [{"id": "", **held}]
    return [p for p in held if isinstance(p, dict)]


def _pending_written(current: LocalList, actor: Viewer, kept: Sequence[dict[str, Any]],
                     **updates: Any) -> Change:
    """``current`` written with ``kept`` pending (and ``updates``), guarded on the
    pending lists as read: a list another instance held, or settled, meanwhile fails the
    write (``CHANGED``), and it is tried again from its read (``_retried``), so neither
    wipes the other's."""
    return patch(current, actor, only_if=("pending", current.pending), required=True,
                 pending=list(kept) or None, **updates)


async def _retried(step: Callable[[], Awaitable[T]]) -> T:
    """``step`` (read, then write ``LocalList.pending`` guarded on it) run again from its
    read when another instance wrote meanwhile (``CHANGED``; ``DUPLICATE``: both created
    the station's record), up to ``PENDING_ATTEMPTS`` times."""
    return await retried(step, PENDING_ATTEMPTS, codes=("CHANGED", "DUPLICATE"))


def _bounded(pendings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last of ``pendings`` (in the order sent) weighing at most ``PENDING_BYTES``
    together: the older ones are dropped, as past ``MAX_PENDING`` (all, when the newest
    alone weighs more)."""
    size = 0
    for start in range(len(pendings) - 1, -1, -1):
        size += len(json.dumps(pendings[start], separators=(",", ":")))
        if size > PENDING_BYTES:
            log.warning("the unanswered SendLocalLists of a station weigh over %d bytes: "
                        "the %d oldest are no longer kept pending", PENDING_BYTES,
                        start + 1)
            return list(pendings[start + 1:])
    return list(pendings)


def _version(held: dict[str, Any]) -> int:
    return int(held["listVersion"])


#: ``sentAt`` of a pending list held before it was kept (unreleased): sent first.
_UNSENT = ""


def _sent(held: dict[str, Any]) -> str:
    """When pending ``held`` was sent (``rfc3339``: its strings sort as the times)."""
    return str(held.get("sentAt") or _UNSENT)


async def hold_pending(store: Store, station: Station, payload: dict[str, Any],
                       actor: Viewer, *, ours: bool, sent_at: datetime | None = None) -> None:
    """Records a SendLocalList sent to ``station`` at ``sent_at`` and not answered (a
    timeout, the connection lost after sending it; ``ours``: ``Withdrawal.push``'s) as
    pending at its version (``LocalList.pending``): the charger may hold it or not, and
    only its version tells (``settle_pending``). Review s26: left unrecorded, an
    operator's Full list the charger took without its answer reaching us left a tag it
    dropped in our record; a withdrawal of that card was resent above the charger's
    version and added it back, and the card's put-back then made it Accepted.
    Each unanswered list is kept, in the order SENT (``sentAt``; lists sent at the same
    millisecond, or held with no ``sent_at``, taken for sent after those held before
    them), the last ``MAX_PENDING`` sent: the charger took them, or not, in the order
    they reached it, not the order their answers failed (review r26-multi4: a list
    sent first whose answer failed last was walked after one sent later). Review
    r26-multi3: kept alone, an operator's Full list taken with its answer lost was
    forgotten when its retry, never delivered, took its place. A Full list does not
    clear those before it while it is unanswered: it may not have reached the charger
    when they did. The write is guarded on the pending lists read, and tried again
    (``_retried``)."""
    fields = {"id": new_id(), "listVersion": int(payload["listVersion"]),
              "updateType": payload.get("updateType"),
              "localAuthorizationList": [
                  e for e in payload.get("localAuthorizationList") or ()
                  if isinstance(e, dict)],
              "ours": ours}

    async def hold() -> None:
        [current] = await store.get_many(LocalList, [station.id])
        pendings = _pendings(current)
        at = rfc3339(sent_at) if sent_at is not None \
            else max((_sent(p) for p in pendings), default=_UNSENT)
        held = wire_json({**fields, "sentAt": at})
        if current is None:  # nothing recorded yet: the list as known is empty, version 0
            await store.write([Insert(stamp_new(LocalList(
                id=station.id, station_id=station.id, cp_id=station.cp_id, version=0,
                pending=_bounded([held]) or None), actor))], [])
            return
        # After every list sent at or before it (a stable place: ties keep hold order).
        place = len(pendings)
        while place > 0 and _sent(pendings[place - 1]) > at:
            place -= 1
        kept = _bounded([*pendings[:place], held, *pendings[place:]][-MAX_PENDING:])
        await store.write([_pending_written(current, actor, kept)], [])
    await _retried(hold)


def _taken(pendings: Sequence[dict[str, Any]], recorded: int, theirs: int) -> list[str]:
    """Which of ``pendings`` (in the order sent) the charger, its list at version
    ``theirs``, took (their ``id``s, in that order), ours at ``recorded``: each is
    walked in the order sent, ``recorded`` following what is taken (review r26-multi4,
    the rule as decided):
    - a Differential is taken iff ``recorded`` < its version <= ``theirs`` (then
      ``recorded`` is its version): one at or below the version the charger was at
      then was refused (VersionMismatch, OCPP 1.6), so a second one sent at a version
      already taken is not (review r26-multi4: recorded, it marked a tag Blocked the
      charger still held Accepted, and nothing sent the withdrawal again); one above
      the charger's version was never taken, whatever its place (review r26-multi4: one
      at 3 sent before one at 2, the charger at 2, was recorded and the taken one
      skipped below it);
    - a Full list is taken iff its version is ``theirs`` and no Full list sent after it
      is at that version too (then the record is reset to it, ``recorded`` is
      ``theirs``): one at another version is not (review r26-multi3: operators may start
      their versions again from 1; a Full list at 1 was taken by a charger still at 3).
    - but not a Full list at the version we had recorded before it: the charger at the
      same version tells nothing, and the guess leans to the record keeping the tags
      it had, so that blocking any of them is always sent (taken for held, a Full list
      that never arrived dropped tags the charger still accepts, and a block of one of
      them sent nothing: the lead's call, session 26).
    The guesses left: of two Full lists at the charger's version, the one sent last
    (the charger may have taken only the first, its version alone cannot tell); a Full
    list re-sent at the version recorded is not taken, even when it arrived (a tag it
    left out stays in the record: blocked later, it is sent Blocked, harmless; put back
    when usable again, it is sent Accepted, which the operator's list had dropped); a
    Differential up to the charger's version is taken, though another's list (one not
    pending) may have moved the charger there."""
    taken: list[str] = []
    before = recorded
    lasts = {_version(p): p.get("id") or "" for p in pendings
             if p.get("updateType") == "Full"}
    for held in pendings:
        at = _version(held)
        if held.get("updateType") == "Full":
            if at == theirs != before and lasts.get(at) == (held.get("id") or ""):
                taken.append(held.get("id") or "")
                recorded = theirs
        elif recorded < at <= theirs:
            taken.append(held.get("id") or "")
            recorded = at
    return taken


async def settle_pending(store: Store, station: Station, theirs: int, actor: Viewer, *,
                         now: datetime) -> bool:
    """The charger of ``station`` says its list is at version ``theirs`` (its
    GetLocalListVersion answer): of the lists pending (``hold_pending``), those it took
    (``_taken``) are recorded as accepted (``record_local_list``), in the order sent,
    before anything is judged against the record; the others are dropped. Those held
    after this read are left for the next (its list was sent after the version was
    asked). Each step is its own write, guarded on the pending lists read and tried
    again (``_retried``). Returns whether any entry is wanted since (as
    ``record_local_list``), or a list of ours was dropped: what it carried is still
    wanted and is sent again now (review r26-multi4), not at the next sweep or boot."""
    [current] = await store.get_many(LocalList, [station.id])
    pendings = _pendings(current)
    if current is None or not pendings:
        return False
    judged = {p.get("id") or "" for p in pendings}
    taken = set(_taken(pendings, current.version, theirs))
    wanting = any(p.get("ours") and (p.get("id") or "") not in taken for p in pendings)

    async def step() -> tuple[bool, bool]:
        """The lists dropped up to the next one taken, and that one recorded; or the
        rest dropped: (wanting, done)."""
        [current] = await store.get_many(LocalList, [station.id])
        pendings = _pendings(current)
        mine = [p for p in pendings if (p.get("id") or "") in judged]
        if current is None or not mine:
            return False, True
        ids = [p.get("id") or "" for p in mine]
        first = next((i for i, at in enumerate(ids) if at in taken), None)
        if first is None:
            await store.write([_pending_written(current, actor, [
                p for p in pendings if (p.get("id") or "") not in judged])], [])
            return False, True
        head = mine[first]
        drop = set(ids[:first + 1])
        kept = [p for p in pendings if (p.get("id") or "") not in drop]
        return await _record(store, station, current, head, actor,
                             ours=bool(head.get("ours")), now=now, kept=kept), False

    while True:
        got, done = await _retried(step)
        wanting = wanting or got
        if done:
            return wanting


def _applied_before(held: dict[str, Any], version: int, recorded: int) -> bool:
    """Whether pending ``held`` is taken for applied before a Differential the charger
    accepted at ``version`` (the list as recorded at ``recorded``): a list below it most
    often was taken, its answer alone lost (the guess left: not taken, the charger takes
    the Differential just the same); a Differential at or below the version recorded
    never was (VersionMismatch), nor a list at or above the accepted one (that one would
    have been refused, VersionMismatch)."""
    at = _version(held)
    return at < version and (held.get("updateType") == "Full" or at > recorded)


async def record_local_list(store: Store, station: Station, payload: dict[str, Any],
                            actor: Viewer, *, ours: bool, now: datetime) -> bool:
    """Records what a SendLocalList the charger accepted put in its list (``payload`` as
    sent: OCPP field names), and for each tag the card it names now
    (``LocalListEntry.card_id``): what the list's sender put there. ``ours``: the list
    is ``Withdrawal.push``'s (a withdrawal or restoration of ours), the only one whose
    entries remember what to put back (``_restore_after``); anyone else's (an
    operator's) clears that mark on every entry it names: their word stands. Each entry
    it names is then judged by its card's state at ``now`` (``_recorded``): what the
    charger should hold and does not is marked wanted. Returns whether any entry is
    (the caller has it sent: ``CommandService.on_list_wanting``), for the lists pending
    it records first as well (review r26-multi3: a blocked card a pending Full list
    held Accepted, recorded before an operator's Differential, was marked wanted and
    sent nothing until the next expiry sweep or boot).
    The lists pending (unanswered, ``hold_pending``) are settled by this one: a Full
    list replaces them all; a Differential has those it was most likely sent after and
    that the charger most likely took (``_applied_before``) recorded first, in order,
    drops the others at or below its version, and leaves those above it pending (sent
    after it, the charger's version will tell). A Differential below the version
    recorded changes nothing (see below), the pending lists included."""
    version = int(payload["listVersion"])
    full = payload.get("updateType") == "Full"
    wanting = False

    async def step() -> tuple[bool, bool]:
        """One pending list recorded before ``payload``, or ``payload``: (wanting,
        done)."""
        [current] = await store.get_many(LocalList, [station.id])
        pendings = _pendings(current)
        if current is not None and not full:
            if version < current.version:  # changes nothing (``_record``)
                return False, True
            before = [p for p in pendings if _applied_before(p, version, current.version)]
            if before:
                head = before[0]
                kept = [p for p in pendings if p is not head]
                return await _record(store, station, current, head, actor,
                                     ours=bool(head.get("ours")), now=now,
                                     kept=kept), False
        kept = [] if full else [p for p in pendings if _version(p) > version]
        return await _record(store, station, current, payload, actor, ours=ours, now=now,
                             kept=kept), True

    while True:
        got, done = await _retried(step)
        wanting = wanting or got
        if done:
            return wanting


async def _record(store: Store, station: Station, current: LocalList | None,
                  payload: dict[str, Any], actor: Viewer, *, ours: bool, now: datetime,
                  kept: Sequence[dict[str, Any]]) -> bool:
    """``record_local_list``'s one list (``current``: the station's record as read),
    leaving ``kept`` pending, in one write guarded on the pending lists read."""
    entries = [e for e in payload.get("localAuthorizationList") or () if isinstance(e, dict)]
    given: dict[str, str | None] = {}
    for item in entries:
        info = item.get("idTagInfo")
        given[str(item["idTag"]).upper()] = info.get("status") if isinstance(info, dict) \
            else None
    full = payload.get("updateType") == "Full"
    version = int(payload["listVersion"])
    if not full and current is not None and version < current.version:
        # A Differential below the version recorded: the charger accepted a later list
        # after it, whose record landed first (review s19: ours, delayed behind an
        # operator's Full list, put the version back and cleared what that list made
        # wanted, and a blocked card stayed accepted with nothing to mend it). What it
        # changed is in the later list's record already. (A Full list sets its version
        # whatever it was: an operator may start again from 1.) A pending list so (one
        # recorded since), taken, had nothing to apply either.
        if list(kept) != _pendings(current):
            await store.write([_pending_written(current, actor, kept)], [])
        return False
    where = Eq("station_id", station.id) if full \
        else all_of(Eq("station_id", station.id), In("tag", tuple(given)))
    held = {e.tag: e for e in await store.find_all(LocalListEntry, where, limit=MAX_LIST)} \
        if full or given else {}
    named = await cards_named(store, [tag for tag, status in given.items()
                                       if status is not None])
    cards = {tag: card.id for tag, card in named.items()}
    holders = {tag: card.user_id for tag, card in named.items()}
    states = await states_of(store, list(named.values()), now)
    changes: list[Change] = []
    wanting = False
    for tag, entry in held.items():
        status = given.get(tag)
        card_id, holder_id = cards.get(tag), holders.get(tag)
        if status is None:  # not in a Full list, or removed by a Differential
            changes.append(Delete(entry))
            continue
        if ours and card_id is None and entry.card_id is not None:
            # Our withdrawal of a card removed since: the entry is still that card's,
            # and its holder's, should it be issued to them again (``reissue_marks``).
            card_id, holder_id = entry.card_id, entry.holder_id
        restore = _restore_after(entry, status, card_id) if ours else None
        wanted = _recorded(entry, status, card_id, restore, states.get(card_id or ""))
        wanting = wanting or wanted is not None
        if (status, card_id, restore, wanted, holder_id) != (
                entry.status, entry.card_id, entry.restore, entry.wanted, entry.holder_id):
            changes.append(patch(entry, actor, status=status, card_id=card_id,
                                 restore=restore, wanted=wanted, holder_id=holder_id))
    for tag, status in given.items():
        if status is not None and tag not in held:
            # Our withdrawal of a tag the list did not hold, as recorded (an operator's
            # list dropped it while the withdrawal was on its way) added it: its card,
            # usable again, has it taken out again (``RESTORE_REMOVED``).
            added = ours and status in WITHDRAWN and cards.get(tag) is not None
            new = LocalListEntry(station_id=station.id, cp_id=station.cp_id, tag=tag,
                                 status=status, card_id=cards.get(tag),
                                 holder_id=holders.get(tag),
                                 restore=RESTORE_REMOVED if added else None)
            new.wanted = wanted_of(new, states.get(new.card_id or ""))
            wanting = wanting or new.wanted is not None
            changes.append(Insert(stamp_new(new, actor)))
    changes.append(_versioned(current, station, version, actor, kept))
    await store.write(changes, [])
    return wanting


async def states_of(store: Store, cards: Sequence[IdTag], now: datetime
                    ) -> dict[str, str]:
    """Each of ``cards``' (by id) state at ``now`` as a list spells it: its status as a
    charger is told it (``IdTag.charger_status``: a deactivated holder's card Blocked).
    Only their holders are read: for cards in hand."""
    states: dict[str, str] = {}
    for start in range(0, len(cards), BATCH):
        batch = cards[start:start + BATCH]
        owners = {u.id: u for u in await store.get_many(
            User, sorted({c.user_id for c in batch})) if u is not None}
        states.update((c.id, list_status(c.charger_status(owners.get(c.user_id), now)))
                      for c in batch)
    return states


async def card_states(store: Store, card_ids: Sequence[str], now: datetime
                      ) -> dict[str, str]:
    """``states_of`` the cards of ``card_ids``, read; a card gone is left out."""
    states: dict[str, str] = {}
    for start in range(0, len(card_ids), BATCH):
        states.update(await states_of(store, [
            c for c in await store.get_many(IdTag, card_ids[start:start + BATCH])
            if c is not None], now))
    return states


async def cards_named(store: Store, tags: Sequence[str], where: Filter = ALL
                      ) -> dict[str, IdTag]:
    """The card each of ``tags`` names now (tags of no card left out), among the cards
    ``where`` takes (a viewer's scope: those of cards they may not see left out too)."""
    named: dict[str, IdTag] = {}
    for start in range(0, len(tags), BATCH):
        batch = tuple(tags[start:start + BATCH])
        named.update((c.tag, c) for c in await store.find_all(
            IdTag, all_of(where, In("tag", batch)), limit=BATCH))
    return named


async def withdrawal_marks(store: Store, actor: Viewer, card_ids: Sequence[str],
                           status: str) -> list[Change]:
    """The changes marking ``status`` wanted on every list entry holding one of the
    cards as Accepted: of those cards, not of their tags (``LocalListEntry.card_id``).
    Each is guarded on the entry still naming its card, so a list accepted meanwhile
    for another card, or an entry a Full list dropped, is left as it is. Written by
    ``FleetService`` in the same commit as the card's change, so a crash before the
    background push loses nothing: a charger's boot sends what is wanted."""
    if not card_ids:
        return []
    held = await store.find_all(LocalListEntry, all_of(
        In("card_id", tuple(card_ids)), Eq("status", ACCEPTED)), limit=MAX_LIST)
    return [patch(e, actor, only_if=("card_id", e.card_id), wanted=status) for e in held
            if e.wanted != status]


async def restoration_marks(store: Store, actor: Viewer, card_ids: Sequence[str]
                            ) -> list[Change]:
    """The changes marking Accepted wanted on every list entry a withdrawal of ours
    changed for one of the cards (``LocalListEntry.restore``), now that they are usable
    again: ``withdrawal_marks``' counterpart, guarded and committed the same way, so a
    crash before the push loses nothing (a charger's boot sends them). What each is sent
    is decided when it is sent, from the card's state then (``wanted_of``)."""
    if not card_ids:
        return []
    held = await store.find_all(LocalListEntry, all_of(
        In("card_id", tuple(card_ids)), In("restore", RESTORES)), limit=MAX_LIST)
    return [patch(e, actor, only_if=("card_id", e.card_id), wanted=ACCEPTED) for e in held
            if e.status != ACCEPTED and e.wanted != ACCEPTED]


async def reissue_marks(store: Store, actor: Viewer, card: IdTag) -> list[Change]:
    """The changes that make the list entries of a removed card of ``card``'s holder,
    with its tag, ``card``'s: it is that card issued again (found after it was removed
    as lost, say), and what the removal's withdrawal changed is put back as for a card
    unblocked (QA s26: it stayed Blocked at the chargers, refused offline while
    Authorize accepted it). Only the same holder's (``LocalListEntry.holder_id``): a tag
    issued to another person is not what the list's sender listed (review s20). Each
    entry is taken over guarded on the card it named, and marked wanted Accepted where
    a withdrawal of ours holds it (``restore``); one whose withdrawal is still wanted
    is judged by the new card when sent (nothing sent for a usable card). Written in
    the card's own commit, as ``restoration_marks``, for the boot check to find."""
    held = await store.find_all(LocalListEntry, all_of(
        Eq("holder_id", card.user_id), Eq("tag", card.tag)), limit=MAX_LIST)
    old_ids = sorted({e.card_id for e in held if e.card_id not in (None, card.id)})
    existing = {c.id for c in await store.get_many(IdTag, old_ids) if c is not None} \
        if old_ids else set()
    changes: list[Change] = []
    for entry in held:
        if entry.card_id is None or entry.card_id == card.id or entry.card_id in existing:
            continue
        wanted = ACCEPTED if entry.restore is not None and entry.status != ACCEPTED \
            else entry.wanted
        changes.append(patch(entry, actor, only_if=("card_id", entry.card_id),
                             card_id=card.id, wanted=wanted))
    return changes


def _to_send(entry: LocalListEntry, card_status: str | None) -> str | None:
    """What a marked ``entry`` is sent, its card's state being ``card_status`` now:
    ``wanted_of``, but a restoration already sent may be in flight (the charger about
    to hold the card Accepted while the record still says Blocked): a card withdrawn
    again meanwhile is sent withdrawn again, not judged held so already. Sent twice at
    worst (a restoration never sent), never left accepted."""
    wanted = wanted_of(entry, card_status)
    if wanted is None and entry.wanted == ACCEPTED and card_status in WITHDRAWN:
        return card_status
    return wanted


def _versioned(current: LocalList | None, station: Station, version: int, actor: Viewer,
               kept: Sequence[dict[str, Any]]) -> Change:
    if current is None:
        return Insert(stamp_new(LocalList(id=station.id, station_id=station.id,
                                          cp_id=station.cp_id, version=version,
                                          pending=list(kept) or None), actor))
    return _pending_written(current, actor, kept, version=version, cp_id=station.cp_id)


class Withdrawal(Service):
    """Takes back at the chargers what a card no longer usable holds there (see the
    module): called by the use cases that make one so, runs in the background."""

    def __init__(self, ctx: ServiceContext, commands: CommandService) -> None:
        super().__init__(ctx)
        self.commands = commands
        self._work = Background()
        #: Up to which card, in (expiry, id) order, this process swept expiries
        #: (``sweep_expired``); id ``None``: every card of that expiry.
        self._swept: tuple[datetime, str | None] | None = None
        #: One push at a time per station in this process (``push``): two at once sent
        #: the same entry twice, the second at a version the first had taken. A lock is
        #: kept only while a push holds or awaits it (``KeyedLocks``, as the OCPP server
        #: keeps its arrivals'). Across instances the list version keeps it right (a
        #: VersionMismatch re-reads).
        self._pushing = KeyedLocks()
        #: Stations whose charger refused our list (Failed, NotSupported): when the
        #: expiry sweep sends it again, and the wait after that (``_sweep_pushes``).
        self._refused: dict[str, tuple[datetime, timedelta]] = {}
        #: Stations whose owed cancels are queued to be sent and not begun
        #: (``owed_cancels_later``): one queued reads all that is owed when it runs.
        self._owed_queued: set[str] = set()
        ctx.published.append(self._heard)

    def _heard(self, event: Any) -> None:
        """A charger connected to this process: the cancels of reservations cancelled
        while it was offline are owed to it (``CommandService.send_owed_cancels``), and
        so are the list entries marked wanted meanwhile (``push``: a card that expired,
        or was blocked, while it was connected nowhere), sent now, in the background.
        Its boot, if it boots, asks again (``_back``): one that answered the first with
        a CALLERROR before its boot takes the second. QA s26: the entries waited for a
        boot, and a charger coming back without one (a connection handed over from an
        instance that was killed, a network blip) kept an expired card Accepted in its
        list until it happened to reboot."""
        if isinstance(event, StationConnectionChanged) and event.online \
                and event.station_id is not None:
            self._work.run(self._connected(event.station_id),
                           f"owed-cancels-{event.station_id}",
                           f"sending what is owed to station {event.station_id} failed")

    async def _connected(self, station_id: str) -> None:
        await self._owed_cancels(station_id)
        await self.push(SYSTEM, station_id)

    async def _owed_cancels(self, station_id: str) -> None:
        """``CommandService.send_owed_cancels``, its failure no reason not to correct the
        list after it (review s26: a store error sending them skipped the list's push at
        connection, and the boot's reservation and list checks): each is retried on its
        own (the owed-cancel sweep, the expiry sweep, the next connection or boot)."""
        try:
            await self.commands.send_owed_cancels(station_id)
        except Exception:
            log.exception("the owed cancels of station %s were not sent", station_id)

    async def settled(self) -> None:
        """Waits for what runs in the background (tests, shutdown)."""
        await self._work.settled()

    # ------------------------------------------------------------- triggers
    async def withdraw_card(self, actor: Viewer, card: IdTag, status: IdTagStatus, *,
                            stop: bool, again: bool = False) -> None:
        """``card`` is ``status`` now (blocked, expired; a removed card BLOCKED), by
        ``actor``. Its live reservations are cancelled: it may not start a session, so a
        plug held for it is held for nobody. ``stop``: it may not go on charging either
        (blocked or removed, not expired: a session started before its expiry was
        authorized), so its session under way is stopped. Only what was this card's: the
        list entries recorded for its id, the sessions it started and the reservations
        made for it (its tag and its holder), never what another carried the same tag
        string for (a tag a charger knew before the card was issued, another company's
        group id). ``again``: it was unusable before too (an edit of a card expired or
        blocked that still holds a reservation or a list entry Accepted:
        ``FleetService._withdrawn_as``); what it holds may be being taken back already
        (the sweep, a first withdrawal), which the once-only cancel (``_cancel_held``),
        every withdrawal's of a card, leaves as it is. ``FleetService`` runs it in the
        background."""
        await self._mark_wanted(actor, [card.id], list_status(status))
        # A session, and a reservation, names its card's holder when the tag named a
        # card as it was made (``base.made_for``); of a tag of no card, no one.
        if stop:
            await self._stop_sessions(actor, all_of(Eq("id_tag", card.tag),
                                                    Eq("user_id", card.user_id)))
        # Its reservations are cancelled once, whoever else is cancelling them
        # (``_cancel_held``): each in the store, guarded on its state, and at its charger
        # by the instance holding it. The sweep may find an expired card (its cursor
        # behind the expiry; QA s27, review r27-reserve), and an edit of a card unusable
        # already withdraws it again (review r27-misc). A block's cancel went by the
        # relay (``cancel_reservations``), its reservation ACTIVE until the charger
        # answered, so an edit of the card before that answer found it still held and
        # cancelled it again beside it: the charger was sent the cancel twice and the
        # second's Rejected recorded as a failed cancel (review r27-reserve3). Sent at
        # once even where another instance holds the charger (``prompt``).
        await self._cancel_held([card], actor, prompt=True)
        for station_id in await self._stations_wanting([card.id]):
            await self.push(actor, station_id)

    async def withdraw_user(self, actor: Viewer, user: User) -> None:
        """``user`` was deactivated by ``actor``: their cards are withdrawn, their
        sessions stopped, their live reservations cancelled once (``_cancel_once``:
        stored CANCELLED at once, the CancelReservation owed to the charger and sent
        by the instance holding it, at once through the relay; a charger offline is
        sent it when it is back) as the system (the user's operator may not run those
        stations), audited as ``actor``'s. ``AccountService`` runs it in the
        background."""
        cards = await self.store.find_all(IdTag, Eq("user_id", user.id), limit=MAX_LIST)
        await self._withdraw_holder(actor, user, [c.id for c in cards])

    async def withdraw_erased(self, actor: Viewer, user: User, cards: Sequence[IdTag]
                              ) -> None:
        """``user``'s account was erased by ``actor`` and ``cards``, theirs, removed with
        it (``Erasure``): withdrawn as a deactivated user's are (Blocked in the lists that
        hold them, their reservations cancelled), for the cards the erasure read rather
        than those left (none: they went with it). No session of theirs was under way
        (refused). ``Erasure`` runs it in the background. Once for all the cards, not a
        card at a time (review s22: four reads per card, and a push per card)."""
        await self._withdraw_holder(actor, user, [c.id for c in cards])

    async def _withdraw_holder(self, actor: Viewer, user: User, card_ids: list[str]
                               ) -> None:
        await self._mark_wanted(actor, card_ids, "Blocked")
        await self._stop_sessions(actor, Eq("user_id", user.id))
        # Cancelled once, as a card's are (``_cancel_once``): through the relay, a
        # reservation stayed ACTIVE until its charger answered, and a block of the
        # holder's card meanwhile cancelled it again (review r27-reserve5).
        await self._cancel_once(actor, Eq("user_id", user.id), prompt=True)
        for station_id in await self._stations_wanting(card_ids):
            await self.push(actor, station_id)

    async def restore_card(self, actor: Viewer, card: IdTag) -> None:
        """``card`` is usable again (unblocked, its expiry moved later or cleared), by
        ``actor``: what withdrawals of it changed in the lists is put back (see the
        module). ``FleetService`` runs it in the background."""
        await self._mark_restored(actor, [card.id])
        for station_id in await self._stations_wanting([card.id]):
            await self.push(actor, station_id)

    async def restore_user(self, actor: Viewer, user: User) -> None:
        """``user`` was reactivated by ``actor``: their cards' withdrawals are put back
        where each card is usable (``wanted_of`` decides when sending: a card blocked or
        expired of its own stays so). ``AccountService`` runs it in the background."""
        cards = await self.store.find_all(IdTag, Eq("user_id", user.id), limit=MAX_LIST)
        card_ids = [c.id for c in cards]
        await self._mark_restored(actor, card_ids)
        for station_id in await self._stations_wanting(card_ids):
            await self.push(actor, station_id)

    def push_later(self, station_id: str) -> None:
        """A list the station's charger accepted left it holding what a card's state
        now says it should not (``record_local_list``): sent in the background, after
        any push to it under way (``CommandService.on_list_wanting``)."""
        self._work.run(self.push(SYSTEM, station_id), f"local-list-{station_id}",
                       f"correcting the local list of station {station_id} failed")

    def owed_cancels_later(self, station_id: str) -> None:
        """The station's charger answered a CancelReservation
        (``CommandService.on_cancel_answered``): the cancels still owed to it are sent
        now (``CommandService.send_owed_cancels``, here or through the relay to the
        instance holding it, each only if its send's claim wins), as a withdrawal's
        cancel sends them, in the background: the cancel's caller is answered first.
        Once per station while one is queued and not begun (review r29: a station's
        removal cancelling N reservations queued N runs, each reading its owed cancels
        again); one begun reads them afresh, so a later answer queues another."""
        if station_id in self._owed_queued:
            return
        self._owed_queued.add(station_id)

        async def owed() -> None:
            self._owed_queued.discard(station_id)
            await self._owed_cancels(station_id)

        self._work.run(owed(), f"owed-cancels-{station_id}",
                       f"sending what is owed to station {station_id} failed")

    def charger_back(self, station_id: str) -> None:
        """A charger booted (its boot answered Accepted): the cancels owed to it are sent
        (``CommandService.send_owed_cancels``), its live reservations of cards no longer
        usable are cancelled (``_cancel_unusable``), and what its list should
        hold and does not is sent, now, in the background."""
        self._refused.pop(station_id, None)  # booted: it may take it now
        self._work.run(self._back(station_id), f"local-list-{station_id}",
                       f"correcting the local list of station {station_id} failed")

    async def _back(self, station_id: str) -> None:
        await self._owed_cancels(station_id)
        await self._cancel_unusable(station_id)
        await self._correct(station_id)

    async def sweep_expired(self) -> int:
        """Withdraws the cards that expired since the last sweep; returns how many. Paged
        by (expiry, id): cards sharing an expiry across a full batch's end are taken by
        the next sweep, not skipped.

        Every instance sweeps (each with its own cursor) and marks the entries wanted,
        but pushes only to the chargers connected to it (``_here``), as the owed
        cancels' sweep does: each charger is sent the withdrawal once, by the instance
        holding it, whose own sweep finds the same cards (QA s26: every instance pushed
        every station, one-at-a-time per station only within a process, so instances
        started together, sweeping in step, each sent a charger the same Differential
        at one version, and all but one drew a VersionMismatch and a GetLocalListVersion
        in its command history). A charger connected nowhere gets its entries at its
        next connection, as ever. Each sweep also pushes what is still marked for the
        chargers connected here (``_stations_marked``): a push they did not answer is
        retried every sweep, not only at their next connection or boot; one they
        refused, less and less often (``_sweep_pushes``). The expired cards'
        reservations are cancelled first, and the pushes go to a few chargers at once,
        each on its own (review s26: one station after another, each up to the command
        timeout, before any cancel: one silent charger delayed them all)."""
        now = self.now()
        after = self._swept or (now - EXPIRY_LOOKBACK, None)
        due = await self.store.find_all(IdTag, all_of(
            Eq("status", IdTagStatus.ACCEPTED), Range("expires_at", lte=now),
            _after(after)), [Sort("expires_at")], limit=EXPIRY_BATCH)
        await self._mark_wanted(SYSTEM, [c.id for c in due], "Expired")
        # A full batch: the rest next time, from the last one taken; else all up to now.
        last = due[-1] if len(due) == EXPIRY_BATCH else None
        self._swept = (last.expires_at, last.id) if last is not None \
            and last.expires_at is not None else (now, None)
        await self._cancel_held(due)
        await self._sweep_pushes(await self._stations_marked())
        return len(due)

    async def _sweep_pushes(self, station_ids: Sequence[str]) -> None:
        """Pushes to each station, up to ``SWEEP_PUSHES_AT_ONCE`` at a time, each on its
        own (one failing is no other's), but not yet to one whose charger refused our
        list lately (``_refused``: waits from ``REFUSED_BACKOFF``, doubled at each
        refusal, up to ``REFUSED_BACKOFF_MAX``)."""
        now = self.now()
        due = [s for s in station_ids
               if s not in self._refused or self._refused[s][0] <= now]
        room = asyncio.Semaphore(SWEEP_PUSHES_AT_ONCE)

        async def one(station_id: str) -> None:
            async with room:
                try:
                    await self.push(SYSTEM, station_id)
                except Exception:
                    log.exception("the local list of station %s was not corrected",
                                  station_id)
        await asyncio.gather(*(one(s) for s in due))

    async def _stations_marked(self) -> list[str]:
        """The stations connected to this instance with a list entry marked wanted: the
        sweep pushes to them, the cards it found now and any change still unsent (review
        s26: a push at connection, before the charger's BootNotification, that the
        charger did not answer was sent again only at its next connection or boot, and a
        charger handed over without one kept an expired card Accepted). Read for the
        connected stations' ids only (review s26: every instance read every marked
        entry of every station, unsorted, at every sweep)."""
        gateway = self.commands.gateway
        if gateway is None:
            return []
        cp_ids = sorted(gateway.connected())
        marked: set[str] = set()
        for start in range(0, len(cp_ids), MARKED_BATCH):
            stations = await self.store.find_all(
                Station, In("cp_id", tuple(cp_ids[start:start + MARKED_BATCH])),
                limit=MARKED_BATCH)
            if not stations:
                continue
            entries = await self.store.find_all(LocalListEntry, all_of(
                In("station_id", tuple(st.id for st in stations)), In("wanted", WANTED)),
                limit=MAX_LIST)
            marked.update(e.station_id for e in entries)
        return sorted(marked)

    async def _here(self, station_ids: Sequence[str]) -> list[str]:
        """Of ``station_ids``, those whose charger is connected to this instance."""
        gateway = self.commands.gateway
        if gateway is None or not station_ids:
            return []
        return [s.id for s in await self.store.get_many(Station, list(station_ids))
                if s is not None and gateway.is_connected(s.cp_id)]

    async def _cancel_held(self, cards: Sequence[IdTag], actor: Viewer = SYSTEM, *,
                           prompt: bool = False) -> None:
        """Cancels the live reservations made for ``cards`` (``base.made_for``: the
        card's tag and holder), which expired (or, withdrawn again by an edit, are
        unusable otherwise): a plug held for a card that may no longer start a session
        holds it for nobody. Their sessions go on (authorized before the expiry). Until
        QA s25 they were cancelled only at their charger's boot (``_cancel_unusable``),
        the plug shown reserved and the driver kept from reserving elsewhere until then.
        Each cancelled once (``_cancel_once``). Every live (or owed) one of the tags is
        read a page at a time, and those of their holders kept (review s25: the first
        500 of the tags were read, and other holders' of the same tag strings could
        crowd out the cards' own)."""
        for start in range(0, len(cards), BATCH):
            batch = cards[start:start + BATCH]
            holders = {(c.tag, c.user_id) for c in batch}
            await self._cancel_once(actor, In("id_tag", tuple({c.tag for c in batch})),
                                    prompt=prompt, holders=holders)

    async def _cancel_once(self, actor: Viewer, where: Filter, *, prompt: bool,
                           holders: Collection[tuple[str, str | None]] | None = None
                           ) -> None:
        """Cancels the live reservations ``where`` (made for one of ``holders``, (tag,
        holder) pairs, when given) once, however many withdrawals of them overlap (a
        card's expiry, block or edit, its holder's deactivation or erasure): each in
        the store, guarded on its state, by whichever caller writes first, and its
        CancelReservation owed to the charger
        (``CommandService.cancel_owed``) and sent, once, by the owed record. With
        ``prompt`` (one instance's withdrawal, not the expiry sweep every instance runs)
        every cancel owed at the stations read (theirs, and older ones there) is sent at
        once, here where the charger is connected to this instance, else through the
        relay to the instance holding it, each one only if its send's claim wins
        (``CommandService._claim_cancel``). Without, the holder sends them, here (the
        sweep's winners elsewhere relay nothing). Otherwise by the holder's
        ``sweep_owed_cancels`` or at the charger's return. Review s26: every instance
        cancelled through the relay, so a charger was sent the same cancel once per
        instance, all but the first answered Rejected and recorded (audit,
        commandCompleted, webhooks) as a failed cancel.
        Review r27-reserve5: a card blocked on an instance not holding its charger (a
        GraphQL-only one) had its cancel wait for the holder's sweep, up to a minute,
        the plug shown free and another driver's reservation refused Occupied."""
        now = self.now()
        live: list[Reservation] = []
        owed: set[str] = set()
        async for held in pages(self.store, Reservation, all_of(
                where, Range("expires_at", gt=now)), BATCH):
            for r in held:
                if holders is not None and (r.id_tag, r.user_id) not in holders:
                    continue
                if r.state_at(now) in LIVE_RESERVATION_STATES:
                    live.append(r)
                elif r.cancel_owed_since is not None:
                    owed.add(r.station_id)
        await self.commands.cancel_owed(live, actor)
        # Every cancel owed at these stations is sent, each by whichever send claims it
        # (``CommandService._claim_cancel``): one another instance is sending (claimed
        # within ``CANCEL_CLAIM_S``) is left to it, so no charger gets one twice (review
        # r28: two instances withdrawing at one station each relayed the other's
        # unanswered cancel, the second answered Rejected). A prompt withdrawal sends
        # the station's older owed cancels too, at once (session 29: it sent only those
        # it cancelled itself, the others left to the holder's sweep, up to a minute).
        # Without ``prompt`` (the expiry sweep, on every instance) winners elsewhere
        # relay nothing: the holder sends all.
        stations = owed | {r.station_id for r in live}
        here = await self._here(sorted(stations))
        for station_id in here:
            await self.commands.send_owed_cancels(station_id)
        if prompt:
            await self._send_owed_elsewhere(sorted(stations - set(here)))

    async def _send_owed_elsewhere(self, station_ids: Sequence[str]) -> None:
        """Sends the owed cancels of the stations online whose charger another instance
        holds, through the relay (``CommandService.send_owed_cancels``, which the
        gateway relays), each on its own: one not reached stays owed, for the holder's
        sweep or the charger's return. A station recorded offline is sent nothing now."""
        if self.commands.gateway is None or not station_ids:
            return
        for station in await self.store.get_many(Station, list(station_ids)):
            if station is not None and station.online:
                await self._owed_cancels(station.id)

    # ------------------------------------------------------------- the work
    async def _mark_wanted(self, actor: Viewer, card_ids: Sequence[str], status: str
                           ) -> None:
        """Every list entry holding one of the cards as Accepted is wanted as ``status``
        instead."""
        for start in range(0, len(card_ids), BATCH):
            changes = await withdrawal_marks(self.store, actor,
                                             card_ids[start:start + BATCH], status)
            if changes:
                await self.store.write(changes, [])

    async def _mark_restored(self, actor: Viewer, card_ids: Sequence[str]) -> None:
        """Every entry a withdrawal of one of the cards changed is wanted Accepted."""
        for start in range(0, len(card_ids), BATCH):
            changes = await restoration_marks(self.store, actor,
                                              card_ids[start:start + BATCH])
            if changes:
                await self.store.write(changes, [])

    async def _stations_wanting(self, card_ids: Sequence[str]) -> list[str]:
        stations: set[str] = set()
        for start in range(0, len(card_ids), BATCH):
            wanting = await self.store.find_all(LocalListEntry, all_of(
                In("card_id", tuple(card_ids[start:start + BATCH])),
                In("wanted", WANTED)), limit=MAX_LIST)
            stations.update(e.station_id for e in wanting)
        return sorted(stations)

    async def _correct(self, station_id: str) -> None:
        """Marks wanted what the station's list accepts of cards not usable now (a change
        missed while no instance ran, an expiry no sweep saw, a card removed), and what
        our withdrawals changed of cards usable again (a restoration whose push was
        lost, a holder reactivated while no instance ran), then pushes. An entry of no
        card (its tag named none when its list was accepted) is the list sender's own:
        not ours to withdraw."""
        await self._settle(SYSTEM, station_id)
        ours = await self.store.find_all(LocalListEntry, all_of(
            Eq("station_id", station_id),
            any_of(Eq("status", ACCEPTED), In("restore", RESTORES))), limit=MAX_LIST)
        unmarked = [e for e in ours if e.wanted is None and e.card_id is not None]
        cards_now = await self._wanted_now(unmarked)
        wanted = {e.id: wanted_of(e, cards_now[e.id]) for e in unmarked}
        changes: list[Change] = [
            patch(e, SYSTEM, only_if=("card_id", e.card_id), wanted=wanted[e.id])
            for e in unmarked if wanted[e.id] is not None]
        if changes:
            await self.store.write(changes, [])
        await self.push(SYSTEM, station_id)

    async def _cancel_unusable(self, station_id: str) -> None:
        """Cancels the station's live reservations made for a card (``base.made_for``) not
        usable now: blocked, expired, removed, its holder deactivated or erased. A
        withdrawal's own cancel is best effort (``cancel_reservations``): sent while the
        charger was offline it was lost, and the reservation stayed ACTIVE, the plug
        shown RESERVED and its driver refused elsewhere, until it expired (QA s24). A
        reservation of a bare id (no holder) is its maker's, never judged by a card."""
        held = [r for r in await self.store.find_all(Reservation, all_of(
            Eq("station_id", station_id), live_reservations(self.now())), limit=100)
            if r.user_id is not None]
        if not held:
            return
        cards = await self.store.find_all(IdTag, In("tag", tuple({r.id_tag for r in held})),
                                          limit=BATCH)
        states = await states_of(self.store, cards, self.now())
        usable = {(c.tag, c.user_id) for c in cards if states.get(c.id) == ACCEPTED}
        dead = [r.id for r in held if (r.id_tag, r.user_id) not in usable]
        if dead:
            # Once, as every withdrawal (``_cancel_once``): stored CANCELLED and owed
            # before the send, which this instance, holding the charger, makes at once.
            # Through the relay the reservation stayed ACTIVE until the charger
            # answered, and the expiry sweep or a block of the card meanwhile cancelled
            # it again: the charger sent it twice, the second Rejected (review r28).
            await self._cancel_once(SYSTEM, In("id", tuple(dead)), prompt=True)

    async def _wanted_now(self, entries: Sequence[LocalListEntry]) -> dict[str, str | None]:
        """Each entry's (by id) card's state now, as a list spells it
        (``card_states``), Blocked for a card removed since, ``None`` for an entry of
        no card."""
        states = await card_states(
            self.store, sorted({e.card_id for e in entries if e.card_id is not None}),
            self.now())
        return {e.id: None if e.card_id is None else states.get(e.card_id, "Blocked")
                for e in entries}

    async def _still_wanted(self, actor: Viewer, entries: Sequence[LocalListEntry]
                            ) -> list[LocalListEntry]:
        """Of the entries marked wanted, those to send now, each wanting what its card's
        state says now (``wanted_of``): a card made usable again since it was marked
        (unblocked while its charger was offline) before its withdrawal was accepted, or
        blocked again before its restoration was, or an entry the charger holds so
        already, is sent nothing and its mark cleared; one whose card changed otherwise
        (expired, then blocked) is sent what it is now."""
        cards_now = await self._wanted_now(entries)
        changes: list[Change] = []
        send: list[LocalListEntry] = []
        for entry in entries:
            wanted = _to_send(entry, cards_now[entry.id])
            if wanted != entry.wanted:
                update = patch(entry, actor, only_if=("wanted", entry.wanted), wanted=wanted)
                changes.append(update)
                entry = cast(LocalListEntry, update.record)
            if entry.wanted is not None:
                send.append(entry)
        if changes:
            await self.store.write(changes, [])
        return send

    async def push(self, actor: Viewer, station_id: str) -> None:
        """Sends the station's wanted entries, as their cards' state has them now, as
        Differentials the charger takes (``_send_chunks``), when its charger is
        connected (otherwise its next boot does); one push at a time per station
        (``_pushing``). A VersionMismatch (the charger's list is at a version we did not
        record: changed elsewhere, or reset) is answered by asking its version and
        sending once more above it what is wanted then: the entries are read and judged
        again, since the list that moved it (an operator's Full list) may have dropped
        or set them."""
        async with self._pushing.one_at_a_time(station_id):
            await self._push(actor, station_id)

    async def _settle(self, actor: Viewer, station_id: str) -> None:
        """A list sent to the station's charger and not answered (``LocalList.pending``)
        is settled before anything is judged against the record: its charger, connected,
        is asked its version (``GetLocalListVersion``, whose answer settles it:
        ``settle_pending``). Unanswered again, it stays pending."""
        [current] = await self.store.get_many(LocalList, [station_id])
        [station] = await self.store.get_many(Station, [station_id])
        if current is None or current.pending is None or station is None \
                or not station.online:
            return
        try:
            await self.commands.send(SYSTEM, station.cp_id, "GetLocalListVersion", {},
                                     audited_as=actor, own_list=True)
        except DomainError as exc:
            log.info("local list version of %s not asked: %s", station.cp_id, exc.message)

    async def _push(self, actor: Viewer, station_id: str) -> None:
        await self._settle(actor, station_id)
        [station] = await self.store.get_many(Station, [station_id])
        if station is None or not station.online:
            return
        wanted = await self._still_wanted(actor, await self._marked(station_id))
        if not wanted:
            return
        [current] = await self.store.get_many(LocalList, [station_id])
        version = (current.version if current is not None else 0) + 1
        most = await self._send_max(actor, station, len(wanted))
        outcome, version = await self._send_chunks(actor, station, version, wanted, most)
        if outcome != "VersionMismatch":
            return
        asked = await self.commands.send(SYSTEM, station.cp_id, "GetLocalListVersion",
                                         {}, audited_as=actor, own_list=True)
        theirs = asked.result.get("listVersion")
        if asked.error is not None or not isinstance(theirs, int) or theirs < 0:
            return
        wanted = await self._still_wanted(actor, await self._marked(station_id))
        if wanted:
            await self._send_chunks(actor, station, max(theirs, version) + 1, wanted, most)

    async def _send_chunks(self, actor: Viewer, station: Station, version: int,
                           wanted: Sequence[LocalListEntry], most: int
                           ) -> tuple[str | None, int]:
        """Sends ``wanted`` as Differentials of at most ``most`` entries each, the first
        at ``version`` and each next one a version above it (a charger refuses, Failed,
        a SendLocalList longer than its ``SendLocalListMaxLength``: QA s24, a deactivated
        driver's 4 cards sent at once to a charger taking 3 stayed Accepted there for
        good). Stops at the first answer not Accepted; what was not sent stays wanted.
        Returns that answer (the last one's when all were accepted) and the version it
        was sent at."""
        outcome: str | None = None
        for start in range(0, len(wanted), most):
            chunk_version = version + start // most
            outcome = await self._send(actor, station, chunk_version,
                                       wanted[start:start + most])
            if outcome != ACCEPTED:
                return outcome, chunk_version
        return outcome, version + (len(wanted) - 1) // most

    async def _send_max(self, actor: Viewer, station: Station, count: int) -> int:
        """The most entries one SendLocalList to ``station`` may hold: its
        ``SendLocalListMaxLength`` as the charger said it since its last boot
        (``CommandService.list_limits``: stored, else asked once per boot), else
        ``DEFAULT_SEND_MAX``. Nothing is asked for a single entry (``count``): any
        charger takes one."""
        if count <= 1:
            return 1
        limits = await self.commands.list_limits(station, audited_as=actor)
        return limits.per_send or DEFAULT_SEND_MAX

    async def _marked(self, station_id: str) -> list[LocalListEntry]:
        """The station's entries marked wanted, as stored now."""
        return await self.store.find_all(LocalListEntry, all_of(
            Eq("station_id", station_id), In("wanted", WANTED)), limit=MAX_LIST)

    async def _send(self, actor: Viewer, station: Station, version: int,
                    wanted: Sequence[LocalListEntry]) -> str | None:
        payload = {"listVersion": version, "updateType": "Differential",
                   "localAuthorizationList": await self._items(wanted)}
        try:
            outcome = await self.commands.send(SYSTEM, station.cp_id, "SendLocalList",
                                               payload, audited_as=actor, own_list=True)
        except DomainError as exc:  # the station went meanwhile: nothing to correct
            log.info("local list of %s not corrected: %s", station.cp_id, exc.message)
            return None
        self._note_refusal(station.id, outcome.status, outcome.error)
        if outcome.status == "Failed":
            # The charger will not take it: retried at its boot, and by the expiry
            # sweeps less and less often (``_note_refusal``), it is left accepting the
            # cards until someone looks (QA s24: logged at INFO alone).
            log.warning("local list of %s not corrected: the charger answered Failed to "
                        "a Differential of %d entries (sent again at its boot, or by an "
                        "expiry sweep within %s)", station.cp_id, len(wanted),
                        self._refused[station.id][1])
        elif outcome.error is not None:
            log.info("local list of %s not corrected now (sent again at the next expiry "
                     "sweep or boot): %s", station.cp_id, outcome.error.message)
        return outcome.status

    def _note_refusal(self, station_id: str, status: str | None,
                      error: DomainError | None) -> None:
        """A charger refusing our list (Failed, NotSupported, a NotSupported CALLERROR)
        is left by the expiry sweeps for ``REFUSED_BACKOFF``, twice as long at each
        refusal after, up to ``REFUSED_BACKOFF_MAX`` (``_sweep_pushes``); one accepting
        it is sent at every sweep again."""
        if status in ("Failed", "NotSupported") or isinstance(error, ChargerNotSupported):
            last = self._refused.get(station_id)
            wait = REFUSED_BACKOFF if last is None else min(last[1] * 2, REFUSED_BACKOFF_MAX)
            self._refused[station_id] = (self.now() + wait, wait)
        elif status == ACCEPTED:
            self._refused.pop(station_id, None)

    async def _items(self, wanted: Sequence[LocalListEntry]) -> list[dict[str, Any]]:
        """The Differential's entries: a withdrawal's status alone (the charger must not
        accept the card, whatever else it knew); a restoration the card's idTagInfo now,
        as Authorize would answer it (its expiry and parentIdTag: a list entry is used
        offline, so the list's own expiry is the card's, not the cache bound), or the
        tag removed where the withdrawal may have added it."""
        restored = [e.card_id for e in wanted if e.wanted == ACCEPTED and e.card_id
                    and e.restore == RESTORE_ACCEPTED]
        cards = {c.id: c for c in await self.store.get_many(IdTag, restored)
                 if c is not None} if restored else {}
        items: list[dict[str, Any]] = []
        for entry in wanted:
            card = cards.get(entry.card_id or "")
            if entry.wanted != ACCEPTED:
                items.append({"idTag": entry.tag, "idTagInfo": {"status": entry.wanted}})
            elif entry.restore == RESTORE_ACCEPTED and card is not None:
                info: dict[str, Any] = {"status": ACCEPTED}
                if card.expires_at is not None:
                    info["expiryDate"] = card.expires_at
                if card.parent_tag is not None:
                    info["parentIdTag"] = card.parent_tag
                items.append({"idTag": entry.tag, "idTagInfo": info})
            else:
                items.append({"idTag": entry.tag})  # no idTagInfo: taken out of the list
        return items

    async def _stop_sessions(self, actor: Viewer, where: Filter) -> None:
        """Asks the chargers to stop the sessions under way that ``where`` selects; one
        whose charger is offline goes on until its charger stops it."""
        active = await self.store.find_all(Session, all_of(
            where, Eq("state", SessionState.ACTIVE)), limit=100)
        for session in active:
            try:
                outcome = await self.commands.send(
                    SYSTEM, session.cp_id, "RemoteStopTransaction",
                    {"transactionId": session.transaction_id}, audited_as=actor)
            except DomainError as exc:
                log.info("session %d of a withdrawn card not stopped: %s",
                         session.transaction_id, exc.message)
                continue
            if outcome.error is not None:
                log.info("session %d of a withdrawn card not stopped: %s",
                         session.transaction_id, outcome.error.message)

    async def cancel_reservations(self, actor: Viewer, where: Filter) -> None:
        """Cancels the live reservations ``where`` at their chargers (CancelReservation,
        audited as ``actor``), best effort, a page at a time: an answered cancel stores
        CANCELLED, and so does one whose charger is recorded offline, the cancel owed to
        the charger when it is back (``CommandService.send_owed_cancels``), and so does
        one whose charger is online but could not be reached (``ChargerUnreachable``:
        another instance holds it and the bus is out of reach), the cancel owed and sent
        by the instance holding the charger within a minute
        (``CommandService.sweep_owed_cancels``; review s25: such a card's reservation
        stayed live, which the README said was cancelled); one unanswered is left to
        the caller's own write, to its expiry or, for a card's, to the charger's boot
        (``_cancel_unusable``).
        For connectors and stations being removed: the charger otherwise holds the plug
        for a reservation nobody here knows of. Withdrawn cards and users, and the
        boot's check (``_cancel_unusable``), cancel once instead (``_cancel_once``,
        review r27-reserve5, r28)."""
        async for held in pages(self.store, Reservation, all_of(
                where, live_reservations(self.now())), CANCEL_PAGE):
            for reservation in held:
                await self._cancel_one(actor, reservation)

    async def _cancel_one(self, actor: Viewer, reservation: Reservation) -> None:
        try:
            outcome = await self.commands.send(
                SYSTEM, reservation.cp_id, "CancelReservation",
                {"reservationId": reservation.reservation_id}, audited_as=actor,
                owe_cancel=True)
        except DomainError as exc:
            log.info("%s: reservation %d not cancelled at the charger: %s",
                     reservation.cp_id, reservation.reservation_id, exc.message)
            return
        if outcome.error is not None:
            log.info("%s: reservation %d not cancelled at the charger: %s",
                     reservation.cp_id, reservation.reservation_id,
                     outcome.error.message)


def _after(cursor: tuple[datetime, str | None]) -> Filter:
    """Cards past the sweep's cursor in (expiry, id) order: a later expiry, or the same
    one and a later id (``None``: none of that expiry, it was swept whole)."""
    expiry, card_id = cursor
    if card_id is None:
        return Range("expires_at", gt=expiry)
    return any_of(Range("expires_at", gt=expiry),
                  all_of(Eq("expires_at", expiry), Range("id", gt=card_id)))
