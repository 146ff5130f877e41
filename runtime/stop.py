"""SIGINT / SIGTERM stop a streaming run cleanly: the first sets an event the run loop checks
after each step (a frame fed, a token generated), so the transcript and the summary are
written; a second SIGINT aborts at once (KeyboardInterrupt), for a step that hangs.

The handler only sets the event and remembers the signal: writing to stderr from a handler can
re-enter a write the main thread was in the middle of (the status line)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class StopOnSignal:
    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signal.signal requires it
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
