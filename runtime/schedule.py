"""`--ask "question" --every 10s|30f`: when the scheduled questions are due. Seconds are stream
time (a file's media time, a camera's wall time), so `--every 10s` on a video file asks about
each ten seconds of video however fast the model runs. Without --every they are asked once,
when the stream ends."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgekv.runtime.errors import EdgeKVError

_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|f)\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class Every:
    amount: float
    unit: str  # "s" (stream seconds) or "f" (frames fed)


def parse_every(text: str) -> Every:
    """'10s' -> Every(10, 's'); '30f' -> Every(30, 'f'); '2m' -> Every(120, 's')."""
    match = _EVERY.match(text.lower())
    if not match or float(match[1]) <= 0:
        raise EdgeKVError(f"--every {text!r}: expected a positive number of seconds or frames, "
                          "e.g. 10s, 500ms, 2m or 30f")
    amount, unit = float(match[1]), match[2]
    if unit == "f":
        if amount != int(amount):
            raise EdgeKVError(f"--every {text!r}: a whole number of frames")
        return Every(amount, "f")
    return Every(amount * _SECONDS[unit], "s")


@dataclass
class AskSchedule:
    questions: list[str]
    every: Every | None = None
    _next_t: float | None = None

    def due(self, frames: int, t: float) -> list[str]:
        """Questions to ask now that `frames` frames are in and the last one is at time `t`."""
        if not self.questions or self.every is None:
            return []
        if self.every.unit == "f":
            return list(self.questions) if frames % int(self.every.amount) == 0 else []
        if self._next_t is None:  # the first frame starts the clock
            self._next_t = t + self.every.amount
            return []
        if t + 1e-6 < self._next_t:
            return []
        while self._next_t <= t + 1e-6:  # a gap longer than the period asks once, not n times
            self._next_t += self.every.amount
        return list(self.questions)

    def at_end(self) -> list[str]:
        """Questions to ask when the stream ends (those without --every)."""
        return list(self.questions) if self.every is None else []
