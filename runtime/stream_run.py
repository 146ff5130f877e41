"""The streaming run: frames from a source go into the session (vision graph, then the cache
under the policy); scheduled and typed questions are answered between frames from what the
cache holds, streamed to the console and recorded in the transcript.

Nothing here grows with the length of the stream: per frame it keeps counters only, and the
session's memory is fixed by its budget. The loop checks `stop` after every step (a frame fed,
a token generated), so SIGINT/SIGTERM end it with everything written so far.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TextIO

import numpy as np

from edgekv.runtime.errors import BudgetError
from edgekv.runtime.questions import StdinQuestions
from edgekv.runtime.rss import rss_now, rss_peak
from edgekv.runtime.schedule import AskSchedule
from edgekv.runtime.sources.frames import FrameStream
from edgekv.runtime.sources.redact import redact
from edgekv.runtime.status import StatusLine, StatusSnapshot
from edgekv.runtime.transcript import AnswerRecord, Transcript
from edgekv.runtime.utf8 import valid_utf8

Say = Callable[[str], None]
MiB = 2**20


class FrameSession(Protocol):
    """What the run needs of a session (runtime/session.py with a vision graph)."""

    cache: Any  # KVCache: occupied(), budget, evictions, merged
    stats: Any  # Stats: tokens_out

    def append_image(self, frame: np.ndarray) -> None: ...

    def ask(self, question: str, max_new_tokens: int = ..., sampler: Any = ...,
            stop: tuple[str, ...] = ...) -> Iterator[str]: ...


@dataclass
class RunSummary:
    frames: int = 0
    answers: int = 0
    elapsed_s: float = 0.0
    frames_per_s: float = 0.0
    peak_rss_bytes: int = 0
    evictions: int = 0
    merged: int = 0  # repeats folded into an earlier slot (structured)
    slots_used: int = 0
    budget: int = 0
    dropped_by_fps: int = 0
    dropped_while_busy: int = 0
    skipped_corrupt: int = 0
    reconnects: int = 0
    ended_by: str = ""

    def lines(self) -> list[str]:
        return [
            f"frames {self.frames} in {self.elapsed_s:.1f} s ({self.frames_per_s:.2f} frames/s),"
            f" {self.answers} answers; ended by {self.ended_by}",
            f"dropped {self.dropped_by_fps} by --fps, {self.dropped_while_busy} while busy; "
            f"skipped {self.skipped_corrupt} corrupt; {self.reconnects} reconnects",
            f"slots {self.slots_used}/{self.budget}, {self.evictions} evicted"
            f"{f', {self.merged} merged' if self.merged else ''}; "
            f"peak rss {self.peak_rss_bytes / MiB:.0f} MiB",
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StreamRun:
    session: FrameSession
    frames: FrameStream
    schedule: AskSchedule = field(default_factory=lambda: AskSchedule([]))
    stdin: StdinQuestions | None = None
    transcript: Transcript | None = None
    status: StatusLine = field(default_factory=lambda: StatusLine(enabled=False))
    stop: threading.Event = field(default_factory=threading.Event)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    max_new_tokens: int = 128
    sampler: Any = None
    stop_at: tuple[str, ...] = ()  # stop strings of each answer (Session.ask's `stop`)
    on_frame: Callable[[int], None] | None = None  # after each frame fed (benchmarks sample RSS)
    on_answer: Callable[[AnswerRecord], None] | None = None  # after each answer is written

    def __post_init__(self) -> None:
        self.fed = 0
        self.answers = 0
        self.last_t = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._rate = 0.0

    def run(self) -> RunSummary:
        start = time.monotonic()
        for frame in self.frames:
            self.session.append_image(frame.image)
            self.fed += 1
            self.last_t = frame.t
            if self.on_frame is not None:
                self.on_frame(self.fed)
            self._show_status()
            if self.stop.is_set():
                break
            self._answer_all(self.schedule.due(self.fed, frame.t), "ask")
            if self.stdin is not None:
                self._answer_all(self.stdin.pending(), "stdin")
        streamed = time.monotonic() - start  # frames/s over the stream, not the chat after it
        if not self.stop.is_set():
            self._answer_all(self.schedule.at_end(), "end")
            self._chat_after_end()
        return self._summary(time.monotonic() - start, streamed)

    def _chat_after_end(self) -> None:
        """After the stream: answer questions on stdin until it ends, so a video can be
        watched once and then asked about (and piped questions are never lost to a race with
        the reader thread). Stdin from /dev/null ends at once."""
        if self.stdin is None:
            return
        self._answer_all(self.stdin.pending(), "stdin")
        if self.stdin.interactive:
            self.status.clear()
            print("edgekv: the stream ended; ask about it (Ctrl-D to quit)", file=sys.stderr)
        while not self.stop.is_set() and not self.stdin.ended:
            question = self.stdin.wait(timeout=0.2)
            if question is not None:
                self._answer(question, "stdin")

    def _answer_all(self, questions: list[str], origin: str) -> None:
        for question in questions:
            if self.stop.is_set():
                return
            self._answer(question, origin)

    def _answer(self, question: str, origin: str) -> None:
        # Undecodable argv/stdin bytes arrive as lone surrogates, which a strict UTF-8 stdout
        # (and the transcript) refuse: as U+FFFD the question is still asked and recorded.
        question = valid_utf8(question)
        self.status.clear()
        self.out.write(f"[frame {self.fed}, {self.last_t:.1f} s] {redact(question)}\n")
        self.out.flush()
        start = time.perf_counter()
        tokens_before = self.session.stats.tokens_out
        first: float | None = None
        parts: list[str] = []
        stopped = False
        try:
            pieces = self.session.ask(question, self.max_new_tokens, self.sampler, self.stop_at)
        except BudgetError as exc:  # refused before it was fed: the stream goes on
            self.out.write(f"(not asked: {exc})\n")
            self.out.flush()
            return
        try:
            for piece in pieces:
                if first is None:
                    first = time.perf_counter() - start
                parts.append(piece)
                self.out.write(piece)
                self.out.flush()
                if self.stop.is_set():  # stop after this token; keep the partial answer
                    stopped = True
                    break
        finally:
            pieces.close()
        self.out.write("\n")
        self.out.flush()
        self.answers += 1
        record = AnswerRecord(
            frame=self.fed, stream_t=round(self.last_t, 3), question=question,
            answer="".join(parts), tokens=self.session.stats.tokens_out - tokens_before,
            latency_s=round(time.perf_counter() - start, 4),
            first_token_s=None if first is None else round(first, 4), origin=origin,
            stopped=stopped, source=self.frames.name)
        if self.transcript is not None:
            self.transcript.write(record)
        if self.on_answer is not None:
            self.on_answer(record)

    def _show_status(self) -> None:
        if not self.status.due():
            return
        now = time.monotonic()
        t0, n0 = self._rate_mark
        if now > t0:
            self._rate = (self.fed - n0) / (now - t0)
        self._rate_mark = (now, self.fed)
        c, counters = self.session.cache, self.frames.counters
        self.status.show(StatusSnapshot(
            self.fed, self._rate, c.occupied(), c.budget, rss_now(), self.answers,
            counters.dropped_rate + counters.dropped_busy, counters.skipped))

    def _summary(self, elapsed: float, streamed: float) -> RunSummary:
        self.status.clear()
        c, counters = self.session.cache, self.frames.counters
        return RunSummary(
            frames=self.fed, answers=self.answers, elapsed_s=elapsed,
            frames_per_s=self.fed / streamed if streamed > 0 else 0.0,
            peak_rss_bytes=max(rss_peak(), rss_now()), evictions=c.evictions, merged=c.merged,
            slots_used=c.occupied(), budget=c.budget, dropped_by_fps=counters.dropped_rate,
            dropped_while_busy=counters.dropped_busy, skipped_corrupt=counters.skipped,
            reconnects=counters.reconnects,
            ended_by="stopped" if self.stop.is_set() else self.frames.end_reason or "stopped")
