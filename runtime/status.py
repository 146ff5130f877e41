"""The live status line on stderr: frames in, frames/s, slots used / budget, memory.

On a terminal it rewrites one line in place (and `clear` wipes it before an answer is printed);
into a file or a pipe it writes a plain line every `log_every_s` seconds instead, so logs of a
long run stay readable."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from edgekv.runtime.sources.redact import redact

MiB = 2**20


@dataclass
class StatusSnapshot:
    frames: int
    frames_per_s: float
    slots_used: int
    budget: int
    rss_bytes: int
    answers: int = 0
    dropped: int = 0
    skipped: int = 0

    def text(self) -> str:
        line = (f"frames {self.frames}  {self.frames_per_s:.1f} f/s  slots {self.slots_used}/"
                f"{self.budget}  rss {self.rss_bytes / MiB:.0f} MiB  answers {self.answers}")
        if self.dropped:
            line += f"  dropped {self.dropped}"
        if self.skipped:
            line += f"  skipped {self.skipped}"
        return line


class StatusLine:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True,
                 interval_s: float = 0.5, log_every_s: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = _isatty(self.stream)
        self.interval_s = interval_s if self.tty else log_every_s
        self._last = float("-inf")
        self._width = 0

    def due(self) -> bool:
        """Whether `show` would print now (so the caller can skip gathering a snapshot)."""
        return self.enabled and time.monotonic() - self._last >= self.interval_s

    def show(self, snapshot: StatusSnapshot, force: bool = False) -> None:
        if not self.enabled or not (force or self.due()):
            return
        self._last = time.monotonic()
        text = redact(snapshot.text())
        if self.tty:
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(f"edgekv: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Wipe the in-place line (before other output shares the terminal)."""
        if self.enabled and self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
