"""Test doubles for the streaming run (imported as `stream_fakes`; tests/ is on sys.path).

`FlakyCamera` is a live source that fails on frame k, as an unplugged camera does.
`RecordingSession` stands in for a multimodal session in the run-loop tests only: it records
the frames it is given and answers with fixed words. It is not the VLM path: the end-to-end
tests with a real bundle are in tests/cli/test_run_stream.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgekv.runtime.errors import BudgetError
from edgekv.runtime.sources.base import Frame, SourceDropped
from edgekv.runtime.sources.synthetic import SyntheticOptions, SyntheticSource


class FlakyCamera:
    """Live frames from a synthetic scene; the first open fails (raises) on frame `fail_at`,
    and the next `refuse` opens fail, then it works again."""

    live = True

    def __init__(self, fail_at: int, refuse: int = 0, name: str = "fake-camera",
                 error: type[Exception] = RuntimeError) -> None:
        self.fail_at, self.refuse, self.name, self.error = fail_at, refuse, name, error
        self.opens = 0
        self.scene = SyntheticSource(SyntheticOptions(width=32, height=24))
        self.index = 0

    def open(self) -> None:
        self.opens += 1
        if 1 < self.opens <= 1 + self.refuse:
            raise SourceDropped(f"{self.name} still unplugged")
        self.index = 0

    def read(self) -> Frame | None:
        if self.opens == 1 and self.index == self.fail_at:
            raise self.error(f"{self.name}: device disconnected")
        frame = Frame(self.scene.render(self.index), self.index, 0.0)
        self.index += 1
        return frame

    def close(self) -> None:
        pass


@dataclass
class _Cache:
    budget: int = 64
    evictions: int = 0
    merged: int = 0
    used: int = 0

    def occupied(self) -> int:
        return self.used


@dataclass
class _Stats:
    tokens_out: int = 0


@dataclass
class RecordingSession:
    """Records frames; answers each question with `words`, one piece per word."""

    words: tuple[str, ...] = ("a", " red", " square")
    cache: _Cache = field(default_factory=_Cache)
    stats: _Stats = field(default_factory=_Stats)
    frames: list[np.ndarray] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    keep_frames: bool = True
    on_piece: object = None  # called with (question, piece index) before each piece
    frame_delay_s: float = 0.0
    max_question_chars: int | None = None  # a longer question is refused, as Session refuses
    # a turn longer than the budget
    stops: list[tuple[str, ...]] = field(default_factory=list)  # each ask's stop strings


    def append_image(self, frame: np.ndarray) -> None:
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        if self.keep_frames:
            self.frames.append(frame.copy())
        self.cache.used = min(self.cache.used + 8, self.cache.budget)
        self.cache.evictions += 8 if self.cache.used == self.cache.budget else 0
        if self.frame_delay_s:
            threading.Event().wait(self.frame_delay_s)

    def ask(self, question: str, max_new_tokens: int = 128, sampler: object = None,
            stop: tuple[str, ...] = ()) -> Iterator[str]:
        if self.max_question_chars is not None and len(question) > self.max_question_chars:
            raise BudgetError(f"this turn is {len(question)} tokens")  # at the call, as Session
        self.stops.append(stop)
        return self._words(question, max_new_tokens)

    def _words(self, question: str, max_new_tokens: int) -> Iterator[str]:
        self.questions.append(question)
        for i, word in enumerate(self.words[:max_new_tokens]):
            if callable(self.on_piece):
                self.on_piece(question, i)
            self.stats.tokens_out += 1
            yield word
