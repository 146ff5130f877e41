"""From a source spec to the frames the run loop feeds: open, reopen live sources that drop,
keep the latest frame of a live source, sample at --fps, skip corrupt frames with a warning,
stop at --max-frames / --duration or when the run is stopped."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from edgekv.runtime.sources.base import Frame, FrameError, Source, SourceError
from edgekv.runtime.sources.latest import LatestFrame
from edgekv.runtime.sources.rate import RateSampler
from edgekv.runtime.sources.reconnect import Backoff, Reconnecting
from edgekv.runtime.sources.redact import redact

Say = Callable[[str], None]
# Corrupt frames: warn for the first few, then every Nth, so a broken stream cannot flood logs.
_WARN_FIRST, _WARN_EVERY = 5, 100


@dataclass
class StreamLimits:
    fps: float | None = None  # keep this many frames per second of stream time
    max_frames: int | None = None  # frames handed to the run
    duration_s: float | None = None  # seconds of stream time (wall time for live sources)

    def __post_init__(self) -> None:
        # nan passes a `<= 0` check and then compares False with every time: --fps nan kept
        # every frame and --duration nan never ended the run, without a word.
        for flag, value in (("--fps", self.fps), ("--duration", self.duration_s)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise SourceError(f"{flag} must be a positive number, not {value}")
        if self.max_frames is not None and self.max_frames <= 0:
            raise SourceError(f"--max-frames must be positive, not {self.max_frames}")


@dataclass
class FrameCounters:
    taken: int = 0  # frames handed to the run
    dropped_rate: int = 0  # not kept by --fps
    dropped_busy: int = 0  # live: arrived while the run was busy, replaced by a newer one
    skipped: int = 0  # corrupt, skipped
    reconnects: int = 0


@dataclass
class FrameStream:
    source: Source
    limits: StreamLimits = field(default_factory=StreamLimits)
    say: Say = print
    stop: threading.Event = field(default_factory=threading.Event)
    backoff: Backoff = field(default_factory=Backoff)
    counters: FrameCounters = field(default_factory=FrameCounters)

    def __post_init__(self) -> None:
        self.name = redact(self.source.name)
        say = self.say
        self.say = lambda line: say(redact(line))  # whatever a source's messages quote
        self._rate = RateSampler(self.limits.fps)
        self._reconnecting: Reconnecting | None = None
        self._latest: LatestFrame | None = None
        reader: Source = self.source
        if self.source.live:
            reader = self._reconnecting = Reconnecting(reader, self.backoff, self.say, self.stop)
            reader = self._latest = LatestFrame(reader, self._skip, self.stop)
        self._reader = reader
        self.end_reason = ""  # why iteration ended: source ended, --max-frames, ...

    def _skip(self, exc: FrameError) -> None:
        self.counters.skipped += 1
        n = self.counters.skipped
        if n <= _WARN_FIRST or n % _WARN_EVERY == 0:
            self.say(f"warning: skipped a corrupt frame from {self.name} "
                     f"({redact(str(exc))}; {n} so far)")

    def __iter__(self) -> Iterator[Frame]:
        limits = self.limits
        self._reader.open()
        try:
            first_t: float | None = None
            while not self.stop.is_set():
                if limits.max_frames is not None and self.counters.taken >= limits.max_frames:
                    self.end_reason = "--max-frames"
                    return
                try:
                    frame = self._reader.read()
                except FrameError as exc:
                    self._skip(exc)
                    continue
                self._sync_counters()
                if frame is None:
                    self.end_reason = "stopped" if self.stop.is_set() else "source ended"
                    if first_t is None and self.counters.skipped and not self.stop.is_set():
                        # Every frame was corrupt: answering questions about nothing would
                        # look like a run that worked.
                        raise SourceError(f"no frame of {self.name} could be decoded "
                                          f"({self.counters.skipped} skipped)")
                    return
                first_t = frame.t if first_t is None else first_t
                if limits.duration_s is not None and frame.t - first_t >= limits.duration_s:
                    self.end_reason = "--duration"
                    return
                if not self._rate.take(frame.t):
                    continue
                self.counters.taken += 1
                yield frame
            self.end_reason = "stopped"
        finally:
            self._reader.close()
            self._sync_counters()

    def _sync_counters(self) -> None:
        c = self.counters
        c.dropped_rate = self._rate.dropped
        if self._latest is not None:
            c.dropped_busy = self._latest.dropped
        if self._reconnecting is not None:
            c.reconnects = self._reconnecting.reconnects
