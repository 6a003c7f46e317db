"""What each station's charger is configured with, as far as its answers tell, so an
operator still sees it while the charger is offline (``ConfigurationKey``).

GetConfiguration is live only: the charger answers or nobody does. So every answer the
service gets is kept (``record_read``: the keys it gave replace what was known of them,
with their readonly flag and when they were read; the keys it says it does not know are
forgotten), and so is every ChangeConfiguration the charger took (``record_change``:
Accepted or RebootRequired; a refusal or no answer leaves the key as it was known).
Keys the answer did not mention are kept: a read of some keys says nothing of the others.

A change answered RebootRequired waits for the charger's next boot, and until then a
read gives the value still in force, the old one (QA s22: the read replaced the value set,
the pending flag stayed on it, and after the boot the old value read as the one in
force). So while a change waits for its boot (``ConfigurationKey.awaits_reboot``) a read
of another value leaves the key as the change left it: the value set is the one that
applies from the boot, and the read is the charger's live answer, no more. A read after
the boot decides again. A read giving the value set records that it was read; the key
still waits for the boot (many chargers report the stored value before it is in force,
and only a boot says it is). Each read's write is guarded by the change it saw
(``changed_at``): one that meets a change recorded meanwhile is made again, judged on it.
The value the change replaced is kept as the one in force until the boot
(``value_in_force``, if it was known since the charger's boot; ``in_force``): what the
service itself acts on, such as the charger's local list limits (review s26: a
LocalAuthListMaxLength lowered RebootRequired was applied at once; those are read
before they are changed, so it is known). It is judged only from what was learnt
before the change was sent (``sent_at``; ``_value_before``): a read recorded after the
send may have been answered after the charger took the change, giving the value set,
so it is never the value in force, whenever it is recorded (review r26). A change's
write is guarded by the change of the key it judged (``changed_at``): one meeting
another change recorded meanwhile is made again on it.

At most ``MAX_KEYS`` keys are kept of a station: of all it holds and is told of, the
first ``MAX_KEYS`` by folded key (``kept``), the order ``Station.configuration`` lists
them in; a key past them is not stored, or is deleted when a key before it arrives.
The station then says its list is cut off (``Station.configuration_truncated``), until a
read of every key whose keys all fit. Each write reads every key the station holds (an
older version kept them all, however many), so none is taken for new and inserted again:
that was a unique violation, and the whole read was lost (QA s18).

A secret key's value (``command_rules.is_secret_key``: the charger's AuthorizationKey,
a vendor's password) is never kept, and never shown in a live answer either
(``without_secrets``): the mutation's payload, ``commandCompleted`` and webhooks carry the
answer, and are read more widely than the charger itself.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from domain.command_rules import folded_key, is_secret_key
from domain.entities import ConfigurationKey, Station
from domain.errors import Conflict, NotFound
from domain.policy import Viewer
from domain.ports import Change, Delete, Insert, Store
from domain.query import Eq
from domain.services.base import patch, stamp_new, touch

#: The most keys kept of one station: far above what chargers have (the OCPP 1.6 core
#: profile defines about 40, vendors add tens to a few hundred). Which ones: ``kept``.
MAX_KEYS = 2_000
#: The answer of the charger that took a ChangeConfiguration only after its next boot.
REBOOT_REQUIRED = "RebootRequired"


def without_secrets(action: str, result: dict[str, Any]) -> dict[str, Any]:
    """A GetConfiguration answer with the values of secret keys left out (as a charger
    that keeps them write-only answers); other answers as they are."""
    keys = result.get("configurationKey")
    if action != "GetConfiguration" or not isinstance(keys, list):
        return result
    shown = [{k: v for k, v in entry.items() if k != "value"}
             if isinstance(entry, dict) and is_secret_key(entry.get("key")) else entry
             for entry in keys]
    return {**result, "configurationKey": shown}


def known_count(known: ConfigurationKey | None, booted_at: datetime | None) -> int | None:
    """A kept key's value in force (``in_force``) as a positive count
    (``SendLocalListMaxLength``, say); ``None`` when that is not known, or not a
    positive count."""
    return None if known is None else positive_count(in_force(known, booted_at))


def in_force(known: ConfigurationKey, booted_at: datetime | None) -> str | None:
    """A kept key's value in force at the charger that booted at ``booted_at``, if it
    was read or changed since that boot (new firmware may say another); ``None`` when
    not known. While a change waits for the next boot (``awaits_reboot``) it is the
    value that change replaced (``value_in_force``), not the one set (review s26: a
    LocalAuthListMaxLength lowered RebootRequired refused lists the charger still took;
    a raised one let through lists it could not)."""
    if known.awaits_reboot(booted_at):
        return known.value_in_force
    at = max((t for t in (known.read_at, known.changed_at) if t is not None), default=None)
    if booted_at is not None and (at is None or at < booted_at):
        return None
    return known.value


def positive_count(value: Any) -> int | None:
    """A configuration value read as a positive count; ``None`` if it is not one."""
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def is_secret(known: ConfigurationKey) -> bool:
    """Whether a kept key's value is a secret, never shown: as it was recorded
    (``secret``), or by the rule as it is now (``is_secret_key``). A key kept before the
    rule named it one (QA s23: a vendor's ``MqttPwd``, ``ApiToken``, ``WifiPSK``) may still
    hold its value, until its next read or change forgets it."""
    return known.secret or is_secret_key(known.key)


async def record_read(store: Store, station: Station, result: dict[str, Any], actor: Viewer,
                      now: datetime, *, whole: bool) -> None:
    """Keeps what a GetConfiguration answer (``result``, OCPP field names) says of the
    station's keys; ``whole``: the request named no keys, so the answer has every key
    the charger has. Two answers recorded at once may both insert a key new to the
    station, or delete one past the first ``MAX_KEYS``: the second then reads the
    station's keys again and writes over what the first left; so does a read that meets
    a change recorded meanwhile (``changed_at`` moved), which it may not overwrite."""
    given: dict[str, dict[str, Any]] = {}
    for entry in result.get("configurationKey") or ():
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            given[folded_key(entry["key"])] = entry  # a key given twice: its last
    unknown = {folded_key(k) for k in result.get("unknownKey") or () if isinstance(k, str)}
    unknown -= given.keys()
    for attempt in range(2):
        try:
            await _write_read(store, station, given, unknown, whole, actor, now)
            return
        except (Conflict, NotFound):  # a key another write inserted, changed or deleted
            if attempt:
                raise


async def _write_read(store: Store, station: Station, given: dict[str, dict[str, Any]],
                      unknown: set[str], whole: bool, actor: Viewer, now: datetime) -> None:
    held = await _all_held(store, station)
    booted_at = await _booted_at(store, station)
    keep, left_out = kept((held.keys() - unknown) | given.keys())
    # Forgotten (the charger does not know it) or past the first MAX_KEYS.
    changes: list[Change] = [Delete(known) for folded, known in held.items()
                             if folded not in keep]
    for folded, entry in given.items():
        if folded not in keep:
            continue
        secret = is_secret_key(entry["key"])
        value = entry.get("value")
        read: dict[str, Any] = {
            "key": entry["key"], "readonly": bool(entry.get("readonly")),
            "value": None if secret or not isinstance(value, str) else value,
            "secret": secret, "read_at": now}
        known = held.get(folded)
        if known is None:
            changes.append(Insert(stamp_new(ConfigurationKey(
                station_id=station.id, cp_id=station.cp_id, **read), actor, now)))
        elif _read_replaces(known, read["value"], booted_at, now):
            # Only over the change it saw: one recorded since (or a key deleted) fails
            # the write, which ``record_read`` makes again on the keys as they are now.
            changes.append(patch(known, actor, only_if=("changed_at", known.changed_at),
                                 required=True, **read))
    changes.extend(_truncation(station, left_out, whole))
    if changes:
        await store.write(changes, [])


def _read_replaces(known: ConfigurationKey, value: str | None,
                   booted_at: datetime | None, read_at: datetime) -> bool:
    """Whether a read giving ``value``, answered at ``read_at``, is written over the key
    as ``known``: never over a change the charger took after that answer (review s22:
    a read recorded again after meeting a newer accepted change wrote its older value
    over it); while a change of it waits for the charger's boot only when it gives the
    value set (another is the one in force until the boot, not the one that applies
    after); otherwise always."""
    if known.changed_at is not None and known.changed_at > read_at:
        return False
    return not known.awaits_reboot(booted_at) or value == known.value


async def _booted_at(store: Store, station: Station) -> datetime | None:
    """When the station's charger last booted, as stored now: the station the command
    was sent with may be older than a boot its answer came after."""
    [current] = await store.get_many(Station, [station.id])
    return (current or station).booted_at


async def record_change(store: Store, station: Station, key: str, value: str, status: str,
                        actor: Viewer, now: datetime, *, sent_at: datetime | None) -> None:
    """Keeps a ChangeConfiguration the charger took (answered ``status`` at ``now``,
    Accepted or RebootRequired; sent at ``sent_at``, ``None`` if not known): the key's
    value now, when, and whether it waits for a reboot, with the value in force until
    then (``value_in_force``, ``_value_before``: only what was learnt before
    ``sent_at``). A key the charger changed is not readonly, whatever was read of it
    before. A key new to a station that holds ``MAX_KEYS`` is kept only if it sorts
    before one it holds. Written over the key as it was changed when read
    (``changed_at``), else read and judged again."""
    secret = is_secret_key(key)
    changed: dict[str, Any] = {
        "value": None if secret else value, "secret": secret, "readonly": False,
        "changed_at": now, "reboot_required": status == REBOOT_REQUIRED}
    folded = folded_key(key)
    # Read again when a key was written meanwhile, as ``record_read``; one try more, as
    # this write is also guarded on ``changed_at``.
    for attempt in range(3):
        held = await _all_held(store, station)
        keep, left_out = kept(held.keys() | {folded})
        known = held.get(folded)
        changes: list[Change] = [Delete(k) for f, k in held.items() if f not in keep]
        if known is not None:
            # Until the boot, the value in force stays the one before, as learnt before
            # this change was sent (``_value_before``). Guarded by the change it was
            # judged on (``changed_at``): another change recorded meanwhile (another
            # instance's) fails the write, made again on it (review s26: an Accepted
            # 5 -> 4 landing first left a RebootRequired's value in force at 5).
            before = _value_before(known, await _booted_at(store, station), sent_at) \
                if changed["reboot_required"] and not secret else None
            changes.append(patch(known, actor, only_if=("changed_at", known.changed_at),
                                 required=True, **changed, value_in_force=before))
        elif folded in keep:
            changes.append(Insert(stamp_new(ConfigurationKey(
                station_id=station.id, cp_id=station.cp_id, key=key, **changed), actor, now)))
        # A change tells nothing of the other keys: it may cut the list, never clear it.
        changes.extend(_truncation(station, left_out, whole=False))
        try:
            if changes:
                await store.write(changes, [])
            return
        except (Conflict, NotFound):  # UniqueViolation is a Conflict
            if attempt == 2:
                raise


def _value_before(known: ConfigurationKey, booted_at: datetime | None,
                  sent_at: datetime | None) -> str | None:
    """The value in force that a RebootRequired change sent at ``sent_at`` keeps until
    the boot, judged only from what was learnt before it was sent: the value in force
    another change waiting for the boot kept (``value_in_force``), else the key's value
    if it was last read or changed (``read_at``, ``changed_at``) before ``sent_at`` and
    since the boot (``in_force``). A read recorded after the send, whenever it lands
    against this record (before it starts, between its read and write, or as the key
    this change's Insert meets), may have been answered after the charger took the
    change and give the value set (review r26: a read of 2 made 2 the value in force
    of a RebootRequired 5 -> 2, and lists of 3..5 the charger took were refused);
    ``None`` then, not known until the boot, as when the send's moment is not known."""
    if known.awaits_reboot(booted_at):
        return known.value_in_force
    learnt = max((t for t in (known.read_at, known.changed_at) if t is not None),
                 default=None)
    if learnt is None or sent_at is None or learnt >= sent_at:
        return None
    return in_force(known, booted_at)


def kept(folded: set[str]) -> tuple[frozenset[str], bool]:
    """Which of a station's keys (``folded``: those it holds and was told of) are kept,
    and whether any is left out: the first ``MAX_KEYS`` by folded key. An order of the
    keys alone, so the same keys keep the same ones whatever order the answers came in,
    and the one ``Station.configuration`` lists, so its list is exactly what is kept."""
    ordered = sorted(folded)
    return frozenset(ordered[:MAX_KEYS]), len(ordered) > MAX_KEYS


def _truncation(station: Station, left_out: bool, whole: bool) -> list[Change]:
    """``Station.configuration_truncated`` as a write left it: set when keys were left
    out, cleared by a read of every key that left none out (a read of some keys says
    nothing of the others), else as it is. Guarded by the value it replaces, so it is
    written only when it changes, whatever the caller's copy of the station says.
    Control state, unaudited as the keys are: written without the update stamps
    (``touch``), which say who changed the station and when in its audited changes
    (QA s28 audit2: ``updatedBy`` named whoever read the configuration, its version
    moved, and no entry told of it)."""
    if not left_out and not whole:
        return []
    return [replace(touch(station, configuration_truncated=left_out),
                    only_if=("configuration_truncated", not left_out))]


async def _all_held(store: Store, station: Station) -> dict[str, ConfigurationKey]:
    """Every key the station holds, by folded name. All of them, not the first
    ``MAX_KEYS``: a version before the cap kept every key a charger gave, and a key
    missed here would be inserted again (a unique violation: the whole write lost)."""
    where = Eq("station_id", station.id)
    # At least MAX_KEYS: room for keys another write inserts after the count.
    limit = max(MAX_KEYS, await store.count(ConfigurationKey, where))
    found = await store.find_all(ConfigurationKey, where, limit=limit)
    return {k.folded_key: k for k in found}


async def forget_configuration(store: Store, station: Station) -> list[Change]:
    """The deletions of a removed station's known keys (its cpId may be given to a new
    station, whose charger's configuration is its own)."""
    return [Delete(k) for k in (await _all_held(store, station)).values()]
