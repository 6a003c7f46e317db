"""Process-wide settings of a long-running ChargeGraph server (not of tests or tools)."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("chargegraph")

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


def raise_open_file_limit() -> None:
    """Raises the soft limit on open files to the hard one, and logs the result (INFO).

    Every connection is an open file, GraphQL's and the chargers' alike, and both ports
    live in this process: at systemd's default soft limit (1024) a thousand sockets left
    no descriptor for a new charger, /healthz or the database. The hard limit is what the
    administrator allows (systemd's default is 524288); servers commonly raise to it.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.info("open-file limit: %s", _limit(soft))
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as refused:  # macOS refuses an unlimited hard limit
        log.info("open-file limit: %s (raising it to %s failed: %s)", _limit(soft),
                 _limit(hard), refused)
        return
    log.info("open-file limit: %s (raised from %s)", _limit(hard), _limit(soft))


def _limit(value: int) -> str:
    import resource

    return "unlimited" if value == resource.RLIM_INFINITY else str(value)
