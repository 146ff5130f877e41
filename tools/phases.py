"""Phase markers an edgekv process leaves for `edgekv profile`: one JSON line per event in the
file named by $EDGEKV_PHASE_LOG. Without that variable every call is a no-op, so marking costs
nothing in a normal run.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "EDGEKV_PHASE_LOG"
_peak_at_exit = False  # whether record_peak is registered to run at exit


def mark(phase: str) -> None:
    """A phase starts now: load, prefill, decode, first-eviction, steady."""
    _write({"phase": phase})


def record_plan(rows: list[tuple[str, int]]) -> None:
    """The memory plan of the bundle being run, to draw beside the measured curve."""
    _write({"plan": dict(rows)})


def record_peak() -> None:
    """This process's RSS high-water mark, so a profile has the peak even if sampling missed it
    (runs at exit once anything was marked)."""
    from edgekv.runtime.rss import rss_peak

    _write({"peak_rss": rss_peak()})


def _write(event: dict[str, Any]) -> None:
    global _peak_at_exit
    path = os.environ.get(ENV)
    if not path:
        return
    if not _peak_at_exit:
        _peak_at_exit = True
        atexit.register(record_peak)
    # Appending one short line per event: several processes of one command can share a file.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"t": time.time(), **event}) + "\n")


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Events of a marker file, oldest first; a missing file (no edgekv inside) is no events."""
    path = Path(path)
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed child
    return sorted(events, key=lambda e: e.get("t", 0.0))
