"""A dependency-free progress line on stderr, quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class Progress:
    total: int
    label: str = ""
    enabled: bool = field(default_factory=lambda: sys.stderr.isatty())
    done: int = 0
    _start: float = field(default_factory=time.perf_counter)
    _last: float = 0.0

    def update(self, n: int, extra: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (now - self._last < 0.2 and self.done < self.total):
            return
        self._last = now
        rate = self.done / max(now - self._start, 1e-9)
        frac = self.done / max(self.total, 1)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} "
                         f"{rate:,.0f}/s {extra}\033[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
