"""Stream sources on awkward inputs: empty and undecodable video files, folders with hidden
files, decompression bombs and nothing decodable, synthetic specs with odd values, a live
source that ends or that opens without giving frames, and text that is not valid UTF-8 (stdin
bytes, surrogate-escaped arguments) on its way into the transcript."""

from __future__ import annotations

import io
import json
import threading

import cv2
import numpy as np
import pytest

from edgekv.runtime.sources import SourceError, open_source
from edgekv.runtime.sources.base import Frame
from edgekv.runtime.sources.frames import FrameStream, StreamLimits
from edgekv.runtime.sources.reconnect import Backoff
from edgekv.runtime.stream_app import StreamConfig, run_stream
from edgekv.runtime.transcript import AnswerRecord, Transcript
from stream_fakes import RecordingSession


def write_png(path, value: int, size=(16, 12)) -> None:
    cv2.imwrite(str(path), np.full((size[1], size[0], 3), value, np.uint8))


# --- video files -----------------------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [(b"", "empty"),
                                             (b"hello, not a video\n", "not a video")])
def test_an_unreadable_video_file_fails_at_open_source_with_a_reason(tmp_path, content, reason):
    """Before the model loads (open_source is what the CLI calls first), and saying why."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=reason) as caught:
        open_source(str(path))
    assert "clip.mp4" in str(caught.value)


def test_ffmpeg_log_lines_are_silenced(tmp_path, capfd):
    """FFmpeg writes its own lines to the terminal (and could quote a URL edgekv redacts):
    an unreadable file must give edgekv's one error line and nothing else."""
    path = tmp_path / "text.mp4"
    path.write_text("not a video\n")
    with pytest.raises(SourceError):
        open_source(str(path))
    out, err = capfd.readouterr()
    assert "moov atom" not in out + err and "[mov" not in out + err


# --- image folders ---------------------------------------------------------------------------

def test_hidden_files_in_a_folder_are_not_frames(tmp_path):
    """macOS leaves `._name.png` AppleDouble files beside each picture on a shared drive."""
    write_png(tmp_path / "a.png", 10)
    write_png(tmp_path / "b.png", 20)
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    said: list[str] = []
    stream = FrameStream(open_source(str(tmp_path)), say=said.append)
    assert [int(f.image[0, 0, 0]) for f in stream] == [10, 20]
    assert stream.counters.skipped == 0 and said == []


def test_a_corrupt_image_warning_names_the_file_not_a_python_object(tmp_path):
    write_png(tmp_path / "a.png", 10)
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    said: list[str] = []
    list(FrameStream(open_source(str(tmp_path)), say=said.append))
    assert len(said) == 1 and "b.png" in said[0]
    assert "BytesIO" not in said[0] and " at 0x" not in said[0]


def test_a_decompression_bomb_in_a_folder_is_skipped_not_fatal(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 20x12 = 240 pixels: over 2x the limit
    write_png(tmp_path / "a.png", 10, size=(4, 4))
    write_png(tmp_path / "b.png", 20, size=(20, 12))
    write_png(tmp_path / "c.png", 30, size=(4, 4))
    said: list[str] = []
    stream = FrameStream(open_source(str(tmp_path)), say=said.append)
    assert [int(f.image[0, 0, 0]) for f in stream] == [10, 30]
    assert stream.counters.skipped == 1 and "b.png" in said[0]


def test_a_folder_with_no_image_name_fails_at_open_source(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "inner.png", 10)  # subfolders are not read
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path))


def test_a_folder_where_nothing_decodes_is_an_error_not_an_empty_stream(tmp_path):
    (tmp_path / "a.png").write_bytes(b"bad")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(SourceError, match="no frame of .* could be decoded"):
        list(FrameStream(open_source(str(tmp_path)), say=lambda _m: None))


def test_a_folder_cut_short_by_fps_or_limits_is_not_called_undecodable(tmp_path):
    write_png(tmp_path / "a.png", 10)
    (tmp_path / "b.png").write_bytes(b"bad")
    frames = list(FrameStream(open_source(str(tmp_path)), say=lambda _m: None))
    assert len(frames) == 1


