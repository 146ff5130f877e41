"""Reopen a live source that dropped, waiting longer after each failed attempt (exponential
backoff), so a camera unplugged for a minute or an RTSP server that restarts does not end a
run that has been going for hours. Frame indices and times carry on across reopens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from edgekv.runtime.sources.base import Frame, FrameError, Source, SourceDropped, SourceError
from edgekv.runtime.sources.redact import redact

Say = Callable[[str], None]


@dataclass
class Backoff:
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    max_attempts: int | None = None  # None: keep trying until the run is stopped

    def delays(self) -> Iterator[float]:
        delay, attempt = self.initial_s, 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield delay
            delay = min(delay * self.factor, self.max_s)
            attempt += 1


class Reconnecting:
    """A live source that reopens itself. The first open must succeed (a wrong device number
    should fail at once, not retry forever); later drops are retried with `backoff`.

    Any exception from the source but FrameError counts as a drop: a driver can fail in many
    ways, and a run meant to last hours should outlive them. Each one is logged.
    """

    def __init__(self, source: Source, backoff: Backoff, say: Say,
                 stop: threading.Event | None = None) -> None:
        self.source, self.backoff, self.say = source, backoff, say
        self.stop = stop or threading.Event()
        self.name, self.live = redact(source.name), source.live
        self.reconnects = 0
        self.t0 = 0.0
        self.base_index = 0  # frames produced before the current open
        self.next_index = 0
        # The backoff of the current outage, (attempt, delay) pairs. It lasts until a frame
        # arrives: a device that opens but gives nothing (held by another process) has not
        # come back, and restarting at 0.5 s would reopen it twice a second for hours.
        self._delays: Iterator[tuple[int, float]] | None = None
        self._attempts = 0  # reopen attempts in the current outage

    def open(self) -> None:
        try:
            self.source.open()
        except SourceError:
            raise
        except SourceDropped as exc:
            raise SourceError(redact(str(exc))) from None
        except Exception as exc:
            raise SourceError(f"cannot open {self.name}: {redact(str(exc))}") from None
        self.t0 = time.monotonic()

    def read(self) -> Frame | None:
        while True:
            try:
                frame = self.source.read()
            except FrameError:
                self.next_index += 1
                raise
            except Exception as exc:  # see the class docstring
                if not self._reopen(exc):
                    return None
                continue
            if frame is None:  # a live stream that "ends" has dropped...
                if getattr(self.source, "ends", False):  # ...unless its end is real
                    return None
                if not self._reopen(None):
                    return None
                continue
            self._delays = None  # it is back: the next outage starts the backoff afresh
            frame.index = self.base_index + frame.index
            frame.t = time.monotonic() - self.t0  # one clock across reopens
            self.next_index = frame.index + 1
            return frame

    def _reopen(self, cause: Exception | None) -> bool:
        """Reopen with backoff; False if the run was stopped meanwhile. Raises SourceError
        when `max_attempts` run out."""
        reason = redact(f"{type(cause).__name__}: {cause}") if cause else "end of stream"
        self.source.close()
        self.base_index = self.next_index
        if self._delays is None:
            self._delays, self._attempts = enumerate(self.backoff.delays(), start=1), 0
        for attempt, delay in self._delays:
            self._attempts = attempt
            self.say(f"{self.name} dropped ({reason}); reopening in {delay:.1f} s "
                     f"(attempt {attempt})")
            if self.stop.wait(delay):
                return False
            try:
                self.source.open()
            except Exception as exc:  # still down: wait longer
                reason = redact(f"{type(exc).__name__}: {exc}")
                continue
            self.reconnects += 1
            self.say(f"{self.name} reopened after {attempt} attempt(s)")
            return True
        raise SourceError(f"{self.name} did not come back after {self._attempts} attempts "
                          f"({reason})")

    def close(self) -> None:
        self.source.close()
