"""`edgekv run BUNDLE --source SRC`: put a session, a source, the question schedule, stdin, the
transcript and the status line together and run (the CLI and the benchmark both call this)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TextIO

from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.frame_feed import StreamingFeeder
from edgekv.runtime.questions import StdinQuestions
from edgekv.runtime.schedule import AskSchedule, Every
from edgekv.runtime.sources import Source
from edgekv.runtime.sources.frames import FrameStream, StreamLimits
from edgekv.runtime.sources.reconnect import Backoff
from edgekv.runtime.sources.redact import redact
from edgekv.runtime.status import StatusLine
from edgekv.runtime.stream_run import FrameSession, RunSummary, StreamRun
from edgekv.runtime.transcript import Transcript


@dataclass
class StreamConfig:
    limits: StreamLimits = field(default_factory=StreamLimits)
    questions: list[str] = field(default_factory=list)  # --ask
    every: Every | None = None  # --every; None: ask once at the end
    transcript: str | None = None
    status: bool = True
    max_new_tokens: int = 128
    stop_at: tuple[str, ...] = ()  # --stop: an answer ends before the first of these
    backoff: Backoff = field(default_factory=Backoff)


def stream_session(session: Any) -> FrameSession:
    """The session as the run loop feeds it (frame_feed.StreamingFeeder: constant host memory
    per frame). A streaming run needs a bundle with a vision graph."""
    if not callable(getattr(session, "append_image", None)):
        raise EdgeKVError("--source needs a session that takes images (Session.append_image)")
    if getattr(session.bundle.manifest, "vision", None) is None:
        raise EdgeKVError(f"{session.bundle.path} is a text-only bundle; --source needs one "
                          "exported from a vision-language model (it has vision.onnx)")
    return StreamingFeeder(session)


def _lenient(stdin: TextIO) -> TextIO:
    """stdin that reads a bad byte as U+FFFD. Strict decoding (a UTF-8 locale) raises on it,
    which ends the reader thread: every later question would be lost without a word."""
    reconfigure = getattr(stdin, "reconfigure", None)
    if callable(reconfigure) and getattr(stdin, "errors", None) == "strict":
        reconfigure(errors="replace")
    return stdin


def run_stream(
    session: FrameSession,
    source: Source,
    config: StreamConfig,
    sampler: Any = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Run until the source ends, a limit is reached or `stop` is set; returns the summary.
    `stdin`: read questions from it while the stream runs (None: only --ask)."""
    err = err or sys.stderr
    stop = stop or threading.Event()

    def say(line: str) -> None:
        err.write(f"edgekv: {redact(line)}\n")
        err.flush()

    frames = FrameStream(source, config.limits, say, stop, config.backoff)
    questions = StdinQuestions(_lenient(stdin)).start() if stdin is not None else None
    transcript = Transcript(config.transcript) if config.transcript else None
    say(f"streaming from {frames.name}")
    try:
        return StreamRun(
            session, frames, AskSchedule(config.questions, config.every), questions, transcript,
            StatusLine(err, enabled=config.status), stop, out or sys.stdout,
            config.max_new_tokens, sampler, stop_at=config.stop_at).run()
    finally:
        if transcript is not None:
            transcript.close()