# --- synthetic -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["synthetic:fps=nan", "synthetic:fps=inf", "synthetic:live=maybe",
                                  "synthetic:size=100000x100000"])
def test_synthetic_refuses_values_it_cannot_honour(spec):
    with pytest.raises(SourceError, match="synthetic"):
        open_source(spec)


def test_a_live_synthetic_stream_with_frames_ends(tmp_path):
    """`frames=N` ends the scene; live pacing must not turn that end into endless reopening."""
    said: list[str] = []
    stop = threading.Event()
    timer = threading.Timer(5.0, stop.set)  # the old behaviour: reopen forever
    timer.start()
    try:
        stream = FrameStream(open_source("synthetic:size=16x16,fps=200,live=1,frames=3"),
                             say=said.append, stop=stop, backoff=Backoff(0.01, max_s=0.02))
        frames = list(stream)
    finally:
        timer.cancel()
    assert len(frames) == 3 and stream.end_reason == "source ended"
    assert not any("dropped" in m for m in said)


# --- live sources that reopen ----------------------------------------------------------------

class NoFramesAfterOpen:
    """A live source that gives one frame, then opens fine every time but never gives another
    (a V4L2 device another process holds)."""

    live, name = True, "fake-busy-camera"

    def __init__(self, stop: threading.Event, max_opens: int) -> None:
        self.stop, self.max_opens, self.opens, self.given = stop, max_opens, 0, 0

    def open(self) -> None:
        self.opens += 1
        if self.opens >= self.max_opens:
            self.stop.set()

    def read(self) -> Frame | None:
        if self.given:
            return None
        self.given += 1
        return Frame(np.zeros((4, 4, 3), np.uint8), 0, 0.0)

    def close(self) -> None:
        pass


def test_a_reopen_that_gives_no_frame_keeps_backing_off():
    """Open succeeding is not the camera coming back: without a frame the waits keep growing
    (no reopen every 0.5 s, two log lines each, for hours)."""
    stop = threading.Event()
    source = NoFramesAfterOpen(stop, max_opens=5)
    said: list[str] = []
    frames = list(FrameStream(source, say=said.append, stop=stop,
                              backoff=Backoff(0.001, factor=2.0, max_s=1.0)))
    assert len(frames) == 1
    attempts = [int(m.split("(attempt ")[1].rstrip(")")) for m in said if "reopening" in m]
    assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) >= 3  # not 1, 1, 1


def test_max_attempts_counts_reopens_that_gave_no_frame():
    stop = threading.Event()
    source = NoFramesAfterOpen(stop, max_opens=1000)
    with pytest.raises(SourceError, match="did not come back after 3 attempts"):
        list(FrameStream(source, say=lambda _m: None, stop=stop,
                         backoff=Backoff(0.001, max_s=0.001, max_attempts=3)))
    stop.set()


# --- text that is not valid UTF-8 ------------------------------------------------------------

def test_a_record_with_surrogate_escaped_text_is_written_as_valid_utf8(tmp_path):
    """Python hands undecodable argv/stdin bytes over as lone surrogates ('\\udcff'); the
    transcript must still take the record (it crashed the run before)."""
    path = tmp_path / "t.jsonl"
    with Transcript(path) as transcript:
        transcript.write(AnswerRecord(1, 0.0, "bad \udcff\udcfe byte", "ok\ud800", 1, 0.1, 0.1,
                                      "stdin"))
    record = json.loads(path.read_bytes().decode("utf-8"))
    assert record["question"] == "bad \ufffd\ufffd byte" and record["answer"] == "ok\ufffd"


def test_a_transcript_appended_after_a_partial_line_starts_on_a_new_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"frame": 1, "cut off mid-')
    with Transcript(path) as transcript:
        transcript.write(AnswerRecord(2, 0.0, "q", "a", 1, 0.1, 0.1, "ask"))
    last = path.read_text().splitlines()[-1]
    assert json.loads(last)["frame"] == 2


