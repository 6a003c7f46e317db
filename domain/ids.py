"""Entity ids: 24-hex strings with the layout of a MongoDB ObjectId.

Generated here (not with ``bson``) so the domain stays free of driver imports; the MongoDB
store converts them to real ObjectIds at its boundary.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime

_ID_RE = re.compile(r"^[0-9a-f]{24}$")
_PROCESS_RANDOM = os.urandom(5)
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()


def new_id() -> str:
    """A new ObjectId-shaped id: 4-byte seconds, 5-byte process random, 3-byte counter."""
    with _lock:
        count = next(_counter) & 0xFFFFFF
    raw = int(time.time()).to_bytes(4, "big") + _PROCESS_RANDOM + count.to_bytes(3, "big")
    return raw.hex()


def stable_id(at: datetime, *key: object) -> str:
    """An ObjectId-shaped id derived from a record's time and natural key, so a repeated
    message writes the same id (and ``InsertIfAbsent`` makes it a no-op). The first four
    bytes are ``at``'s seconds, as in ``new_id``: ids of telemetry written now sort near
    each other, so the primary-key index grows at its end instead of taking inserts at
    random pages (which was most of a meter-sample insert's cost in SQLite)."""
    return stable_ids(at)(*key)


def stable_ids(at: datetime, *prefix: object) -> Callable[..., str]:
    """``stable_id(at, *prefix, *rest)`` as a function of ``rest``: the readings of one
    meter value share their time and charger, so that part is prepared once."""
    head = min(max(int(at.timestamp()), 0), 0xFFFFFFFF).to_bytes(4, "big")
    text = "|".join(map(str, prefix))

    def make(*rest: object) -> str:
        key = "|".join(map(str, rest))
        if text:
            key = f"{text}|{key}" if rest else text
        return (head + hashlib.blake2b(key.encode(), digest_size=8).digest()).hex()

    return make


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None
