"""Questions typed on stdin while the stream runs: a daemon thread reads lines into a small
queue, and the run loop takes whatever is there between frames (it never waits for input)."""

from __future__ import annotations

import queue
import threading
from typing import TextIO

# A person types a few questions; a bounded queue keeps a pipe of endless lines from growing
# memory (the reader waits until the loop catches up).
_MAX_PENDING = 64


class StdinQuestions:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = _isatty(stream)
        self._queue: queue.Queue[str] = queue.Queue(maxsize=_MAX_PENDING)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, name="edgekv-stdin", daemon=True)

    def start(self) -> StdinQuestions:
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            for line in self.stream:
                if line.strip():
                    self._queue.put(line.strip())
        except (OSError, ValueError):  # stdin closed, or not readable (a test harness)
            pass
        finally:
            self._done.set()

    def pending(self) -> list[str]:
        """Questions typed since the last call, oldest first; never blocks."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float) -> str | None:
        """The next question, waiting up to `timeout` s; None if none came (or stdin ended)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def ended(self) -> bool:
        """Stdin is closed and every question has been taken."""
        return self._done.is_set() and self._queue.empty()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