def test_undecodable_stdin_bytes_lose_no_question(tmp_path):
    """With a strict stdin (a UTF-8 locale without UTF-8 mode), one bad byte ended the reader
    thread and every later question was silently lost."""
    stdin = io.TextIOWrapper(io.BytesIO(b"first q\nbad \xff byte\nthird q\n"), encoding="utf-8",
                             errors="strict")
    session = RecordingSession()
    path = tmp_path / "t.jsonl"
    summary = run_stream(session, open_source("synthetic:size=16x16,frames=3"),
                         StreamConfig(StreamLimits(), transcript=str(path), status=False),
                         stdin=stdin, out=io.StringIO(), err=io.StringIO())
    questions = [json.loads(line)["question"] for line in path.read_text().splitlines()]
    assert questions == ["first q", "bad \ufffd byte", "third q"] and summary.answers == 3


def test_natural_order_takes_any_file_name(tmp_path):
    """'²' is a digit to str.isdigit but not to int(): it crashed the folder's listing."""
    from edgekv.runtime.sources.image_folder import natural_key

    names = ["²1.png", "a10.png", "a2.png", "a٣.png", "b.png"]
    for i, name in enumerate(names):
        write_png(tmp_path / name, 10 * (i + 1))
    got = [p.name for p in sorted(tmp_path.iterdir(), key=natural_key)]
    assert got == ["a2.png", "a٣.png", "a10.png", "b.png", "²1.png"]
    assert len(list(FrameStream(open_source(str(tmp_path))))) == 5


def test_an_undecodable_ask_argument_is_asked_with_a_strict_stdout(tmp_path):
    """argv bytes that are not UTF-8 reach --ask as surrogates; a strict UTF-8 stdout (a UTF-8
    locale) refused to print the question and the run ended with a traceback."""
    from edgekv.runtime.schedule import AskSchedule
    from edgekv.runtime.stream_run import StreamRun

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    path = tmp_path / "t.jsonl"
    with Transcript(path) as transcript:
        summary = StreamRun(RecordingSession(), FrameStream(open_source(
            "synthetic:size=16x16,frames=2")), AskSchedule(["bad \udcff q"]),
            transcript=transcript, out=out).run()
    assert summary.answers == 1
    assert json.loads(path.read_text())["question"] == "bad \ufffd q"


@pytest.mark.parametrize("limits, flag", [({"fps": float("nan")}, "--fps"),
                                          ({"fps": float("inf")}, "--fps"),
                                          ({"duration_s": float("nan")}, "--duration"),
                                          ({"max_frames": 0}, "--max-frames")])
def test_stream_limits_refuse_values_that_limit_nothing(limits, flag):
    with pytest.raises(SourceError, match=flag):
        StreamLimits(**limits)


def test_cli_refuses_fps_nan_in_one_line(capsys):
    from edgekv.cli import main

    assert main(["run", "/no/such/bundle", "--source", "synthetic", "--fps", "nan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fps must be a positive number, not nan" in err


def test_a_transcript_into_a_pipe_is_written(tmp_path):
    """`--transcript /dev/stdout | jq`: fsync of a pipe fails with EINVAL; the run crashed."""
    import os

    r, w = os.pipe()
    try:
        with Transcript(f"/dev/fd/{w}") as transcript:
            transcript.write(AnswerRecord(3, 0.1, "q", "a", 1, 0.1, 0.1, "ask"))
        assert json.loads(os.read(r, 65536).decode())["frame"] == 3
    finally:
        os.close(r)
        os.close(w)


def test_a_stream_that_cannot_be_opened_says_how_to_see_ffmpegs_reason():
    from edgekv.runtime.sources.base import SourceDropped
    from edgekv.runtime.sources.rtsp import open_rtsp

    source = open_rtsp("rtsp://user:secret@127.0.0.1:1/live")  # a closed port: refused at once
    with pytest.raises(SourceDropped, match="OPENCV_FFMPEG_LOGLEVEL=16 shows FFmpeg's") as exc:
        source.open()
    assert "secret" not in str(exc.value)
