"""What each station's charger is configured with, as far as its answers tell, so an
operator still sees it while the charger is offline (``ConfigurationKey``).

GetConfiguration is live only: the charger answers or nobody does. So every answer the
service gets is kept (``record_read``: the keys it gave replace what was known of them,
with their readonly flag and when they were read; the keys it says it does not know are
forgotten), and so is every ChangeConfiguration the charger took (``record_change``:
Accepted or RebootRequired; a refusal or no answer leaves the key as it was known).
Keys the answer did not mention are kept: a read of some keys says nothing of the others.

A secret key's value (``command_rules.is_secret_key``: the charger's AuthorizationKey,
a vendor's password) is never kept, and never shown in a live answer either
(``without_secrets``): the mutation's payload, ``commandCompleted`` and webhooks carry the
answer, and are read more widely than the charger itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.command_rules import folded_key, is_secret_key
from domain.entities import ConfigurationKey, Station
from domain.errors import UniqueViolation
from domain.policy import Viewer
from domain.ports import Change, Delete, Insert, Store
from domain.query import Eq, In, all_of
from domain.services.base import patch, stamp_new

#: The most keys of one station read at once: far above what chargers have (the OCPP 1.6
#: core profile defines about 40, vendors add tens to a few hundred).
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


async def record_read(store: Store, station: Station, result: dict[str, Any], actor: Viewer,
                      now: datetime) -> None:
    """Keeps what a GetConfiguration answer (``result``, OCPP field names) says of the
    station's keys. Two answers recorded at once may both insert a key new to the
    station: the second then finds the first's and writes over it."""
    given: dict[str, dict[str, Any]] = {}
    for entry in result.get("configurationKey") or ():
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            given[folded_key(entry["key"])] = entry  # a key given twice: its last
    unknown = {folded_key(k) for k in result.get("unknownKey") or () if isinstance(k, str)}
    unknown -= given.keys()
    for attempt in range(2):
        try:
            await _write_read(store, station, given, unknown, actor, now)
            return
        except UniqueViolation:
            if attempt:
                raise


async def _write_read(store: Store, station: Station, given: dict[str, dict[str, Any]],
                      unknown: set[str], actor: Viewer, now: datetime) -> None:
    held = await _held(store, station, [*given, *unknown])
    changes: list[Change] = [Delete(held[k]) for k in unknown if k in held]
    for folded, entry in given.items():
        secret = is_secret_key(entry["key"])
        value = entry.get("value")
        read: dict[str, Any] = {
            "key": entry["key"], "readonly": bool(entry.get("readonly")),
            "value": None if secret or not isinstance(value, str) else value,
            "secret": secret, "read_at": now}
        known = held.get(folded)
        changes.append(patch(known, actor, **read) if known is not None else Insert(
            stamp_new(ConfigurationKey(station_id=station.id, cp_id=station.cp_id, **read),
                      actor, now)))
    if changes:
        await store.write(changes, [])


async def record_change(store: Store, station: Station, key: str, value: str, status: str,
                        actor: Viewer, now: datetime) -> None:
    """Keeps a ChangeConfiguration the charger took (answered ``status``, Accepted or
    RebootRequired): the key's value now, when, and whether it waits for a reboot. A
    key the charger changed is not readonly, whatever was read of it before."""
    secret = is_secret_key(key)
    changed: dict[str, Any] = {
        "value": None if secret else value, "secret": secret, "readonly": False,
        "changed_at": now, "reboot_required": status == REBOOT_REQUIRED}
    for attempt in range(2):  # as ``record_read``: a key inserted meanwhile is updated
        known = (await _held(store, station, [folded_key(key)])).get(folded_key(key))
        change = patch(known, actor, **changed) if known is not None else Insert(stamp_new(
            ConfigurationKey(station_id=station.id, cp_id=station.cp_id, key=key, **changed),
            actor, now))
        try:
            await store.write([change], [])
            return
        except UniqueViolation:
            if attempt:
                raise


async def _held(store: Store, station: Station, folded: Sequence[str]
                ) -> dict[str, ConfigurationKey]:
    """The station's known keys among ``folded``, by their folded name."""
    if not folded:
        return {}
    found = await store.find_all(ConfigurationKey, all_of(
        Eq("station_id", station.id), In("folded_key", tuple(folded))), limit=MAX_KEYS)
    return {k.folded_key: k for k in found}


async def forget_configuration(store: Store, station: Station) -> list[Change]:
    """The deletions of a removed station's known keys (its cpId may be given to a new
    station, whose charger's configuration is its own)."""
    known = await store.find_all(ConfigurationKey, Eq("station_id", station.id),
                                 limit=MAX_KEYS)
    return [Delete(k) for k in known]
