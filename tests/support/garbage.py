"""What only the cyclic garbage collector would free: objects a piece of code left in
reference cycles instead of releasing them."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def left_to_the_collector() -> Iterator[list[Any]]:
    """Collects first, runs the block with the collector off, then fills the yielded list
    with what the block left unreachable but still allocated (reference cycles)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    found: list[Any] = []
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found.extend(gc.garbage)
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            if enabled:
                gc.enable()
