"""The stream benchmark's bookkeeping (RSS samples, question latencies, the 5% verdict) on a
recording session; the measured run on a real multimodal bundle is in docs/streaming.md."""

from __future__ import annotations

import json
import math

from edgekv.tools.stream_bench import BenchOptions, BenchReport, run_bench
from stream_fakes import RecordingSession


def test_bench_samples_rss_and_times_each_question():
    session = RecordingSession(keep_frames=False)
    options = BenchOptions(frames=600, ask_every=200, reference_frame=150, sample_every=200,
                           size="32x24")
    report = run_bench(session, options, policy="streaming")
    assert sorted(report.rss_mib) == [150, 200, 400, 600]
    assert all(v > 10 for v in report.rss_mib.values())
    assert len(report.latencies_s) == 3 == len(session.questions)
    assert not math.isnan(report.growth) and report.frames_per_s > 0
    text = "\n".join(report.lines())
    assert "rss at frame    150" in text and "rss at frame    600" in text
    assert "3 questions" in text
    assert json.loads(report.to_json())["passed"] == report.passed()


def test_the_verdict_is_growth_within_five_percent():
    report = BenchReport(10_000, 512, "x", rss_mib={1_000: 400.0, 10_000: 419.0})
    assert report.passed() and round(report.growth, 4) == 0.0475
    report.rss_mib[10_000] = 421.0
    assert not report.passed()
