"""Entity ids: 24-hex strings with the layout of a MongoDB ObjectId.

Generated here (not with ``bson``) so the domain stays free of driver imports; the MongoDB
store converts them to real ObjectIds at its boundary.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time

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


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None
