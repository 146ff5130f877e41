"""`edgekv bench-stream BUNDLE`: the fixed-memory promise on a long stream. Feeds N synthetic
frames (default 10,000) at a fixed budget (default: the bundle's), asks a question every K
frames, and reports RSS at frame 1,000 and at the last frame (the growth must stay within 5%),
frames/s and the latency of each question. RSS is sampled right after the frame is fed, so the
numbers are the process's whole resident memory: weights, cache, buffers, Python."""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekv.runtime.errors import SettingError
from edgekv.runtime.rss import rss_now
from edgekv.runtime.schedule import AskSchedule, Every
from edgekv.runtime.sources import open_source
from edgekv.runtime.sources.frames import FrameStream, StreamLimits
from edgekv.runtime.stream_run import FrameSession, StreamRun
from edgekv.runtime.transcript import AnswerRecord

MiB = 2**20
GROWTH_LIMIT = 0.05


@dataclass
class BenchOptions:
    frames: int = 10_000
    ask_every: int = 1_000  # frames between questions
    question: str = "What do you see?"
    max_new_tokens: int = 8
    size: str = "64x48"  # synthetic frame size (the vision graph resizes it anyway)
    reference_frame: int = 1_000  # RSS growth is measured from here to the last frame
    sample_every: int = 500  # RSS curve resolution (frames)


@dataclass
class BenchReport:
    frames: int
    budget: int
    policy: str
    rss_mib: dict[int, float] = field(default_factory=dict)  # frame -> RSS after feeding it
    latencies_s: list[float] = field(default_factory=list)
    first_token_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    frames_per_s: float = 0.0
    evictions: int = 0
    slots_used: int = 0
    reference_frame: int = 1_000

    @property
    def growth(self) -> float:
        """RSS growth from the reference frame to the last, as a fraction."""
        start, end = self.rss_mib.get(self.reference_frame), self.rss_mib.get(self.frames)
        return (end - start) / start if start and end else float("nan")

    def passed(self) -> bool:
        return self.growth <= GROWTH_LIMIT

    def lines(self) -> list[str]:
        ref, last = self.reference_frame, self.frames
        lat = self.latencies_s
        out = [f"stream bench: {self.frames} frames, budget {self.budget}, policy {self.policy}",
               f"  rss at frame {ref:>6}: {self.rss_mib.get(ref, float('nan')):8.1f} MiB",
               f"  rss at frame {last:>6}: {self.rss_mib.get(last, float('nan')):8.1f} MiB",
               f"  growth {self.growth * 100:+.2f}% (limit {GROWTH_LIMIT * 100:.0f}%): "
               f"{'PASS' if self.passed() else 'FAIL'}",
               f"  {self.frames_per_s:.2f} frames/s over {self.elapsed_s:.0f} s; slots "
               f"{self.slots_used}/{self.budget}, {self.evictions} evicted"]
        if lat:
            out.append(f"  {len(lat)} questions: latency mean {sum(lat) / len(lat):.3f} s, "
                       f"min {min(lat):.3f} s, max {max(lat):.3f} s; first token mean "
                       f"{sum(self.first_token_s) / max(len(self.first_token_s), 1):.3f} s")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "growth": self.growth, "passed": self.passed()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def run_bench(session: FrameSession, options: BenchOptions, policy: str = "") -> BenchReport:
    if options.frames <= options.reference_frame:  # growth is measured after it
        raise SettingError(f"--frames must be more than {options.reference_frame} (the frame "
                           f"RSS growth is measured from), not {options.frames}")
    if options.ask_every < 1:
        raise SettingError(f"--ask-every must be at least 1, not {options.ask_every}")
    report = BenchReport(options.frames, session.cache.budget, policy,
                         reference_frame=options.reference_frame)

    def on_frame(n: int) -> None:
        if n % options.sample_every == 0 or n in (options.reference_frame, options.frames):
            gc.collect()  # garbage is not growth: measure what is really held
            report.rss_mib[n] = rss_now() / MiB

    def on_answer(record: AnswerRecord) -> None:
        report.latencies_s.append(record.latency_s)
        if record.first_token_s is not None:
            report.first_token_s.append(record.first_token_s)

    spec = f"synthetic:size={options.size},frames={options.frames}"
    frames = FrameStream(open_source(spec), StreamLimits(max_frames=options.frames))
    run = StreamRun(session, frames, AskSchedule([options.question],
                                                 Every(options.ask_every, "f")),
                    max_new_tokens=options.max_new_tokens, on_frame=on_frame,
                    on_answer=on_answer, out=_Null())
    summary = run.run()
    report.elapsed_s, report.frames_per_s = summary.elapsed_s, summary.frames_per_s
    report.evictions, report.slots_used = summary.evictions, summary.slots_used
    return report


class _Null:
    """Answers are not printed during a benchmark (the report has their latency)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
