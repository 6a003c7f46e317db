"""Process-wide settings of a long-running ChargeGraph server (not of tests or tools)."""

from __future__ import annotations

import gc

#: Young-generation threshold of the cyclic garbage collector (CPython's default is 700).
GC_GEN0_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic collections for a server holding thousands of connections.

    With CPython's defaults a busy OCPP server spends about an eighth of its CPU in the
    cyclic collector, mostly in full collections that walk every live object (each charger
    connection keeps hundreds); measured with ``python -m bench.ocpp_throughput``. Nearly
    everything the server allocates per message dies by reference counting, so collecting
    less often changes little but the collector's own cost. ``gc.freeze()`` moves what
    exists at start-up (modules, the schema, the app) out of every future collection.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
