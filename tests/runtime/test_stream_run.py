"""The run loop with a recording session (stream_fakes.RecordingSession): which frames reach
the session, when questions are asked, what the transcript holds and when it is flushed, and
how a stop ends the run. The same loop on a real multimodal bundle: tests/cli/test_run_stream.py.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest

from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.schedule import AskSchedule, Every, parse_every
from edgekv.runtime.sources import open_source
from edgekv.runtime.sources.frames import FrameStream, StreamLimits
from edgekv.runtime.sources.reconnect import Backoff
from edgekv.runtime.sources.synthetic import SyntheticSource, parse_options
from edgekv.runtime.status import StatusLine
from edgekv.runtime.stream_app import StreamConfig, run_stream, stream_session
from edgekv.runtime.stream_run import StreamRun
from edgekv.runtime.transcript import Transcript
from stream_fakes import FlakyCamera, RecordingSession

SCENE = "synthetic:size=32x24"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_frame_reaches_the_session_unchanged():
    session = RecordingSession()
    summary = StreamRun(session, FrameStream(open_source(SCENE), StreamLimits(max_frames=25))).run()
    scene = SyntheticSource(parse_options("size=32x24"))
    assert summary.frames == 25 == len(session.frames)
    assert all(np.array_equal(f, scene.render(i)) for i, f in enumerate(session.frames))
    assert summary.ended_by == "--max-frames" and summary.answers == 0


def test_questions_every_n_frames_are_answered_and_each_flushed_as_it_ends(tmp_path):
    path = tmp_path / "t.jsonl"
    session = RecordingSession()
    lines_seen_at_ask: list[int] = []
    session.on_piece = lambda q, i: i == 0 and lines_seen_at_ask.append(
        len(path.read_text().splitlines()))
    out = io.StringIO()
    with Transcript(path) as transcript:
        summary = StreamRun(session, FrameStream(open_source(SCENE), StreamLimits(max_frames=25)),
                            AskSchedule(["What moves?"], parse_every("10f")),
                            transcript=transcript, out=out).run()
    records = read_jsonl(path)
    assert summary.answers == 2 and [r["frame"] for r in records] == [10, 20]
    assert lines_seen_at_ask == [0, 1]  # the first answer was on disk before the second began
    for r in records:
        assert r["question"] == "What moves?" and r["answer"] == "a red square"
        assert r["tokens"] == 3 and r["origin"] == "ask" and r["stopped"] is False
        assert r["latency_s"] >= r["first_token_s"] >= 0 and r["source"] == "synthetic"
        assert r["time"].endswith("+00:00")
    assert "[frame 10, 0.3 s] What moves?\na red square\n" in out.getvalue()


def test_questions_every_s_seconds_of_stream_time():
    session = RecordingSession()
    # 95 frames at 30 fps: 3.13 s of stream; asked at 1, 2 and 3 s.
    run = StreamRun(session, FrameStream(open_source(SCENE + ",fps=30"),
                                         StreamLimits(max_frames=95)),
                    AskSchedule(["q"], Every(1.0, "s")), out=io.StringIO())
    assert run.run().answers == 3


def test_every_answer_of_a_stream_gets_the_stop_strings():
    session = RecordingSession()
    config = StreamConfig(StreamLimits(max_frames=4), ["What is it?"], None, None,
                          status=False, stop_at=("\n", "Question:"))
    run_stream(session, open_source(SCENE), config, stdin=io.StringIO("and now?\n"),
               out=io.StringIO(), err=io.StringIO())
    assert session.stops == [("\n", "Question:")] * 2


def test_ask_without_every_is_asked_once_at_the_end_and_stdin_questions_too(tmp_path):
    session = RecordingSession()
    stdin = io.StringIO("first typed\n\nsecond typed\n")
    config = StreamConfig(StreamLimits(max_frames=6), ["Summarize."], None,
                          str(tmp_path / "t.jsonl"), status=False)
    summary = run_stream(session, open_source(SCENE), config, stdin=stdin, out=io.StringIO(),
                         err=io.StringIO())
    records = read_jsonl(tmp_path / "t.jsonl")
    assert summary.frames == 6 and summary.answers == 3
    assert sorted((r["origin"], r["question"]) for r in records) == [
        ("end", "Summarize."), ("stdin", "first typed"), ("stdin", "second typed")]


def test_a_question_too_long_for_the_budget_is_skipped_and_the_stream_goes_on(tmp_path):
    session = RecordingSession(max_question_chars=20)
    out = io.StringIO()
    config = StreamConfig(StreamLimits(max_frames=6), [], None, str(tmp_path / "t.jsonl"),
                          status=False)
    stdin = io.StringIO("what was the very first thing you saw in this stream?\nAnd now?\n")
    summary = run_stream(session, open_source(SCENE), config, stdin=stdin, out=out,
                         err=io.StringIO())
    assert summary.frames == 6 and summary.answers == 1
    assert [r["question"] for r in read_jsonl(tmp_path / "t.jsonl")] == ["And now?"]
    assert "(not asked: this turn is 53 tokens)" in out.getvalue()


def test_stop_mid_answer_keeps_the_partial_answer_and_ends_the_run(tmp_path):
    stop = threading.Event()
    session = RecordingSession(words=("one", " two", " three", " four"))
    session.on_piece = lambda q, i: i == 1 and stop.set()  # a signal arrives mid-answer
    with Transcript(tmp_path / "t.jsonl") as transcript:
        summary = StreamRun(session, FrameStream(open_source(SCENE), stop=stop),
                            AskSchedule(["q"], parse_every("5f")), transcript=transcript,
                            stop=stop, out=io.StringIO()).run()
    [record] = read_jsonl(tmp_path / "t.jsonl")
    assert record["stopped"] is True and record["answer"] == "one two" and record["tokens"] == 2
    assert summary.frames == 5 and summary.ended_by == "stopped"


def test_a_flaky_camera_run_continues_and_no_credential_is_written(tmp_path):
    secret = "pa55w0rd"
    url = f"rtsp://admin:{secret}@192.168.1.20/stream"
    camera = FlakyCamera(fail_at=4, name=url)
    session = RecordingSession()
    out, err = io.StringIO(), io.StringIO()
    config = StreamConfig(StreamLimits(max_frames=10), [f"Is {url} still up?"],
                          parse_every("3f"), str(tmp_path / "t.jsonl"),
                          backoff=Backoff(0.01, max_s=0.01))
    summary = run_stream(session, camera, config, out=out, err=err)
    assert summary.frames == 10 and summary.reconnects == 1 and summary.answers == 3
    assert "reopened" in err.getvalue()
    written = out.getvalue() + err.getvalue() + (tmp_path / "t.jsonl").read_text()
    assert secret not in written and "rtsp://***@192.168.1.20/stream" in written
    assert session.questions == [f"Is {url} still up?"] * 3  # the model itself sees the text


def test_status_line_shows_frames_slots_and_memory():
    err = io.StringIO()
    status = StatusLine(err, interval_s=0.0, log_every_s=0.0)
    session = RecordingSession()
    StreamRun(session, FrameStream(open_source(SCENE), StreamLimits(max_frames=10)),
              status=status).run()
    lines = err.getvalue().splitlines()
    assert len(lines) == 10  # not a terminal: plain lines (every 30 s by default)
    assert "frames 10 " in lines[-1] and "slots 64/64" in lines[-1] and "MiB" in lines[-1]


def test_summary_counts_evictions_and_peak_memory():
    session = RecordingSession(keep_frames=False)
    summary = StreamRun(session, FrameStream(open_source(SCENE),
                                             StreamLimits(max_frames=20))).run()
    assert summary.evictions == session.cache.evictions > 0
    assert summary.peak_rss_bytes > 10 * 2**20 and summary.frames_per_s > 0
    text = "\n".join(summary.lines())
    assert "frames 20" in text and "evicted" in text and "peak rss" in text
    assert "merged" not in text  # nothing merged: not mentioned


def test_summary_counts_merged_repeats_apart_from_evictions():
    session = RecordingSession(keep_frames=False)
    session.cache.merged = 7  # structured folded 7 repeated tokens into earlier slots
    summary = StreamRun(session, FrameStream(open_source(SCENE),
                                             StreamLimits(max_frames=3))).run()
    assert summary.merged == 7 and "evicted, 7 merged;" in "\n".join(summary.lines())


def test_parse_every():
    assert parse_every("10s") == Every(10.0, "s")
    assert parse_every("500ms") == Every(0.5, "s")
    assert parse_every("2m") == Every(120.0, "s")
    assert parse_every("30f") == Every(30.0, "f")
    for bad in ("10", "0s", "1.5f", "ten s"):
        with pytest.raises(EdgeKVError):
            parse_every(bad)


def test_a_session_without_images_is_refused():
    class TextOnly:
        pass

    with pytest.raises(EdgeKVError, match="takes images"):
        stream_session(TextOnly())
