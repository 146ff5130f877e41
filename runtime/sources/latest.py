"""For live sources: a thread reads frames as fast as the source gives them and keeps only the
latest one. The run loop, however slow the model is, then always gets a fresh frame, and memory
holds one frame, never a growing queue. Frames overwritten before the loop took them are
counted as dropped."""

from __future__ import annotations

import threading
from collections.abc import Callable

from edgekv.runtime.sources.base import Frame, FrameError, Source
from edgekv.runtime.sources.redact import redact

OnSkip = Callable[[FrameError], None]


class LatestFrame:
    def __init__(self, source: Source, on_skip: OnSkip,
                 stop: threading.Event | None = None) -> None:
        self.source, self.on_skip = source, on_skip
        self.name, self.live = redact(source.name), source.live
        self.stop = stop or threading.Event()
        self.dropped = 0
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()  # close(): ends the thread without touching `stop`

    def open(self) -> None:
        self.source.open()
        self._thread = threading.Thread(target=self._grab, name="edgekv-grab", daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        try:
            while not (self.stop.is_set() or self._halt.is_set()):
                try:
                    frame = self.source.read()
                except FrameError as exc:
                    self.on_skip(exc)
                    continue
                with self._cond:
                    if frame is None:
                        break
                    if self._frame is not None:
                        self.dropped += 1
                    self._frame = frame
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the reading thread, which raises it
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def read(self) -> Frame | None:
        """The newest frame not yet read; waits for one. None once the source has ended."""
        with self._cond:
            while self._frame is None and not self._ended:
                self._cond.wait(timeout=0.5)
                if self.stop.is_set():
                    return None
            frame, self._frame = self._frame, None
            if frame is None and self._error is not None:
                raise self._error
            return frame

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:  # a daemon: if it sits in a reconnect wait, leave it
            self._thread.join(timeout=1.0)
        self.source.close()
