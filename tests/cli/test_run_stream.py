"""`edgekv run --source`: argument checks, and a SIGINT/SIGTERM in the middle of a run that
leaves a transcript of whole JSON lines and a summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekv.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--ask", "q"], "--ask only apply to a stream"),
    (["--source", "synthetic", "--every", "10s"], "--every needs --ask"),
    (["--source", "synthetic", "--ask", "q", "--every", "ten"], "--every 'ten'"),
    (["--source", "synthetic", "--fps", "0"], "--fps must be a positive number, not 0"),
    (["--source", "/no/such/video.mp4"], "no such file or folder"),
    (["--source", "synthetic", "--prompt", "a", "--system", "b"], "--prompt is the system"),
])
def test_bad_stream_arguments_fail_before_the_model_loads(capsys, argv, message):
    assert main(["run", "/no/such/bundle", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_text_only_bundle_is_refused_with_a_reason(capsys, tiny_bundle):
    assert main(["run", str(tiny_bundle()), "--source", "synthetic", "--max-frames", "3"]) == 2
    err = capsys.readouterr().err
    assert "text-only bundle" in err


def write_video(path: Path, frames: int, fps: float = 10.0) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (48, 40))
    for i in range(frames):
        writer.write(np.full((40, 48, 3), (i * 40) % 256, np.uint8))
    writer.release()
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_a_video_file_with_scheduled_questions(capsys, tmp_path, vlm_bundle):
    video = write_video(tmp_path / "clip.avi", 30)
    transcript = tmp_path / "t.jsonl"
    argv = ["run", str(vlm_bundle("llava-clip")), "--source", str(video), "--fps", "5",
            "--prompt", "You watch a clip.", "--ask", "What changed?", "--every", "1s",
            "--max-new-tokens", "4", "--transcript", str(transcript), "--no-status"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    # 3 s of video at 10 fps, kept at 5 fps: 15 frames; a question at 1 s and at 2 s.
    assert "frames 15 in" in err and "2 answers; ended by source ended" in err
    assert "dropped 15 by --fps" in err and "evicted" in err and "peak rss" in err
    got = records(transcript)
    assert [r["frame"] for r in got] == [6, 11] and {r["tokens"] for r in got} == {4}
    assert all(r["question"] == "What changed?" and r["latency_s"] > 0 for r in got)
    assert out.count("What changed?") == 2


def test_run_a_folder_with_a_corrupt_image_and_budget_held(capsys, tmp_path, vlm_bundle):
    import cv2
    import numpy as np

    for i in range(12):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((32, 32, 3), i * 20, np.uint8))
    (tmp_path / "f5.png").write_bytes(b"\x89PNG broken")
    argv = ["run", str(vlm_bundle("llava-clip")), "--source", str(tmp_path), "--budget", "128",
            "--ask", "Describe it.", "--max-new-tokens", "3", "--no-status"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "skipped a corrupt frame" in err and "f5.png" in err
    assert "frames 11 in" in err and "1 answers; ended by source ended" in err
    slots = err.split("slots ")[1].split(",")[0]
    used, budget = map(int, slots.split("/"))
    assert budget == 128 and 0 < used <= 128 and "Describe it." in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_stops_cleanly_and_leaves_whole_json_lines(tmp_path, sig, vlm_bundle):
    transcript = tmp_path / "t.jsonl"
    argv = [sys.executable, "-m", "edgekv.cli", "run", str(vlm_bundle("llava-clip")),
            "--source", "synthetic:size=48x40", "--ask", "What is on screen?", "--every", "4f",
            "--max-new-tokens", "3", "--transcript", str(transcript), "--threads", "1"]
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if transcript.exists() and len(transcript.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    text = transcript.read_text()
    assert text.endswith("\n")
    got = [json.loads(line) for line in text.splitlines()]  # every line whole, valid JSON
    assert len(got) >= 2
    assert [r["frame"] for r in got] == [4 * (i + 1) for i in range(len(got))]
    assert f"ended by {signal.Signals(sig).name}" in err and "peak rss" in err
    assert out.count("What is on screen?") == len(got)


def test_credentials_never_reach_console_or_transcript(capsys, tmp_path, vlm_bundle,
                                                       monkeypatch):
    """A live source whose name is an RTSP URL with a password drops once and is reopened;
    neither the console nor the transcript shows the password."""
    from edgekv.runtime.sources import register_source
    from edgekv.runtime.sources.reconnect import Backoff
    from stream_fakes import FlakyCamera

    monkeypatch.setattr(Backoff, "initial_s", 0.01)
    url = "rtsp://admin:Sup3rS3cret@10.1.1.9/live"
    register_source("flaky", lambda arg: FlakyCamera(fail_at=3, name=url))
    transcript = tmp_path / "t.jsonl"
    argv = ["run", str(vlm_bundle("llava-clip")), "--source", "flaky:", "--max-frames", "8",
            "--ask", f"Is {url} up?", "--every", "4f", "--max-new-tokens", "2",
            "--transcript", str(transcript), "--no-status"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "1 reconnects" in err and "reopened" in err
    everything = out + err + transcript.read_text()
    assert "Sup3rS3cret" not in everything and "rtsp://***@10.1.1.9/live" in everything
    assert len(records(transcript)) == 2


def test_signal_handlers_are_restored_after_the_run():
    from edgekv.runtime.stop import StopOnSignal

    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stopper:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stopper.stop.is_set() and stopper.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("content, message", [(b"", "is empty (0 bytes), not a video"),
                                              (b"plain text\n", "is not a video")])
def test_a_file_that_is_not_a_video_fails_before_the_model_loads(capfd, tmp_path, content,
                                                                  message):
    video = tmp_path / "clip.mp4"
    video.write_bytes(content)
    assert main(["run", "/no/such/bundle", "--source", str(video)]) == 2  # no bundle opened
    out, err = capfd.readouterr()
    assert err.count("\n") == 1 and message in err and out == ""  # no FFmpeg lines either


def test_a_folder_where_no_image_decodes_is_one_error(capsys, tmp_path, vlm_bundle):
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "b.jpg").write_bytes(b"")
    argv = ["run", str(vlm_bundle("llava-clip")), "--source", str(tmp_path), "--ask", "What?",
            "--max-new-tokens", "2", "--no-status"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "edgekv: error: no frame of" in err and "could be decoded (2 skipped)" in err
    assert "What?" not in out  # not answered about nothing
