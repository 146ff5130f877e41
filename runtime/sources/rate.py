"""`--fps F`: keep frames F times per second of stream time and drop the rest.

Nothing is queued here: a frame is taken or dropped the moment it arrives. (For live sources
`latest.py` also drops the frames that arrive while the model is busy.) Times are the frames'
own: media time for a file, so a one-hour video at --fps 1 gives 3,600 frames however fast
the model runs; wall time for a camera.
"""

from __future__ import annotations

from dataclasses import dataclass

# Container timestamps are rounded (milliseconds); a frame this close to its due time counts.
_TOLERANCE_S = 1e-3


@dataclass
class RateSampler:
    fps: float | None  # None: keep every frame
    taken: int = 0
    dropped: int = 0
    _next_due: float | None = None

    def take(self, t: float) -> bool:
        """Whether the frame at stream time `t` (seconds) is kept."""
        if self.fps is None:
            self.taken += 1
            return True
        period = 1.0 / self.fps
        if self._next_due is not None and t < self._next_due - _TOLERANCE_S:
            self.dropped += 1
            return False
        self._next_due = (t if self._next_due is None else self._next_due) + period
        if self._next_due <= t:  # fell behind (a gap in the stream): restart from now,
            self._next_due = t + period  # rather than burst to catch up
        self.taken += 1
        return True
