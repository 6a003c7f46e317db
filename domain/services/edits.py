"""Edits by operators and admins that another instance sharing the store may make at the
same moment (``docs/architecture.md``, "Several instances on one store").

An edit reads the record, checks the request against it and writes the fields given. In
one process the keyed locks order two such edits; across instances nothing did, so the
later write could rest on a read the earlier one had made stale: its checks judged
another record, and its audit entry's before-image was not what it replaced (QA s21: the
entries' ``before`` and ``after`` did not chain). Each edit now writes only on the
version it read (``edit``) and, when another write came between, is run again whole on a
fresh read (``retried``): last writer wins still, but knowingly, and nothing is lost
without an error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from domain.entities import Record
from domain.errors import Conflict
from domain.policy import Viewer
from domain.ports import Delete, Update
from domain.services.base import patch

T = TypeVar("T")

#: How often an edit is tried before the user is told CHANGED. A record's telemetry
#: (a charger's status patches its station and connector) may move its version between
#: a read and a write; three reads in a row each overtaken is a record too busy to edit
#: now, and the user is better told so than kept waiting.
EDIT_ATTEMPTS = 3


def edit(record: Record, viewer: Viewer, *, also_if: tuple[tuple[str, Any], ...] = (),
         **updates: Any) -> Update:
    """``patch`` written only onto the version of ``record`` that was read: its
    ``updated_at`` (every audited change moves it; telemetry written with ``touch``,
    which leaves it, changes no field an edit judges), and the fields ``also_if`` still
    holding their values read. Another write meanwhile fails the whole write with
    ``Conflict`` (code ``CHANGED``), for ``retried`` to run again."""
    update = patch(record, viewer, only_if=("updated_at", record.updated_at), required=True,
                   **updates)
    return replace(update, also_if=also_if) if also_if else update


def removal(record: Record) -> Delete:
    """A deletion of ``record`` written only onto the version that was read (as ``edit``):
    one changed or deleted meanwhile fails the whole write with ``Conflict`` (code
    ``CHANGED``), for ``retried`` to run again."""
    return Delete(record, only_if=("updated_at", record.updated_at))


async def retried(operation: Callable[[], Awaitable[T]], attempts: int = EDIT_ATTEMPTS,
                  codes: tuple[str, ...] | None = ("CHANGED",), *,
                  pause: Callable[[int], Awaitable[None]] | None = None) -> T:
    """``operation`` (read, check, write) run again from its read when its write met a
    change made since (CHANGED, or another of ``codes``; ``None``: any ``Conflict``), up
    to ``attempts`` times; then the conflict goes to the caller (a user error on ``id``).
    Any other error is the operation's answer at once. ``operation`` must write last:
    what follows a write (events, follow-ups) belongs after this call, so it never runs
    twice. ``pause``: awaited with the attempt's number after each that met a conflict
    and before the next (a charger's records, where two instances in step would meet
    again: ``ChargerConnections.pause_to_retry``); none by default (an edit)."""
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except Conflict as exc:
            if (codes is not None and exc.code not in codes) or attempt == attempts:
                raise
        if pause is not None:
            await pause(attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")
