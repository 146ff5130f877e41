"""Parse one line of NVIDIA's `tegrastats` (Jetson), as printed from L4T r32 to r36.

The fields move and change between releases (r32: `GR3D_FREQ 0%@76`, r35: `0%@611` and
`VDD_IN 5299mW/5299mW`, r36: `0%@[305,305]`, optional timestamps, no SWAP without swap,
three-valued rails), so each field is found on its own and a missing one is None.
Only RAM is required: it is what the profiler needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_UNIT_MB = {"k": 1 / 1024, "M": 1.0, "G": 1024.0}
_TIME = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)([kMG])B")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)([kMG])B")
_GR3D = re.compile(r"\bGR3D(?:_FREQ)? (\d+)%(?:@\[?([\d,]+)\]?)?")
# A rail: `VDD_IN 5299mW/5299mW` (r35+), `POM_5V_IN 1022/1022` (r32), `VDD_IN 3582mW/3582mW/
# 3582mW` (current/average/max). The lookahead rejects `RAM 534/3964MB`, whose unit follows.
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/\d+(?:mW)?(?:/\d+(?:mW)?)?(?![\w/])")
_TEMP = re.compile(r"\b(\w+)@(-?[\d.]+)C\b")


@dataclass(frozen=True)
class TegraStats:
    ram_used_mb: float
    ram_total_mb: float
    swap_used_mb: float | None = None
    swap_total_mb: float | None = None
    gpu_load_percent: int | None = None  # GR3D: the integrated GPU's load
    gpu_mhz: list[int] = field(default_factory=list)  # one per GPC on r36 Orin, empty if absent
    power_mw: dict[str, int] = field(default_factory=dict)  # rail -> current milliwatts
    temps_c: dict[str, float] = field(default_factory=dict)
    timestamp: str | None = None  # `MM-DD-YYYY HH:MM:SS` when tegrastats prints one


def parse_line(line: str) -> TegraStats:
    """One tegrastats line; ValueError when it has no RAM field (not a tegrastats line)."""
    ram = _RAM.search(line)
    if ram is None:
        raise ValueError(f"not a tegrastats line (no RAM field): {line[:80]!r}")
    swap = _SWAP.search(line)
    gr3d = _GR3D.search(line)
    stamp = _TIME.search(line)
    return TegraStats(
        ram_used_mb=_mb(ram.group(1), ram.group(3)),
        ram_total_mb=_mb(ram.group(2), ram.group(3)),
        swap_used_mb=_mb(swap.group(1), swap.group(3)) if swap else None,
        swap_total_mb=_mb(swap.group(2), swap.group(3)) if swap else None,
        gpu_load_percent=int(gr3d.group(1)) if gr3d else None,
        gpu_mhz=[int(f) for f in gr3d.group(2).split(",") if f] if gr3d and gr3d.group(2) else [],
        power_mw={name: int(mw) for name, mw in _RAIL.findall(line)},
        temps_c={name: float(c) for name, c in _TEMP.findall(line)},
        timestamp=stamp.group(1) if stamp else None,
    )


def _mb(value: str, unit: str) -> float:
    return int(value) * _UNIT_MB[unit]
