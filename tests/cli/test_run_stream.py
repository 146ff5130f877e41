"""`edgekv run --source`: argument checks, and a SIGINT/SIGTERM in the middle of a run that
leaves a transcript of whole JSON lines and a summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgekv.cli import main

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, message", [
    (["--ask", "q"], "--ask only apply to a stream"),
    (["--source", "synthetic", "--every", "10s"], "--every needs --ask"),
    (["--source", "synthetic", "--ask", "q", "--every", "ten"], "--every 'ten'"),
    (["--source", "synthetic", "--fps", "0"], "--fps must be positive"),
    (["--source", "/no/such/video.mp4"], "not a known source"),
    (["--source", "synthetic", "--prompt", "a", "--system", "b"], "--prompt is the system"),
])
def test_bad_stream_arguments_fail_before_the_model_loads(capsys, argv, message):
    assert main(["run", "/no/such/bundle", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_text_only_bundle_is_refused_with_a_reason(capsys, tiny_bundle):
    assert main(["run", str(tiny_bundle()), "--source", "synthetic", "--max-frames", "3"]) == 2
    err = capsys.readouterr().err
    assert "text-only bundle" in err


# The run loop and signal handling of `edgekv run --source`, in a child process, with the
# recording session standing in for the model until the vision runtime (issue 3) is merged.
_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from edgekv.runtime.schedule import parse_every
    from edgekv.runtime.sources import open_source
    from edgekv.runtime.sources.frames import StreamLimits
    from edgekv.runtime.stop import StopOnSignal
    from edgekv.runtime.stream_app import StreamConfig, run_stream
    from stream_fakes import RecordingSession

    session = RecordingSession(keep_frames=False, frame_delay_s=0.01)
    config = StreamConfig(StreamLimits(), ["What is on screen?"], parse_every("5f"),
                          sys.argv[1], status=False)
    with StopOnSignal() as stopper:
        summary = run_stream(session, open_source("synthetic:size=32x24"), config,
                             stop=stopper.stop)
    summary.ended_by = stopper.signal_name or summary.ended_by
    print("\\n".join(summary.lines()), file=sys.stderr)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_stops_cleanly_and_leaves_whole_json_lines(tmp_path, sig):
    transcript = tmp_path / "t.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(tests=str(TESTS)), str(transcript)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if transcript.exists() and len(transcript.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(sig)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    lines = transcript.read_text().splitlines()
    assert len(lines) >= 3 and transcript.read_text().endswith("\n")
    records = [json.loads(line) for line in lines]  # every line is whole, valid JSON
    assert [r["frame"] for r in records] == [5 * (i + 1) for i in range(len(records))]
    assert f"ended by {signal.Signals(sig).name}" in err
    assert out.count("What is on screen?") == len(records)


def test_signal_handlers_are_restored_after_the_run():
    from edgekv.runtime.stop import StopOnSignal

    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stopper:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stopper.stop.is_set() and stopper.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before
