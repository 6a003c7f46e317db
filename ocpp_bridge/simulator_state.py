"""What simulated chargers keep across a restart of the simulator, in one JSON file.

A real charger keeps what it was told through a reboot (OCPP 1.6: a connector set
Unavailable "shall persist a reboot", 5.2; the local authorization list "SHOULD be
persisted across reboots and power outages", 3.5; its configuration, 5.3), so the
central system's record of it stays true. The simulator's chargers keep it here, by
cpId: what each writes is ``SimulatedChargePoint.kept``, read back at its start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("chargegraph.simulator")


class ChargerStates:
    """The state file of a fleet of simulated chargers (``path``; None: nothing is kept).
    A missing file is a fleet of fresh chargers; one that cannot be read or parsed is
    logged and ignored (rewritten at the next change), never a crash. ``fresh``: the file
    is removed first (the demo's new world: its chargers were never told anything)."""

    def __init__(self, path: Path | None = None, *, fresh: bool = False) -> None:
        self.path = path
        self._by_cp: dict[str, dict[str, Any]] = {}
        if path is None:
            return
        if fresh:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("cannot remove the chargers' state file %s: %s", path, error)
            return
        self._by_cp = _read(path)

    def of(self, cp_id: str) -> dict[str, Any]:
        """What ``cp_id`` kept at its last change; empty for a charger never told anything."""
        return self._by_cp.get(cp_id, {})

    def keep(self, cp_id: str, state: dict[str, Any]) -> None:
        """Writes ``cp_id``'s state with the others', atomically (a temporary file
        replacing the file: a simulator killed meanwhile leaves the previous one whole).
        A write that fails is logged: the charger runs on, as told, unkept."""
        if self.path is None or self._by_cp.get(cp_id) == state:
            return
        self._by_cp[cp_id] = state
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(self._by_cp, indent=1, sort_keys=True),
                                 encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("cannot write the chargers' state file %s: %s", self.path, error)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        log.warning("ignoring the chargers' state file %s, unreadable: %s", path, error)
        return {}
    if not isinstance(data, dict):
        log.warning("ignoring the chargers' state file %s: not an object by cpId", path)
        return {}
    return {cp_id: state for cp_id, state in data.items() if isinstance(state, dict)}
